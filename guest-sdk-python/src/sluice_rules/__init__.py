"""Write sluice bucket rules in Python.

A rule decides, for every row change sluice reads from PostgreSQL, whether the change is kept
and which buckets (``user:42``, ``org:7``, ``global``) the row belongs to. Subclass
:class:`Rule`, export it with :func:`export`, and build the module with
``sluice-rules-build app.py -o rules.wasm`` (componentize-py 0.25.1, ``--stub-wasi``)::

    from sluice_rules import Rule, Value, export

    class ByOwner(Rule):
        def buckets(self, change):
            user = change.row.get("user_id")
            match user:
                case Value("text", id) if id:
                    return [f"user:{id}"]
                case Value("int", id):
                    return [f"user:{id}"]
            return ["global"]

    WitWorld = export(ByOwner)

The module must bind the name ``WitWorld`` (componentize-py looks it up). Everything else here
works natively, without Wasm, so rules are unit-tested with plain ``unittest`` or ``pytest``
(see :mod:`sluice_rules.testing`).

Determinism: a rule has no clock (reading ``time.time()``, ``datetime.now()`` and the like
raises :class:`ClockUnavailable`, an error outcome for that change), and the ``random`` module
is seeded from the change's LSN before each change, so replays give the same answers. The
same holds in the Rust and JavaScript SDKs.
"""

from ._value import Value, describe
from ._change import Change, Column, Operation, Row, Table
from ._rule import (
    ClockUnavailable,
    Outcome,
    Relation,
    Rule,
    RuleError,
    evaluate,
    evaluate_batch,
)
from ._config import ConfigError, parse_config
from ._export import export, log

__all__ = [
    "Change",
    "ClockUnavailable",
    "Column",
    "ConfigError",
    "Operation",
    "Outcome",
    "Relation",
    "Row",
    "Rule",
    "RuleError",
    "Table",
    "Value",
    "describe",
    "evaluate",
    "evaluate_batch",
    "export",
    "log",
    "parse_config",
]
