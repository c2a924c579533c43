//! The rules runtime end to end: real modules built for wasm32-wasip2,
//! through the `sluice` binary and through the library API.

#[path = "../common/eval.rs"]
mod eval;
#[path = "../common/wasm.rs"]
mod wasm;

mod changes;
mod check;
mod eval_examples;
mod host;
mod misbehaving;
mod relations;
