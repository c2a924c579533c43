//! Errors of the replication connection. Each says what went wrong and what to do about it;
//! none ever contains a password.

use crate::model::Lsn;
use crate::pg::TlsError;

use super::pgoutput::DecodeError;

/// An error reported by the server (ErrorResponse), without the password-bearing context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerError {
    pub severity: String,
    /// SQLSTATE, e.g. `42704`.
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} (SQLSTATE {})",
            self.severity, self.message, self.code
        )?;
        if let Some(d) = &self.detail {
            write!(f, "; detail: {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "; hint: {h}")?;
        }
        Ok(())
    }
}

impl ServerError {
    /// Whether the server refused for want of the REPLICATION attribute. The wording changed in
    /// PostgreSQL 16: up to 15 the message says "must be superuser or replication role …"; from 16
    /// it says "permission denied to start WAL sender" (or "… to use replication slots") and the
    /// detail names the REPLICATION attribute.
    pub(crate) fn lacks_replication(&self) -> bool {
        let mentions = |text: &str| {
            let text = text.to_ascii_lowercase();
            text.contains("replication") || text.contains("wal sender")
        };
        self.code == "42501"
            && (mentions(&self.message) || self.detail.as_deref().is_some_and(mentions))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "cannot connect to {target}: {source}; check that PostgreSQL is running and the host and port are right"
    )]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    TlsConfig(#[from] TlsError),
    #[error(
        "TLS handshake with {target} failed: {source}; check sslmode, sslrootcert and that the certificate names the host"
    )]
    TlsHandshake {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{target} does not accept TLS but sslmode={sslmode} requires it; enable ssl on the server or use sslmode=prefer"
    )]
    TlsRefused {
        target: String,
        sslmode: &'static str,
    },
    #[error(
        "password authentication failed for user {user:?} at {target}; check the password in the connection string (sluice never logs it)"
    )]
    WrongPassword { user: String, target: String },
    #[error(
        "{target} asks user {user:?} for a password but the connection string has none; add password=... or a URL user:password@"
    )]
    PasswordRequired { user: String, target: String },
    #[error(
        "{target} asks for authentication method {method}, which sluice does not support; use scram-sha-256, md5, password or trust in pg_hba.conf"
    )]
    UnsupportedAuth { target: String, method: String },
    #[error(
        "{target} rejected the connection: {server}; add a pg_hba.conf line such as `host replication {user} <client-address> scram-sha-256` (replication connections need their own line) and reload"
    )]
    HbaRejected {
        target: String,
        user: String,
        server: Box<ServerError>,
    },
    #[error(
        "role {user:?} lacks the REPLICATION attribute; run `ALTER ROLE {user} REPLICATION` as a superuser"
    )]
    LacksReplication { user: String },
    #[error(
        "logical decoding needs wal_level = logical but the server has wal_level = {current}; set wal_level = logical in postgresql.conf and restart PostgreSQL"
    )]
    WalLevel { current: String },
    #[error(
        "PostgreSQL {version} is too old: sluice needs PostgreSQL 14 or newer; upgrade the server"
    )]
    ServerTooOld { version: String },
    #[error(
        "replication slot {slot:?} does not exist; create it (sluice tail --create-slot, or SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput'))"
    )]
    SlotMissing { slot: String },
    #[error(
        "replication slot {slot:?} is active for PID {pid}; stop that consumer (SELECT pg_terminate_backend({pid})) or use another slot"
    )]
    SlotActive { slot: String, pid: i64 },
    #[error(
        "replication slot {slot:?} already exists; reuse it or drop it with SELECT pg_drop_replication_slot('{slot}')"
    )]
    SlotExists { slot: String },
    #[error(
        "replication slot name {slot:?} is invalid: use 1 to 63 lowercase letters, digits and underscores"
    )]
    InvalidSlotName { slot: String },
    #[error("publication {} does not exist in database {database:?}; create it with CREATE PUBLICATION {} FOR TABLE ...", names.join(", "), names.first().map(String::as_str).unwrap_or("name"))]
    PublicationMissing {
        names: Vec<String>,
        database: String,
    },
    #[error(
        "the replication connection to {target} was lost after LSN {last_lsn}: {reason}; reconnect and resume from the last confirmed LSN"
    )]
    ConnectionLost {
        target: String,
        last_lsn: Lsn,
        reason: String,
    },
    #[error("server error while {context}: {server}")]
    Server {
        context: String,
        server: Box<ServerError>,
    },
    #[error("replication protocol error while {context}: {what}")]
    Protocol { context: String, what: String },
    /// The socket failed outside the stream (startup, commands, START_REPLICATION): as
    /// recoverable as [`SourceError::ConnectionLost`].
    #[error(
        "the connection was lost while {context}: {source}; sluice reconnects and resumes from the last confirmed LSN"
    )]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot decode the pgoutput message at LSN {lsn}: {source}")]
    Decode {
        lsn: Lsn,
        #[source]
        source: DecodeError,
    },
    #[error(
        "pgoutput referenced relation OID {oid} at LSN {lsn} before sending its Relation message"
    )]
    UnknownRelation { oid: u32, lsn: Lsn },
    #[error("{what} at LSN {lsn}: the tuple has {got} columns but relation {table} has {expected}")]
    ColumnCount {
        what: &'static str,
        table: String,
        lsn: Lsn,
        got: usize,
        expected: usize,
    },
    #[error("the replication stream is closed")]
    Closed,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: &str, message: &str, detail: Option<&str>) -> ServerError {
        ServerError {
            severity: "FATAL".to_owned(),
            code: code.to_owned(),
            message: message.to_owned(),
            detail: detail.map(str::to_owned),
            hint: None,
        }
    }

    /// Each wording PostgreSQL 14 to 18 uses for a role without REPLICATION, and its neighbours.
    #[test]
    fn lacks_replication_across_versions() {
        // 14 and 15.
        assert!(
            err(
                "42501",
                "must be superuser or replication role to start walsender",
                None
            )
            .lacks_replication()
        );
        assert!(
            err(
                "42501",
                "must be superuser or replication role to use replication slots",
                None
            )
            .lacks_replication()
        );
        // 16, 17 and 18.
        assert!(
            err(
                "42501",
                "permission denied to start WAL sender",
                Some("Only roles with the REPLICATION attribute may start a WAL sender process.")
            )
            .lacks_replication()
        );
        assert!(
            err(
                "42501",
                "permission denied to use replication slots",
                Some("Only roles with the REPLICATION attribute may use replication slots.")
            )
            .lacks_replication()
        );
        // Other privilege errors are not this one.
        assert!(!err("42501", "permission denied for table items", None).lacks_replication());
        assert!(!err("42704", "replication slot \"s\" does not exist", None).lacks_replication());
    }
}
