//! Bucket rules over related rows (issue 14): memberships that follow parents and shared lists,
//! checked against an oracle of SQL joins over the final rows, with the changelog replayed as a
//! client would.

use std::collections::BTreeSet;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::pg::{self, TestDb};
use crate::support::{
    RunOpts, Sluice, assert_same_edges, changelog, edges, wait_persisted, wait_snapshot, write,
};
use crate::wasm;

type Edge = (String, String, String);

/// The issue's shared-lists tables. The foreign keys are deferrable so that a transaction can
/// insert a child before its parent, as the issue asks.
pub(crate) const SHARED_LISTS: &str = "\
CREATE TABLE lists (id bigint PRIMARY KEY, owner_id text NOT NULL, title text NOT NULL);
CREATE TABLE list_members (list_id bigint NOT NULL REFERENCES lists(id) DEFERRABLE INITIALLY DEFERRED,
  user_id text NOT NULL, PRIMARY KEY (list_id, user_id));
CREATE TABLE items (id bigint PRIMARY KEY,
  list_id bigint NOT NULL REFERENCES lists(id) DEFERRABLE INITIALLY DEFERRED, title text NOT NULL);
CREATE PUBLICATION sluice_pub FOR TABLE lists, list_members, items;";

/// Memberships as the issue's table defines them, from the rows as they are.
pub(crate) const SHARED_LISTS_ORACLE: &str = "\
WITH lb AS (SELECT id AS list_id, 'user:' || owner_id AS b FROM lists
            UNION SELECT list_id, 'user:' || user_id FROM list_members)
SELECT 'lists', list_id::text, b FROM lb
UNION ALL SELECT 'list_members', array_to_json(ARRAY[m.list_id::text, m.user_id])::text, lb.b
  FROM list_members m JOIN lb USING (list_id)
UNION ALL SELECT 'items', i.id::text, lb.b FROM items i JOIN lb USING (list_id)";

/// synchro's Northwind tables as its test setup creates them (REPLICA IDENTITY FULL on each).
const NORTHWIND: &str = "\
CREATE TYPE order_status AS ENUM ('pending','processing','shipped','delivered','cancelled');
CREATE TABLE orders (id uuid PRIMARY KEY, user_id uuid NOT NULL, status order_status NOT NULL DEFAULT 'pending',
  ship_address text NOT NULL DEFAULT '', metadata jsonb NOT NULL DEFAULT '{}', total_cents bigint NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(), deleted_at timestamptz);
CREATE TABLE order_details (id uuid PRIMARY KEY, order_id uuid NOT NULL REFERENCES orders(id),
  product_name text NOT NULL DEFAULT '', quantity integer NOT NULL DEFAULT 1, unit_price numeric(10,2) NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(), deleted_at timestamptz);
CREATE TABLE products (id uuid PRIMARY KEY, name text NOT NULL DEFAULT '', unit_price numeric(10,2) NOT NULL DEFAULT 0,
  units_in_stock integer NOT NULL DEFAULT 0, discontinued boolean NOT NULL DEFAULT false, thumbnail bytea,
  created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(), deleted_at timestamptz);
CREATE TABLE categories (id uuid PRIMARY KEY, user_id uuid, name text NOT NULL DEFAULT '',
  description text NOT NULL DEFAULT '', search_tags text[] NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(), deleted_at timestamptz);
ALTER TABLE orders REPLICA IDENTITY FULL; ALTER TABLE order_details REPLICA IDENTITY FULL;
ALTER TABLE products REPLICA IDENTITY FULL; ALTER TABLE categories REPLICA IDENTITY FULL;
CREATE PUBLICATION sluice_pub FOR TABLE orders, order_details, products, categories;";

const NORTHWIND_ORACLE: &str = "\
SELECT 'orders', id::text, 'user:' || user_id FROM orders WHERE deleted_at IS NULL
UNION ALL SELECT 'order_details', d.id::text, 'user:' || o.user_id
  FROM order_details d JOIN orders o ON o.id = d.order_id
  WHERE d.deleted_at IS NULL AND o.deleted_at IS NULL
UNION ALL SELECT 'categories', id::text, coalesce('user:' || user_id, 'global') FROM categories
  WHERE deleted_at IS NULL
UNION ALL SELECT 'products', id::text, 'global' FROM products WHERE deleted_at IS NULL";

async fn oracle(client: &tokio_postgres::Client, sql: &str) -> Vec<Edge> {
    let mut rows: Vec<Edge> = client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    rows.sort();
    rows
}

/// What a client holds after applying the whole changelog in `seq` order: per bucket and row,
/// present unless the last entry is a delete.
async fn replayed(client: &tokio_postgres::Client) -> Vec<Edge> {
    let mut rows: Vec<Edge> = client
        .query(
            "SELECT table_name, record_id, bucket_id FROM ( \
               SELECT DISTINCT ON (bucket_id, table_name, record_id) bucket_id, table_name, record_id, operation \
               FROM sync_changelog ORDER BY bucket_id, table_name, record_id, seq DESC) last \
             WHERE operation <> 3",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    rows.sort();
    rows
}

/// Edges equal the oracle, a client replaying the changelog agrees, and nothing dead-lettered.
async fn assert_converged(client: &tokio_postgres::Client, oracle_sql: &str, sluice: &Sluice) {
    let stored = edges(client).await;
    let expected = oracle(client, oracle_sql).await;
    let failures: i64 = client
        .query_one("SELECT count(*) FROM sync_rule_failures", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(failures, 0, "{}", sluice.log_text());
    assert_same_edges(&stored, &expected);
    assert_eq!(
        replayed(client).await,
        stored,
        "the changelog replayed by a client"
    );
}

/// [`write`], naming the transaction when the database refuses it.
async fn write_tx(client: &tokio_postgres::Client, sql: &str) -> i64 {
    if let Err(e) = client
        .batch_execute(&format!("BEGIN; {sql} ROLLBACK;"))
        .await
    {
        let _ = client.batch_execute("ROLLBACK").await;
        panic!("the workload wrote an invalid transaction: {e:?}\n{sql}");
    }
    write(client, sql).await
}

fn uuid(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// A random transaction of shared-lists writes. `model` tracks the rows so that every statement
/// is valid; children may come before their parent inside a transaction (deferred keys).
struct ListsModel {
    lists: BTreeSet<i64>,
    members: BTreeSet<(i64, String)>,
    items: BTreeSet<(i64, i64)>,
    next_list: i64,
    next_item: i64,
}

impl ListsModel {
    fn new() -> Self {
        ListsModel {
            lists: BTreeSet::new(),
            members: BTreeSet::new(),
            items: BTreeSet::new(),
            next_list: 1,
            next_item: 1,
        }
    }

    fn pick_list(&self, rng: &mut StdRng) -> Option<i64> {
        let n = self.lists.len();
        (n > 0).then(|| *self.lists.iter().nth(rng.random_range(0..n)).unwrap_or(&1))
    }

    fn transaction(&mut self, rng: &mut StdRng, allow_truncate: bool) -> String {
        let mut sql = String::new();
        for _ in 0..rng.random_range(1..=4) {
            sql.push_str(&self.statement(rng, allow_truncate));
        }
        sql
    }

    fn statement(&mut self, rng: &mut StdRng, allow_truncate: bool) -> String {
        let user = |rng: &mut StdRng| format!("u{}", rng.random_range(0..6));
        match (rng.random_range(0..100), self.pick_list(rng)) {
            (0..15, _) | (_, None) => {
                let id = self.next_list;
                self.next_list += 1;
                self.lists.insert(id);
                let owner = user(rng);
                if rng.random_bool(0.5) {
                    // A child first, then its parent, in one transaction.
                    let item = self.next_item;
                    self.next_item += 1;
                    self.items.insert((item, id));
                    format!(
                        "INSERT INTO items VALUES ({item}, {id}, 'early'); INSERT INTO lists VALUES ({id}, '{owner}', 'l');"
                    )
                } else {
                    format!("INSERT INTO lists VALUES ({id}, '{owner}', 'l');")
                }
            }
            (15..27, Some(list)) => format!(
                "UPDATE lists SET owner_id = '{}' WHERE id = {list};",
                user(rng)
            ),
            (27..45, Some(list)) => {
                let u = user(rng);
                if self.members.insert((list, u.clone())) {
                    format!("INSERT INTO list_members VALUES ({list}, '{u}');")
                } else {
                    self.members.remove(&(list, u.clone()));
                    format!("DELETE FROM list_members WHERE list_id = {list} AND user_id = '{u}';")
                }
            }
            (45..65, Some(list)) => {
                let item = self.next_item;
                self.next_item += 1;
                self.items.insert((item, list));
                format!("INSERT INTO items VALUES ({item}, {list}, 'i');")
            }
            (65..75, Some(list)) => match self.items.iter().next().copied() {
                Some((item, from)) => {
                    self.items.remove(&(item, from));
                    self.items.insert((item, list));
                    format!("UPDATE items SET list_id = {list} WHERE id = {item};")
                }
                None => String::new(),
            },
            (75..82, _) => match self.items.iter().last().copied() {
                Some((item, list)) => {
                    self.items.remove(&(item, list));
                    format!("DELETE FROM items WHERE id = {item};")
                }
                None => String::new(),
            },
            (82..88, Some(list)) => {
                self.lists.remove(&list);
                self.members.retain(|m| m.0 != list);
                self.items.retain(|i| i.1 != list);
                format!(
                    "DELETE FROM items WHERE list_id = {list}; DELETE FROM list_members WHERE list_id = {list}; DELETE FROM lists WHERE id = {list};"
                )
            }
            (88..90, _) if allow_truncate => {
                self.items.clear();
                // Deferred key checks of the transaction must run before a TRUNCATE.
                "SET CONSTRAINTS ALL IMMEDIATE; TRUNCATE items; SET CONSTRAINTS ALL DEFERRED;"
                    .to_owned()
            }
            (90..91, _) if allow_truncate => {
                self.members.clear();
                "SET CONSTRAINTS ALL IMMEDIATE; TRUNCATE list_members; SET CONSTRAINTS ALL DEFERRED;".to_owned()
            }
            (_, Some(list)) => format!(
                "UPDATE lists SET title = 't{}' WHERE id = {list};",
                rng.random_range(0..9)
            ),
        }
    }
}

/// Pre-existing rows (the snapshot), then random transactions; with `kill_at`, sluice is killed
/// with SIGKILL after that many transactions and started again.
async fn shared_lists_workload(name: &str, seed: u64, kill_at: Option<usize>) {
    let db = pg::cluster().create_db(name).await;
    let client = db.client().await;
    client.batch_execute(SHARED_LISTS).await.unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = ListsModel::new();
    for _ in 0..30 {
        let tx = model.transaction(&mut rng, false);
        write_tx(&client, &tx).await;
    }
    let module = wasm::module("shared-lists");
    let mut sluice = Sluice::start(&db, &module, RunOpts::default());
    wait_snapshot(&client, &mut sluice).await;
    assert_converged(&client, SHARED_LISTS_ORACLE, &sluice).await;

    let mut floor = 0;
    for n in 0..150 {
        if Some(n) == kill_at {
            sluice.kill9();
            sluice = Sluice::start(&db, &module, RunOpts::default());
        }
        let tx = model.transaction(&mut rng, true);
        floor = write_tx(&client, &tx).await;
    }
    wait_persisted(&client, floor, &mut sluice).await;
    assert_converged(&client, SHARED_LISTS_ORACLE, &sluice).await;
    assert!(sluice.stop().success(), "{}", sluice.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_lists_follow_owners_and_members_in_snapshot_and_stream() {
    shared_lists_workload("rel_lists", 14, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_lists_converge_across_a_kill_9() {
    shared_lists_workload("rel_lists_kill", 1414, Some(60)).await;
}

async fn northwind_workload(db: &TestDb, seed: u64, kill_at: Option<usize>) {
    let client = db.client().await;
    client.batch_execute(NORTHWIND).await.unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let users = |rng: &mut StdRng| uuid(900 + rng.random_range(0..5));
    let mut orders: Vec<u64> = Vec::new();
    let mut details: Vec<u64> = Vec::new();
    let mut next = 1u64;
    let mut tx = |rng: &mut StdRng, orders: &mut Vec<u64>, details: &mut Vec<u64>| -> String {
        let mut sql = String::new();
        for _ in 0..rng.random_range(1..=3) {
            let roll = rng.random_range(0..100);
            if orders.is_empty() || roll < 20 {
                let o = next;
                next += 1;
                orders.push(o);
                sql += &format!(
                    "INSERT INTO orders (id, user_id) VALUES ('{}', '{}');",
                    uuid(o),
                    users(rng)
                );
                // Details in the same transaction as their order.
                for _ in 0..rng.random_range(0..3) {
                    let d = next;
                    next += 1;
                    details.push(d);
                    sql += &format!(
                        "INSERT INTO order_details (id, order_id, unit_price) VALUES ('{}', '{}', 1.50);",
                        uuid(d),
                        uuid(o)
                    );
                }
                continue;
            }
            let o = orders[rng.random_range(0..orders.len())];
            sql += &match roll {
                20..40 => format!(
                    "UPDATE orders SET user_id = '{}' WHERE id = '{}';",
                    users(rng),
                    uuid(o)
                ),
                40..60 => {
                    let d = next;
                    next += 1;
                    details.push(d);
                    format!(
                        "INSERT INTO order_details (id, order_id) VALUES ('{}', '{}');",
                        uuid(d),
                        uuid(o)
                    )
                }
                60..68 => format!(
                    "UPDATE orders SET deleted_at = CASE WHEN deleted_at IS NULL THEN now() END WHERE id = '{}';",
                    uuid(o)
                ),
                68..76 if !details.is_empty() => {
                    let d = details[rng.random_range(0..details.len())];
                    format!(
                        "UPDATE order_details SET deleted_at = CASE WHEN deleted_at IS NULL THEN now() END WHERE id = '{}';",
                        uuid(d)
                    )
                }
                76..84 if !details.is_empty() => {
                    let d = details[rng.random_range(0..details.len())];
                    format!(
                        "UPDATE order_details SET order_id = '{}' WHERE id = '{}';",
                        uuid(o),
                        uuid(d)
                    )
                }
                84..90 => {
                    orders.retain(|x| *x != o);
                    format!(
                        "DELETE FROM order_details WHERE order_id = '{0}'; DELETE FROM orders WHERE id = '{0}';",
                        uuid(o)
                    )
                }
                90..95 => {
                    format!(
                        "INSERT INTO categories (id, user_id) VALUES ('{}', {});",
                        uuid(10_000 + u64::from(rng.random_range(0..50u32))),
                        if rng.random_bool(0.3) {
                            "NULL".to_owned()
                        } else {
                            format!("'{}'", users(rng))
                        }
                    ) + " "
                }
                _ => format!(
                    "INSERT INTO products (id, name) VALUES ('{}', 'p') ON CONFLICT (id) DO UPDATE SET deleted_at = now();",
                    uuid(20_000 + u64::from(rng.random_range(0..20u32)))
                ),
            };
        }
        // Categories may collide on id: make them upserts.
        sql.replace(
            "INSERT INTO categories (id, user_id) VALUES",
            "INSERT INTO categories AS c (id, user_id) VALUES",
        )
        .replace(
            "); ",
            ") ON CONFLICT (id) DO UPDATE SET user_id = EXCLUDED.user_id;",
        )
    };
    for _ in 0..20 {
        let sql = tx(&mut rng, &mut orders, &mut details);
        write(&client, &sql).await;
    }
    let module = wasm::module("northwind");
    let mut sluice = Sluice::start(db, &module, RunOpts::default());
    wait_snapshot(&client, &mut sluice).await;
    assert_converged(&client, NORTHWIND_ORACLE, &sluice).await;
    let mut floor = 0;
    for n in 0..150 {
        if Some(n) == kill_at {
            sluice.kill9();
            sluice = Sluice::start(db, &module, RunOpts::default());
        }
        let sql = tx(&mut rng, &mut orders, &mut details);
        floor = write(&client, &sql).await;
    }
    wait_persisted(&client, floor, &mut sluice).await;
    assert_converged(&client, NORTHWIND_ORACLE, &sluice).await;
    assert!(sluice.stop().success(), "{}", sluice.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn northwind_order_details_follow_their_order() {
    let db = pg::cluster().create_db("rel_northwind").await;
    northwind_workload(&db, 7, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn northwind_converges_across_a_kill_9() {
    let db = pg::cluster().create_db("rel_northwind_kill").await;
    northwind_workload(&db, 77, Some(70)).await;
}

fn e(bucket: &str, table: &str, id: &str, op: i16) -> (String, String, String, i16) {
    (bucket.into(), table.into(), id.into(), op)
}

/// The cascades of the issue, entry by entry: adding a member brings the list, its items and
/// its member rows into the member's bucket; removing the member takes them out; an owner change
/// moves everything; deleting an order removes its details from the buckets they had through it.
#[tokio::test(flavor = "multi_thread")]
async fn cascades_write_exactly_the_moves() {
    let db = pg::cluster().create_db("rel_exact").await;
    let client = db.client().await;
    client.batch_execute(SHARED_LISTS).await.unwrap();
    write(
        &client,
        "INSERT INTO lists VALUES (1, 'ann', 'groceries'); INSERT INTO items VALUES (10, 1, 'milk');",
    )
    .await;
    let mut sluice = Sluice::start(&db, &wasm::module("shared-lists"), RunOpts::default());
    wait_snapshot(&client, &mut sluice).await;
    let snapshot = changelog(&client).await.len();
    assert_eq!(
        changelog(&client).await,
        vec![
            e("user:ann", "lists", "1", 1),
            e("user:ann", "items", "10", 1),
        ]
    );

    // One sink transaction each: a cascade is settled once per sink transaction, so a batch
    // that held all three would log only their net moves.
    for step in [
        "INSERT INTO list_members VALUES (1, 'bob')",
        "UPDATE lists SET owner_id = 'cat' WHERE id = 1",
        "DELETE FROM list_members WHERE list_id = 1 AND user_id = 'bob'",
    ] {
        let floor = write(&client, step).await;
        wait_persisted(&client, floor, &mut sluice).await;
    }
    let members = r#"["1","bob"]"#;
    assert_eq!(
        changelog(&client).await[snapshot..].to_vec(),
        vec![
            // bob joins: his member row, then the list and its item follow into user:bob.
            e("user:bob", "list_members", members, 1),
            e("user:ann", "list_members", members, 1),
            e("user:bob", "lists", "1", 1),
            e("user:bob", "items", "10", 1),
            // The owner changes: the list moves from ann to cat, with its item and member row.
            e("user:ann", "lists", "1", 3),
            e("user:cat", "lists", "1", 1),
            e("user:bob", "lists", "1", 2),
            e("user:ann", "items", "10", 3),
            e("user:cat", "items", "10", 1),
            e("user:ann", "list_members", members, 3),
            e("user:cat", "list_members", members, 1),
            // bob leaves: his member row goes, and the list and item leave his bucket.
            e("user:bob", "list_members", members, 3),
            e("user:cat", "list_members", members, 3),
            e("user:bob", "lists", "1", 3),
            e("user:bob", "items", "10", 3),
        ]
    );
    assert_converged(&client, SHARED_LISTS_ORACLE, &sluice).await;
    assert!(sluice.stop().success(), "{}", sluice.log_text());
}

/// A relation that names a column the child table lacks is refused at start, naming it.
#[tokio::test(flavor = "multi_thread")]
async fn a_relation_over_a_missing_column_is_refused_at_start() {
    let db = pg::cluster().create_db("rel_missing_col").await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE lists (id bigint PRIMARY KEY, owner_id text NOT NULL, title text NOT NULL);
             CREATE TABLE list_members (list_id bigint NOT NULL, user_id text NOT NULL, PRIMARY KEY (list_id, user_id));
             CREATE TABLE items (id bigint PRIMARY KEY, list text NOT NULL, title text NOT NULL);
             CREATE PUBLICATION sluice_pub FOR TABLE lists, list_members, items;",
        )
        .await
        .unwrap();
    let module = wasm::module("shared-lists");
    let mut sluice = Sluice::start(&db, &module, RunOpts::default());
    let status = sluice.wait(std::time::Duration::from_secs(60));
    assert!(!status.success());
    let log = sluice.log_text();
    assert!(
        log.contains(&format!(
            "module {}: relation items(list_id)->lists: table items has no column \"list_id\"",
            module.display()
        )),
        "{log}"
    );
}

/// POSTs `body` to the admin listener at `addr`; (status, JSON body).
async fn admin_post(addr: &str, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let url = format!("http://{addr}{path}");
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = agent.post(&url).send_json(&body).unwrap();
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_json().unwrap())
    })
    .await
    .unwrap()
}

/// Rows written under a rule of one row (world 0.1.0: order lines in `global`) get their related
/// memberships once the relation rules are loaded and their tables re-bucketed; until then,
/// cascades leave the rows that predate the relations alone.
#[tokio::test(flavor = "multi_thread")]
async fn rebucket_after_switching_to_relation_rules_gives_the_related_memberships() {
    let db = pg::cluster().create_db("rel_rebucket").await;
    let client = db.client().await;
    client.batch_execute(NORTHWIND).await.unwrap();
    let (u1, u2) = (uuid(901), uuid(902));
    write(
        &client,
        &format!(
            "INSERT INTO orders (id, user_id) VALUES ('{o1}', '{u1}'), ('{o2}', '{u2}'); \
             INSERT INTO order_details (id, order_id) VALUES ('{d1}', '{o1}'), ('{d2}', '{o2}');",
            o1 = uuid(1),
            o2 = uuid(2),
            d1 = uuid(11),
            d2 = uuid(12),
        ),
    )
    .await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = listener.local_addr().unwrap().to_string();
    drop(listener);
    let mut sluice = Sluice::start(
        &db,
        &wasm::module("v0-1-by-owner"),
        RunOpts {
            config_toml: Some(format!("admin_addr = \"{admin}\"\n")),
            ..Default::default()
        },
    );
    wait_snapshot(&client, &mut sluice).await;
    let details: Vec<Edge> = edges(&client)
        .await
        .into_iter()
        .filter(|e| e.0 == "order_details")
        .collect();
    assert_eq!(
        details,
        vec![
            ("order_details".into(), uuid(11), "global".into()),
            ("order_details".into(), uuid(12), "global".into()),
        ]
    );

    let northwind = wasm::module("northwind");
    let (status, body) = admin_post(
        &admin,
        "/rules/reload",
        serde_json::json!({ "module": northwind }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Before the rebucket, the order lines keep what they had: their own buckets under the new
    // rules are unknown, and an owner change does not reach them.
    let floor = write(
        &client,
        &format!(
            "UPDATE orders SET user_id = '{u2}' WHERE id = '{}'",
            uuid(1)
        ),
    )
    .await;
    wait_persisted(&client, floor, &mut sluice).await;
    assert!(
        edges(&client)
            .await
            .contains(&("order_details".into(), uuid(11), "global".into()))
    );
    let (status, body) = admin_post(&admin, "/rebucket", serde_json::json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "done", "{body}");
    assert_converged_edges(&client, NORTHWIND_ORACLE).await;

    // From now on the lines follow their order.
    let floor = write(
        &client,
        &format!(
            "UPDATE orders SET user_id = '{u1}' WHERE id = '{}'",
            uuid(2)
        ),
    )
    .await;
    wait_persisted(&client, floor, &mut sluice).await;
    assert_converged_edges(&client, NORTHWIND_ORACLE).await;
    assert!(edges(&client).await.contains(&(
        "order_details".into(),
        uuid(12),
        format!("user:{u1}")
    )));
    assert!(sluice.stop().success(), "{}", sluice.log_text());
}

async fn assert_converged_edges(client: &tokio_postgres::Client, oracle_sql: &str) {
    assert_same_edges(&edges(client).await, &oracle(client, oracle_sql).await);
    assert_eq!(replayed(client).await, edges(client).await);
}

/// Memberships down a three-level chain, with a composite parent key: a region's owner change
/// reaches every line; an order moved to another customer takes its lines along; deleting a
/// customer's rows removes what its dependants had through it.
#[tokio::test(flavor = "multi_thread")]
async fn multi_level_chains_cascade_to_the_last_level() {
    let db = pg::cluster().create_db("rel_chain").await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE regions (id int PRIMARY KEY, user_id text NOT NULL);
             CREATE TABLE customers (id int PRIMARY KEY, region_id int REFERENCES regions(id));
             CREATE TABLE orders (no int, customer_id int REFERENCES customers(id), PRIMARY KEY (customer_id, no));
             CREATE TABLE lines (id int PRIMARY KEY, order_no int NOT NULL, customer_id int NOT NULL,
               FOREIGN KEY (customer_id, order_no) REFERENCES orders(customer_id, no));
             CREATE PUBLICATION sluice_pub FOR TABLE regions, customers, orders, lines;
             INSERT INTO regions VALUES (1, 'ann'), (2, 'bob');
             INSERT INTO customers VALUES (10, 1), (20, 2);
             INSERT INTO orders VALUES (1, 10), (2, 10), (1, 20);
             INSERT INTO lines VALUES (100, 1, 10), (101, 2, 10), (200, 1, 20);",
        )
        .await
        .unwrap();
    const ORACLE: &str = "\
        SELECT 'regions', r.id::text, 'user:' || r.user_id FROM regions r
        UNION ALL SELECT 'customers', c.id::text, 'user:' || r.user_id FROM customers c JOIN regions r ON r.id = c.region_id
        UNION ALL SELECT 'orders', array_to_json(ARRAY[o.customer_id::text, o.no::text])::text, 'user:' || r.user_id
          FROM orders o JOIN customers c ON c.id = o.customer_id JOIN regions r ON r.id = c.region_id
        UNION ALL SELECT 'lines', l.id::text, 'user:' || r.user_id
          FROM lines l JOIN customers c ON c.id = l.customer_id JOIN regions r ON r.id = c.region_id";
    let mut sluice = Sluice::start(&db, &wasm::module("related-chain"), RunOpts::default());
    wait_snapshot(&client, &mut sluice).await;
    assert_converged(&client, ORACLE, &sluice).await;
    assert!(
        edges(&client)
            .await
            .contains(&("lines".into(), "100".into(), "user:ann".into()))
    );

    for step in [
        "UPDATE regions SET user_id = 'cat' WHERE id = 1",
        "UPDATE customers SET region_id = 1 WHERE id = 20",
        "DELETE FROM lines WHERE customer_id = 20; DELETE FROM orders WHERE customer_id = 20; \
         INSERT INTO orders VALUES (3, 10); INSERT INTO lines VALUES (102, 3, 10);",
        "UPDATE customers SET region_id = NULL WHERE id = 10",
    ] {
        let floor = write(&client, step).await;
        wait_persisted(&client, floor, &mut sluice).await;
        assert_converged(&client, ORACLE, &sluice).await;
    }
    // Customer 10 left every region: it and everything under it are in no bucket.
    assert_eq!(
        edges(&client).await,
        vec![
            ("customers".into(), "20".into(), "user:cat".into()),
            ("regions".into(), "1".into(), "user:cat".into()),
            ("regions".into(), "2".into(), "user:bob".into()),
        ]
    );
    assert!(sluice.stop().success(), "{}", sluice.log_text());
}
