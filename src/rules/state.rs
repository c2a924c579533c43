//! Per-instance store data: the guest's (empty) WASI world, its memory
//! limits and where its log lines go.

use std::time::{Duration, Instant};

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{Level, sluice};
use super::limits::RuleLimits;

/// Everything a store owns for one instance.
pub(crate) struct InstanceState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: MemoryCap,
    pub(crate) log: GuestLog,
}

impl InstanceState {
    pub(crate) fn new(limits: &RuleLimits, version: &str) -> Self {
        let log = GuestLog::new(version, limits.log_lines_per_second);
        // Nothing is granted: no preopens, env, args or network; stdin is
        // empty and stdout/stderr discard (a panic's message reaches the host
        // through `host.log`, see the guest SDK); randomness is fixed so that
        // a rule stays a pure function of its input even if it reaches for
        // it. Clocks, the filesystem and sockets are not even linked (see
        // `wasi.rs`); the settings below only keep the context empty should
        // that ever change.
        let wasi = WasiCtx::builder()
            .secure_random(wasmtime_wasi::Deterministic::new(vec![0]))
            .insecure_random(wasmtime_wasi::Deterministic::new(vec![0]))
            .insecure_random_seed(0)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        InstanceState {
            wasi,
            table: ResourceTable::new(),
            limits: MemoryCap {
                bytes: limits.memory_bytes,
                exceeded: false,
            },
            log,
        }
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl sluice::rules::host::Host for InstanceState {
    fn log(&mut self, level: Level, message: String) {
        self.log.write(level, &message);
    }
}

impl sluice::rules::types::Host for InstanceState {}

/// The store's resource limiter. Unlike `StoreLimits` it remembers that
/// the cap was hit, so the trap can be reported as what it is.
pub(crate) struct MemoryCap {
    bytes: usize,
    pub(crate) exceeded: bool,
}

/// Table growth beyond this is refused; Rust guests use a few hundred.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.bytes {
            self.exceeded = true;
            // Trapping, rather than returning -1 from memory.grow, stops a
            // guest that would otherwise handle the failure and try again.
            wasmtime::bail!("memory would grow to {desired} bytes");
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Guest log lines, forwarded to `tracing` with the module version and
/// rate-limited per instance. The last error line is kept so that a trap
/// can be explained (the SDK logs a panic's message before aborting).
pub(crate) struct GuestLog {
    version: String,
    per_second: u32,
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
    pub(crate) last_error: Option<String>,
}

impl GuestLog {
    fn new(version: &str, per_second: u32) -> Self {
        GuestLog {
            version: version.to_owned(),
            per_second,
            window_start: None,
            in_window: 0,
            suppressed: 0,
            last_error: None,
        }
    }

    pub(crate) fn write(&mut self, level: Level, message: &str) {
        if level == Level::Error {
            self.last_error = Some(truncate(message, 1024).to_owned());
        }
        let now = Instant::now();
        match self.window_start {
            Some(start) if now.duration_since(start) < Duration::from_secs(1) => {}
            _ => {
                if self.suppressed > 0 {
                    tracing::warn!(module = %self.version, suppressed = self.suppressed,
                        "rules module log lines suppressed by the rate limit");
                }
                self.window_start = Some(now);
                self.in_window = 0;
                self.suppressed = 0;
            }
        }
        if self.in_window >= self.per_second {
            self.suppressed += 1;
            return;
        }
        self.in_window += 1;
        let message = truncate(message, 4096);
        let module = self.version.as_str();
        match level {
            Level::Debug => tracing::debug!(target: "sluice::rules::guest", module, "{message}"),
            Level::Info => tracing::info!(target: "sluice::rules::guest", module, "{message}"),
            Level::Warn => tracing::warn!(target: "sluice::rules::guest", module, "{message}"),
            Level::Error => tracing::error!(target: "sluice::rules::guest", module, "{message}"),
        }
    }
}

fn truncate(message: &str, max: usize) -> &str {
    if message.len() <= max {
        return message;
    }
    let mut end = max;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}
