//! Bookkeeping that rides in the sink transaction: snapshot progress and rule versions.

use crate::model::Lsn;
use crate::sink::{Sink, SinkError};

/// Which keyset walk a progress row belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walk {
    /// The initial snapshot.
    Snapshot,
    /// A re-bucketing pass (`consistent_lsn` holds the LSN at which it was requested).
    Rebucket,
}

impl Walk {
    /// The walk's name in `sluice_walk_seen`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Walk::Snapshot => "snapshot",
            Walk::Rebucket => "rebucket",
        }
    }

    pub(crate) fn progress_table(self) -> &'static str {
        match self {
            Walk::Snapshot => "sluice_snapshot_progress",
            Walk::Rebucket => "sluice_rebucket_progress",
        }
    }
}

/// Where the keyset walk of one table stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableProgress {
    pub table_name: String,
    /// Key of the last persisted row, in key order.
    pub last_key: Option<Vec<String>>,
    pub rows_done: i64,
    pub done: bool,
    /// The slot's consistent point, recorded when the snapshot began.
    pub consistent_lsn: Lsn,
    /// The walk records the ids it reads, so that its end removes the memberships of rows that
    /// no longer exist (see [`crate::sink::vanished`]). Set when the table's walk starts, never
    /// changed by a resume: a walk that began without it (a first snapshot into a table with no
    /// edges, or an older sluice) has no complete record of what it read.
    pub tracks_vanished: bool,
}

impl Sink {
    /// Snapshot progress of every table for this slot.
    pub async fn snapshot_progress(&self) -> Result<Vec<TableProgress>, SinkError> {
        self.progress(Walk::Snapshot).await
    }

    /// Progress of every table of a walk for this slot.
    pub async fn progress(&self, walk: Walk) -> Result<Vec<TableProgress>, SinkError> {
        let rows = self
            .client()
            .query(
                &format!(
                    "SELECT table_name, last_key, rows_done, done, consistent_lsn, started_at IS NOT NULL FROM {} \
                     WHERE slot_name = $1 ORDER BY table_name",
                    walk.progress_table()
                ),
                &[&self.slot()],
            )
            .await
            .map_err(|e| SinkError::sql("reading snapshot progress", e))?;
        Ok(rows
            .iter()
            .map(|r| TableProgress {
                table_name: r.get(0),
                last_key: r.get(1),
                rows_done: r.get(2),
                done: r.get(3),
                consistent_lsn: Lsn(r.get::<_, i64>(4) as u64),
                tracks_vanished: r.get(5),
            })
            .collect())
    }

    /// Records progress inside the open sink transaction, so progress and the chunk's rows commit
    /// together.
    pub async fn save_snapshot_progress(&mut self, p: &TableProgress) -> Result<(), SinkError> {
        self.save_progress(Walk::Snapshot, p).await
    }

    /// Records progress of a walk inside the open sink transaction. The first save of a table's
    /// walk stamps `started_at` (when it tracks vanished rows): memberships written after it are
    /// the stream's, never a vanished row's.
    pub async fn save_progress(&mut self, walk: Walk, p: &TableProgress) -> Result<(), SinkError> {
        self.begin().await?;
        self.client()
            .execute(
                &format!(
                    "INSERT INTO {} (slot_name, table_name, last_key, rows_done, done, consistent_lsn, updated_at, started_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, now(), CASE WHEN $7 THEN now() END) \
                     ON CONFLICT (slot_name, table_name) DO UPDATE SET last_key = EXCLUDED.last_key, \
                     rows_done = EXCLUDED.rows_done, done = EXCLUDED.done, consistent_lsn = EXCLUDED.consistent_lsn, updated_at = now()",
                    walk.progress_table()
                ),
                &[&self.slot(), &p.table_name, &p.last_key, &p.rows_done, &p.done, &(p.consistent_lsn.0 as i64), &p.tracks_vanished],
            )
            .await
            .map_err(|e| SinkError::sql(format!("saving snapshot progress of {}", p.table_name), e))?;
        Ok(())
    }

    /// Forgets a finished re-bucketing pass.
    pub async fn clear_progress(&self, walk: Walk) -> Result<(), SinkError> {
        self.client()
            .execute(
                &format!(
                    "WITH s AS (DELETE FROM sluice_walk_seen WHERE slot_name = $1 AND walk = $2) \
                     DELETE FROM {} WHERE slot_name = $1",
                    walk.progress_table()
                ),
                &[&self.slot(), &walk.name()],
            )
            .await
            .map_err(|e| SinkError::sql("clearing re-bucketing progress", e))?;
        Ok(())
    }

    /// Records that `version` evaluates changes from `first_lsn` on. At start (`always` false)
    /// nothing is recorded when it already is the latest recorded version; a swap (`always`
    /// true) is recorded even with the same bytes, since its configuration changed.
    pub async fn record_rule_version(
        &self,
        version: &str,
        first_lsn: Lsn,
        module_path: &str,
        always: bool,
    ) -> Result<bool, SinkError> {
        let n = self
            .client()
            .execute(
                "INSERT INTO sluice_rule_versions (slot_name, version, first_lsn, module_path) \
                 SELECT $1, $2, $3, $4 WHERE $5 OR $2 IS DISTINCT FROM \
                   (SELECT version FROM sluice_rule_versions WHERE slot_name = $1 ORDER BY first_lsn DESC, activated_at DESC LIMIT 1) \
                 ON CONFLICT DO NOTHING",
                &[&self.slot(), &version, &(first_lsn.0 as i64), &module_path, &always],
            )
            .await
            .map_err(|e| SinkError::sql("recording the rules version", e))?;
        Ok(n > 0)
    }
}
