//! The one wasmtime `Engine` every rules module runs on, and loading a
//! module into it.

use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, EngineWeak, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::{v0_1, v0_2};
use super::cache::{CodeSource, ModuleCache};
use super::error::RulesError;
use super::imports;
use super::limits::RuleLimits;
use super::module::{CodeLoad, RulesModule, WorldPre};
use super::module_file;
use super::scan;
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
    cache: Option<ModuleCache>,
}

/// What one component may hold, whatever its language. The pooling allocator is configured once
/// per engine, before any module is known, and a reload may bring a bigger module than the first;
/// so every component gets room for the largest toolchain measured, and a module over these is
/// refused at load, before compiling, naming the limit. Measured: a Rust `wasm32-wasip2`
/// component has 4–8 core instances, 2 memories and 2 tables; a componentize-py component 38
/// core instances (CPython and its extension modules, dynamically linked into one memory), a
/// ComponentizeJS one about 10.
pub const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 100;
/// Linear memories one component may define. Each pool slot reserves address space (not memory)
/// for the largest memory plus guard pages, about 6 GiB: 4 × [`RuleLimits::max_instances`] slots
/// at the default of 64 reserve 1.5 TiB of the 128 TiB a process has.
pub const MAX_MEMORIES_PER_COMPONENT: u32 = 4;
/// Tables one component may define.
pub const MAX_TABLES_PER_COMPONENT: u32 = 16;

impl RulesEngine {
    /// Builds the engine and starts its epoch ticker, which stops when the
    /// last clone of the engine is dropped.
    pub fn new(limits: RuleLimits) -> Result<Self, RulesError> {
        Self::with_cache(limits, None)
    }

    /// [`RulesEngine::new`] with a compiled-artifact cache: modules found there are loaded
    /// without compiling, modules compiled are stored there.
    pub fn with_cache(limits: RuleLimits, cache: Option<ModuleCache>) -> Result<Self, RulesError> {
        let mut pool = PoolingAllocationConfig::default();
        let n = limits.max_instances;
        pool.total_component_instances(n)
            .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
            .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
            .total_core_instances(n.saturating_mul(MAX_CORE_INSTANCES_PER_COMPONENT))
            .total_memories(n.saturating_mul(MAX_MEMORIES_PER_COMPONENT))
            .total_tables(n.saturating_mul(MAX_TABLES_PER_COMPONENT))
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
                cache,
            }),
        })
    }

    /// The compiled-artifact cache, if any.
    pub fn cache(&self) -> Option<&ModuleCache> {
        self.inner.cache.as_ref()
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
        let outline = scan::outline(wasm).map_err(|err| RulesError::Invalid {
            module: label.clone(),
            reason: err.into(),
        })?;
        imports::check(&outline, &label)?;
        check_size(&outline, &label)?;
        let started = Instant::now();
        let compile = || Component::new(&self.inner.engine, wasm);
        let compiled = match &self.inner.cache {
            Some(cache) => cache.component(&self.inner.engine, &version, compile),
            None => compile().map(|c| (c, CodeSource::CompiledUncached)),
        };
        let (component, source) = compiled.map_err(|reason| RulesError::Invalid {
            module: label.clone(),
            reason,
        })?;
        let code = CodeLoad {
            source,
            elapsed: started.elapsed(),
        };
        tracing::debug!(module = %label, source = source.as_str(), ms = code.elapsed.as_millis() as u64, "rules module code loaded");
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
            code,
        )?;
        Ok(Arc::new(module))
    }
}

/// Refuses a component bigger than the pool's per-component room, naming the limit.
fn check_size(outline: &scan::Outline, module: &str) -> Result<(), RulesError> {
    let over = [
        (
            "core instances",
            outline.core_instances,
            MAX_CORE_INSTANCES_PER_COMPONENT,
        ),
        ("memories", outline.memories, MAX_MEMORIES_PER_COMPONENT),
        ("tables", outline.tables, MAX_TABLES_PER_COMPONENT),
    ]
    .into_iter()
    .find(|(_, has, max)| has > max);
    match over {
        Some((what, has, max)) => Err(RulesError::TooBig {
            module: module.to_owned(),
            what,
            has,
            max,
        }),
        None => Ok(()),
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
