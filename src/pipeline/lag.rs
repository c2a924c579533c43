//! Replication lag, measured when it is read (a scrape of `/metrics`, the status line), so that
//! it grows while sluice is behind even when the pipeline is busy in one long transaction.
//!
//! - **Seconds**: now minus the commit time of the oldest transaction received and not yet
//!   persisted (Begin carries the commit time, so a huge transaction counts from its first
//!   change, not from its end). 0 when everything received is persisted: an idle publication has
//!   no lag, however long ago its last commit was.
//! - **Bytes**: the highest WAL position received (a change's start, a keepalive's WAL end)
//!   minus the confirmed LSN. It grows while a transaction streams in and falls when it is
//!   persisted. WAL the server has not sent yet is not in it: `sluice status` and the suggested
//!   alert on the slot's retained WAL cover a walsender that is itself behind.
//!
//! The stream loop notes each transaction's Begin ([`LagProbe::begin`]); a transaction is
//! persisted once the confirmed LSN passes its commit record. The probe is process-wide, like the
//! metrics recorder it feeds.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::model::Lsn;
use crate::source::StreamPositions;

/// Lag as measured at one moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lag {
    /// The confirmed LSN: everything before it is persisted.
    pub confirmed: Lsn,
    pub bytes: u64,
    pub seconds: f64,
}

/// What lag is measured from.
#[derive(Default)]
pub struct LagProbe {
    stream: Mutex<Option<StreamPositions>>,
    /// (commit record LSN, commit time in µs since the Unix epoch) of the transactions received
    /// and not known to be persisted, oldest first.
    pending: Mutex<VecDeque<(Lsn, i64)>>,
}

static PROBE: LagProbe = LagProbe {
    stream: Mutex::new(None),
    pending: Mutex::new(VecDeque::new()),
};

/// The process's probe.
pub fn probe() -> &'static LagProbe {
    &PROBE
}

/// A poisoned lock only means a panic elsewhere; the positions it guards are still valid.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LagProbe {
    /// Measures from `positions` from now on (a new session's stream); what the last session
    /// left pending is received again.
    pub fn watch(&self, positions: StreamPositions) {
        *lock(&self.stream) = Some(positions);
        lock(&self.pending).clear();
    }

    /// A transaction that is not yet persisted began: its commit record is at `final_lsn`.
    pub fn begin(&self, final_lsn: Lsn, commit_time_us: i64) {
        let confirmed = lock(&self.stream).as_ref().map(StreamPositions::confirmed);
        let mut pending = lock(&self.pending);
        if let Some(confirmed) = confirmed {
            drop_persisted(&mut pending, confirmed);
        }
        pending.push_back((final_lsn, commit_time_us));
    }

    /// The lag now; `None` before the first session streams.
    pub fn read(&self, now_us: i64) -> Option<Lag> {
        let stream = lock(&self.stream).clone()?;
        let confirmed = stream.confirmed();
        let mut pending = lock(&self.pending);
        drop_persisted(&mut pending, confirmed);
        let seconds = pending.front().map_or(0.0, |&(_, commit_us)| {
            (now_us.saturating_sub(commit_us) as f64 / 1e6).max(0.0)
        });
        Some(Lag {
            confirmed,
            bytes: stream.received().0.saturating_sub(confirmed.0),
            seconds,
        })
    }
}

/// Forgets the transactions whose commit record is before `confirmed`.
fn drop_persisted(pending: &mut VecDeque<(Lsn, i64)>, confirmed: Lsn) {
    while pending.front().is_some_and(|&(lsn, _)| lsn < confirmed) {
        pending.pop_front();
    }
}

/// Microseconds since the Unix epoch, the clock commit times are given in.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Sets the lag gauges from the probe (before `/metrics` is rendered).
pub fn refresh_gauges() {
    if let Some(lag) = probe().read(now_us()) {
        metrics::gauge!(crate::pipeline::metrics::LAG_BYTES).set(lag.bytes as f64);
        metrics::gauge!(crate::pipeline::metrics::LAG_SECONDS).set(lag.seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_counts_until_the_confirmed_lsn_passes_its_commit_record() {
        let mut pending: VecDeque<(Lsn, i64)> = [(Lsn(100), 1), (Lsn(200), 2)].into();
        drop_persisted(&mut pending, Lsn(100));
        assert_eq!(pending.front(), Some(&(Lsn(100), 1)));
        drop_persisted(&mut pending, Lsn(101));
        assert_eq!(pending.front(), Some(&(Lsn(200), 2)));
        drop_persisted(&mut pending, Lsn(300));
        assert!(pending.is_empty());
    }

    #[test]
    fn now_is_in_unix_microseconds() {
        // 2020-01-01 and 2100-01-01: a clock read in another epoch or unit falls outside.
        let now = now_us();
        assert!(
            now > 1_577_836_800_000_000 && now < 4_102_444_800_000_000,
            "{now}"
        );
    }
}
