#!/usr/bin/env node
// sluice-rules-build: builds a JavaScript rule into a sluice rules component.
//
//   sluice-rules-build rule.js -o rules.wasm [--jco PATH]
//
// Bundles the rule with this SDK (src/bundle.js) and runs jco 1.35.0 (ComponentizeJS 0.23.0,
// with @bytecodealliance/preview2-shim 0.26.0: 0.26.1 breaks it) against the WIT shipped in
// this package, world sluice:rules/rules@0.2.0, with `-d stdio random clocks http fetch-event`,
// which keeps the imports sluice refuses out of the component. Another jco version is refused.
// Builds are not byte-reproducible: each rebuild is a new rules version to sluice.

import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundle } from '../src/bundle.js';

export const JCO_VERSION = '1.35.0';
export const FEATURES_DISABLED = ['stdio', 'random', 'clocks', 'http', 'fetch-event'];
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

function usage(message) {
  console.error(`sluice-rules-build: ${message}\nusage: sluice-rules-build rule.js -o rules.wasm [--jco PATH]`);
  process.exit(2);
}

function findJco(given) {
  const candidates = [given, process.env.JCO, join(ROOT, 'node_modules/.bin/jco')];
  const found = candidates.find((c) => c && existsSync(c));
  if (!found) {
    usage(`jco not found; install @bytecodealliance/jco@${JCO_VERSION} with componentize-js 0.23.0 and preview2-shim 0.26.0 (npm install in this package, or scripts/install-guest-toolchains in the sluice repository), or pass --jco`);
  }
  return found;
}

function main(argv) {
  let input; let output; let jco;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '-o' || argv[i] === '--output') output = argv[++i];
    else if (argv[i] === '--jco') jco = argv[++i];
    else if (!input) input = argv[i];
    else usage(`unexpected argument ${argv[i]}`);
  }
  if (!input || !output) usage('a rule file and -o are required');
  jco = findJco(jco);
  const version = execFileSync(jco, ['--version'], { encoding: 'utf8' }).trim();
  if (!version.includes(JCO_VERSION)) usage(`${jco} is ${version}; this SDK needs jco ${JCO_VERSION}`);
  const dir = mkdtempSync(join(tmpdir(), 'sluice-rules-'));
  try {
    const bundled = join(dir, 'rule.bundle.js');
    writeFileSync(bundled, bundle(readFileSync(input, 'utf8')));
    const run = spawnSync(jco, [
      'componentize', bundled, '--wit', join(ROOT, 'wit'), '-n', 'rules',
      '-d', ...FEATURES_DISABLED, '-o', output,
    ], { stdio: 'inherit' });
    return run.status ?? 1;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exit(main(process.argv.slice(2)));
}
