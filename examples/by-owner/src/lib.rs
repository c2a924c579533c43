//! Buckets every row by its owner, as synchro's `UserBucket` does:
//! - a `user_id` that is text or an integer gives `user:<user_id>`;
//! - a null or empty `user_id`, or a table without a `user_id` column, gives
//!   `global`.
//!
//! Deletes are bucketed by the old row (only its key columns are set under
//! the default replica identity, so a delete usually reads `global`; sluice
//! removes a deleted row from every bucket it was in regardless).
//!
//! A `user_id` that PostgreSQL did not send (an unchanged TOASTed value)
//! cannot be bucketed and is reported as an error. No configuration.

use sluice_guest_sdk::{Change, Rule, Value};

/// The by-owner rule.
#[derive(Debug, Default)]
pub struct ByOwner;

impl Rule for ByOwner {
    fn buckets(&self, change: &Change<'_>) -> Result<Vec<String>, String> {
        owner_bucket(change).map(|bucket| vec![bucket])
    }
}

/// The one bucket a change belongs to.
pub fn owner_bucket(change: &Change<'_>) -> Result<String, String> {
    match change.row().get("user_id") {
        Value::Text(id) | Value::Numeric(id) if !id.is_empty() => Ok(format!("user:{id}")),
        Value::Int(id) => Ok(format!("user:{id}")),
        Value::Null | Value::Text(_) | Value::Numeric(_) => Ok("global".to_string()),
        Value::Unchanged => Err(format!(
            "{}: user_id was not sent (unchanged TOAST value); cannot bucket",
            change.table_name()
        )),
        other => Err(format!(
            "{}: user_id must be text or an integer, got {other:?}",
            change.table_name()
        )),
    }
}

sluice_guest_sdk::export_rule!(ByOwner);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest_sdk::testing::TestTable;
    use sluice_guest_sdk::{Outcome, evaluate};

    fn keep(bucket: &str) -> Outcome {
        Outcome::Keep(vec![bucket.to_string()])
    }

    #[test]
    fn text_user_id_gives_user_bucket() {
        let items = TestTable::new("items", &["id", "user_id"]);
        let batch = items.insert(vec![Value::Int(1), Value::Text("u1".into())]);
        assert_eq!(evaluate(&ByOwner, &batch.change()), keep("user:u1"));
    }

    #[test]
    fn integer_user_id_gives_user_bucket() {
        let items = TestTable::new("items", &["id", "user_id"]);
        let batch = items.update(vec![Value::Int(1), Value::Int(42)]);
        assert_eq!(evaluate(&ByOwner, &batch.change()), keep("user:42"));
    }

    #[test]
    fn null_or_empty_user_id_gives_global() {
        let items = TestTable::new("items", &["id", "user_id"]);
        let null = items.insert(vec![Value::Int(1), Value::Null]);
        let empty = items.insert(vec![Value::Int(2), Value::Text(String::new())]);
        assert_eq!(evaluate(&ByOwner, &null.change()), keep("global"));
        assert_eq!(evaluate(&ByOwner, &empty.change()), keep("global"));
    }

    #[test]
    fn table_without_user_id_gives_global() {
        let tags = TestTable::new("tags", &["id", "label"]);
        let batch = tags.insert(vec![Value::Int(1), Value::Text("red".into())]);
        assert_eq!(evaluate(&ByOwner, &batch.change()), keep("global"));
    }

    #[test]
    fn delete_reads_the_old_row() {
        let items = TestTable::new("items", &["id", "user_id"]);
        let batch = items.delete(vec![Value::Int(1), Value::Text("u9".into())]);
        assert_eq!(evaluate(&ByOwner, &batch.change()), keep("user:u9"));
    }

    #[test]
    fn unchanged_user_id_is_an_error() {
        let items = TestTable::new("items", &["id", "user_id"]);
        let batch = items.update(vec![Value::Int(1), Value::Unchanged]);
        assert_eq!(
            evaluate(&ByOwner, &batch.change()),
            Outcome::Error(
                "items: user_id was not sent (unchanged TOAST value); cannot bucket".into()
            )
        );
    }

    #[test]
    fn boolean_user_id_is_an_error() {
        let items = TestTable::new("items", &["user_id"]);
        let batch = items.insert(vec![Value::Bool(true)]);
        assert_eq!(
            evaluate(&ByOwner, &batch.change()),
            Outcome::Error(
                "items: user_id must be text or an integer, got Value::Bool(true)".into()
            )
        );
    }
}
