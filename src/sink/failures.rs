//! Reading and resolving the dead letters in `sync_rule_failures`: for `sluice failures` (which
//! reads the sink directly) and for a replay (see `pipeline::replay`).

use tokio_postgres::Client;

use crate::model::Lsn;
use crate::sink::writer::UNKNOWN_RECORD_ID;
use crate::sink::{Sink, SinkError};

/// One unresolved failure, as a replay needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved {
    pub id: i64,
    pub table_name: String,
    pub record_id: String,
}

/// Failures of one table with one error text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureGroup {
    pub table_name: String,
    pub error_text: String,
    pub count: i64,
    /// Distinct rows.
    pub keys: i64,
    pub first_lsn: Option<Lsn>,
    pub last_lsn: Option<Lsn>,
    pub rules_versions: Vec<String>,
}

/// One failure, for the listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureRow {
    pub id: i64,
    pub table_name: String,
    pub record_id: String,
    pub lsn: Option<Lsn>,
    pub rules_version: Option<String>,
    pub error_text: String,
}

/// What `sluice failures` prints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FailureReport {
    pub unresolved: i64,
    pub resolved: i64,
    /// Unresolved failures by table and error text, most frequent first.
    pub groups: Vec<FailureGroup>,
    /// The most recent unresolved failures, newest first.
    pub latest: Vec<FailureRow>,
}

fn lsn(v: Option<i64>) -> Option<Lsn> {
    v.map(|l| Lsn(l as u64))
}

/// Summarises the unresolved failures (of `table` only, when given) and lists the latest `limit`.
pub async fn report(
    client: &Client,
    table: Option<&str>,
    limit: i64,
) -> Result<FailureReport, SinkError> {
    let counts = client
        .query_one(
            "SELECT count(*) FILTER (WHERE resolved_at IS NULL), count(*) FILTER (WHERE resolved_at IS NOT NULL) \
             FROM sync_rule_failures WHERE $1::text IS NULL OR table_name = $1",
            &[&table],
        )
        .await
        .map_err(|e| SinkError::sql("counting rule failures", e))?;
    let groups = client
        .query(
            "SELECT table_name, error_text, count(*), count(DISTINCT record_id), min(lsn), max(lsn), \
                    array_remove(array_agg(DISTINCT rules_version), NULL) \
             FROM sync_rule_failures WHERE resolved_at IS NULL AND ($1::text IS NULL OR table_name = $1) \
             GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
            &[&table],
        )
        .await
        .map_err(|e| SinkError::sql("summarising rule failures", e))?;
    let latest = client
        .query(
            "SELECT id, table_name, record_id, lsn, rules_version, error_text FROM sync_rule_failures \
             WHERE resolved_at IS NULL AND ($1::text IS NULL OR table_name = $1) ORDER BY id DESC LIMIT $2",
            &[&table, &limit],
        )
        .await
        .map_err(|e| SinkError::sql("listing rule failures", e))?;
    Ok(FailureReport {
        unresolved: counts.get(0),
        resolved: counts.get(1),
        groups: groups
            .iter()
            .map(|r| FailureGroup {
                table_name: r.get(0),
                error_text: r.get(1),
                count: r.get(2),
                keys: r.get(3),
                first_lsn: lsn(r.get(4)),
                last_lsn: lsn(r.get(5)),
                rules_versions: r.get(6),
            })
            .collect(),
        latest: latest
            .iter()
            .map(|r| FailureRow {
                id: r.get(0),
                table_name: r.get(1),
                record_id: r.get(2),
                lsn: lsn(r.get(3)),
                rules_version: r.get(4),
                error_text: r.get(5),
            })
            .collect(),
    })
}

impl Sink {
    /// The highest failure id stored (0 when none).
    pub async fn last_failure_id(&self) -> Result<i64, SinkError> {
        let row = self
            .client()
            .query_one(
                "SELECT coalesce(max(id), 0)::int8 FROM sync_rule_failures",
                &[],
            )
            .await
            .map_err(|e| SinkError::sql("reading the last rule failure", e))?;
        Ok(row.get(0))
    }

    /// Up to `limit` unresolved failures with a known key, with `after < id <= up_to`, in id
    /// order, at or after `since` and of `table` when given.
    pub async fn unresolved_failures(
        &self,
        since: Option<Lsn>,
        table: Option<&str>,
        after: i64,
        up_to: i64,
        limit: i64,
    ) -> Result<Vec<Unresolved>, SinkError> {
        let since = since.map(|l| l.0 as i64);
        let rows = self
            .client()
            .query(
                "SELECT id, table_name, record_id FROM sync_rule_failures \
                 WHERE resolved_at IS NULL AND record_id <> $1 AND id > $2 AND id <= $3 \
                   AND ($4::int8 IS NULL OR lsn >= $4) AND ($5::text IS NULL OR table_name = $5) \
                 ORDER BY id LIMIT $6",
                &[&UNKNOWN_RECORD_ID, &after, &up_to, &since, &table, &limit],
            )
            .await
            .map_err(|e| SinkError::sql("reading unresolved rule failures", e))?;
        Ok(rows
            .iter()
            .map(|r| Unresolved {
                id: r.get(0),
                table_name: r.get(1),
                record_id: r.get(2),
            })
            .collect())
    }

    /// Marks failures resolved inside the open sink transaction.
    pub async fn resolve_failures(&mut self, ids: &[i64]) -> Result<u64, SinkError> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.begin().await?;
        self.client()
            .execute(
                "UPDATE sync_rule_failures SET resolved_at = now() WHERE id = ANY($1::int8[]) AND resolved_at IS NULL",
                &[&ids],
            )
            .await
            .map_err(|e| SinkError::sql("marking rule failures resolved", e))
    }
}
