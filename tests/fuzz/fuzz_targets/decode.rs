//! Fuzz the pgoutput decoder and the event decoder: any stream of messages must decode or give a
//! typed error, never panic. The body is `sluice::fuzzing::decode`, which tests/faults/corpus.rs
//! also replays. See README.md, "Testing", for how to run it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzzing::decode(data));
