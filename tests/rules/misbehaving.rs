//! Modules that misbehave: the host survives, the bad change gets an error,
//! its neighbours get their real outcomes, and giving up takes bounded time.

use std::time::{Duration, Instant};

use sluice::model::Outcome;
use sluice::rules::{RuleLimits, RulesEngine, RulesError, RulesInstance};

use crate::changes::{item, items};
use crate::wasm;

const DEADLINE: Duration = Duration::from_millis(200);
const BATCH: i64 = 16;
const BAD: usize = 9;

fn limits() -> RuleLimits {
    RuleLimits {
        batch_deadline: DEADLINE,
        memory_bytes: 32 << 20,
        ..RuleLimits::default()
    }
}

fn instance(package: &str) -> RulesInstance {
    instance_with(package, limits())
}

fn instance_with(package: &str, limits: RuleLimits) -> RulesInstance {
    let engine = RulesEngine::new(limits).unwrap();
    let module = engine.load_file(&wasm::module(package), "").unwrap();
    module.instantiate().unwrap()
}

fn good(id: i64) -> Outcome {
    Outcome::Keep(vec![format!("id:Value::Int({id})")])
}

/// Evaluates a batch whose change `BAD` has title `trigger`, checks every
/// other outcome, and returns the bad change's outcome and the time taken.
fn run_with_bad_change(instance: &mut RulesInstance, trigger: &str) -> (Outcome, Duration) {
    let items = items();
    let batch: Vec<_> = (0..BATCH)
        .map(|i| item(&items, i, if i as usize == BAD { trigger } else { "ok" }))
        .collect();
    let started = Instant::now();
    let mut outcomes = instance.evaluate(&batch);
    let elapsed = started.elapsed();
    assert_eq!(outcomes.len(), batch.len());
    let bad = outcomes.remove(BAD);
    let expected: Vec<_> = (0..BATCH)
        .filter(|&i| i as usize != BAD)
        .map(good)
        .collect();
    assert_eq!(outcomes, expected, "neighbours of the bad change");
    (bad, elapsed)
}

/// After misbehaving, the same instance keeps working.
fn assert_still_serves(instance: &mut RulesInstance) {
    let items = items();
    let batch: Vec<_> = (100..110).map(|i| item(&items, i, "ok")).collect();
    let expected: Vec<_> = (100..110).map(good).collect();
    assert_eq!(instance.evaluate(&batch), expected);
}

#[test]
fn loop_forever_is_cut_off_at_the_deadline() {
    let mut instance = instance("loop-forever");
    let (bad, elapsed) = run_with_bad_change(&mut instance, "loop");
    assert_eq!(
        bad,
        Outcome::Error(
            "rule did not finish within the batch deadline of 200ms (RuleLimits::batch_deadline)"
                .into()
        )
    );
    // The batch misses its deadline, then its changes run one at a time: only the looping one
    // misses it again. Two deadlines, where bisection spent five (16 -> 8 -> 4 -> 2 -> 1).
    assert!(elapsed >= DEADLINE * 2, "gave up after {elapsed:?}");
    assert!(
        elapsed < DEADLINE * 2 + Duration::from_secs(2),
        "gave up after {elapsed:?}"
    );
    assert_still_serves(&mut instance);
}

/// A rule that loops on every change: the batch misses its deadline, the first change alone
/// misses it again, as does the second, and the isolation budget (two more missed deadlines)
/// is spent; the other changes fail with a reason that says they were not evaluated. Three deadlines in all, where bisection
/// spent `2n - 1`.
#[test]
fn a_batch_looping_on_every_change_costs_three_deadlines() {
    let mut instance = instance("loop-forever");
    let items = items();
    let batch: Vec<_> = (0..BATCH).map(|i| item(&items, i, "loop")).collect();
    let started = Instant::now();
    let outcomes = instance.evaluate(&batch);
    let elapsed = started.elapsed();
    let deadline = Outcome::Error(
        "rule did not finish within the batch deadline of 200ms (RuleLimits::batch_deadline)"
            .into(),
    );
    let spent = Outcome::Error(
        "rule not evaluated for this change: its batch missed the deadline of 200ms and \
         isolating the changes that caused it used up the budget of 2 more missed \
         deadlines or 2s in the rule (RuleLimits::isolation_budget)"
            .into(),
    );
    let mut expected = vec![spent; BATCH as usize];
    expected[0] = deadline.clone();
    expected[1] = deadline;
    assert_eq!(outcomes, expected);
    assert!(elapsed >= DEADLINE * 3, "gave up after {elapsed:?}");
    assert!(
        elapsed < DEADLINE * 3 + Duration::from_secs(2),
        "gave up after {elapsed:?}"
    );
    assert_still_serves(&mut instance);
}

#[test]
fn memory_bomb_hits_the_memory_cap() {
    // The cap, not the deadline, is under test: growing 32 MiB of guest memory (each page
    // zeroed) took over 200 ms on a loaded CI machine, and the deadline fired first.
    let mut instance = instance_with(
        "memory-bomb",
        RuleLimits {
            batch_deadline: Duration::from_secs(4),
            ..limits()
        },
    );
    let (bad, elapsed) = run_with_bad_change(&mut instance, "bomb");
    assert_eq!(
        bad,
        Outcome::Error(
            "rule exceeded the memory cap of 33554432 bytes (RuleLimits::memory_bytes)".into()
        )
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "gave up after {elapsed:?}"
    );
    assert_still_serves(&mut instance);
}

#[test]
fn panic_is_isolated_and_its_message_reported() {
    let mut instance = instance("panic-on-value");
    let (bad, elapsed) = run_with_bad_change(&mut instance, "panic");
    assert_eq!(
        bad,
        Outcome::Error(
            "rule panicked at tests/fixtures/panic-on-value/src/lib.rs:13: \
             fixture refuses title 'panic' (id Value::Int(9))"
                .into()
        )
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "gave up after {elapsed:?}"
    );
    assert_still_serves(&mut instance);
}

#[test]
fn ten_thousand_buckets_exceed_the_fan_out_cap() {
    let mut instance = instance("ten-thousand-buckets");
    let (bad, _) = run_with_bad_change(&mut instance, "many");
    assert_eq!(
        bad,
        Outcome::Error(
            "rule returned 10000 bucket ids for one change; at most 64 are allowed \
             (RuleLimits::max_buckets_per_change)"
                .into()
        )
    );
    assert_still_serves(&mut instance);
}

#[test]
fn invalid_bucket_ids_are_rejected() {
    let mut instance = instance("invalid-bucket-id");
    let (empty, _) = run_with_bad_change(&mut instance, "empty");
    assert_eq!(
        empty,
        Outcome::Error("rule returned an empty bucket id".into())
    );
    let (control, _) = run_with_bad_change(&mut instance, "control");
    assert_eq!(
        control,
        Outcome::Error(
            "rule returned bucket id \"user:\\u{7}\", which contains control character U+0007"
                .into()
        )
    );
    let (long, _) = run_with_bad_change(&mut instance, "long");
    assert_eq!(
        long,
        Outcome::Error(format!(
            "rule returned a bucket id of 256 bytes ({:?}...); at most 255 are allowed",
            "x".repeat(32)
        ))
    );
}

#[test]
fn failing_init_rejects_the_module() {
    let engine = RulesEngine::new(limits()).unwrap();
    let path = wasm::module("failing-init");
    let err = match engine.load_file(&path, "anything") {
        Err(err) => err,
        Ok(_) => panic!("failing-init loaded"),
    };
    assert!(matches!(err, RulesError::InitFailed { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "module {}: init failed: failing-init rejects every configuration (got 8 bytes)",
            path.display()
        )
    );
}

#[test]
fn deep_recursion_is_reported_as_a_stack_overflow() {
    // Rust's stack lives in linear memory: running out of it is an out-of-bounds access, which
    // the host recognises as a recursion from the trap's backtrace.
    let mut instance = instance("hostile-outputs");
    let (bad, _) = run_with_bad_change(&mut instance, "recurse");
    assert_eq!(
        bad,
        Outcome::Error(
            "rule trapped: stack overflow, probably (the innermost 16 calls go round 1 function): wasm trap: out of bounds memory access".into()
        )
    );
    assert_still_serves(&mut instance);
}

/// An uncaught exception in a Python or JavaScript component is printed on stderr before the
/// trap: the reason carries its last line, for the change and for init alike.
#[test]
fn a_trap_is_explained_by_the_guests_last_stderr_line() {
    let mut instance = instance("misbehaving-guest");
    let (bad, _) = run_with_bad_change(&mut instance, "stderrtrap");
    assert_eq!(
        bad,
        Outcome::Error(format!(
            "rule trapped: wasm trap: wasm `unreachable` instruction executed; the module wrote to stderr: KeyError: 'owner' (id id:Value::Int({BAD}))"
        ))
    );
    // Only the failing call's stderr explains it: the neighbours wrote nothing.
    assert_still_serves(&mut instance);

    let engine = RulesEngine::new(limits()).unwrap();
    let err = engine
        .load_file(&wasm::module("misbehaving-guest"), "stderr-trap-in-init")
        .err()
        .unwrap();
    assert!(
        err.to_string().ends_with(
            "init trapped: wasm trap: wasm `unreachable` instruction executed; the module wrote to stderr: TypeError: config is not an object"
        ),
        "{err}"
    );
}
