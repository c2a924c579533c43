"""The glue between a :class:`Rule` and componentize-py's generated bindings (``wit_world``),
imported only inside the Wasm build, so the rest of the SDK runs natively."""

from __future__ import annotations

import sys
from typing import Type

from ._change import Change, Column, Operation, Row, Table
from ._rule import Rule, _message, _one
from ._determinism import deterministic
from ._value import Value

_OPERATIONS = {"INSERT": Operation.INSERT, "UPDATE": Operation.UPDATE, "DELETE": Operation.DELETE}
# componentize-py's class names for each WIT value case, to the SDK's kinds.
_KINDS = {
    "Value_Null": "null",
    "Value_Unchanged": "unchanged",
    "Value_Bool": "bool",
    "Value_Int": "int",
    "Value_Float": "float",
    "Value_Text": "text",
    "Value_Numeric": "numeric",
    "Value_Bytes": "bytes",
    "Value_Json": "json",
    "Value_Date": "date",
    "Value_Time": "time",
    "Value_Timestamp": "timestamp",
    "Value_Timestamptz": "timestamptz",
}


def _value(wire) -> Value:
    kind = _KINDS[type(wire).__name__]
    return Value(kind, getattr(wire, "value", None))


def _table(wire) -> Table:
    return Table(wire.name, [Column(c.name, c.type_name, c.key) for c in wire.columns])


def _change(tables, wire) -> Change:
    table = tables[wire.table]
    new = Row(table, wire.new, _value) if wire.new is not None else None
    old = Row(table, wire.old, _value) if wire.old is not None else None
    return Change(table, _OPERATIONS[wire.op.name], new, old, wire.lsn)


def log(level: str, message: str) -> None:
    """Writes a line to the host's log (``level``: ``debug``, ``info``, ``warn`` or ``error``),
    tagged with the module's version; natively, to stderr. An ``error`` line explains a trap
    that follows it.

    >>> log("debug", "hello")  # doctest: +SKIP
    """
    try:
        from wit_world.imports import host, types
    except ImportError:
        print(f"[{level}] {message}", file=sys.stderr)
        return
    host.log(types.Level[level.upper()], message)


def export(rule_class: Type[Rule]):
    """The ``WitWorld`` class componentize-py exports, running ``rule_class``: bind it as
    ``WitWorld = export(MyRule)`` in the module given to the build.

    ``init`` builds ``rule_class()``, calls its ``init(config)`` and returns its relations; an
    exception there rejects the module version with its message. ``evaluate`` gives one outcome
    per change; an exception in ``filter`` or ``buckets`` is that change's error outcome.
    """

    class WitWorld:
        rule: Rule = rule_class()

        def init(self, config: str):
            from componentize_py_types import Err
            from wit_world.imports import types

            try:
                rule = rule_class()
                rule.init(config)
                relations = [
                    types.Relation(r.child, list(r.columns), r.parent, types.Flow[r.flow.upper()])
                    for r in rule.relations()
                ]
            except Exception as error:  # noqa: BLE001 - any failure rejects this version
                raise Err(_message(error)) from None
            WitWorld.rule = rule
            return types.Declarations(relations)

        def evaluate(self, tables, changes):
            from wit_world.imports import types

            mine = [_table(t) for t in tables]
            out = []
            with deterministic() as reseed:
                for wire in changes:
                    if not 0 <= wire.table < len(mine):
                        outcome_kind, value = "error", f"change refers to table #{wire.table} but the batch has {len(mine)} tables"
                    else:
                        outcome = _one(WitWorld.rule, _change(mine, wire), reseed)
                        outcome_kind, value = outcome.kind, outcome.value
                    if outcome_kind == "keep":
                        out.append(types.Outcome_Keep(value))
                    elif outcome_kind == "drop":
                        out.append(types.Outcome_Drop())
                    else:
                        out.append(types.Outcome_Error(value))
            return out

    WitWorld.__name__ = "WitWorld"
    return WitWorld
