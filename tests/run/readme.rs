//! The README is part of the product: its flags exist and its examples run as shown.

use std::process::Command;

use crate::wasm;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

fn sluice(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const SUBCOMMANDS: &[&str] = &[
    "check",
    "eval",
    "diff",
    "run",
    "demo",
    "reload",
    "rebucket",
    "forget-table",
    "failures",
    "replay-failures",
    "tail",
];

#[test]
fn every_documented_flag_exists_in_help() {
    let mut help = sluice(&["--help"]).1;
    for sub in SUBCOMMANDS {
        let (ok, out, err) = sluice(&[sub, "--help"]);
        assert!(ok, "sluice {sub} --help failed: {err}");
        assert!(
            out.contains("Example:"),
            "sluice {sub} --help has no example"
        );
        help.push_str(&out);
    }
    let text = readme();
    let mut checked = 0;
    for line in text.lines() {
        // Flags of sluice commands and of the configuration table; cargo's own flags are not ours.
        let ours = line.contains("sluice ") || line.starts_with("| `--");
        if !ours || line.trim_start().starts_with("cargo ") {
            continue;
        }
        for (i, _) in line.match_indices("--") {
            let flag: String = line[i..]
                .chars()
                .skip(2)
                .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                .collect();
            if flag.is_empty()
                || ["release", "workspace", "target", "profile", "bench"].contains(&flag.as_str())
            {
                continue;
            }
            assert!(
                help.contains(&format!("--{flag}")),
                "README documents --{flag}, which no --help mentions"
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} flags found in the README");
    for sub in SUBCOMMANDS {
        assert!(
            text.contains(&format!("sluice {sub}")),
            "README never mentions `sluice {sub}`"
        );
    }
}

#[test]
fn version_names_the_wit_world() {
    let (ok, out, _) = sluice(&["--version"]);
    assert!(ok);
    assert_eq!(
        out.trim(),
        format!(
            "sluice {} (wit world sluice:rules/rules@0.2.0; modules of @0.1.0 load unchanged)",
            env!("CARGO_PKG_VERSION")
        )
    );
}

/// The text of the fenced block that follows `marker`.
fn block_after<'a>(text: &'a str, marker: &str) -> &'a str {
    let start = text
        .find(marker)
        .unwrap_or_else(|| panic!("README lost {marker:?}"));
    let rest = &text[start..];
    let open = rest.find("```").unwrap();
    let body = &rest[open..];
    let body = &body[body.find('\n').unwrap() + 1..];
    &body[..body.find("```").unwrap()]
}

#[test]
fn the_eval_example_gives_the_outcomes_the_readme_promises() {
    let text = readme();
    let input = block_after(&text, "`eval` reads one change per line");
    let after_input = &text[text.find(input).unwrap() + input.len() + 3..];
    let expected = block_after(after_input, "```text");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("changes.jsonl");
    std::fs::write(&path, input).unwrap();
    let module = wasm::module("by-owner");
    let (ok, out, err) = sluice(&[
        "eval",
        "--module",
        module.to_str().unwrap(),
        "--input",
        path.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(out, expected);
    let (ok, out, _) = sluice(&["check", "--module", module.to_str().unwrap()]);
    assert!(ok);
    assert!(
        out.starts_with(&format!("ok {} sha256:", module.display())),
        "{out}"
    );
}
