//! The rules stage: runs the user's WebAssembly rules module on batches of
//! changes and returns one [`Outcome`](crate::model::Outcome) per change.
//!
//! # Shape
//!
//! - [`RulesEngine`]: one wasmtime engine for the process (component model,
//!   pooling allocator, epoch interruption, `concurrency_support(false)`),
//!   an epoch ticker thread, and a linker with the host imports: the
//!   world's `host.log` (under both `sluice:rules/host@0.2.0` and `@0.1.0`) and the WASI io, cli and random interfaces
//!   `wasm32-wasip2` std needs, without capabilities (no env, args or stdio;
//!   fixed randomness). Clocks, filesystem, sockets and HTTP are not linked:
//!   a module importing anything off the allowlist in `imports.rs` is
//!   refused at load, naming the import.
//! - Loading: the component's imports, producers and size are read first
//!   (`scan.rs`, no compile), so a refused import costs milliseconds and names
//!   the build flag for a Python or JavaScript toolchain; the compiled code
//!   then comes from the [`ModuleCache`] when it holds it, else is compiled
//!   and stored there.
//! - [`RulesModule`]: one module version (sha256 of its bytes), compiled,
//!   type-checked through `InstancePre` against `sluice:rules/rules@0.2.0`
//!   or, failing that, the frozen `@0.1.0` (whose modules load unchanged),
//!   known to pass `init` with its configuration, with the
//!   [`Relation`](crate::model::Relation)s its `init` declared (0.2.0 only),
//!   validated: no `inherit` cycle, no relation without columns or declared
//!   twice.
//! - [`RulesInstance`]: a store plus instance, owned by one worker.
//! - [`RulesWorker`]: a `RulesInstance` on a thread of its own, for `sluice run`.
//!
//! # Limits
//!
//! Each `evaluate` call runs under an epoch deadline
//! ([`RuleLimits::batch_deadline`]); each store under a memory cap
//! (`StoreLimits`, growth beyond it traps). Bucket ids are validated on the
//! host (non-empty, at most 255 bytes, no control characters, duplicates
//! removed, at most [`RuleLimits::max_buckets_per_change`] per change); a
//! bad outcome becomes `Outcome::Error` for that change only.
//!
//! # Traps, deadlines and isolation
//!
//! A trap (a panic, which is an abort under `panic = "abort"`; memory
//! exhaustion; the deadline) can leave the guest's heap in any state, so
//! the instance that trapped is never called again: it is dropped and the
//! next call instantiates a fresh one from the `InstancePre` and re-runs
//! `init`. The batch that trapped has no outcomes, and we do not know which
//! change caused it:
//! - after a trap other than the deadline, or a wrong number of outcomes,
//!   the batch is split in half and each half is evaluated again,
//!   recursively. Traps are quick, so this costs about `2·log2(n)` calls for
//!   one bad change in `n`;
//! - after a missed deadline, bisecting would spend a deadline per step
//!   (`2n − 1` for a rule that loops on every change: 17 minutes for one
//!   batch at the defaults). The changes are evaluated one at a time instead,
//!   each under the batch deadline, within an isolation budget of two more
//!   missed deadlines per batch ([`RuleLimits::ISOLATION_MISSES`]) and ten
//!   deadlines of time in the guest ([`RuleLimits::isolation_budget`]); the
//!   changes still unevaluated when it runs out fail with a reason that says
//!   so. A rule that loops on every change therefore costs three deadlines a
//!   batch. Misses are counted rather than wall-clock time so that a loaded
//!   host does not fail good changes beside a bad one.
//!
//! A single change that still fails yields `Outcome::Error` with the reason
//! (and the guest's last error log line, which carries a panic's message).
//! Outcomes stay in input order. Errors the rule *returns* are not traps and
//! cost nothing extra.
//!
//! # Guest text and guest output
//!
//! Every piece of text from a guest (error outcomes, init errors, `host.log`
//! lines, trap messages quoting them) goes through [`guest_text`]: at most
//! [`MAX_GUEST_TEXT_BYTES`], no NUL, one line. Guest stdout is discarded,
//! stderr is kept only as its last 4 KiB, whose last line explains a trap the
//! guest did not log (a Python or JavaScript uncaught exception), and stdin is
//! empty; in `sluice run` every guest call runs on
//! the [`RulesWorker`]'s own thread, never on an async runtime's.

mod bindings;
mod buckets;
mod cache;
mod engine;
mod error;
mod guest_text;
mod imports;
mod instance;
pub mod jsonl;
mod limits;
mod module;
pub mod module_file;
mod relations;
mod scan;
mod state;
mod stderr_tail;
mod wasi;
mod wire;
mod worker;

pub use cache::{CacheError, CodeSource, ModuleCache};
pub use engine::{
    MAX_CORE_INSTANCES_PER_COMPONENT, MAX_MEMORIES_PER_COMPONENT, MAX_TABLES_PER_COMPONENT,
    RulesEngine,
};
pub use error::RulesError;
pub use guest_text::{MAX_GUEST_TEXT_BYTES, guest_text};
pub use instance::RulesInstance;
pub use limits::{MAX_BUCKET_ID_BYTES, RuleLimits};
pub use module::{CodeLoad, RulesModule};
pub use worker::RulesWorker;
