//! Connection options libpq users expect, against a private cluster: the password from
//! `PGPASSWORD` or a password file, client certificates (`cert` authentication), `sslmode=verify-ca`
//! against a certificate for another host name, and the default `application_name`s. Both the
//! replication connection and the ordinary SQL connection are checked.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use sluice::pg::PgConfig;
use sluice::source::{ReplicationConnection, SourceError};

use crate::pg::{Cluster, ClusterOptions};

/// The server's certificate names only this host: connecting to 127.0.0.1 is a name mismatch.
const SERVER_NAME: &str = "db.example.test";

struct Server {
    cluster: &'static Cluster,
    dir: tempfile::TempDir,
}

impl Server {
    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    (params.self_signed(&key).unwrap(), key)
}

/// A certificate for `names` with common name `cn`, signed by the CA.
fn signed(
    names: &[&str],
    cn: &str,
    ca: &(rcgen::Certificate, KeyPair),
) -> (rcgen::Certificate, KeyPair) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    (params.signed_by(&key, &ca.0, &ca.1).unwrap(), key)
}

fn write(dir: &Path, name: &str, text: String) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let (other, _) = ca("another CA");
        let ca = ca("libpq test CA");
        let (cert, key) = signed(&[SERVER_NAME], SERVER_NAME, &ca);
        let server_cert = write(dir.path(), "server.crt", cert.pem());
        let server_key = write(dir.path(), "server.key", key.serialize_pem());
        let ca_file = write(dir.path(), "ca.pem", ca.0.pem());
        write(dir.path(), "other.pem", other.pem());
        let (client, client_key) = signed(&[], "cert_user", &ca);
        write(dir.path(), "client.crt", client.pem());
        write(dir.path(), "client.key", client_key.serialize_pem());
        let (stranger, stranger_key) = signed(&[], "someone_else", &ca);
        write(dir.path(), "stranger.crt", stranger.pem());
        write(dir.path(), "stranger.key", stranger_key.serialize_pem());
        // Logical replication connections match database lines, not the `replication` keyword.
        let hba = "host all postgres 127.0.0.1/32 trust\n\
                   hostssl all cert_user 127.0.0.1/32 cert\n\
                   host all scram_user 127.0.0.1/32 scram-sha-256\n";
        let cluster = Cluster::start(ClusterOptions {
            hba: Some(hba.to_owned()),
            ssl: Some((server_cert, server_key)),
            ssl_client_ca: Some(ca_file),
            ..Default::default()
        })
        .keep_until_exit();
        cluster.psql(
            "postgres",
            "CREATE ROLE cert_user LOGIN REPLICATION;
             SET password_encryption = 'scram-sha-256';
             CREATE ROLE scram_user LOGIN REPLICATION PASSWORD 'pass:file\\pw';",
        );
        Server { cluster, dir }
    })
}

/// Opens and closes a replication connection, then runs `sql` (one text value) on an ordinary
/// connection with the same settings and returns its answer.
async fn both(cfg: &PgConfig, sql: &str) -> Result<String, String> {
    let mut conn = ReplicationConnection::connect(cfg)
        .await
        .map_err(|e| e.to_string())?;
    conn.identify_system().await.map_err(|e| e.to_string())?;
    conn.close().await.map_err(|e| e.to_string())?;
    let client = cfg.connect_sql().await.map_err(|e| e.to_string())?;
    let row = client
        .query_one(sql, &[])
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

fn scram_string(port: u16) -> String {
    format!("host=127.0.0.1 port={port} dbname=postgres user=scram_user sslmode=disable")
}

#[tokio::test]
async fn scram_password_from_a_password_file_or_pgpassword() {
    let s = server();
    let port = s.cluster.port();
    // The password holds the two characters the file format escapes.
    let pgpass = write(
        s.dir.path(),
        "pgpass",
        format!(
            "# sluice test\nother.host:*:*:scram_user:nope\n127.0.0.1:{port}:postgres:scram_user:pass\\:file\\\\pw\n"
        ),
    );
    let pgpass_text = pgpass.display().to_string();
    let file_env = move |k: &str| (k == "PGPASSFILE").then(|| pgpass_text.clone());
    let cfg = PgConfig::parse_with_env(&scram_string(port), &file_env).unwrap();
    let user = both(&cfg, "SELECT current_user::text").await.unwrap();
    assert_eq!(user, "scram_user");

    let env_password = |k: &str| (k == "PGPASSWORD").then(|| "pass:file\\pw".to_owned());
    let cfg = PgConfig::parse_with_env(&scram_string(port), &env_password).unwrap();
    assert_eq!(
        both(&cfg, "SELECT current_user::text").await.unwrap(),
        "scram_user"
    );

    // `~/.pgpass` when neither is set.
    let home = s.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::copy(&pgpass, home.join(".pgpass")).unwrap();
    let home_text = home.display().to_string();
    let home_env = move |k: &str| (k == "HOME").then(|| home_text.clone());
    let cfg = PgConfig::parse_with_env(&scram_string(port), &home_env).unwrap();
    assert_eq!(
        both(&cfg, "SELECT current_user::text").await.unwrap(),
        "scram_user"
    );

    // No matching entry: the server's demand for a password names the user and the server.
    let cfg = PgConfig::parse_with_env(&scram_string(port), &|_| None).unwrap();
    let err = ReplicationConnection::connect(&cfg).await.err().unwrap();
    assert!(matches!(err, SourceError::PasswordRequired { .. }), "{err}");
}

fn cert_string(extra: &str) -> String {
    let s = server();
    format!(
        "host=127.0.0.1 port={} dbname=postgres user=cert_user sslrootcert={} {extra}",
        s.cluster.port(),
        s.file("ca.pem").display()
    )
}

#[tokio::test]
async fn client_certificate_authentication() {
    let s = server();
    let with_cert = format!(
        "sslmode=verify-ca sslcert={} sslkey={}",
        s.file("client.crt").display(),
        s.file("client.key").display()
    );
    let cfg = PgConfig::parse_with_env(&cert_string(&with_cert), &|_| None).unwrap();
    let dn = both(
        &cfg,
        "SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .await
    .unwrap();
    assert_eq!(dn, "/CN=cert_user");

    // Without a certificate, or with one for another user, the server refuses.
    let cfg = PgConfig::parse_with_env(&cert_string("sslmode=verify-ca"), &|_| None).unwrap();
    let err = ReplicationConnection::connect(&cfg).await.err().unwrap();
    assert!(matches!(err, SourceError::HbaRejected { .. }), "{err}");
    let stranger = format!(
        "sslmode=verify-ca sslcert={} sslkey={}",
        s.file("stranger.crt").display(),
        s.file("stranger.key").display()
    );
    let cfg = PgConfig::parse_with_env(&cert_string(&stranger), &|_| None).unwrap();
    let err = both(&cfg, "SELECT 'unreachable'").await.unwrap_err();
    assert!(
        err.contains("certificate authentication failed for user \"cert_user\""),
        "{err}"
    );

    // A key without its certificate is a configuration error that names both options.
    let half = format!(
        "sslmode=verify-ca sslkey={}",
        s.file("client.key").display()
    );
    let cfg = PgConfig::parse_with_env(&cert_string(&half), &|_| None).unwrap();
    let err = ReplicationConnection::connect(&cfg).await.err().unwrap();
    assert_eq!(
        err.to_string(),
        "sslcert is set but sslkey is not (or the other way round): give both"
    );
}

#[tokio::test]
async fn verify_ca_accepts_a_certificate_for_another_name_and_verify_full_does_not() {
    let s = server();
    let cert = format!(
        "sslcert={} sslkey={}",
        s.file("client.crt").display(),
        s.file("client.key").display()
    );
    let ca_only =
        PgConfig::parse_with_env(&cert_string(&format!("sslmode=verify-ca {cert}")), &|_| {
            None
        })
        .unwrap();
    assert_eq!(both(&ca_only, "SELECT 'ok'").await.unwrap(), "ok");

    let full = PgConfig::parse_with_env(
        &cert_string(&format!("sslmode=verify-full {cert}")),
        &|_| None,
    )
    .unwrap();
    let err = ReplicationConnection::connect(&full).await.err().unwrap();
    assert!(matches!(err, SourceError::TlsHandshake { .. }), "{err}");
    assert!(
        err.to_string().contains("certificate not valid for name"),
        "{err}"
    );
    assert!(full.connect_sql().await.is_err());

    // verify-ca still checks the chain.
    let wrong_ca = PgConfig::parse_with_env(
        &cert_string(&format!("sslmode=verify-ca {cert}")).replace("ca.pem", "other.pem"),
        &|_| None,
    )
    .unwrap();
    let err = ReplicationConnection::connect(&wrong_ca)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, SourceError::TlsHandshake { .. }), "{err}");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    assert!(wrong_ca.connect_sql().await.is_err());
}

#[tokio::test]
async fn application_names_default_to_sluice_and_the_slot() {
    let s = server();
    let base = format!(
        "host=127.0.0.1 port={} dbname=postgres user=postgres sslmode=disable",
        s.cluster.port()
    );
    let cfg = PgConfig::parse_with_env(&base, &|_| None).unwrap();
    let sql = "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()";
    assert_eq!(both(&cfg, sql).await.unwrap(), "sluice");
    let repl = cfg.for_replication("app_slot");
    let mut conn = ReplicationConnection::connect(&repl).await.unwrap();
    let admin = cfg.connect_sql().await.unwrap();
    let walsenders: Vec<String> = admin
        .query(
            "SELECT application_name FROM pg_stat_activity WHERE backend_type = 'walsender'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        walsenders.contains(&"sluice-app_slot".to_owned()),
        "{walsenders:?}"
    );
    conn.identify_system().await.unwrap();
    conn.close().await.unwrap();
    let named = PgConfig::parse_with_env(&format!("{base} application_name=mine"), &|_| None)
        .unwrap()
        .for_replication("app_slot");
    assert_eq!(both(&named, sql).await.unwrap(), "mine");
}
