//! Forgetting a table that left the publication: the admin action behind `POST /tables/forget`
//! and `sluice forget-table`.
//!
//! A table that leaves the publication is no longer streamed, so its memberships would stay as
//! they were for good. This removes them, each with a changelog delete (see `sink::forget`). It
//! runs on the stream loop between source transactions, like a re-bucketing chunk, so it never
//! interleaves with a streamed change. A refused or failed request fails alone: the reason goes
//! back to the caller and the stream goes on; only a lost connection ends the session (which
//! then reconnects, as for any other lost connection).

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Client;
use tracing::info;

use crate::pipeline::PipelineError;
use crate::pipeline::admin_action::contain;
use crate::sink::Sink;
use crate::source::catalog;

/// A request to forget one table (qualified name, as in `sync_bucket_edges.table_name`).
pub struct ForgetRequest {
    pub table: String,
    pub reply: Option<oneshot::Sender<ForgetOutcome>>,
}

/// What forgetting did, or why it did not run.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum ForgetOutcome {
    Done {
        table: String,
        records: u64,
        changelog_rows: u64,
    },
    Rejected {
        reason: String,
    },
}

/// The sending end, for the admin listener.
#[derive(Clone)]
pub struct ForgetHandle {
    tx: mpsc::Sender<ForgetRequest>,
}

impl ForgetHandle {
    /// Forgets `table` and waits for the outcome.
    pub async fn forget(&self, table: String) -> ForgetOutcome {
        let (reply, rx) = oneshot::channel();
        let request = ForgetRequest {
            table,
            reply: Some(reply),
        };
        if self.tx.send(request).await.is_err() {
            return ForgetOutcome::Rejected {
                reason: "the pipeline is shutting down".into(),
            };
        }
        rx.await.unwrap_or(ForgetOutcome::Rejected {
            reason: "the pipeline stopped before the table was forgotten; nothing was removed"
                .into(),
        })
    }
}

/// A handle and the pipeline's receiver.
pub fn channel() -> (ForgetHandle, mpsc::Receiver<ForgetRequest>) {
    let (tx, rx) = mpsc::channel(4);
    (ForgetHandle { tx }, rx)
}

/// Runs `request`: refuses a table still in the publication (forgetting it would leave its rows
/// without memberships while their changes still stream), otherwise removes its memberships in
/// one sink transaction. The sink must have no open transaction.
pub async fn run(
    request: ForgetRequest,
    publication: &str,
    source: &Client,
    sink: &mut Sink,
    role: &str,
) -> Result<(), PipelineError> {
    let outcome = match forget(&request.table, publication, source, sink).await {
        Ok(outcome) => outcome,
        Err(e) => ForgetOutcome::Rejected {
            reason: contain("forget-table", e, sink, role).await?,
        },
    };
    if let Some(reply) = request.reply {
        let _ = reply.send(outcome);
    }
    Ok(())
}

async fn forget(
    table: &str,
    publication: &str,
    source: &Client,
    sink: &mut Sink,
) -> Result<ForgetOutcome, PipelineError> {
    let published = catalog::published_oids(source, publication).await?;
    if published.iter().any(|(_, name)| name == table) {
        return Ok(ForgetOutcome::Rejected {
            reason: format!(
                "table {table} is still in publication {publication}: its changes are streamed, so its memberships are kept. Remove it first with `ALTER PUBLICATION {} DROP TABLE ...;`",
                catalog::sql_ident(publication)
            ),
        });
    }
    let gone = sink.forget_table(table).await?;
    if gone.records == 0 {
        sink.rollback().await?;
        return Ok(ForgetOutcome::Rejected {
            reason: format!(
                "no memberships are stored for table {table} (name it as sync_bucket_edges.table_name does: schema-qualified unless in public)"
            ),
        });
    }
    sink.commit_without_lsn().await?;
    crate::pipeline::metrics::count_changelog_rows(gone.changelog_rows);
    info!(
        table,
        records = gone.records,
        changelog_rows = gone.changelog_rows,
        "forgot the table: its memberships are removed, each with a changelog delete"
    );
    Ok(ForgetOutcome::Done {
        table: table.to_owned(),
        records: gone.records,
        changelog_rows: gone.changelog_rows,
    })
}
