//! Host bindings generated from the WIT worlds a module may be built for.
//!
//! `v0_2` is `wit/` (`sluice:rules@0.2.0`), `v0_1` the frozen `wit/v0.1.0/` (wit-parser reads
//! only a package directory's own `*.wit` files and its `deps/`, so the frozen copy is not part
//! of `wit/`'s package). Each gives its world's `host` import trait and a `RulesPre` that
//! type-checks a component's exports against that world; a module is loaded through the first
//! that accepts it (see `module.rs`). `evaluate` is the same function in both, and its wire
//! types (`wire.rs`, [`WitOutcome`]) type-check structurally against either.

/// `sluice:rules/rules@0.2.0`: `init` returns declarations.
pub(crate) mod v0_2 {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "rules",
    });
}

/// `sluice:rules/rules@0.1.0`, frozen: `init` returns nothing.
pub(crate) mod v0_1 {
    wasmtime::component::bindgen!({
        path: "wit/v0.1.0",
        world: "rules",
    });
}

pub use self::v0_2::sluice::rules::types::{
    Flow as WitFlow, Level, Outcome as WitOutcome, Relation as WitRelation,
};
