"""Building changes by hand, to unit-test a rule natively (no Wasm build, no database),
mirroring the Rust SDK's ``testing`` module.

>>> from sluice_rules import Outcome, Rule, evaluate
>>> class ByOwner(Rule):
...     def buckets(self, change):
...         return [f"user:{change.row.get('user_id').value}"]
>>> items = TestTable("items", ["id", "user_id"])
>>> evaluate(ByOwner(), items.insert([1, "u1"]).change())
Outcome(kind='keep', value=['user:u1'])
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence

from ._change import Change, Column, Operation, Row, Table
from ._value import Value


class TestTable:
    """A table to build test changes for: columns typed ``unknown``, the first one the key
    (``key=`` names others). Values are :class:`Value`s or Python objects (see
    :meth:`Value.of`: ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``, ``dict``).

    >>> TestTable("billing.invoices", ["id"]).table.columns[0].key
    True
    """

    __test__ = False  # not a pytest test class

    def __init__(self, name: str, columns: Iterable, key: Optional[Sequence[str]] = None):
        cols = []
        for i, column in enumerate(columns):
            if isinstance(column, Column):
                cols.append(column)
            else:
                is_key = column in key if key is not None else i == 0
                cols.append(Column(column, "unknown", is_key))
        self.table = Table(name, cols)

    def _row(self, values: Optional[Sequence]) -> Optional[Row]:
        if values is None:
            return None
        if len(values) != len(self.table.columns):
            raise ValueError(
                f"{self.table.name} has {len(self.table.columns)} columns, got {len(values)} values"
            )
        return Row(self.table, [Value.of(v) for v in values])

    def change(self, op: Operation, new=None, old=None, lsn: int = 0) -> "TestBatch":
        """A batch of one change with full control over both rows and the LSN."""
        return TestBatch([Change(self.table, op, self._row(new), self._row(old), lsn)])

    def insert(self, new: Sequence, lsn: int = 0) -> "TestBatch":
        """An insert of ``new``."""
        return self.change(Operation.INSERT, new=new, lsn=lsn)

    def update(self, new: Sequence, lsn: int = 0) -> "TestBatch":
        """An update to ``new``, with no old row (as under the default replica identity when
        the key did not change)."""
        return self.change(Operation.UPDATE, new=new, lsn=lsn)

    def delete(self, old: Sequence, lsn: int = 0) -> "TestBatch":
        """A delete of ``old``."""
        return self.change(Operation.DELETE, old=old, lsn=lsn)


class TestBatch:
    """Changes built by :class:`TestTable`, for :func:`sluice_rules.evaluate` (one) or
    :func:`sluice_rules.evaluate_batch` (all)."""

    __test__ = False

    def __init__(self, changes: List[Change]):
        self.changes = changes

    def change(self) -> Change:
        """The first change."""
        return self.changes[0]

    def push(self, other: "TestBatch") -> "TestBatch":
        """Appends another batch's changes; returns self, to chain."""
        self.changes.extend(other.changes)
        return self
