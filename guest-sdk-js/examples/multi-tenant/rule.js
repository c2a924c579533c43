// Buckets rows by tenant, with a separate bucket for admin-only rows (the Rust `multi-tenant`
// example, in JavaScript).
//
// For a table named in the configuration, the row's tenant column gives `org:<tenant>`; a row
// whose `visibility` is 'admins' also gets `org:<tenant>:admins`. A row whose tenant is null or
// empty is dropped. Tables the configuration does not name go to `global`.
//
// Configuration, TOML or JSON (starting with `{`):
//
//   [tenant_columns]
//   items = "org_id"
//   "billing.invoices" = "tenant_id"
//
// An empty configuration, an unknown key or an empty `tenant_columns` is rejected at init.

import { Rule, RuleError, describe, exportRule, parseConfig } from 'sluice-rules';

const EXAMPLE = 'for example `tenant_columns = { items = "org_id" }`';

/** The multi-tenant rule. */
export class MultiTenant extends Rule {
  constructor() {
    super();
    this.tenantColumns = new Map();
  }

  init(config) {
    if (config.trim() === '') {
      throw new RuleError(`multi-tenant needs a configuration naming each table's tenant column, ${EXAMPLE}`);
    }
    const parsed = parseConfig(config);
    const unknown = Object.keys(parsed).filter((k) => k !== 'tenant_columns').sort();
    if (unknown.length) throw new RuleError(`multi-tenant config: unknown field \`${unknown[0]}\``);
    const columns = parsed.tenant_columns;
    if (typeof columns !== 'object' || columns === null || Array.isArray(columns)
        || !Object.values(columns).every((c) => typeof c === 'string')) {
      throw new RuleError('multi-tenant config: tenant_columns must map table names to column names');
    }
    if (Object.keys(columns).length === 0) throw new RuleError(`multi-tenant config names no tables, ${EXAMPLE}`);
    this.tenantColumns = new Map(Object.entries(columns));
  }

  filter(change) {
    const column = this.tenantColumns.get(change.table);
    if (column === undefined) return true;
    const tenant = change.row.get(column);
    return !(tenant.tag === 'null' || (tenant.tag === 'text' && tenant.val === ''));
  }

  buckets(change) {
    const column = this.tenantColumns.get(change.table);
    if (column === undefined) return ['global'];
    const tenant = change.row.get(column);
    if (!['text', 'numeric', 'int'].includes(tenant.tag)) {
      throw new RuleError(`${change.table}.${column} must be text or an integer to name a tenant, got ${describe(tenant)}`);
    }
    const buckets = [`org:${tenant.val}`];
    const visibility = change.row.get('visibility');
    if (visibility.tag === 'text' && visibility.val === 'admins') buckets.push(`org:${tenant.val}:admins`);
    return buckets;
  }
}

export const { init, evaluate } = exportRule(MultiTenant);
