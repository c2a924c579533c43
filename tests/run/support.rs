//! Running the real `sluice` binary against a test database, and reading what it wrote.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::pg::TestDb;

/// A `sluice run` process. Killed (SIGKILL) on drop if still running.
pub struct Sluice {
    child: Option<Child>,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

/// Options for `sluice run`, beyond the database and module.
#[derive(Clone, Default)]
pub struct RunOpts {
    pub publication: Option<String>,
    pub slot: Option<String>,
    pub config_toml: Option<String>,
    pub rules_config: Option<String>,
    pub extra_args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Working directory of the process (relative paths in the arguments are relative to it).
    pub cwd: Option<PathBuf>,
}

impl Sluice {
    pub fn start(db: &TestDb, module: &Path, opts: RunOpts) -> Sluice {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sluice.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.arg("run")
            .arg("--database-url")
            .arg(&db.url)
            .arg("--module")
            .arg(module);
        cmd.args([
            "--publication",
            opts.publication.as_deref().unwrap_or("sluice_pub"),
        ]);
        // Slots are cluster-wide: each test database gets its own.
        let slot = opts.slot.clone().unwrap_or_else(|| slot_for(db));
        cmd.args(["--slot", &slot]);
        if let Some(toml) = &opts.config_toml {
            let path = dir.path().join("sluice.toml");
            std::fs::write(&path, toml).unwrap();
            cmd.arg("--config").arg(path);
        }
        if let Some(text) = &opts.rules_config {
            let path = dir.path().join("rules.toml");
            std::fs::write(&path, text).unwrap();
            cmd.arg("--rules-config").arg(path);
        }
        cmd.args(&opts.extra_args);
        if let Some(dir) = &opts.cwd {
            cmd.current_dir(dir);
        }
        cmd.env_remove("SLUICE_DATABASE_URL");
        cmd.env("SLUICE_LOG", "info,sluice=debug");
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let out = std::fs::File::create(&log).unwrap();
        cmd.stdout(Stdio::null()).stderr(out);
        let child = cmd.spawn().expect("spawn sluice");
        Sluice {
            child: Some(child),
            log,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait for exit.
    pub fn stop(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        self.wait(Duration::from_secs(30))
    }

    /// SIGKILL: a crash at whatever point the process is at.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                panic!(
                    "sluice did not exit within {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The default slot of a test database.
pub fn slot_for(db: &TestDb) -> String {
    db.name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(63)
        .collect::<String>()
        .to_lowercase()
}

/// Polls `check` until it returns true, panicking with `what` (and the sluice log) on timeout.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, sluice: &mut Sluice, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        if !sluice.is_running() {
            panic!(
                "sluice exited while waiting for {what}; log:\n{}",
                sluice.log_text()
            );
        }
        if start.elapsed() > timeout {
            panic!(
                "timed out after {timeout:?} waiting for {what}; log:\n{}",
                sluice.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the initial snapshot is persisted (sluice then streams).
pub async fn wait_snapshot(client: &tokio_postgres::Client, sluice: &mut Sluice) {
    wait_for("the snapshot", Duration::from_secs(120), sluice, || async {
        stored_lsn(client).await.is_some()
    })
    .await;
}

/// One changelog row without its seq and timestamp.
pub type Entry = (String, String, String, i16);

/// The changelog in seq order.
pub async fn changelog(client: &tokio_postgres::Client) -> Vec<Entry> {
    client
        .query(
            "SELECT bucket_id, table_name, record_id, operation FROM sync_changelog ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// The edges, sorted: (table, record, bucket).
pub async fn edges(client: &tokio_postgres::Client) -> Vec<(String, String, String)> {
    client
        .query(
            "SELECT table_name, record_id, bucket_id FROM sync_bucket_edges ORDER BY 1, 2, 3",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

pub async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// The stored confirmed LSN, as a number.
pub async fn stored_lsn(client: &tokio_postgres::Client) -> Option<i64> {
    client
        .query_opt("SELECT confirmed_lsn FROM sync_wal_position", &[])
        .await
        .ok()
        .flatten()
        .map(|r| r.get(0))
}

/// Runs `sql` in one transaction and returns a WAL position just below its commit record.
///
/// Only the test writes to its database's published tables, so once sluice stores an LSN above
/// this floor, this transaction and every one before it are persisted. (Comparing with
/// `pg_current_wal_lsn()` after the commit would not work: the cluster's WAL is shared with the
/// other tests' databases.)
pub async fn write(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client
        .batch_execute(&format!("BEGIN; {sql}"))
        .await
        .unwrap();
    let floor: i64 = client
        .query_one("SELECT (pg_current_wal_insert_lsn() - '0/0')::int8", &[])
        .await
        .unwrap()
        .get(0);
    client.batch_execute("COMMIT").await.unwrap();
    floor
}

/// Waits until sluice has persisted every transaction up to the one `write` returned `floor` for.
pub async fn wait_persisted(client: &tokio_postgres::Client, floor: i64, sluice: &mut Sluice) {
    wait_for(
        "sluice to persist the last transaction",
        Duration::from_secs(180),
        sluice,
        || async { stored_lsn(client).await.is_some_and(|l| l > floor) },
    )
    .await;
}

/// The by-owner rule, evaluated fresh: the oracle for edges.
pub fn by_owner_bucket(user_id: Option<&str>) -> String {
    match user_id {
        Some(u) if !u.is_empty() => format!("user:{u}"),
        _ => "global".to_owned(),
    }
}

/// Asserts two sorted edge lists are equal, printing only the differences.
pub fn assert_same_edges(
    actual: &[(String, String, String)],
    expected: &[(String, String, String)],
) {
    let a: std::collections::BTreeSet<_> = actual.iter().collect();
    let e: std::collections::BTreeSet<_> = expected.iter().collect();
    let missing: Vec<_> = e.difference(&a).take(20).collect();
    let extra: Vec<_> = a.difference(&e).take(20).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && actual.len() == expected.len(),
        "edges differ from a fresh evaluation: {} stored, {} expected; missing {missing:?}; extra {extra:?}",
        actual.len(),
        expected.len()
    );
}

/// A free local address for `admin_addr`.
pub fn free_admin_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Runs a re-bucketing pass of every table through the admin endpoint, and waits for it.
pub fn rebucket_all(admin: &str) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let status = agent
        .post(&format!("http://{admin}/rebucket"))
        .send_json(serde_json::json!({}))
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 200, "POST /rebucket");
}

/// GETs `path` from an admin listener: (status, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    match agent.get(&format!("http://{addr}{path}")).call() {
        Ok(mut resp) => (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(e) => (0, e.to_string()),
    }
}
