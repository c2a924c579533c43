//! Rules in Python and JavaScript: the SDKs' native tests, their examples built into
//! components and run through `sluice eval` and `sluice run`.
//!
//! A binary of its own: the first run builds six components with componentize-py and jco and
//! compiles them (minutes of CPU on two cores), and cargo runs test binaries one after another,
//! so that work never overlaps the deadline-sensitive tests of the other suites.

#[path = "../common/eval.rs"]
mod eval;
#[path = "../common/guest.rs"]
mod guest;
#[path = "../common/pg.rs"]
mod pg;
#[allow(dead_code)]
#[path = "../run/support.rs"]
mod support;
#[allow(dead_code)]
#[path = "../common/wasm.rs"]
mod wasm;

mod languages;
mod reload;
