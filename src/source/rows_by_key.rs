//! The current rows of a table for a set of record ids: what a replay of dead letters
//! re-evaluates.
//!
//! A record id is the key's canonical text (a JSON array of texts for a composite key, see
//! `sink::record_id`), which is also valid input for the key columns' types; cast to them, as the
//! snapshot's keyset does, the primary key index answers. Values are read in their output forms, as the snapshot reads them.

use std::sync::Arc;

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::model::{Change, Lsn, Operation, Value};
use crate::source::catalog::{PublishedTable, quote_ident};
use crate::source::snapshot::SnapshotError;
use crate::source::values::decode_text;

/// The key column texts of `record_id` for a key of `arity` columns; `None` when it cannot be one
/// (an unknown key, or text that is not such a JSON array).
pub fn key_texts(record_id: &str, arity: usize) -> Option<Vec<String>> {
    if record_id.is_empty() {
        return None;
    }
    if arity == 1 {
        return Some(vec![record_id.to_owned()]);
    }
    let texts: Vec<String> = serde_json::from_str(record_id).ok()?;
    (texts.len() == arity).then_some(texts)
}

/// The current rows of `table` whose keys are among `keys` (as [`key_texts`] gives them), as
/// inserts stamped with `lsn`. Rows that no longer exist are simply absent.
pub async fn read_rows(
    client: &Client,
    table: &PublishedTable,
    keys: &[Vec<String>],
    lsn: Lsn,
) -> Result<Vec<Change>, SnapshotError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let shape = &table.schema;
    let select_list = shape
        .columns
        .iter()
        .map(|c| format!("t.{}", quote_ident(&c.name)))
        .collect::<Vec<_>>()
        .join(", ");
    let key_tuple = shape
        .primary_key
        .iter()
        .map(|&i| format!("t.{}", quote_ident(&shape.columns[i].name)))
        .collect::<Vec<_>>()
        .join(", ");
    let wanted = keys
        .iter()
        .map(|k| table.key_literal(k))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {select_list} FROM {} AS t WHERE ({key_tuple}) IN ({wanted})",
        table.sql_name()
    );
    let qualified = shape.qualified_name();
    let messages = client
        .simple_query(&sql)
        .await
        .map_err(|source| SnapshotError::Read {
            table: qualified,
            source,
        })?;
    let mut changes = Vec::new();
    for message in &messages {
        let SimpleQueryMessage::Row(row) = message else {
            continue;
        };
        let values = shape
            .columns
            .iter()
            .enumerate()
            .map(|(i, column)| match row.get(i) {
                None => Value::Null,
                Some(text) => decode_text(column.type_oid, text),
            })
            .collect();
        changes.push(Change {
            table: Arc::clone(shape),
            op: Operation::Insert,
            new: Some(values),
            old: None,
            lsn,
        });
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_give_back_their_key_texts() {
        assert_eq!(key_texts("42", 1), Some(vec!["42".to_owned()]));
        assert_eq!(
            key_texts(r#"["org-1","42"]"#, 2),
            Some(vec!["org-1".to_owned(), "42".to_owned()])
        );
        assert_eq!(key_texts("", 1), None);
        assert_eq!(key_texts(r#"["org-1"]"#, 2), None);
        assert_eq!(key_texts("42", 2), None);
    }
}
