//! The sink stage: changelog rows, bucket edges and the confirmed LSN, persisted together.

pub mod copy_text;
pub mod edge_diff;
pub mod progress;
pub mod record;
pub mod record_id;
pub mod schema;
pub mod writer;

pub use record::{RuleFailure, SinkItem, SinkRecord};
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
            SinkError::Sql { source, .. } => source.is_closed() || source.as_db_error().is_none(),
        }
    }
}
