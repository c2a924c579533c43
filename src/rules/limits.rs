//! What a rules module is allowed to consume.

use std::time::Duration;

/// Resource limits applied to every rules module instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleLimits {
    /// Wall-clock budget for one `evaluate` call. A batch that runs longer is
    /// interrupted (epoch deadline) and then bisected.
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
    /// Guest `host.log` lines forwarded per instance
    /// per second; the rest are counted and summarised.
    pub log_lines_per_second: u32,
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
        }
    }
}

/// Bucket ids longer than this are rejected (sync servers index them).
pub const MAX_BUCKET_ID_BYTES: usize = 255;
