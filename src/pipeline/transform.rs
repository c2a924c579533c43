//! From a change and the rules' outcome to what the sink writes.
//!
//! This is where the pipeline's semantics live that are neither the rules' nor the sink's: which
//! key identifies the row, what a soft delete is, what a key change means, and what a rule
//! failure turns into under each policy.

use crate::model::{Change, KeyGap, Operation, Outcome, Value};
use crate::pipeline::config::FailurePolicy;
use crate::pipeline::payload::change_json;
use crate::sink::{RelatedRow, RelationGraph, RuleFailure, SinkItem, SinkRecord, record_id};

/// A change the rules failed on, under the `halt` policy.
#[derive(Debug, thiserror::Error)]
#[error(
    "rules failed on {table} key {record_id} at LSN {lsn} (rules version {version:.12}): {message}. Policy is halt: nothing after the previous transaction was stored; fix the rules or switch to failure_policy = \"dead-letter\", then restart"
)]
pub struct HaltOnFailure {
    pub table: String,
    pub record_id: String,
    pub lsn: crate::model::Lsn,
    pub version: String,
    pub message: String,
}

/// Settings the transform needs, resolved once per table.
pub struct Transform<'a> {
    pub policy: FailurePolicy,
    pub rules_version: String,
    /// The soft-delete column for a qualified table name.
    pub soft_delete: &'a (dyn Fn(&str) -> Option<String> + Sync),
    /// Where current rows are read for synchro's checksum; `None` leaves checksums unset
    /// (unit tests).
    pub rows: Option<&'a crate::source::row_json::RowJson>,
    /// The active rules version's relations; records of the tables in them carry their links.
    pub relations: std::sync::Arc<RelationGraph>,
}

impl Transform<'_> {
    /// Appends the sink items for one change.
    pub fn apply(
        &self,
        change: &Change,
        outcome: Outcome,
        out: &mut Vec<SinkItem>,
    ) -> Result<(), HaltOnFailure> {
        let table_name = change.table.qualified_name();
        let new_id = change.new.as_deref().and_then(|row| key_of(change, row));
        let old_id = change.old.as_deref().and_then(|row| key_of(change, row));
        let record_id = match change.op {
            Operation::Delete => old_id.clone(),
            _ => new_id.clone(),
        };
        let Some(record_id) = record_id else {
            return self.fail(change, table_name, None, no_key_reason(change), out);
        };

        let kept = !matches!(outcome, Outcome::Drop);
        let buckets = match outcome {
            Outcome::Keep(buckets) => buckets,
            Outcome::Drop => Vec::new(),
            Outcome::Error(message) => {
                return self.fail(change, table_name, Some(record_id), message, out);
            }
        };

        // An update that changes the key is the old row leaving and a new row arriving.
        if change.op == Operation::Update
            && let Some(old_id) = old_id.filter(|old| *old != record_id)
        {
            out.push(SinkItem::Record(SinkRecord {
                table_name: table_name.clone(),
                record_id: old_id,
                op: Operation::Delete,
                buckets: Vec::new(),
                checksum: None,
                membership_only: false,
                related: self.related(&table_name, change, false),
            }));
        }

        let op = if change.op != Operation::Delete && self.is_soft_deleted(change, &table_name) {
            Operation::Delete
        } else {
            change.op
        };
        let related = self.related(&table_name, change, kept);
        out.push(SinkItem::Record(SinkRecord {
            table_name,
            record_id,
            op,
            buckets: if op == Operation::Delete {
                Vec::new()
            } else {
                buckets
            },
            // Set from the current row before the sink writes: see pipeline::checksums.
            checksum: None,
            membership_only: false,
            related,
        }));
        Ok(())
    }

    /// The row's links along the rules' relations, for tables in them.
    fn related(&self, table_name: &str, change: &Change, kept: bool) -> Option<Box<RelatedRow>> {
        if !self.relations.involves(table_name) {
            return None;
        }
        let links = match (change.op, change.new.as_deref()) {
            (Operation::Delete, _) | (_, None) => Vec::new(),
            (_, Some(row)) => self
                .relations
                .as_child(table_name)
                .iter()
                .filter_map(|&relation| {
                    let columns = &self.relations.relation(relation).columns;
                    Some((relation, link(change, row, columns)?))
                })
                .collect(),
        };
        Some(Box::new(RelatedRow { kept, links }))
    }

    fn is_soft_deleted(&self, change: &Change, table_name: &str) -> bool {
        let Some(column) = (self.soft_delete)(table_name) else {
            return false;
        };
        let Some(index) = change.table.column_index(&column) else {
            return false;
        };
        matches!(change.new.as_ref().and_then(|r| r.get(index)), Some(v) if !matches!(v, Value::Null | Value::Unchanged))
    }

    fn fail(
        &self,
        change: &Change,
        table_name: String,
        record_id: Option<String>,
        message: String,
        out: &mut Vec<SinkItem>,
    ) -> Result<(), HaltOnFailure> {
        match self.policy {
            FailurePolicy::Halt => Err(HaltOnFailure {
                table: table_name,
                record_id: record_id.unwrap_or_else(|| "(unknown)".into()),
                lsn: change.lsn,
                version: self.rules_version.clone(),
                message,
            }),
            FailurePolicy::DeadLetter => {
                let failure = RuleFailure {
                    table_name,
                    record_id,
                    op: change.op,
                    error_text: message,
                    payload: change_json(change),
                    lsn: change.lsn,
                    rules_version: self.rules_version.clone(),
                };
                crate::pipeline::failure_log::log(&failure);
                out.push(SinkItem::Failure(failure));
                Ok(())
            }
        }
    }
}

/// The record id from a row's primary key columns, in key order, if they are all present.
fn key_of(change: &Change, row: &[Value]) -> Option<String> {
    let columns = &change.table.columns;
    let values: Option<Vec<(&Value, u32)>> = change
        .table
        .key_indexes()
        .map(|i| Some((row.get(i)?, columns.get(i)?.type_oid)))
        .collect();
    record_id::encode(values?)
}

/// The parent record id that `columns` of `row` point at: `Some(None)` when one is NULL (no
/// parent), `None` when one was not sent (unchanged TOAST) or is not in the table, so that the
/// stored link stands. Columns are in the parent key's order, so the id is the parent's
/// `record_id` (see [`record_id`]).
fn link(change: &Change, row: &[Value], columns: &[String]) -> Option<Option<String>> {
    let mut values = Vec::with_capacity(columns.len());
    for column in columns {
        let index = change.table.column_index(column)?;
        let value = row.get(index)?;
        match value {
            Value::Unchanged => return None,
            Value::Null => return Some(None),
            _ => values.push((value, change.table.columns.get(index)?.type_oid)),
        }
    }
    Some(record_id::encode(values))
}

/// Why [`key_of`] found no record id for a change, for the failure it becomes.
fn no_key_reason(change: &Change) -> String {
    let table = &change.table;
    let why = match table.key_gap() {
        Some(KeyGap::NoPrimaryKey) => {
            "the table has no primary key whose columns the stream carries".to_owned()
        }
        Some(KeyGap::IdentityNothing) => "the table has REPLICA IDENTITY NOTHING".to_owned(),
        Some(KeyGap::IdentityLacks(columns)) if change.op == Operation::Delete => format!(
            "the old-key tuple of a delete carries only the replica identity, which leaves out primary key column(s) {}",
            columns.join(", ")
        ),
        _ => "a primary key column is missing, NULL or unchanged".to_owned(),
    };
    format!("cannot determine the row's primary key: {why}")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::{Column, Lsn, ReplicaIdentity, TableSchema};

    fn table() -> Arc<TableSchema> {
        let col = |name: &str, key| Column {
            name: name.into(),
            type_oid: 25,
            type_modifier: -1,
            key,
        };
        Arc::new(TableSchema {
            oid: 1,
            schema: "public".into(),
            name: "items".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![
                col("id", true),
                col("user_id", false),
                col("deleted_at", false),
            ],
            primary_key: vec![0],
            identity: vec![0],
        })
    }

    fn change(op: Operation, new: Option<Vec<Value>>, old: Option<Vec<Value>>) -> Change {
        Change {
            table: table(),
            op,
            new,
            old,
            lsn: Lsn(0x10),
        }
    }

    fn t(s: &str) -> Value {
        Value::Text(s.into())
    }

    fn transform(policy: FailurePolicy) -> Transform<'static> {
        static SOFT: fn(&str) -> Option<String> = |_| Some("deleted_at".into());
        Transform {
            policy,
            rules_version: "abc".into(),
            soft_delete: &SOFT,
            rows: None,
            relations: Default::default(),
        }
    }

    #[test]
    fn soft_delete_becomes_a_delete_with_no_buckets() {
        let mut out = Vec::new();
        let c = change(
            Operation::Update,
            Some(vec![t("1"), t("u1"), t("2024-01-01")]),
            None,
        );
        transform(FailurePolicy::DeadLetter)
            .apply(&c, Outcome::Keep(vec!["user:u1".into()]), &mut out)
            .unwrap();
        assert_eq!(
            out,
            vec![SinkItem::Record(SinkRecord {
                table_name: "items".into(),
                record_id: "1".into(),
                op: Operation::Delete,
                buckets: vec![],
                checksum: None,
                membership_only: false,
                related: None,
            })]
        );
    }

    #[test]
    fn key_change_is_a_delete_of_the_old_key_then_the_new_row() {
        let mut out = Vec::new();
        let c = change(
            Operation::Update,
            Some(vec![t("2"), t("u1"), Value::Null]),
            Some(vec![t("1"), Value::Null, Value::Null]),
        );
        transform(FailurePolicy::DeadLetter)
            .apply(&c, Outcome::Keep(vec!["user:u1".into()]), &mut out)
            .unwrap();
        let ids: Vec<(String, Operation)> = out
            .iter()
            .map(|i| match i {
                SinkItem::Record(r) => (r.record_id.clone(), r.op),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            ids,
            vec![
                ("1".into(), Operation::Delete),
                ("2".into(), Operation::Update)
            ]
        );
    }

    #[test]
    fn errors_follow_the_policy() {
        let c = change(
            Operation::Insert,
            Some(vec![t("7"), t("u1"), Value::Null]),
            None,
        );
        let mut out = Vec::new();
        transform(FailurePolicy::DeadLetter)
            .apply(&c, Outcome::Error("boom".into()), &mut out)
            .unwrap();
        match &out[..] {
            [SinkItem::Failure(f)] => {
                assert_eq!(f.error_text, "boom");
                assert_eq!(f.record_id.as_deref(), Some("7"));
                assert_eq!(f.payload["new"]["user_id"], "u1");
            }
            other => panic!("unexpected {other:?}"),
        }
        let err = transform(FailurePolicy::Halt)
            .apply(&c, Outcome::Error("boom".into()), &mut Vec::new())
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("rules failed on items key 7 at LSN 0/10 (rules version abc): boom."),
            "{err}"
        );
    }
}
