//! Replays the committed fuzz corpora (tests/fuzz/corpus/{values,jsonl}) through the same entry
//! points as the fuzz targets, plus a fixed-seed mutation pass over them, so CI catches a
//! regression without cargo-fuzz or a nightly toolchain.

use std::path::PathBuf;

use rand::{Rng, SeedableRng};
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

/// The `values` fuzz target's body.
fn values_target(data: &[u8]) {
    const OIDS: [u32; 24] = [
        16, 17, 18, 19, 20, 21, 23, 25, 114, 700, 701, 1042, 1043, 1082, 1083, 1114, 1184, 1266,
        1700, 2950, 3802, 1007, 1009, 1231,
    ];
    if data.len() < 4 {
        return;
    }
    let (sel, rest) = data.split_at(4);
    let raw = u32::from_be_bytes([sel[0], sel[1], sel[2], sel[3]]);
    let oid = if raw & 0x8000_0000 == 0 {
        OIDS[raw as usize % OIDS.len()]
    } else {
        raw & 0x7fff_ffff
    };
    if let Ok(text) = std::str::from_utf8(rest) {
        let _ = decode_text(oid, text);
    }
}

/// The `jsonl` fuzz target's body.
fn jsonl_target(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut reader = ChangeReader::new();
    for (i, line) in text.lines().enumerate() {
        let _ = reader.parse(i + 1, line);
    }
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

#[test]
fn values_corpus_replays_without_panics() {
    let seeds = corpus("values");
    assert!(
        seeds.len() >= 70,
        "the values corpus has {} files",
        seeds.len()
    );
    for s in &seeds {
        values_target(s);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..20_000 {
        values_target(&mutate(&mut rng, &seeds));
    }
    // Spot checks of what the hostile seeds decode to.
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
    let seeds = corpus("jsonl");
    assert!(
        seeds.len() >= 19,
        "the jsonl corpus has {} files",
        seeds.len()
    );
    for s in &seeds {
        jsonl_target(s);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for _ in 0..20_000 {
        jsonl_target(&mutate(&mut rng, &seeds));
    }
    let mut reader = ChangeReader::new();
    let change = reader
        .parse(1, std::str::from_utf8(&seeds[0]).unwrap())
        .unwrap();
    assert_eq!(change.op, Operation::Insert);
    let err = reader
        .parse(5, std::str::from_utf8(&seeds[4]).unwrap())
        .unwrap_err();
    assert_eq!(err.line, 5);
}
