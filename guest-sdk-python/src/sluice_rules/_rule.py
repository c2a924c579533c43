"""The class a rule subclasses, its outcomes, and how a batch is run through it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

from ._change import Change
from ._determinism import ClockUnavailable, deterministic, seed_for

__all__ = ["ClockUnavailable", "Outcome", "Relation", "Rule", "RuleError", "evaluate", "evaluate_batch"]


class RuleError(Exception):
    """Raise it to give one change an ``error(message)`` outcome with exactly ``message``; the
    host applies its failure policy to that change alone. Any other exception does too, with
    the message ``"<ExceptionType>: <text>"``.

    >>> from sluice_rules.testing import TestTable
    >>> class Strict(Rule):
    ...     def buckets(self, change):
    ...         raise RuleError("no owner")
    >>> evaluate(Strict(), TestTable("t", ["id"]).insert([1]).change())
    Outcome(kind='error', value='no owner')
    """


@dataclass(frozen=True)
class Outcome:
    """What a rule decided about one change: ``Outcome("drop")``, ``Outcome("keep", [ids])`` or
    ``Outcome("error", message)``, as the WIT ``outcome`` variant."""

    kind: str
    value: object = None

    __match_args__ = ("kind", "value")

    @staticmethod
    def keep(*buckets: str) -> "Outcome":
        """``keep`` with these bucket ids: ``Outcome.keep("user:1")``."""
        return Outcome("keep", list(buckets))

    @staticmethod
    def drop() -> "Outcome":
        """``drop``: the row belongs to no bucket."""
        return Outcome("drop")

    @staticmethod
    def error(message: str) -> "Outcome":
        """``error(message)``."""
        return Outcome("error", message)


@dataclass(frozen=True)
class Relation:
    """A foreign key along which memberships flow (see the WIT ``relation``): rows of ``child``
    whose ``columns`` hold the primary key of a ``parent`` row. ``flow`` is ``"inherit"`` (the
    child is in its parent's buckets) or ``"share"`` (the parent is in its children's own
    buckets).

    >>> Relation.inherit("order_details", ["order_id"], "orders").flow
    'inherit'
    """

    child: str
    columns: Sequence[str]
    parent: str
    flow: str

    @staticmethod
    def inherit(child: str, columns: Sequence[str], parent: str) -> "Relation":
        """Rows of ``child`` belong to every bucket of their ``parent`` row."""
        return Relation(child, list(columns), parent, "inherit")

    @staticmethod
    def share(child: str, columns: Sequence[str], parent: str) -> "Relation":
        """The ``parent`` row belongs to every own bucket of its ``child`` rows."""
        return Relation(child, list(columns), parent, "share")


class Rule:
    """A bucket rule. sluice builds it once per module instance with no arguments, calls
    :meth:`init` with the user's configuration, then, for every change, :meth:`filter` and,
    if it keeps the change, :meth:`buckets`.

    A rule must be a pure function of its configuration and its input: no clock, no network,
    no files; ``random`` is seeded from the change's LSN.

    >>> class LiveRows(Rule):
    ...     def filter(self, change):
    ...         return change.row.get("deleted_at").is_null
    ...     def buckets(self, change):
    ...         return ["global"]
    """

    def init(self, config: str) -> None:
        """Reads the rule configuration text (TOML or JSON, empty when none; see
        :func:`sluice_rules.parse_config`). Raising rejects this module version with the
        exception's message. Accepts anything by default."""

    def relations(self) -> List[Relation]:
        """The relations the host applies, asked once after :meth:`init`. None by default."""
        return []

    def filter(self, change: Change) -> bool:
        """Whether the change is kept; a dropped change belongs to no bucket. Keeps all."""
        return True

    def buckets(self, change: Change) -> List[str]:
        """The bucket ids the row belongs to (non-empty, no control or format characters, at
        most 255 bytes after NFC). Raise :class:`RuleError` for an error outcome."""
        raise NotImplementedError(f"{type(self).__name__} must define buckets(change)")


def _message(error: BaseException) -> str:
    if type(error) is RuleError:
        return str(error)
    return f"{type(error).__name__}: {error}"


def evaluate(rule: Rule, change: Change) -> Outcome:
    """Runs one change through a rule exactly as the exported module does: :meth:`Rule.filter`,
    then :meth:`Rule.buckets`, with no clock and ``random`` seeded from ``change.lsn``. An
    exception becomes this change's error outcome.

    >>> from sluice_rules.testing import TestTable
    >>> class Global(Rule):
    ...     def buckets(self, change):
    ...         return ["global"]
    >>> evaluate(Global(), TestTable("items", ["id"]).insert([1]).change())
    Outcome(kind='keep', value=['global'])
    """
    with deterministic() as reseed:
        return _one(rule, change, reseed)


def _one(rule: Rule, change: Change, reseed) -> Outcome:
    reseed(seed_for(change.lsn))
    try:
        if not rule.filter(change):
            return Outcome("drop")
        buckets = rule.buckets(change)
        if isinstance(buckets, str) or not all(isinstance(b, str) for b in buckets):
            return Outcome("error", f"buckets must return a list of str, got {buckets!r}")
        return Outcome("keep", list(buckets))
    except Exception as error:  # noqa: BLE001 - every exception is this change's error
        return Outcome("error", _message(error))


def evaluate_batch(rule: Rule, changes: Sequence[Change]) -> List[Outcome]:
    """One outcome per change, in order, as the exported ``evaluate`` computes them."""
    with deterministic() as reseed:
        return [_one(rule, change, reseed) for change in changes]
