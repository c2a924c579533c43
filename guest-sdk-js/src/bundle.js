// One ES module from the SDK and a rule: ComponentizeJS takes a single source file, and a rule
// imports the SDK by its package name, which nothing resolves inside the component.

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const SRC = dirname(fileURLToPath(import.meta.url));

/** The SDK's modules a component needs, dependencies first. */
const MODULES = ['value.js', 'change.js', 'determinism.js', 'config.js', 'rule.js'];

/** Package names a rule may import the SDK by. */
const NAMES = ['sluice-rules', '@sluice/rules'];

function sdkBody() {
  const exported = [];
  const parts = MODULES.map((file) => {
    const text = readFileSync(join(SRC, file), 'utf8');
    return text
      .replace(/^import .* from '\.\/[a-z]+\.js';\n/gm, '')
      .replace(/^export (class|function|const) ([A-Za-z_$][\w$]*)/gm, (_, kind, name) => {
        exported.push(name);
        return `${kind} ${name}`;
      });
  });
  return { text: parts.join('\n'), exported };
}

/**
 * The bundle of `ruleSource`: the SDK in a function scope (its internal names cannot clash
 * with the rule's), the host's log wired to `log`, then the rule with its SDK imports turned
 * into destructuring. Throws when the rule imports anything else.
 */
export function bundle(ruleSource) {
  const { text, exported } = sdkBody();
  const rule = ruleSource.replace(
    /^import\s+(\*\s+as\s+[\w$]+|\{[^}]*\})\s+from\s+['"]([^'"]+)['"];?[ \t]*$/gm,
    (_, what, from) => {
      if (!NAMES.includes(from)) {
        throw new Error(`a rule may import only the SDK (${NAMES.join(' or ')}), not '${from}': bundle it first`);
      }
      if (what.startsWith('*')) return `const ${what.split(/\s+as\s+/)[1]} = __sluice;`;
      return `const ${what.replace(/([\w$]+)\s+as\s+([\w$]+)/g, '$1: $2')} = __sluice;`;
    },
  );
  const leftover = /^import\s.*$/m.exec(rule);
  if (leftover) throw new Error(`unsupported import in the rule: ${leftover[0]}`);
  return [
    "import { log as __sluiceLog } from 'sluice:rules/host@0.2.0';",
    'globalThis.__sluiceHostLog = __sluiceLog;',
    `const __sluice = (() => {\n${text}\nreturn { ${exported.join(', ')} };\n})();`,
    rule,
  ].join('\n');
}
