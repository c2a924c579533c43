//! The test harness itself: what every later test relies on.

use crate::pg::{self, Cluster, ClusterOptions};

#[tokio::test]
async fn shared_cluster_is_logical_and_gives_each_test_its_own_database() {
    let cluster = pg::cluster();
    let a = cluster.create_db("harness").await;
    let b = cluster.create_db("harness").await;
    assert_ne!(a.name, b.name);
    assert_eq!(
        a.url,
        format!(
            "postgres://postgres@127.0.0.1:{}/{}",
            cluster.port(),
            a.name
        )
    );
    let client = a.client().await;
    let row = client
        .query_one(
            "SELECT current_database(), current_setting('wal_level')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), a.name);
    assert_eq!(row.get::<_, String>(1), "logical");
    assert_eq!(
        cluster.psql(
            &b.name,
            "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2); SELECT sum(id) FROM t;"
        ),
        "3\n"
    );
}

#[test]
fn psql_panics_with_the_server_error() {
    let cluster = pg::cluster();
    let db = cluster.create_db_blocking("harness_sync");
    let err = std::panic::catch_unwind(|| cluster.psql(&db.name, "SELECT * FROM missing_table"))
        .unwrap_err();
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(
        msg.contains("relation \"missing_table\" does not exist"),
        "{msg}"
    );
}

#[test]
fn private_cluster_restarts_and_is_removed_on_drop() {
    let cluster = Cluster::start(ClusterOptions {
        settings: vec![("max_replication_slots".into(), "7".into())],
        ..Default::default()
    });
    let data = cluster.data_dir().to_path_buf();
    assert!(data.join("PG_VERSION").is_file());
    assert_eq!(
        cluster.psql("postgres", "SHOW max_replication_slots"),
        "7\n"
    );
    // synchronous_commit=off: a commit survives a crash only once its WAL is flushed.
    cluster.psql(
        "postgres",
        "SET synchronous_commit = on; CREATE TABLE survives (id int); INSERT INTO survives VALUES (5)",
    );
    cluster.restart("immediate");
    assert_eq!(cluster.psql("postgres", "SELECT id FROM survives"), "5\n");
    cluster.restart("fast");
    assert_eq!(
        cluster.psql("postgres", "SELECT count(*) FROM survives"),
        "1\n"
    );
    drop(cluster);
    assert!(!data.exists(), "{} was not removed", data.display());
}
