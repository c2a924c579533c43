//! One table, one `table_name`, across renames: which name each source relation (by OID) is
//! stored under, and moving a table's memberships when that name changes.
//!
//! `sluice_relations` records, per slot, the `table_name` under which each published relation's
//! edges are stored. When a relation shows up under another name (`ALTER TABLE ... RENAME`,
//! `ALTER TABLE ... SET SCHEMA`, or a schema rename), every edge stored under the old name moves
//! to the new one in one statement, and the changelog says so: a delete under the old name and
//! an insert under the new one for each membership, so that clients drop the old record and
//! fetch the new. The move rides in the sink transaction of the changes around it, in stream
//! order.

use rustc_hash::FxHashMap;

use crate::model::RelationNames;
use crate::sink::{Sink, SinkError, WriteStats};

/// Moves each table's edges from every move's old name to a temporary one (`$2`), and logs a
/// delete under the old name and an insert under the final one (`$3`) for each membership,
/// grouped by record. (Data-modifying `WITH` parts run to completion whether or not the main
/// statement reads them.) Every part of one statement sees the same snapshot, so moving straight
/// to the final names would make names swapped between two tables collide with the rows the same
/// statement deletes; [`MOVE_EDGES_QUIETLY`] then moves them from the temporary names.
const MOVE_EDGES: &str = "WITH m AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) AS m(old_name, new_name, logged_name)), \
     moved AS (DELETE FROM sync_bucket_edges e USING m WHERE e.table_name = m.old_name \
               RETURNING m.old_name, m.new_name, m.logged_name, e.record_id, e.bucket_id, e.checksum), \
     placed AS (INSERT INTO sync_bucket_edges (table_name, record_id, bucket_id, checksum, updated_at) \
                SELECT new_name, record_id, bucket_id, checksum, now() FROM moved \
                ON CONFLICT (table_name, record_id, bucket_id) \
                DO UPDATE SET checksum = EXCLUDED.checksum, updated_at = EXCLUDED.updated_at) \
     INSERT INTO sync_changelog (bucket_id, table_name, record_id, operation) \
     SELECT bucket_id, table_name, record_id, operation FROM ( \
         SELECT old_name AS old_name, bucket_id, old_name AS table_name, record_id, 3::int2 AS operation FROM moved \
         UNION ALL \
         SELECT old_name, bucket_id, logged_name, record_id, 1::int2 FROM moved) AS c \
     ORDER BY old_name, record_id, bucket_id, operation DESC";

/// The second half of a move: edges from the temporary names to the final ones, nothing logged.
const MOVE_EDGES_QUIETLY: &str = "WITH m AS (SELECT * FROM unnest($1::text[], $2::text[]) AS m(old_name, new_name)), \
     moved AS (DELETE FROM sync_bucket_edges e USING m WHERE e.table_name = m.old_name \
               RETURNING m.new_name, e.record_id, e.bucket_id, e.checksum, e.updated_at) \
     INSERT INTO sync_bucket_edges (table_name, record_id, bucket_id, checksum, updated_at) \
     SELECT new_name, record_id, bucket_id, checksum, updated_at FROM moved \
     ON CONFLICT (table_name, record_id, bucket_id) \
     DO UPDATE SET checksum = EXCLUDED.checksum, updated_at = EXCLUDED.updated_at";

/// A name no table has: where a moved table's rows wait between the two halves of a move.
fn temporary_name(name: &str) -> String {
    format!("\u{1}{name}")
}

/// A renamed table's related-row state (see `sink::cascade`) moves with its memberships. Its links
/// are stored under relation names, which name tables as the rules declared them: after a rename
/// the rules must declare the new name, and a `rebucket` of the table records its links again.
const MOVE_ROW_STATE: &str = "WITH m AS (SELECT * FROM unnest($1::text[], $2::text[]) AS m(old_name, new_name)), \
     moved AS (DELETE FROM sluice_row_state s USING m WHERE s.table_name = m.old_name \
               RETURNING m.new_name, s.record_id, s.own_buckets, s.checksum) \
     INSERT INTO sluice_row_state (table_name, record_id, own_buckets, checksum) \
     SELECT new_name, record_id, own_buckets, checksum FROM moved \
     ON CONFLICT (table_name, record_id) \
     DO UPDATE SET own_buckets = EXCLUDED.own_buckets, checksum = EXCLUDED.checksum";

/// A renamed table's snapshot and re-bucketing progress moves too: its `done` row is the record
/// that its rows are in, and left under the old name it would make the table look as if it had
/// just joined the publication (and be walked again, racing the stream's own changes to it).
fn move_progress(table: &str) -> String {
    format!(
        "WITH m AS (SELECT * FROM unnest($1::text[], $2::text[]) AS m(old_name, new_name)), \
         moved AS (DELETE FROM {table} p USING m WHERE p.slot_name = $3 AND p.table_name = m.old_name \
                   RETURNING p.*, m.new_name) \
         INSERT INTO {table} (slot_name, table_name, last_key, rows_done, done, consistent_lsn, updated_at, started_at) \
         SELECT slot_name, new_name, last_key, rows_done, done, consistent_lsn, updated_at, started_at FROM moved \
         ON CONFLICT (slot_name, table_name) DO UPDATE SET last_key = EXCLUDED.last_key, \
           rows_done = EXCLUDED.rows_done, done = EXCLUDED.done, consistent_lsn = EXCLUDED.consistent_lsn, \
           updated_at = EXCLUDED.updated_at, started_at = EXCLUDED.started_at"
    )
}

impl Sink {
    /// The recorded `table_name` of every relation of this slot, by OID.
    pub async fn relation_names(&self) -> Result<FxHashMap<u32, String>, SinkError> {
        let rows = self
            .client()
            .query(
                "SELECT relation_oid, table_name FROM sluice_relations WHERE slot_name = $1",
                &[&self.slot()],
            )
            .await
            .map_err(|e| SinkError::sql("reading sluice_relations", e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u32, r.get(1)))
            .collect())
    }

    /// Applies `names` inside the open sink transaction: moves the renamed tables' edges (see
    /// the module docs), then records the names. A relation recorded under a name that another
    /// one now takes (a dropped table whose name was reused) loses its record.
    pub async fn write_relation_names(
        &mut self,
        names: &RelationNames,
    ) -> Result<WriteStats, SinkError> {
        self.begin().await?;
        let mut stats = WriteStats::default();
        if !names.moves.is_empty() {
            let from: Vec<&str> = names.moves.iter().map(|m| m.from.as_str()).collect();
            let to: Vec<&str> = names.moves.iter().map(|m| m.to.as_str()).collect();
            let temp_names: Vec<String> = to.iter().map(|t| temporary_name(t)).collect();
            let temp: Vec<&str> = temp_names.iter().map(String::as_str).collect();
            stats.changelog_rows = self
                .client()
                .execute(MOVE_EDGES, &[&from, &temp, &to])
                .await
                .map_err(|e| {
                    SinkError::sql(
                        format!(
                            "moving the memberships of renamed tables ({})",
                            names
                                .moves
                                .iter()
                                .map(|m| format!("{} to {}", m.from, m.to))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        e,
                    )
                })?;
            // Each moved edge logs exactly one delete and one insert.
            stats.edges_upserted = stats.changelog_rows / 2;
            self.client()
                .execute(MOVE_EDGES_QUIETLY, &[&temp, &to])
                .await
                .map_err(|e| SinkError::sql("moving the memberships of renamed tables", e))?;
            for (a, b) in [(&from, &temp), (&temp, &to)] {
                self.client()
                    .execute(MOVE_ROW_STATE, &[a, b])
                    .await
                    .map_err(|e| {
                        SinkError::sql("moving the related-row state of renamed tables", e)
                    })?;
                for progress in ["sluice_snapshot_progress", "sluice_rebucket_progress"] {
                    let slot = self.slot().to_owned();
                    self.client()
                        .execute(&move_progress(progress), &[a, b, &slot])
                        .await
                        .map_err(|e| {
                            SinkError::sql(format!("moving {progress} rows of renamed tables"), e)
                        })?;
                }
            }
        }
        if !names.names.is_empty() {
            let oids: Vec<i64> = names.names.iter().map(|(o, _)| i64::from(*o)).collect();
            let tables: Vec<&str> = names.names.iter().map(|(_, t)| t.as_str()).collect();
            self.client()
                .execute(
                    "WITH n AS (SELECT * FROM unnest($2::int8[], $3::text[]) AS n(oid, name)), \
                     gone AS (DELETE FROM sluice_relations r USING n \
                              WHERE r.slot_name = $1 AND r.table_name = n.name AND r.relation_oid <> n.oid) \
                     INSERT INTO sluice_relations (slot_name, relation_oid, table_name, updated_at) \
                     SELECT $1, oid, name, now() FROM n \
                     ON CONFLICT (slot_name, relation_oid) \
                     DO UPDATE SET table_name = EXCLUDED.table_name, updated_at = EXCLUDED.updated_at",
                    &[&self.slot(), &oids, &tables],
                )
                .await
                .map_err(|e| SinkError::sql("recording relation names in sluice_relations", e))?;
        }
        Ok(stats)
    }
}
