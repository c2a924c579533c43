//! Connection settings shared by the source (replication) and the sink (ordinary SQL).
//!
//! One parser for the URL and `key=value` forms, one TLS policy, so both connections to the same
//! server behave the same way and neither ever logs a password.

mod config;
pub mod pgpass;
mod tls;

pub use config::{DEFAULT_APPLICATION_NAME, Host, PgConfig, PgConfigError, SslMode};
pub use tls::{TlsError, client_config, server_name};

/// Failure to open an ordinary SQL connection.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("cannot connect to {target}: {source}; check the host, port, credentials and sslmode")]
    Connect {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Logs a NoticeResponse from any of sluice's connections, SQL or replication, the same way.
///
/// A notice is the server thinking aloud (`... already exists, skipping` at every start): debug.
/// A WARNING is something an operator should look at: warn.
pub fn log_notice(severity: &str, code: &str, message: &str) {
    if severity == "WARNING" {
        tracing::warn!(target: "sluice::pg", code, "server warning: {message}");
    } else {
        tracing::debug!(target: "sluice::pg", severity, code, "server notice: {message}");
    }
}
