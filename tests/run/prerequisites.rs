//! The README's prerequisites recipe, run verbatim on a cluster of its own (the role and slot
//! names it uses are cluster-wide), then `sluice run` as that least-privilege role end to end;
//! synchro's role set up as the README says reads the tables in sluice's schema; and the error
//! for a schema sluice may not create in names the GRANT (issue 18).

use std::sync::OnceLock;

use crate::pg::{self, Cluster, ClusterOptions, TestDb};
use crate::support::{RunOpts, Sluice, changelog, count, wait_persisted, wait_snapshot, write};
use crate::synchro_schema::SYNCHRO_MIGRATIONS;
use crate::wasm;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// The fenced block (without its fences) that follows `marker` in `text`.
pub fn block_after<'a>(text: &'a str, marker: &str) -> &'a str {
    let start = text
        .find(marker)
        .unwrap_or_else(|| panic!("README lost {marker:?}"));
    let rest = &text[start..];
    let body = &rest[rest.find("```").unwrap()..];
    let body = &body[body.find('\n').unwrap() + 1..];
    &body[..body.find("```").unwrap()]
}

/// A cluster for this file only: the recipe creates the role `sluice` and sluice uses the slot
/// `sluice`, both cluster-wide.
fn own_cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<&'static Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start(ClusterOptions::default()).keep_until_exit())
}

const APP: &str = "CREATE TABLE users (id int PRIMARY KEY, user_id text, name text);
CREATE TABLE lists (id int PRIMARY KEY, user_id text, title text);
CREATE TABLE items (id int PRIMARY KEY, user_id text, title text);
CREATE TABLE secrets (id int PRIMARY KEY, user_id text, token text);
INSERT INTO items VALUES (1, 'u1', 'one');
INSERT INTO lists VALUES (1, 'u2', 'groceries');";

/// `db`'s URL with the recipe's role instead of the superuser.
fn as_role(db: &TestDb, role: &str) -> TestDb {
    TestDb {
        name: db.name.clone(),
        url: db
            .url
            .replacen("postgres://postgres@", &format!("postgres://{role}@"), 1),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_recipe_runs_verbatim_and_sluice_runs_as_that_role() {
    let text = readme();
    let recipe = block_after(&text, "### PostgreSQL prerequisites");
    let db = own_cluster().create_db("recipe").await;
    let admin = db.client().await;
    admin.batch_execute(APP).await.unwrap();
    admin.batch_execute(recipe).await.unwrap_or_else(|e| {
        panic!(
            "the README's recipe fails on PostgreSQL {}: {e}",
            own_cluster().major_version()
        )
    });

    // Only the published tables are readable.
    let role = as_role(&db, "sluice").client().await;
    let err = role.query("SELECT * FROM secrets", &[]).await.unwrap_err();
    assert_eq!(
        err.as_db_error().unwrap().message(),
        "permission denied for table secrets"
    );

    // The README's run command, with the test's module.
    let run = block_after(&text, "### Run\n");
    assert!(
        run.contains("--publication sluice --slot sluice --sidecar-schema sluice"),
        "{run}"
    );
    let module = wasm::module("by-owner");
    let mut sluice = Sluice::start(
        &as_role(&db, "sluice"),
        &module,
        RunOpts {
            publication: Some("sluice".into()),
            slot: Some("sluice".into()),
            extra_args: vec!["--sidecar-schema".into(), "sluice".into()],
            ..Default::default()
        },
    );
    admin
        .batch_execute("SET search_path = sluice")
        .await
        .unwrap();
    wait_snapshot(&admin, &mut sluice).await;
    let floor = write(&admin, "INSERT INTO public.users VALUES (7, 'u7', 'ann')").await;
    wait_persisted(&admin, floor, &mut sluice).await;
    let e = |b: &str, t: &str, id: &str| (b.to_owned(), t.to_owned(), id.to_owned(), 1i16);
    assert_eq!(
        changelog(&admin).await,
        vec![
            e("user:u1", "items", "1"),
            e("user:u2", "lists", "1"),
            e("user:u7", "users", "7")
        ]
    );
    // Every sidecar table is in sluice's schema, owned by sluice; nothing landed in public.
    let placed: Vec<(String, String, String)> = admin
        .query(
            "SELECT schemaname::text, tablename::text, tableowner::text FROM pg_tables \
             WHERE tablename LIKE 'sync\\_%' OR tablename LIKE 'sluice\\_%' ORDER BY 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut expected: Vec<(String, String, String)> = sluice::sink::schema::SIDECAR_TABLES
        .iter()
        .map(|t| ("sluice".into(), (*t).to_owned(), "sluice".into()))
        .collect();
    expected.sort();
    assert_eq!(placed, expected);
    assert_eq!(sluice.stop().code(), Some(0), "{}", sluice.log_text());
    synchros_view(&db, &text).await;
}

/// synchro's role set up as the README says runs synchro's migration without shadowing sluice's
/// tables, and synchro's own queries (unqualified names, as synchro writes them) read what
/// sluice wrote.
async fn synchros_view(db: &TestDb, readme: &str) {
    let admin = db.client().await;
    admin
        .batch_execute("CREATE ROLE synchro LOGIN; GRANT SELECT ON users, lists, items TO synchro")
        .await
        .unwrap();
    admin
        .batch_execute(block_after(
            readme,
            "**synchro's role and a sidecar schema.**",
        ))
        .await
        .unwrap();
    let synchro = as_role(db, "synchro").client().await;
    for statement in SYNCHRO_MIGRATIONS {
        synchro
            .batch_execute(statement)
            .await
            .unwrap_or_else(|e| panic!("synchro's migration as synchro: {e}: {statement}"));
    }
    assert_eq!(
        count(
            &admin,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE 'sync%'"
        )
        .await,
        0,
        "synchro's migration created tables in public that shadow sluice's"
    );
    // changelog.go, pull.go and engine.go of synchro 9c1dafd, verbatim.
    let max_seq: i64 = synchro
        .query_one("SELECT COALESCE(MAX(seq), 0) FROM sync_changelog", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        max_seq,
        count(&admin, "SELECT max(seq) FROM sluice.sync_changelog").await
    );
    assert!(max_seq >= 3);
    let in_bucket: i64 = synchro
        .query_one(
            "SELECT COUNT(*) FROM sync_bucket_edges WHERE bucket_id = $1",
            &[&"user:u7"],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_bucket, 1);
    let row: String = synchro
        .query_one("SELECT row_to_json(t)::text FROM users t WHERE id = 7", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(row, r#"{"id":7,"user_id":"u7","name":"ann"}"#);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schema_sluice_may_not_create_in_is_refused_with_the_grant() {
    let db = pg::cluster().create_db("no_create").await;
    let admin = db.client().await;
    let role = format!("nc_{}", crate::support::slot_for(&db));
    admin
        .batch_execute(&format!(
            "{APP} CREATE ROLE {role} LOGIN REPLICATION; GRANT SELECT ON items TO {role}; \
             REVOKE CREATE ON SCHEMA public FROM PUBLIC; \
             CREATE PUBLICATION sluice_pub FOR TABLE items;"
        ))
        .await
        .unwrap();
    let module = wasm::module("by-owner");
    let mut sluice = Sluice::start(&as_role(&db, &role), &module, RunOpts::default());
    assert_eq!(
        sluice.wait(std::time::Duration::from_secs(60)).code(),
        Some(1)
    );
    let log = sluice.log_text();
    assert!(
        log.contains(&format!(
            "cannot create sidecar table sync_changelog in schema public: role \"{role}\" lacks \
             the CREATE privilege on it. As the schema's owner run `GRANT CREATE ON SCHEMA public \
             TO {role};`, or give sluice a schema of its own: `CREATE SCHEMA sluice AUTHORIZATION \
             {role};` and start sluice with --sidecar-schema sluice"
        )),
        "{log}"
    );

    // A configured schema that does not exist.
    let mut sluice = Sluice::start(
        &as_role(&db, &role),
        &module,
        RunOpts {
            extra_args: vec!["--sidecar-schema".into(), "Side car".into()],
            ..Default::default()
        },
    );
    assert_eq!(
        sluice.wait(std::time::Duration::from_secs(60)).code(),
        Some(1)
    );
    let log = sluice.log_text();
    assert!(
        log.contains(&format!(
            "cannot create sidecar table sync_changelog: no schema in the sink session's \
             search_path (\"Side car\") exists for role \"{role}\". Create one it owns, as a \
             superuser or the database owner: `CREATE SCHEMA sluice AUTHORIZATION {role};`"
        )),
        "{log}"
    );
    // Created, it is used as written (quoted, spaces and capitals kept).
    admin
        .batch_execute(&format!("CREATE SCHEMA \"Side car\" AUTHORIZATION {role}"))
        .await
        .unwrap();
    let mut sluice = Sluice::start(
        &as_role(&db, &role),
        &module,
        RunOpts {
            extra_args: vec!["--sidecar-schema".into(), "Side car".into()],
            ..Default::default()
        },
    );
    admin
        .batch_execute("SET search_path = \"Side car\"")
        .await
        .unwrap();
    wait_snapshot(&admin, &mut sluice).await;
    assert_eq!(
        changelog(&admin).await,
        vec![("user:u1".into(), "items".into(), "1".into(), 1)]
    );
    assert_eq!(
        count(
            &admin,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'Side car'"
        )
        .await,
        sluice::sink::schema::SIDECAR_TABLES.len() as i64
    );
    assert_eq!(sluice.stop().code(), Some(0));
}

#[test]
fn security_md_has_the_readme_recipe() {
    let text = readme();
    let recipe = block_after(&text, "### PostgreSQL prerequisites");
    let security =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/SECURITY.md")).unwrap();
    assert_eq!(block_after(&security, "## Least-privilege role"), recipe);
}
