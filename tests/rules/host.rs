//! The host API the pipeline calls: loading, versions, batches.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use sluice::model::{Operation, Outcome, Value};
use sluice::rules::{RuleLimits, RulesEngine, RulesInstance};

use crate::changes::{insert, item, items, table};
use crate::wasm;

fn user(id: &str) -> Outcome {
    Outcome::Keep(vec![format!("user:{id}")])
}

#[test]
fn version_is_the_sha256_of_the_bytes() {
    let bytes = std::fs::read(wasm::module("by-owner")).unwrap();
    let engine = RulesEngine::new(RuleLimits::default()).unwrap();
    let module = engine.load(&bytes, "").unwrap();
    assert_eq!(module.version(), hex::encode(Sha256::digest(&bytes)));
    assert_eq!(module.version().len(), 64);
    let from_file = engine.load_file(&wasm::module("by-owner"), "").unwrap();
    assert_eq!(from_file.version(), module.version());
    assert_eq!(
        from_file.label(),
        wasm::module("by-owner").display().to_string()
    );
}

#[test]
fn interleaved_tables_and_schema_versions_keep_their_order() {
    let engine = RulesEngine::new(RuleLimits::default()).unwrap();
    let module = engine.load_file(&wasm::module("by-owner"), "").unwrap();
    let mut instance = module.instantiate().unwrap();
    let items_v1 = items();
    // Same name, new shape: a schema change mid-batch is a distinct table.
    let items_v2 = table(
        "public",
        "items",
        &[("id", 20), ("user_id", 20), ("title", 25)],
    );
    let tags = table("app", "tags", &[("id", 20), ("label", 25)]);
    let batch = vec![
        item(&items_v1, 1, "a"),
        insert(&tags, vec![Value::Int(1), Value::Text("red".into())]),
        insert(&items_v2, vec![Value::Int(2), Value::Int(77), Value::Null]),
        item(&items_v1, 3, "b"),
        insert(
            &items_v2,
            vec![Value::Int(4), Value::Null, Value::Text("t".into())],
        ),
        insert(
            &items_v1,
            vec![Value::Int(5), Value::Null, Value::Unchanged],
        ),
    ];
    assert_eq!(
        instance.evaluate(&batch),
        vec![
            user("u1"),
            Outcome::Keep(vec!["global".into()]),
            user("77"),
            user("u3"),
            Outcome::Keep(vec!["global".into()]),
            Outcome::Error(
                "items: user_id was not sent (unchanged TOAST value); cannot bucket".into()
            ),
        ]
    );
}

#[test]
fn deletes_and_large_batches() {
    let engine = RulesEngine::new(RuleLimits::default()).unwrap();
    let module = engine.load_file(&wasm::module("by-owner"), "").unwrap();
    let mut instance = module.instantiate().unwrap();
    let items = items();
    let mut batch: Vec<_> = (0..3000).map(|i| item(&items, i, "x")).collect();
    batch[10].op = Operation::Delete;
    batch[10].old = batch[10].new.take();
    let outcomes = instance.evaluate(&batch);
    assert_eq!(outcomes.len(), 3000);
    for (i, outcome) in outcomes.iter().enumerate() {
        assert_eq!(outcome, &user(&format!("u{i}")), "change {i}");
    }
    assert_eq!(instance.evaluate(&[]), Vec::<Outcome>::new());
}

#[test]
fn instances_move_between_threads_and_share_the_engine() {
    fn assert_send<T: Send>() {}
    assert_send::<RulesInstance>();
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<RulesEngine>();
    assert_send_sync::<sluice::rules::RulesModule>();

    let engine = RulesEngine::new(RuleLimits::default()).unwrap();
    let module = engine.load_file(&wasm::module("by-owner"), "").unwrap();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let module = Arc::clone(&module);
            std::thread::spawn(move || {
                let mut instance = module.instantiate().unwrap();
                let items = items();
                let batch: Vec<_> = (0..100).map(|i| item(&items, w * 1000 + i, "x")).collect();
                instance.evaluate(&batch)
            })
        })
        .collect();
    for (w, worker) in workers.into_iter().enumerate() {
        let outcomes = worker.join().unwrap();
        assert_eq!(outcomes[99], user(&format!("u{}", w * 1000 + 99)));
    }
}
