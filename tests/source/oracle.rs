//! The oracle test: a randomized workload decoded by sluice from a pgoutput slot must match what
//! PostgreSQL's own `test_decoding` plugin reports for the same transactions, from a slot
//! created at the same point: operations, keys, new and old values, unchanged TOAST and
//! transaction boundaries (by xid).

use std::collections::HashMap;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use sluice::model::{Change, Value};
use sluice::source::values::decode_text;
use sluice::source::{SourceEvent, StartOptions};

use crate::{create_slot, pg, setup};

const SCHEMA: &str = "
    CREATE TYPE mood AS ENUM ('happy', 'sad');
    CREATE DOMAIN small_pos AS int CHECK (VALUE > 0);
    CREATE TYPE pair AS (a int, b text);
    CREATE TABLE typed (
        id int PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8,
        n numeric, t text, vc varchar(20), bc char(5), nm name, u uuid, j json, jb jsonb,
        by bytea, d date, tm time, ts timestamp, tz timestamptz, ai int4[], at text[],
        m mood, dom small_pos, comp pair, big text);
    ALTER TABLE typed ALTER COLUMN big SET STORAGE EXTERNAL;
    CREATE TABLE full_t (id int, v text, big text);
    ALTER TABLE full_t REPLICA IDENTITY FULL;
    ALTER TABLE full_t ALTER COLUMN big SET STORAGE EXTERNAL;";

/// SQL literals per column of `typed` (after id), including the special values.
fn pools() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("b", vec!["true", "false", "NULL"]),
        ("i2", vec!["-32768", "0", "32767", "NULL"]),
        ("i4", vec!["-2147483648", "42", "NULL"]),
        ("i8", vec!["9223372036854775807", "-1", "NULL"]),
        (
            "f4",
            vec![
                "'NaN'",
                "'Infinity'",
                "'-Infinity'",
                "1.5",
                "-0.1",
                "3.4028235e38",
                "NULL",
            ],
        ),
        ("f8", vec!["'NaN'", "1e-300", "0.1", "'-Infinity'", "NULL"]),
        (
            "n",
            vec![
                "'NaN'",
                "'Infinity'",
                "'-Infinity'",
                "123456789012345678901234567890.123456789",
                "-0.000001",
                "NULL",
            ],
        ),
        (
            "t",
            vec![
                "'plain'",
                "'it''s'",
                r"'back\slash'",
                "'ünïcødé ✓'",
                "''",
                "'new-tuple: x[int]:1'",
                "NULL",
            ],
        ),
        ("vc", vec!["'short'", "NULL"]),
        ("bc", vec!["'ab'", "NULL"]),
        ("nm", vec!["'a name'", "NULL"]),
        ("u", vec!["'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "NULL"]),
        ("j", vec![r#"'{"a": [1, 2]}'"#, "'null'", "NULL"]),
        ("jb", vec![r#"'{"b": {"c": "d''e"}}'"#, "'[]'", "NULL"]),
        ("by", vec![r"'\x00ff10'", "''", "NULL"]),
        (
            "d",
            vec![
                "'2024-02-29'",
                "'infinity'",
                "'-infinity'",
                "'0044-03-15 BC'",
                "NULL",
            ],
        ),
        ("tm", vec!["'13:14:15.123456'", "'00:00'", "NULL"]),
        (
            "ts",
            vec![
                "'2024-01-02 03:04:05.5'",
                "'infinity'",
                "'-infinity'",
                "NULL",
            ],
        ),
        (
            "tz",
            vec![
                "'2024-01-02 03:04:05.5+05:30'",
                "'infinity'",
                "'1999-12-31 23:59:59-08'",
                "NULL",
            ],
        ),
        (
            "ai",
            vec!["'{}'", "'{1,NULL,3}'", "'{{1,2},{3,4}}'", "NULL"],
        ),
        ("at", vec![r#"'{"a b",NULL,"q\"x"}'"#, "'{}'", "NULL"]),
        ("m", vec!["'happy'", "'sad'", "NULL"]),
        ("dom", vec!["7", "NULL"]),
        ("comp", vec!["ROW(1, 'x y')::pair", "NULL"]),
        ("big", vec!["repeat('B', 3000)", "'small'", "NULL"]),
    ]
}

fn workload(seed: u64) -> Vec<String> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let pools = pools();
    let pick =
        |rng: &mut rand::rngs::StdRng, i: usize| pools[i].1[rng.random_range(0..pools[i].1.len())];
    let cols: Vec<&str> = pools.iter().map(|(c, _)| *c).collect();
    let mut live: Vec<i32> = Vec::new();
    let mut full_live: Vec<i32> = Vec::new();
    let mut next_id = 1;
    let mut txs = Vec::new();
    let mut altered = false;
    for n in 0..80 {
        if n == 40 {
            // Mid-stream schema change: later changes carry the new column.
            txs.push("ALTER TABLE typed ADD COLUMN extra int DEFAULT 5".to_owned());
            altered = true;
        }
        if n == 60 {
            txs.push("TRUNCATE typed, full_t RESTART IDENTITY CASCADE".to_owned());
            live.clear();
            full_live.clear();
        }
        let mut stmts = Vec::new();
        for _ in 0..rng.random_range(1..5) {
            match rng.random_range(0..10) {
                0..=3 => {
                    let vals: Vec<&str> = (0..cols.len()).map(|i| pick(&mut rng, i)).collect();
                    let (extra_c, extra_v) = if altered {
                        (", extra", ", 9")
                    } else {
                        ("", "")
                    };
                    stmts.push(format!(
                        "INSERT INTO typed (id, {}{extra_c}) VALUES ({next_id}, {}{extra_v})",
                        cols.join(", "),
                        vals.join(", ")
                    ));
                    live.push(next_id);
                    next_id += 1;
                }
                4 | 5 if !live.is_empty() => {
                    // Leaves `big` alone: unchanged TOAST when it is stored out of line.
                    let id = live[rng.random_range(0..live.len())];
                    // Two distinct columns, never `big` (the last).
                    let last = cols.len() - 1;
                    let c1 = rng.random_range(0..last);
                    let c2 = (c1 + rng.random_range(1..last)) % last;
                    let (v1, v2) = (pick(&mut rng, c1), pick(&mut rng, c2));
                    stmts.push(format!(
                        "UPDATE typed SET {} = {v1}, {} = {v2} WHERE id = {id}",
                        cols[c1], cols[c2]
                    ));
                }
                6 if !live.is_empty() => {
                    let k = rng.random_range(0..live.len());
                    stmts.push(format!(
                        "UPDATE typed SET id = {next_id} WHERE id = {}",
                        live[k]
                    ));
                    live[k] = next_id;
                    next_id += 1;
                }
                7 if !live.is_empty() => {
                    let id = live.swap_remove(rng.random_range(0..live.len()));
                    stmts.push(format!("DELETE FROM typed WHERE id = {id}"));
                }
                8 => {
                    let big = if rng.random_bool(0.5) {
                        "repeat('F', 2500)"
                    } else {
                        "NULL"
                    };
                    stmts.push(format!(
                        "INSERT INTO full_t VALUES ({next_id}, {}, {big})",
                        pick(&mut rng, 7)
                    ));
                    full_live.push(next_id);
                    next_id += 1;
                }
                _ if !full_live.is_empty() => {
                    let id = full_live[rng.random_range(0..full_live.len())];
                    if rng.random_bool(0.5) {
                        stmts.push(format!(
                            "UPDATE full_t SET v = {} WHERE id = {id}",
                            pick(&mut rng, 7)
                        ));
                    } else {
                        full_live.retain(|x| *x != id);
                        stmts.push(format!("DELETE FROM full_t WHERE id = {id}"));
                    }
                }
                _ => {}
            }
        }
        if !stmts.is_empty() {
            txs.push(format!("BEGIN; {}; COMMIT;", stmts.join("; ")));
        }
    }
    txs
}

/// One operation in a normalised form both sides are brought to.
#[derive(Debug, PartialEq)]
enum Op {
    Change {
        table: String,
        op: String,
        /// `name=Debug(Value)` per column that the oracle printed.
        new: Option<Vec<String>>,
        old: Option<Vec<String>>,
    },
    Truncate {
        tables: Vec<String>,
        cascade: bool,
        restart: bool,
    },
}

/// `name[type]:value` items of a test_decoding tuple, values still in test_decoding's form.
fn parse_columns(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let open = i + s[i..].find('[').unwrap();
        let name = s[i..open].to_owned();
        let close = open + s[open..].find("]:").unwrap();
        i = close + 2;
        let start = i;
        if b[i] == b'\'' {
            i += 1;
            loop {
                if b[i] == b'\'' {
                    if i + 1 < b.len() && b[i + 1] == b'\'' {
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                i += 1;
            }
        } else {
            while i < b.len() && b[i] != b' ' {
                i += 1;
            }
        }
        out.push((name, s[start..i].to_owned()));
    }
    out
}

fn oracle_value(type_oid: u32, raw: &str) -> Value {
    match raw {
        "null" => Value::Null,
        "unchanged-toast-datum" => Value::Unchanged,
        _ => match raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
            Some(q) => decode_text(type_oid, &q.replace("''", "'")),
            None => decode_text(type_oid, raw),
        },
    }
}

fn render(change: &Change, cols: &[(String, String)], row: &[Value]) -> (Vec<String>, Vec<String>) {
    // Oracle side decoded with the column types from sluice's schema; columns the oracle did not
    // print must be null on sluice's side (key-only old tuples).
    let mut oracle = Vec::new();
    let mut ours = Vec::new();
    for (i, c) in change.table.columns.iter().enumerate() {
        match cols.iter().find(|(n, _)| n == &c.name) {
            Some((_, raw)) => {
                oracle.push(format!("{}={:?}", c.name, oracle_value(c.type_oid, raw)));
                ours.push(format!("{}={:?}", c.name, row[i]));
            }
            None => {
                oracle.push(format!("{}=<absent>", c.name));
                let v = &row[i];
                ours.push(format!(
                    "{}={}",
                    c.name,
                    if *v == Value::Null {
                        "<absent>".to_owned()
                    } else {
                        format!("{v:?}")
                    }
                ));
            }
        }
    }
    for (n, _) in cols {
        if change.table.column_index(n).is_none() {
            oracle.push(format!("{n}=<not in sluice's schema>"));
        }
    }
    (oracle, ours)
}

#[tokio::test]
async fn pgoutput_matches_test_decoding() {
    let (_db, cfg, client) = setup("oracle", SCHEMA).await;
    let start_lsn = create_slot(&cfg, "s_pgoutput").await;
    client
        .batch_execute("SELECT pg_create_logical_replication_slot('s_oracle', 'test_decoding')")
        .await
        .unwrap();
    let txs = workload(20260501);
    for tx in &txs {
        client
            .batch_execute(tx)
            .await
            .unwrap_or_else(|e| panic!("{e}: {tx}"));
    }
    client
        .batch_execute(
            "SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET extra_float_digits = 3; \
             SET bytea_output = 'hex'; SET IntervalStyle = 'postgres'",
        )
        .await
        .unwrap();
    let lines: Vec<String> = client
        .query(
            "SELECT data FROM pg_logical_slot_get_changes('s_oracle', NULL, NULL, \
             'include-xids', '1', 'skip-empty-xacts', '1')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let n_tx = lines.iter().filter(|l| l.starts_with("BEGIN")).count();
    assert!(n_tx >= 60, "workload produced only {n_tx} transactions");

    // sluice's side.
    let conn = sluice::source::ReplicationConnection::connect(&cfg)
        .await
        .unwrap();
    let mut opts = StartOptions::new("s_pgoutput", vec!["pub".to_owned()]);
    opts.start_lsn = start_lsn;
    let mut stream = conn.start_replication(opts).await.unwrap();
    let mut ours: Vec<(u32, Vec<SourceEvent>)> = Vec::new();
    // A transaction that touched nothing published (the workload's DDL) reaches pgoutput as an
    // empty BEGIN/COMMIT on PostgreSQL 14; 15 skips it, as test_decoding's skip-empty-xacts does.
    let is_empty = |evs: &Vec<SourceEvent>| matches!(evs.as_slice(), [SourceEvent::Commit { .. }]);
    while ours.iter().filter(|(_, evs)| !is_empty(evs)).count() < n_tx
        || !matches!(ours.last(), Some((_, evs)) if matches!(evs.last(), Some(SourceEvent::Commit { .. })))
    {
        let ev = tokio::time::timeout(Duration::from_secs(30), stream.recv())
            .await
            .expect("pgoutput stream stalled")
            .unwrap()
            .unwrap();
        match ev {
            SourceEvent::Begin { xid, .. } => ours.push((xid, Vec::new())),
            SourceEvent::Keepalive { .. } | SourceEvent::Relation(_) => {}
            other => ours
                .last_mut()
                .expect("event outside a transaction")
                .1
                .push(other),
        }
    }
    stream.close().await.unwrap();
    let empty: Vec<u32> = ours
        .iter()
        .filter(|(_, evs)| is_empty(evs))
        .map(|(xid, _)| *xid)
        .collect();
    if pg::cluster().major_version() == 14 {
        assert_eq!(
            empty.len(),
            1,
            "PostgreSQL 14's pgoutput sends the workload's one DDL transaction as an empty one"
        );
    } else {
        assert_eq!(
            empty,
            Vec::<u32>::new(),
            "pgoutput 15+ skips empty transactions"
        );
    }
    ours.retain(|(_, evs)| !is_empty(evs));

    // Pair the transactions, then the operations, and compare in the oracle's terms.
    let mut oracle_txs: Vec<(u32, Vec<String>)> = Vec::new();
    for l in &lines {
        if let Some(x) = l.strip_prefix("BEGIN ") {
            oracle_txs.push((x.parse().unwrap(), Vec::new()));
        } else if l.starts_with("COMMIT") {
        } else {
            oracle_txs.last_mut().unwrap().1.push(l.clone());
        }
    }
    assert_eq!(
        oracle_txs.iter().map(|t| t.0).collect::<Vec<_>>(),
        ours.iter().map(|t| t.0).collect::<Vec<_>>(),
        "transaction boundaries (xids) differ"
    );
    let mut compared = HashMap::<&str, usize>::new();
    for ((xid, olines), (_, events)) in oracle_txs.iter().zip(&ours) {
        let changes: Vec<&SourceEvent> = events
            .iter()
            .filter(|e| !matches!(e, SourceEvent::Commit { .. }))
            .collect();
        assert_eq!(olines.len(), changes.len(), "xid {xid}: {olines:#?}");
        for (line, ev) in olines.iter().zip(changes) {
            let (head, body) = line.split_once(": ").unwrap();
            let (kind, rest) = body.split_once(':').unwrap();
            let rest = rest.trim_start();
            match ev {
                SourceEvent::Truncate {
                    tables,
                    cascade,
                    restart_identity,
                    ..
                } => {
                    assert_eq!(kind, "TRUNCATE", "xid {xid}");
                    let names: Vec<String> = tables
                        .iter()
                        .map(|t| format!("{}.{}", t.schema, t.name))
                        .collect();
                    let onames: Vec<String> = head
                        .trim_start_matches("table ")
                        .split(", ")
                        .map(str::to_owned)
                        .collect();
                    let mine = Op::Truncate {
                        tables: names,
                        cascade: *cascade,
                        restart: *restart_identity,
                    };
                    let theirs = Op::Truncate {
                        tables: onames,
                        cascade: rest.contains("cascade"),
                        restart: rest.contains("restart_seqs"),
                    };
                    assert_eq!(mine, theirs, "xid {xid}");
                    *compared.entry("truncate").or_default() += 1;
                }
                SourceEvent::Change(c) => {
                    let table = format!("{}.{}", c.table.schema, c.table.name);
                    assert_eq!(head, format!("table {table}"), "xid {xid}");
                    let (old_cols, new_cols) = if let Some(r) = rest.strip_prefix("old-key: ") {
                        let (o, n) = r.split_once(" new-tuple: ").unwrap_or((r, ""));
                        (
                            Some(parse_columns(o)),
                            if kind == "DELETE" {
                                None
                            } else {
                                Some(parse_columns(n))
                            },
                        )
                    } else if kind == "DELETE" {
                        (Some(parse_columns(rest)), None)
                    } else {
                        (None, Some(parse_columns(rest)))
                    };
                    // sluice fills an unchanged TOAST value from the old tuple where that
                    // carries it (REPLICA IDENTITY FULL, or the value is part of the key).
                    let mut filled = 0;
                    let new_cols = new_cols.map(|cols| {
                        cols.into_iter()
                            .map(|(name, raw)| {
                                let before = old_cols.as_ref().and_then(|o| {
                                    o.iter().find(|(n, _)| *n == name).map(|(_, r)| r)
                                });
                                match before {
                                    Some(b)
                                        if raw == "unchanged-toast-datum"
                                            && b != "null"
                                            && b != "unchanged-toast-datum" =>
                                    {
                                        filled += 1;
                                        (name, b.clone())
                                    }
                                    _ => (name, raw),
                                }
                            })
                            .collect::<Vec<_>>()
                    });
                    let op = c.op.as_str().to_uppercase();
                    assert_eq!(kind, op, "xid {xid}: {line}");
                    let (mut o_new, mut s_new, mut o_old, mut s_old) = (None, None, None, None);
                    if let (Some(cols), Some(row)) = (&new_cols, &c.new) {
                        let (a, b) = render(c, cols, row);
                        o_new = Some(a);
                        s_new = Some(b);
                    }
                    if let (Some(cols), Some(row)) = (&old_cols, &c.old) {
                        let (a, b) = render(c, cols, row);
                        o_old = Some(a);
                        s_old = Some(b);
                    }
                    assert_eq!(new_cols.is_some(), c.new.is_some(), "xid {xid}: {line}");
                    assert_eq!(old_cols.is_some(), c.old.is_some(), "xid {xid}: {line}");
                    let theirs = Op::Change {
                        table: table.clone(),
                        op: op.clone(),
                        new: o_new,
                        old: o_old,
                    };
                    let mine = Op::Change {
                        table,
                        op,
                        new: s_new,
                        old: s_old,
                    };
                    assert_eq!(mine, theirs, "xid {xid}: {line}");
                    *compared.entry(c.op.as_str()).or_default() += 1;
                    if c.new
                        .as_ref()
                        .is_some_and(|r| r.contains(&Value::Unchanged))
                    {
                        *compared.entry("unchanged-toast").or_default() += 1;
                    }
                    if filled > 0 {
                        *compared.entry("unchanged-toast-filled").or_default() += 1;
                    }
                    if c.table.column_index("extra").is_some() {
                        *compared.entry("after-alter").or_default() += 1;
                    }
                }
                other => panic!("xid {xid}: unexpected {other:?} for {line}"),
            }
        }
    }
    // The workload really covered every case the oracle is meant to check.
    for kind in [
        "insert",
        "update",
        "delete",
        "truncate",
        "unchanged-toast",
        "unchanged-toast-filled",
        "after-alter",
    ] {
        assert!(
            compared.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} compared: {compared:?}"
        );
    }
}
