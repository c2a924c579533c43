//! `sluice check` accepting good modules and rejecting each kind of bad one
//! with a one-line reason.

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::wasm;

/// Runs `sluice check` without the compiled-module cache, returning (stdout, stderr without
/// the `code compiled in … ms` line, success).
fn check(module: &Path, config: Option<&Path>) -> (String, String, bool) {
    let (out, err, ok) = check_cached(module, config, "off");
    let err = err
        .lines()
        .filter(|line| !line.starts_with("code compiled"))
        .map(|line| format!("{line}\n"))
        .collect();
    (out, err, ok)
}

/// Runs `sluice check --cache-dir cache_dir`, returning (stdout, stderr, success).
fn check_cached(module: &Path, config: Option<&Path>, cache_dir: &str) -> (String, String, bool) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .arg("check")
        .arg("--module")
        .arg(module)
        .arg("--cache-dir")
        .arg(cache_dir)
        .env_remove("SLUICE_LOG");
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
    assert_eq!(
        out,
        format!(
            "ok {} sha256:{sha}\nworld sluice:rules@0.2.0\n",
            path.display()
        )
    );
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
        err,
        format!(
            "error: module {}: init failed: multi-tenant config names no tables, for example `tenant_columns = {{ items = \"org_id\" }}`\n",
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
            "error: module {} does not export `init` and `evaluate` of world sluice:rules/rules@0.2.0 (nor of @0.1.0): no export `evaluate` found. Build it against this sluice's wit/ (guest SDK sluice-guest-sdk)\n",
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
            "error: module {} does not export `init` and `evaluate` of world sluice:rules/rules@0.2.0 (nor of @0.1.0): type-checking export func `evaluate`: expected 2-tuple, found 1-tuple. Build it against this sluice's wit/ (guest SDK sluice-guest-sdk)\n",
            path.display()
        )
    );
}

/// The one line `sluice check` (and `sluice run`) print for a module importing `import`, for
/// what sluice says `import`'s family is, and the other refused imports it lists.
fn unsupported_import(module: &Path, import: &str, what: &str, others: &[&str]) -> String {
    unsupported_import_fixed_by(
        module,
        import,
        what,
        others,
        "remove the code or dependency that uses it",
    )
}

/// [`unsupported_import`] with what the message says removes the import.
fn unsupported_import_fixed_by(
    module: &Path,
    import: &str,
    what: &str,
    others: &[&str],
    fix: &str,
) -> String {
    let others = if others.is_empty() {
        String::new()
    } else {
        format!(" (and `{}`)", others.join("`, `"))
    };
    format!(
        "error: module {} imports `{import}`{others}, which sluice does not provide: {what}. Rules run without network, filesystem or clock access; {fix} (a rule may import only sluice:rules/*, wasi:io/*, wasi:cli/* and wasi:random/*)\n",
        module.display()
    )
}

const SOCKETS: &str = "network access, as used by std::net or a network client";
const FILESYSTEM: &str = "file access, as used by std::fs";
const CLOCKS: &str = "the clock, as used by SystemTime::now, Instant::now or thread::sleep; a rule must be a function of the change alone";

#[test]
fn rejects_a_module_that_uses_std_net() {
    let path = wasm::module("imports-sockets");
    assert_eq!(
        rejected(&path),
        unsupported_import(
            &path,
            "wasi:sockets/network@0.2.6",
            SOCKETS,
            &[
                "wasi:sockets/instance-network@0.2.6",
                "wasi:sockets/udp@0.2.6",
                "wasi:sockets/udp-create-socket@0.2.6",
                "wasi:sockets/tcp@0.2.6",
                "wasi:sockets/tcp-create-socket@0.2.6",
                "wasi:sockets/ip-name-lookup@0.2.6",
                "wasi:filesystem/types@0.2.6",
                "wasi:filesystem/preopens@0.2.6",
                "wasi:clocks/monotonic-clock@0.2.6",
                "wasi:clocks/wall-clock@0.2.6",
            ]
        )
    );
}

#[test]
fn rejects_a_module_that_uses_std_fs() {
    let path = wasm::module("imports-filesystem");
    assert_eq!(
        rejected(&path),
        unsupported_import(
            &path,
            "wasi:filesystem/types@0.2.6",
            FILESYSTEM,
            &[
                "wasi:filesystem/preopens@0.2.6",
                "wasi:clocks/wall-clock@0.2.6"
            ]
        )
    );
}

#[test]
fn rejects_a_module_that_reads_the_clock() {
    let path = wasm::module("imports-clocks");
    assert_eq!(
        rejected(&path),
        unsupported_import(
            &path,
            "wasi:clocks/monotonic-clock@0.2.6",
            CLOCKS,
            &["wasi:clocks/wall-clock@0.2.6"]
        )
    );
}

#[test]
fn rejects_hand_written_imports_of_each_family_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for (import, what) in [
        ("wasi:sockets/instance-network@0.2.0", SOCKETS),
        ("wasi:sockets/ip-name-lookup@0.2.3", SOCKETS),
        ("wasi:http/outgoing-handler@0.2.0", "outgoing HTTP"),
        ("wasi:filesystem/preopens@0.2.0", FILESYSTEM),
        ("wasi:clocks/monotonic-clock@0.2.0", CLOCKS),
        (
            "acme:cache/store@1.0.0",
            "an interface sluice does not know",
        ),
    ] {
        let path = wat_file(
            &dir,
            "import.wasm",
            &format!(r#"(component (import "{import}" (instance (export "f" (func)))))"#),
        );
        assert_eq!(
            rejected(&path),
            unsupported_import(&path, import, what, &[])
        );
    }
}

#[test]
fn an_allowed_interface_of_the_wrong_shape_is_a_linker_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = wat_file(
        &dir,
        "random.wasm",
        r#"(component
             (import "wasi:random/random@0.2.0"
               (instance (export "get-random-u64" (func (result string))))))"#,
    );
    let err = rejected(&path);
    assert!(
        err.starts_with(&format!(
            "error: module {} imports something sluice does not provide: component imports instance `wasi:random/random@0.2.0`",
            path.display()
        )),
        "{err}"
    );
}

#[test]
fn accepts_a_module_that_uses_a_hashmap() {
    // std's HashMap seeds itself from wasi:random, which sluice provides (deterministically).
    let path = wasm::module("uses-hashmap");
    let (out, err, ok) = check(&path, None);
    assert!(ok, "{err}");
    assert!(out.starts_with("ok "), "{out}");
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

/// Paths that are not regular files of bounded size are refused before anything is read into
/// memory: `/dev/zero` used to be read until memory ran out, a FIFO would block the open.
#[test]
fn rejects_devices_directories_fifos_and_oversized_files() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.wasm");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let not_regular = "it is not a regular file (a directory, device, FIFO or socket); give the path of a .wasm file";
    for path in [Path::new("/dev/zero"), dir.path(), fifo.as_path()] {
        assert_eq!(
            rejected(path),
            format!(
                "error: cannot read rules module {}: {not_regular}\n",
                path.display()
            )
        );
    }
    // Sparse: 257 MiB on paper, nothing on disk.
    let big = dir.path().join("big.wasm");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(257 << 20)
        .unwrap();
    assert_eq!(
        rejected(&big),
        format!(
            "error: cannot read rules module {}: it is 269484032 bytes, over the limit of 268435456 bytes (rules.max_module_mib); a rules module is normally a few MiB\n",
            big.display()
        )
    );
    let link = dir.path().join("link.wasm");
    std::os::unix::fs::symlink(wasm::module("by-owner"), &link).unwrap();
    let (_, err, ok) = check(&link, None);
    assert!(ok, "a symlink to a module is followed: {err}");
}

/// A module that prints in `init` is an ordinary module; a 10 MiB init error is reported as one
/// bounded line.
#[test]
fn guest_output_and_huge_init_errors_are_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rules.toml");
    let module = wasm::module("misbehaving-guest");
    std::fs::write(&config, "print-in-init").unwrap();
    let (out, err, ok) = check(&module, Some(&config));
    assert!(ok, "{err}");
    assert!(
        out.starts_with("ok "),
        "guest output leaked into stdout: {out}"
    );
    assert_eq!(err, "");
    std::fs::write(&config, "huge-init-error").unwrap();
    let (out, err, ok) = check(&module, Some(&config));
    assert!(!ok);
    assert_eq!(out, "");
    assert_eq!(err.lines().count(), 1, "one line expected");
    assert!(err.len() < 5_000, "an error of {} bytes", err.len());
    assert!(
        err.starts_with(&format!(
            "error: module {}: init failed: iiii",
            module.display()
        )),
        "{}",
        &err[..200]
    );
    assert!(
        err.ends_with(&format!("... ({} more bytes cut)\n", (10 << 20) - 4048)),
        "{}",
        &err[err.len() - 200..]
    );
}

/// A custom section named `producers` with one field of one value (the tool's name).
fn producers_section(field: &str, name: &str) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.push(u8::try_from(s.len()).unwrap());
        out.extend_from_slice(s.as_bytes());
    }
    let mut body = Vec::new();
    string(&mut body, "producers");
    body.push(1); // one field
    string(&mut body, field);
    body.push(1); // one value
    string(&mut body, name);
    string(&mut body, "0.25.0");
    let mut section = vec![0, u8::try_from(body.len()).unwrap()];
    section.extend(body);
    section
}

/// A component that imports sockets and whose one core module does not validate: refused for
/// its import, which is read before compiling (the compiler would say the module is invalid).
#[test]
fn imports_are_checked_before_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let path = wat_file(
        &dir,
        "invalid.wasm",
        r#"(component
            (import "wasi:sockets/tcp@0.2.0" (instance (export "f" (func))))
            (core module (func (result i32) (i64.const 1))))"#,
    );
    assert_eq!(
        rejected(&path),
        unsupported_import(&path, "wasi:sockets/tcp@0.2.0", SOCKETS, &[])
    );
}

/// A Python or JavaScript component (by its producers section) is told the build flag that
/// removes the WASI imports its toolchain adds, and std::net is not blamed.
#[test]
fn a_python_or_javascript_module_is_told_its_build_flag() {
    let dir = tempfile::tempdir().unwrap();
    let python = "componentize-py adds these imports unless told not to: build with `componentize-py ... componentize --stub-wasi ...`, and remove any code that needs them";
    let js = "ComponentizeJS adds these imports unless told not to: build with `jco componentize ... -d stdio random clocks http fetch-event` (componentize-js: `disableFeatures: [\"stdio\", \"random\", \"clocks\", \"http\", \"fetch-event\"]`), and remove any code that needs them";
    for (tool, fix) in [
        ("componentize-py", python),
        ("ComponentizeJS", js),
        ("jco", js),
    ] {
        let path = dir.path().join(format!("{tool}.wasm"));
        let mut bytes = wat::parse_str(
            r#"(component
                (import "wasi:sockets/tcp@0.2.0" (instance (export "f" (func))))
                (import "wasi:clocks/wall-clock@0.2.0" (instance (export "f" (func)))))"#,
        )
        .unwrap();
        bytes.extend(producers_section("processed-by", tool));
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(
            rejected(&path),
            unsupported_import_fixed_by(
                &path,
                "wasi:sockets/tcp@0.2.0",
                "network access",
                &["wasi:clocks/wall-clock@0.2.0"],
                fix
            ),
            "{tool}"
        );
    }
}

/// The instance pool gives each component room for 100 core instances (a Python component
/// has 38); a component with more is refused before compiling, naming the limit.
#[test]
fn core_instances_are_counted_against_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let component = |n: usize| {
        format!(
            "(component (core module $m) {})",
            "(core instance (instantiate $m))".repeat(n)
        )
    };
    let many = wat_file(&dir, "many.wasm", &component(101));
    assert_eq!(
        rejected(&many),
        format!(
            "error: module {} holds 101 core instances, more than the 100 sluice's instance pool has room for in one component\n",
            many.display()
        )
    );
    // 64 fit: the module gets as far as the world check.
    let fits = wat_file(&dir, "fits.wasm", &component(64));
    assert!(
        rejected(&fits).contains("does not export `init` and `evaluate`"),
        "{}",
        rejected(&fits)
    );
}

/// `host.log` lines reach stderr in `check` (and `eval`).
#[test]
fn host_log_lines_are_shown() {
    let (out, err, ok) = check(&wasm::module("v0-1-by-owner"), None);
    assert!(ok, "{err}");
    assert!(out.starts_with("ok "), "{out}");
    assert!(err.contains("v0-1-by-owner ready"), "{err}");
}

/// The second `check` of a module loads its compiled code from the cache; a corrupted or
/// swapped artifact is detected, removed and compiled again; an unsafe directory is bypassed.
#[test]
fn compiled_modules_are_cached_and_tampering_is_detected() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cache_arg = cache.to_str().unwrap();
    let module = wasm::module("by-owner");
    let code_line = |err: &str| -> String {
        err.lines()
            .find(|l| l.starts_with("code "))
            .unwrap_or_default()
            .split(" in ")
            .next()
            .unwrap()
            .to_owned()
    };
    let run = || {
        let (out, err, ok) = check_cached(&module, None, cache_arg);
        assert!(ok, "{err}");
        assert!(out.starts_with("ok "), "{out}");
        err
    };
    assert_eq!(code_line(&run()), "code compiled");
    let err = run();
    assert_eq!(code_line(&err), "code cached", "{err}");
    assert!(err.ends_with(&format!("({})\n", cache.canonicalize().unwrap().display())));
    let artifacts: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    let artifact = &artifacts[0];
    let mode = std::fs::metadata(artifact).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
        0o700
    );

    // One flipped byte in the machine code.
    let mut bytes = std::fs::read(artifact).unwrap();
    let last = bytes.len() - 100;
    bytes[last] ^= 0xff;
    std::fs::write(artifact, &bytes).unwrap();
    let err = run();
    assert_eq!(code_line(&err), "code compiled", "{err}");
    assert!(
        err.contains("its content does not match the sha256 recorded in its header"),
        "{err}"
    );
    assert_eq!(code_line(&run()), "code cached");

    // Another module's artifact put in its place.
    let other = wasm::module("multi-tenant");
    check_cached(&other, None, cache_arg);
    let other_artifact = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p != artifact)
        .unwrap();
    std::fs::copy(&other_artifact, artifact).unwrap();
    let err = run();
    assert_eq!(code_line(&err), "code compiled", "{err}");
    assert!(
        err.contains("it was written for another module or engine"),
        "{err}"
    );

    // An artifact others may read or write is not trusted.
    std::fs::set_permissions(artifact, std::fs::Permissions::from_mode(0o666)).unwrap();
    let err = run();
    assert_eq!(code_line(&err), "code compiled", "{err}");
    assert!(
        err.contains("group or others have permissions on it (mode 666)"),
        "{err}"
    );

    // A directory others may write is not used at all.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = run();
    assert_eq!(code_line(&err), "code compiled", "{err}");
    assert!(err.ends_with(" ms (not cached)\n"), "{err}");
    assert!(
        err.contains("is unsafe: group or others may write it (mode 777)"),
        "{err}"
    );

    // Off is off.
    let (_, err, _) = check_cached(&module, None, "off");
    assert!(err.starts_with("code compiled in "), "{err}");
    assert!(err.ends_with(" ms (not cached)\n"), "{err}");
}
