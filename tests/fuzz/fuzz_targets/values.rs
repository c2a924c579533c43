//! Fuzz the typed-value decoder: any text for any type OID must give a Value, never a panic.
//! Run with `cargo fuzz run values --fuzz-dir tests/fuzz tests/fuzz/corpus/values`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::source::values::decode_text;

fuzz_target!(|data: &[u8]| {
    // The first four bytes choose the type OID (the interesting ones are listed first, so a short
    // selector still hits them); the rest is the text form.
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
});
