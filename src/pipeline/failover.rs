//! What sluice says when the source is a standby, or a promoted one, without a usable slot.
//!
//! A failover slot (PostgreSQL 17+) follows the primary to a promoted standby; any other slot does
//! not. The generic "slot dropped" message would send the operator re-snapshotting when the real
//! fix is pointing sluice at the right server, so the server's role is looked up first.

use tokio_postgres::Client;

use crate::model::Lsn;
use crate::sink::SinkError;
use crate::source::ReplicationConnection;

use super::{Context, PipelineError};

/// Whether the source server is a standby in recovery.
pub async fn in_recovery(source: &Client) -> Result<bool, PipelineError> {
    let row = source
        .query_one("SELECT pg_catalog.pg_is_in_recovery()", &[])
        .await
        .map_err(|e| SinkError::sql("asking the source whether it is a standby", e))?;
    Ok(row.get(0))
}

/// The error for a slot that is gone although the sink stored `lsn` through it: on a standby,
/// on a promoted standby (timeline above 1), or dropped on the primary.
pub async fn slot_missing(
    ctx: &Context,
    source: &Client,
    repl: &mut ReplicationConnection,
    lsn: Lsn,
) -> PipelineError {
    let slot = ctx.config.slot.clone();
    let server = ctx.source.target();
    match in_recovery(source).await {
        Ok(true) => return PipelineError::SlotMissingOnStandby { slot, server, lsn },
        Ok(false) => {}
        Err(e) => return e,
    }
    match repl.identify_system().await {
        Ok(info) if info.timeline > 1 => PipelineError::SlotMissingAfterPromotion {
            slot,
            server,
            timeline: info.timeline,
            lsn,
        },
        Ok(_) => PipelineError::SlotDropped { slot, lsn },
        Err(e) => e.into(),
    }
}
