"""Native tests of the SDK and its examples: no Wasm, no database."""

import datetime
import doctest
import importlib.util
import random
import sys
import time
import unittest
from pathlib import Path

import sluice_rules
from sluice_rules import (
    ClockUnavailable,
    ConfigError,
    Outcome,
    Relation,
    Rule,
    RuleError,
    Value,
    describe,
    evaluate,
    evaluate_batch,
    parse_config,
)
from sluice_rules.testing import TestTable

ROOT = Path(__file__).resolve().parent.parent


def load_example(name):
    path = ROOT / "examples" / name / "app.py"
    spec = importlib.util.spec_from_file_location(f"example_{name.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_tests(loader, tests, ignore):
    for name in ["_value", "_change", "_rule", "_config", "testing", "build"]:
        tests.addTests(doctest.DocTestSuite(f"sluice_rules.{name}"))
    return tests


class Values(unittest.TestCase):
    def test_describe_matches_rusts_debug(self):
        self.assertEqual(describe(Value("bool", True)), "Value::Bool(true)")
        self.assertEqual(describe(Value("text", "")), 'Value::Text("")')
        self.assertEqual(describe(Value("json", '{"nested":true}')), 'Value::Json("{\\"nested\\":true}")')
        self.assertEqual(describe(Value("float", 1.0)), "Value::Float(1.0)")
        self.assertEqual(describe(Value("float", float("nan"))), "Value::Float(NaN)")
        self.assertEqual(describe(Value("bytes", b"\x01\xff")), "Value::Bytes([1, 255])")
        self.assertEqual(describe(Value("text", "a\nb\x01")), 'Value::Text("a\\nb\\u{1}")')
        self.assertEqual(describe(Value.unchanged()), "Value::Unchanged")

    def test_unknown_kind_is_refused(self):
        with self.assertRaisesRegex(ValueError, "unknown value kind 'texts'"):
            Value("texts", "x")


class Rows(unittest.TestCase):
    def test_by_name_access(self):
        change = TestTable("items", ["id", "user_id"]).update([1, Value.unchanged()]).change()
        self.assertEqual(change.row.get("user_id"), Value.unchanged())
        self.assertEqual(change.row["id"], Value("int", 1))
        self.assertEqual(change.row.get("nope"), Value.null())
        self.assertFalse(change.row.has("nope"))
        self.assertEqual(change.table, "items")
        self.assertIsNone(change.old)


class Exceptions(unittest.TestCase):
    def test_each_exception_is_its_changes_error(self):
        class Picky(Rule):
            def buckets(self, change):
                id = change.row.get("id").value
                if id == 1:
                    raise RuleError("one is refused")
                if id == 2:
                    return {}["missing"]
                return [f"n:{id}"]

        items = TestTable("items", ["id"])
        batch = items.insert([1]).push(items.insert([2])).push(items.insert([3]))
        self.assertEqual(
            evaluate_batch(Picky(), batch.changes),
            [Outcome.error("one is refused"), Outcome.error("KeyError: 'missing'"), Outcome.keep("n:3")],
        )

    def test_buckets_of_the_wrong_type_is_an_error(self):
        class Wrong(Rule):
            def buckets(self, change):
                return "global"

        self.assertEqual(
            evaluate(Wrong(), TestTable("t", ["id"]).insert([1]).change()),
            Outcome.error("buckets must return a list of str, got 'global'"),
        )


class Determinism(unittest.TestCase):
    def test_the_clock_raises_while_a_rule_runs_and_is_back_after(self):
        class Clocked(Rule):
            def __init__(self, read):
                self.read = read

            def buckets(self, change):
                return [str(self.read())]

        change = TestTable("t", ["id"]).insert([1]).change()
        readers = {
            "time.time": lambda: time.time(),
            "time.monotonic": lambda: time.monotonic(),
            "datetime.now": lambda: datetime.datetime.now(),
            "date.today": lambda: datetime.date.today(),
        }
        for name, read in readers.items():
            outcome = evaluate(Clocked(read), change)
            self.assertEqual(
                outcome,
                Outcome.error(
                    f"ClockUnavailable: {name}: sluice rules have no clock (a rule must be a function of the change alone); use the row's own timestamp columns"
                ),
            )
        self.assertGreater(time.time(), 1e9)
        self.assertIs(type(datetime.datetime.now()), datetime.datetime)

    def test_random_is_seeded_from_the_lsn(self):
        class Lucky(Rule):
            def buckets(self, change):
                return [f"r:{random.random()!r}"]

        table = TestTable("t", ["id"])
        expected = random.Random(77).random()
        before = random.getstate()
        self.assertEqual(evaluate(Lucky(), table.insert([1], lsn=77).change()), Outcome.keep(f"r:{expected!r}"))
        batch = table.insert([1], lsn=77).push(table.insert([2], lsn=77)).push(table.insert([3], lsn=5))
        outcomes = evaluate_batch(Lucky(), batch.changes)
        self.assertEqual(outcomes[0], outcomes[1])
        self.assertEqual(outcomes[2], Outcome.keep(f"r:{random.Random(5).random()!r}"))
        self.assertEqual(random.getstate(), before)


class Config(unittest.TestCase):
    def test_toml_json_and_errors(self):
        self.assertEqual(parse_config("a = 1"), {"a": 1})
        self.assertEqual(parse_config('{"a": 1}'), {"a": 1})
        with self.assertRaisesRegex(ConfigError, r"^config \(TOML\): "):
            parse_config("a = ")
        with self.assertRaisesRegex(ConfigError, r"^config \(JSON\): "):
            parse_config("{a")


class Relations(unittest.TestCase):
    def test_builders(self):
        self.assertEqual(
            Relation.share("list_members", ["list_id"], "lists"),
            Relation("list_members", ["list_id"], "lists", "share"),
        )


class ByOwnerExample(unittest.TestCase):
    rule = load_example("by-owner").ByOwner()
    items = TestTable("items", ["id", "user_id"])

    def outcome(self, batch):
        return evaluate(self.rule, batch.change())

    def test_buckets(self):
        self.assertEqual(self.outcome(self.items.insert([1, "u1"])), Outcome.keep("user:u1"))
        self.assertEqual(self.outcome(self.items.update([1, 42])), Outcome.keep("user:42"))
        self.assertEqual(self.outcome(self.items.insert([1, None])), Outcome.keep("global"))
        self.assertEqual(self.outcome(self.items.insert([1, ""])), Outcome.keep("global"))
        self.assertEqual(self.outcome(self.items.delete([1, "u9"])), Outcome.keep("user:u9"))
        tags = TestTable("tags", ["id", "label"])
        self.assertEqual(self.outcome(tags.insert([1, "red"])), Outcome.keep("global"))

    def test_errors(self):
        self.assertEqual(
            self.outcome(self.items.update([1, Value.unchanged()])),
            Outcome.error("items: user_id was not sent (unchanged TOAST value); cannot bucket"),
        )
        self.assertEqual(
            self.outcome(TestTable("items", ["user_id"]).insert([True])),
            Outcome.error("items: user_id must be text or an integer, got Value::Bool(true)"),
        )


class MultiTenantExample(unittest.TestCase):
    module = load_example("multi-tenant")

    def rule(self, config):
        rule = self.module.MultiTenant()
        rule.init(config)
        return rule

    def test_toml_and_json_are_equivalent(self):
        toml = self.rule('[tenant_columns]\nitems = "org_id"\n"billing.invoices" = "tenant_id"')
        json = self.rule('{"tenant_columns":{"items":"org_id","billing.invoices":"tenant_id"}}')
        self.assertEqual(toml.tenant_columns, json.tenant_columns)

    def test_buckets(self):
        rule = self.rule('[tenant_columns]\nitems = "org_id"')
        items = TestTable("items", ["id", "org_id", "visibility"])
        self.assertEqual(evaluate(rule, items.insert([1, 7, "members"]).change()), Outcome.keep("org:7"))
        self.assertEqual(
            evaluate(rule, items.insert([2, "acme", "admins"]).change()),
            Outcome.keep("org:acme", "org:acme:admins"),
        )
        self.assertEqual(evaluate(rule, items.insert([3, None, "x"]).change()), Outcome.drop())
        plans = TestTable("plans", ["id"])
        self.assertEqual(evaluate(rule, plans.insert([1]).change()), Outcome.keep("global"))

    def test_bad_configs_are_rejected(self):
        def err(config):
            with self.assertRaises(Exception) as caught:
                self.module.MultiTenant().init(config)
            return str(caught.exception)

        example = 'for example `tenant_columns = { items = "org_id" }`'
        self.assertEqual(err(""), f"multi-tenant needs a configuration naming each table's tenant column, {example}")
        self.assertEqual(err("[tenant_columns]"), f"multi-tenant config names no tables, {example}")
        self.assertTrue(err("tenants = ").startswith("config (TOML): "))
        self.assertEqual(err('{"x":1}'), "multi-tenant config: unknown field `x`")


class Shipped(unittest.TestCase):
    def test_the_shipped_wit_is_the_repositorys(self):
        shipped = Path(sluice_rules.__file__).parent / "wit" / "rules.wit"
        self.assertEqual(shipped.read_text(), (ROOT.parent / "wit" / "rules.wit").read_text())


if __name__ == "__main__":
    sys.exit(unittest.main())
