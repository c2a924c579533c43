//! Standby and takeover: one process per slot streams (the leader), the others wait.
//!
//! A standby polls the lease in `sluice_leader` (see [`crate::sink::lease`]) and takes over when
//! the leader's lease session is gone (it held an advisory lock: a killed or exited leader frees
//! it at once) or its lease expired by the sink database's clock (a frozen or partitioned
//! leader). The leader renews the lease from a task of its own and, if the renewal finds the
//! epoch moved on, is fenced: it stops streaming and becomes a standby again. Whatever a stale
//! leader still tries to commit is refused by the epoch check inside every sink transaction.
//!
//! Timing: the lease is [`LEASE`], renewed every [`RENEW_EVERY`], and a standby looks every
//! [`POLL`]. A frozen leader is replaced within `LEASE + POLL` plus the new session's start; a
//! dead one within `POLL` plus that start.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_postgres::Client;
use tracing::{info, warn};

use crate::pg::PgConfig;
use crate::pipeline::{Context, Health, PipelineError};
use crate::sink::lease::{self, Taken};
use crate::sink::{SinkError, schema};

/// How long a lease lasts without renewal.
pub const LEASE: Duration = Duration::from_millis(2500);
/// How often the leader renews.
pub const RENEW_EVERY: Duration = Duration::from_millis(500);
/// How often a standby looks at the lease.
pub const POLL: Duration = Duration::from_millis(250);

/// 1 while this process is the slot's leader, 0 while it is a standby.
pub const ACTIVE: &str = "sluice_active";

/// Registers the gauge at 0, so it exists from the start.
pub fn describe() {
    metrics::describe_gauge!(
        ACTIVE,
        "1 while this process streams the slot (leader), 0 while it is a standby"
    );
    metrics::gauge!(ACTIVE).set(0.0);
}

/// This process as the lease names it: `host:pid`.
pub fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown-host".to_owned());
    format!("{host}:{}", std::process::id())
}

/// The leadership of a slot, held until it is released or another process takes over.
pub struct Leader {
    /// The fencing epoch every sink commit carries.
    pub epoch: i64,
    fenced: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    renewer: JoinHandle<()>,
}

impl Leader {
    /// Resolves when the renewal found that another process took over.
    pub async fn fenced(&mut self) {
        if self.fenced.wait_for(|f| *f).await.is_err() {
            // The renewer ended without a verdict (released): never resolve.
            std::future::pending::<()>().await;
        }
    }

    /// Ends the lease so that a standby takes over at once (clean exit).
    pub async fn release(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.renewer).await;
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// Waits as a standby until this process holds `slot`'s lease; `None` on shutdown.
pub async fn lead(ctx: &Context) -> Result<Option<Leader>, PipelineError> {
    let slot = ctx.config.slot.as_str();
    let holder = holder_name();
    let mut shutdown = ctx.shutdown.clone();
    let mut client = ctx.sink.connect_sql().await?;
    // The lease table must exist before the first look at it.
    if schema::ensure(&client)
        .await
        .map_err(SinkError::from)?
        .created_sidecar()
    {
        ctx.created_sidecar.store(true, Ordering::Relaxed);
    }
    let mut announced = false;
    loop {
        if *shutdown.borrow() {
            return Ok(None);
        }
        match try_take(&client, slot, &holder).await {
            Ok(Some((taken, locked))) => {
                let leader = become_leader(ctx, client, taken, locked).await;
                return Ok(Some(leader));
            }
            Ok(None) => {
                if !announced {
                    announce_standby(ctx, &client, slot).await;
                    announced = true;
                }
            }
            Err(e) => {
                warn!(error = %e, slot, "standby: cannot read the lease; reconnecting");
                if let Ok(c) = ctx.sink.connect_sql().await {
                    client = c;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// One look at the lease: takes it if it is free. Returns whether this session then holds the
/// advisory lock.
async fn try_take(
    client: &Client,
    slot: &str,
    holder: &str,
) -> Result<Option<(Taken, bool)>, SinkError> {
    let locked = lease::try_lock(client, slot).await?;
    let lease_ms = LEASE.as_millis() as i32;
    match lease::try_take(client, slot, holder, lease_ms, locked).await? {
        Some(taken) => Ok(Some((taken, locked))),
        None => {
            if locked {
                // The leader does not hold the lock (it took over from a frozen process):
                // leave the lock for it, so its own death is noticed at once.
                lease::unlock(client, slot).await?;
            }
            Ok(None)
        }
    }
}

async fn announce_standby(ctx: &Context, client: &Client, slot: &str) {
    set_standby(&ctx.health, true);
    let active = lease::holder(client, slot).await.ok().flatten();
    let (holder, epoch) = active.unwrap_or_default();
    info!(
        slot,
        active = %holder,
        epoch,
        "standby: another sluice is active on this slot; taking over when it stops"
    );
}

fn set_standby(health: &Health, standby: bool) {
    health.standby.store(standby, Ordering::Relaxed);
    metrics::gauge!(ACTIVE).set(if standby { 0.0 } else { 1.0 });
}

/// Terminates what the previous leader left in the sink and starts renewing.
async fn become_leader(ctx: &Context, client: Client, taken: Taken, locked: bool) -> Leader {
    let slot = ctx.config.slot.clone();
    if let Some((pid, started)) = taken.previous_sink {
        // A frozen leader may sit in an open sink transaction whose row locks would block this
        // one's writes. Without the right to end it, those writes wait until it wakes up and
        // is fenced, or its connection times out: said, not fatal.
        match lease::terminate_sink_backend(&client, pid, started).await {
            Ok(true) => info!(slot, pid, "terminated the previous leader's sink session"),
            Ok(false) => {}
            Err(e) => {
                warn!(slot, pid, error = %e, "cannot terminate the previous leader's sink session (needs the same role or pg_signal_backend); its locks are held until it ends")
            }
        }
    }
    info!(
        slot = %slot,
        epoch = taken.epoch,
        previous = taken.previous.as_deref().unwrap_or("none"),
        "leader: this process holds the slot's lease and streams"
    );
    set_standby(&ctx.health, false);
    let (fenced_tx, fenced) = watch::channel(false);
    let (stop, stopped) = oneshot::channel();
    let renewer = tokio::spawn(renew(
        Renewal {
            client,
            sink: ctx.sink.clone(),
            slot,
            epoch: taken.epoch,
            locked,
        },
        fenced_tx,
        stopped,
    ));
    Leader {
        epoch: taken.epoch,
        fenced,
        stop: Some(stop),
        renewer,
    }
}

/// What the renewal task owns.
struct Renewal {
    client: Client,
    sink: PgConfig,
    slot: String,
    epoch: i64,
    /// This session holds the advisory lock.
    locked: bool,
}

impl Renewal {
    /// One renewal; `Ok(false)` when fenced.
    async fn once(&mut self) -> Result<bool, SinkError> {
        if !self.locked {
            self.locked = lease::try_lock(&self.client, &self.slot).await?;
        }
        lease::renew(&self.client, &self.slot, self.epoch, self.locked).await
    }

    async fn reconnect(&mut self) {
        if let Ok(client) = self.sink.connect_sql().await {
            self.client = client;
            self.locked = false;
        }
    }
}

async fn renew(mut r: Renewal, fenced: watch::Sender<bool>, mut stopped: oneshot::Receiver<()>) {
    let mut tick = tokio::time::interval(RENEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stopped => {
                if let Err(e) = lease::release(&r.client, &r.slot, r.epoch).await {
                    warn!(slot = %r.slot, error = %e, "cannot release the lease; a standby takes over when it expires");
                }
                return;
            }
        }
        match r.once().await {
            Ok(true) => {}
            Ok(false) => {
                warn!(slot = %r.slot, epoch = r.epoch, "fenced: another sluice took over this slot; stopping the stream, committing nothing more, and going back to standby");
                let _ = fenced.send(true);
                return;
            }
            Err(e) => {
                // Until the lease expires nobody takes over; after that, the next renewal or
                // sink commit finds the epoch moved on.
                warn!(slot = %r.slot, error = %e, "cannot renew the lease; reconnecting");
                r.reconnect().await;
            }
        }
    }
}

/// Set to `1` by the benchmark (never by users) to measure what fencing costs: sink commits then
/// skip the epoch check, and a stale leader could commit.
pub const UNFENCED_ENV: &str = "SLUICE_BENCHMARK_UNFENCED";

/// Makes `sink` commit only while this process holds the epoch it leads with.
pub async fn fence(ctx: &Context, sink: &mut crate::sink::Sink) -> Result<(), PipelineError> {
    let epoch = ctx.epoch.load(Ordering::Relaxed);
    if epoch == 0 {
        return Ok(());
    }
    if std::env::var(UNFENCED_ENV).is_ok_and(|v| v == "1") {
        warn!("{UNFENCED_ENV}=1: BENCHMARK MODE, sink commits are not fenced");
        return Ok(());
    }
    Ok(sink.fence(epoch).await?)
}

/// Logs the fencing and marks the process a standby again.
pub fn fenced(health: &Arc<Health>, error: &PipelineError) {
    health.streaming.store(false, Ordering::Relaxed);
    set_standby(health, true);
    warn!(error = %error, "fenced: this process is no longer the leader; back to standby");
}
