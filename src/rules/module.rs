//! A loaded, validated module version, from which instances are made.

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre, TypedFunc};

use super::bindings::{WitOutcome, WitRelation, v0_1, v0_2};
use super::cache::CodeSource;
use super::engine::EngineInner;
use super::error::RulesError;
use super::guest_text::guest_text;
use super::instance::RulesInstance;
use super::relations;
use super::state::{InstanceState, LogBudget};
use super::wire::EvaluateParams;
use crate::model::Relation;

pub(crate) type EvaluateFunc = TypedFunc<EvaluateParams<'static>, (Vec<WitOutcome>,)>;

/// A component type-checked against one of the worlds sluice accepts, which tells how to call
/// its `init`.
pub(crate) enum WorldPre {
    /// `sluice:rules/rules@0.2.0`: `init` returns declarations.
    V0_2(v0_2::RulesPre<InstanceState>),
    /// `sluice:rules/rules@0.1.0`: `init` returns nothing, so the module declares no relations.
    V0_1(v0_1::RulesPre<InstanceState>),
}

impl WorldPre {
    /// The newest world whose exports the component has. The two differ only in `init`'s
    /// result, so a component that fits neither is reported with the 0.2.0 world's reason.
    pub(crate) fn new(pre: InstancePre<InstanceState>) -> wasmtime::Result<Self> {
        match v0_2::RulesPre::new(pre.clone()) {
            Ok(pre) => Ok(WorldPre::V0_2(pre)),
            Err(newest) => v0_1::RulesPre::new(pre)
                .map(WorldPre::V0_1)
                .map_err(|_| newest),
        }
    }

    fn version(&self) -> &'static str {
        match self {
            WorldPre::V0_2(_) => "0.2.0",
            WorldPre::V0_1(_) => "0.1.0",
        }
    }

    fn instance_pre(&self) -> &InstancePre<InstanceState> {
        match self {
            WorldPre::V0_2(pre) => pre.instance_pre(),
            WorldPre::V0_1(pre) => pre.instance_pre(),
        }
    }

    /// The instance's typed exports.
    fn bind(
        &self,
        store: &mut Store<InstanceState>,
        instance: &Instance,
    ) -> wasmtime::Result<WorldExports> {
        Ok(match self {
            WorldPre::V0_2(_) => WorldExports::V0_2(v0_2::Rules::new(store, instance)?),
            WorldPre::V0_1(_) => WorldExports::V0_1(v0_1::Rules::new(store, instance)?),
        })
    }
}

/// An instance's exports, typed by its world.
enum WorldExports {
    V0_2(v0_2::Rules),
    V0_1(v0_1::Rules),
}

impl WorldExports {
    /// Calls `init`: the outer error is a trap, the inner one the guest's refusal.
    fn call_init(
        &self,
        store: &mut Store<InstanceState>,
        config: &str,
    ) -> wasmtime::Result<Result<Vec<WitRelation>, String>> {
        Ok(match self {
            WorldExports::V0_2(rules) => rules
                .call_init(store, config)?
                .map(|declarations| declarations.relations),
            WorldExports::V0_1(rules) => rules.call_init(store, config)?.map(|()| Vec::new()),
        })
    }
}

/// How a module's compiled code was obtained, and how long that took.
#[derive(Clone, Copy, Debug)]
pub struct CodeLoad {
    /// From the cache, or compiled.
    pub source: CodeSource,
    /// Time to compile or to load from the cache (not `init`).
    pub elapsed: std::time::Duration,
}

/// One version of a rules module: compiled, type-checked against the world
/// and known to pass `init` with its configuration.
pub struct RulesModule {
    pub(crate) engine: Arc<EngineInner>,
    /// Path or short hash, for messages.
    pub(crate) label: String,
    version: String,
    pre: WorldPre,
    config: String,
    log_budget: Arc<LogBudget>,
    /// Declared by the `init` at load, validated; empty for a 0.1.0 module.
    relations: Vec<Relation>,
    code: CodeLoad,
}

impl RulesModule {
    /// Runs `init` once and validates what it declares: a module that fails either never becomes
    /// usable.
    pub(crate) fn load(
        engine: Arc<EngineInner>,
        label: String,
        version: String,
        pre: WorldPre,
        config: String,
        code: CodeLoad,
    ) -> Result<Self, RulesError> {
        let log_budget = Arc::new(LogBudget::new(&version, engine.limits.log_lines_per_second));
        let mut module = RulesModule {
            engine,
            label,
            version,
            pre,
            config,
            log_budget,
            relations: Vec::new(),
            code,
        };
        let (_, _, declared) = module.start()?;
        module.relations = relations::validate(&module.label, declared)?;
        Ok(module)
    }

    /// The relations the module declared in `init`, in declaration order: how memberships flow
    /// between related rows (see [`Relation`]). Empty for a module of world 0.1.0, and for a
    /// rule of one row. `sluice run` applies them; `sluice eval` shows only each change's own
    /// outcome.
    pub fn relations(&self) -> &[Relation] {
        &self.relations
    }

    /// The version of the world `sluice:rules/rules` the module was built for: `0.2.0` or
    /// `0.1.0`.
    pub fn world_version(&self) -> &str {
        self.pre.version()
    }

    /// Whether the module's code came from the compiled-artifact cache, and how long getting it
    /// took.
    pub fn code_load(&self) -> CodeLoad {
        self.code
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

    /// Instantiates into a new store and runs `init`. A fresh instance after a trap runs `init`
    /// again; its declarations are those of the first (a rule is a function of its
    /// configuration) and are not looked at again.
    pub(crate) fn new_store(&self) -> Result<(Store<InstanceState>, EvaluateFunc), RulesError> {
        self.start().map(|(store, evaluate, _)| (store, evaluate))
    }

    /// [`RulesModule::new_store`], with the relations `init` returned.
    fn start(&self) -> Result<(Store<InstanceState>, EvaluateFunc, Vec<WitRelation>), RulesError> {
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
        let exports = self
            .pre
            .bind(&mut store, &instance)
            .map_err(instantiate_err)?;
        let declared = match exports.call_init(&mut store, &self.config) {
            Ok(Ok(declared)) => declared,
            Ok(Err(message)) => {
                return Err(RulesError::InitFailed {
                    module: self.label.clone(),
                    message: guest_text(&message),
                });
            }
            Err(err) => {
                let said = store
                    .data_mut()
                    .take_guest_said()
                    .map(|said| said.suffix())
                    .unwrap_or_default();
                let reason = match err.downcast_ref::<wasmtime::Trap>() {
                    Some(wasmtime::Trap::Interrupt) => format!(
                        "init did not finish within the init deadline of {:?} (RuleLimits::init_deadline)",
                        limits.init_deadline
                    ),
                    Some(trap) => format!("{}{said}", super::instance::trap_text(&err, *trap)),
                    None => format!("{}{said}", err.root_cause()),
                };
                return Err(RulesError::InitTrapped {
                    module: self.label.clone(),
                    reason: guest_text(&reason),
                });
            }
        };
        // `RulesPre` has already checked `evaluate` against the world; this
        // checks the host's borrowed lowering types, which mirror the same
        // WIT, against it.
        let evaluate = instance
            .get_typed_func::<EvaluateParams<'static>, (Vec<WitOutcome>,)>(&mut store, "evaluate")
            .map_err(|reason| RulesError::WrongWorld {
                module: self.label.clone(),
                reason,
            })?;
        Ok((store, evaluate, declared))
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
