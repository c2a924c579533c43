//! Per-instance store data: the guest's (empty) WASI world, its memory
//! limits and where its log lines go.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{Level, v0_1, v0_2};
use super::guest_text::guest_text;
use super::limits::RuleLimits;
use super::stderr_tail::StderrTail;

/// Everything a store owns for one instance.
pub(crate) struct InstanceState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: MemoryCap,
    pub(crate) log: GuestLog,
    /// The end of the guest's stderr, which explains a trap the guest did not log.
    pub(crate) stderr: StderrTail,
}

impl InstanceState {
    pub(crate) fn new(limits: &RuleLimits, log_budget: Arc<LogBudget>) -> Self {
        let log = GuestLog::new(log_budget);
        let stderr = StderrTail::default();
        // Nothing is granted: no preopens, env, args or network; stdin is
        // empty and stdout discards; stderr keeps its last few KiB, read only
        // to explain a trap (a Python or JavaScript component prints an
        // uncaught exception there; a Rust panic's message reaches the host
        // through `host.log`, see the guest SDK); randomness is fixed so that
        // a rule stays a pure function of its input even if it reaches for
        // it. Clocks, the filesystem and sockets are not even linked (see
        // `wasi.rs`); the settings below only keep the context empty should
        // that ever change.
        let wasi = WasiCtx::builder()
            .secure_random(wasmtime_wasi::Deterministic::new(vec![0]))
            .insecure_random(wasmtime_wasi::Deterministic::new(vec![0]))
            .insecure_random_seed(0)
            .stderr(stderr.clone())
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
            stderr,
        }
    }

    /// What the guest said before failing: its last error-level `host.log` line, else the last
    /// line it wrote to stderr. Taken, so the next call starts without it.
    pub(crate) fn take_guest_said(&mut self) -> Option<GuestSaid> {
        if let Some(line) = self.log.last_error.take() {
            return Some(GuestSaid::Logged(line));
        }
        self.stderr
            .last_line()
            .map(|line| GuestSaid::Stderr(guest_text(&line)))
    }
}

/// The guest's own words about a failure, from where they came.
pub(crate) enum GuestSaid {
    /// Its last error-level `host.log` line.
    Logged(String),
    /// The last line it wrote to stderr.
    Stderr(String),
}

impl GuestSaid {
    /// `; the module logged: ...` or `; the module wrote to stderr: ...`, to follow a trap.
    pub(crate) fn suffix(&self) -> String {
        match self {
            GuestSaid::Logged(line) => format!("; the module logged: {line}"),
            GuestSaid::Stderr(line) => format!("; the module wrote to stderr: {line}"),
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

impl v0_2::sluice::rules::host::Host for InstanceState {
    fn log(&mut self, level: Level, message: String) {
        self.log.write(level, &message);
    }
}

impl v0_2::sluice::rules::types::Host for InstanceState {}

/// The same `host.log` for modules of the 0.1.0 world, whose `level` is its own generated type.
impl v0_1::sluice::rules::host::Host for InstanceState {
    fn log(&mut self, level: v0_1::sluice::rules::types::Level, message: String) {
        use v0_1::sluice::rules::types::Level as Old;
        let level = match level {
            Old::Debug => Level::Debug,
            Old::Info => Level::Info,
            Old::Warn => Level::Warn,
            Old::Error => Level::Error,
        };
        self.log.write(level, &message);
    }
}

impl v0_1::sluice::rules::types::Host for InstanceState {}

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

/// One module version's budget of forwarded `host.log` lines, shared by every instance of it:
/// a rule that logs and then traps gets a fresh instance for each bisection step, and must not
/// get a fresh budget with it.
pub(crate) struct LogBudget {
    version: String,
    per_second: u32,
    window: Mutex<LogWindow>,
}

#[derive(Default)]
struct LogWindow {
    start: Option<Instant>,
    forwarded: u32,
    suppressed: u64,
}

impl LogBudget {
    pub(crate) fn new(version: &str, per_second: u32) -> Self {
        LogBudget {
            version: version.to_owned(),
            per_second,
            window: Mutex::new(LogWindow::default()),
        }
    }

    /// Whether one more line may be forwarded now. The first line over the limit says so; the
    /// count of suppressed lines is reported when the second ends.
    fn admit(&self) -> bool {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if w.start
            .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(1))
        {
            self.report(&mut w);
            *w = LogWindow {
                start: Some(now),
                ..LogWindow::default()
            };
        }
        if w.forwarded < self.per_second {
            w.forwarded += 1;
            return true;
        }
        if w.suppressed == 0 {
            tracing::warn!(module = %self.version, limit = self.per_second,
                "rules module logs more than {} lines a second; the rest of this second's are suppressed",
                self.per_second);
        }
        w.suppressed += 1;
        false
    }

    /// Reports the lines suppressed in a second that has ended. Called after every rules call,
    /// so the count appears even when the module stops logging.
    pub(crate) fn flush(&self) {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.suppressed > 0
            && w.start
                .is_some_and(|start| start.elapsed() >= Duration::from_secs(1))
        {
            self.report(&mut w);
        }
    }

    fn report(&self, w: &mut LogWindow) {
        if w.suppressed > 0 {
            tracing::warn!(module = %self.version, suppressed = w.suppressed,
                "{} rules module log lines were suppressed by the rate limit", w.suppressed);
            w.suppressed = 0;
        }
    }
}

/// Guest log lines of one instance, forwarded to `tracing` under the target
/// `sluice::rules::guest` with the module version, within the version's [`LogBudget`]. Each is
/// one bounded line (see `guest_text`). The last error line is kept so that a trap can be
/// explained (the SDK logs a panic's message before aborting).
pub(crate) struct GuestLog {
    budget: Arc<LogBudget>,
    pub(crate) last_error: Option<String>,
}

impl GuestLog {
    fn new(budget: Arc<LogBudget>) -> Self {
        GuestLog {
            budget,
            last_error: None,
        }
    }

    pub(crate) fn write(&mut self, level: Level, message: &str) {
        let text = guest_text(message);
        let admitted = self.budget.admit();
        let module = self.budget.version.as_str();
        if admitted {
            match level {
                Level::Debug => tracing::debug!(target: "sluice::rules::guest", module, "{text}"),
                Level::Info => tracing::info!(target: "sluice::rules::guest", module, "{text}"),
                Level::Warn => tracing::warn!(target: "sluice::rules::guest", module, "{text}"),
                Level::Error => tracing::error!(target: "sluice::rules::guest", module, "{text}"),
            }
        }
        if level == Level::Error {
            self.last_error = Some(text);
        }
    }
}
