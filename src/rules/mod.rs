//! The rules stage: runs the user's WebAssembly rules module on batches of
//! changes and returns one [`Outcome`](crate::model::Outcome) per change.
//!
//! # Shape
//!
//! - [`RulesEngine`]: one wasmtime engine for the process (component model,
//!   pooling allocator, epoch interruption, `concurrency_support(false)`),
//!   an epoch ticker thread, and a linker with the host imports: the
//!   world's `host.log` and the WASI io, cli and random interfaces
//!   `wasm32-wasip2` std needs, without capabilities (no env, args or stdio;
//!   fixed randomness). Clocks, filesystem, sockets and HTTP are not linked:
//!   a module importing anything off the allowlist in `imports.rs` is
//!   refused at load, naming the import.
//! - [`RulesModule`]: one module version (sha256 of its bytes), compiled,
//!   type-checked against `sluice:rules/rules@0.1.0` through `InstancePre`,
//!   and known to pass `init` with its configuration.
//! - [`RulesInstance`]: a store plus instance, owned by one worker.
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
//! # Traps and bisection
//!
//! A trap (a panic, which is an abort under `panic = "abort"`; memory
//! exhaustion; the deadline) can leave the guest's heap in any state, so
//! the instance that trapped is never called again: it is dropped and the
//! next call instantiates a fresh one from the `InstancePre` and re-runs
//! `init`. The batch that trapped has no outcomes, and we do not know which
//! change caused it, so it is split in half and each half is evaluated
//! again, recursively. A half that succeeds yields its real outcomes; a
//! half of one change that still traps yields `Outcome::Error` with the
//! trap's reason (and the guest's last error log line, which carries a
//! panic's message). Outcomes stay in input order.
//!
//! Cost: with one bad change in a batch of `n`, there are about
//! `2·log2(n)` extra calls and `log2(n) + 1` traps. For a rule that loops
//! forever each trap costs one deadline, so giving up on that change takes
//! at most `(ceil(log2 n) + 1) · batch_deadline` (10 deadlines for 512),
//! and all other changes of the batch still get their outcomes. A rule that
//! fails on many changes degrades towards one call per change, never
//! worse. Errors the rule *returns* (`Outcome::Error` from the guest) are
//! not traps and cost nothing extra.

mod bindings;
mod buckets;
mod engine;
mod error;
mod imports;
mod instance;
pub mod jsonl;
mod limits;
mod module;
mod state;
mod wasi;
mod wire;

pub use engine::RulesEngine;
pub use error::RulesError;
pub use instance::RulesInstance;
pub use limits::{MAX_BUCKET_ID_BYTES, RuleLimits};
pub use module::RulesModule;
