//! Taking a slot from a walsender that a previous leader left behind.
//!
//! A leader that was killed lets go of its slot as soon as its walsender sees the socket
//! close, but a frozen or partitioned one keeps its connection open, and the slot stays active.
//! The new leader holds the lease, so any walsender still on the slot is stale: it is
//! terminated. `pg_terminate_backend` needs the same role as that walsender's, or membership in
//! `pg_signal_backend`.
//!
//! A walsender blocked writing to a client that reads nothing (a frozen process whose socket
//! buffers are full) does not exit on termination: it stays in `ClientWrite` trying to send its
//! FATAL message until the TCP connection fails, which the server's `tcp_user_timeout` bounds
//! (unset, a frozen peer's kernel keeps acknowledging zero-window probes indefinitely). So the
//! termination is repeated while waiting, and the wait is long.

use std::time::Duration;

use tokio_postgres::Client;
use tracing::{info, warn};

/// How long to wait for a terminated walsender to let go of the slot: `wal_sender_timeout`'s
/// default, after which a walsender that is not stuck writing gives up by itself.
const RELEASE_WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);
/// How often the termination is repeated, and when the wait is explained in the log.
const RETERMINATE: Duration = Duration::from_secs(1);
const EXPLAIN_AFTER: Duration = Duration::from_secs(2);

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
    let terminate = |pid: i32| async move {
        match client
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code().is_some_and(|c| c.code() == "42501") => {
                Err(ClaimError::NotPermitted {
                    slot: slot.to_owned(),
                    pid,
                })
            }
            Err(e) => Err(sql(e)),
        }
    };
    terminate(pid).await?;
    info!(
        slot,
        pid, "terminated the walsender a previous leader left on the slot"
    );
    let started = tokio::time::Instant::now();
    let mut last_term = started;
    let mut explained = false;
    while let Some(holder) = active_pid().await.map_err(sql)? {
        let waited = started.elapsed();
        if waited >= RELEASE_WAIT {
            break;
        }
        if !explained && waited >= EXPLAIN_AFTER {
            warn!(
                slot,
                pid = holder,
                "the previous leader's walsender does not exit: it is blocked writing to a process that reads nothing (frozen or partitioned). The slot frees when that process resumes or its connection fails; set tcp_user_timeout for sluice's role on the source to bound this (see README, Running in production)"
            );
            explained = true;
        }
        if last_term.elapsed() >= RETERMINATE {
            terminate(holder).await?;
            last_term = tokio::time::Instant::now();
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(Some(pid))
}
