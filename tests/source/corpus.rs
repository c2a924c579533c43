//! The decoder over a corpus of random, mutated and truncated messages: errors, never panics.

use rand::{Rng, SeedableRng};
use sluice::model::Lsn;
use sluice::source::EventDecoder;
use sluice::source::pgoutput::decode;

fn valid_messages() -> Vec<Vec<u8>> {
    let mut relation = vec![b'R'];
    relation.extend_from_slice(&16384u32.to_be_bytes());
    relation.extend_from_slice(b"public\0items\0d");
    relation.extend_from_slice(&2i16.to_be_bytes());
    relation.extend_from_slice(b"\x01id\0");
    relation.extend_from_slice(&23u32.to_be_bytes());
    relation.extend_from_slice(&(-1i32).to_be_bytes());
    relation.extend_from_slice(b"\x00note\0");
    relation.extend_from_slice(&25u32.to_be_bytes());
    relation.extend_from_slice(&(-1i32).to_be_bytes());
    let tuple = |out: &mut Vec<u8>| {
        out.extend_from_slice(&2i16.to_be_bytes());
        out.push(b't');
        out.extend_from_slice(&1u32.to_be_bytes());
        out.push(b'7');
        out.push(b'u');
    };
    let mut insert = vec![b'I'];
    insert.extend_from_slice(&16384u32.to_be_bytes());
    insert.push(b'N');
    tuple(&mut insert);
    let mut update = vec![b'U'];
    update.extend_from_slice(&16384u32.to_be_bytes());
    update.push(b'O');
    tuple(&mut update);
    update.push(b'N');
    tuple(&mut update);
    let mut delete = vec![b'D'];
    delete.extend_from_slice(&16384u32.to_be_bytes());
    delete.push(b'K');
    tuple(&mut delete);
    let mut begin = vec![b'B'];
    begin.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]);
    begin.extend_from_slice(&5i64.to_be_bytes());
    begin.extend_from_slice(&9u32.to_be_bytes());
    let mut commit = vec![b'C', 0];
    commit.extend_from_slice(&[0u8; 24]);
    let mut truncate = vec![b'T'];
    truncate.extend_from_slice(&1u32.to_be_bytes());
    truncate.push(3);
    truncate.extend_from_slice(&16384u32.to_be_bytes());
    let mut message = vec![b'M', 1];
    message.extend_from_slice(&[0u8; 8]);
    message.extend_from_slice(b"pfx\0");
    message.extend_from_slice(&3u32.to_be_bytes());
    message.extend_from_slice(b"abc");
    let mut typ = vec![b'Y'];
    typ.extend_from_slice(&99999u32.to_be_bytes());
    typ.extend_from_slice(b"public\0mood\0");
    let mut origin = vec![b'O'];
    origin.extend_from_slice(&[0u8; 8]);
    origin.extend_from_slice(b"node1\0");
    let mut stream_start = vec![b'S'];
    stream_start.extend_from_slice(&9u32.to_be_bytes());
    stream_start.push(1);
    let mut stream_commit = vec![b'c'];
    stream_commit.extend_from_slice(&9u32.to_be_bytes());
    stream_commit.push(0);
    stream_commit.extend_from_slice(&[0u8; 24]);
    let mut stream_abort = vec![b'A'];
    stream_abort.extend_from_slice(&9u32.to_be_bytes());
    stream_abort.extend_from_slice(&10u32.to_be_bytes());
    vec![
        relation,
        begin,
        insert,
        update,
        delete,
        truncate,
        message,
        typ,
        origin,
        commit,
        stream_start,
        vec![b'E'],
        stream_commit,
        stream_abort,
    ]
}

#[test]
fn valid_messages_decode_and_every_truncation_is_an_error() {
    let corpus = valid_messages();
    let mut events = EventDecoder::new();
    for m in &corpus {
        decode(m).unwrap_or_else(|e| panic!("{e} for {m:?}"));
        events
            .decode(Lsn(1), m)
            .unwrap_or_else(|e| panic!("{e} for {m:?}"));
        for cut in 0..m.len() {
            // Stream Abort carries optional protocol-4 fields, so its prefixes past the xids
            // are valid; everything else must reject a truncated message.
            if m[0] == b'A' && cut >= 9 || m[0] == b'E' && cut == 1 {
                continue;
            }
            assert!(decode(&m[..cut]).is_err(), "prefix {cut} of {m:?} decoded");
        }
    }
}

#[test]
fn random_and_mutated_messages_never_panic() {
    let corpus = valid_messages();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0005_11ce);
    let tags = b"BCORYIUDTMSEcAxZ";
    let mut decoded_ok = 0usize;
    let mut events = EventDecoder::new();
    for i in 0..200_000 {
        let msg: Vec<u8> = if i % 2 == 0 {
            let len = rng.random_range(0..64);
            let mut m: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if let Some(first) = m.first_mut() {
                *first = tags[rng.random_range(0..tags.len())];
            }
            m
        } else {
            let mut m = corpus[rng.random_range(0..corpus.len())].clone();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..m.len());
                m[at] = rng.random();
            }
            let keep = rng.random_range(0..=m.len());
            m.truncate(keep);
            m
        };
        if decode(&msg).is_ok() {
            decoded_ok += 1;
        }
        let _ = events.decode(Lsn(i), &msg);
    }
    // The mutations leave a share of messages valid, so both paths are exercised.
    assert!(decoded_ok > 1_000, "{decoded_ok}");
    assert!(decoded_ok < 150_000, "{decoded_ok}");
}
