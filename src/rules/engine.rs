//! The one wasmtime `Engine` every rules module runs on, and loading a
//! module into it.

use std::path::Path;
use std::sync::Arc;
use std::thread;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, EngineWeak, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::{v0_1, v0_2};
use super::error::RulesError;
use super::imports;
use super::limits::RuleLimits;
use super::module::{RulesModule, WorldPre};
use super::module_file;
use super::state::InstanceState;
use super::wasi;

/// The rules runtime: one wasmtime engine (component model, pooling
/// allocator, epoch interruption) with its epoch ticker thread, and the
/// linker that provides the host imports. Cheap to clone; share it.
#[derive(Clone)]
pub struct RulesEngine {
    pub(crate) inner: Arc<EngineInner>,
}

pub(crate) struct EngineInner {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<InstanceState>,
    pub(crate) limits: RuleLimits,
}

impl RulesEngine {
    /// Builds the engine and starts its epoch ticker, which stops when the
    /// last clone of the engine is dropped.
    pub fn new(limits: RuleLimits) -> Result<Self, RulesError> {
        let mut pool = PoolingAllocationConfig::default();
        // A wasm32-wasip2 component holds a few core instances (the
        // program, the WASI adapter, shims) and up to two memories.
        pool.total_component_instances(limits.max_instances)
            .total_core_instances(limits.max_instances.saturating_mul(8))
            .total_memories(limits.max_instances.saturating_mul(2))
            .total_tables(limits.max_instances.saturating_mul(4))
            .max_memory_size(limits.memory_bytes);

        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .concurrency_support(false)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(RulesError::Engine)?;

        let mut linker = Linker::new(&engine);
        wasi::add_to_linker(&mut linker).map_err(RulesError::Engine)?;
        // Both worlds' `host` (and `types`) interfaces: a 0.1.0 module imports
        // `sluice:rules/host@0.1.0`, which semver does not match with 0.2.0.
        v0_2::Rules::add_to_linker::<InstanceState, HasSelf<InstanceState>>(&mut linker, |state| {
            state
        })
        .map_err(RulesError::Engine)?;
        v0_1::Rules::add_to_linker::<InstanceState, HasSelf<InstanceState>>(&mut linker, |state| {
            state
        })
        .map_err(RulesError::Engine)?;

        spawn_ticker(engine.weak(), limits.epoch_tick);
        Ok(RulesEngine {
            inner: Arc::new(EngineInner {
                engine,
                linker,
                limits,
            }),
        })
    }

    /// The limits every instance runs under.
    pub fn limits(&self) -> &RuleLimits {
        &self.inner.limits
    }

    /// Compiles a module (slow: call it from a blocking thread), checks its
    /// imports and exports against the world `sluice:rules/rules@0.2.0` or,
    /// failing that, `@0.1.0`, instantiates it once, runs `init(config)` and
    /// validates the relations it declares. The module's version is the
    /// sha256 of its bytes, in hex.
    pub fn load(&self, wasm: &[u8], config: &str) -> Result<Arc<RulesModule>, RulesError> {
        let version = hex::encode(Sha256::digest(wasm));
        let label = format!("sha256:{}", &version[..12]);
        self.load_labelled(label, version, wasm, config)
    }

    /// [`RulesEngine::load`] for a file; errors name the file. The file is read as
    /// [`RulesEngine::read_module`] reads it.
    pub fn load_file(&self, path: &Path, config: &str) -> Result<Arc<RulesModule>, RulesError> {
        let wasm = self.read_module(path)?;
        self.load_named(&path.display().to_string(), &wasm, config)
    }

    /// The bytes of a module file: a regular file (symlinks resolved) of at most
    /// [`RuleLimits::max_module_bytes`], read within
    /// [`MODULE_READ_TIMEOUT`](super::module_file::MODULE_READ_TIMEOUT).
    pub fn read_module(&self, path: &Path) -> Result<Vec<u8>, RulesError> {
        module_file::read(path, self.inner.limits.max_module_bytes).map_err(|problem| {
            RulesError::Read {
                path: path.display().to_string(),
                problem,
            }
        })
    }

    /// [`RulesEngine::load`] for bytes read elsewhere; errors name the module `label` (its
    /// path), never a hash of bytes that may not be a module at all.
    pub fn load_named(
        &self,
        label: &str,
        wasm: &[u8],
        config: &str,
    ) -> Result<Arc<RulesModule>, RulesError> {
        let version = hex::encode(Sha256::digest(wasm));
        self.load_labelled(label.to_owned(), version, wasm, config)
    }

    fn load_labelled(
        &self,
        label: String,
        version: String,
        wasm: &[u8],
        config: &str,
    ) -> Result<Arc<RulesModule>, RulesError> {
        match wasm.get(..8) {
            Some([0, b'a', b's', b'm', version @ ..]) => {
                // Core modules carry version 1, layer 0; components a
                // different version with layer 1.
                if version == [1, 0, 0, 0] {
                    return Err(RulesError::CoreModule { module: label });
                }
            }
            _ => return Err(RulesError::NotWasm { module: label }),
        }
        let component =
            Component::new(&self.inner.engine, wasm).map_err(|reason| RulesError::Invalid {
                module: label.clone(),
                reason,
            })?;
        imports::check(&self.inner.engine, &component, &label)?;
        let instance_pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|reason| RulesError::Imports {
                module: label.clone(),
                reason,
            })?;
        let pre = WorldPre::new(instance_pre).map_err(|reason| RulesError::WrongWorld {
            module: label.clone(),
            reason,
        })?;
        // A module whose init fails never becomes usable, so find out now; its
        // declarations are taken from this first init.
        let module = RulesModule::load(
            Arc::clone(&self.inner),
            label,
            version,
            pre,
            config.to_owned(),
        )?;
        Ok(Arc::new(module))
    }
}

fn spawn_ticker(engine: EngineWeak, tick: std::time::Duration) {
    thread::Builder::new()
        .name("sluice-rules-epoch".into())
        .spawn(move || {
            loop {
                thread::sleep(tick);
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
        })
        // Without the ticker deadlines would never fire; failing to spawn
        // a thread at startup means the process is out of resources anyway.
        .map(drop)
        .unwrap_or_else(|err| tracing::error!("cannot start the rules epoch ticker: {err}"));
}
