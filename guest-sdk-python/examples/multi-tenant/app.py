"""Buckets rows by tenant, with a separate bucket for admin-only rows (the Rust
``multi-tenant`` example, in Python).

For a table named in the configuration, the row's tenant column gives ``org:<tenant>``; a row
whose ``visibility`` is ``'admins'`` also gets ``org:<tenant>:admins``. A row whose tenant is
null or empty is dropped. Tables the configuration does not name go to ``global``.

Configuration, TOML or JSON (starting with ``{``)::

    [tenant_columns]
    items = "org_id"
    "billing.invoices" = "tenant_id"

An empty configuration, an unknown key or an empty ``tenant_columns`` is rejected at init.
"""

from sluice_rules import Rule, RuleError, Value, describe, export, parse_config

EXAMPLE = 'for example `tenant_columns = { items = "org_id" }`'


class MultiTenant(Rule):
    """The multi-tenant rule."""

    def __init__(self):
        self.tenant_columns = {}

    def init(self, config):
        if not config.strip():
            raise RuleError(
                f"multi-tenant needs a configuration naming each table's tenant column, {EXAMPLE}"
            )
        parsed = parse_config(config)
        unknown = sorted(set(parsed) - {"tenant_columns"})
        if unknown:
            raise RuleError(f"multi-tenant config: unknown field `{unknown[0]}`")
        columns = parsed.get("tenant_columns")
        if not isinstance(columns, dict) or not all(isinstance(v, str) for v in columns.values()):
            raise RuleError("multi-tenant config: tenant_columns must map table names to column names")
        if not columns:
            raise RuleError(f"multi-tenant config names no tables, {EXAMPLE}")
        self.tenant_columns = columns

    def filter(self, change):
        column = self.tenant_columns.get(change.table)
        if column is None:
            return True
        return change.row.get(column) not in (Value.null(), Value("text", ""))

    def buckets(self, change):
        column = self.tenant_columns.get(change.table)
        if column is None:
            return ["global"]
        row = change.row
        match row.get(column):
            case Value("text" | "numeric" | "int", tenant):
                pass
            case other:
                raise RuleError(
                    f"{change.table}.{column} must be text or an integer to name a tenant, got {describe(other)}"
                )
        buckets = [f"org:{tenant}"]
        if row.get("visibility") == Value("text", "admins"):
            buckets.append(f"org:{tenant}:admins")
        return buckets


WitWorld = export(MultiTenant)
