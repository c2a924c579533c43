//! sluice on a database whose sidecar tables synchro's migration (or an older sluice) created:
//! the tables are adopted as they are, rule failures are still dead-lettered, and indexes carry
//! synchro's names with no duplicate definitions (issue 13, kinds 2 and 3).

use sluice::model::{Lsn, Operation};
use sluice::sink::schema::SchemaError;
use sluice::sink::{RuleFailure, Sink, SinkError, SinkItem, SinkRecord};

use crate::pg;
use crate::support::{
    Entry, RunOpts, Sluice, changelog, count, slot_for, wait_for, wait_persisted, wait_snapshot,
    write,
};
use crate::wasm;

/// `migrate.Migrations()` of trainstar/synchro at commit 9c1dafd, statement for statement.
pub(crate) const SYNCHRO_MIGRATIONS: &[&str] = &[
    r"CREATE TABLE IF NOT EXISTS sync_changelog (
			seq BIGSERIAL PRIMARY KEY,
			bucket_id TEXT NOT NULL,
			table_name TEXT NOT NULL,
			record_id TEXT NOT NULL,
			operation SMALLINT NOT NULL,
			created_at TIMESTAMPTZ NOT NULL DEFAULT now()
		)",
    r"CREATE INDEX IF NOT EXISTS idx_sync_changelog_bucket_seq
			ON sync_changelog (bucket_id, seq)",
    r"CREATE INDEX IF NOT EXISTS idx_sync_changelog_record
			ON sync_changelog (table_name, record_id)",
    r"CREATE TABLE IF NOT EXISTS sync_clients (
			id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
			user_id TEXT NOT NULL,
			client_id TEXT NOT NULL,
			client_name TEXT,
			platform TEXT NOT NULL DEFAULT '',
			app_version TEXT NOT NULL DEFAULT '',
			bucket_subs TEXT[] NOT NULL DEFAULT '{}',
			last_sync_at TIMESTAMPTZ,
			last_pull_at TIMESTAMPTZ,
			last_push_at TIMESTAMPTZ,
			last_pull_seq BIGINT,
			is_active BOOLEAN NOT NULL DEFAULT true,
			created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
			updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
			UNIQUE (user_id, client_id)
		)",
    r"CREATE INDEX IF NOT EXISTS idx_sync_clients_user_id
			ON sync_clients (user_id)",
    r"CREATE TABLE IF NOT EXISTS sync_wal_position (
			slot_name TEXT PRIMARY KEY,
			confirmed_lsn BIGINT NOT NULL DEFAULT 0,
			updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
		)",
    r"CREATE TABLE IF NOT EXISTS sync_bucket_edges (
			table_name TEXT NOT NULL,
			record_id TEXT NOT NULL,
			bucket_id TEXT NOT NULL,
			checksum INTEGER,
			updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
			PRIMARY KEY (table_name, record_id, bucket_id)
		)",
    r"CREATE INDEX IF NOT EXISTS idx_sync_bucket_edges_bucket
			ON sync_bucket_edges (bucket_id, table_name, record_id)",
    r"CREATE TABLE IF NOT EXISTS sync_rule_failures (
			id BIGSERIAL PRIMARY KEY,
			table_name TEXT NOT NULL,
			record_id TEXT NOT NULL,
			operation SMALLINT NOT NULL,
			error_text TEXT NOT NULL,
			payload JSONB,
			created_at TIMESTAMPTZ NOT NULL DEFAULT now()
		)",
    r"CREATE INDEX IF NOT EXISTS idx_sync_rule_failures_created
			ON sync_rule_failures (created_at)",
    r"CREATE TABLE IF NOT EXISTS sync_schema_manifest (
			schema_version BIGINT PRIMARY KEY,
			schema_hash TEXT NOT NULL,
			created_at TIMESTAMPTZ NOT NULL DEFAULT now()
		)",
    r"CREATE UNIQUE INDEX IF NOT EXISTS idx_sync_schema_manifest_hash
			ON sync_schema_manifest (schema_hash)",
    r"CREATE TABLE IF NOT EXISTS sync_client_checkpoints (
			user_id TEXT NOT NULL,
			client_id TEXT NOT NULL,
			bucket_id TEXT NOT NULL,
			checkpoint BIGINT NOT NULL DEFAULT 0,
			updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
			PRIMARY KEY (user_id, client_id, bucket_id)
		)",
];

/// The sidecar DDL of sluice before it took synchro's index names (at commit 525f6cc), for the
/// indexes and the columns it differs in.
const OLD_SLUICE_DDL: &str = "
CREATE TABLE sync_changelog (
    seq        BIGSERIAL PRIMARY KEY,
    bucket_id  TEXT NOT NULL,
    table_name TEXT NOT NULL,
    record_id  TEXT NOT NULL,
    operation  SMALLINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX sync_changelog_bucket_seq ON sync_changelog (bucket_id, seq);
CREATE INDEX sync_changelog_table_record ON sync_changelog (table_name, record_id);
CREATE TABLE sync_bucket_edges (
    table_name TEXT NOT NULL,
    record_id  TEXT NOT NULL,
    bucket_id  TEXT NOT NULL,
    checksum   INTEGER,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, record_id, bucket_id)
);
CREATE INDEX sync_bucket_edges_bucket ON sync_bucket_edges (bucket_id, table_name, record_id);
CREATE TABLE sync_rule_failures (
    id         BIGSERIAL PRIMARY KEY,
    table_name TEXT NOT NULL,
    record_id  TEXT,
    operation  SMALLINT NOT NULL,
    error_text TEXT NOT NULL,
    payload    JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    lsn        BIGINT,
    rules_version TEXT
);
CREATE TABLE sync_wal_position (
    slot_name     TEXT PRIMARY KEY,
    confirmed_lsn BIGINT NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);";

const ITEMS: &str = "CREATE TABLE items (id int PRIMARY KEY, user_id text, title text);
CREATE PUBLICATION sluice_pub FOR TABLE items;";

const CHANGELOG_INDEXES: &[&str] = &[
    "idx_sync_changelog_bucket_seq",
    "idx_sync_changelog_record",
    "sync_changelog_pkey",
];
const EDGES_INDEXES: &[&str] = &["idx_sync_bucket_edges_bucket", "sync_bucket_edges_pkey"];

async fn migrate_like_synchro(client: &tokio_postgres::Client) {
    for statement in SYNCHRO_MIGRATIONS {
        client.batch_execute(statement).await.unwrap();
    }
}

/// Index names of a table, from `pg_indexes`, sorted.
async fn index_names(client: &tokio_postgres::Client, table: &str) -> Vec<String> {
    client
        .query(
            "SELECT indexname::text FROM pg_indexes WHERE tablename = $1 ORDER BY 1",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn assert_synchros_indexes(client: &tokio_postgres::Client) {
    assert_eq!(
        index_names(client, "sync_changelog").await,
        CHANGELOG_INDEXES
    );
    assert_eq!(
        index_names(client, "sync_bucket_edges").await,
        EDGES_INDEXES
    );
}

/// `(column, type, NOT NULL)` of a table, in column order.
async fn columns(client: &tokio_postgres::Client, table: &str) -> Vec<(String, String, bool)> {
    client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull \
             FROM pg_attribute a WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 \
             AND NOT a.attisdropped ORDER BY a.attnum",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

fn col(name: &str, ty: &str, not_null: bool) -> (String, String, bool) {
    (name.into(), ty.into(), not_null)
}

fn e(bucket: &str, id: &str, op: i16) -> Entry {
    (bucket.into(), "items".into(), id.into(), op)
}

/// A sink connection to `db`, as `sluice run` opens it.
async fn sink(db: &pg::TestDb) -> Sink {
    Sink::new(db.client().await, slot_for(db))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_migrated_by_synchro_is_adopted_and_dead_letters_keep_streaming() {
    let db = pg::cluster().create_db("synchro_adopt").await;
    let client = db.client().await;
    client.batch_execute(ITEMS).await.unwrap();
    migrate_like_synchro(&client).await;
    let synchro_changelog = columns(&client, "sync_changelog").await;
    let synchro_edges = columns(&client, "sync_bucket_edges").await;
    let synchro_position = columns(&client, "sync_wal_position").await;

    let mut sluice = Sluice::start(&db, &wasm::module("invalid-bucket-id"), RunOpts::default());
    wait_snapshot(&client, &mut sluice).await;

    // One transaction: row 2 dead-letters (an empty bucket id), rows 1 and 3 do not. Then a
    // clean transaction, which must be written too: dead-letter is not a halt.
    write(
        &client,
        "INSERT INTO items VALUES (1, 'u1', 'ok'), (2, 'u1', 'empty'), (3, 'u1', 'ok')",
    )
    .await;
    let floor = write(&client, "UPDATE items SET title = 'fine' WHERE id = 3").await;
    wait_persisted(&client, floor, &mut sluice).await;

    assert_eq!(
        changelog(&client).await,
        vec![
            e("id:Value::Int(1)", "1", 1),
            e("id:Value::Int(3)", "3", 1),
            e("id:Value::Int(3)", "3", 2),
        ]
    );
    let failures = client
        .query(
            "SELECT table_name, record_id, operation, error_text, payload - 'lsn', \
                    ((payload->>'lsn')::pg_lsn - '0/0'::pg_lsn)::int8 = lsn, \
                    rules_version = (SELECT version FROM sluice_rule_versions) \
             FROM sync_rule_failures ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let failures: Vec<(String, String, i16, String, serde_json::Value, bool, bool)> = failures
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
            )
        })
        .collect();
    assert_eq!(
        failures,
        vec![(
            "items".to_owned(),
            "2".to_owned(),
            1,
            "rule returned an empty bucket id".to_owned(),
            serde_json::json!({
                "table": "items",
                "op": "insert",
                "new": {"id": 2, "user_id": "u1", "title": "empty"},
                "old": null,
            }),
            true,
            true,
        )]
    );
    assert!(sluice.is_running(), "{}", sluice.log_text());

    // synchro's columns are as its migration made them; sluice added only nullable columns.
    assert_eq!(columns(&client, "sync_changelog").await, synchro_changelog);
    assert_eq!(columns(&client, "sync_bucket_edges").await, synchro_edges);
    assert_eq!(
        columns(&client, "sync_wal_position").await,
        synchro_position
    );
    assert_eq!(
        columns(&client, "sync_rule_failures").await,
        vec![
            col("id", "bigint", true),
            col("table_name", "text", true),
            col("record_id", "text", true),
            col("operation", "smallint", true),
            col("error_text", "text", true),
            col("payload", "jsonb", false),
            col("created_at", "timestamp with time zone", true),
            col("lsn", "bigint", false),
            col("rules_version", "text", false),
            col("resolved_at", "timestamp with time zone", false),
        ]
    );
    // No second copy of synchro's indexes, and synchro's other tables untouched.
    assert_synchros_indexes(&client).await;
    assert_eq!(
        index_names(&client, "sync_rule_failures").await,
        ["idx_sync_rule_failures_created", "sync_rule_failures_pkey"]
    );
    // What the first start changed: the failures table's two columns and sluice's own tables.
    let log = sluice.log_text();
    assert!(
        log.contains("ALTER TABLE public.sync_rule_failures ADD COLUMN IF NOT EXISTS lsn BIGINT, ADD COLUMN IF NOT EXISTS rules_version TEXT, ADD COLUMN IF NOT EXISTS resolved_at TIMESTAMPTZ"),
        "{log}"
    );
    // The only index created is on sluice's own link table: none duplicates synchro's.
    assert!(
        log.lines()
            .filter(|l| l.contains("INDEX"))
            .all(|l| l.contains("CREATE INDEX sluice_row_links_parent ON public.sluice_row_links")),
        "{log}"
    );
    assert!(sluice.stop().success(), "{}", sluice.log_text());

    // A restart finds everything in place and runs no DDL.
    let mut sluice = Sluice::start(&db, &wasm::module("invalid-bucket-id"), RunOpts::default());
    let floor = write(&client, "INSERT INTO items VALUES (4, 'u1', 'empty')").await;
    wait_persisted(&client, floor, &mut sluice).await;
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM sync_rule_failures WHERE record_id = '4'"
        )
        .await,
        1
    );
    assert!(
        !sluice.log_text().contains("sidecar schema changed"),
        "{}",
        sluice.log_text()
    );
    assert!(sluice.stop().success(), "{}", sluice.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_with_an_unknown_key_is_stored_in_synchros_not_null_record_id() {
    let db = pg::cluster().create_db("synchro_unknown_key").await;
    let client = db.client().await;
    migrate_like_synchro(&client).await;
    let mut sink = sink(&db).await;
    sink.ensure_schema().await.unwrap();
    let failure = |record_id: Option<&str>| {
        SinkItem::Failure(RuleFailure {
            table_name: "items".into(),
            record_id: record_id.map(str::to_owned),
            op: Operation::Update,
            error_text:
                "cannot determine the row's primary key (key columns missing, NULL or unchanged)"
                    .into(),
            payload: serde_json::json!({"table": "items", "op": "update"}),
            lsn: Lsn(0x1234),
            rules_version: "abc".into(),
        })
    };
    sink.write(&[failure(None), failure(Some("7"))], true)
        .await
        .unwrap();
    sink.commit(Lsn(0x1235)).await.unwrap();
    type Row = (String, String, i16, Option<i64>, Option<String>);
    let rows: Vec<Row> = client
        .query(
            "SELECT table_name, record_id, operation, lsn, rules_version FROM sync_rule_failures ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                "items".into(),
                "".into(),
                2,
                Some(0x1234),
                Some("abc".into())
            ),
            (
                "items".into(),
                "7".into(),
                2,
                Some(0x1234),
                Some("abc".into())
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_database_gets_synchros_index_names_only() {
    let db = pg::cluster().create_db("synchro_fresh_idx").await;
    let client = db.client().await;
    client.batch_execute(ITEMS).await.unwrap();
    let mut sluice = Sluice::start(&db, &wasm::module("by-owner"), RunOpts::default());
    wait_snapshot(&client, &mut sluice).await;
    assert_synchros_indexes(&client).await;
    // The fresh tables are synchro's, column for column (plus sluice's nullable extras).
    assert_eq!(
        columns(&client, "sync_rule_failures").await,
        vec![
            col("id", "bigint", true),
            col("table_name", "text", true),
            col("record_id", "text", true),
            col("operation", "smallint", true),
            col("error_text", "text", true),
            col("payload", "jsonb", false),
            col("created_at", "timestamp with time zone", true),
            col("lsn", "bigint", false),
            col("rules_version", "text", false),
            col("resolved_at", "timestamp with time zone", false),
        ]
    );
    assert!(sluice.stop().success(), "{}", sluice.log_text());

    // synchro's migration afterwards finds its indexes and adds none; sluice's restart neither.
    migrate_like_synchro(&client).await;
    assert_synchros_indexes(&client).await;
    let mut sluice = Sluice::start(&db, &wasm::module("by-owner"), RunOpts::default());
    let floor = write(&client, "INSERT INTO items VALUES (1, 'u1', 'a')").await;
    wait_persisted(&client, floor, &mut sluice).await;
    assert_synchros_indexes(&client).await;
    assert!(sluice.stop().success(), "{}", sluice.log_text());
}

/// A first snapshot into an empty sidecar loads, then builds the secondary indexes (before it
/// stores its position, so a sync server never sees a finished snapshot without them); a
/// snapshot into a populated sidecar (a second slot) leaves the indexes alone.
#[tokio::test(flavor = "multi_thread")]
async fn an_initial_snapshot_into_an_empty_sidecar_indexes_after_loading() {
    const BUILT: &str = "built the sidecar's secondary indexes after the initial snapshot";
    let db = pg::cluster().create_db("synchro_deferred_idx").await;
    let client = db.client().await;
    client.batch_execute(ITEMS).await.unwrap();
    client
        .batch_execute(
            "INSERT INTO items SELECT g, 'u' || g % 3, 't' FROM generate_series(1, 50) g",
        )
        .await
        .unwrap();
    let mut sluice = Sluice::start(&db, &wasm::module("by-owner"), RunOpts::default());
    wait_snapshot(&client, &mut sluice).await;
    assert_synchros_indexes(&client).await;
    assert!(sluice.log_text().contains(BUILT), "{}", sluice.log_text());
    assert_eq!(
        count(&client, "SELECT count(*) FROM sync_bucket_edges").await,
        50
    );
    assert!(sluice.stop().success(), "{}", sluice.log_text());

    let before = oids(&client).await;
    let opts = RunOpts {
        slot: Some(format!(
            "{}_2",
            &slot_for(&db)[..slot_for(&db).len().min(60)]
        )),
        ..Default::default()
    };
    let mut second = Sluice::start(&db, &wasm::module("by-owner"), opts);
    wait_for(
        "the second slot's snapshot",
        std::time::Duration::from_secs(60),
        &mut second,
        || async { count(&client, "SELECT count(*) FROM sync_wal_position").await == 2 },
    )
    .await;
    assert!(!second.log_text().contains(BUILT), "{}", second.log_text());
    assert_eq!(oids(&client).await, before, "the indexes were rebuilt");
    assert_synchros_indexes(&client).await;
    assert!(second.stop().success(), "{}", second.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn sluices_old_index_names_are_renamed_to_synchros() {
    let db = pg::cluster().create_db("synchro_old_idx").await;
    let client = db.client().await;
    client.batch_execute(ITEMS).await.unwrap();
    client.batch_execute(OLD_SLUICE_DDL).await.unwrap();
    let before = oids(&client).await;

    let mut sluice = Sluice::start(&db, &wasm::module("by-owner"), RunOpts::default());
    wait_snapshot(&client, &mut sluice).await;
    assert_synchros_indexes(&client).await;
    // Renamed, not rebuilt: the same index relations.
    assert_eq!(oids(&client).await, before);
    let log = sluice.log_text();
    for statement in [
        "ALTER INDEX public.sync_changelog_bucket_seq RENAME TO idx_sync_changelog_bucket_seq",
        "ALTER INDEX public.sync_changelog_table_record RENAME TO idx_sync_changelog_record",
        "ALTER INDEX public.sync_bucket_edges_bucket RENAME TO idx_sync_bucket_edges_bucket",
    ] {
        assert!(log.contains(statement), "{statement} not in log:\n{log}");
    }
    let floor = write(&client, "INSERT INTO items VALUES (1, 'u1', 'a')").await;
    wait_persisted(&client, floor, &mut sluice).await;
    assert_eq!(changelog(&client).await, vec![e("user:u1", "1", 1)]);
    assert!(sluice.stop().success(), "{}", sluice.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn sluices_old_duplicates_of_synchros_indexes_are_dropped() {
    // An older sluice started first, then synchro's migration added its own copies: 5 indexes
    // on the changelog and 3 on the edges. The next start drops sluice's copies.
    let db = pg::cluster().create_db("synchro_dup_idx").await;
    let client = db.client().await;
    client.batch_execute(OLD_SLUICE_DDL).await.unwrap();
    migrate_like_synchro(&client).await;
    assert_eq!(index_names(&client, "sync_changelog").await.len(), 5);
    assert_eq!(index_names(&client, "sync_bucket_edges").await.len(), 3);

    let changes = sink(&db).await.ensure_schema().await.unwrap();
    assert_eq!(
        changes.statements[..3],
        [
            "DROP INDEX public.sync_changelog_bucket_seq",
            "DROP INDEX public.sync_changelog_table_record",
            "DROP INDEX public.sync_bucket_edges_bucket",
        ]
    );
    // The rest adds the failures table's resolved_at (the older sluice had lsn and
    // rules_version) and creates sluice's own tables, which neither had.
    let created: Vec<&str> = changes.statements[3..]
        .iter()
        .map(|s| s.split(" (").next().unwrap())
        .collect();
    assert_eq!(
        created,
        [
            "ALTER TABLE public.sync_rule_failures ADD COLUMN IF NOT EXISTS resolved_at TIMESTAMPTZ",
            "CREATE TABLE sluice_snapshot_progress",
            "CREATE TABLE sluice_rebucket_progress",
            "CREATE TABLE sluice_rule_versions",
            "CREATE TABLE sluice_row_state",
            "CREATE TABLE sluice_row_links",
            "CREATE INDEX sluice_row_links_parent ON public.sluice_row_links",
            "CREATE TABLE sluice_relations",
            "CREATE TABLE sluice_walk_seen",
            "CREATE TABLE sluice_leader",
        ]
    );
    assert_synchros_indexes(&client).await;
    // Idempotent: nothing left to do.
    assert_eq!(
        sink(&db).await.ensure_schema().await.unwrap().statements,
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_index_of_the_same_definition_under_another_name_is_not_duplicated() {
    let db = pg::cluster().create_db("synchro_other_idx").await;
    let client = db.client().await;
    migrate_like_synchro(&client).await;
    client
        .batch_execute(
            "DROP INDEX idx_sync_changelog_record; \
             CREATE INDEX my_changelog_by_record ON sync_changelog (table_name, record_id); \
             DROP INDEX idx_sync_bucket_edges_bucket; \
             CREATE INDEX my_edges_by_bucket ON sync_bucket_edges (bucket_id, table_name, record_id) \
               WHERE bucket_id <> 'global';",
        )
        .await
        .unwrap();
    let changes = sink(&db).await.ensure_schema().await.unwrap();
    // The changelog's index exists under another name; the edges' partial index is another
    // definition, so synchro's index is created beside it.
    assert!(
        changes
            .statements
            .iter()
            .all(|s| !s.contains("sync_changelog")),
        "{changes:?}"
    );
    assert!(
        changes.statements.contains(
            &"CREATE INDEX idx_sync_bucket_edges_bucket ON public.sync_bucket_edges (bucket_id, table_name, record_id)"
                .to_owned()
        ),
        "{changes:?}"
    );
    assert_eq!(
        index_names(&client, "sync_changelog").await,
        [
            "idx_sync_changelog_bucket_seq",
            "my_changelog_by_record",
            "sync_changelog_pkey"
        ]
    );
    assert_eq!(
        index_names(&client, "sync_bucket_edges").await,
        [
            "idx_sync_bucket_edges_bucket",
            "my_edges_by_bucket",
            "sync_bucket_edges_pkey"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_that_does_not_own_synchros_tables_is_told_what_to_run() {
    // SECURITY.md's least-privilege role beside synchro: it owns its own schema, and is granted
    // the use of synchro's tables (the grants SECURITY.md lists), which their owner created in
    // `public`.
    let db = pg::cluster().create_db("synchro_not_owner").await;
    let client = db.client().await;
    migrate_like_synchro(&client).await;
    let owner: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    let role = format!("lp_{}", slot_for(&db));
    client
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; \
             CREATE SCHEMA sluice AUTHORIZATION {role}; \
             GRANT USAGE ON SCHEMA public TO {role}; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON sync_changelog, sync_bucket_edges, \
                   sync_rule_failures, sync_wal_position TO {role}; \
             GRANT USAGE ON SEQUENCE sync_changelog_seq_seq, sync_rule_failures_id_seq TO {role};"
        ))
        .await
        .unwrap();
    let as_role = || async {
        let sink = sink(&db).await;
        sink.client()
            .batch_execute(&format!(
                "SET ROLE {role}; SET search_path = sluice, public"
            ))
            .await
            .unwrap();
        sink
    };

    let err = as_role().await.ensure_schema().await.unwrap_err();
    let alter = "ALTER TABLE public.sync_rule_failures ADD COLUMN IF NOT EXISTS lsn BIGINT, ADD COLUMN IF NOT EXISTS rules_version TEXT, ADD COLUMN IF NOT EXISTS resolved_at TIMESTAMPTZ;";
    assert!(
        matches!(&err, SinkError::Schema(SchemaError::NotOwner { table, .. }) if table == "public.sync_rule_failures"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "sidecar table public.sync_rule_failures exists and belongs to role {owner:?}; sluice runs as \"{role}\", which does not own it, so it cannot make the changes it needs. Run this as {owner:?} (or a superuser), then restart sluice: `{alter}` (or make \"{role}\" the owner: `ALTER TABLE public.sync_rule_failures OWNER TO {role};`)"
        )
    );
    // Nothing was half-done.
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'sluice'"
        )
        .await,
        0
    );

    // The owner runs what the message says; then the role needs no ownership: synchro's tables
    // are used where they are, sluice's own are created in its schema.
    client.batch_execute(alter).await.unwrap();
    let changes = as_role().await.ensure_schema().await.unwrap();
    assert_eq!(changes.statements.len(), 9, "{changes:?}");
    let tables: Vec<(String, String)> = client
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_tables \
             WHERE tablename LIKE 'sync\\_%' OR tablename LIKE 'sluice\\_%' ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let t = |s: &str, n: &str| (s.to_owned(), n.to_owned());
    assert_eq!(
        tables,
        vec![
            t("public", "sync_bucket_edges"),
            t("public", "sync_changelog"),
            t("public", "sync_client_checkpoints"),
            t("public", "sync_clients"),
            t("public", "sync_rule_failures"),
            t("public", "sync_schema_manifest"),
            t("public", "sync_wal_position"),
            t("sluice", "sluice_leader"),
            t("sluice", "sluice_rebucket_progress"),
            t("sluice", "sluice_relations"),
            t("sluice", "sluice_row_links"),
            t("sluice", "sluice_row_state"),
            t("sluice", "sluice_rule_versions"),
            t("sluice", "sluice_snapshot_progress"),
            t("sluice", "sluice_walk_seen"),
        ]
    );
    let mut sink = as_role().await;
    assert!(sink.ensure_schema().await.unwrap().statements.is_empty());
    // And it can write through synchro's tables.
    sink.write(
        &[
            SinkItem::Record(SinkRecord {
                table_name: "items".into(),
                record_id: "1".into(),
                op: Operation::Insert,
                buckets: vec!["user:u1".into()],
                checksum: Some(1),
                membership_only: false,
                related: None,
            }),
            SinkItem::Failure(RuleFailure {
                table_name: "items".into(),
                record_id: None,
                op: Operation::Delete,
                error_text: "x".into(),
                payload: serde_json::Value::Null,
                lsn: Lsn(1),
                rules_version: "v".into(),
            }),
        ],
        true,
    )
    .await
    .unwrap();
    sink.commit(Lsn(2)).await.unwrap();
    assert_eq!(
        count(
            &client,
            "SELECT confirmed_lsn FROM public.sync_wal_position"
        )
        .await,
        2
    );
    assert_eq!(changelog(&client).await, vec![e("user:u1", "1", 1)]);
}

/// Sum of the oids of the indexes of the changelog and the edges: the same after a rename.
async fn oids(client: &tokio_postgres::Client) -> i64 {
    count(
        client,
        "SELECT sum(i.indexrelid::int8)::int8 FROM pg_index i \
         WHERE i.indrelid IN ('sync_changelog'::regclass, 'sync_bucket_edges'::regclass)",
    )
    .await
}
