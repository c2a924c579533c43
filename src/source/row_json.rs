//! Current rows as `row_to_json` gives them, fetched in bulk by primary key.
//!
//! This is the row as a sync server hands it to its clients (synchro hydrates with
//! `row_to_json`), so it is what synchro's checksum must be computed from: every column, even
//! ones the publication does not stream, TOASTed values included, each type formatted by
//! PostgreSQL itself. The connection is a plain one with the database's and role's default
//! settings, like the sync server's own, because `row_to_json` follows the session's `TimeZone`
//! and `IntervalStyle`.
//!
//! One query per table and batch, never one per row: the keys travel as one text array per key
//! column, each cast to its column's declared type, so the primary key index is used whatever
//! the key types are.
//!
//! A transaction reaches us once its commit record is flushed, which can be before other
//! sessions see it: the committing backend leaves the proc array only afterwards (a moment
//! later, or once a synchronous standby has confirmed). Read in that window, a row is missing
//! or still the previous version, and its checksum wrong until it changes again. So a read
//! first waits until the transactions it follows are visible: [`RowJson::wait_visible`].

use std::time::{Duration, Instant};

use std::collections::HashMap;
use std::sync::Mutex;

use tokio_postgres::{Client, Statement};

use crate::model::TableSchema;
use crate::pg::{PgConfig, PgError};
use crate::source::catalog::quote_ident;

/// A connection for reading current rows as JSON.
pub struct RowJson {
    client: Client,
    /// The sink is the source database itself.
    sink_is_source: bool,
    statements: Mutex<StatementCache>,
}

impl RowJson {
    /// Opens the connection, with the database's default session settings. When the sink is
    /// the source database itself (same server by system identifier, same database), the rows
    /// are read over the sink's address: reading them then depends on the server the sink
    /// commits to, not on the replication path (which may be a proxy, a pooler or a slower
    /// network). Otherwise over the source's.
    pub async fn connect(source: &PgConfig, sink: &PgConfig) -> Result<Self, PgError> {
        let on_sink = sink.connect_sql().await?;
        let on_source = source.connect_sql().await?;
        let same = match (identity(&on_sink).await, identity(&on_source).await) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        };
        Ok(RowJson {
            client: if same { on_sink } else { on_source },
            sink_is_source: same,
            statements: Mutex::default(),
        })
    }

    /// True when the sink is the source database (same system identifier, same database): the
    /// sidecar tables are then source tables too.
    pub fn sink_is_source(&self) -> bool {
        self.sink_is_source
    }

    /// Waits until every transaction in `xids` (the 32-bit ids of committed transactions, as
    /// pgoutput's Begin gives them) is visible to a new snapshot of this connection, for at most
    /// `limit`. False when the limit passed first.
    pub async fn wait_visible(
        &self,
        xids: &[u32],
        limit: Duration,
    ) -> Result<bool, tokio_postgres::Error> {
        if xids.is_empty() {
            return Ok(true);
        }
        // A committed transaction's id is below the snapshot's xmax and less than 2^31 behind
        // it, which gives its epoch.
        const SQL: &str = "SELECT count(*) FROM (SELECT pg_current_snapshot() AS s, \
             pg_snapshot_xmax(pg_current_snapshot())::text::int8 AS xmax) AS c, \
             unnest($1::int8[]) AS x(xid) \
             WHERE NOT pg_visible_in_snapshot((c.xmax - ((c.xmax % 4294967296 - x.xid) \
             % 4294967296 + 4294967296) % 4294967296)::text::xid8, c.s)";
        let xids: Vec<i64> = xids.iter().map(|&x| i64::from(x)).collect();
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            let invisible: i64 = self.client.query_one(SQL, &[&xids]).await?.get(0);
            if invisible == 0 {
                return Ok(true);
            }
            if started.elapsed() >= limit {
                return Ok(false);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// The `row_to_json` text of each row whose primary key columns (in `key_columns` order)
    /// have the given text forms; `None` where no such row exists any more.
    pub async fn fetch(
        &self,
        table: &TableSchema,
        key_columns: &[&str],
        keys: &[Vec<&str>],
    ) -> Result<Vec<Option<String>>, tokio_postgres::Error> {
        let statement = self.fetch_statement(table, key_columns).await?;
        // One text array per key column: unnest zips them back into keys.
        let columns: Vec<Vec<&str>> = (0..key_columns.len())
            .map(|c| {
                keys.iter()
                    .map(|key| key.get(c).copied().unwrap_or_default())
                    .collect()
            })
            .collect();
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = columns
            .iter()
            .map(|c| c as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let rows = self.client.query(&statement, &params).await?;
        let mut out = vec![None; keys.len()];
        for row in rows {
            let ordinal: i64 = row.get(0);
            if let Some(slot) = usize::try_from(ordinal - 1)
                .ok()
                .and_then(|i| out.get_mut(i))
            {
                *slot = Some(row.get(1));
            }
        }
        Ok(out)
    }

    /// The prepared fetch of `table` by `key_columns`, prepared once per table and key shape.
    ///
    /// Each key text is cast to its column's declared type, modifier included (`bit(3)`, a
    /// domain), which runs the type's input function exactly as the text's own `::type` would:
    /// the primary key index is then probed directly. (A generic `json_populate_record` of each
    /// key does the same at twice the server's CPU per row.)
    async fn fetch_statement(
        &self,
        table: &TableSchema,
        key_columns: &[&str],
    ) -> Result<Statement, tokio_postgres::Error> {
        let name = format!(
            "{}.{}",
            quote_ident(&table.schema),
            quote_ident(&table.name)
        );
        // The relation's columns as the stream last described them: a changed key type makes a
        // new entry rather than a stale cast.
        let shape: Vec<(String, u32, i32)> = key_columns
            .iter()
            .filter_map(|c| table.columns.iter().find(|col| col.name == *c))
            .map(|c| (c.name.clone(), c.type_oid, c.type_modifier))
            .collect();
        let cache_key = (name.clone(), shape);
        if let Some(statement) = lock(&self.statements).get(&cache_key) {
            return Ok(statement.clone());
        }
        let declared: Vec<String> = self
            .client
            .query(
                "SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) \
                 FROM unnest($2::text[]) WITH ORDINALITY AS k(name, i) \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = $1::text::regclass \
                 AND a.attname = k.name AND NOT a.attisdropped ORDER BY k.i",
                &[&name, &key_columns],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let names: Vec<String> = (0..key_columns.len()).map(|i| format!("k{i}")).collect();
        let on: Vec<String> = key_columns
            .iter()
            .zip(&declared)
            .zip(&names)
            .map(|((c, ty), k)| format!("sluice_t.{} = sluice_k.{k}::{ty}", quote_ident(c)))
            .collect();
        let arrays: Vec<String> = (1..=key_columns.len())
            .map(|i| format!("${i}::text[]"))
            .collect();
        // Aliases no column is likely to share, and a qualified whole-row reference: a bare
        // `row_to_json(t)` is ambiguous in a table with a column named `t`. A column that
        // vanished from the catalog leaves `on` shorter than the key: the join then matches
        // nothing rather than the wrong rows.
        let on = if declared.len() == key_columns.len() {
            on.join(" AND ")
        } else {
            "false".to_owned()
        };
        let sql = format!(
            "SELECT sluice_k.i, row_to_json(sluice_t.*)::text \
             FROM unnest({}) WITH ORDINALITY AS sluice_k({}, i) \
             JOIN {name} AS sluice_t ON {on}",
            arrays.join(", "),
            names.join(", "),
        );
        let statement = self.client.prepare(&sql).await?;
        lock(&self.statements).insert(cache_key, statement.clone());
        Ok(statement)
    }
}

/// Prepared fetches by (table, key columns' names, type OIDs and modifiers).
type StatementCache = HashMap<(String, Vec<(String, u32, i32)>), Statement>;

fn lock(cache: &Mutex<StatementCache>) -> std::sync::MutexGuard<'_, StatementCache> {
    // The cache holds no invariant a panic could break halfway.
    cache.lock().unwrap_or_else(|e| e.into_inner())
}

/// (system identifier, database name): the same pair means the same database.
async fn identity(client: &Client) -> Option<(i64, String)> {
    let row = client
        .query_one(
            "SELECT system_identifier, current_database()::text FROM pg_control_system()",
            &[],
        )
        .await
        .ok()?;
    Some((row.get(0), row.get(1)))
}
