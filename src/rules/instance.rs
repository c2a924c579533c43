//! One worker's instance of a module: evaluating batches, and isolating
//! the change that traps.

use std::sync::Arc;

use std::time::{Duration, Instant};

use wasmtime::{Store, Trap};

use crate::model::{Change, Outcome};

use super::buckets;
use super::guest_text::guest_text;
use super::limits::RuleLimits;
use super::module::{EvaluateFunc, RulesModule, ticks};
use super::state::{GuestSaid, InstanceState};
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
    /// The guest ran past its deadline: the instance is gone. Bisecting would spend a deadline
    /// per step, so the changes are tried one at a time instead.
    Deadline(String),
    /// The guest trapped: the instance is gone. Traps are quick, so the batch is bisected.
    Trap(String),
    /// The guest returned more or fewer outcomes than changes. The instance is fine; the batch
    /// is bisected like a trap, so that good changes keep their outcomes.
    Count(String),
    /// The batch could not be run at all (no instance); bisecting would not help.
    Whole(String),
}

/// The isolation budget of one batch, from its first deadline miss on: what is left of its
/// missed deadlines and of its time in the guest (see [`RuleLimits::isolation_budget`]).
///
/// [`RuleLimits::isolation_budget`]: super::RuleLimits::isolation_budget
struct Isolation {
    left: Option<(u32, Duration)>,
}

impl Isolation {
    fn spent(&self) -> bool {
        self.left
            .is_some_and(|(misses, time)| misses == 0 || time.is_zero())
    }
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
    ///
    /// Isolation costs at most [`RuleLimits::ISOLATION_MISSES`](super::RuleLimits) more missed
    /// deadlines, and [`RuleLimits::isolation_budget`](super::RuleLimits) in the guest, beyond
    /// the batch's own deadline; changes still unevaluated when it runs out fail with a reason
    /// that says so.
    pub fn evaluate(&mut self, changes: &[Change]) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(changes.len());
        let mut isolation = Isolation { left: None };
        self.evaluate_into(changes, &mut isolation, &mut outcomes);
        self.module.flush_log();
        outcomes
    }

    fn evaluate_into(
        &mut self,
        changes: &[Change],
        isolation: &mut Isolation,
        outcomes: &mut Vec<Outcome>,
    ) {
        if changes.is_empty() {
            return;
        }
        let limits = &self.module.engine.limits;
        let mut deadline = limits.batch_deadline;
        if isolation.spent() {
            let message = self.budget_spent();
            outcomes.extend(changes.iter().map(|_| Outcome::Error(message.clone())));
            return;
        }
        if let Some((_, time)) = isolation.left {
            deadline = deadline.min(time);
        }
        let cut_short = deadline < limits.batch_deadline;
        let (result, in_guest) = self.call(changes, deadline);
        if let Some((misses, time)) = &mut isolation.left {
            *time = time.saturating_sub(in_guest);
            if matches!(result, Err(Failure::Deadline(_))) {
                *misses = misses.saturating_sub(1);
            }
        }
        match result {
            Ok(batch) => outcomes.extend(batch),
            Err(Failure::Whole(message)) => {
                outcomes.extend(changes.iter().map(|_| Outcome::Error(message.clone())));
            }
            Err(Failure::Deadline(_)) if cut_short => {
                let message = self.budget_spent();
                outcomes.extend(changes.iter().map(|_| Outcome::Error(message.clone())));
            }
            Err(Failure::Deadline(message) | Failure::Trap(message) | Failure::Count(message))
                if changes.len() == 1 =>
            {
                outcomes.push(Outcome::Error(message));
            }
            Err(Failure::Deadline(message)) => {
                tracing::debug!(module = %self.module.version(), changes = changes.len(), %message,
                    "rules batch missed its deadline; evaluating its changes one at a time");
                let limits = &self.module.engine.limits;
                isolation
                    .left
                    .get_or_insert((RuleLimits::ISOLATION_MISSES, limits.isolation_budget()));
                for change in changes.chunks(1) {
                    self.evaluate_into(change, isolation, outcomes);
                }
            }
            Err(Failure::Trap(message) | Failure::Count(message)) => {
                tracing::debug!(module = %self.module.version(), changes = changes.len(), %message,
                    "rules batch failed; bisecting to isolate the change");
                let (left, right) = changes.split_at(changes.len() / 2);
                self.evaluate_into(left, isolation, outcomes);
                self.evaluate_into(right, isolation, outcomes);
            }
        }
    }

    fn budget_spent(&self) -> String {
        let limits = &self.module.engine.limits;
        format!(
            "rule not evaluated for this change: its batch missed the deadline of {:?} and \
             isolating the changes that caused it used up the budget of {} more missed \
             deadlines or {:?} in the rule (RuleLimits::isolation_budget)",
            limits.batch_deadline,
            RuleLimits::ISOLATION_MISSES,
            limits.isolation_budget()
        )
    }

    /// Runs one batch under `deadline`, re-instantiating first if a trap discarded the instance.
    /// Also returns the time the batch took, without the re-instantiation.
    fn call(
        &mut self,
        changes: &[Change],
        deadline: Duration,
    ) -> (Result<Vec<Outcome>, Failure>, Duration) {
        if self.live.is_none() {
            match self.module.new_store() {
                Ok((store, evaluate)) => self.live = Some(Live { store, evaluate }),
                Err(err) => {
                    let message = format!("cannot re-instantiate: {err}");
                    return (Err(Failure::Whole(message)), Duration::ZERO);
                }
            }
        }
        let started = Instant::now();
        let result = self.call_live(changes, deadline);
        (result, started.elapsed())
    }

    fn call_live(
        &mut self,
        changes: &[Change],
        deadline: Duration,
    ) -> Result<Vec<Outcome>, Failure> {
        let limits = &self.module.engine.limits;
        let Some(live) = &mut self.live else {
            return Err(Failure::Whole("no instance to call".to_owned()));
        };
        let tables = BatchTables::new(changes);
        let wire_tables = tables.wire_tables();
        let values = wire::wire_values(changes);
        let wire_changes = wire::wire_changes(changes, &tables, &values);

        live.store
            .set_epoch_deadline(ticks(deadline, limits.epoch_tick));
        let state = live.store.data_mut();
        state.log.last_error = None;
        state.stderr.clear();
        state.limits.exceeded = false;
        let result = live
            .evaluate
            .call(&mut live.store, (&wire_tables, &wire_changes));
        match result {
            Ok((batch,)) if batch.len() == changes.len() => Ok(batch
                .into_iter()
                .map(
                    |outcome| match buckets::validate(outcome, limits.max_buckets_per_change) {
                        // Guest text, or host text quoting a guest's bucket id.
                        Outcome::Error(message) => Outcome::Error(guest_text(&message)),
                        kept_or_dropped => kept_or_dropped,
                    },
                )
                .collect()),
            Ok((batch,)) => Err(Failure::Count(format!(
                "module {} returned {} outcomes for {} changes; a rule must return exactly one per change",
                self.module.label,
                batch.len(),
                changes.len()
            ))),
            Err(err) => {
                let state = live.store.data_mut();
                let guest_said = state.take_guest_said();
                let out_of_memory = state.limits.exceeded;
                let message = guest_text(&describe_trap(&err, guest_said, out_of_memory, limits));
                // The store may hold a half-updated guest heap: never reuse it.
                self.live = None;
                if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) && !out_of_memory {
                    Err(Failure::Deadline(message))
                } else {
                    Err(Failure::Trap(message))
                }
            }
        }
    }
}

fn describe_trap(
    err: &wasmtime::Error,
    guest_said: Option<GuestSaid>,
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
    let said = |text: String| match &guest_said {
        Some(said) => format!("{text}{}", said.suffix()),
        None => text,
    };
    match (guest_said.as_ref(), trap) {
        // The guest SDK logs a panic's message just before aborting.
        (Some(GuestSaid::Logged(message)), Some(Trap::UnreachableCodeReached))
            if message.starts_with("rule panicked") =>
        {
            message.clone()
        }
        (_, Some(trap)) => said(format!("rule trapped: {}", trap_text(err, *trap))),
        (_, None) => said(format!("rule trapped: {}", err.root_cause())),
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
