//! A loaded, validated module version, from which instances are made.

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::TypedFunc;

use super::bindings::{Rules, RulesPre, WitOutcome};
use super::engine::EngineInner;
use super::error::RulesError;
use super::guest_text::guest_text;
use super::instance::RulesInstance;
use super::state::{InstanceState, LogBudget};
use super::wire::EvaluateParams;

pub(crate) type EvaluateFunc = TypedFunc<EvaluateParams<'static>, (Vec<WitOutcome>,)>;

/// One version of a rules module: compiled, type-checked against the world
/// and known to pass `init` with its configuration.
pub struct RulesModule {
    pub(crate) engine: Arc<EngineInner>,
    /// Path or short hash, for messages.
    pub(crate) label: String,
    version: String,
    pre: RulesPre<InstanceState>,
    config: String,
    log_budget: Arc<LogBudget>,
}

impl RulesModule {
    pub(crate) fn new(
        engine: Arc<EngineInner>,
        label: String,
        version: String,
        pre: RulesPre<InstanceState>,
        config: String,
    ) -> Self {
        let log_budget = Arc::new(LogBudget::new(&version, engine.limits.log_lines_per_second));
        RulesModule {
            engine,
            label,
            version,
            pre,
            config,
            log_budget,
        }
    }

    /// The relations the module declared in `init` (world 0.2.0); empty for world 0.1.0.
    pub fn relations(&self) -> &[crate::model::Relation] {
        &[]
    }

    /// The sha256 of the module's bytes, in hex.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Reports guest log lines suppressed by the rate limit in a second that has ended.
    pub(crate) fn flush_log(&self) {
        self.log_budget.flush();
    }

    /// The file path (or short hash) messages name the module by.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// A fresh instance, initialised with the module's configuration. Each
    /// worker owns one.
    pub fn instantiate(self: &Arc<Self>) -> Result<RulesInstance, RulesError> {
        let (store, evaluate) = self.new_store()?;
        Ok(RulesInstance::new(Arc::clone(self), store, evaluate))
    }

    /// Instantiates into a new store and runs `init`.
    pub(crate) fn new_store(&self) -> Result<(Store<InstanceState>, EvaluateFunc), RulesError> {
        let limits = &self.engine.limits;
        let mut store = Store::new(
            &self.engine.engine,
            InstanceState::new(limits, Arc::clone(&self.log_budget)),
        );
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(ticks(limits.init_deadline, limits.epoch_tick));

        let instantiate_err = |reason| RulesError::Instantiate {
            module: self.label.clone(),
            reason,
        };
        let instance = self
            .pre
            .instance_pre()
            .instantiate(&mut store)
            .map_err(instantiate_err)?;
        let rules = Rules::new(&mut store, &instance).map_err(instantiate_err)?;
        match rules.call_init(&mut store, &self.config) {
            Ok(Ok(())) => {}
            Ok(Err(message)) => {
                return Err(RulesError::InitFailed {
                    module: self.label.clone(),
                    message: guest_text(&message),
                });
            }
            Err(err) => {
                let reason = match err.downcast_ref::<wasmtime::Trap>() {
                    Some(wasmtime::Trap::Interrupt) => format!(
                        "init did not finish within the init deadline of {:?} (RuleLimits::init_deadline)",
                        limits.init_deadline
                    ),
                    Some(trap) => super::instance::trap_text(&err, *trap),
                    None => err.root_cause().to_string(),
                };
                return Err(RulesError::InitTrapped {
                    module: self.label.clone(),
                    reason: guest_text(&reason),
                });
            }
        }
        // `RulesPre` has already checked `evaluate` against the world; this
        // checks the host's borrowed lowering types, which mirror the same
        // WIT, against it.
        let evaluate = instance
            .get_typed_func::<EvaluateParams<'static>, (Vec<WitOutcome>,)>(&mut store, "evaluate")
            .map_err(|reason| RulesError::WrongWorld {
                module: self.label.clone(),
                reason,
            })?;
        Ok((store, evaluate))
    }
}

/// Epoch ticks covering `deadline`, plus one because the current tick may
/// be about to end.
pub(crate) fn ticks(deadline: std::time::Duration, tick: std::time::Duration) -> u64 {
    let tick = tick.as_nanos().max(1);
    u64::try_from(deadline.as_nanos().div_ceil(tick))
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}
