//! One worker's instance of a module: evaluating batches, and isolating
//! the change that traps.

use std::sync::Arc;

use wasmtime::{Store, Trap};

use crate::model::{Change, Outcome};

use super::buckets;
use super::module::{EvaluateFunc, RulesModule, ticks};
use super::state::InstanceState;
use super::wire::{self, BatchTables};

/// An instantiated module, owned by one worker. After a trap it replaces
/// itself with a fresh instance (and re-runs `init`).
pub struct RulesInstance {
    module: Arc<RulesModule>,
    live: Option<Live>,
}

struct Live {
    store: Store<InstanceState>,
    evaluate: EvaluateFunc,
}

/// Why a call produced no outcomes.
enum Failure {
    /// The guest trapped or ran past its deadline: the instance is gone.
    Trap(String),
    /// The batch could not be run at all (no instance, wrong outcome
    /// count); bisecting would not help.
    Whole(String),
}

impl RulesInstance {
    pub(crate) fn new(
        module: Arc<RulesModule>,
        store: Store<InstanceState>,
        evaluate: EvaluateFunc,
    ) -> Self {
        RulesInstance {
            module,
            live: Some(Live { store, evaluate }),
        }
    }

    /// The module version this instance runs.
    pub fn module(&self) -> &Arc<RulesModule> {
        &self.module
    }

    /// One outcome per change, in order. Never fails as a whole: a change
    /// the rule cannot handle (error, invalid buckets, trap, deadline) gets
    /// an `Outcome::Error` and its neighbours get their real outcomes.
    pub fn evaluate(&mut self, changes: &[Change]) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(changes.len());
        self.evaluate_into(changes, &mut outcomes);
        outcomes
    }

    fn evaluate_into(&mut self, changes: &[Change], outcomes: &mut Vec<Outcome>) {
        if changes.is_empty() {
            return;
        }
        match self.call(changes) {
            Ok(batch) => outcomes.extend(batch),
            Err(Failure::Whole(message)) => {
                outcomes.extend(changes.iter().map(|_| Outcome::Error(message.clone())));
            }
            Err(Failure::Trap(message)) if changes.len() == 1 => {
                outcomes.push(Outcome::Error(message));
            }
            Err(Failure::Trap(message)) => {
                tracing::debug!(module = %self.module.version(), changes = changes.len(), %message,
                    "rules batch trapped; bisecting to isolate the change");
                let (left, right) = changes.split_at(changes.len() / 2);
                self.evaluate_into(left, outcomes);
                self.evaluate_into(right, outcomes);
            }
        }
    }

    fn call(&mut self, changes: &[Change]) -> Result<Vec<Outcome>, Failure> {
        let limits = &self.module.engine.limits;
        let live = match &mut self.live {
            Some(live) => live,
            None => {
                let (store, evaluate) = self
                    .module
                    .new_store()
                    .map_err(|err| Failure::Whole(format!("cannot re-instantiate: {err}")))?;
                self.live.insert(Live { store, evaluate })
            }
        };

        let tables = BatchTables::new(changes);
        let wire_tables = tables.wire_tables();
        let values = wire::wire_values(changes);
        let wire_changes = wire::wire_changes(changes, &tables, &values);

        live.store
            .set_epoch_deadline(ticks(limits.batch_deadline, limits.epoch_tick));
        let state = live.store.data_mut();
        state.log.last_error = None;
        state.limits.exceeded = false;
        let result = live
            .evaluate
            .call(&mut live.store, (&wire_tables, &wire_changes));
        match result {
            Ok((batch,)) if batch.len() == changes.len() => Ok(batch
                .into_iter()
                .map(|outcome| buckets::validate(outcome, limits.max_buckets_per_change))
                .collect()),
            Ok((batch,)) => Err(Failure::Whole(format!(
                "module {} returned {} outcomes for {} changes; a rule must return exactly one per change",
                self.module.label,
                batch.len(),
                changes.len()
            ))),
            Err(err) => {
                let state = live.store.data_mut();
                let guest_said = state.log.last_error.take();
                let out_of_memory = state.limits.exceeded;
                let message = describe_trap(&err, guest_said, out_of_memory, limits);
                // The store may hold a half-updated guest heap: never reuse it.
                self.live = None;
                Err(Failure::Trap(message))
            }
        }
    }
}

fn describe_trap(
    err: &wasmtime::Error,
    guest_said: Option<String>,
    out_of_memory: bool,
    limits: &super::RuleLimits,
) -> String {
    let trap = err.downcast_ref::<Trap>();
    if out_of_memory {
        return format!(
            "rule exceeded the memory cap of {} bytes (RuleLimits::memory_bytes)",
            limits.memory_bytes
        );
    }
    if trap == Some(&Trap::Interrupt) {
        return format!(
            "rule did not finish within the batch deadline of {:?} (RuleLimits::batch_deadline)",
            limits.batch_deadline
        );
    }
    match (guest_said, trap) {
        // The guest SDK logs a panic's message just before aborting.
        (Some(message), Some(Trap::UnreachableCodeReached))
            if message.starts_with("rule panicked") =>
        {
            message
        }
        (Some(message), Some(trap)) => {
            format!(
                "rule trapped: {}; the module logged: {message}",
                trap_text(err, *trap)
            )
        }
        (Some(message), None) => {
            format!(
                "rule trapped: {}; the module logged: {message}",
                err.root_cause()
            )
        }
        (None, Some(trap)) => format!("rule trapped: {}", trap_text(err, *trap)),
        (None, None) => format!("rule trapped: {}", err.root_cause()),
    }
}

/// A trap as one line. An out-of-bounds access deep in a recursion is said to be what it most
/// likely is: Rust keeps its stack in linear memory, below the data, so a guest that recurses
/// too deep runs its stack pointer past address zero and faults there, instead of hitting
/// wasmtime's own stack limit (`Trap::StackOverflow`).
pub(crate) fn trap_text(err: &wasmtime::Error, trap: Trap) -> String {
    if trap == Trap::MemoryOutOfBounds
        && let Some(functions) = recursion(err)
    {
        return format!(
            "stack overflow, probably (the innermost {RECURSION_FRAMES} calls go round {functions} function{}): {trap}",
            if functions == 1 { "" } else { "s" }
        );
    }
    trap.to_string()
}

/// Frames of the trap's backtrace looked at; wasmtime captures 20 by default.
const RECURSION_FRAMES: usize = 16;

/// How many distinct functions the innermost [`RECURSION_FRAMES`] frames of the trap's backtrace
/// cycle through, if that is few enough (at most 3) to call it a recursion.
fn recursion(err: &wasmtime::Error) -> Option<usize> {
    let frames = err.downcast_ref::<wasmtime::WasmBacktrace>()?.frames();
    let innermost = frames.get(..RECURSION_FRAMES)?;
    let mut functions: Vec<&wasmtime::FrameInfo> = Vec::new();
    for frame in innermost {
        let seen = functions.iter().any(|f| {
            f.func_index() == frame.func_index()
                && wasmtime::Module::same(f.module(), frame.module())
        });
        if !seen {
            functions.push(frame);
        }
    }
    (functions.len() <= 3).then_some(functions.len())
}
