//! Record ids as synchro's server looks rows up (issue 13, kind 4), with timestamp keys.
//!
//! synchro (9c1dafd, `pull.go`) hydrates with `SELECT "id"::text, row_to_json(t)::text ... WHERE
//! "id" IN (<record ids>)` over a pgx connection that sets no session parameters of its own, and
//! gives each hydrated row the bucket of the changelog entry whose `record_id` equals that
//! `"id"::text`. A record id parses back to the same key under any settings, but `"id"::text`
//! of a `timestamptz` follows the session's `TimeZone`, and of a `timestamp` (or `date`) its
//! `DateStyle`. So what sluice writes (`key::text` under `TimeZone = UTC`, `DateStyle = 'ISO,
//! MDY'`) matches exactly when the server's sessions use those settings: these tests show both
//! sides. The README says how to give a synchro server those settings.

use crate::conformance::{SyncClient, hydrate};
use crate::pg;
use crate::support::{RunOpts, Sluice, edges, wait_persisted, wait_snapshot, write};
use crate::wasm;

/// A database whose default `TimeZone` is New York, with a `timestamptz` and a `timestamp`
/// key, written through sluice: rows from the snapshot, then inserts, an update and a delete.
async fn timestamp_keyed_database(name: &str) -> (pg::TestDb, Sluice) {
    let db = pg::cluster().create_db(name).await;
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" SET timezone = 'America/New_York'; \
             CREATE TABLE events (id timestamptz PRIMARY KEY, user_id text, title text); \
             CREATE TABLE slots (id timestamp PRIMARY KEY, user_id text, title text); \
             CREATE PUBLICATION sluice_pub FOR TABLE events, slots; \
             INSERT INTO events VALUES ('2024-01-02 03:04:05.678+00', 'u1', 'a'), \
                                       ('2024-07-01 12:00:00+02', 'u1', 'b'); \
             INSERT INTO slots VALUES ('2024-01-02 03:04:05.678', 'u1', 'a'), \
                                      ('2024-07-01 12:00:00', 'u1', 'b');",
            db.name
        ))
        .await
        .unwrap();
    let mut sluice = Sluice::start(&db, &wasm::module("by-owner"), RunOpts::default());
    wait_snapshot(&client, &mut sluice).await;
    write(
        &client,
        "INSERT INTO events VALUES ('2024-03-10 06:30:00.5+00', 'u1', 'c'); \
         INSERT INTO slots VALUES ('2024-03-10 02:30:00.5', 'u1', 'c')",
    )
    .await;
    write(
        &client,
        "UPDATE events SET title = 'a2' WHERE id = '2024-01-02 03:04:05.678+00'; \
         UPDATE slots SET title = 'a2' WHERE id = '2024-01-02 03:04:05.678'",
    )
    .await;
    let floor = write(
        &client,
        "DELETE FROM events WHERE id = '2024-07-01 10:00:00+00'; \
         DELETE FROM slots WHERE id = '2024-07-01 12:00:00'",
    )
    .await;
    wait_persisted(&client, floor, &mut sluice).await;
    (db, sluice)
}

/// The record ids sluice stored (the edges), in the canonical form.
fn expected_ids() -> Vec<(String, String, String)> {
    let edge = |t: &str, id: &str| (t.to_owned(), id.to_owned(), "user:u1".to_owned());
    vec![
        edge("events", "2024-01-02 03:04:05.678+00"),
        edge("events", "2024-03-10 06:30:00.5+00"),
        edge("slots", "2024-01-02 03:04:05.678"),
        edge("slots", "2024-03-10 02:30:00.5"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_session_in_utc_with_iso_dates_hydrates_every_record_id_sluice_writes() {
    let (db, mut sluice) = timestamp_keyed_database("skeys_utc").await;
    let client = db.client().await;
    assert_eq!(edges(&client).await, expected_ids());
    // How a synchro server gets these settings without code: per role (and database), so
    // every new session of its pool starts with them.
    client
        .batch_execute(&format!(
            "ALTER ROLE CURRENT_USER IN DATABASE \"{}\" SET timezone = 'UTC'; \
             ALTER ROLE CURRENT_USER IN DATABASE \"{0}\" SET datestyle = 'ISO, MDY';",
            db.name
        ))
        .await
        .unwrap();
    let server = db.client().await;
    let zone: String = server.query_one("SHOW TimeZone", &[]).await.unwrap().get(0);
    assert_eq!(zone, "UTC");

    // A client of user:u1 pulls everything: each hydrated row's "id"::text is a record id of
    // the changelog (SyncClient::pull asserts it), and the deletes remove what it stored.
    let mut pulling = SyncClient::new(vec!["user:u1".to_owned()]);
    pulling.catch_up(&server).await;
    let held: Vec<(String, String, String)> = pulling
        .store
        .keys()
        .map(|(t, id)| (t.clone(), id.clone(), "user:u1".to_owned()))
        .collect();
    assert_eq!(held, expected_ids());
    assert!(sluice.stop().success(), "{}", sluice.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_session_in_another_time_zone_or_date_style_does_not_match() {
    let (db, mut sluice) = timestamp_keyed_database("skeys_other").await;
    // The database's defaults, as a server that sets nothing gets them: New York.
    let server = db.client().await;
    let events = ["2024-01-02 03:04:05.678+00".to_owned()];
    assert_eq!(
        hydrate(&server, "events", &events)
            .await
            .into_iter()
            .map(|(id, _)| id)
            .collect::<Vec<_>>(),
        vec!["2024-01-01 22:04:05.678-05".to_owned()],
        "the row is found, under an id the changelog never names: it arrives without its bucket"
    );
    // A timestamp without time zone does not depend on TimeZone...
    let slots = ["2024-01-02 03:04:05.678".to_owned()];
    let ids = |rows: Vec<(String, String)>| rows.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
    assert_eq!(ids(hydrate(&server, "slots", &slots).await), slots.to_vec());
    // ...but on DateStyle.
    server
        .batch_execute("SET datestyle = 'SQL, DMY'")
        .await
        .unwrap();
    assert_eq!(
        ids(hydrate(&server, "slots", &slots).await),
        vec!["02/01/2024 03:04:05.678".to_owned()]
    );
    // Set per session, the canonical settings make both match again.
    server
        .batch_execute("SET timezone = 'UTC'; SET datestyle = 'ISO, MDY'")
        .await
        .unwrap();
    assert_eq!(
        ids(hydrate(&server, "events", &events).await),
        events.to_vec()
    );
    assert_eq!(ids(hydrate(&server, "slots", &slots).await), slots.to_vec());
    assert!(sluice.stop().success(), "{}", sluice.log_text());
}
