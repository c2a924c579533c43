//! Authentication matrix against a private cluster configured through pg_hba.conf: trust,
//! cleartext, md5, SCRAM-SHA-256, and TLS with sslmode=require and verify-full (rcgen CA).

use std::path::PathBuf;
use std::sync::OnceLock;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use sluice::pg::PgConfig;
use sluice::source::{ReplicationConnection, SourceError};

use crate::pg::{Cluster, ClusterOptions};

struct AuthServer {
    cluster: &'static Cluster,
    ca: PathBuf,
    other_ca: PathBuf,
    _dir: tempfile::TempDir,
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    (params.self_signed(&key).unwrap(), key)
}

fn server() -> &'static AuthServer {
    static SERVER: OnceLock<AuthServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let (ca_cert, ca_key) = ca("sluice test CA");
        let (other_cert, _) = ca("some other CA");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
        let write = |name: &str, text: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let cert_path = write("server.crt", cert.pem());
        let key_path = write("server.key", key.serialize_pem());
        let ca = write("ca.pem", ca_cert.pem());
        let other_ca = write("other.pem", other_cert.pem());
        // Logical replication connections match database lines, not the `replication` keyword.
        let hba = "host all postgres 127.0.0.1/32 trust\n\
                   host all trust_user 127.0.0.1/32 trust\n\
                   host all clear_user 127.0.0.1/32 password\n\
                   host all md5_user 127.0.0.1/32 md5\n\
                   host all scram_user 127.0.0.1/32 scram-sha-256\n\
                   hostssl all tls_user 127.0.0.1/32 scram-sha-256\n\
                   hostnossl all tls_user 127.0.0.1/32 reject\n";
        let cluster = Cluster::start(ClusterOptions {
            hba: Some(hba.to_owned()),
            ssl: Some((cert_path, key_path)),
            ..Default::default()
        })
        .keep_until_exit();
        cluster.psql(
            "postgres",
            "CREATE ROLE trust_user LOGIN REPLICATION;
             CREATE ROLE clear_user LOGIN REPLICATION PASSWORD 'clear pw';
             SET password_encryption = 'md5';
             CREATE ROLE md5_user LOGIN REPLICATION PASSWORD 'md5 pw';
             SET password_encryption = 'scram-sha-256';
             CREATE ROLE scram_user LOGIN REPLICATION PASSWORD 'scr@m pw';
             CREATE ROLE tls_user LOGIN REPLICATION PASSWORD 'tls pw';",
        );
        AuthServer {
            cluster,
            ca,
            other_ca,
            _dir: dir,
        }
    })
}

fn cfg(user: &str, password: Option<&str>, extra: &str) -> PgConfig {
    let s = server();
    let mut text = format!(
        "host=127.0.0.1 port={} dbname=postgres user={user} sslmode=disable",
        s.cluster.port()
    );
    if let Some(pw) = password {
        text.push_str(&format!(" password='{pw}'"));
    }
    text.push(' ');
    text.push_str(extra);
    PgConfig::parse(&text).unwrap()
}

async fn connects(cfg: &PgConfig) -> Result<(), SourceError> {
    let mut conn = ReplicationConnection::connect(cfg).await?;
    let info = conn.identify_system().await?;
    assert_eq!(info.dbname.as_deref(), Some("postgres"));
    assert!(info.timeline >= 1);
    conn.close().await
}

#[tokio::test]
async fn trust() {
    connects(&cfg("trust_user", None, "")).await.unwrap();
}

#[tokio::test]
async fn cleartext_password() {
    connects(&cfg("clear_user", Some("clear pw"), ""))
        .await
        .unwrap();
}

#[tokio::test]
async fn md5() {
    // The role's password is stored as md5, so the server really uses the md5 exchange.
    let stored = server().cluster.psql(
        "postgres",
        "SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = 'md5_user'",
    );
    assert_eq!(stored, "md5\n");
    connects(&cfg("md5_user", Some("md5 pw"), ""))
        .await
        .unwrap();
}

#[tokio::test]
async fn scram_sha_256_and_wrong_password() {
    connects(&cfg("scram_user", Some("scr@m pw"), ""))
        .await
        .unwrap();
    let err = connects(&cfg("scram_user", Some("not it"), ""))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert_eq!(
        msg,
        format!(
            "password authentication failed for user \"scram_user\" at 127.0.0.1:{}; check the password in the connection string (sluice never logs it)",
            server().cluster.port()
        )
    );
    assert!(!msg.contains("not it"));
    let err = connects(&cfg("scram_user", None, "")).await.unwrap_err();
    assert!(matches!(err, SourceError::PasswordRequired { .. }), "{err}");
    let err = connects(&cfg("md5_user", Some("wrong"), ""))
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::WrongPassword { .. }), "{err}");
}

#[tokio::test]
async fn tls_require() {
    // hostnossl rejects tls_user, so success proves the session is encrypted.
    connects(&cfg("tls_user", Some("tls pw"), "sslmode=require"))
        .await
        .unwrap();
    connects(&cfg("tls_user", Some("tls pw"), "sslmode=prefer"))
        .await
        .unwrap();
    let err = connects(&cfg("tls_user", Some("tls pw"), ""))
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::HbaRejected { .. }), "{err}");
}

#[tokio::test]
async fn tls_verify_full() {
    let s = server();
    let good = format!(
        "host=localhost port={} dbname=postgres user=tls_user password='tls pw' sslmode=verify-full sslrootcert={}",
        s.cluster.port(),
        s.ca.display()
    );
    let cfg = PgConfig::parse(&good).unwrap();
    connects(&cfg).await.unwrap();
    // The ordinary SQL connection applies the same policy.
    let client = cfg.connect_sql().await.unwrap();
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));

    let wrong_ca = PgConfig::parse(&good.replace(
        &s.ca.display().to_string(),
        &s.other_ca.display().to_string(),
    ))
    .unwrap();
    let err = connects(&wrong_ca).await.unwrap_err();
    assert!(matches!(err, SourceError::TlsHandshake { .. }), "{err}");
    assert!(wrong_ca.connect_sql().await.is_err());
}
