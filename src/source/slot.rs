//! Slot look-up over an ordinary SQL connection.

use crate::model::Lsn;

use super::error::{ServerError, SourceError};

/// A row of `pg_replication_slots`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotState {
    pub plugin: Option<String>,
    pub database: Option<String>,
    pub active: bool,
    pub active_pid: Option<i32>,
    pub confirmed_flush_lsn: Option<Lsn>,
    pub restart_lsn: Option<Lsn>,
    /// `reserved`, `extended`, `unreserved` or `lost` (WAL removed: the slot is unusable).
    pub wal_status: Option<String>,
    /// PostgreSQL 17+: a standby's copy of a failover slot, kept in sync with the primary's and
    /// usable only after promotion. `None` before 17.
    pub synced: Option<bool>,
}

/// The slot's state, or `None` when no slot has that name.
pub async fn lookup_slot(
    client: &tokio_postgres::Client,
    slot: &str,
) -> Result<Option<SlotState>, SourceError> {
    let row = client
        .query_opt(
            "SELECT plugin::text, database::text, active, active_pid, \
                    confirmed_flush_lsn::text, restart_lsn::text, wal_status, \
                    (to_jsonb(s) ->> 'synced')::bool \
             FROM pg_catalog.pg_replication_slots s WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| {
            let context = format!("looking up replication slot {slot:?}");
            // A lost session is a reconnect like any other (the pipeline retries Io), not a
            // server's answer.
            if e.as_db_error().is_none() {
                return SourceError::Io {
                    context,
                    source: std::io::Error::new(std::io::ErrorKind::ConnectionAborted, e),
                };
            }
            SourceError::Server {
                context,
                server: Box::new(ServerError {
                    severity: "ERROR".to_owned(),
                    code: e.code().map(|c| c.code().to_owned()).unwrap_or_default(),
                    message: e.to_string(),
                    detail: None,
                    hint: None,
                }),
            }
        })?;
    let Some(row) = row else { return Ok(None) };
    let lsn = |i: usize| -> Option<Lsn> { row.get::<_, Option<String>>(i)?.parse().ok() };
    Ok(Some(SlotState {
        plugin: row.get(0),
        database: row.get(1),
        active: row.get(2),
        active_pid: row.get(3),
        confirmed_flush_lsn: lsn(4),
        restart_lsn: lsn(5),
        wal_status: row.get(6),
        synced: row.get(7),
    }))
}
