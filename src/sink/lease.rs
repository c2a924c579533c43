//! The leader lease in `sluice_leader`: which process may commit to the sink for a slot.
//!
//! One row per slot holds a fencing epoch, bumped by every takeover, and a lease renewed by the
//! holder. Times are the sink database's (`clock_timestamp()`), never a host's, so clock skew
//! between replicas does not matter. Every sink COMMIT first re-reads the row with `FOR SHARE`
//! at the holder's epoch in the same transaction ([`fenced_commit_sql`]): a takeover either
//! waits for that commit (it needs the row lock) or has already bumped the epoch, and then the
//! commit fails and rolls back. A stale process therefore never commits, whatever its clock or
//! however long it was frozen.

use tokio_postgres::Client;

use crate::sink::SinkError;

/// SQLSTATE of the division by zero that [`fenced_commit_sql`] raises when the epoch moved on.
const FENCED_SQLSTATE: &str = "22012";

/// The `CREATE TABLE` of the lease table (also in `schema::TABLES`).
pub const CREATE: &str = "CREATE TABLE sluice_leader (
    slot_name     TEXT PRIMARY KEY,
    epoch         BIGINT NOT NULL,
    holder        TEXT NOT NULL,
    lease_ms      INTEGER NOT NULL,
    renewed_at    TIMESTAMPTZ NOT NULL,
    holder_locked BOOLEAN NOT NULL DEFAULT false,
    sink_pid      INTEGER,
    sink_started  TIMESTAMPTZ
)";

/// The advisory lock key of `slot`'s leader: held by the leader's lease session, so a standby
/// that obtains it knows that session ended (the process died or exited) without waiting for
/// the lease to expire.
const LOCK_KEY: &str = "hashtextextended('sluice leader ' || $1, 0)";

/// What a successful takeover found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken {
    /// The new epoch: this process's fencing token.
    pub epoch: i64,
    /// The previous holder (`host:pid`), if there was one.
    pub previous: Option<String>,
    /// The previous holder's sink backend, as (pid, backend start), to terminate if it still
    /// runs: a frozen holder may sit in an open transaction holding row locks.
    pub previous_sink: Option<(i32, std::time::SystemTime)>,
}

/// Tries to obtain `slot`'s advisory lock on this session (see [`LOCK_KEY`]).
pub async fn try_lock(client: &Client, slot: &str) -> Result<bool, SinkError> {
    let row = client
        .query_one(
            &format!("SELECT pg_try_advisory_lock({LOCK_KEY})"),
            &[&slot],
        )
        .await
        .map_err(|e| SinkError::sql(format!("taking the leader lock of slot {slot}"), e))?;
    Ok(row.get(0))
}

/// Gives up `slot`'s advisory lock (a standby that could not take over keeps no lock, so that
/// the leader can get it).
pub async fn unlock(client: &Client, slot: &str) -> Result<(), SinkError> {
    client
        .execute(&format!("SELECT pg_advisory_unlock({LOCK_KEY})"), &[&slot])
        .await
        .map_err(|e| SinkError::sql(format!("releasing the leader lock of slot {slot}"), e))?;
    Ok(())
}

/// Becomes `slot`'s leader when there is none, when the lease expired (by the database's
/// clock), or when `holder_gone` (this session got the advisory lock that the holder's session
/// held). Returns `None` while another process holds a live lease.
pub async fn try_take(
    client: &Client,
    slot: &str,
    holder: &str,
    lease_ms: i32,
    holder_gone: bool,
) -> Result<Option<Taken>, SinkError> {
    let row = client
        .query_opt(
            "WITH old AS (SELECT holder, sink_pid, sink_started FROM sluice_leader WHERE slot_name = $1) \
             INSERT INTO sluice_leader AS l (slot_name, epoch, holder, lease_ms, renewed_at, holder_locked) \
             VALUES ($1, 1, $2, $3, clock_timestamp(), $4) \
             ON CONFLICT (slot_name) DO UPDATE SET epoch = l.epoch + 1, holder = EXCLUDED.holder, \
               lease_ms = EXCLUDED.lease_ms, renewed_at = clock_timestamp(), \
               holder_locked = EXCLUDED.holder_locked, sink_pid = NULL, sink_started = NULL \
             WHERE ($4 AND l.holder_locked) \
                OR l.renewed_at + l.lease_ms * interval '1 millisecond' < clock_timestamp() \
             RETURNING l.epoch, (SELECT holder FROM old), (SELECT sink_pid FROM old), (SELECT sink_started FROM old)",
            &[&slot, &holder, &lease_ms, &holder_gone],
        )
        .await
        .map_err(|e| SinkError::sql(format!("taking over the lease of slot {slot}"), e))?;
    Ok(row.map(|r| Taken {
        epoch: r.get(0),
        previous: r.get(1),
        previous_sink: r.get::<_, Option<i32>>(2).zip(r.get(3)),
    }))
}

/// Renews the lease; `false` when another process has taken over (this one is fenced).
pub async fn renew(
    client: &Client,
    slot: &str,
    epoch: i64,
    locked: bool,
) -> Result<bool, SinkError> {
    let n = client
        .execute(
            "UPDATE sluice_leader SET renewed_at = clock_timestamp(), holder_locked = $3 \
             WHERE slot_name = $1 AND epoch = $2",
            &[&slot, &epoch, &locked],
        )
        .await
        .map_err(|e| SinkError::sql(format!("renewing the lease of slot {slot}"), e))?;
    Ok(n == 1)
}

/// Ends the lease at once (clean exit), so a standby takes over at its next poll.
pub async fn release(client: &Client, slot: &str, epoch: i64) -> Result<(), SinkError> {
    client
        .execute(
            "UPDATE sluice_leader SET renewed_at = '-infinity', holder_locked = false \
             WHERE slot_name = $1 AND epoch = $2",
            &[&slot, &epoch],
        )
        .await
        .map_err(|e| SinkError::sql(format!("releasing the lease of slot {slot}"), e))?;
    Ok(())
}

/// The holder and epoch of `slot`'s lease, for the standby's log.
pub async fn holder(client: &Client, slot: &str) -> Result<Option<(String, i64)>, SinkError> {
    let row = client
        .query_opt(
            "SELECT holder, epoch FROM sluice_leader WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| SinkError::sql(format!("reading the lease of slot {slot}"), e))?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// Terminates the previous holder's sink backend if it still runs (same pid and start time, so
/// a reused pid is never hit). Needs the same role or `pg_signal_backend`.
pub async fn terminate_sink_backend(
    client: &Client,
    pid: i32,
    started: std::time::SystemTime,
) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE pid = $1 AND backend_start = $2 AND pid <> pg_backend_pid()",
            &[&pid, &started],
        )
        .await?;
    Ok(row.is_some_and(|r| r.get::<_, bool>(0)))
}

/// The session's own row in the lease, written by the sink connection of the leader at
/// `epoch`: its pid lets a later taker terminate it. `false` when the epoch moved on.
pub async fn record_sink_session(
    client: &Client,
    slot: &str,
    epoch: i64,
) -> Result<bool, SinkError> {
    let n = client
        .execute(
            "UPDATE sluice_leader SET sink_pid = pg_backend_pid(), \
               sink_started = (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()) \
             WHERE slot_name = $1 AND epoch = $2",
            &[&slot, &epoch],
        )
        .await
        .map_err(|e| SinkError::sql(format!("recording the sink session of slot {slot}"), e))?;
    Ok(n == 1)
}

/// The simple-query text that commits the open sink transaction only while `epoch` is still
/// `slot`'s: the check and the COMMIT travel in one message, so no client-side pause (a
/// SIGSTOP, a partition) can hold the lease row's lock between them. A moved-on epoch divides
/// by zero, which aborts the transaction and skips the COMMIT.
pub fn fenced_commit_sql(slot: &str, epoch: i64) -> String {
    format!(
        "SELECT 1 / count(*)::int FROM (SELECT 1 FROM sluice_leader \
           WHERE slot_name = '{}' AND epoch = {epoch} FOR SHARE) AS lease; COMMIT",
        slot.replace('\'', "''")
    )
}

/// True when `e` is the fence of [`fenced_commit_sql`] refusing the commit.
pub fn is_fence(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| c.code() == FENCED_SQLSTATE)
}
