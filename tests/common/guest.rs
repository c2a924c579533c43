//! Rules modules written in Python and JavaScript, for tests: built with the SDKs' own build
//! commands (`guest-sdk-python`, `guest-sdk-js`) and the pinned toolchains that
//! `scripts/install-guest-toolchains` installs (run here when they are missing, so nothing is
//! skipped), and kept under `target/guest-modules` keyed by the sha256 of everything the build
//! reads. A componentize build takes 15-60 s and a compile several more; each module is built
//! once, and `compiled_cache()` keeps sluice's compiled artifacts across test runs too.

// Each test binary includes this file and uses part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// The language of a rules module's source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Python,
    JavaScript,
}

impl Lang {
    /// Both guest languages, for tests that cover each.
    pub const ALL: [Lang; 2] = [Lang::Python, Lang::JavaScript];

    /// The SDK's directory, relative to the repository.
    pub fn sdk(self) -> &'static str {
        match self {
            Lang::Python => "guest-sdk-python",
            Lang::JavaScript => "guest-sdk-js",
        }
    }

    /// An example's source file, relative to the repository.
    pub fn example(self, name: &str) -> String {
        match self {
            Lang::Python => format!("guest-sdk-python/examples/{name}/app.py"),
            Lang::JavaScript => format!("guest-sdk-js/examples/{name}/rule.js"),
        }
    }

    /// The determinism probe's source file, relative to the repository.
    pub fn determinism_probe(self) -> &'static str {
        match self {
            Lang::Python => "guest-sdk-python/tests/fixtures/determinism.py",
            Lang::JavaScript => "guest-sdk-js/test/fixtures/determinism.js",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Lang::Python => "py",
            Lang::JavaScript => "js",
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn out_dir() -> PathBuf {
    root().join("target/guest-modules")
}

/// The directory for sluice's compiled modules (`--cache-dir`, `rules.cache_dir`): shared by
/// every test and kept across runs, so a Python or JavaScript module is compiled once.
pub fn compiled_cache() -> String {
    out_dir().join("compiled").display().to_string()
}

/// Tool name to path, as `scripts/install-guest-toolchains` prints them.
fn toolchains() -> &'static BTreeMap<String, PathBuf> {
    static TOOLS: OnceLock<BTreeMap<String, PathBuf>> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let script = root().join("scripts/install-guest-toolchains");
        let output = Command::new(&script)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            output.status.success(),
            "scripts/install-guest-toolchains failed; the Python and JavaScript rules tests need its toolchains:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split_once(' '))
            .map(|(name, path)| (name.to_owned(), PathBuf::from(path)))
            .collect()
    })
}

fn tool(name: &str) -> PathBuf {
    toolchains()
        .get(name)
        .unwrap_or_else(|| panic!("scripts/install-guest-toolchains printed no path for {name}"))
        .clone()
}

/// Every file under `dir` except caches and installed packages, sorted, for the key.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name == "__pycache__" || name == "node_modules" {
            continue;
        }
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// The sha256 of what a build of `source` reads: the SDK's code and WIT, the source, and the
/// toolchain pins.
fn key(lang: Lang, source: &Path) -> String {
    let mut inputs = Vec::new();
    for part in ["src", "bin"] {
        let dir = root().join(lang.sdk()).join(part);
        if dir.is_dir() {
            files(&dir, &mut inputs);
        }
    }
    inputs.push(source.to_path_buf());
    inputs.push(root().join("scripts/install-guest-toolchains"));
    let mut hash = Sha256::new();
    for path in inputs {
        hash.update(
            path.strip_prefix(root())
                .unwrap_or(&path)
                .to_string_lossy()
                .as_bytes(),
        );
        hash.update([0]);
        hash.update(
            std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())),
        );
        hash.update([0]);
    }
    hex::encode(&hash.finalize()[..12])
}

/// The built module of `source` (relative to the repository) in `lang`, building it when no
/// module of the same key exists.
///
/// # Panics
///
/// If the toolchains cannot be installed or the build fails (with its output).
pub fn module(lang: Lang, source: &str) -> PathBuf {
    let source = root().join(source);
    let stem = source
        .parent()
        .and_then(Path::file_name)
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let file = source.file_stem().unwrap_or_default().to_string_lossy();
    let out = out_dir().join(format!(
        "{stem}-{file}-{}-{}.wasm",
        lang.slug(),
        key(lang, &source)
    ));
    if out.is_file() {
        return out;
    }
    std::fs::create_dir_all(out_dir()).unwrap();
    // Test binaries run in parallel: one builds, the others wait for its result.
    let lock = std::fs::File::create(out_dir().join(".build.lock")).unwrap();
    let _guard = Flock::exclusive(&lock);
    if out.is_file() {
        return out;
    }
    let partial = out.with_extension("partial");
    let mut command = match lang {
        Lang::Python => {
            let mut c = Command::new("python3");
            c.args(["-m", "sluice_rules.build"])
                .arg(&source)
                .arg("-o")
                .arg(&partial)
                .env("PYTHONPATH", root().join("guest-sdk-python/src"))
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .env("COMPONENTIZE_PY", tool("componentize-py"));
            c
        }
        Lang::JavaScript => {
            let mut c = Command::new("node");
            c.arg(root().join("guest-sdk-js/bin/build.js"))
                .arg(&source)
                .arg("-o")
                .arg(&partial)
                .arg("--jco")
                .arg(tool("jco"));
            c
        }
    };
    let output = command.output().expect("run the SDK's build command");
    assert!(
        output.status.success() && partial.is_file(),
        "building {} failed:\n{}\n{}",
        source.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::rename(&partial, &out).unwrap();
    out
}

/// An exclusive `flock` held until dropped.
struct Flock<'a>(&'a std::fs::File);

impl<'a> Flock<'a> {
    fn exclusive(file: &'a std::fs::File) -> Self {
        use std::os::fd::AsRawFd;
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
        Flock(file)
    }
}

impl Drop for Flock<'_> {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}
