//! The edge diff: turning "the rules say this row is in buckets D now" into changelog entries
//! against the buckets the row was stored in, exactly as synchro does it.
//!
//! - a bucket in both gets the change's operation (an insert becomes an update there);
//! - a bucket only in the desired set gets an insert;
//! - a bucket only in the stored set gets a delete: the row moved out;
//! - a delete emits one delete per stored bucket and removes the edges.
//!
//! The diff runs in memory over one chunk of records. The stored state is read once per chunk
//! (one query), updated as records are applied in stream order, and the net difference is
//! written back in bulk: new edges by COPY, changed ones by one upsert, deleted ones by one
//! delete. An edge whose checksum did not change is not written at all.

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap;

use crate::model::Operation;
use crate::sink::record::SinkRecord;

/// (table_name, record_id)
pub type RecordKey = (String, String);

/// A record's stored edges: bucket id → checksum.
pub type StoredEdges = BTreeMap<String, Option<i32>>;

/// Keyed by record. FxHash: the keys are ours (table names and primary keys the sink reads
/// back), hashed several times per change, and SipHash showed in the profile.
pub type RecordMap<V> = FxHashMap<RecordKey, V>;

/// One changelog row to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangelogEntry {
    pub bucket_id: String,
    pub table_name: String,
    pub record_id: String,
    pub operation: Operation,
}

/// Edge state for the records touched by a chunk.
#[derive(Debug, Default)]
pub struct EdgeState {
    /// As stored before the chunk.
    initial: RecordMap<StoredEdges>,
    /// After applying the chunk so far, with the checksum to store.
    current: RecordMap<(BTreeSet<String>, Option<i32>)>,
}

/// (table, record, bucket, checksum)
pub type EdgeRow = (String, String, String, Option<i32>);

/// What to write back to `sync_bucket_edges` after a chunk.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EdgeWrites {
    /// (table, record, bucket) to delete.
    pub deletes: Vec<(String, String, String)>,
    /// Edges that were not stored before the chunk: plain inserts.
    pub inserts: Vec<EdgeRow>,
    /// Stored edges whose checksum changed.
    pub updates: Vec<EdgeRow>,
}

impl EdgeState {
    /// Starts from the stored edges of the chunk's records. Records with no stored edges may be
    /// absent from `stored`.
    pub fn new(stored: RecordMap<StoredEdges>) -> Self {
        EdgeState {
            initial: stored,
            current: RecordMap::default(),
        }
    }

    /// Applies one record, appending its changelog entries to `out` (when `emit` is set).
    pub fn apply(&mut self, record: &SinkRecord, emit: bool, out: &mut Vec<ChangelogEntry>) {
        let key = (record.table_name.clone(), record.record_id.clone());
        let desired: BTreeSet<String> = if record.op == Operation::Delete {
            BTreeSet::new()
        } else {
            record.buckets.iter().cloned().collect()
        };
        if emit {
            let (existing, stored_checksum): (BTreeSet<&str>, Option<i32>) =
                match self.current.get(&key) {
                    Some((buckets, checksum)) => {
                        (buckets.iter().map(String::as_str).collect(), *checksum)
                    }
                    None => self
                        .initial
                        .get(&key)
                        .map(|b| {
                            (
                                b.keys().map(String::as_str).collect(),
                                b.values().next().copied().flatten(),
                            )
                        })
                        .unwrap_or_default(),
                };
            // A membership-only record (rebucket, re-snapshot, cascade) still owes clients an
            // update where the row's content changed since its edges were written.
            let unchanged = stored_checksum == record.checksum;
            let entry = |bucket: &str, operation| ChangelogEntry {
                bucket_id: bucket.to_owned(),
                table_name: record.table_name.clone(),
                record_id: record.record_id.clone(),
                operation,
            };
            // Removals first: a client following a move sees the row leave, then arrive.
            for bucket in existing.iter().filter(|b| !desired.contains(**b)) {
                out.push(entry(bucket, Operation::Delete));
            }
            // Additions and in-place changes, in the order the rules gave the buckets.
            let mut seen = BTreeSet::new();
            for bucket in &record.buckets {
                if record.op == Operation::Delete || !seen.insert(bucket.as_str()) {
                    continue;
                }
                let stored = existing.contains(bucket.as_str());
                if record.membership_only && stored && unchanged {
                    continue;
                }
                let op = if stored {
                    Operation::Update
                } else {
                    Operation::Insert
                };
                out.push(entry(bucket, op));
            }
        }
        self.current.insert(key, (desired, record.checksum));
    }

    /// The net writes that turn the stored state into the current one.
    pub fn into_writes(self) -> EdgeWrites {
        let mut writes = EdgeWrites::default();
        let empty = StoredEdges::new();
        for (key, (buckets, checksum)) in self.current {
            let before = self.initial.get(&key).unwrap_or(&empty);
            for gone in before.keys().filter(|b| !buckets.contains(*b)) {
                writes
                    .deletes
                    .push((key.0.clone(), key.1.clone(), gone.clone()));
            }
            for bucket in buckets {
                match before.get(&bucket) {
                    None => writes
                        .inserts
                        .push((key.0.clone(), key.1.clone(), bucket, checksum)),
                    Some(stored) if *stored != checksum => {
                        writes
                            .updates
                            .push((key.0.clone(), key.1.clone(), bucket, checksum))
                    }
                    Some(_) => {}
                }
            }
        }
        writes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(op: Operation, id: &str, buckets: &[&str]) -> SinkRecord {
        SinkRecord {
            table_name: "items".into(),
            record_id: id.into(),
            op,
            buckets: buckets.iter().map(|b| b.to_string()).collect(),
            checksum: Some(7),
            membership_only: false,
            related: None,
        }
    }

    fn stored_edges(edges: &[(&str, Option<i32>)]) -> StoredEdges {
        edges.iter().map(|(b, c)| (b.to_string(), *c)).collect()
    }

    fn ops(out: &[ChangelogEntry]) -> Vec<(String, i16)> {
        out.iter()
            .map(|e| (e.bucket_id.clone(), e.operation.code()))
            .collect()
    }

    #[test]
    fn insert_update_move_delete_follow_synchro() {
        let mut state = EdgeState::new(RecordMap::default());
        let mut out = Vec::new();
        state.apply(&rec(Operation::Insert, "1", &["user:a"]), true, &mut out);
        state.apply(&rec(Operation::Update, "1", &["user:a"]), true, &mut out);
        state.apply(&rec(Operation::Update, "1", &["user:b"]), true, &mut out);
        state.apply(&rec(Operation::Insert, "1", &["user:b"]), true, &mut out);
        state.apply(&rec(Operation::Delete, "1", &[]), true, &mut out);
        assert_eq!(
            ops(&out),
            vec![
                ("user:a".into(), 1),
                ("user:a".into(), 2),
                ("user:a".into(), 3),
                ("user:b".into(), 1),
                ("user:b".into(), 2),
                ("user:b".into(), 3),
            ]
        );
        let writes = state.into_writes();
        assert!(writes.inserts.is_empty() && writes.updates.is_empty());
        assert!(
            writes.deletes.is_empty(),
            "nothing was stored before the chunk"
        );
    }

    #[test]
    fn writes_are_the_net_difference_against_storage() {
        let mut stored = RecordMap::default();
        stored.insert(
            ("items".to_string(), "1".to_string()),
            stored_edges(&[("user:a", Some(7)), ("global", Some(5))]),
        );
        let mut state = EdgeState::new(stored);
        let mut out = Vec::new();
        state.apply(
            &rec(Operation::Update, "1", &["user:b", "global"]),
            true,
            &mut out,
        );
        assert_eq!(
            ops(&out),
            vec![
                ("user:a".into(), 3),
                ("user:b".into(), 1),
                ("global".into(), 2)
            ]
        );
        let writes = state.into_writes();
        assert_eq!(
            writes.deletes,
            vec![("items".into(), "1".into(), "user:a".into())]
        );
        assert_eq!(
            writes.inserts,
            vec![("items".into(), "1".into(), "user:b".into(), Some(7))]
        );
        assert_eq!(
            writes.updates,
            vec![("items".into(), "1".into(), "global".into(), Some(7))]
        );
    }

    #[test]
    fn a_dropped_change_leaves_every_bucket() {
        let mut stored = RecordMap::default();
        stored.insert(
            ("items".to_string(), "1".to_string()),
            stored_edges(&[("user:a", Some(1))]),
        );
        let mut state = EdgeState::new(stored);
        let mut out = Vec::new();
        state.apply(&rec(Operation::Update, "1", &[]), true, &mut out);
        assert_eq!(ops(&out), vec![("user:a".into(), 3)]);
    }

    #[test]
    fn rebucketing_logs_only_membership_changes() {
        let mut stored = RecordMap::default();
        stored.insert(
            ("items".to_string(), "1".to_string()),
            stored_edges(&[("user:a", Some(7)), ("global", Some(7))]),
        );
        let mut state = EdgeState::new(stored);
        let mut out = Vec::new();
        let record = SinkRecord {
            membership_only: true,
            related: None,
            ..rec(Operation::Update, "1", &["global", "org:1"])
        };
        state.apply(&record, true, &mut out);
        assert_eq!(ops(&out), vec![("user:a".into(), 3), ("org:1".into(), 1)]);
    }

    #[test]
    fn a_membership_only_record_of_changed_content_updates_the_buckets_it_stays_in() {
        let mut stored = RecordMap::default();
        stored.insert(
            ("items".to_string(), "1".to_string()),
            stored_edges(&[("user:a", Some(6)), ("global", Some(6))]),
        );
        let mut state = EdgeState::new(stored);
        let mut out = Vec::new();
        let record = SinkRecord {
            membership_only: true,
            ..rec(Operation::Insert, "1", &["global", "org:1"])
        };
        state.apply(&record, true, &mut out);
        assert_eq!(
            ops(&out),
            vec![
                ("user:a".into(), 3),
                ("global".into(), 2),
                ("org:1".into(), 1)
            ]
        );
    }

    #[test]
    fn silent_application_updates_edges_without_changelog() {
        let mut state = EdgeState::new(RecordMap::default());
        let mut out = Vec::new();
        state.apply(&rec(Operation::Insert, "1", &["user:a"]), false, &mut out);
        assert!(out.is_empty());
        assert_eq!(state.into_writes().inserts.len(), 1);
    }

    #[test]
    fn an_edge_whose_checksum_did_not_change_is_not_rewritten() {
        let mut stored = RecordMap::default();
        stored.insert(
            ("items".to_string(), "1".to_string()),
            stored_edges(&[("user:a", Some(7))]),
        );
        stored.insert(
            ("items".to_string(), "2".to_string()),
            stored_edges(&[("user:a", Some(3))]),
        );
        let mut state = EdgeState::new(stored);
        let mut out = Vec::new();
        state.apply(&rec(Operation::Update, "1", &["user:a"]), true, &mut out);
        state.apply(&rec(Operation::Update, "2", &["user:a"]), true, &mut out);
        assert_eq!(ops(&out), vec![("user:a".into(), 2), ("user:a".into(), 2)]);
        let writes = state.into_writes();
        assert!(writes.inserts.is_empty() && writes.deletes.is_empty());
        assert_eq!(
            writes.updates,
            vec![("items".into(), "2".into(), "user:a".into(), Some(7))]
        );
    }
}
