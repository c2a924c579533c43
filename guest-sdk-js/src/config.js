// The rule configuration `init` receives: TOML, or JSON when it starts with `{`. JavaScript has
// no TOML parser built in, and a rules module can load no packages at run time, so this is a
// small one: tables (`[a.b]`), dotted and quoted keys, basic and literal strings, integers,
// floats, booleans, arrays and inline tables, comments. Not supported (an error naming the
// line): multi-line strings, dates and arrays of tables.

/** The configuration text is not valid TOML or (starting with `{`) JSON. */
export class ConfigError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ConfigError';
  }
}

/**
 * The configuration as an object: `{}` for empty text, JSON when the text starts with `{`,
 * TOML otherwise (the rule of the Rust examples). Throws ConfigError, whose message starts
 * with `config (JSON): ` or `config (TOML): line N: `.
 */
export function parseConfig(text) {
  const stripped = String(text).trim();
  if (stripped === '') return {};
  if (stripped.startsWith('{')) {
    let parsed;
    try {
      parsed = JSON.parse(stripped);
    } catch (e) {
      throw new ConfigError(`config (JSON): ${e.message}`);
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new ConfigError('config (JSON): must be an object');
    }
    return parsed;
  }
  return parseToml(stripped);
}

function parseToml(text) {
  const root = {};
  const defined = new WeakSet();
  let current = root;
  const lines = text.split(/\r?\n/);
  for (let n = 0; n < lines.length; n++) {
    const fail = (why) => { throw new ConfigError(`config (TOML): line ${n + 1}: ${why}`); };
    const cursor = new Cursor(lines[n], fail);
    cursor.space();
    if (cursor.end()) continue;
    if (cursor.peek() === '[') {
      cursor.pos++;
      if (cursor.peek() === '[') fail('arrays of tables are not supported');
      const path = cursor.key();
      cursor.expect(']');
      cursor.finish();
      current = descend(root, path, fail, defined);
      continue;
    }
    const path = cursor.key();
    cursor.expect('=');
    const value = cursor.value();
    cursor.finish();
    const parent = descend(current, path.slice(0, -1), fail, null);
    const last = path[path.length - 1];
    if (Object.hasOwn(parent, last)) fail(`duplicate key \`${last}\``);
    parent[last] = value;
  }
  return root;
}

// `defined`, when given, is the set of tables a `[header]` has opened, to refuse a second one.
function descend(table, path, fail, defined) {
  let at = table;
  for (const part of path) {
    if (!Object.hasOwn(at, part)) at[part] = {};
    else if (typeof at[part] !== 'object' || Array.isArray(at[part])) fail(`\`${part}\` is not a table`);
    at = at[part];
  }
  if (defined && defined.has(at)) fail(`table [${path.join('.')}] defined twice`);
  if (defined) defined.add(at);
  return at;
}

class Cursor {
  constructor(line, fail) {
    this.s = line;
    this.pos = 0;
    this.fail = fail;
  }

  peek() { return this.s[this.pos]; }

  end() { return this.pos >= this.s.length || this.s[this.pos] === '#'; }

  space() { while (this.s[this.pos] === ' ' || this.s[this.pos] === '\t') this.pos++; }

  expect(ch) {
    this.space();
    if (this.s[this.pos] !== ch) this.fail(`expected \`${ch}\` at column ${this.pos + 1}`);
    this.pos++;
    this.space();
  }

  finish() {
    this.space();
    if (!this.end()) this.fail(`unexpected \`${this.s.slice(this.pos)}\``);
  }

  key() {
    const parts = [];
    for (;;) {
      this.space();
      const ch = this.peek();
      if (ch === '"' || ch === "'") parts.push(this.string());
      else {
        const m = /^[A-Za-z0-9_-]+/.exec(this.s.slice(this.pos));
        if (!m) this.fail(`expected a key at column ${this.pos + 1}`);
        parts.push(m[0]);
        this.pos += m[0].length;
      }
      this.space();
      if (this.peek() !== '.') return parts;
      this.pos++;
    }
  }

  string() {
    const quote = this.s[this.pos++];
    let out = '';
    for (;;) {
      if (this.pos >= this.s.length) this.fail('unterminated string');
      const ch = this.s[this.pos++];
      if (ch === quote) return out;
      if (ch === '\\' && quote === '"') {
        const esc = this.s[this.pos++];
        const simple = { b: '\b', t: '\t', n: '\n', f: '\f', r: '\r', '"': '"', '\\': '\\' }[esc];
        if (simple !== undefined) out += simple;
        else if (esc === 'u' || esc === 'U') {
          const len = esc === 'u' ? 4 : 8;
          const hex = this.s.slice(this.pos, this.pos + len);
          if (!/^[0-9A-Fa-f]+$/.test(hex) || hex.length !== len) this.fail('bad unicode escape');
          out += String.fromCodePoint(parseInt(hex, 16));
          this.pos += len;
        } else this.fail(`bad escape \\${esc ?? ''}`);
      } else out += ch;
    }
  }

  value() {
    this.space();
    const ch = this.peek();
    if (ch === '"' || ch === "'") {
      if (this.s.startsWith(ch.repeat(3), this.pos)) this.fail('multi-line strings are not supported');
      return this.string();
    }
    if (ch === '[') return this.array();
    if (ch === '{') return this.inlineTable();
    const m = /^[^\s,\]}#]+/.exec(this.s.slice(this.pos));
    if (!m) this.fail(`expected a value at column ${this.pos + 1}`);
    this.pos += m[0].length;
    return scalar(m[0], this.fail);
  }

  array() {
    this.pos++;
    const out = [];
    for (;;) {
      this.space();
      if (this.peek() === ']') { this.pos++; return out; }
      out.push(this.value());
      this.space();
      if (this.peek() === ',') this.pos++;
      else if (this.peek() !== ']') this.fail('expected `,` or `]` in an array');
    }
  }

  inlineTable() {
    this.pos++;
    const out = {};
    this.space();
    if (this.peek() === '}') { this.pos++; return out; }
    for (;;) {
      const path = this.key();
      this.expect('=');
      const parent = descend(out, path.slice(0, -1), this.fail, null);
      const last = path[path.length - 1];
      if (Object.hasOwn(parent, last)) this.fail(`duplicate key \`${last}\``);
      parent[last] = this.value();
      this.space();
      const next = this.s[this.pos++];
      if (next === '}') return out;
      if (next !== ',') this.fail('expected `,` or `}` in an inline table');
    }
  }
}

function scalar(word, fail) {
  if (word === 'true') return true;
  if (word === 'false') return false;
  const clean = word.replaceAll('_', '');
  if (/^[+-]?(0|[1-9][0-9]*)$/.test(clean)) {
    const big = BigInt(clean);
    return Number.isSafeInteger(Number(big)) ? Number(big) : big;
  }
  if (/^0x[0-9A-Fa-f]+$|^0o[0-7]+$|^0b[01]+$/.test(clean)) return Number(clean);
  if (/^[+-]?(inf|nan)$/.test(clean)) return clean.includes('nan') ? NaN : (clean.startsWith('-') ? -Infinity : Infinity);
  if (/^[+-]?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?$/.test(clean)) return Number(clean);
  return fail(`unsupported value \`${word}\` (dates and bare words are not supported)`);
}
