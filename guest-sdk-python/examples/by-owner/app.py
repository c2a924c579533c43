"""Buckets every row by its owner, as synchro's ``UserBucket`` does (the Rust ``by-owner``
example, in Python; ``sluice eval`` gives the same outcomes):

- a ``user_id`` that is text or an integer gives ``user:<user_id>``;
- a null or empty ``user_id``, or a table without a ``user_id`` column, gives ``global``;
- a ``user_id`` PostgreSQL did not send (unchanged TOAST) or of another kind is an error.

Build: ``sluice-rules-build app.py -o by_owner.wasm``.
"""

from sluice_rules import Rule, RuleError, Value, describe, export


class ByOwner(Rule):
    """The by-owner rule. No configuration."""

    def buckets(self, change):
        match change.row.get("user_id"):
            case Value("text" | "numeric", id) if id:
                return [f"user:{id}"]
            case Value("int", id):
                return [f"user:{id}"]
            case Value("null" | "text" | "numeric"):
                return ["global"]
            case Value("unchanged"):
                raise RuleError(
                    f"{change.table}: user_id was not sent (unchanged TOAST value); cannot bucket"
                )
            case other:
                raise RuleError(
                    f"{change.table}: user_id must be text or an integer, got {describe(other)}"
                )


WitWorld = export(ByOwner)
