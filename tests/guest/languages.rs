//! Rules in Python and JavaScript: the SDKs' native tests, their shipped WIT, and their
//! examples built into components that give the Rust examples' outcomes in `sluice eval`, with
//! the clock and randomness behaving as the README's "Writing a rule" says.

use std::path::Path;
use std::process::Command;

use crate::eval::{data, eval};
use crate::guest::{self, Lang};
use crate::wasm;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `sluice eval` of `module` over a data file, with a config file and a batch size, through
/// the shared compiled-module cache; returns stdout, failing with stderr.
fn outcomes(module: &Path, input: &str, config: Option<&str>, batch_size: &str) -> String {
    let module = module.display().to_string();
    let input = data(input).display().to_string();
    let cache = guest::compiled_cache();
    let mut args = vec![
        "--module",
        &module,
        "--input",
        &input,
        "--batch-size",
        batch_size,
        "--cache-dir",
        &cache,
    ];
    let config = config.map(|c| data(c).display().to_string());
    if let Some(config) = &config {
        args.extend(["--rules-config", config]);
    }
    let (out, err, ok) = eval(&args, None);
    assert!(ok, "{module}: {err}");
    out
}

#[test]
fn each_sdk_ships_the_repositorys_wit() {
    let wit = std::fs::read_to_string(root().join("wit/rules.wit")).unwrap();
    for copy in [
        "guest-sdk-python/src/sluice_rules/wit/rules.wit",
        "guest-sdk-js/wit/rules.wit",
    ] {
        let shipped = std::fs::read_to_string(root().join(copy)).unwrap();
        assert!(
            shipped == wit,
            "{copy} differs from wit/rules.wit: copy it over"
        );
    }
}

#[test]
fn python_sdk_native_tests_pass() {
    let output = Command::new("python3")
        .args(["-m", "unittest", "discover", "-s", "tests"])
        .current_dir(root().join("guest-sdk-python"))
        .env("PYTHONPATH", root().join("guest-sdk-python/src"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python3 -m unittest");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("\nOK"), "{stderr}");
    assert!(!stderr.contains("Ran 0 tests"), "{stderr}");
}

#[test]
fn js_sdk_native_tests_pass() {
    let dir = root().join("guest-sdk-js");
    let mut tests: Vec<String> = std::fs::read_dir(dir.join("test"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".test.js"))
        .map(|name| format!("test/{name}"))
        .collect();
    tests.sort();
    assert!(!tests.is_empty(), "no guest-sdk-js/test/*.test.js");
    let output = Command::new("node")
        .arg("--test")
        .args(&tests)
        .current_dir(&dir)
        .output()
        .expect("run node --test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("# fail 0"), "{stdout}");
    assert!(!stdout.contains("# pass 0\n"), "{stdout}");
}

/// The same JSON lines through the Rust, Python and JavaScript examples, in batches of one
/// and of all lines: byte-identical outcomes, errors included.
#[test]
fn python_and_javascript_examples_give_the_rust_outcomes() {
    let cases = [
        ("by-owner", "by-owner.jsonl", None),
        // Every value kind, so that `describe` is checked against Rust's `{:?}`.
        ("by-owner", "by-owner-kinds.jsonl", None),
        (
            "multi-tenant",
            "multi-tenant.jsonl",
            Some("multi-tenant.toml"),
        ),
    ];
    for (example, input, config) in cases {
        let rust = outcomes(&wasm::module(example), input, config, "512");
        assert_eq!(
            rust.lines().count(),
            std::fs::read_to_string(data(input))
                .unwrap()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .count()
        );
        for lang in Lang::ALL {
            let module = guest::module(lang, &lang.example(example));
            for batch_size in ["1", "512"] {
                assert_eq!(
                    outcomes(&module, input, config, batch_size),
                    rust,
                    "{lang:?} {example}, batch size {batch_size}"
                );
            }
        }
    }
}

/// An exception in `init` rejects the module with its message, in every language alike.
#[test]
fn an_init_exception_rejects_the_module_with_its_message() {
    let cache = guest::compiled_cache();
    let input = data("multi-tenant.jsonl").display().to_string();
    let rust = wasm::module("multi-tenant");
    let modules = [
        rust,
        guest::module(Lang::Python, &Lang::Python.example("multi-tenant")),
        guest::module(Lang::JavaScript, &Lang::JavaScript.example("multi-tenant")),
    ];
    for module in modules {
        let path = module.display().to_string();
        let (out, err, ok) = eval(
            &["--module", &path, "--input", &input, "--cache-dir", &cache],
            None,
        );
        assert!(!ok);
        assert_eq!(out, "");
        assert_eq!(
            err,
            format!(
                "error: module {path}: init failed: multi-tenant needs a configuration naming each table's tenant column, for example `tenant_columns = {{ items = \"org_id\" }}`\n"
            )
        );
    }
}

fn clock_error(what: &str) -> String {
    let message = format!(
        "{what}: sluice rules have no clock (a rule must be a function of the change alone); use the row's own timestamp columns"
    );
    format!(r#"{{"outcome":"error","message":"ClockUnavailable: {message}"}}"#)
}

/// Reading the clock is an error outcome for that change (not a trap, not the build time),
/// and randomness is seeded from the change's LSN: the same numbers for the same LSN, in every
/// batch size, equal to what the SDK gives natively (Python's `random.Random(lsn)`, the JS
/// SDK's `randomFor(lsn)`).
#[test]
fn the_clock_is_refused_and_randomness_follows_the_lsn() {
    let expected = |lang: Lang| -> String {
        let (r5, r_lsn, r0, time, date) = match lang {
            Lang::Python => (
                ["0.6229016948897019", "0.7417869892607294"],
                ["0.6765282167241571", "0.420018006643722"],
                ["0.8444218515250481", "0.7579544029403025"],
                "time.time",
                "datetime.now",
            ),
            Lang::JavaScript => (
                ["0.386768045983934", "0.7523070158382239"],
                ["0.6925488898231307", "0.35076266513972587"],
                ["0.8833108082136426", "0.43152799704850997"],
                "Date.now",
                "new Date()",
            ),
        };
        let keep =
            |[a, b]: [&str; 2]| format!(r#"{{"outcome":"keep","buckets":["r:{a}","r:{b}"]}}"#);
        [
            keep(r5),
            keep(r5),
            keep(r_lsn),
            clock_error(time),
            clock_error(date),
            keep(r0),
        ]
        .map(|line| line + "\n")
        .concat()
    };
    for lang in Lang::ALL {
        let module = guest::module(lang, lang.determinism_probe());
        for batch_size in ["1", "512"] {
            assert_eq!(
                outcomes(&module, "determinism.jsonl", None, batch_size),
                expected(lang),
                "{lang:?}, batch size {batch_size}"
            );
        }
    }
}
