//! What every section shares: starting sluice, reading its metrics, measuring processes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::pg;

/// One figure of the final table.
pub struct Figure {
    pub name: &'static str,
    pub measured: String,
    pub target: &'static str,
    pub met: bool,
}

#[derive(Default)]
pub struct Report {
    pub figures: Vec<Figure>,
}

impl Report {
    pub fn add(&mut self, name: &'static str, measured: String, target: &'static str, met: bool) {
        println!("=> {name}: {measured} (target {target}: {})", verdict(met));
        self.figures.push(Figure {
            name,
            measured,
            target,
            met,
        });
    }

    pub fn print(&self) {
        println!();
        println!(
            "{:<56} {:<72} {:<24} result",
            "figure", "measured", "target"
        );
        for f in &self.figures {
            println!(
                "{:<56} {:<72} {:<24} {}",
                f.name,
                f.measured,
                f.target,
                verdict(f.met)
            );
        }
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

pub fn workload(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/workloads")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// W1's `items` table (from `w1-schema.sql`) in `bench_pub`, for the sections that fill it
/// themselves.
pub fn create_items(cluster: &pg::Cluster, db: &str) {
    cluster.psql(db, &workload("w1-schema.sql"));
    cluster.psql(db, "CREATE PUBLICATION bench_pub FOR TABLE items");
}

/// Inserts rows `1..=rows` into `items`, shaped like W1's (1,000 owners), in one statement.
pub fn insert_items_sql(rows: u64) -> String {
    format!(
        "INSERT INTO items (id, user_id, list_id, title, done, updated_at) \
         SELECT g, 'u' || (g % 1000), g % 5000, 'item ' || g || ' ' || repeat('x', 40), false, now() \
         FROM generate_series(1, {rows}) g"
    )
}

pub fn query(cluster: &pg::Cluster, db: &str, sql: &str) -> String {
    cluster.psql(db, sql).trim().to_owned()
}

/// `lsn` (text form) as a number.
pub fn lsn_number(cluster: &pg::Cluster, db: &str, lsn: &str) -> u64 {
    query(
        cluster,
        db,
        &format!("SELECT ('{lsn}'::pg_lsn - '0/0')::int8"),
    )
    .parse()
    .expect("lsn")
}

pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

/// An HTTP client for sluice's admin listener: statuses are answers, not errors.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// A running `sluice run`, with its admin listener.
pub struct Sluice {
    pub child: Child,
    pub admin: String,
    pub started: Instant,
    peak_kib: u64,
}

impl Sluice {
    pub fn start(
        db_url: &str,
        module: &Path,
        slot: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Sluice {
        let admin = free_addr();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.args(["run", "--database-url", db_url, "--module"])
            .arg(module)
            .args([
                "--publication",
                "bench_pub",
                "--slot",
                slot,
                "--admin-addr",
                &admin,
            ])
            .args(extra)
            .env(
                "SLUICE_LOG",
                std::env::var("BENCH_SLUICE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let started = Instant::now();
        let child = cmd.spawn().expect("start sluice");
        Sluice {
            child,
            admin,
            started,
            peak_kib: 0,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Samples peak RSS; panics if sluice has exited.
    pub fn check(&mut self) {
        self.peak_kib = self.peak_kib.max(peak_rss_kib(self.pid()).unwrap_or(0));
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("sluice exited early: {status}");
        }
    }

    pub fn peak_mib(&mut self) -> f64 {
        self.peak_kib = self.peak_kib.max(peak_rss_kib(self.pid()).unwrap_or(0));
        self.peak_kib as f64 / 1024.0
    }

    /// Waits until /readyz says the stream is running; returns when it did.
    pub fn wait_streaming(&mut self, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            self.check();
            if let Ok(mut r) = agent().get(&format!("http://{}/readyz", self.admin)).call() {
                if r.status() == 200 {
                    return Instant::now();
                }
                let _ = r.body_mut().read_to_string();
            }
            assert!(Instant::now() < deadline, "sluice did not start streaming");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn metrics(&self) -> String {
        agent()
            .get(&format!("http://{}/metrics", self.admin))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default()
    }

    /// A gauge or counter's value (summed over labels).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let text = self.metrics();
        let mut found = None;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            if !(rest.starts_with(' ') || rest.starts_with('{')) {
                continue;
            }
            let v: f64 = rest.rsplit(' ').next()?.parse().ok()?;
            *found.get_or_insert(0.0) += v;
        }
        found
    }

    /// Sum of a histogram's observations.
    pub fn histogram_sum(&self, name: &str) -> f64 {
        self.metric(&format!("{name}_sum")).unwrap_or(0.0)
    }

    /// Waits until the confirmed LSN reaches `lsn`; returns when it did.
    pub fn wait_confirmed(&mut self, lsn: u64, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            self.check();
            if self.metric("sluice_confirmed_lsn").unwrap_or(0.0) as u64 >= lsn {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "sluice did not reach {lsn} in time"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(mut self) -> f64 {
        let peak = self.peak_mib();
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "sluice exited with {status}");
        peak
    }
}

/// A sluice the bench did not stop (a standby left over, a panic) must not outlive it.
impl Drop for Sluice {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU seconds (user + system) of every process whose command line contains one of `needles`,
/// keyed by pid, with its title.
pub fn cpu_by_process(needles: &[&str]) -> HashMap<u32, (String, f64)> {
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut out = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let title = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !needles.iter().any(|n| title.contains(n)) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks =
            fields[11].parse::<f64>().unwrap_or(0.0) + fields[12].parse::<f64>().unwrap_or(0.0);
        let title = title.trim();
        let short = if title.contains("sluice run") {
            "sluice".to_owned()
        } else {
            title.chars().take(60).collect()
        };
        out.insert(pid, (short, ticks / tick));
    }
    out
}

/// Where the CPU went between two [`cpu_by_process`] readings.
pub fn print_cpu(
    label: &str,
    before: &HashMap<u32, (String, f64)>,
    after: &HashMap<u32, (String, f64)>,
) {
    let mut rows: Vec<(f64, &str)> = after
        .iter()
        .map(|(pid, (title, secs))| (secs - before.get(pid).map_or(0.0, |b| b.1), title.as_str()))
        .filter(|(d, _)| *d >= 0.01)
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!("   CPU during {label}:");
    for (secs, title) in rows {
        println!("     {secs:6.2} s  {title}");
    }
}

/// CPU seconds spent between two [`cpu_by_process`] readings by the processes whose title
/// contains `needle`.
pub fn cpu_of(
    before: &HashMap<u32, (String, f64)>,
    after: &HashMap<u32, (String, f64)>,
    needle: &str,
) -> f64 {
    after
        .iter()
        .filter(|(_, (title, _))| title.contains(needle))
        .map(|(pid, (_, secs))| secs - before.get(pid).map_or(0.0, |b| b.1))
        .sum()
}

/// Runs one statement through psql (so COPY data crosses a client connection, as sluice's does);
/// returns its wall time.
pub fn psql_timed(
    cluster: &pg::Cluster,
    db_url: &str,
    sql: &str,
    stdin: Stdio,
    stdout: Stdio,
) -> f64 {
    let started = Instant::now();
    let status = Command::new(cluster.bin("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db_url, "-c", sql])
        .stdin(stdin)
        .stdout(stdout)
        .status()
        .expect("run psql");
    assert!(status.success(), "psql {sql} failed");
    started.elapsed().as_secs_f64()
}

/// Runs `pg_recvlogical` on `slot` until `end_lsn`; returns its wall time.
pub fn recvlogical(cluster: &pg::Cluster, db_url: &str, slot: &str, end_lsn: &str) -> f64 {
    let out = tempfile::NamedTempFile::new().unwrap();
    let started = Instant::now();
    let status = Command::new(cluster.bin("pg_recvlogical"))
        .args(["-d", db_url, "-S", slot, "--start", "-E", end_lsn])
        .args([
            "-o",
            "proto_version=1",
            "-o",
            "publication_names=bench_pub",
            "-f",
        ])
        .arg(out.path())
        .status()
        .expect("run pg_recvlogical");
    assert!(status.success(), "pg_recvlogical failed");
    started.elapsed().as_secs_f64()
}

/// Starts sluice on a new slot and waits until it streams (its snapshot, of whatever the
/// publication holds now, is done), then stops it: the slot now starts at this point.
pub fn prime_slot(db_url: &str, module: &Path, slot: &str, extra: &[&str]) {
    let mut s = Sluice::start(db_url, module, slot, extra, &[]);
    s.wait_streaming(Duration::from_secs(600));
    s.stop();
}
