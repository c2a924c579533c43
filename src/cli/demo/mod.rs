//! `sluice demo`: the whole pipeline on a throwaway PostgreSQL, in one command.

mod throwaway_pg;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::watch;

use crate::pipeline::Health;
use crate::pipeline::config::Config;
use throwaway_pg::ThrowawayPg;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  sluice demo          # about 20 seconds, cleans up after itself\n  sluice demo --keep   # leave the database running to explore it with psql"
)]
pub struct DemoArgs {
    /// Leave the throwaway database running at the end and print how to connect to it.
    #[arg(long)]
    pub keep: bool,
    /// Use this rules module instead of building the by-owner example.
    #[arg(long)]
    pub module: Option<PathBuf>,
    /// Pause between scripted steps, in milliseconds.
    #[arg(long, default_value_t = 700)]
    pub pace_ms: u64,
}

const SCHEMA: &str = "
CREATE TABLE users (id text PRIMARY KEY, name text NOT NULL);
CREATE TABLE lists (id bigint PRIMARY KEY, user_id text REFERENCES users, title text NOT NULL);
CREATE TABLE items (
    id bigint PRIMARY KEY,
    list_id bigint REFERENCES lists,
    user_id text REFERENCES users,
    title text NOT NULL,
    done boolean NOT NULL DEFAULT false,
    org_id text NOT NULL DEFAULT 'acme',
    visibility text NOT NULL DEFAULT 'all',
    deleted_at timestamptz
);
INSERT INTO users VALUES ('alice', 'Alice'), ('bob', 'Bob');
-- A shared list has no owner: by-owner puts it in the global bucket.
INSERT INTO lists VALUES (1, 'alice', 'Groceries'), (2, 'bob', 'Chores'), (3, NULL, 'Team trip');
INSERT INTO items (id, list_id, user_id, title) VALUES (1, 1, 'alice', 'Milk'), (2, 2, 'bob', 'Dishes');
CREATE PUBLICATION demo_pub FOR TABLE users, lists, items;
";

/// The scripted changes, each with what it shows.
const STEPS: &[(&str, &str)] = &[
    (
        "insert an item for alice",
        "INSERT INTO items (id, list_id, user_id, title) VALUES (3, 1, 'alice', 'Bread')",
    ),
    ("update it", "UPDATE items SET done = true WHERE id = 3"),
    (
        "move an item from bob to alice (ownership change)",
        "UPDATE items SET user_id = 'alice' WHERE id = 2",
    ),
    (
        "an item on the shared list",
        "INSERT INTO items (id, list_id, user_id, title) VALUES (4, 3, NULL, 'Tent')",
    ),
    (
        "soft delete",
        "UPDATE items SET deleted_at = now() WHERE id = 1",
    ),
    ("hard delete", "DELETE FROM items WHERE id = 3"),
];

const MULTI_TENANT_CONFIG: &str = "[tenant_columns]\nitems = \"org_id\"\n";

/// Changes made after the multi-tenant rules are active.
const AFTER_RELOAD: &[(&str, &str)] = &[
    (
        "an update moves the row from its owner's bucket to its org's",
        "UPDATE items SET title = 'Dishes (urgent)' WHERE id = 2",
    ),
    (
        "an admins-only item also lands in org:acme:admins",
        "INSERT INTO items (id, list_id, user_id, title, visibility) VALUES (5, 1, 'alice', 'Budget', 'admins')",
    ),
];

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    // The tour prints what matters itself; SLUICE_LOG=info shows the pipeline's own log.
    crate::cli::run::init_logging(crate::cli::run::LogFormat::Human, "warn");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(tour(args))?;
    Ok(ExitCode::SUCCESS)
}

async fn tour(args: DemoArgs) -> anyhow::Result<()> {
    println!("sluice demo: PostgreSQL changes -> WebAssembly bucket rules -> sync changelog\n");
    let module = match &args.module {
        Some(m) => m.clone(),
        None => build_example("by-owner")?,
    };
    let multi_tenant = build_example("multi-tenant")?;
    println!("1. starting a throwaway PostgreSQL with wal_level=logical ...");
    let mut pg = tokio::task::spawn_blocking(ThrowawayPg::start).await??;
    println!("   {} (port {})", pg.root().display(), pg.port);
    let url = pg.url("postgres");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .context("connecting to the demo database")?;
    tokio::spawn(conn);
    client
        .batch_execute(SCHEMA)
        .await
        .context("creating the demo schema")?;
    println!("2. created users, lists (one shared) and items, and publication demo_pub");

    println!("3. running the pipeline with rules {}", module.display());
    let config = Config {
        database_url: Some(url.clone()),
        publication: "demo_pub".into(),
        slot: "sluice_demo".into(),
        rules: crate::pipeline::config::RulesSection {
            module: Some(module),
            ..Default::default()
        },
        status_interval_ms: 1000,
        ..Config::default()
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let health = Arc::new(Health::default());
    let (handles, receivers) = crate::pipeline::controls();
    let reload = handles.reload.clone();
    let pipeline = tokio::spawn(crate::pipeline::run(
        config,
        Arc::clone(&health),
        stop_rx,
        handles,
        receivers,
    ));

    let result = async {
        let mut last_seq = 0i64;
        wait_ready(&health, &pipeline).await?;
        println!("\n   snapshot of the existing rows:");
        last_seq = print_new_rows(&client, last_seq, Duration::from_millis(300)).await?;
        for (i, (what, sql)) in STEPS.iter().enumerate() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(args.pace_ms)) => {}
                _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            }
            println!("\n4.{} {what}:  {sql}", i + 1);
            client.batch_execute(sql).await?;
            last_seq = print_new_rows(&client, last_seq, Duration::from_secs(5)).await?;
        }
        println!("\n5. bucket memberships now (sync_bucket_edges):");
        print_edges(&client).await?;

        println!("\n6. hot reload: swapping in the multi-tenant rules (items bucketed by org_id) while streaming ...");
        let outcome = reload.reload(Some(multi_tenant.clone()), Some(MULTI_TENANT_CONFIG.to_owned()), crate::pipeline::reload::Trigger::Api).await;
        match &outcome {
            crate::pipeline::reload::ReloadOutcome::Activated { version, first_lsn, latency_ms, .. } => {
                println!("   active: version {} from LSN {first_lsn} ({latency_ms} ms after the request)", &version[..12]);
            }
            other => bail!("the reload did not activate: {other:?}"),
        }
        for (i, (what, sql)) in AFTER_RELOAD.iter().enumerate() {
            tokio::time::sleep(Duration::from_millis(args.pace_ms)).await;
            println!("\n6.{} {what}:  {sql}", i + 1);
            client.batch_execute(sql).await?;
            last_seq = print_new_rows(&client, last_seq, Duration::from_secs(5)).await?;
        }
        println!("\n7. bucket memberships now:");
        print_edges(&client).await?;
        println!("\n   Rows that did not change keep their old buckets until `sluice rebucket` re-evaluates them.");
        Ok(())
    }
    .await;

    let _ = stop_tx.send(true);
    let _ = pipeline.await;
    if args.keep && result.is_ok() {
        pg.keep();
        println!(
            "\nThe database is still running. Connect with:\n  psql {url}\nStop it with:\n  {} stop -D {}",
            pg.bindir().join("pg_ctl").display(),
            pg.root().join("data").display()
        );
    } else {
        tokio::task::spawn_blocking(move || pg.stop()).await?;
        println!("\nstopped the throwaway PostgreSQL and removed its directory");
    }
    result
}

async fn print_edges(client: &tokio_postgres::Client) -> anyhow::Result<()> {
    for row in client
        .query("SELECT bucket_id, string_agg(table_name || ':' || record_id, ' ' ORDER BY table_name, record_id) FROM sync_bucket_edges GROUP BY 1 ORDER BY 1", &[])
        .await?
    {
        println!("   {:<16} {}", row.get::<_, String>(0), row.get::<_, String>(1));
    }
    Ok(())
}

async fn wait_ready(
    health: &Health,
    pipeline: &tokio::task::JoinHandle<Result<(), crate::pipeline::PipelineError>>,
) -> anyhow::Result<()> {
    for _ in 0..600 {
        if health.streaming.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        if pipeline.is_finished() {
            bail!("the pipeline stopped before streaming; see the log above");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the pipeline did not start streaming within 60 s")
}

/// Prints changelog rows after `last_seq` as they arrive, for up to `wait`.
async fn print_new_rows(
    client: &tokio_postgres::Client,
    mut last_seq: i64,
    wait: Duration,
) -> anyhow::Result<i64> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut printed_header = false;
    loop {
        let rows = client
            .query("SELECT seq, bucket_id, table_name, record_id, operation FROM sync_changelog WHERE seq > $1 ORDER BY seq", &[&last_seq])
            .await?;
        for row in &rows {
            if !printed_header {
                println!(
                    "   {:>4}  {:<16} {:<6} {:<6} op",
                    "seq", "bucket", "table", "record"
                );
                printed_header = true;
            }
            let op = match row.get::<_, i16>(4) {
                1 => "insert",
                2 => "update",
                _ => "delete",
            };
            last_seq = row.get(0);
            println!(
                "   {:>4}  {:<16} {:<6} {:<6} {op}",
                last_seq,
                row.get::<_, String>(1),
                row.get::<_, String>(2),
                row.get::<_, String>(3)
            );
        }
        if (!rows.is_empty() && printed_header) || tokio::time::Instant::now() >= deadline {
            // Give rows of the same transaction a moment to land before moving on.
            if !rows.is_empty() {
                tokio::time::sleep(Duration::from_millis(150)).await;
                let more = client
                    .query(
                        "SELECT count(*) FROM sync_changelog WHERE seq > $1",
                        &[&last_seq],
                    )
                    .await?;
                if more[0].get::<_, i64>(0) > 0 {
                    continue;
                }
            }
            return Ok(last_seq);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Builds an example rules module from this source tree.
pub fn build_example(name: &str) -> anyhow::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if !root.join("examples").join(name).is_dir() {
        bail!(
            "the {name} example sources are not at {}; pass --module PATH to a built rules module",
            root.display()
        );
    }
    let target_dir = root.join("target").join("wasm-modules");
    println!("0. building the {name} rules module (cargo build --target wasm32-wasip2) ...");
    let ensure_target = Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .output();
    if let Ok(out) = ensure_target
        && !out.status.success()
    {
        eprintln!(
            "warning: rustup target add wasm32-wasip2 failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args([
            "build",
            "--quiet",
            "--target",
            "wasm32-wasip2",
            "--profile",
            "wasm",
            "-p",
            name,
            "--target-dir",
        ])
        .arg(&target_dir)
        .status()
        .context(
            "running cargo to build the rules module; pass --module PATH to use a built one",
        )?;
    if !status.success() {
        bail!(
            "building the {name} example failed (see cargo's output above); is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`"
        );
    }
    Ok(target_dir
        .join("wasm32-wasip2")
        .join("wasm")
        .join(format!("{}.wasm", name.replace('-', "_"))))
}
