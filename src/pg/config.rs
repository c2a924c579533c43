//! Parsing of connection strings in the forms libpq and tokio-postgres accept:
//! `postgres://user:password@host:port/dbname?sslmode=require` and
//! `host=... port=... user=... password='...' dbname=...`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use percent_encoding::percent_decode_str;

use super::PgError;
use super::{pgpass, tls};

/// How to use TLS, with libpq's meaning for each mode we support.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS if the server offers it (certificate not verified), else plain TCP. libpq's default.
    Prefer,
    /// TLS or fail; the certificate is not verified (as libpq without a root certificate).
    Require,
    /// TLS, the chain verified against `sslrootcert` (or the Mozilla roots); the host name is not
    /// checked (for servers reached by an address their certificate does not name).
    VerifyCa,
    /// TLS, the chain verified against `sslrootcert` (or the Mozilla roots) and the host name
    /// checked against the certificate.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<Self, PgConfigError> {
        match s {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            other => Err(PgConfigError::SslMode(other.to_owned())),
        }
    }

    /// Whether the server's certificate chain is verified.
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }

    /// The mode's name as libpq spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Tcp(String),
    /// Directory holding the `.s.PGSQL.<port>` socket (a host starting with `/`, as in libpq).
    Unix(PathBuf),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Tcp(h) => f.write_str(h),
            Host::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A connection string that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum PgConfigError {
    #[error(
        "invalid database URL: {0}; expected postgres://user:password@host:port/dbname?sslmode=..."
    )]
    Url(String),
    #[error("invalid connection string: {0}; expected key=value pairs such as `host=db port=5432`")]
    KeyValue(String),
    #[error("unknown connection option {0:?}; supported: {SUPPORTED}")]
    UnknownOption(String),
    #[error(
        "unsupported sslmode {0:?}; use disable, prefer, require, verify-ca or verify-full (verify-ca checks the certificate chain, verify-full also the host name)"
    )]
    SslMode(String),
    #[error("invalid port {0:?}: expected a number from 1 to 65535")]
    Port(String),
    #[error("invalid connect_timeout {0:?}: expected whole seconds")]
    Timeout(String),
    #[error("only one host is supported, got {0:?}")]
    MultipleHosts(String),
}

const SUPPORTED: &str = "host, hostaddr, port, user, password, passfile, dbname, sslmode, \
    sslrootcert, sslcert, sslkey, application_name, connect_timeout, options";

/// The `application_name` of sluice's connections when the connection string sets none, so that
/// `pg_stat_activity` shows who is who.
pub const DEFAULT_APPLICATION_NAME: &str = "sluice";

/// Settings of a connection to PostgreSQL. The password is never printed: `Debug` and
/// [`PgConfig::redacted`] hide it.
#[derive(Clone, PartialEq, Eq)]
pub struct PgConfig {
    pub host: Host,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
    /// Client certificate (PEM) presented when the server asks for one (`cert` authentication).
    pub sslcert: Option<PathBuf>,
    /// Private key of `sslcert` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub sslkey: Option<PathBuf>,
    /// Unset means [`DEFAULT_APPLICATION_NAME`] (see [`PgConfig::for_replication`] for the
    /// replication connection's).
    pub application_name: Option<String>,
    pub connect_timeout: Option<Duration>,
    /// Server options (`-c name=value ...`), sent at startup.
    pub options: Option<String>,
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl PgConfig {
    /// Parses a URL (`postgres://` or `postgresql://`) or a `key=value` connection string. A
    /// string without a password takes it from `PGPASSWORD`, else from the password file
    /// (`passfile`, `PGPASSFILE` or `~/.pgpass`), as libpq does.
    pub fn parse(s: &str) -> Result<Self, PgConfigError> {
        Self::parse_with_env(s, &|k| std::env::var(k).ok())
    }

    /// [`PgConfig::parse`] with the environment given (`USER`, `HOME`, `PGPASSWORD`,
    /// `PGPASSFILE`).
    pub fn parse_with_env(
        s: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, PgConfigError> {
        let s = s.trim();
        let mut b = Builder::default();
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            parse_url(s, &mut b)?;
        } else {
            parse_key_values(s, &mut b)?;
        }
        b.finish(env)
    }

    /// The settings of the replication connection for `slot`: `application_name` defaults to
    /// `sluice-<slot>`, which `pg_stat_replication` and `synchronous_standby_names` see.
    pub fn for_replication(&self, slot: &str) -> PgConfig {
        let mut cfg = self.clone();
        if cfg.application_name.is_none() {
            cfg.application_name = Some(format!("{DEFAULT_APPLICATION_NAME}-{slot}"));
        }
        cfg
    }

    /// The `application_name` sent at startup.
    pub fn application_name(&self) -> &str {
        self.application_name
            .as_deref()
            .unwrap_or(DEFAULT_APPLICATION_NAME)
    }

    /// The settings as a URL for logs and error messages, with the password replaced by `***`.
    pub fn redacted(&self) -> String {
        let pw = if self.password.is_some() { ":***" } else { "" };
        let host = match &self.host {
            Host::Tcp(h) if h.contains(':') => format!("[{h}]"),
            Host::Tcp(h) => h.clone(),
            Host::Unix(p) => format!("(socket {})", p.display()),
        };
        let mut out = format!(
            "postgres://{}{pw}@{host}:{}/{}?sslmode={}",
            self.user,
            self.port,
            self.dbname,
            self.sslmode.as_str()
        );
        if let Some(root) = &self.sslrootcert {
            out.push_str(&format!("&sslrootcert={}", root.display()));
        }
        if let Some(cert) = &self.sslcert {
            out.push_str(&format!("&sslcert={}", cert.display()));
        }
        if let Some(app) = &self.application_name {
            out.push_str(&format!("&application_name={app}"));
        }
        out
    }

    /// `host:port` (or the socket directory) for error messages.
    pub fn target(&self) -> String {
        match &self.host {
            Host::Tcp(h) => format!("{h}:{}", self.port),
            Host::Unix(p) => format!("{}/.s.PGSQL.{}", p.display(), self.port),
        }
    }

    /// Opens an ordinary SQL connection with the same TLS policy as the replication connection
    /// and spawns its connection task on the current tokio runtime.
    pub async fn connect_sql(&self) -> Result<tokio_postgres::Client, PgError> {
        let mut cfg = tokio_postgres::Config::new();
        match &self.host {
            Host::Tcp(h) => cfg.host(h),
            Host::Unix(p) => cfg.host_path(p),
        };
        cfg.port(self.port).user(&self.user).dbname(&self.dbname);
        if let Some(pw) = &self.password {
            cfg.password(pw);
        }
        cfg.application_name(self.application_name());
        if let Some(t) = self.connect_timeout {
            cfg.connect_timeout(t);
        }
        if let Some(o) = &self.options {
            cfg.options(o);
        }
        let unix = matches!(self.host, Host::Unix(_));
        let map_err = |source| PgError::Connect {
            target: self.redacted(),
            source,
        };
        if self.sslmode == SslMode::Disable || unix {
            cfg.ssl_mode(tokio_postgres::config::SslMode::Disable);
            let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.map_err(map_err)?;
            tokio::spawn(drive(conn));
            return Ok(client);
        }
        cfg.ssl_mode(match self.sslmode {
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls::client_config(self)?);
        let (client, conn) = cfg.connect(tls).await.map_err(map_err)?;
        tokio::spawn(drive(conn));
        Ok(client)
    }
}

/// Runs an SQL connection until it ends, logging the server's notices ourselves.
///
/// Awaiting the connection would log each notice at info (tokio-postgres's own choice), so
/// every `... already exists, skipping` of idempotent DDL would land in the operator's log.
async fn drive<S, T>(mut conn: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio_postgres::AsyncMessage;
    loop {
        match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notice(n))) => {
                super::log_notice(n.severity(), n.code().code(), n.message());
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::debug!(error = %e, "SQL connection ended");
                return;
            }
            None => return,
        }
    }
}

#[derive(Default)]
struct Builder {
    host: Option<String>,
    port: Option<String>,
    user: Option<String>,
    password: Option<String>,
    dbname: Option<String>,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    sslcert: Option<String>,
    sslkey: Option<String>,
    passfile: Option<String>,
    application_name: Option<String>,
    connect_timeout: Option<String>,
    options: Option<String>,
}

impl Builder {
    fn set(&mut self, key: &str, value: String) -> Result<(), PgConfigError> {
        let slot = match key {
            "host" | "hostaddr" => &mut self.host,
            "port" => &mut self.port,
            "user" => &mut self.user,
            "password" => &mut self.password,
            "dbname" => &mut self.dbname,
            "sslmode" => &mut self.sslmode,
            "sslrootcert" => &mut self.sslrootcert,
            "sslcert" => &mut self.sslcert,
            "sslkey" => &mut self.sslkey,
            "passfile" => &mut self.passfile,
            "application_name" => &mut self.application_name,
            "connect_timeout" => &mut self.connect_timeout,
            "options" => &mut self.options,
            // Accepted for compatibility with libpq strings; they do not change our behaviour.
            "replication"
            | "target_session_attrs"
            | "keepalives"
            | "keepalives_idle"
            | "keepalives_interval"
            | "keepalives_count"
            | "gssencmode"
            | "channel_binding"
            | "client_encoding" => return Ok(()),
            other => return Err(PgConfigError::UnknownOption(other.to_owned())),
        };
        *slot = Some(value);
        Ok(())
    }

    fn finish(self, env: &dyn Fn(&str) -> Option<String>) -> Result<PgConfig, PgConfigError> {
        let host_text = self.host.filter(|h| !h.is_empty());
        if let Some(h) = &host_text
            && h.contains(',')
        {
            return Err(PgConfigError::MultipleHosts(h.clone()));
        }
        let host = match host_text {
            Some(h) if h.starts_with('/') => Host::Unix(PathBuf::from(h)),
            Some(h) => Host::Tcp(h),
            None => Host::Tcp("localhost".to_owned()),
        };
        let port = match self.port.filter(|p| !p.is_empty()) {
            None => 5432,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(PgConfigError::Port(p)),
            },
        };
        let user = self
            .user
            .filter(|u| !u.is_empty())
            .or_else(|| env("USER"))
            .unwrap_or_else(|| "postgres".to_owned());
        let dbname = self
            .dbname
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| user.clone());
        let sslmode = match &self.sslmode {
            Some(m) => SslMode::parse(m)?,
            None => SslMode::Prefer,
        };
        let connect_timeout = match self.connect_timeout.filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => match t.parse::<u64>() {
                Ok(0) => None,
                Ok(n) => Some(Duration::from_secs(n)),
                Err(_) => return Err(PgConfigError::Timeout(t)),
            },
        };
        let password = self.password.or_else(|| env("PGPASSWORD")).or_else(|| {
            let file = pgpass::path(self.passfile.as_deref(), env)?;
            let (host_text, unix) = match &host {
                Host::Tcp(h) => (h.clone(), false),
                Host::Unix(p) => (p.display().to_string(), true),
            };
            pgpass::find(
                &file,
                pgpass::Lookup {
                    host: &host_text,
                    unix,
                    port,
                    dbname: &dbname,
                    user: &user,
                },
            )
        });
        let path = |p: Option<String>| p.filter(|p| !p.is_empty()).map(PathBuf::from);
        Ok(PgConfig {
            host,
            port,
            user,
            password,
            dbname,
            sslmode,
            sslrootcert: path(self.sslrootcert),
            sslcert: path(self.sslcert),
            sslkey: path(self.sslkey),
            application_name: self.application_name,
            connect_timeout,
            options: self.options,
        })
    }
}

fn decode(s: &str) -> Result<String, PgConfigError> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| PgConfigError::Url("percent-encoded text is not UTF-8".to_owned()))
}

fn parse_url(s: &str, b: &mut Builder) -> Result<(), PgConfigError> {
    let rest = s
        .split_once("://")
        .map(|(_, r)| r)
        .ok_or_else(|| PgConfigError::Url("missing scheme".to_owned()))?;
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (before_query, None),
    };
    // The password may contain '@' only percent-encoded; the last '@' ends the user info.
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if let Some(ui) = userinfo {
        let (user, pw) = match ui.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (ui, None),
        };
        if !user.is_empty() {
            b.user = Some(decode(user)?);
        }
        if let Some(p) = pw {
            b.password = Some(decode(p)?);
        }
    }
    if !hostport.is_empty() {
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| PgConfigError::Url("unterminated [IPv6] host".to_owned()))?;
            (h.to_owned(), after.strip_prefix(':').map(str::to_owned))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (decode(h)?, Some(p.to_owned())),
                None => (decode(hostport)?, None),
            }
        };
        if !host.is_empty() {
            b.host = Some(host);
        }
        b.port = port;
    }
    if let Some(p) = path
        && !p.is_empty()
    {
        b.dbname = Some(decode(p)?);
    }
    if let Some(q) = query {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                PgConfigError::Url(format!("query parameter {pair:?} has no '='"))
            })?;
            b.set(&decode(k)?, decode(v)?)?;
        }
    }
    Ok(())
}

fn parse_key_values(s: &str, b: &mut Builder) -> Result<(), PgConfigError> {
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(());
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(PgConfigError::KeyValue(format!("{key:?} is missing '='")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => {
                        return Err(PgConfigError::KeyValue(format!(
                            "unterminated quoted value for {key:?}"
                        )));
                    }
                    Some('\'') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => {
                            return Err(PgConfigError::KeyValue(format!(
                                "trailing backslash in value for {key:?}"
                            )));
                        }
                    },
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        b.set(&key, value)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_url_with_encoded_password() {
        let c = PgConfig::parse(
            "postgresql://alice:p%40ss%3Aw@db.example.com:6543/app?sslmode=verify-full&sslrootcert=/ca.pem&application_name=sluice",
        )
        .unwrap();
        assert_eq!(c.host, Host::Tcp("db.example.com".into()));
        assert_eq!(c.port, 6543);
        assert_eq!(c.user, "alice");
        assert_eq!(c.password.as_deref(), Some("p@ss:w"));
        assert_eq!(c.dbname, "app");
        assert_eq!(c.sslmode, SslMode::VerifyFull);
        assert_eq!(c.sslrootcert, Some(PathBuf::from("/ca.pem")));
        assert_eq!(c.application_name.as_deref(), Some("sluice"));
        assert_eq!(
            c.redacted(),
            "postgres://alice:***@db.example.com:6543/app?sslmode=verify-full&sslrootcert=/ca.pem&application_name=sluice"
        );
        assert!(!format!("{c:?}").contains("p@ss"));
    }

    #[test]
    fn parses_key_value_form_with_quotes() {
        let c = PgConfig::parse(
            "host=/tmp/sock port = 5433 user=bob password='it''s \\' x' dbname=d sslmode=disable",
        );
        // libpq escapes a quote with a backslash, not by doubling: '' ends and restarts nothing.
        assert!(c.is_err());
        let c = PgConfig::parse(
            "host=/tmp/sock port = 5433 user=bob password='it\\'s x' dbname=d sslmode=disable",
        )
        .unwrap();
        assert_eq!(c.host, Host::Unix(PathBuf::from("/tmp/sock")));
        assert_eq!(c.port, 5433);
        assert_eq!(c.password.as_deref(), Some("it's x"));
        assert_eq!(c.sslmode, SslMode::Disable);
        assert_eq!(c.target(), "/tmp/sock/.s.PGSQL.5433");
    }

    #[test]
    fn defaults_and_ipv6() {
        let c = PgConfig::parse("postgres://u@[::1]/").unwrap();
        assert_eq!(c.host, Host::Tcp("::1".into()));
        assert_eq!(c.port, 5432);
        assert_eq!(c.dbname, "u");
        assert_eq!(c.sslmode, SslMode::Prefer);
        assert_eq!(c.redacted(), "postgres://u@[::1]:5432/u?sslmode=prefer");
    }

    #[test]
    fn rejects_bad_input_with_the_reason() {
        let e = PgConfig::parse("postgres://u@h/d?sslmode=allow").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unsupported sslmode \"allow\"; use disable, prefer, require, verify-ca or verify-full (verify-ca checks the certificate chain, verify-full also the host name)"
        );
        let e = PgConfig::parse("host=h prot=1").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("unknown connection option \"prot\"")
        );
        let e = PgConfig::parse("postgres://u@h:99999/d").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid port \"99999\": expected a number from 1 to 65535"
        );
        assert!(PgConfig::parse("host=h port").is_err());
    }

    #[test]
    fn password_comes_from_the_string_then_pgpassword_then_the_password_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(&file, "db:5432:app:alice:from-file\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let file_text = file.display().to_string();
        let env_with = |pw: Option<&'static str>| {
            let file_text = file_text.clone();
            move |k: &str| match k {
                "PGPASSWORD" => pw.map(str::to_owned),
                "PGPASSFILE" => Some(file_text.clone()),
                _ => None,
            }
        };
        let url = "postgres://alice@db/app";
        let pw = |s: &str, env: &dyn Fn(&str) -> Option<String>| {
            PgConfig::parse_with_env(s, env).unwrap().password
        };
        assert_eq!(pw(url, &env_with(None)).as_deref(), Some("from-file"));
        assert_eq!(pw(url, &env_with(Some("env"))).as_deref(), Some("env"));
        assert_eq!(
            pw("postgres://alice:url@db/app", &env_with(Some("env"))).as_deref(),
            Some("url")
        );
        assert_eq!(pw("postgres://alice@db:5433/app", &env_with(None)), None);
        // `passfile` in the string beats PGPASSFILE.
        let other = dir.path().join("other");
        std::fs::write(&other, "*:*:*:*:from-option\n").unwrap();
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
        let with_option = format!("host=db dbname=app user=alice passfile={}", other.display());
        assert_eq!(
            pw(&with_option, &env_with(None)).as_deref(),
            Some("from-option")
        );
        // A file others can read is ignored, as libpq does.
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(pw(&with_option, &env_with(None)), None);
    }

    #[test]
    fn client_certificates_verify_ca_and_application_names() {
        let c = PgConfig::parse_with_env(
            "host=db user=u sslmode=verify-ca sslrootcert=/ca.pem sslcert=/u.crt sslkey=/u.key",
            &|_| None,
        )
        .unwrap();
        assert_eq!(c.sslmode, SslMode::VerifyCa);
        assert!(c.sslmode.verifies() && SslMode::VerifyFull.verifies());
        assert!(!SslMode::Require.verifies());
        assert_eq!(c.sslcert, Some(PathBuf::from("/u.crt")));
        assert_eq!(c.sslkey, Some(PathBuf::from("/u.key")));
        assert_eq!(
            c.redacted(),
            "postgres://u@db:5432/u?sslmode=verify-ca&sslrootcert=/ca.pem&sslcert=/u.crt"
        );
        assert_eq!(c.application_name(), "sluice");
        assert_eq!(c.for_replication("main").application_name(), "sluice-main");
        let named =
            PgConfig::parse_with_env("postgres://u@db/d?application_name=mine", &|_| None).unwrap();
        assert_eq!(named.for_replication("main").application_name(), "mine");
    }
}
