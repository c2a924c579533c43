// Native tests of the SDK and its examples: no Wasm, no database.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import {
  ClockUnavailable, ConfigError, Outcome, Relation, Rule, RuleError, Value, describe, evaluate,
  evaluateBatch, exportRule, parseConfig, randomFor,
} from 'sluice-rules';
import { TestTable } from 'sluice-rules/testing';
import { bundle } from '../src/bundle.js';
import { ByOwner } from '../examples/by-owner/rule.js';
import { MultiTenant } from '../examples/multi-tenant/rule.js';

const here = (p) => fileURLToPath(new URL(p, import.meta.url));

test('describe matches the Rust SDK\'s Debug', () => {
  assert.equal(describe(Value.bool(true)), 'Value::Bool(true)');
  assert.equal(describe(Value.text('')), 'Value::Text("")');
  assert.equal(describe(Value.json('{"nested":true}')), 'Value::Json("{\\"nested\\":true}")');
  assert.equal(describe(Value.float(1)), 'Value::Float(1.0)');
  assert.equal(describe(Value.float(NaN)), 'Value::Float(NaN)');
  assert.equal(describe(Value.int(42)), 'Value::Int(42)');
  assert.equal(describe(Value.bytes([1, 255])), 'Value::Bytes([1, 255])');
  assert.equal(describe(Value.text('a\nb\u0001')), 'Value::Text("a\\nb\\u{1}")');
  assert.equal(describe(Value.unchanged()), 'Value::Unchanged');
});

test('rows are read by name; a missing column reads as null', () => {
  const change = new TestTable('items', ['id', 'user_id']).update([1, Value.unchanged()]).change();
  assert.deepEqual(change.row.get('user_id'), { tag: 'unchanged' });
  assert.deepEqual(change.row.get('id'), { tag: 'int', val: 1n });
  assert.deepEqual(change.row.get('nope'), { tag: 'null' });
  assert.equal(change.row.has('nope'), false);
  assert.equal(change.old, undefined);
  assert.equal(change.op, 'update');
  assert.equal(change.lsn, 0n);
});

test('each exception is its own change\'s error', () => {
  class Picky extends Rule {
    buckets(change) {
      const id = change.row.get('id').val;
      if (id === 1n) throw new RuleError('one is refused');
      if (id === 2n) return null.missing;
      if (id === 3n) throw 'a string'; // eslint-disable-line no-throw-literal
      return [`n:${id}`];
    }
  }
  const items = new TestTable('items', ['id']);
  const batch = items.insert([1]).push(items.insert([2])).push(items.insert([3])).push(items.insert([4]));
  assert.deepEqual(evaluateBatch(new Picky(), batch.tables, batch.changes), [
    Outcome.error('one is refused'),
    Outcome.error("TypeError: Cannot read properties of null (reading 'missing')"),
    Outcome.error('a string'),
    Outcome.keep('n:4'),
  ]);
  class Wrong extends Rule { buckets() { return 'global'; } }
  assert.deepEqual(evaluate(new Wrong(), items.insert([1]).change()),
    Outcome.error('buckets must return an array of strings, got global'));
});

test('the clock throws while a rule runs and is back after', () => {
  const readers = {
    'Date.now': () => Date.now(),
    'new Date()': () => new Date(),
    'performance.now': () => performance.now(),
  };
  const change = new TestTable('t', ['id']).insert([1]).change();
  for (const [name, read] of Object.entries(readers)) {
    class Clocked extends Rule { buckets() { return [String(read())]; } }
    assert.deepEqual(evaluate(new Clocked(), change), Outcome.error(
      `ClockUnavailable: ${name}: sluice rules have no clock (a rule must be a function of the change alone); use the row's own timestamp columns`,
    ));
  }
  class Dated extends Rule { buckets() { return [new Date(0).toISOString()]; } }
  assert.deepEqual(evaluate(new Dated(), change), Outcome.keep('1970-01-01T00:00:00.000Z'));
  assert.ok(Date.now() > 1e12);
  assert.ok(new ClockUnavailable('x') instanceof Error);
});

test('Math.random is seeded from the LSN', () => {
  class Lucky extends Rule { buckets() { return [`r:${Math.random()}`, `r:${Math.random()}`]; } }
  const t = new TestTable('t', ['id']);
  const batch = t.insert([1], 77n).push(t.insert([2], 77n)).push(t.insert([3], 5n));
  const out = evaluateBatch(new Lucky(), batch.tables, batch.changes);
  assert.deepEqual(out[0], Outcome.keep(...randomFor(77n, 2).map((r) => `r:${r}`)));
  assert.deepEqual(out[1], out[0]);
  assert.deepEqual(out[2], Outcome.keep(...randomFor(5n, 2).map((r) => `r:${r}`)));
  assert.notEqual(Math.random(), Math.random());
});

test('configuration: TOML subset, JSON, and errors naming the line', () => {
  assert.deepEqual(parseConfig('[tenant_columns]\nitems = "org_id"\n"billing.invoices" = \'tenant_id\''),
    { tenant_columns: { items: 'org_id', 'billing.invoices': 'tenant_id' } });
  assert.deepEqual(parseConfig('tenant_columns = { items = "org_id" } # inline'),
    { tenant_columns: { items: 'org_id' } });
  assert.deepEqual(parseConfig('a.b = [1, 2.5, true, "x\\ty"]\nc = -3'),
    { a: { b: [1, 2.5, true, 'x\ty'] }, c: -3 });
  assert.deepEqual(parseConfig('{"a": 1}'), { a: 1 });
  assert.deepEqual(parseConfig('  '), {});
  assert.throws(() => parseConfig('a = '), new ConfigError('config (TOML): line 1: expected a value at column 4'));
  assert.throws(() => parseConfig('a = 1\na = 2'), new ConfigError('config (TOML): line 2: duplicate key `a`'));
  assert.throws(() => parseConfig('[t]\n[t]'), new ConfigError('config (TOML): line 2: table [t] defined twice'));
  assert.throws(() => parseConfig('d = 1979-05-27'), /^ConfigError: config \(TOML\): line 1: unsupported value/);
  assert.throws(() => parseConfig('{a'), /^ConfigError: config \(JSON\): /);
});

test('relations and exports', () => {
  assert.deepEqual(Relation.share('list_members', ['list_id'], 'lists'),
    { child: 'list_members', columns: ['list_id'], parent: 'lists', flow: 'share' });
  class Related extends Rule {
    relations() { return [Relation.inherit('items', ['list_id'], 'lists')]; }
    buckets() { return ['global']; }
  }
  const exported = exportRule(Related);
  assert.deepEqual(exported.init(''), { relations: [Relation.inherit('items', ['list_id'], 'lists')] });
  const batch = new TestTable('items', ['id']).insert([1]);
  assert.deepEqual(exported.evaluate(batch.tables, [...batch.changes, { ...batch.changes[0], table: 3 }]), [
    Outcome.keep('global'),
    Outcome.error('change refers to table #3 but the batch has 1 tables'),
  ]);
  class Failing extends Rule { init() { throw new RuleError('no'); } buckets() { return []; } }
  // ComponentizeJS needs a thrown string to return `err`.
  assert.throws(() => exportRule(Failing).init('x'), (e) => e === 'no');
});

test('the bundle turns SDK imports into the SDK and refuses others', () => {
  const text = bundle("import { Rule as R, exportRule } from 'sluice-rules';\nexport const x = 1;\n");
  assert.match(text, /^import \{ log as __sluiceLog \} from 'sluice:rules\/host@0\.2\.0';/);
  assert.match(text, /^const \{ Rule: R, exportRule \} = __sluice;$/m);
  assert.doesNotMatch(text, /^export (class|function) /m);
  assert.throws(() => bundle("import fs from 'node:fs';\n"), /unsupported import in the rule: import fs from 'node:fs';/);
  assert.throws(() => bundle("import { a } from './other.js';\n"), /a rule may import only the SDK/);
});

test('the shipped WIT is the repository\'s', () => {
  assert.equal(readFileSync(here('../wit/rules.wit'), 'utf8'), readFileSync(here('../../wit/rules.wit'), 'utf8'));
});

test('by-owner example', () => {
  const items = new TestTable('items', ['id', 'user_id']);
  const rule = new ByOwner();
  const one = (batch) => evaluate(rule, batch.change());
  assert.deepEqual(one(items.insert([1, 'u1'])), Outcome.keep('user:u1'));
  assert.deepEqual(one(items.update([1, 42])), Outcome.keep('user:42'));
  assert.deepEqual(one(items.insert([1, null])), Outcome.keep('global'));
  assert.deepEqual(one(items.insert([1, ''])), Outcome.keep('global'));
  assert.deepEqual(one(items.delete([1, 'u9'])), Outcome.keep('user:u9'));
  assert.deepEqual(one(new TestTable('tags', ['id', 'label']).insert([1, 'red'])), Outcome.keep('global'));
  assert.deepEqual(one(items.update([1, Value.unchanged()])),
    Outcome.error('items: user_id was not sent (unchanged TOAST value); cannot bucket'));
  assert.deepEqual(one(new TestTable('items', ['user_id']).insert([true])),
    Outcome.error('items: user_id must be text or an integer, got Value::Bool(true)'));
});

test('multi-tenant example', () => {
  const rule = (config) => { const r = new MultiTenant(); r.init(config); return r; };
  const toml = rule('[tenant_columns]\nitems = "org_id"\n"billing.invoices" = "tenant_id"');
  const json = rule('{"tenant_columns":{"items":"org_id","billing.invoices":"tenant_id"}}');
  assert.deepEqual(toml.tenantColumns, json.tenantColumns);
  const items = new TestTable('items', ['id', 'org_id', 'visibility']);
  assert.deepEqual(evaluate(toml, items.insert([1, 7, 'members']).change()), Outcome.keep('org:7'));
  assert.deepEqual(evaluate(toml, items.insert([2, 'acme', 'admins']).change()), Outcome.keep('org:acme', 'org:acme:admins'));
  assert.deepEqual(evaluate(toml, items.insert([3, null, 'x']).change()), Outcome.drop());
  assert.deepEqual(evaluate(toml, new TestTable('plans', ['id']).insert([1]).change()), Outcome.keep('global'));
  const err = (config) => { try { new MultiTenant().init(config); } catch (e) { return e.message; } return null; };
  const example = 'for example `tenant_columns = { items = "org_id" }`';
  assert.equal(err(''), `multi-tenant needs a configuration naming each table's tenant column, ${example}`);
  assert.equal(err('[tenant_columns]'), `multi-tenant config names no tables, ${example}`);
  assert.match(err('tenants = '), /^config \(TOML\): /);
  assert.equal(err('{"x":1}'), 'multi-tenant config: unknown field `x`');
});
