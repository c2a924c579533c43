//! The rules runtime end to end: real modules built for wasm32-wasip2,
//! through the `sluice` binary and through the library API.

#[path = "../common/guest.rs"]
mod guest;
#[path = "../common/wasm.rs"]
mod wasm;

mod changes;
mod check;
mod eval_examples;
mod guest_languages;
mod host;
mod misbehaving;
mod relations;
