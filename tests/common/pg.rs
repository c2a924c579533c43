//! PostgreSQL test harness shared by every integration test binary.
//!
//! Include it by path: `#[path = "../common/pg.rs"] mod pg;`.
//!
//! By default one throwaway cluster is started per test process (initdb + pg_ctl into a temporary
//! directory, on a free port, `wal_level=logical`) and stopped and removed when the process exits.
//! Set `SLUICE_TEST_DATABASE_URL` to a superuser URL to use an existing server instead. Each test
//! gets its own database from [`Cluster::create_db`].
//!
//! The server binaries (`initdb`, `pg_ctl`, `postgres`) come from `SLUICE_TEST_PG_BINDIR` when it
//! is set (how CI runs the suites on each supported major version), else from `pg_config --bindir`
//! or the newest `/usr/lib/postgresql/*/bin`. Client programs (`psql`, `pg_recvlogical`) missing
//! from that directory are taken from the latter: they speak to every supported server version.
//!
//! When run as root the server runs as the `postgres` user (PostgreSQL refuses to run as root).
//! Tests never skip: without binaries the harness panics and says how to install them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

const ENV_URL: &str = "SLUICE_TEST_DATABASE_URL";
const ENV_BINDIR: &str = "SLUICE_TEST_PG_BINDIR";
/// Prefix of every cluster directory under the system temp dir; leftovers of killed runs are
/// recognised by it (`sluice-pg-<pid>-<n>`).
const DIR_PREFIX: &str = "sluice-pg-";

const INSTALL_HINT: &str = "install the PostgreSQL server (Debian/Ubuntu: `apt-get install postgresql`, \
     which provides initdb and pg_ctl under /usr/lib/postgresql/<version>/bin) or set \
     SLUICE_TEST_DATABASE_URL to a superuser URL of an existing server with wal_level=logical";

/// The shared cluster of this test process, started on first use.
pub fn cluster() -> &'static Cluster {
    static SHARED: OnceLock<Cluster> = OnceLock::new();
    SHARED.get_or_init(|| match std::env::var(ENV_URL) {
        Ok(url) if !url.trim().is_empty() => Cluster::external(url.trim()),
        _ => {
            let mut cluster = Cluster::start(ClusterOptions::default());
            // A static is never dropped: the atexit hook stops it instead.
            if let Some(managed) = cluster.managed.as_mut() {
                managed.stop_at_exit = true;
            }
            register_exit_hook(&cluster);
            cluster
        }
    })
}

/// Settings for a private cluster (auth, TLS and wal_level tests).
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// Extra `postgresql.conf` settings, written after the harness defaults (so they win).
    pub settings: Vec<(String, String)>,
    /// `pg_hba.conf` lines for TCP and replication connections. The harness always prepends
    /// `local` trust lines for its own administrative connections over the unix socket.
    pub hba: Option<String>,
    /// Server certificate and key files; enables `ssl=on`.
    pub ssl: Option<(PathBuf, PathBuf)>,
    /// `(auth method, superuser password)`: initdb with `--auth-host=<method>` and that password.
    /// URLs then carry the password.
    pub init_auth: Option<(String, String)>,
}

/// A database created for one test.
#[derive(Clone, Debug)]
pub struct TestDb {
    pub name: String,
    /// TCP URL for the code under test (superuser).
    pub url: String,
}

impl TestDb {
    /// An ordinary SQL connection; its connection task is spawned on the current runtime.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }
}

/// A running PostgreSQL server: harness-managed or external.
#[derive(Debug)]
pub struct Cluster {
    port: u16,
    bindir: PathBuf,
    /// `server_version_num` of the running server, read on first use.
    version_num: OnceLock<u32>,
    password: Option<String>,
    /// Set for `SLUICE_TEST_DATABASE_URL`: the URL with the database left to replace.
    external: Option<url::Url>,
    managed: Option<Managed>,
}

#[derive(Debug)]
struct Managed {
    root: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    /// The shared cluster is stopped by the atexit hook, private ones by Drop.
    stop_at_exit: bool,
}

impl Cluster {
    /// Starts a private cluster. Panics (never skips) when it cannot.
    pub fn start(opts: ClusterOptions) -> Cluster {
        let bindir = find_bindir();
        remove_leftovers(&bindir);
        let mut last_error = String::new();
        // Another process may grab the free port between probing and binding: retry on a new one.
        for _ in 0..5 {
            match try_start(&bindir, &opts) {
                Ok(cluster) => return cluster,
                Err(err) => last_error = err,
            }
        }
        panic!(
            "could not start a throwaway PostgreSQL cluster with {}: {last_error}\n\
             To fix: {INSTALL_HINT}",
            bindir.display()
        );
    }

    /// Keeps a private cluster for the rest of the process (e.g. in a `OnceLock` shared by the
    /// tests of one module) and stops it at exit like the shared one.
    pub fn keep_until_exit(mut self) -> &'static Cluster {
        if let Some(m) = self.managed.as_mut() {
            m.stop_at_exit = true;
        }
        register_exit_hook(&self);
        Box::leak(Box::new(self))
    }

    fn external(raw: &str) -> Cluster {
        let url = url::Url::parse(raw).unwrap_or_else(|e| {
            panic!("{ENV_URL} is not a postgres:// URL ({e}): fix or unset it")
        });
        let port = url.port().unwrap_or(5432);
        let password = url.password().map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned()
        });
        let bindir = try_find_bindir().unwrap_or_default();
        Cluster {
            port,
            bindir,
            version_num: OnceLock::new(),
            password,
            external: Some(url),
            managed: None,
        }
    }

    /// `postgres://postgres@127.0.0.1:PORT/db` (with the password when the cluster has one).
    pub fn url(&self, db: &str) -> String {
        if let Some(base) = &self.external {
            let mut url = base.clone();
            url.set_path(&format!("/{db}"));
            return url.to_string();
        }
        match &self.password {
            Some(pw) => format!(
                "postgres://postgres:{}@127.0.0.1:{}/{db}",
                percent_encoding::utf8_percent_encode(pw, percent_encoding::NON_ALPHANUMERIC),
                self.port
            ),
            None => format!("postgres://postgres@127.0.0.1:{}/{db}", self.port),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Path of a PostgreSQL client or server program, e.g. `bin("pg_recvlogical")`: from the
    /// server's bin directory, or for a client program it lacks (the embedded builds of
    /// `SLUICE_TEST_PG_BINDIR` ship only the server), from the system installation.
    pub fn bin(&self, name: &str) -> PathBuf {
        if self.bindir.as_os_str().is_empty() {
            panic!("no PostgreSQL binaries found for `{name}`: {INSTALL_HINT}");
        }
        let own = self.bindir.join(name);
        if own.is_file() {
            return own;
        }
        match find_system_bindir().map(|dir| dir.join(name)) {
            Some(path) if path.is_file() => path,
            _ => panic!(
                "`{name}` is neither in {} nor in a system PostgreSQL installation: {INSTALL_HINT}",
                self.bindir.display()
            ),
        }
    }

    /// The server's `server_version_num`, e.g. `140023` or `180004`.
    pub fn server_version_num(&self) -> u32 {
        *self.version_num.get_or_init(|| {
            let text = self.psql("postgres", "SHOW server_version_num");
            text.trim().parse().unwrap_or_else(|e| {
                panic!("server_version_num {:?} is not a number: {e}", text.trim())
            })
        })
    }

    /// The server's major version, e.g. 14 or 18.
    pub fn major_version(&self) -> u32 {
        self.server_version_num() / 10000
    }

    pub fn data_dir(&self) -> &Path {
        &self.managed().data
    }

    /// A fresh database with a unique name starting with `prefix`.
    pub async fn create_db(&self, prefix: &str) -> TestDb {
        let name = unique_db_name(prefix);
        let admin = self.admin_client().await;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} failed: {e}"));
        TestDb {
            url: self.url(&name),
            name,
        }
    }

    /// Synchronous variant of [`Cluster::create_db`] for tests without a runtime.
    pub fn create_db_blocking(&self, prefix: &str) -> TestDb {
        let name = unique_db_name(prefix);
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        TestDb {
            url: self.url(&name),
            name,
        }
    }

    /// `pg_ctl restart -m fast|immediate`, waiting until the server accepts connections.
    ///
    /// The cluster runs with `synchronous_commit=off`: after `immediate`, commits from the last
    /// few hundred milliseconds may be gone unless the session that made them set
    /// `synchronous_commit = on` (as a real crash would lose them).
    pub fn restart(&self, mode: &str) {
        let m = self.managed();
        let out = self.run_pg(
            Command::new(self.bin("pg_ctl"))
                .arg("restart")
                .arg("-D")
                .arg(&m.data)
                .args(["-m", mode, "-w", "-t", "60", "-l"])
                .arg(&m.log),
        );
        if !out.status.success() {
            panic!(
                "pg_ctl restart -m {mode} failed: {}\nserver log:\n{}",
                String::from_utf8_lossy(&out.stderr),
                read_tail(&m.log)
            );
        }
    }

    /// Runs `sql` with psql (`ON_ERROR_STOP=1`, unaligned, tuples only) and returns its stdout.
    /// Panics with psql's error when a statement fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let mut cmd = Command::new(self.bin("psql"));
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"]);
        match &self.managed {
            Some(m) => {
                cmd.arg("-h").arg(&m.socket_dir).args([
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    db,
                ]);
            }
            None => {
                cmd.args(["-d", &self.url(db)]);
            }
        }
        if let Some(pw) = &self.password {
            cmd.env("PGPASSWORD", pw);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run psql: {e}; {INSTALL_HINT}"));
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(sql.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        if !out.status.success() {
            panic!(
                "psql on {db} failed: {}\nSQL:\n{sql}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8(out.stdout).unwrap()
    }

    /// A superuser connection to the `postgres` database (unix socket for managed clusters, so
    /// custom `pg_hba.conf` TCP rules never lock the harness out).
    pub async fn admin_client(&self) -> tokio_postgres::Client {
        match &self.managed {
            None => connect(&self.url("postgres")).await,
            Some(m) => {
                let mut cfg = tokio_postgres::Config::new();
                cfg.host_path(&m.socket_dir)
                    .port(self.port)
                    .user("postgres")
                    .dbname("postgres");
                let (client, conn) = cfg
                    .connect(tokio_postgres::NoTls)
                    .await
                    .unwrap_or_else(|e| panic!("harness admin connection failed: {e}"));
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                client
            }
        }
    }

    fn managed(&self) -> &Managed {
        self.managed.as_ref().unwrap_or_else(|| {
            panic!("this operation needs a harness-managed cluster, not {ENV_URL}")
        })
    }

    fn run_pg(&self, cmd: &mut Command) -> Output {
        run_as_postgres(cmd)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(m) = &self.managed
            && !m.stop_at_exit
        {
            stop_and_remove(&self.bindir, &m.root);
        }
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {} failed: {e}", redact(url)));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

fn unique_db_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{clean}_{}_{}_{nanos:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn has_server(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("pg_ctl").is_file()
}

/// The server binaries to test with: `SLUICE_TEST_PG_BINDIR` when set (never silently replaced by
/// another version when it is wrong), else the system installation.
fn try_find_bindir() -> Option<PathBuf> {
    match std::env::var_os(ENV_BINDIR) {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            assert!(
                has_server(&dir),
                "{ENV_BINDIR}={} has no initdb and pg_ctl: point it at a PostgreSQL server's bin \
                 directory (scripts/install-test-postgres prints them) or unset it",
                dir.display()
            );
            Some(dir)
        }
        _ => find_system_bindir(),
    }
}

/// `pg_config --bindir`, else the newest Debian-style `/usr/lib/postgresql/<major>/bin`.
fn find_system_bindir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_server(&dir) {
            return Some(dir);
        }
    }
    // Debian installs server binaries off PATH, one directory per major version.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_server(&bin).then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn find_bindir() -> PathBuf {
    try_find_bindir().unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries (initdb, pg_ctl) not found via `pg_config --bindir` or \
             /usr/lib/postgresql/*/bin. To fix: {INSTALL_HINT}"
        )
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// PostgreSQL refuses to run as root: as root, run server programs as `postgres`.
fn run_as_postgres(cmd: &mut Command) -> Output {
    let mut cmd = if is_root() {
        let mut wrapped = Command::new("runuser");
        wrapped
            .args(["-u", "postgres", "--"])
            .arg(cmd.get_program());
        wrapped.args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => wrapped.env(k, v),
                None => wrapped.env_remove(k),
            };
        }
        wrapped
    } else {
        std::mem::replace(cmd, Command::new("true"))
    };
    // Never inherit stdout: pg_ctl's server would keep the test harness's pipe open.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}. {INSTALL_HINT}", cmd.get_program()))
}

fn chown_to_postgres(path: &Path) {
    if !is_root() {
        return;
    }
    let out = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .output()
        .expect("chown");
    assert!(
        out.status.success(),
        "chown -R postgres {} failed: {}; the `postgres` user must exist (it comes with the \
         postgresql package)",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free TCP port on 127.0.0.1")
}

fn read_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn try_start(bindir: &Path, opts: &ClusterOptions) -> Result<Cluster, String> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let root = std::env::temp_dir().join(format!(
        "{DIR_PREFIX}{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&root);
    let data = root.join("data");
    let socket_dir = root.join("sock");
    let log = root.join("server.log");
    std::fs::create_dir_all(&socket_dir).map_err(|e| format!("create {root:?}: {e}"))?;
    // If anything below fails, the directory goes; a started server is stopped.
    let guard = Managed {
        root: root.clone(),
        data: data.clone(),
        socket_dir: socket_dir.clone(),
        log: log.clone(),
        stop_at_exit: false,
    };
    let fail = |msg: String| -> Result<Cluster, String> {
        stop_and_remove(bindir, &guard.root);
        Err(msg)
    };

    let mut initdb = Command::new(bindir.join("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "--no-sync", "-E", "UTF8", "--no-locale"]);
    let password = match &opts.init_auth {
        Some((method, password)) => {
            let pwfile = root.join("pwfile");
            std::fs::write(&pwfile, password).map_err(|e| format!("write pwfile: {e}"))?;
            initdb
                .arg("--auth-local=trust")
                .arg(format!("--auth-host={method}"))
                .arg(format!("--pwfile={}", pwfile.display()));
            Some(password.clone())
        }
        None => {
            initdb.args(["-A", "trust"]);
            None
        }
    };
    chown_to_postgres(&root);
    let out = run_as_postgres(&mut initdb);
    if !out.status.success() {
        return fail(format!(
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }

    let port = free_port();
    // Each test database keeps its replication slot until the cluster stops, and the run suite
    // creates more than 64 of them: 128 leaves room for the suites to grow.
    let mut conf = format!(
        "\n# sluice test harness\n\
         listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         unix_socket_directories = '{}'\n\
         wal_level = logical\n\
         max_replication_slots = 128\n\
         max_wal_senders = 128\n\
         fsync = off\n\
         synchronous_commit = off\n\
         full_page_writes = off\n\
         max_connections = 300\n\
         shared_buffers = 128MB\n\
         wal_sender_timeout = 60s\n",
        socket_dir.display()
    );
    if let Some((cert, key)) = &opts.ssl {
        std::fs::copy(cert, data.join("server.crt")).map_err(|e| format!("copy cert: {e}"))?;
        std::fs::copy(key, data.join("server.key")).map_err(|e| format!("copy key: {e}"))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .map_err(|e| format!("chmod key: {e}"))?;
        conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
    }
    for (k, v) in &opts.settings {
        conf.push_str(&format!("{k} = '{}'\n", v.replace('\'', "''")));
    }
    append(&data.join("postgresql.conf"), &conf)?;
    if let Some(hba) = &opts.hba {
        let text = format!(
            "# harness administration over the unix socket\n\
             local all all trust\n\
             local replication all trust\n\
             {hba}\n"
        );
        std::fs::write(data.join("pg_hba.conf"), text).map_err(|e| format!("write hba: {e}"))?;
    }
    chown_to_postgres(&root);

    let out = run_as_postgres(
        Command::new(bindir.join("pg_ctl"))
            .arg("start")
            .arg("-D")
            .arg(&data)
            .args(["-w", "-t", "60", "-l"])
            .arg(&log),
    );
    if !out.status.success() {
        let msg = format!(
            "pg_ctl start on port {port} failed: {}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            read_tail(&log)
        );
        return fail(msg);
    }
    Ok(Cluster {
        port,
        bindir: bindir.to_path_buf(),
        version_num: OnceLock::new(),
        password,
        external: None,
        managed: Some(guard),
    })
}

fn append(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("append to {}: {e}", path.display()))
}

fn stop_and_remove(bindir: &Path, root: &Path) {
    let data = root.join("data");
    if data.join("postmaster.pid").exists() {
        let _ = run_as_postgres(
            Command::new(bindir.join("pg_ctl"))
                .arg("stop")
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "-t", "30"]),
        );
    }
    let _ = std::fs::remove_dir_all(root);
}

/// Stops and removes clusters left by test processes that were killed before their exit hook ran.
fn remove_leftovers(bindir: &Path) {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            if pid as u32 == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            stop_and_remove(bindir, &entry.path());
        }
    });
}

/// Clusters to stop when the process exits: libtest has no global teardown, but it leaves through
/// `exit`, which runs atexit handlers.
static AT_EXIT: Mutex<Vec<(PathBuf, PathBuf)>> = Mutex::new(Vec::new());

fn register_exit_hook(cluster: &Cluster) {
    static HOOK: OnceLock<()> = OnceLock::new();
    let Some(m) = &cluster.managed else { return };
    AT_EXIT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((cluster.bindir.clone(), m.root.clone()));
    HOOK.get_or_init(|| {
        extern "C" fn stop_all() {
            let list = std::mem::take(&mut *AT_EXIT.lock().unwrap_or_else(|p| p.into_inner()));
            for (bindir, root) in list {
                stop_and_remove(&bindir, &root);
            }
        }
        // SAFETY: registering a plain extern "C" function with no captured state.
        let rc = unsafe { libc::atexit(stop_all) };
        assert_eq!(rc, 0, "atexit registration failed");
    });
}
