//! Admin actions fail alone: the rule every operator request served on the stream loop follows
//! (re-bucketing, forgetting a table, replaying dead letters, activating a reloaded version, and
//! any action added later).
//!
//! An action runs on the stream's task, between source transactions, so its error surfaces where
//! the stream's own errors do. Only a lost connection may end the session there (the session then
//! reconnects and resumes from the stored LSN, as for any lost connection). Any other failure —
//! a table the role may not read, a table dropped meanwhile, a constraint in the sink — belongs
//! to the request: the sink's open transaction is rolled back, the reason goes back to the caller
//! with the fix where one is known, and the stream goes on. [`contain`] makes that decision, so a
//! new action gets it by routing its error through it.

use tokio::sync::oneshot;
use tracing::warn;

use crate::pipeline::PipelineError;
use crate::sink::Sink;

/// An admin action's outcome type: it can say why the action did not run.
pub trait Refusable {
    /// The outcome that tells the caller the action failed, and why.
    fn refused(reason: String) -> Self;
}

impl Refusable for crate::pipeline::rebucket::RebucketOutcome {
    fn refused(reason: String) -> Self {
        Self::Rejected { reason }
    }
}

impl Refusable for crate::pipeline::forget::ForgetOutcome {
    fn refused(reason: String) -> Self {
        Self::Rejected { reason }
    }
}

impl Refusable for crate::pipeline::replay::ReplayOutcome {
    fn refused(reason: String) -> Self {
        Self::Rejected { reason }
    }
}

/// Sends the rejection to the caller, if it still waits.
pub fn reject<O: Refusable>(reply: Option<oneshot::Sender<O>>, reason: String) {
    if let Some(reply) = reply {
        let _ = reply.send(O::refused(reason));
    }
}

/// Decides what a failed admin action's error does. A lost connection is returned (the session
/// ends and reconnects); anything else fails the action alone: the sink's open transaction is
/// rolled back and the reason for the caller, with its fix, is returned in `Ok`.
///
/// `role` is the role sluice reads the source as, named in the GRANT a permission error needs.
pub async fn contain(
    action: &'static str,
    error: PipelineError,
    sink: &mut Sink,
    role: &str,
) -> Result<String, PipelineError> {
    if error.is_transient() {
        return Err(error);
    }
    sink.rollback().await?;
    let reason = explain(&error, role);
    warn!(action, error = %reason, "admin action failed; nothing it did is kept past its last commit, and the stream goes on");
    Ok(reason)
}

/// The error's text, followed by the fix for the server errors an operator can fix.
pub fn explain(error: &PipelineError, role: &str) -> String {
    let text = error.to_string();
    let Some(db) = server_error(error) else {
        return text;
    };
    // The client library's text of a server error is only "db error": the server's message is
    // the part that says what went wrong.
    let text = if text.contains(db.message()) {
        text
    } else {
        format!("{text}: {}", db.message())
    };
    let table = table_of(error).or_else(|| denied_table(db.message()));
    let fix = match (db.code().code(), table) {
        // insufficient_privilege
        ("42501", Some(table)) => format!(
            "grant it with `GRANT SELECT ON {} TO {};` (on the source database), then try again",
            sql_table(&table),
            crate::source::catalog::sql_ident(role)
        ),
        ("42501", None) => format!("the role {role} lacks a privilege: grant it, then try again"),
        // undefined_table
        ("42P01", _) => "the table no longer exists (dropped or renamed meanwhile); check the publication and try again".to_owned(),
        _ => return text,
    };
    format!("{text}: {fix}")
}

/// The PostgreSQL error at the root of `error`, if any.
fn server_error(error: &PipelineError) -> Option<&tokio_postgres::error::DbError> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(pg) = e.downcast_ref::<tokio_postgres::Error>()
            && let Some(db) = pg.as_db_error()
        {
            return Some(db);
        }
        if let Some(db) = e.downcast_ref::<tokio_postgres::error::DbError>() {
            return Some(db);
        }
        next = e.source();
    }
    None
}

/// The table a read failed on, when the error names it.
fn table_of(error: &PipelineError) -> Option<String> {
    match error {
        PipelineError::Snapshot(crate::source::snapshot::SnapshotError::Read { table, .. })
            if !table.starts_with('(') =>
        {
            Some(table.clone())
        }
        _ => None,
    }
}

/// The table of PostgreSQL's `permission denied for table labels`.
fn denied_table(message: &str) -> Option<String> {
    message
        .strip_prefix("permission denied for table ")
        .map(str::to_owned)
}

/// `schema.table` (as sluice names tables: qualified unless public) as SQL.
fn sql_table(name: &str) -> String {
    use crate::source::catalog::sql_ident;
    match name.split_once('.') {
        Some((schema, table)) => format!("{}.{}", sql_ident(schema), sql_ident(table)),
        None => sql_ident(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_denied_table_is_read_from_the_server_message() {
        assert_eq!(
            denied_table("permission denied for table labels").as_deref(),
            Some("labels")
        );
        assert_eq!(denied_table("permission denied for schema s"), None);
    }

    #[test]
    fn a_qualified_name_is_quoted_part_by_part() {
        assert_eq!(sql_table("labels"), "labels");
        assert_eq!(sql_table("app.Labels"), "app.\"Labels\"");
    }

    #[test]
    fn an_error_without_a_server_error_is_its_text() {
        let e = PipelineError::Internal("x".into());
        assert_eq!(explain(&e, "sluice"), "internal error: x");
    }
}
