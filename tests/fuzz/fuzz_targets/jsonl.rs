//! Fuzz the `sluice eval` JSONL reader: any line must parse or give a LineError, never panic.
//! The body is `sluice::fuzzing::jsonl`, which tests/faults/corpus.rs also replays. See
//! README.md, "Testing", for how to run it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzzing::jsonl(data));
