//! Drops soft-deleted rows and buckets the rest by owner:
//! - a row whose `deleted_at` is not null is dropped, so sluice removes it
//!   from every bucket it was in (a table without `deleted_at` keeps
//!   everything);
//! - otherwise, as the `by-owner` example: `user_id` (text or integer)
//!   gives `user:<user_id>`, a null or empty `user_id` or a table without
//!   one gives `global`.
//!
//! An unchanged TOASTed `deleted_at` or `user_id` cannot be judged and is
//! reported as an error. No configuration.

use sluice_guest_sdk::{Change, Rule, Value};

/// The soft-delete-filter rule.
#[derive(Debug, Default)]
pub struct SoftDeleteFilter;

impl Rule for SoftDeleteFilter {
    fn filter(&self, change: &Change<'_>) -> bool {
        // Unchanged is kept here so that `buckets` can report it.
        matches!(
            change.row().get("deleted_at"),
            Value::Null | Value::Unchanged
        )
    }

    fn buckets(&self, change: &Change<'_>) -> Result<Vec<String>, String> {
        let row = change.row();
        if row.get("deleted_at") == &Value::Unchanged {
            return Err(format!(
                "{}: deleted_at was not sent (unchanged TOAST value); cannot filter",
                change.table_name()
            ));
        }
        let bucket = match row.get("user_id") {
            Value::Text(id) | Value::Numeric(id) if !id.is_empty() => format!("user:{id}"),
            Value::Int(id) => format!("user:{id}"),
            Value::Null | Value::Text(_) | Value::Numeric(_) => "global".to_string(),
            other => {
                return Err(format!(
                    "{}: user_id must be text or an integer, got {other:?}",
                    change.table_name()
                ));
            }
        };
        Ok(vec![bucket])
    }
}

sluice_guest_sdk::export_rule!(SoftDeleteFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest_sdk::testing::TestTable;
    use sluice_guest_sdk::{Outcome, evaluate};

    fn items() -> TestTable {
        TestTable::new("items", &["id", "user_id", "deleted_at"])
    }

    #[test]
    fn soft_deleted_rows_are_dropped() {
        let batch = items().update(vec![
            Value::Int(1),
            Value::Text("u1".into()),
            Value::Timestamptz("2024-05-01T10:00:00Z".into()),
        ]);
        assert_eq!(evaluate(&SoftDeleteFilter, &batch.change()), Outcome::Drop);
    }

    #[test]
    fn live_rows_are_bucketed_by_owner() {
        let owned = items().insert(vec![Value::Int(1), Value::Text("u1".into()), Value::Null]);
        let shared = items().insert(vec![Value::Int(2), Value::Null, Value::Null]);
        assert_eq!(
            evaluate(&SoftDeleteFilter, &owned.change()),
            Outcome::Keep(vec!["user:u1".into()])
        );
        assert_eq!(
            evaluate(&SoftDeleteFilter, &shared.change()),
            Outcome::Keep(vec!["global".into()])
        );
    }

    #[test]
    fn table_without_deleted_at_keeps_everything() {
        let tags = TestTable::new("tags", &["id", "user_id"]);
        let batch = tags.insert(vec![Value::Int(1), Value::Int(7)]);
        assert_eq!(
            evaluate(&SoftDeleteFilter, &batch.change()),
            Outcome::Keep(vec!["user:7".into()])
        );
    }

    #[test]
    fn unchanged_deleted_at_is_an_error() {
        let batch = items().update(vec![
            Value::Int(1),
            Value::Text("u1".into()),
            Value::Unchanged,
        ]);
        assert_eq!(
            evaluate(&SoftDeleteFilter, &batch.change()),
            Outcome::Error(
                "items: deleted_at was not sent (unchanged TOAST value); cannot filter".into()
            )
        );
    }
}
