//! What a rules module may import: checked against the component's import list at load, read
//! before compiling (see `scan.rs`), so that a module reaching for something sluice does not
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

use super::error::RulesError;
use super::scan::{Language, Outline};

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

/// Refuses a component that imports an interface sluice does not provide, from the import list
/// read before compiling (see `scan.rs`). For a Python or JavaScript component the message says
/// which build flag removes the imports its toolchain adds by default.
pub(crate) fn check(outline: &Outline, module: &str) -> Result<(), RulesError> {
    let language = outline.language();
    let mut refused: Vec<&str> = outline
        .imports
        .iter()
        .map(String::as_str)
        .filter(|name| !PROVIDED.contains(&unversioned(name)))
        .collect();
    // Name the import that explains the others first: std::net also imports clocks (timeouts)
    // and the filesystem, std::fs imports the wall clock (file times).
    refused.sort_by_key(|name| family(name, language).0);
    let Some((import, more)) = refused.split_first() else {
        return Ok(());
    };
    Err(RulesError::UnsupportedImport {
        module: module.to_owned(),
        import: (*import).to_owned(),
        what: family(import, language).1,
        others: if more.is_empty() {
            String::new()
        } else {
            format!(" (and `{}`)", more.join("`, `"))
        },
        fix: fix(language),
    })
}

/// What removes the imports, in the module's language.
fn fix(language: Language) -> &'static str {
    match language {
        Language::Python => {
            "componentize-py adds these imports unless told not to: build with `componentize-py ... componentize --stub-wasi ...`, and remove any code that needs them"
        }
        Language::JavaScript => {
            "ComponentizeJS adds these imports unless told not to: build with `jco componentize ... -d stdio random clocks http fetch-event` (componentize-js: `disableFeatures: [\"stdio\", \"random\", \"clocks\", \"http\", \"fetch-event\"]`), and remove any code that needs them"
        }
        Language::Rust | Language::Unknown => "remove the code or dependency that uses it",
    }
}

fn unversioned(name: &str) -> &str {
    name.split_once('@').map_or(name, |(name, _)| name)
}

/// The import's rank among refused imports (lowest is named first) and what it is for, in words
/// a rule author recognises: Rust's std names only for a module that is (or may be) Rust.
fn family(import: &str, language: Language) -> (u8, &'static str) {
    let package = import
        .split_once('/')
        .map_or(import, |(package, _)| package);
    let rust = matches!(language, Language::Rust | Language::Unknown);
    match (package, rust) {
        ("wasi:sockets", true) => (0, "network access, as used by std::net or a network client"),
        ("wasi:sockets", false) => (0, "network access"),
        ("wasi:http", _) => (1, "outgoing HTTP"),
        ("wasi:filesystem", true) => (2, "file access, as used by std::fs"),
        ("wasi:filesystem", false) => (2, "file access"),
        ("wasi:clocks", true) => (
            3,
            "the clock, as used by SystemTime::now, Instant::now or thread::sleep; a rule must be a function of the change alone",
        ),
        ("wasi:clocks", false) => (
            3,
            "the clock; a rule must be a function of the change alone",
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
            family("wasi:sockets/tcp@0.2.0", Language::Rust),
            family("wasi:sockets/network", Language::Rust)
        );
        assert_eq!(
            family("acme:thing/x@1.0.0", Language::Rust).1,
            "an interface sluice does not know"
        );
    }
}
