//! Buckets rows by tenant, with a separate bucket for admin-only rows.
//!
//! For a table named in the configuration, the row's tenant column gives
//! `org:<tenant>`; a row whose `visibility` column is `'admins'` also gets
//! `org:<tenant>:admins`. A row whose tenant is null or empty belongs to no
//! tenant and is dropped. Tables the configuration does not name are shared
//! reference data and go to `global`.
//!
//! # Configuration
//!
//! TOML, or JSON when the text starts with `{`. `tenant_columns` maps a
//! table name (schema-qualified unless `public`) to its tenant column:
//!
//! ```toml
//! [tenant_columns]
//! items = "org_id"
//! "billing.invoices" = "tenant_id"
//! ```
//!
//! ```json
//! {"tenant_columns": {"items": "org_id", "billing.invoices": "tenant_id"}}
//! ```
//!
//! An empty configuration, an unknown key or an empty `tenant_columns` is
//! rejected at init, so a misconfigured module never goes live.

use std::collections::BTreeMap;

use serde::Deserialize;
use sluice_guest_sdk::{Change, Rule, Value};

/// The parsed configuration.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Table name to tenant column name.
    pub tenant_columns: BTreeMap<String, String>,
}

/// The multi-tenant rule.
#[derive(Debug, Default)]
pub struct MultiTenant {
    config: Config,
}

impl Rule for MultiTenant {
    fn init(&mut self, config: &str) -> Result<(), String> {
        // One line: the host shows a module's text as one line (newlines are escaped).
        const EXAMPLE: &str = "for example `tenant_columns = { items = \"org_id\" }`";
        let text = config.trim();
        if text.is_empty() {
            return Err(format!(
                "multi-tenant needs a configuration naming each table's tenant column, {EXAMPLE}"
            ));
        }
        let parsed: Config = if text.starts_with('{') {
            serde_json::from_str(text).map_err(|e| format!("multi-tenant config (JSON): {e}"))?
        } else {
            toml::from_str(text).map_err(|e| format!("multi-tenant config (TOML): {e}"))?
        };
        if parsed.tenant_columns.is_empty() {
            return Err(format!("multi-tenant config names no tables, {EXAMPLE}"));
        }
        self.config = parsed;
        Ok(())
    }

    fn filter(&self, change: &Change<'_>) -> bool {
        match self.config.tenant_columns.get(change.table_name()) {
            None => true,
            Some(column) => {
                !matches!(change.row().get(column), Value::Null)
                    && change.row().get(column) != &Value::Text(String::new())
            }
        }
    }

    fn buckets(&self, change: &Change<'_>) -> Result<Vec<String>, String> {
        let Some(column) = self.config.tenant_columns.get(change.table_name()) else {
            return Ok(vec!["global".to_string()]);
        };
        let row = change.row();
        let tenant = match row.get(column) {
            Value::Text(id) | Value::Numeric(id) => id.clone(),
            Value::Int(id) => id.to_string(),
            other => {
                return Err(format!(
                    "{}.{column} must be text or an integer to name a tenant, got {other:?}",
                    change.table_name()
                ));
            }
        };
        let mut buckets = vec![format!("org:{tenant}")];
        if matches!(row.get("visibility"), Value::Text(v) if v == "admins") {
            buckets.push(format!("org:{tenant}:admins"));
        }
        Ok(buckets)
    }
}

sluice_guest_sdk::export_rule!(MultiTenant);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest_sdk::testing::TestTable;
    use sluice_guest_sdk::{Outcome, evaluate};

    fn rule(config: &str) -> MultiTenant {
        let mut rule = MultiTenant::default();
        rule.init(config).unwrap();
        rule
    }

    fn keep(ids: &[&str]) -> Outcome {
        Outcome::Keep(ids.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn toml_and_json_configs_are_equivalent() {
        let toml =
            rule("[tenant_columns]\nitems = \"org_id\"\n\"billing.invoices\" = \"tenant_id\"");
        let json = rule(r#"{"tenant_columns":{"items":"org_id","billing.invoices":"tenant_id"}}"#);
        assert_eq!(toml.config, json.config);
        assert_eq!(toml.config.tenant_columns["billing.invoices"], "tenant_id");
    }

    #[test]
    fn tenant_column_gives_org_bucket_and_admins_bucket() {
        let rule = rule("[tenant_columns]\nitems = \"org_id\"");
        let items = TestTable::new("items", &["id", "org_id", "visibility"]);
        let member = items.insert(vec![
            Value::Int(1),
            Value::Int(7),
            Value::Text("members".into()),
        ]);
        let admins = items.insert(vec![
            Value::Int(2),
            Value::Text("acme".into()),
            Value::Text("admins".into()),
        ]);
        assert_eq!(evaluate(&rule, &member.change()), keep(&["org:7"]));
        assert_eq!(
            evaluate(&rule, &admins.change()),
            keep(&["org:acme", "org:acme:admins"])
        );
    }

    #[test]
    fn rows_without_tenant_are_dropped_and_unlisted_tables_are_global() {
        let rule = rule("[tenant_columns]\nitems = \"org_id\"");
        let items = TestTable::new("items", &["id", "org_id"]);
        let plans = TestTable::new("plans", &["id"]);
        assert_eq!(
            evaluate(
                &rule,
                &items.insert(vec![Value::Int(1), Value::Null]).change()
            ),
            Outcome::Drop
        );
        assert_eq!(
            evaluate(&rule, &plans.insert(vec![Value::Int(1)]).change()),
            keep(&["global"])
        );
    }

    #[test]
    fn bad_configs_are_rejected_at_init() {
        let err = |config: &str| MultiTenant::default().init(config).unwrap_err();
        assert_eq!(
            err(""),
            "multi-tenant needs a configuration naming each table's tenant column, for example `tenant_columns = { items = \"org_id\" }`"
        );
        assert_eq!(
            err("[tenant_columns]"),
            "multi-tenant config names no tables, for example `tenant_columns = { items = \"org_id\" }`"
        );
        assert!(
            err("tenants = 1").starts_with("multi-tenant config (TOML): "),
            "{}",
            err("tenants = 1")
        );
        assert!(
            err("{\"x\":1}").starts_with("multi-tenant config (JSON): unknown field `x`"),
            "{}",
            err("{\"x\":1}")
        );
    }
}
