//! What a rules module is allowed to consume.

use std::time::Duration;

/// Resource limits applied to every rules module instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleLimits {
    /// Wall-clock budget for one `evaluate` call. A batch that runs longer is
    /// interrupted (epoch deadline); its changes are then evaluated one at a
    /// time, each under this deadline, within [`RuleLimits::ISOLATION_MISSES`] more misses.
    pub batch_deadline: Duration,
    /// Wall-clock budget for `init`.
    pub init_deadline: Duration,
    /// Linear-memory cap per instance, in bytes.
    pub memory_bytes: usize,
    /// Most bucket ids one change may be kept in; more is an error outcome.
    pub max_buckets_per_change: usize,
    /// Concurrent instances the engine can hold (workers, reloads and
    /// re-instantiations in flight). Sizes the pooling allocator.
    pub max_instances: u32,
    /// Epoch tick: the granularity of deadlines.
    pub epoch_tick: Duration,
    /// Guest `host.log` lines forwarded per second for one module version, across all of
    /// its instances (a trap's re-instantiation gets no fresh budget); the rest are counted
    /// and summarised.
    pub log_lines_per_second: u32,
    /// Largest module file read, in bytes.
    pub max_module_bytes: u64,
}

impl RuleLimits {
    /// Missed deadlines one batch may spend isolating the changes that made it miss its own:
    /// evaluated one at a time, a rule that loops on every change costs three deadlines a
    /// batch, not one per change. Past them, the changes not yet evaluated fail with a reason
    /// that says so. Counted in misses, not in wall-clock time, so that a loaded host (slow
    /// re-instantiation after a trap, slow scheduling) does not fail good changes beside a bad
    /// one.
    pub const ISOLATION_MISSES: u32 = 2;

    /// Time one batch may spend in the guest isolating changes after it missed its deadline:
    /// ten batch deadlines, a backstop for a rule that is slow on every change without ever
    /// missing the deadline. Re-instantiating after a trap is not charged.
    pub fn isolation_budget(&self) -> Duration {
        self.batch_deadline.saturating_mul(10)
    }
}

impl Default for RuleLimits {
    fn default() -> Self {
        RuleLimits {
            batch_deadline: Duration::from_secs(1),
            init_deadline: Duration::from_secs(5),
            memory_bytes: 64 << 20,
            max_buckets_per_change: 64,
            max_instances: 64,
            epoch_tick: Duration::from_millis(5),
            log_lines_per_second: 20,
            max_module_bytes: 256 << 20,
        }
    }
}

/// Bucket ids longer than this are rejected (sync servers index them).
pub const MAX_BUCKET_ID_BYTES: usize = 255;
