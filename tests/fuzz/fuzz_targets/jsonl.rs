//! Fuzz the `sluice eval` JSONL reader: any line must parse or give a LineError, never panic.
//! Run with `cargo fuzz run jsonl --fuzz-dir tests/fuzz tests/fuzz/corpus/jsonl`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::rules::jsonl::ChangeReader;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // One reader across the lines, so its schema cache sees mixed shapes of one table.
    let mut reader = ChangeReader::new();
    for (i, line) in text.lines().enumerate() {
        let _ = reader.parse(i + 1, line);
    }
});
