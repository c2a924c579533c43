//! Why a rules module could not be loaded or instantiated.

/// An error loading, validating, initialising or instantiating a rules
/// module. Each message names the module and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot configure the rules engine: {0:#}")]
    Engine(wasmtime::Error),
    #[error("cannot read rules module {path}: {problem}")]
    Read {
        path: String,
        problem: super::module_file::FileProblem,
    },
    #[error(
        "module {module} is not a WebAssembly file (no `\\0asm` header): build it with `cargo build --target wasm32-wasip2`"
    )]
    NotWasm { module: String },
    #[error(
        "module {module} is a core wasm module, not a component: build with --target wasm32-wasip2 (or componentize it with `wasm-tools component new`)"
    )]
    CoreModule { module: String },
    #[error("module {module} is not a valid component: {reason:#}")]
    Invalid {
        module: String,
        reason: wasmtime::Error,
    },
    /// The module imports an interface that is not on the allowlist (see `rules/imports.rs`),
    /// found before compiling. `import` is the first such import, `what` says what it is for,
    /// `others` lists the rest.
    #[error(
        "module {module} imports `{import}`{others}, which sluice does not provide: {what}. Rules run without network, filesystem or clock access; {fix} (a rule may import only sluice:rules/*, wasi:io/*, wasi:cli/* and wasi:random/*)"
    )]
    UnsupportedImport {
        module: String,
        import: String,
        what: &'static str,
        others: String,
        /// What removes the import, in the module's language (a build flag for Python and
        /// JavaScript, whose toolchains add WASI imports by default).
        fix: &'static str,
    },
    /// An allowed interface that does not match what sluice links (another version, a function
    /// sluice's WASI does not have).
    #[error(
        "module {module} imports something sluice does not provide: {reason:#}. Rules get only `sluice:rules/host` and WASI io, cli and random (0.2), without capabilities"
    )]
    Imports {
        module: String,
        reason: wasmtime::Error,
    },
    /// The exports fit neither world; `reason` is the 0.2.0 world's (the newest).
    #[error(
        "module {module} does not export `init` and `evaluate` of world sluice:rules/rules@0.2.0 (nor of @0.1.0): {reason:#}. Build it against this sluice's wit/ (guest SDK sluice-guest-sdk)"
    )]
    WrongWorld {
        module: String,
        reason: wasmtime::Error,
    },
    /// `init` declared `inherit` relations whose tables form a cycle, written as the chain
    /// `a(b_id)->b(a_id)->a` from its smallest table.
    #[error(
        "module {module} declares inherit relations that form a cycle, {cycle}: a row would inherit buckets from itself. Remove one of these relations"
    )]
    RelationCycle { module: String, cycle: String },
    /// `relation` is the relation's [`name`](crate::model::Relation::name).
    #[error(
        "module {module} declares relation `{relation}` without columns: list the child's columns that hold the parent's primary key, in its order"
    )]
    RelationWithoutColumns { module: String, relation: String },
    #[error("module {module} declares relation `{relation}` without a child or parent table")]
    RelationWithoutTable { module: String, relation: String },
    #[error("module {module} declares relation `{relation}` twice")]
    DuplicateRelation { module: String, relation: String },
    /// The component holds more than the instance pool has room for in one component (see
    /// `MAX_*_PER_COMPONENT` in `rules/engine.rs`).
    #[error(
        "module {module} holds {has} {what}, more than the {max} sluice's instance pool has room for in one component"
    )]
    TooBig {
        module: String,
        what: &'static str,
        has: u32,
        max: u32,
    },
    #[error("module {module}: init failed: {message}")]
    InitFailed { module: String, message: String },
    /// `reason` is one line: the trap, never wasmtime's multi-line wasm backtrace.
    #[error("module {module}: init trapped: {reason}")]
    InitTrapped { module: String, reason: String },
    #[error(
        "module {module}: cannot instantiate: {reason:#}. If this says the pool is exhausted, raise RuleLimits::max_instances"
    )]
    Instantiate {
        module: String,
        reason: wasmtime::Error,
    },
    /// The thread that runs the module's calls for `sluice run` could not start or died.
    #[error("module {module}: the rules worker failed: {reason}")]
    Worker { module: String, reason: String },
}
