//! Host bindings generated from `wit/`: the world's types, the `host`
//! import trait, and `RulesPre`, which type-checks a component's exports
//! against the world.

wasmtime::component::bindgen!({
    path: "wit",
    world: "rules",
});

pub use self::sluice::rules::types::{Level, Outcome as WitOutcome};
