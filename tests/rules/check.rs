//! `sluice check` accepting good modules and rejecting each kind of bad one
//! with a one-line reason.

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::wasm;

/// Runs `sluice check`, returning (stdout, stderr, success).
fn check(module: &Path, config: Option<&Path>) -> (String, String, bool) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command.arg("check").arg("--module").arg(module);
    if let Some(config) = config {
        command.arg("--rules-config").arg(config);
    }
    let output = command.output().unwrap();
    (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
        output.status.success(),
    )
}

/// Writes `wat` text, compiled to binary, into a temp file.
fn wat_file(dir: &tempfile::TempDir, name: &str, wat: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, wat::parse_str(wat).unwrap()).unwrap();
    path
}

fn rejected(module: &Path) -> String {
    let (out, err, ok) = check(module, None);
    assert!(!ok, "accepted {}: {out}", module.display());
    assert_eq!(out, "");
    assert_eq!(err.lines().count(), 1, "one-line reason expected: {err}");
    err
}

#[test]
fn accepts_a_good_module_and_prints_its_version() {
    let path = wasm::module("by-owner");
    let sha = hex::encode(Sha256::digest(std::fs::read(&path).unwrap()));
    let (out, err, ok) = check(&path, None);
    assert!(ok, "{err}");
    assert_eq!(out, format!("ok {} sha256:{sha}\n", path.display()));
}

#[test]
fn runs_init_with_the_rules_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tenants.toml");
    std::fs::write(&config, "[tenant_columns]\nitems = \"org_id\"\n").unwrap();
    let (_, err, ok) = check(&wasm::module("multi-tenant"), Some(&config));
    assert!(ok, "{err}");

    std::fs::write(&config, "[tenant_columns]\n").unwrap();
    let (_, err, ok) = check(&wasm::module("multi-tenant"), Some(&config));
    assert!(!ok);
    assert_eq!(
        err.lines().next().unwrap(),
        format!(
            "error: module {}: init failed: multi-tenant config names no tables, for example:",
            wasm::module("multi-tenant").display()
        )
    );
}

#[test]
fn rejects_a_file_that_is_not_wasm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.wasm");
    std::fs::write(&path, "#!/bin/sh\necho not wasm\n").unwrap();
    assert_eq!(
        rejected(&path),
        format!(
            "error: module {} is not a WebAssembly file (no `\\0asm` header): build it with `cargo build --target wasm32-wasip2`\n",
            path.display()
        )
    );
}

#[test]
fn rejects_a_missing_file() {
    let path = Path::new("/nonexistent/rules.wasm");
    assert_eq!(
        rejected(path),
        "error: cannot read rules module /nonexistent/rules.wasm: No such file or directory (os error 2)\n"
    );
}

#[test]
fn rejects_a_core_module() {
    let dir = tempfile::tempdir().unwrap();
    let path = wat_file(&dir, "core.wasm", r#"(module (func (export "evaluate")))"#);
    assert_eq!(
        rejected(&path),
        format!(
            "error: module {} is a core wasm module, not a component: build with --target wasm32-wasip2 (or componentize it with `wasm-tools component new`)\n",
            path.display()
        )
    );
}

#[test]
fn rejects_a_component_of_another_world() {
    let dir = tempfile::tempdir().unwrap();
    let path = wat_file(
        &dir,
        "hello.wasm",
        r#"(component
             (core module $m (func (export "hello") (result i32) i32.const 42))
             (core instance $i (instantiate $m))
             (func (export "hello") (result u32) (canon lift (core func $i "hello"))))"#,
    );
    assert_eq!(
        rejected(&path),
        format!(
            "error: module {} does not export `init` and `evaluate` of world sluice:rules/rules@0.1.0: no export `evaluate` found. Build it against this sluice's wit/ (guest SDK sluice-guest-sdk)\n",
            path.display()
        )
    );
}

#[test]
fn rejects_a_wrong_signature() {
    let dir = tempfile::tempdir().unwrap();
    let path = wat_file(
        &dir,
        "wrong.wasm",
        r#"(component
             (core module $m
               (func (export "init") (param i32) (result i32) i32.const 0)
               (func (export "evaluate") (param i32)))
             (core instance $i (instantiate $m))
             (func (export "init") (param "config" u32) (result u32) (canon lift (core func $i "init")))
             (func (export "evaluate") (param "tables" u32) (canon lift (core func $i "evaluate"))))"#,
    );
    assert_eq!(
        rejected(&path),
        format!(
            "error: module {} does not export `init` and `evaluate` of world sluice:rules/rules@0.1.0: type-checking export func `evaluate`: expected 2-tuple, found 1-tuple. Build it against this sluice's wit/ (guest SDK sluice-guest-sdk)\n",
            path.display()
        )
    );
}

#[test]
fn rejects_a_module_that_imports_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let path = wat_file(
        &dir,
        "net.wasm",
        r#"(component
             (import "wasi:sockets/instance-network@0.2.0"
               (instance (export "instance-network" (func (result u32))))))"#,
    );
    assert_eq!(
        rejected(&path),
        format!(
            "error: module {} imports something sluice does not provide: component imports instance `wasi:sockets/instance-network@0.2.0`, but a matching implementation was not found in the linker: instance export `instance-network` has the wrong type: function implementation is missing. Rules get only `sluice:rules/host` and WASI without capabilities (no sockets)\n",
            path.display()
        )
    );
}

#[test]
fn rejects_a_failing_init() {
    let path = wasm::module("failing-init");
    assert_eq!(
        rejected(&path),
        format!(
            "error: module {}: init failed: failing-init rejects every configuration (got 0 bytes)\n",
            path.display()
        )
    );
}
