//! World 0.2.0's declarations: `sluice check` reporting a module's world and relations, the
//! relations the library hands the pipeline, refusals of bad declarations, and modules of the
//! frozen world 0.1.0 loading unchanged.

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};
use sluice::model::{Flow, Relation};
use sluice::rules::{RuleLimits, RulesEngine};

use crate::wasm;

/// Runs `sluice check` with `config` (if any) as the rules config, without the compiled-module
/// cache: (stdout, stderr, success).
fn check(module: &Path, config: Option<&str>) -> (String, String, bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .arg("check")
        .arg("--module")
        .arg(module)
        .args(["--cache-dir", "off"])
        .env_remove("SLUICE_LOG");
    if let Some(config) = config {
        let path = dir.path().join("rules.txt");
        std::fs::write(&path, config).unwrap();
        command.arg("--rules-config").arg(path);
    }
    let output = command.output().unwrap();
    (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
        output.status.success(),
    )
}

/// What `sluice check` prints for an accepted module.
fn accepted(module: &Path, world: &str, relations: &[&str]) -> String {
    let sha = hex::encode(Sha256::digest(std::fs::read(module).unwrap()));
    let mut text = format!(
        "ok {} sha256:{sha}\nworld sluice:rules@{world}\n",
        module.display()
    );
    for relation in relations {
        text.push_str(&format!("relation {relation}\n"));
    }
    text
}

fn refused(config: Option<&str>) -> String {
    let module = wasm::module("relation-cycle");
    let (out, err, ok) = check(&module, config);
    assert!(!ok, "accepted: {out}");
    assert_eq!(out, "");
    err
}

#[test]
fn check_prints_the_world_and_the_relations_of_each_example() {
    for (package, relations) in [
        ("northwind", &["order_details(order_id)->orders"][..]),
        (
            "shared-lists",
            &[
                "list_members(list_id)=>lists",
                "list_members(list_id)->lists",
                "items(list_id)->lists",
            ][..],
        ),
        ("by-owner", &[][..]),
    ] {
        let module = wasm::module(package);
        let (out, err, ok) = check(&module, None);
        assert!(ok, "{package}: {err}");
        assert_eq!(out, accepted(&module, "0.2.0", relations), "{package}");
        assert!(err.starts_with("code compiled in "), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn the_library_hands_over_the_relations_in_declaration_order() {
    let engine = RulesEngine::new(RuleLimits::default()).unwrap();
    let module = engine.load_file(&wasm::module("shared-lists"), "").unwrap();
    assert_eq!(module.world_version(), "0.2.0");
    let relation = |child: &str, parent: &str, flow| Relation {
        child: child.into(),
        columns: vec!["list_id".into()],
        parent: parent.into(),
        flow,
    };
    assert_eq!(
        module.relations(),
        [
            relation("list_members", "lists", Flow::Share),
            relation("list_members", "lists", Flow::Inherit),
            relation("items", "lists", Flow::Inherit),
        ]
    );
    // A fresh instance (as after a trap) runs init again; the module's relations stay those of
    // the load.
    let mut instance = module.instantiate().unwrap();
    assert!(instance.evaluate(&[]).is_empty());
    assert_eq!(module.relations().len(), 3);
}

#[test]
fn a_module_of_world_0_1_0_loads_unchanged_and_declares_nothing() {
    let module = wasm::module("v0-1-by-owner");
    let (out, err, ok) = check(&module, None);
    assert!(ok, "{err}");
    assert_eq!(out, accepted(&module, "0.1.0", &[]));

    let engine = RulesEngine::new(RuleLimits::default()).unwrap();
    let loaded = engine.load_file(&module, "").unwrap();
    assert_eq!(loaded.world_version(), "0.1.0");
    assert!(loaded.relations().is_empty());
}

#[test]
fn an_inherit_cycle_is_refused_with_its_name() {
    let module = wasm::module("relation-cycle");
    assert_eq!(
        refused(None),
        format!(
            "error: module {} declares inherit relations that form a cycle, a(b_id)->b(a_id)->a: a row would inherit buckets from itself. Remove one of these relations\n",
            module.display()
        )
    );
    assert_eq!(
        refused(Some("nodes(parent_id)->nodes\n")),
        format!(
            "error: module {} declares inherit relations that form a cycle, nodes(parent_id)->nodes: a row would inherit buckets from itself. Remove one of these relations\n",
            module.display()
        )
    );
    // The cycle is found behind an acyclic prefix and named from its smallest table.
    assert_eq!(
        refused(Some(
            "x(y_id)->y\ny(c_id)->c\nc(a_id)->a\na(b_id)->b\nb(c_id)->c\n"
        )),
        format!(
            "error: module {} declares inherit relations that form a cycle, a(b_id)->b(c_id)->c(a_id)->a: a row would inherit buckets from itself. Remove one of these relations\n",
            module.display()
        )
    );
}

#[test]
fn malformed_declarations_are_refused() {
    let module = wasm::module("relation-cycle").display().to_string();
    assert_eq!(
        refused(Some("a()->b")),
        format!(
            "error: module {module} declares relation `a()->b` without columns: list the child's columns that hold the parent's primary key, in its order\n"
        )
    );
    assert_eq!(
        refused(Some("a(b_id)=>b\na(b_id)=>b")),
        format!("error: module {module} declares relation `a(b_id)=>b` twice\n")
    );
    assert_eq!(
        refused(Some("(b_id)->b")),
        format!(
            "error: module {module} declares relation `(b_id)->b` without a child or parent table\n"
        )
    );
}

#[test]
fn share_relations_never_cycle() {
    let module = wasm::module("relation-cycle");
    let config = "a(b_id)=>b\nb(a_id)=>a\npeople(manager_id)=>people\na(b_id)->b\n";
    let (out, err, ok) = check(&module, Some(config));
    assert!(ok, "{err}");
    assert_eq!(
        out,
        accepted(
            &module,
            "0.2.0",
            &[
                "a(b_id)=>b",
                "b(a_id)=>a",
                "people(manager_id)=>people",
                "a(b_id)->b"
            ]
        )
    );
}
