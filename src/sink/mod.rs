//! The sink stage: changelog rows, bucket edges and the confirmed LSN, persisted together.

pub mod cascade;
pub mod checksum;
pub mod copy_binary;
pub mod deferred_indexes;
pub mod edge_diff;
pub mod failures;
pub mod forget;
pub mod lease;
pub mod memberships;
pub mod progress;
pub mod record;
pub mod record_id;
pub mod relation_graph;
pub mod relations;
pub mod schema;
pub mod search_path;
pub mod vanished;
pub mod writer;

pub use record::{RelatedRow, RuleFailure, SinkItem, SinkRecord};
pub use relation_graph::RelationGraph;
pub use writer::{Sink, WriteStats};

/// A sink failure. Every variant says what sluice was doing when it failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink database error while {what}: {source}")]
    Sql {
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(transparent)]
    Schema(#[from] schema::SchemaError),
    /// Another process took over the slot: this one must not commit (see [`lease`]).
    #[error(
        "fenced: another sluice took over replication slot {slot:?} (this process held epoch {epoch}); the sink transaction was rolled back and nothing was committed"
    )]
    Fenced { slot: String, epoch: i64 },
}

impl SinkError {
    pub(crate) fn sql(what: impl Into<String>, source: tokio_postgres::Error) -> Self {
        SinkError::Sql {
            what: what.into(),
            source,
        }
    }

    /// True when the connection itself is gone (reconnect), rather than a statement failing.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            SinkError::Sql { source, .. } => {
                source.as_db_error().is_none() || session_ended(source)
            }
            SinkError::Schema(e) => e
                .source_error()
                .is_some_and(|source| source.as_db_error().is_none() || session_ended(source)),
            SinkError::Fenced { .. } => false,
        }
    }
}

/// True when `e` means the session is gone: the socket closed, or the server ended the session
/// itself (`pg_ctl stop -m fast` sends `57P01 admin_shutdown` before closing, a crashed sibling
/// backend `57P02`, a server still starting `57P03`; class 08 is a connection exception).
pub fn session_ended(e: &tokio_postgres::Error) -> bool {
    e.is_closed()
        || e.as_db_error().is_some_and(|db| {
            let code = db.code().code();
            code.starts_with("57P") || code.starts_with("08")
        })
}
