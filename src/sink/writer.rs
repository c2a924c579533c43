//! The sink transaction: changelog rows, edge changes and the confirmed LSN, committed together.
//!
//! This is where exactly-once is decided. A batch (one or more whole source transactions, or the
//! chunks of one huge transaction) is written inside one PostgreSQL transaction that ends by
//! storing the last commit's end LSN in `sync_wal_position`. Either all of it is visible or none
//! of it is, so after a crash the stored LSN says exactly which source transactions are done.
//!
//! Every statement is a bulk statement: one edge read per table per chunk, a binary COPY for the
//! changelog and another for new edges, one `unnest` upsert for edges whose checksum changed and
//! one `unnest` delete. Nothing round-trips per row.

use std::pin::pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::Client;

use crate::model::Lsn;
use crate::sink::SinkError;
use crate::sink::cascade;
use crate::sink::copy_binary::CopyBinary;
use crate::sink::edge_diff::{ChangelogEntry, EdgeRow, EdgeState, RecordMap, StoredEdges};
use crate::sink::lease;
use crate::sink::record::{RuleFailure, SinkItem, SinkRecord};
use crate::sink::relation_graph::RelationGraph;
use crate::sink::schema::{self, SchemaChanges};

/// Counts of what one chunk wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub changelog_rows: u64,
    pub edges_deleted: u64,
    pub edges_upserted: u64,
    pub failures: u64,
}

impl std::ops::AddAssign for WriteStats {
    fn add_assign(&mut self, other: Self) {
        self.changelog_rows += other.changelog_rows;
        self.edges_deleted += other.edges_deleted;
        self.edges_upserted += other.edges_upserted;
        self.failures += other.failures;
    }
}

/// The sink database connection, owned by the pipeline.
pub struct Sink {
    client: Client,
    slot: String,
    in_transaction: bool,
    /// The relations of the rules version whose outcomes are being written.
    relations: Arc<RelationGraph>,
    /// The leader epoch every COMMIT must still hold (`None`: unfenced, for tools and tests
    /// that own the sink alone). 32 bits, so that it shares the padding after `in_transaction`
    /// and the sink does not grow.
    fence: Option<std::num::NonZeroU32>,
    /// [`Sink::ensure_schema`] created `sync_changelog` and `sync_bucket_edges` (rather than
    /// adopting tables someone else made): see [`super::deferred_indexes`].
    created_sidecar: bool,
}

impl Sink {
    /// Wraps a connected client. `slot` names this pipeline's row in `sync_wal_position`.
    pub fn new(client: Client, slot: impl Into<String>) -> Self {
        Sink {
            client,
            slot: slot.into(),
            in_transaction: false,
            relations: Arc::default(),
            fence: None,
            created_sidecar: false,
        }
    }

    /// The relations of the rules version whose outcomes the next writes carry.
    pub fn set_relations(&mut self, relations: Arc<RelationGraph>) {
        self.relations = relations;
    }

    /// See [`Sink::ensure_schema`].
    pub fn created_sidecar(&self) -> bool {
        self.created_sidecar
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn slot(&self) -> &str {
        &self.slot
    }

    /// Creates the sidecar tables that are missing and adopts existing ones (synchro's, or an
    /// older sluice's): see [`schema::ensure`]. Returns the DDL it ran.
    pub async fn ensure_schema(&mut self) -> Result<SchemaChanges, SinkError> {
        let changes = schema::ensure(&self.client).await?;
        self.created_sidecar |= changes.created_sidecar();
        Ok(changes)
    }

    /// The process created the sidecar's tables in an earlier schema check than this sink's
    /// own (see [`Sink::created_sidecar`]).
    pub fn set_created_sidecar(&mut self) {
        self.created_sidecar = true;
    }

    /// The LSN up to which source transactions are persisted, if any.
    pub async fn stored_lsn(&self) -> Result<Option<Lsn>, SinkError> {
        let row = self
            .client
            .query_opt(
                "SELECT confirmed_lsn FROM sync_wal_position WHERE slot_name = $1",
                &[&self.slot],
            )
            .await
            .map_err(|e| SinkError::sql("reading sync_wal_position", e))?;
        Ok(row.map(|r| Lsn(r.get::<_, i64>(0) as u64)))
    }

    /// Opens the sink transaction for a batch.
    pub async fn begin(&mut self) -> Result<(), SinkError> {
        if !self.in_transaction {
            self.client
                .batch_execute("BEGIN")
                .await
                .map_err(|e| SinkError::sql("BEGIN of the sink transaction", e))?;
            self.in_transaction = true;
        }
        Ok(())
    }

    /// Writes one chunk of items inside the open transaction. `emit_changelog` is false for
    /// snapshot rows when the user does not want them in the changelog (edges are still kept).
    pub async fn write(
        &mut self,
        items: &[SinkItem],
        emit_changelog: bool,
    ) -> Result<WriteStats, SinkError> {
        self.begin().await?;
        let mut stats = WriteStats::default();
        // TRUNCATE and renames split the chunk: what came before them must be written before
        // the rows vanish or move.
        let mut start = 0;
        for (i, item) in items.iter().enumerate() {
            match item {
                SinkItem::Truncate { table_name } => {
                    stats += self
                        .write_segment(&items[start..i], emit_changelog, false)
                        .await?;
                    stats += self.truncate_related(table_name, emit_changelog).await?;
                    start = i + 1;
                }
                SinkItem::Relations(names) => {
                    stats += self
                        .write_segment(&items[start..i], emit_changelog, false)
                        .await?;
                    stats += self.write_relation_names(names).await?;
                    start = i + 1;
                }
                _ => {}
            }
        }
        stats += self
            .write_segment(&items[start..], emit_changelog, false)
            .await?;
        Ok(stats)
    }

    /// Like [`Sink::write`], for records the caller knows have no stored edges and that appear
    /// once each (a first snapshot of a table with no edges at all): the edge read is skipped.
    pub async fn write_new_records(
        &mut self,
        items: &[SinkItem],
        emit_changelog: bool,
    ) -> Result<WriteStats, SinkError> {
        self.begin().await?;
        self.write_segment(items, emit_changelog, true).await
    }

    /// True when no edge of `table` is stored.
    pub async fn has_no_edges(&self, table: &str) -> Result<bool, SinkError> {
        let row = self
            .client
            .query_one(
                "SELECT NOT EXISTS (SELECT 1 FROM sync_bucket_edges WHERE table_name = $1)",
                &[&table],
            )
            .await
            .map_err(|e| SinkError::sql(format!("checking for stored edges of {table}"), e))?;
        Ok(row.get(0))
    }

    /// Stores `lsn` as the confirmed position and commits. After this returns, the source may
    /// tell PostgreSQL that WAL up to `lsn` can be released.
    pub async fn commit(&mut self, lsn: Lsn) -> Result<(), SinkError> {
        self.begin().await?;
        self.client
            .execute(
                "INSERT INTO sync_wal_position (slot_name, confirmed_lsn, updated_at) VALUES ($1, $2, now()) \
                 ON CONFLICT (slot_name) DO UPDATE SET confirmed_lsn = EXCLUDED.confirmed_lsn, updated_at = now() \
                 WHERE sync_wal_position.confirmed_lsn <= EXCLUDED.confirmed_lsn",
                &[&self.slot, &(lsn.0 as i64)],
            )
            .await
            .map_err(|e| SinkError::sql(format!("storing confirmed LSN {lsn}"), e))?;
        self.finish("COMMIT").await
    }

    /// Commits without moving the confirmed LSN (snapshot chunks).
    pub async fn commit_without_lsn(&mut self) -> Result<(), SinkError> {
        self.finish("COMMIT").await
    }

    /// Abandons the open transaction.
    pub async fn rollback(&mut self) -> Result<(), SinkError> {
        if self.in_transaction {
            self.finish("ROLLBACK").await?;
        }
        Ok(())
    }

    async fn finish(&mut self, verb: &str) -> Result<(), SinkError> {
        self.in_transaction = false;
        match self.fence.filter(|_| verb == "COMMIT") {
            Some(epoch) => self.fenced_commit(i64::from(epoch.get())).await,
            None => self
                .client
                .batch_execute(verb)
                .await
                .map_err(|e| SinkError::sql(verb.to_owned(), e)),
        }
    }

    /// Makes every later COMMIT conditional on `epoch` still being this slot's leader epoch,
    /// and records this connection as the leader's sink session (see [`lease`]). Fails with
    /// [`SinkError::Fenced`] when another process has taken over already.
    pub async fn fence(&mut self, epoch: i64) -> Result<(), SinkError> {
        // Epochs count takeovers from 1: four billion of them do not happen.
        let Some(fence) = u32::try_from(epoch)
            .ok()
            .and_then(std::num::NonZeroU32::new)
        else {
            return Err(self.fenced(epoch));
        };
        if !lease::record_sink_session(&self.client, &self.slot, epoch).await? {
            return Err(self.fenced(epoch));
        }
        self.fence = Some(fence);
        Ok(())
    }

    fn fenced(&self, epoch: i64) -> SinkError {
        SinkError::Fenced {
            slot: self.slot.clone(),
            epoch,
        }
    }

    async fn fenced_commit(&mut self, epoch: i64) -> Result<(), SinkError> {
        let sql = lease::fenced_commit_sql(&self.slot, epoch);
        match self.client.batch_execute(&sql).await {
            Ok(()) => Ok(()),
            Err(e) if lease::is_fence(&e) => {
                // The transaction is aborted already; ROLLBACK ends it so the session stays
                // usable for the caller's error path.
                let _ = self.client.batch_execute("ROLLBACK").await;
                Err(self.fenced(epoch))
            }
            Err(e) => Err(SinkError::sql("COMMIT", e)),
        }
    }

    async fn write_segment(
        &mut self,
        items: &[SinkItem],
        emit: bool,
        nothing_stored: bool,
    ) -> Result<WriteStats, SinkError> {
        let mut stats = WriteStats::default();
        if items.is_empty() {
            return Ok(stats);
        }
        let records: Vec<&SinkRecord> = items
            .iter()
            .filter_map(|i| {
                if let SinkItem::Record(r) = i {
                    Some(r)
                } else {
                    None
                }
            })
            .collect();
        let failures: Vec<&RuleFailure> = items
            .iter()
            .filter_map(|i| {
                if let SinkItem::Failure(f) = i {
                    Some(f)
                } else {
                    None
                }
            })
            .collect();

        let settled;
        let (records, nothing_stored) = if records.iter().any(|r| r.related.is_some()) {
            settled = cascade::settle(&self.client, &self.relations, &records).await?;
            log_cascade(&settled.stats);
            // Rows the cascade reached have stored edges, whatever the caller knew.
            (settled.records.iter().collect(), false)
        } else {
            settled = cascade::Settled::default();
            (records, nothing_stored)
        };
        if !records.is_empty() {
            let t0 = std::time::Instant::now();
            let stored = if nothing_stored {
                RecordMap::default()
            } else {
                self.read_edges(&records).await?
            };
            let t1 = t0.elapsed();
            let mut state = EdgeState::new(stored);
            let mut entries = Vec::with_capacity(records.len());
            for record in &records {
                state.apply(record, emit, &mut entries);
            }
            let t2 = t0.elapsed();
            stats.changelog_rows = self.copy_changelog(&entries).await?;
            let t3 = t0.elapsed();
            let writes = state.into_writes();
            stats.edges_deleted = self.delete_edges(&writes.deletes).await?;
            let t4 = t0.elapsed();
            stats.edges_upserted = self.insert_edges(&writes.inserts).await?;
            let t5 = t0.elapsed();
            stats.edges_upserted += self.update_edges(&writes.updates).await?;
            tracing::debug!(
                records = records.len(),
                read_edges_ms = t1.as_millis() as u64,
                diff_ms = (t2 - t1).as_millis() as u64,
                copy_ms = (t3 - t2).as_millis() as u64,
                delete_ms = (t4 - t3).as_millis() as u64,
                insert_ms = (t5 - t4).as_millis() as u64,
                update_ms = (t0.elapsed() - t5).as_millis() as u64,
                "sink chunk written"
            );
        }
        settled.writes.write(&self.client).await?;
        if !failures.is_empty() {
            stats.failures = self.insert_failures(&failures).await?;
        }
        Ok(stats)
    }

    async fn read_edges(
        &self,
        records: &[&SinkRecord],
    ) -> Result<RecordMap<StoredEdges>, SinkError> {
        // One `= ANY` probe per table rather than a join against unnest(): the planner then walks
        // the primary-key index instead of hashing the whole edge table, which grows with it.
        let mut by_table: std::collections::BTreeMap<&str, std::collections::BTreeSet<&str>> =
            std::collections::BTreeMap::new();
        for r in records {
            by_table
                .entry(r.table_name.as_str())
                .or_default()
                .insert(r.record_id.as_str());
        }
        let mut stored: RecordMap<StoredEdges> = RecordMap::default();
        for (table, ids) in by_table {
            let ids: Vec<&str> = ids.into_iter().collect();
            let rows = self
                .client
                .query(
                    "SELECT record_id, bucket_id, checksum FROM sync_bucket_edges \
                     WHERE table_name = $1 AND record_id = ANY($2::text[])",
                    &[&table, &ids],
                )
                .await
                .map_err(|e| {
                    SinkError::sql(format!("reading stored bucket edges of {table}"), e)
                })?;
            for row in rows {
                stored
                    .entry((table.to_owned(), row.get(0)))
                    .or_default()
                    .insert(row.get(1), row.get(2));
            }
        }
        Ok(stored)
    }

    async fn copy_changelog(&self, entries: &[ChangelogEntry]) -> Result<u64, SinkError> {
        if entries.is_empty() {
            return Ok(0);
        }
        let mut copy = CopyBinary::with_capacity(entries.len(), 64);
        for e in entries {
            copy.row(4)
                .text(&e.bucket_id)
                .text(&e.table_name)
                .text(&e.record_id)
                .int2(e.operation.code());
        }
        // seq is assigned in COPY order, so seq order is stream order.
        self.copy_in(
            "COPY sync_changelog (bucket_id, table_name, record_id, operation) FROM STDIN (FORMAT binary)",
            "sync_changelog",
            copy.finish(),
        )
        .await
    }

    /// Edges that did not exist before the chunk: no conflict is possible (the chunk read every
    /// stored edge of its records inside this transaction), so a COPY does it.
    async fn insert_edges(&self, inserts: &[EdgeRow]) -> Result<u64, SinkError> {
        if inserts.is_empty() {
            return Ok(0);
        }
        let mut copy = CopyBinary::with_capacity(inserts.len(), 64);
        for (table, record, bucket, checksum) in inserts {
            copy.row(4)
                .text(table)
                .text(record)
                .text(bucket)
                .int4_or_null(*checksum);
        }
        self.copy_in(
            "COPY sync_bucket_edges (table_name, record_id, bucket_id, checksum) FROM STDIN (FORMAT binary)",
            "sync_bucket_edges",
            copy.finish(),
        )
        .await
    }

    async fn copy_in(&self, statement: &str, table: &str, data: Bytes) -> Result<u64, SinkError> {
        let sink = self
            .client
            .copy_in::<_, Bytes>(statement)
            .await
            .map_err(|e| SinkError::sql(format!("starting COPY into {table}"), e))?;
        let mut sink = pin!(sink);
        sink.send(data)
            .await
            .map_err(|e| SinkError::sql(format!("COPY into {table}"), e))?;
        sink.as_mut()
            .finish()
            .await
            .map_err(|e| SinkError::sql(format!("finishing COPY into {table}"), e))
    }

    async fn delete_edges(&self, deletes: &[(String, String, String)]) -> Result<u64, SinkError> {
        if deletes.is_empty() {
            return Ok(0);
        }
        let (t, r, b) = columns3(deletes);
        self.client
            .execute(
                "DELETE FROM sync_bucket_edges e USING unnest($1::text[], $2::text[], $3::text[]) AS d(t, r, b) \
                 WHERE e.table_name = d.t AND e.record_id = d.r AND e.bucket_id = d.b",
                &[&t, &r, &b],
            )
            .await
            .map_err(|e| SinkError::sql("deleting bucket edges", e))
    }

    /// Stored edges whose checksum changed. An upsert rather than `UPDATE ... FROM unnest`: the
    /// conflict check probes the primary key for each row, where a join could be planned as a
    /// scan of the whole (ever-growing) edge table.
    async fn update_edges(&self, updates: &[EdgeRow]) -> Result<u64, SinkError> {
        if updates.is_empty() {
            return Ok(0);
        }
        let t: Vec<&str> = updates.iter().map(|u| u.0.as_str()).collect();
        let r: Vec<&str> = updates.iter().map(|u| u.1.as_str()).collect();
        let b: Vec<&str> = updates.iter().map(|u| u.2.as_str()).collect();
        let c: Vec<Option<i32>> = updates.iter().map(|u| u.3).collect();
        self.client
            .execute(
                "INSERT INTO sync_bucket_edges (table_name, record_id, bucket_id, checksum, updated_at) \
                 SELECT t, r, b, c, now() FROM unnest($1::text[], $2::text[], $3::text[], $4::int4[]) AS u(t, r, b, c) \
                 ON CONFLICT (table_name, record_id, bucket_id) \
                 DO UPDATE SET checksum = EXCLUDED.checksum, updated_at = EXCLUDED.updated_at",
                &[&t, &r, &b, &c],
            )
            .await
            .map_err(|e| SinkError::sql("updating bucket edges", e))
    }

    /// TRUNCATE of a table that may be in the rules' relations: its rows go, and so do the
    /// memberships other rows had through them.
    async fn truncate_related(&mut self, table: &str, emit: bool) -> Result<WriteStats, SinkError> {
        if !self.relations.involves(table) {
            return self.truncate(table, emit).await;
        }
        let affected = cascade::truncate(&self.client, &self.relations, table).await?;
        let mut stats = self.truncate(table, emit).await?;
        let settled = cascade::settle_rows(&self.client, &self.relations, affected).await?;
        log_cascade(&settled.stats);
        let items: Vec<SinkItem> = settled.records.into_iter().map(SinkItem::Record).collect();
        stats += self.write_segment(&items, emit, false).await?;
        Ok(stats)
    }

    /// TRUNCATE: a delete for every stored membership of the table, done in the database so that
    /// a table of any size costs no memory here.
    async fn truncate(&self, table: &str, emit: bool) -> Result<WriteStats, SinkError> {
        let mut stats = WriteStats::default();
        if emit {
            stats.changelog_rows = self
                .client
                .execute(
                    "INSERT INTO sync_changelog (bucket_id, table_name, record_id, operation) \
                     SELECT bucket_id, table_name, record_id, 3 FROM sync_bucket_edges \
                     WHERE table_name = $1 ORDER BY record_id, bucket_id",
                    &[&table],
                )
                .await
                .map_err(|e| SinkError::sql(format!("emitting TRUNCATE deletes for {table}"), e))?;
        }
        stats.edges_deleted = self
            .client
            .execute(
                "DELETE FROM sync_bucket_edges WHERE table_name = $1",
                &[&table],
            )
            .await
            .map_err(|e| SinkError::sql(format!("removing edges of truncated {table}"), e))?;
        Ok(stats)
    }

    async fn insert_failures(&self, failures: &[&RuleFailure]) -> Result<u64, SinkError> {
        let t: Vec<&str> = failures.iter().map(|f| f.table_name.as_str()).collect();
        let r: Vec<&str> = failures.iter().map(|f| stored_record_id(f)).collect();
        let o: Vec<i16> = failures.iter().map(|f| f.op.code()).collect();
        let e: Vec<&str> = failures.iter().map(|f| f.error_text.as_str()).collect();
        let p: Vec<&serde_json::Value> = failures.iter().map(|f| &f.payload).collect();
        let l: Vec<i64> = failures.iter().map(|f| f.lsn.0 as i64).collect();
        let v: Vec<&str> = failures.iter().map(|f| f.rules_version.as_str()).collect();
        self.client
            .execute(
                "INSERT INTO sync_rule_failures (table_name, record_id, operation, error_text, payload, lsn, rules_version) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int2[], $4::text[], $5::jsonb[], $6::int8[], $7::text[])",
                &[&t, &r, &o, &e, &p, &l, &v],
            )
            .await
            .map_err(|e| SinkError::sql("recording rule failures", e))
    }
}

/// `sync_rule_failures.record_id` of a failure whose key could not be determined (key columns
/// missing, NULL or unchanged TOAST). synchro's table has `record_id TEXT NOT NULL`, so it cannot
/// be NULL; the empty string is the one value no `key::text` of a composite key and no sensible
/// text key takes, and `error_text` says why the key is unknown.
pub const UNKNOWN_RECORD_ID: &str = "";

/// The `record_id` stored for a failure.
pub fn stored_record_id(failure: &RuleFailure) -> &str {
    failure.record_id.as_deref().unwrap_or(UNKNOWN_RECORD_ID)
}

fn log_cascade(stats: &cascade::CascadeStats) {
    if stats.cascaded > 0 {
        tracing::debug!(
            rows = stats.cascaded,
            "memberships cascaded to related rows"
        );
    }
    if stats.unknown > 0 {
        tracing::warn!(
            rows = stats.unknown,
            "related rows written before the rules declared their relations were left as they are; run `sluice rebucket --table <table>` for each table in the relations"
        );
    }
}

fn columns3(rows: &[(String, String, String)]) -> (Vec<&str>, Vec<&str>, Vec<&str>) {
    let mut a = Vec::with_capacity(rows.len());
    let mut b = Vec::with_capacity(rows.len());
    let mut c = Vec::with_capacity(rows.len());
    for (x, y, z) in rows {
        a.push(x.as_str());
        b.push(y.as_str());
        c.push(z.as_str());
    }
    (a, b, c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Operation;

    fn failure(record_id: Option<&str>) -> RuleFailure {
        RuleFailure {
            table_name: "items".into(),
            record_id: record_id.map(str::to_owned),
            op: Operation::Update,
            error_text: "cannot determine the row's primary key".into(),
            payload: serde_json::Value::Null,
            lsn: Lsn(1),
            rules_version: "v".into(),
        }
    }

    #[test]
    fn a_failure_with_an_unknown_key_is_stored_with_the_empty_record_id() {
        assert_eq!(stored_record_id(&failure(None)), "");
        assert_eq!(stored_record_id(&failure(None)), UNKNOWN_RECORD_ID);
        assert_eq!(stored_record_id(&failure(Some("7"))), "7");
    }
}
