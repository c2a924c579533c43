//! Fuzz the typed-value decoder: any text for any type OID must give a Value, never a panic.
//! The body is `sluice::fuzzing::values`, which tests/faults/corpus.rs also replays. See
//! README.md, "Testing", for how to run it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzzing::values(data));
