//! Memberships of rows that no longer exist: what a keyset walk (a re-snapshot, a `rebucket`, the
//! snapshot of a joined table) finds stored for a table but did not read.
//!
//! Record ids are `key::text` and do not sort like keys, so a chunk cannot tell which stored ids
//! fall in its key range. Instead each chunk records the ids it read in `sluice_walk_seen`, in
//! its own sink transaction (so a resumed walk still has them), and the table's end lists, in
//! bulk and in pages, the stored rows that are neither seen nor written since the walk started:
//! - edges with `updated_at` before the walk's `started_at`: a row the stream inserted (or moved)
//!   after the walk read its key range has edges written after the start, and is kept;
//! - for tables in the rules' relations, related-row state with no such recent edge.
//!
//! The sink's clock orders both: the walk and the stream share one sink connection and commit in
//! turn, so a stream transaction after the walk's first commit has a later `now()`.

use crate::sink::progress::Walk;
use crate::sink::{Sink, SinkError};

impl Sink {
    /// Records, inside the open sink transaction, the ids a chunk of `table`'s walk read.
    pub async fn record_seen(
        &mut self,
        walk: Walk,
        table: &str,
        ids: &[&str],
    ) -> Result<(), SinkError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.begin().await?;
        self.client()
            .execute(
                "INSERT INTO sluice_walk_seen (slot_name, walk, table_name, record_id) \
                 SELECT $1, $2, $3, r FROM unnest($4::text[]) AS u(r) ON CONFLICT DO NOTHING",
                &[&self.slot(), &walk.name(), &table, &ids],
            )
            .await
            .map_err(|e| SinkError::sql(format!("recording the rows read from {table}"), e))?;
        Ok(())
    }

    /// Forgets what `table`'s walk read, inside the open sink transaction: at its start (a
    /// leftover of an abandoned walk must not keep a vanished row) and at its end.
    pub async fn clear_seen(&mut self, walk: Walk, table: &str) -> Result<(), SinkError> {
        self.begin().await?;
        self.client()
            .execute(
                "DELETE FROM sluice_walk_seen WHERE slot_name = $1 AND walk = $2 AND table_name = $3",
                &[&self.slot(), &walk.name(), &table],
            )
            .await
            .map_err(|e| SinkError::sql(format!("clearing the rows read from {table}"), e))?;
        Ok(())
    }

    /// Up to `limit` record ids of `table` after `after` (in text order) that have stored
    /// memberships or related-row state older than the walk's start and that the walk did not
    /// read. Empty when the walk does not track vanished rows.
    pub async fn vanished(
        &self,
        walk: Walk,
        table: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<String>, SinkError> {
        let rows = self
            .client()
            .query(
                &format!(
                    "WITH p AS (SELECT started_at FROM {progress} \
                                WHERE slot_name = $1 AND table_name = $3 AND started_at IS NOT NULL), \
                          stored AS ( \
                            SELECT e.record_id FROM sync_bucket_edges e, p \
                             WHERE e.table_name = $3 AND e.record_id > $4 AND e.updated_at < p.started_at \
                            UNION \
                            SELECT s.record_id FROM sluice_row_state s, p \
                             WHERE s.table_name = $3 AND s.record_id > $4 \
                               AND NOT EXISTS (SELECT 1 FROM sync_bucket_edges e \
                                               WHERE e.table_name = $3 AND e.record_id = s.record_id \
                                                 AND e.updated_at >= p.started_at)) \
                     SELECT record_id FROM stored \
                      WHERE NOT EXISTS (SELECT 1 FROM sluice_walk_seen w \
                                        WHERE w.slot_name = $1 AND w.walk = $2 AND w.table_name = $3 \
                                          AND w.record_id = stored.record_id) \
                      ORDER BY record_id LIMIT $5",
                    progress = walk.progress_table()
                ),
                &[&self.slot(), &walk.name(), &table, &after, &limit],
            )
            .await
            .map_err(|e| {
                SinkError::sql(format!("listing the stored rows of {table} that no longer exist"), e)
            })?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
