//! Every example through `sluice eval`, on the JSONL files in `data/`.

use crate::eval::{data, eval};
use crate::wasm;

fn module(package: &str) -> String {
    wasm::module(package).display().to_string()
}

const BY_OWNER_EXPECTED: &str = r#"{"outcome":"keep","buckets":["user:u1"]}
{"outcome":"keep","buckets":["global"]}
{"outcome":"keep","buckets":["global"]}
{"outcome":"keep","buckets":["user:42"]}
{"outcome":"keep","buckets":["global"]}
{"outcome":"keep","buckets":["user:u2"]}
{"outcome":"error","message":"items: user_id must be text or an integer, got Value::Bool(true)"}
{"outcome":"keep","buckets":["user:u3"]}
"#;

#[test]
fn by_owner_outcomes_for_every_batch_size() {
    let input = data("by-owner.jsonl").display().to_string();
    for batch_size in ["1", "3", "512"] {
        let (out, err, ok) = eval(
            &[
                "--module",
                &module("by-owner"),
                "--input",
                &input,
                "--batch-size",
                batch_size,
            ],
            None,
        );
        assert!(ok, "batch size {batch_size}: {err}");
        assert_eq!(out, BY_OWNER_EXPECTED, "batch size {batch_size}");
    }
}

/// A module of the frozen world 0.1.0 (raw wit-bindgen, no SDK) runs unchanged: the same
/// outcomes as by-owner, which it copies.
#[test]
fn a_module_of_world_0_1_0_gives_by_owners_outcomes() {
    let input = data("by-owner.jsonl").display().to_string();
    for batch_size in ["1", "512"] {
        let (out, err, ok) = eval(
            &[
                "--module",
                &module("v0-1-by-owner"),
                "--input",
                &input,
                "--batch-size",
                batch_size,
            ],
            None,
        );
        assert!(ok, "batch size {batch_size}: {err}");
        assert_eq!(out, BY_OWNER_EXPECTED, "batch size {batch_size}");
    }
}

/// `eval` prints own outcomes only: an order line's own outcome is `keep []`, whatever its
/// order's buckets (relations are applied by `run`).
#[test]
fn northwind_own_outcomes() {
    let input = data("northwind.jsonl").display().to_string();
    let (out, err, ok) = eval(&["--module", &module("northwind"), "--input", &input], None);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        r#"{"outcome":"keep","buckets":["user:00000000-0000-0000-0000-0000000000a1"]}
{"outcome":"keep","buckets":[]}
{"outcome":"drop"}
{"outcome":"keep","buckets":["user:00000000-0000-0000-0000-0000000000a2"]}
{"outcome":"keep","buckets":["global"]}
{"outcome":"keep","buckets":["global"]}
{"outcome":"keep","buckets":[]}
{"outcome":"error","message":"northwind has no bucket rule for table customers"}
"#
    );
}

#[test]
fn shared_lists_own_outcomes() {
    let input = data("shared-lists.jsonl").display().to_string();
    let (out, err, ok) = eval(
        &["--module", &module("shared-lists"), "--input", &input],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(
        out,
        r#"{"outcome":"keep","buckets":["user:u1"]}
{"outcome":"keep","buckets":["user:u2"]}
{"outcome":"keep","buckets":[]}
{"outcome":"error","message":"lists: owner_id must be non-empty text, got Value::Text(\"\")"}
{"outcome":"keep","buckets":[]}
"#
    );
}

#[test]
fn input_dash_reads_stdin() {
    let text = std::fs::read_to_string(data("by-owner.jsonl")).unwrap();
    let (out, err, ok) = eval(
        &["--module", &module("by-owner"), "--input", "-"],
        Some(&text),
    );
    assert!(ok, "{err}");
    assert_eq!(out, BY_OWNER_EXPECTED);
}

#[test]
fn multi_tenant_outcomes() {
    let (out, err, ok) = eval(
        &[
            "--module",
            &module("multi-tenant"),
            "--input",
            &data("multi-tenant.jsonl").display().to_string(),
            "--rules-config",
            &data("multi-tenant.toml").display().to_string(),
        ],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(
        out,
        r#"{"outcome":"keep","buckets":["org:7"]}
{"outcome":"keep","buckets":["org:acme","org:acme:admins"]}
{"outcome":"drop"}
{"outcome":"keep","buckets":["org:9"]}
{"outcome":"keep","buckets":["global"]}
{"outcome":"error","message":"items.org_id must be text or an integer to name a tenant, got Value::Json(\"{\\\"nested\\\":true}\")"}
"#
    );
}

#[test]
fn multi_tenant_without_config_is_rejected() {
    let (out, err, ok) = eval(
        &[
            "--module",
            &module("multi-tenant"),
            "--input",
            &data("multi-tenant.jsonl").display().to_string(),
        ],
        None,
    );
    assert!(!ok);
    assert_eq!(out, "");
    assert_eq!(
        err,
        format!(
            "error: module {}: init failed: multi-tenant needs a configuration naming each table's tenant column, for example `tenant_columns = {{ items = \"org_id\" }}`\n",
            module("multi-tenant")
        )
    );
}

#[test]
fn soft_delete_filter_outcomes() {
    let (out, err, ok) = eval(
        &[
            "--module",
            &module("soft-delete-filter"),
            "--input",
            &data("soft-delete-filter.jsonl").display().to_string(),
        ],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(
        out,
        r#"{"outcome":"keep","buckets":["user:u1"]}
{"outcome":"drop"}
{"outcome":"keep","buckets":["global"]}
{"outcome":"keep","buckets":["user:5"]}
{"outcome":"keep","buckets":["global"]}
"#
    );
}

#[test]
fn malformed_line_names_its_number() {
    let input = "{\"table\":\"items\",\"op\":\"insert\",\"new\":{\"id\":1,\"user_id\":\"u1\"}}\n\n{\"table\":\"items\",\"op\":\"insert\",\"new\":{\"id\":2}\n";
    let (_, err, ok) = eval(
        &["--module", &module("by-owner"), "--input", "-"],
        Some(input),
    );
    assert!(!ok);
    assert_eq!(
        err,
        "error: malformed change in -: line 3: not a JSON object: EOF while parsing an object at line 1 column 45\n"
    );
}

/// A rule that writes to stdout or stderr, or reads stdin, gets its outcomes like any other:
/// its output is discarded, never mixed into eval's own.
#[test]
fn guest_output_is_discarded() {
    let input: String = ["print", "eprint", "dbg", "stdin", "nul"]
        .iter()
        .enumerate()
        .map(|(i, title)| {
            format!(
                "{{\"table\":\"items\",\"op\":\"insert\",\"new\":{{\"id\":{i},\"title\":\"{title}\"}},\"old\":null}}\n"
            )
        })
        .collect();
    let (out, err, ok) = eval(
        &["--module", &module("misbehaving-guest"), "--input", "-"],
        Some(&input),
    );
    assert!(ok, "{err}");
    assert_eq!(
        out,
        r#"{"outcome":"keep","buckets":["id:Value::Int(0)"]}
{"outcome":"keep","buckets":["id:Value::Int(1)"]}
{"outcome":"keep","buckets":["id:Value::Int(2)"]}
{"outcome":"keep","buckets":["id:Value::Int(3)"]}
{"outcome":"error","message":"bad\\u{0}thing"}
"#
    );
    assert_eq!(err, "");
}

/// Each `$kind` reaches the module as that kind: misbehaving-guest keeps a row in
/// `id:<the id value, debug-printed>`.
#[test]
fn every_value_kind_reaches_the_module() {
    let kinds = [
        (r#"{"$kind":"unchanged"}"#, "Value::Unchanged"),
        (
            r#"{"$kind":"numeric","value":"1.50"}"#,
            r#"Value::Numeric(\"1.50\")"#,
        ),
        (
            r#"{"$kind":"bytes","value":"\\x0aff"}"#,
            "Value::Bytes([10, 255])",
        ),
        (
            r#"{"$kind":"date","value":"2024-02-29"}"#,
            r#"Value::Date(\"2024-02-29\")"#,
        ),
        (
            r#"{"$kind":"time","value":"12:34:56"}"#,
            r#"Value::Time(\"12:34:56\")"#,
        ),
        (
            r#"{"$kind":"timestamp","value":"2024-02-29T12:34:56"}"#,
            r#"Value::Timestamp(\"2024-02-29T12:34:56\")"#,
        ),
        (
            r#"{"$kind":"timestamptz","value":"2024-02-29T12:34:56+00:00"}"#,
            r#"Value::Timestamptz(\"2024-02-29T12:34:56+00:00\")"#,
        ),
        (r#"{"$kind":"text","value":"7"}"#, r#"Value::Text(\"7\")"#),
        (
            r#"{"$kind":"json","value":{"a":1}}"#,
            r#"Value::Json(\"{\\\"a\\\":1}\")"#,
        ),
    ];
    let input: String = kinds
        .iter()
        .map(|(value, _)| {
            format!(r#"{{"table":"items","op":"update","new":{{"id":{value},"title":"ok"}}}}"#)
                + "\n"
        })
        .collect();
    let (out, err, ok) = eval(
        &[
            "--module",
            &module("misbehaving-guest"),
            "--input",
            "-",
            "--cache-dir",
            "off",
        ],
        Some(&input),
    );
    assert!(ok, "{err}");
    let expected: String = kinds
        .iter()
        .map(|(_, debug)| format!(r#"{{"outcome":"keep","buckets":["id:{debug}"]}}"#) + "\n")
        .collect();
    assert_eq!(out, expected);
}

/// `host.log` lines of the module appear on eval's stderr, outcomes alone on stdout.
#[test]
fn host_log_lines_go_to_stderr() {
    let (out, err, ok) = eval(
        &["--module", &module("v0-1-by-owner"), "--input", "-"],
        Some("{\"table\":\"items\",\"op\":\"insert\",\"new\":{\"id\":1,\"user_id\":\"u1\"}}\n"),
    );
    assert!(ok, "{err}");
    assert_eq!(out, "{\"outcome\":\"keep\",\"buckets\":[\"user:u1\"]}\n");
    assert!(err.contains("v0-1-by-owner ready"), "{err}");
}
