//! What a rules module may import: checked against the component's import list at load, before
//! anything is linked or instantiated, so that a module reaching for something sluice does not
//! provide is refused with the name of that import rather than a linker error.
//!
//! The allowlist is exactly what a module built with the guest SDK for `wasm32-wasip2` needs
//! (measured: `by-owner`, `multi-tenant`, `soft-delete-filter` and every test fixture import
//! `sluice:rules/{types,host}`, `wasi:io/{error,poll,streams}` and the ten `wasi:cli`
//! interfaces), plus `wasi:random`, which std's `HashMap` seeds itself from (`uses-hashmap`
//! imports `wasi:random/insecure-seed`) and crates such as `getrandom` use. Everything here is
//! linked without capabilities (see `wasi.rs` and `state.rs`). Clocks, the filesystem, sockets
//! and HTTP are not linked at all: a rule is a function of the change alone. std does not force
//! them on a module: only code that calls `std::net`, `std::fs`, `SystemTime::now`,
//! `Instant::now` or `thread::sleep` imports them (`imports-*` fixtures).

use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use super::error::RulesError;

/// Interfaces a rules module may import, without the `@version` suffix (the linker checks the
/// version and every function's type).
const PROVIDED: &[&str] = &[
    // The world's own interfaces, of either version (0.2.0 and 0.1.0 are both linked).
    "sluice:rules/types",
    "sluice:rules/host",
    // std's stdio plumbing: stdin is empty, stdout and stderr discard.
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    // std's startup and process interfaces: no arguments or environment variables; `exit`
    // traps.
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    // std's HashMap seed and `getrandom`: fixed, deterministic values.
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

/// Refuses a component that imports an interface sluice does not provide. Type imports (the
/// named types wit-component imports for the world's exports) need nothing from the host and
/// pass; the linker checks them with everything else.
pub(crate) fn check(
    engine: &Engine,
    component: &Component,
    module: &str,
) -> Result<(), RulesError> {
    let ty = component.component_type();
    let mut refused: Vec<&str> = ty
        .imports(engine)
        .filter(|(_, item)| !matches!(item.ty, ComponentItem::Type(_)))
        .map(|(name, _)| name)
        .filter(|name| !PROVIDED.contains(&unversioned(name)))
        .collect();
    // Name the import that explains the others first: std::net also imports clocks (timeouts)
    // and the filesystem, std::fs imports the wall clock (file times).
    refused.sort_by_key(|name| family(name).0);
    let Some((import, more)) = refused.split_first() else {
        return Ok(());
    };
    Err(RulesError::UnsupportedImport {
        module: module.to_owned(),
        import: (*import).to_owned(),
        what: family(import).1,
        others: if more.is_empty() {
            String::new()
        } else {
            format!(" (and `{}`)", more.join("`, `"))
        },
    })
}

fn unversioned(name: &str) -> &str {
    name.split_once('@').map_or(name, |(name, _)| name)
}

/// The import's rank among refused imports (lowest is named first) and what it is for, in words
/// a rule author recognises.
fn family(import: &str) -> (u8, &'static str) {
    let package = import
        .split_once('/')
        .map_or(import, |(package, _)| package);
    match package {
        "wasi:sockets" => (0, "network access, as used by std::net or a network client"),
        "wasi:http" => (1, "outgoing HTTP"),
        "wasi:filesystem" => (2, "file access, as used by std::fs"),
        "wasi:clocks" => (
            3,
            "the clock, as used by SystemTime::now, Instant::now or thread::sleep; a rule must be a function of the change alone",
        ),
        _ => (4, "an interface sluice does not know"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(unversioned("wasi:io/poll@0.2.6"), "wasi:io/poll");
        assert_eq!(unversioned("table"), "table");
        assert_eq!(
            family("wasi:sockets/tcp@0.2.0"),
            family("wasi:sockets/network")
        );
        assert_eq!(
            family("acme:thing/x@1.0.0").1,
            "an interface sluice does not know"
        );
    }
}
