//! What the sink is asked to write: one entry per rules-evaluated change.

use crate::model::{Lsn, Operation};

/// One row change after the rules have run, ready for the edge diff.
#[derive(Clone, Debug, PartialEq)]
pub struct SinkRecord {
    /// Schema-qualified where the schema is not `public`.
    pub table_name: String,
    /// The primary key's text form; see [`crate::sink::record_id`].
    pub record_id: String,
    /// `Delete` for deletes and soft deletes.
    pub op: Operation,
    /// The buckets the rules want the row in now. Empty for deletes and dropped changes.
    pub buckets: Vec<String>,
    /// A hash of the row's content, stored on its edges.
    pub checksum: Option<i32>,
    /// Re-bucketing: log only memberships that change (no update entry for a bucket the row
    /// stays in).
    pub membership_only: bool,
    /// Set for rows of tables in the rules' relations: `buckets` are then the row's own buckets,
    /// and the sink adds what flows along the relations (see [`crate::sink::cascade`]).
    pub related: Option<Box<RelatedRow>>,
}

/// What a row of a table in the rules' relations brings to the cascade.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelatedRow {
    /// False when the rules dropped the change: the row then belongs to no bucket, inherits
    /// nothing and shares nothing. Deletes and soft deletes are excluded by their operation.
    pub kept: bool,
    /// For each relation whose child is this table: the parent's record id, `None` when one of
    /// the relation's columns is NULL. A relation is absent when PostgreSQL did not send one of
    /// its columns (unchanged TOAST): the stored link stands.
    pub links: Vec<(crate::sink::relation_graph::RelationId, Option<String>)>,
}

/// A change the rules could not evaluate, kept for the operator under the dead-letter policy.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleFailure {
    pub table_name: String,
    /// `None` when the key could not be determined; stored as
    /// [`crate::sink::writer::UNKNOWN_RECORD_ID`] (synchro's column is `NOT NULL`).
    pub record_id: Option<String>,
    pub op: Operation,
    pub error_text: String,
    /// The change as JSON, so it can be replayed once the rules are fixed.
    pub payload: serde_json::Value,
    pub lsn: Lsn,
    pub rules_version: String,
}

/// One unit of sink work, in stream order.
#[derive(Clone, Debug, PartialEq)]
pub enum SinkItem {
    Record(SinkRecord),
    /// TRUNCATE: every row of the table leaves every bucket.
    Truncate {
        table_name: String,
    },
    Failure(RuleFailure),
    /// Relations renamed (their memberships move to the new name) or seen for the first time.
    Relations(crate::model::RelationNames),
}
