//! Current rows as `row_to_json` gives them, fetched in bulk by primary key.
//!
//! This is the row as a sync server hands it to its clients (synchro hydrates with
//! `row_to_json`), so it is what synchro's checksum must be computed from: every column, even
//! ones the publication does not stream, TOASTed values included, each type formatted by
//! PostgreSQL itself. The connection is a plain one with the database's and role's default
//! settings, like the sync server's own, because `row_to_json` follows the session's `TimeZone`
//! and `IntervalStyle`.
//!
//! One query per table and batch, never one per row: the keys travel as one array of JSON
//! objects that `json_populate_record` turns into the table's own key types, so the primary
//! key index is used whatever the key types are.
//!
//! A transaction reaches us once its commit record is flushed, which can be before other
//! sessions see it: the committing backend leaves the proc array only afterwards (a moment
//! later, or once a synchronous standby has confirmed). Read in that window, a row is missing
//! or still the previous version, and its checksum wrong until it changes again. So a read
//! first waits until the transactions it follows are visible: [`RowJson::wait_visible`].

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::model::TableSchema;
use crate::pg::{PgConfig, PgError};
use crate::source::catalog::quote_ident;

/// A connection for reading current rows as JSON.
pub struct RowJson {
    client: Client,
    /// The sink is the source database itself.
    sink_is_source: bool,
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
        let name = format!(
            "{}.{}",
            quote_ident(&table.schema),
            quote_ident(&table.name)
        );
        let on: Vec<String> = key_columns
            .iter()
            .map(|c| format!("sluice_t.{0} = sluice_u.{0}", quote_ident(c)))
            .collect();
        // Aliases no column is likely to share, and a qualified whole-row reference: a bare
        // `row_to_json(t)` is ambiguous in a table with a column named `t`.
        let sql = format!(
            "SELECT sluice_k.i, row_to_json(sluice_t.*)::text \
             FROM unnest($1::text[]) WITH ORDINALITY AS sluice_k(j, i) \
             CROSS JOIN LATERAL json_populate_record(NULL::{name}, sluice_k.j::json) AS sluice_u \
             JOIN {name} AS sluice_t ON {}",
            on.join(" AND ")
        );
        let objects: Vec<String> = keys
            .iter()
            .map(|values| {
                let object: serde_json::Map<String, serde_json::Value> = key_columns
                    .iter()
                    .zip(values)
                    .map(|(c, v)| ((*c).to_owned(), serde_json::Value::from(*v)))
                    .collect();
                serde_json::Value::Object(object).to_string()
            })
            .collect();
        let rows = self.client.query(sql.as_str(), &[&objects]).await?;
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
