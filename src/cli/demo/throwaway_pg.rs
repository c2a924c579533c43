//! A private PostgreSQL for the demo: initdb into a temporary directory, started on a free port
//! with logical replication, stopped and removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// A running throwaway server.
pub struct ThrowawayPg {
    bindir: PathBuf,
    root: PathBuf,
    pub port: u16,
    keep: bool,
}

const INSTALL: &str = "install the PostgreSQL server (Debian/Ubuntu: `apt-get install postgresql`), or run `sluice run` against your own database";

/// Finds initdb and pg_ctl: `pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`.
pub fn find_bindir() -> anyhow::Result<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_server(&dir) {
            return Ok(dir);
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!(
            "PostgreSQL server binaries (initdb, pg_ctl) not found via pg_config or /usr/lib/postgresql/*/bin: {INSTALL}"
        ),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a server program; as root, as the `postgres` user (PostgreSQL refuses to run as root).
fn run(bindir: &Path, program: &str, args: &[&str]) -> anyhow::Result<()> {
    let path = bindir.join(program);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&path);
        c
    } else {
        Command::new(&path)
    };
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot run {}", path.display()))?;
    if !out.status.success() {
        bail!(
            "{program} failed: {}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl ThrowawayPg {
    pub fn start() -> anyhow::Result<ThrowawayPg> {
        let bindir = find_bindir()?;
        let root = std::env::temp_dir().join(format!("sluice-demo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let data = root.join("data");
        std::fs::create_dir_all(root.join("sock"))
            .with_context(|| format!("creating {}", root.display()))?;
        let mut pg = ThrowawayPg {
            bindir,
            root,
            port: 0,
            keep: false,
        };
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&pg.root)
                .status()?;
            if !status.success() {
                bail!(
                    "cannot hand {} to the postgres user (does it exist? it comes with the postgresql package)",
                    pg.root.display()
                );
            }
        }
        let data_s = data.display().to_string();
        run(
            &pg.bindir,
            "initdb",
            &[
                "-D",
                &data_s,
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--no-locale",
            ],
        )?;
        pg.port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\nwal_level = logical\nmax_replication_slots = 10\nmax_wal_senders = 10\nfsync = off\n",
            pg.port,
            pg.root.join("sock").display()
        );
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))?
            .write_all(conf.as_bytes())?;
        let log = pg.root.join("server.log").display().to_string();
        run(
            &pg.bindir,
            "pg_ctl",
            &["start", "-D", &data_s, "-w", "-t", "60", "-l", &log],
        )?;
        Ok(pg)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// Leave the server running after the demo (`--keep`).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    pub fn stop(&mut self) {
        let data = self.root.join("data").display().to_string();
        let _ = run(
            &self.bindir,
            "pg_ctl",
            &["stop", "-D", &data, "-m", "fast", "-w", "-t", "30"],
        );
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Drop for ThrowawayPg {
    fn drop(&mut self) {
        if !self.keep {
            self.stop();
        }
    }
}
