"""By-name views over the positional rows the host sends."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Optional, Sequence

from ._value import Value

_NULL = Value("null")


class Operation(Enum):
    """The kind of a change, as in the WIT ``operation`` enum."""

    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True)
class Column:
    """One column of a table: its ``name``, PostgreSQL ``type_name`` (``int8``, ``text``,
    ``_int4``) and whether it is part of the primary ``key``."""

    name: str
    type_name: str = "unknown"
    key: bool = False


@dataclass(frozen=True)
class Table:
    """A table touched by a batch: its ``name`` (schema-qualified unless ``public``:
    ``items``, ``billing.invoices``) and its ``columns`` in order."""

    name: str
    columns: Sequence[Column]
    _index: dict = field(default_factory=dict, compare=False, repr=False)

    def position(self, name: str) -> Optional[int]:
        """The index of column ``name``, or ``None`` when the table has no such column."""
        if not self._index and self.columns:
            self._index.update((c.name, i) for i, c in enumerate(self.columns))
        return self._index.get(name)


class Row:
    """A row, read by column name.

    >>> from sluice_rules.testing import TestTable
    >>> row = TestTable("items", ["id", "user_id"]).insert([1, None]).change().row
    >>> row.get("id")
    Value(kind='int', value=1)
    >>> row.get("missing"), row.has("missing")
    (Value(kind='null', value=None), False)
    """

    __slots__ = ("_table", "_values", "_convert")

    def __init__(self, table: Table, values: Sequence, convert=None) -> None:
        self._table = table
        self._values = values
        # In Wasm the values are componentize-py's generated classes, converted only when read.
        self._convert = convert

    def get(self, name: str) -> Value:
        """The value of column ``name``. A column the table does not have reads as null; use
        :meth:`has` to tell the two apart."""
        position = self._table.position(name)
        if position is None or position >= len(self._values):
            return _NULL
        value = self._values[position]
        return self._convert(value) if self._convert else value

    def has(self, name: str) -> bool:
        """Whether the table has a column ``name``."""
        return self._table.position(name) is not None

    def __getitem__(self, name: str) -> Value:
        """``row["col"]`` is ``row.get("col")``."""
        return self.get(name)

    def items(self):
        """``(column name, value)`` pairs, in column order."""
        return [(c.name, self.get(c.name)) for c in self._table.columns]


class Change:
    """One row change, as a rule sees it.

    ``table`` is the table's name; ``op`` an :class:`Operation`; ``new`` the row after the
    change (``None`` for deletes); ``old`` the row before it where PostgreSQL sent one (the full
    row under REPLICA IDENTITY FULL, otherwise only the key columns are set and the others read
    as null; ``None`` for inserts); ``row`` the one a rule usually looks at (``new``, else
    ``old``); ``lsn`` the LSN of the change's commit record (0 in ``sluice eval``).

    >>> from sluice_rules.testing import TestTable
    >>> change = TestTable("items", ["id"]).delete([7]).change()
    >>> change.op, change.new, change.row.get("id").value
    (<Operation.DELETE: 'delete'>, None, 7)
    """

    __slots__ = ("table_info", "op", "new", "old", "lsn")

    def __init__(self, table: Table, op: Operation, new: Optional[Row], old: Optional[Row], lsn: int):
        self.table_info = table
        self.op = op
        self.new = new
        self.old = old
        self.lsn = lsn

    @property
    def table(self) -> str:
        """The table's name, as the sidecar tables' ``table_name``."""
        return self.table_info.name

    @property
    def columns(self) -> Sequence[Column]:
        """The table's columns, in order."""
        return self.table_info.columns

    @property
    def row(self) -> Row:
        """The new row, or the old row for a delete; all null when neither was sent."""
        if self.new is not None:
            return self.new
        if self.old is not None:
            return self.old
        return Row(self.table_info, [])
