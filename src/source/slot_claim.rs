//! Taking a slot from a walsender that a previous leader left behind.
//!
//! A leader that was killed lets go of its slot as soon as its walsender sees the socket
//! close, but a frozen or partitioned one keeps its connection open, and the slot stays active
//! until `wal_sender_timeout` (a minute by default). The new leader holds the lease, so any
//! walsender still on the slot is stale: it is terminated. `pg_terminate_backend` needs the
//! same role as that walsender's, or membership in `pg_signal_backend`.

use std::time::Duration;

use tokio_postgres::Client;
use tracing::info;

/// How long to wait for a terminated walsender to let go of the slot.
const RELEASE_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(50);

/// Why the slot could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "cannot take over replication slot {slot:?}: permission denied to terminate the walsender (pid {pid}) that a previous sluice left on it. Run every sluice replica as the same role, or grant the role pg_signal_backend on the source (`GRANT pg_signal_backend TO <role>;`, see SECURITY.md)"
    )]
    NotPermitted { slot: String, pid: i32 },
    #[error("taking over replication slot {slot:?}: {source}")]
    Sql {
        slot: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// Terminates the walsender holding `slot`, if any, and waits until the slot is free (or
/// [`RELEASE_WAIT`] passed: the caller then reports the busy slot as before). Returns the pid
/// terminated.
pub async fn claim_slot(client: &Client, slot: &str) -> Result<Option<i32>, ClaimError> {
    let sql = |source| ClaimError::Sql {
        slot: slot.to_owned(),
        source,
    };
    let active_pid = || async {
        client
            .query_opt(
                "SELECT active_pid FROM pg_catalog.pg_replication_slots \
                 WHERE slot_name = $1 AND active_pid IS NOT NULL",
                &[&slot],
            )
            .await
            .map(|r| r.map(|r| r.get::<_, i32>(0)))
    };
    let Some(pid) = active_pid().await.map_err(sql)? else {
        return Ok(None);
    };
    match client
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
    {
        Ok(_) => {}
        Err(e) if e.code().is_some_and(|c| c.code() == "42501") => {
            return Err(ClaimError::NotPermitted {
                slot: slot.to_owned(),
                pid,
            });
        }
        Err(e) => return Err(sql(e)),
    }
    info!(
        slot,
        pid, "terminated the walsender a previous leader left on the slot"
    );
    let deadline = tokio::time::Instant::now() + RELEASE_WAIT;
    while tokio::time::Instant::now() < deadline && active_pid().await.map_err(sql)?.is_some() {
        tokio::time::sleep(POLL).await;
    }
    Ok(Some(pid))
}
