//! Rules modules for tests: builds the example and fixture crates for
//! `wasm32-wasip2` once per test process and hands out their paths.
//!
//! The build uses its own target dir (`target/wasm-modules`), so it never
//! waits on the lock of the `cargo test` that runs us.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Every module crate in the workspace, built together in one cargo call.
const PACKAGES: &[&str] = &[
    "by-owner",
    "multi-tenant",
    "soft-delete-filter",
    "northwind",
    "shared-lists",
    "loop-forever",
    "memory-bomb",
    "panic-on-value",
    "ten-thousand-buckets",
    "invalid-bucket-id",
    "failing-init",
    "hostile-outputs",
    "init-never-returns",
    "imports-sockets",
    "imports-filesystem",
    "imports-clocks",
    "uses-hashmap",
    "misbehaving-guest",
    "v0-1-by-owner",
    "relation-cycle",
    "related-chain",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Path of the built module for `package` (e.g. `by-owner`).
///
/// # Panics
///
/// If the package is unknown or the build fails (with cargo's output).
pub fn module(package: &str) -> PathBuf {
    assert!(
        PACKAGES.contains(&package),
        "unknown module package {package}"
    );
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(build_all);
    let path = root()
        .join("target/wasm-modules/wasm32-wasip2/wasm")
        .join(format!("{}.wasm", package.replace('-', "_")));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

fn build_all() {
    ensure_target();
    let mut command = Command::new(cargo());
    command
        .current_dir(root())
        .args(["build", "--target", "wasm32-wasip2", "--profile", "wasm"])
        .arg("--target-dir")
        .arg(root().join("target/wasm-modules"));
    for package in PACKAGES {
        command.args(["-p", package]);
    }
    // Flags meant for the host build (coverage, sanitizers) must not leak
    // into the wasm build.
    command
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    let output = command
        .output()
        .expect("run cargo build for the rules modules");
    assert!(
        output.status.success(),
        "building the rules modules failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A fresh machine may lack the target; install it rather than skip.
fn ensure_target() {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .expect("run rustup target list --installed");
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|line| line.trim() == "wasm32-wasip2")
    {
        return;
    }
    let status = Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .status()
        .expect("run rustup target add wasm32-wasip2");
    assert!(status.success(), "rustup target add wasm32-wasip2 failed");
}
