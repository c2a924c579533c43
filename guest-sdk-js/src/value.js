// Column values in jco's representation of the WIT `value` variant: `{ tag, val }`.

/** Every kind a value can have, as the WIT `value` cases. */
export const KINDS = Object.freeze([
  'null', 'unchanged', 'bool', 'int', 'float', 'text', 'numeric', 'bytes', 'json',
  'date', 'time', 'timestamp', 'timestamptz',
]);

const NULL = Object.freeze({ tag: 'null' });
const UNCHANGED = Object.freeze({ tag: 'unchanged' });

/**
 * Builders for values, mostly for tests: the host sends the same shapes.
 * `int` takes a number or a bigint and always gives a bigint (WIT `s64`).
 */
export const Value = Object.freeze({
  null: () => NULL,
  unchanged: () => UNCHANGED,
  bool: (b) => ({ tag: 'bool', val: Boolean(b) }),
  int: (n) => ({ tag: 'int', val: BigInt(n) }),
  float: (n) => ({ tag: 'float', val: Number(n) }),
  text: (s) => ({ tag: 'text', val: String(s) }),
  numeric: (s) => ({ tag: 'numeric', val: String(s) }),
  bytes: (b) => ({ tag: 'bytes', val: Uint8Array.from(b) }),
  json: (s) => ({ tag: 'json', val: typeof s === 'string' ? s : JSON.stringify(s) }),
  date: (s) => ({ tag: 'date', val: String(s) }),
  time: (s) => ({ tag: 'time', val: String(s) }),
  timestamp: (s) => ({ tag: 'timestamp', val: String(s) }),
  timestamptz: (s) => ({ tag: 'timestamptz', val: String(s) }),
  /**
   * The value a JavaScript value stands for: null/undefined null, booleans bool, bigints and
   * integral numbers int, other numbers float, strings text, Uint8Array bytes, objects and
   * arrays json; a `{ tag }` object with a known tag is kept. Throws TypeError otherwise.
   */
  of(js) {
    if (js === null || js === undefined) return NULL;
    if (typeof js === 'boolean') return Value.bool(js);
    if (typeof js === 'bigint') return Value.int(js);
    if (typeof js === 'number') return Number.isInteger(js) ? Value.int(js) : Value.float(js);
    if (typeof js === 'string') return Value.text(js);
    if (js instanceof Uint8Array) return Value.bytes(js);
    if (typeof js === 'object' && KINDS.includes(js.tag)) return js;
    if (typeof js === 'object') return Value.json(js);
    throw new TypeError(`no value kind for a ${typeof js}`);
  },
});

/** Whether two values are the same kind and payload. */
export function valueEquals(a, b) {
  if (a.tag !== b.tag) return false;
  if (a.tag === 'bytes') {
    const x = Array.from(a.val);
    const y = Array.from(b.val);
    return x.length === y.length && x.every((v, i) => v === y[i]);
  }
  return a.val === b.val;
}

// Rust's `{:?}` of a str, so that error messages read the same in every SDK.
function rustStr(text) {
  let out = '"';
  for (const ch of text) {
    const code = ch.codePointAt(0);
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (ch === '\0') out += '\\0';
    else if (code < 0x20 || code === 0x7f) out += `\\u{${code.toString(16)}}`;
    else out += ch;
  }
  return out + '"';
}

function rustFloat(n) {
  if (Number.isNaN(n)) return 'NaN';
  if (n === Infinity) return 'inf';
  if (n === -Infinity) return '-inf';
  const abs = Math.abs(n);
  if (abs !== 0 && (abs >= 1e16 || abs < 1e-4)) {
    // Rust writes `1e16` and `1e-5`; JavaScript switches to exponents elsewhere, with a `+`.
    const [mantissa, exponent] = n.toExponential().split('e');
    return `${mantissa}e${Number(exponent)}`;
  }
  if (Number.isInteger(n)) return Object.is(n, -0) ? '-0.0' : `${n}.0`;
  return String(n);
}

/**
 * The value as the Rust SDK's `{:?}` prints it (`Value::Bool(true)`, `Value::Text("u1")`,
 * `Value::Null`), so that error messages read the same in Rust, Python and JavaScript.
 */
export function describe(value) {
  const name = `Value::${value.tag[0].toUpperCase()}${value.tag.slice(1)}`;
  const v = value.val;
  switch (value.tag) {
    case 'null':
    case 'unchanged':
      return name;
    case 'bool':
      return `${name}(${v ? 'true' : 'false'})`;
    case 'int':
      return `${name}(${v})`;
    case 'float':
      return `${name}(${rustFloat(v)})`;
    case 'bytes':
      return `${name}([${Array.from(v).join(', ')}])`;
    default:
      return `${name}(${rustStr(v)})`;
  }
}
