//! Forgetting a table: every membership of a table that left the publication removed, each with a
//! changelog delete, so clients drop its rows as they would after `DELETE`.
//!
//! One statement deletes the edges and logs the deletes (a data-modifying CTE), in the caller's
//! sink transaction together with the table's progress rows: a crash leaves either all of it or
//! none of it.

use crate::sink::{Sink, SinkError};

/// What forgetting a table removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// Records that had at least one membership.
    pub records: u64,
    /// Changelog deletes written (one per membership).
    pub changelog_rows: u64,
}

impl Sink {
    /// Removes every edge of `table` with a changelog delete per edge, and the table's snapshot
    /// and re-bucketing progress (so that, should it join again, it is snapshotted again), inside
    /// the open sink transaction.
    pub async fn forget_table(&mut self, table: &str) -> Result<Forgotten, SinkError> {
        self.begin().await?;
        let what = || format!("removing the memberships of table {table}");
        let row = self
            .client()
            .query_one(
                "WITH gone AS (DELETE FROM sync_bucket_edges WHERE table_name = $1 \
                               RETURNING record_id, bucket_id), \
                      logged AS (INSERT INTO sync_changelog (bucket_id, table_name, record_id, operation) \
                                 SELECT bucket_id, $1, record_id, 3 FROM gone ORDER BY record_id, bucket_id \
                                 RETURNING 1) \
                 SELECT (SELECT count(DISTINCT record_id) FROM gone)::int8, \
                        (SELECT count(*) FROM logged)::int8",
                &[&table],
            )
            .await
            .map_err(|e| SinkError::sql(what(), e))?;
        // Its related-row state and its links as a child: what it had to do with other rows'
        // memberships leaves with it (relation names start with the child table's name).
        self.client()
            .execute(
                "WITH s AS (DELETE FROM sluice_row_state WHERE table_name = $1) \
                 DELETE FROM sluice_row_links WHERE left(relation, length($1) + 1) = $1 || '('",
                &[&table],
            )
            .await
            .map_err(|e| {
                SinkError::sql(
                    format!("removing the related-row state of table {table}"),
                    e,
                )
            })?;
        self.forget_progress(table).await?;
        Ok(Forgotten {
            records: row.get::<_, i64>(0) as u64,
            changelog_rows: row.get::<_, i64>(1) as u64,
        })
    }

    /// Drops the snapshot and re-bucketing progress of `table` inside the open sink transaction:
    /// a table that left the publication is no longer snapshotted, and is snapshotted again if it
    /// joins again.
    pub async fn forget_progress(&mut self, table: &str) -> Result<(), SinkError> {
        self.begin().await?;
        self.client()
            .execute(
                "WITH s AS (DELETE FROM sluice_snapshot_progress WHERE slot_name = $1 AND table_name = $2), \
                      r AS (DELETE FROM sluice_rebucket_progress WHERE slot_name = $1 AND table_name = $2) \
                 DELETE FROM sluice_walk_seen WHERE slot_name = $1 AND table_name = $2",
                &[&self.slot(), &table],
            )
            .await
            .map_err(|e| SinkError::sql(format!("forgetting the progress of table {table}"), e))?;
        Ok(())
    }
}
