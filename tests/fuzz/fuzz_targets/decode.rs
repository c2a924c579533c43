//! Fuzz the pgoutput decoder and the event decoder: arbitrary bytes must never panic.
//! Run with `cargo fuzz run decode --fuzz-dir tests/fuzz`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::model::Lsn;
use sluice::source::EventDecoder;
use sluice::source::pgoutput::{decode, decode_with};
use sluice::source::values::decode_text;

fuzz_target!(|data: &[u8]| {
    let _ = decode(data);
    let _ = decode_with(data, true);
    // A stream of messages split on a 0xFF separator, so the relation cache is exercised.
    let mut events = EventDecoder::new();
    for (i, msg) in data.split(|b| *b == 0xFF).enumerate() {
        let _ = events.decode(Lsn(i as u64), msg);
    }
    if let Some((&sel, rest)) = data.split_first() {
        if let Ok(text) = std::str::from_utf8(rest) {
            const OIDS: [u32; 12] = [
                16, 17, 20, 700, 1082, 1114, 1184, 1007, 1009, 1022, 1231, 3807,
            ];
            let _ = decode_text(OIDS[usize::from(sel) % OIDS.len()], text);
        }
    }
});
