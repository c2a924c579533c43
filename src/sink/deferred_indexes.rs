//! An initial snapshot into empty sidecar tables loads them first and builds their secondary
//! indexes afterwards, as `pg_restore` does: one sort per index instead of an index insertion
//! per row.
//!
//! Only the secondary indexes go (`idx_sync_changelog_*`, `idx_sync_bucket_edges_bucket`); the
//! primary keys stay, because the snapshot's own writes rely on them. Only indexes this process
//! created go, with the tables it created at this start (tables a synchro migration or an
//! operator made keep theirs), and only while both tables are still empty. Rebuilding is the schema's own [`schema::ensure`], which
//! creates whatever index is missing: the snapshot's end calls it, and so does every start, so
//! a snapshot interrupted before its end (SIGTERM, kill -9) gets its indexes back at the next
//! start and resumes with them.

use std::time::Instant;

use tracing::info;

use super::schema::{self, TABLES};
use super::{Sink, SinkError};

impl Sink {
    /// Drops the sidecar's secondary indexes if this process created `sync_changelog` and
    /// `sync_bucket_edges` and both are still empty; true when it did. Takes the schema's
    /// advisory lock, so that it cannot interleave with another process creating them.
    pub async fn defer_secondary_indexes(&mut self) -> Result<bool, SinkError> {
        if !self.created_sidecar() {
            return Ok(false);
        }
        let names: Vec<String> = TABLES
            .iter()
            .filter(|t| matches!(t.name, "sync_changelog" | "sync_bucket_edges"))
            .flat_map(|t| t.indexes)
            .map(|index| format!("'{}'", index.name))
            .collect();
        // The indexes of the very tables sluice writes (found through the search_path, as every
        // statement finds them), not whatever index of that name comes first on it. The empty
        // check and the drops are one transaction under the schema's lock.
        let sql = format!(
            "BEGIN; SELECT pg_advisory_xact_lock(hashtext('sluice sidecar schema')); \
             DO $$ DECLARE i record; BEGIN \
               IF EXISTS (SELECT 1 FROM sync_changelog) OR EXISTS (SELECT 1 FROM sync_bucket_edges) THEN \
                 RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'sluice: sidecar not empty'; \
               END IF; \
               FOR i IN SELECT x.indexrelid::regclass AS ix FROM pg_catalog.pg_index x \
                   JOIN pg_catalog.pg_class c ON c.oid = x.indexrelid \
                   WHERE x.indrelid IN ('sync_changelog'::regclass, 'sync_bucket_edges'::regclass) \
                   AND c.relname IN ({}) LOOP \
                 EXECUTE format('DROP INDEX %s', i.ix); \
               END LOOP; \
             END $$; COMMIT;",
            names.join(", ")
        );
        match self.client().batch_execute(&sql).await {
            Ok(()) => {
                info!(
                    "the sidecar tables are empty: their secondary indexes are built after the initial snapshot"
                );
                Ok(true)
            }
            Err(e) if e.code().is_some_and(|c| c.code() == "P0001") => {
                self.client()
                    .batch_execute("ROLLBACK")
                    .await
                    .map_err(|e| SinkError::sql("ending the index check", e))?;
                Ok(false)
            }
            Err(e) => {
                let _ = self.client().batch_execute("ROLLBACK").await;
                Err(SinkError::sql(
                    "dropping the sidecar's secondary indexes before the initial snapshot",
                    e,
                ))
            }
        }
    }

    /// Creates the secondary indexes [`Sink::defer_secondary_indexes`] dropped.
    pub async fn build_deferred_indexes(&mut self) -> Result<(), SinkError> {
        let started = Instant::now();
        let changes = schema::ensure(self.client()).await?;
        info!(
            indexes = changes.statements.len(),
            seconds = started.elapsed().as_secs_f64(),
            "built the sidecar's secondary indexes after the initial snapshot"
        );
        Ok(())
    }
}
