//! Per-change cost of the `by-owner` rule through Wasm (batch sizes 1, 64,
//! 512) against the same rule called natively through the guest SDK.
//!
//! Target 3 of issue 17: at batch size 512, Wasm <= 2 x native + 0.3 us per change, for a rule
//! that reads one column (the owner) of a 6-column row shaped like W1's.
//!
//! The Wasm figure is everything the pipeline pays: building the WIT
//! arguments from `model::Change`s, copying them into the guest, the
//! guest's decoding, the rule, and lifting and validating the outcomes.
//! The native figure is the rule alone over changes already in the SDK's
//! form, so the comparison is, if anything, unfair to Wasm.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::model::{Change, Column, Lsn, Operation, ReplicaIdentity, TableSchema, Value};
use sluice::rules::{RuleLimits, RulesEngine};
use sluice_guest_sdk::{Column as SdkColumn, Table, Value as SdkValue, WireChange};

use crate::support::Report;
use crate::wasm;

const CHANGES: usize = 512 * 8;
const MEASURE_FOR: Duration = Duration::from_millis(1500);

pub fn run(report: &mut Report) {
    println!("\n== rules: by-owner, Wasm against native ==");
    let changes = model_changes();
    let (tables, wire) = sdk_changes(&changes);

    let native = measure(|| {
        let outcomes = sluice_guest_sdk::evaluate_batch(&by_owner::ByOwner, &tables, &wire);
        black_box(outcomes);
    });

    let engine = RulesEngine::new(RuleLimits::default()).expect("engine");
    let module = engine
        .load_file(&wasm::module("by-owner"), "")
        .expect("load by-owner");
    let mut instance = module.instantiate().expect("instantiate");

    // Both paths must agree before their speed means anything.
    let via_wasm = instance.evaluate(&changes);
    let via_native = sluice_guest_sdk::evaluate_batch(&by_owner::ByOwner, &tables, &wire);
    assert_eq!(via_wasm.len(), via_native.len());
    for (w, n) in via_wasm.iter().zip(&via_native) {
        match (w, n) {
            (sluice::model::Outcome::Keep(a), sluice_guest_sdk::Outcome::Keep(b)) => {
                assert_eq!(a, b)
            }
            other => panic!("outcomes differ: {other:?}"),
        }
    }

    println!("by-owner, {CHANGES} changes per round, ns per change");
    println!(
        "{:>10} {:>12} {:>12} {:>8} {:>12}",
        "batch", "wasm", "native", "ratio", "target"
    );
    let mut figure = None;
    for batch in [1usize, 64, 512] {
        let wasm_ns = measure(|| {
            for chunk in changes.chunks(batch) {
                black_box(instance.evaluate(chunk));
            }
        });
        let target = 2.0 * native + 300.0;
        println!(
            "{batch:>10} {wasm_ns:>12.1} {native:>12.1} {:>8.2} {target:>12.1}",
            wasm_ns / native
        );
        if batch == 512 {
            figure = Some((wasm_ns, target));
        }
    }
    if let Some((wasm_ns, target)) = figure {
        report.add(
            "3. by-owner in Wasm at batch 512, 6 columns",
            format!("{wasm_ns:.0} ns/change vs native {native:.0} ns (limit {target:.0} ns)"),
            "<= 2 x native + 0.3 us",
            wasm_ns <= target,
        );
    }
}

/// ns per change of `round`, which processes all `CHANGES` once.
fn measure(mut round: impl FnMut()) -> f64 {
    for _ in 0..3 {
        round();
    }
    let started = Instant::now();
    let mut rounds = 0u32;
    while started.elapsed() < MEASURE_FOR {
        round();
        rounds += 1;
    }
    started.elapsed().as_nanos() as f64 / (f64::from(rounds) * CHANGES as f64)
}

/// W1's `items` table: id, owner, list, title, done, timestamp.
fn model_changes() -> Vec<Change> {
    let columns = [
        ("id", 20, true),
        ("user_id", 25, false),
        ("list_id", 20, false),
        ("title", 25, false),
        ("done", 16, false),
        ("updated_at", 1184, false),
    ];
    let table = Arc::new(TableSchema {
        oid: 16384,
        schema: "public".into(),
        name: "items".into(),
        replica_identity: ReplicaIdentity::Default,
        columns: columns
            .iter()
            .map(|(name, oid, key)| Column {
                name: (*name).into(),
                type_oid: *oid,
                type_modifier: -1,
                key: *key,
            })
            .collect(),
        primary_key: vec![0],
        identity: vec![0],
    });
    (0..CHANGES)
        .map(|i| Change {
            table: Arc::clone(&table),
            op: if i % 3 == 0 {
                Operation::Update
            } else {
                Operation::Insert
            },
            new: Some(vec![
                Value::Int(i as i64),
                if i % 10 == 0 {
                    Value::Null
                } else {
                    Value::Text(format!("user-{}", i % 1000))
                },
                Value::Int((i % 5000) as i64),
                Value::Text(format!("buy milk #{i}")),
                Value::Bool(i % 2 == 0),
                Value::Timestamptz("2024-05-01T10:00:00.123456Z".into()),
            ]),
            old: None,
            lsn: Lsn(i as u64),
        })
        .collect()
}

/// The same changes in the guest SDK's form, built before timing.
fn sdk_changes(changes: &[Change]) -> (Vec<Table>, Vec<WireChange>) {
    let schema = &changes[0].table;
    let table = Table {
        name: schema.qualified_name(),
        columns: schema
            .columns
            .iter()
            .map(|c| SdkColumn {
                name: c.name.clone(),
                type_name: sluice::model::type_name(c.type_oid).into(),
                key: c.key,
            })
            .collect(),
    };
    let convert = |v: &Value| match v {
        Value::Null => SdkValue::Null,
        Value::Int(i) => SdkValue::Int(*i),
        Value::Bool(b) => SdkValue::Bool(*b),
        Value::Text(s) => SdkValue::Text(s.clone()),
        Value::Timestamptz(s) => SdkValue::Timestamptz(s.clone()),
        other => panic!("benchmark data has no {other:?}"),
    };
    let wire = changes
        .iter()
        .map(|c| WireChange {
            table: 0,
            op: match c.op {
                Operation::Insert => sluice_guest_sdk::Operation::Insert,
                Operation::Update => sluice_guest_sdk::Operation::Update,
                Operation::Delete => sluice_guest_sdk::Operation::Delete,
            },
            new: c.new.as_ref().map(|row| row.iter().map(convert).collect()),
            old: None,
            lsn: c.lsn.0,
        })
        .collect();
    (vec![table], wire)
}
