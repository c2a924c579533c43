//! Reading stored memberships without changing anything: what the preview of a rules change
//! compares a candidate's buckets with.

use std::collections::HashMap;

use crate::sink::{Sink, SinkError};

impl Sink {
    /// The stored buckets of each of `ids` in `table` (a record without edges is absent), in one
    /// query. Outside any transaction: the preview reads, never writes.
    pub async fn memberships(
        &self,
        table: &str,
        ids: &[&str],
    ) -> Result<HashMap<String, Vec<String>>, SinkError> {
        let rows = self
            .client()
            .query(
                "SELECT record_id, bucket_id FROM sync_bucket_edges \
                 WHERE table_name = $1 AND record_id = ANY($2::text[])",
                &[&table, &ids],
            )
            .await
            .map_err(|e| SinkError::sql(format!("reading stored bucket edges of {table}"), e))?;
        let mut stored: HashMap<String, Vec<String>> = HashMap::new();
        for row in rows {
            stored.entry(row.get(0)).or_default().push(row.get(1));
        }
        Ok(stored)
    }

    /// True when rows of `table` have related-row state, i.e. the active rules' relations
    /// composed their memberships (own buckets plus what flows along relations).
    pub async fn has_related_state(&self, table: &str) -> Result<bool, SinkError> {
        let row = self
            .client()
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM sluice_row_state WHERE table_name = $1)",
                &[&table],
            )
            .await
            .map_err(|e| SinkError::sql(format!("reading the related-row state of {table}"), e))?;
        Ok(row.get(0))
    }
}
