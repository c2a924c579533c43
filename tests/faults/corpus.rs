//! Replays the committed fuzz corpora (tests/fuzz/corpus/{decode,values,jsonl}) through the fuzz
//! targets' own bodies (`sluice::fuzzing`), plus a fixed-seed mutation pass over them, so CI
//! catches a regression without cargo-fuzz or a nightly toolchain.

use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use sluice::fuzzing;
use sluice::model::{Operation, Value};
use sluice::rules::jsonl::ChangeReader;
use sluice::source::values::decode_text;

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(name);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

fn mutate(rng: &mut rand::rngs::StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.random_range(0..seeds.len())].clone();
    for _ in 0..rng.random_range(1..4) {
        match rng.random_range(0..5) {
            0 if !data.is_empty() => {
                let i = rng.random_range(0..data.len());
                data[i] ^= 1 << rng.random_range(0..8);
            }
            1 if !data.is_empty() => data.truncate(rng.random_range(0..data.len())),
            2 => {
                let other = &seeds[rng.random_range(0..seeds.len())];
                let at = rng.random_range(0..=data.len());
                data.splice(at..at, other.iter().copied());
            }
            3 => {
                let at = rng.random_range(0..=data.len());
                let byte = *b"{}[]\",:\\0NUL-e.\n"
                    .get(rng.random_range(0..16))
                    .unwrap_or(&b'x');
                data.insert(at, byte);
            }
            _ if !data.is_empty() => {
                let i = rng.random_range(0..data.len());
                data.remove(i);
            }
            _ => {}
        }
    }
    data
}

/// Replays every file of `name`'s corpus, then `mutations` fixed-seed mutations of them.
fn replay(name: &str, min_files: usize, seed: u64, target: fn(&[u8])) {
    let seeds = corpus(name);
    assert!(
        seeds.len() >= min_files,
        "the {name} corpus has {} files, expected at least {min_files}",
        seeds.len()
    );
    for s in &seeds {
        target(s);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..20_000 {
        target(&mutate(&mut rng, &seeds));
    }
}

#[test]
fn decode_corpus_replays_without_panics() {
    replay("decode", 20, 5, fuzzing::decode);
}

#[test]
fn values_corpus_replays_without_panics() {
    replay("values", 50, 7, fuzzing::values);
    // Spot checks of what hostile values decode to.
    assert!(matches!(decode_text(701, "NaN"), Value::Float(f) if f.is_nan()));
    assert_eq!(
        decode_text(701, "-Infinity"),
        Value::Float(f64::NEG_INFINITY)
    );
    assert_eq!(
        decode_text(20, "-9223372036854775809"),
        Value::Text("-9223372036854775809".into())
    );
}

#[test]
fn jsonl_corpus_replays_without_panics() {
    replay("jsonl", 15, 11, fuzzing::jsonl);
    let mut reader = ChangeReader::new();
    let change = reader
        .parse(
            1,
            r#"{"table":"public.items","op":"insert","new":{"id":1,"user_id":"u1"},"old":null}"#,
        )
        .unwrap();
    assert_eq!(change.op, Operation::Insert);
    let err = reader
        .parse(5, r#"{"table":"items","op":"upsert","new":{"id":1}}"#)
        .unwrap_err();
    assert_eq!(err.line, 5);
}
