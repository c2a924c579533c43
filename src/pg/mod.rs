//! Connection settings shared by the source (replication) and the sink (ordinary SQL).
//!
//! One parser for the URL and `key=value` forms, one TLS policy, so both connections to the same
//! server behave the same way and neither ever logs a password.

mod config;
mod tls;

pub use config::{Host, PgConfig, PgConfigError, SslMode};
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
