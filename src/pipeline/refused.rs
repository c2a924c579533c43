//! Published tables sluice refuses to stream: those whose changes cannot be tied to a primary
//! key (no primary key, REPLICA IDENTITY NOTHING, an identity index without the key, a key
//! column the publication does not stream).
//!
//! The decision is the same at start and while running: such a table is left out — not
//! snapshotted, its streamed changes skipped — with an error-level log line naming the table and
//! the fix, and the `sluice_refused_tables` gauge counting it. The other tables stream on, and
//! readiness stays as it is (alert on the gauge). Each look at the publication (`pipeline::join`)
//! checks a refused table again: once fixed, it joins like any table added to the publication,
//! and its existing rows are read by the walk of joined tables, so the changes skipped while it
//! was refused are not lost. Before this, such a table failed the start ("has no primary key")
//! while, added at runtime, every change of it was dead-lettered.

use metrics::gauge;
use rustc_hash::FxHashMap;
use tracing::{error, info};

use crate::model::{KeyGap, ReplicaIdentity, TableSchema};
use crate::source::catalog::{CatalogError, RefusedTable, sql_name};

/// The gauge of refused tables.
pub const REFUSED_TABLES: &str = "sluice_refused_tables";

/// The refused tables, by relation OID: (qualified name, reason with the fix).
#[derive(Debug, Default)]
pub struct RefusedTables {
    by_oid: FxHashMap<u32, (String, String)>,
}

impl RefusedTables {
    /// Starts from the refusals of the session's first look at the publication.
    pub fn at_start(refused: Vec<RefusedTable>) -> Self {
        metrics::describe_gauge!(
            REFUSED_TABLES,
            "Published tables sluice does not stream because their changes cannot be tied to a primary key"
        );
        let mut tables = RefusedTables::default();
        tables.update(refused);
        tables
    }

    /// True when the table with `oid` is refused: its changes are skipped.
    pub fn contains(&self, oid: u32) -> bool {
        self.by_oid.contains_key(&oid)
    }

    /// Qualified names of the refused tables.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.by_oid.values().map(|(n, _)| n.clone()).collect();
        names.sort();
        names
    }

    /// Replaces the set with what the publication says now: a newly refused table is logged at
    /// error level, one no longer refused at info level (it joins).
    pub fn update(&mut self, now: Vec<RefusedTable>) {
        let mut next = FxHashMap::default();
        for r in now {
            if !self.by_oid.contains_key(&r.oid) {
                error!(table = %r.table, reason = %r.reason, "REFUSING TABLE: its changes cannot be tied to a primary key, so sluice does not stream it (the other tables stream on); fix it as the reason says and it joins at the next look at the publication");
            }
            next.insert(r.oid, (r.table, r.reason.to_string()));
        }
        for (oid, (table, _)) in &self.by_oid {
            if !next.contains_key(oid) {
                info!(table = %table, "table no longer refused (fixed, or it left the publication)");
            }
        }
        self.by_oid = next;
        self.publish();
    }

    /// Refuses one table now (a Relation message showed a table sluice does not stream, without
    /// a usable key), ahead of the next look at the publication.
    pub fn refuse(&mut self, oid: u32, table: String, reason: String) {
        if self.by_oid.contains_key(&oid) {
            return;
        }
        error!(table = %table, reason = %reason, "REFUSING TABLE: its changes cannot be tied to a primary key, so sluice does not stream it (the other tables stream on); fix it as the reason says and it joins at the next look at the publication");
        self.by_oid.insert(oid, (table, reason));
        self.publish();
    }

    /// Forgets tables no longer in the publication (`published` holds the OIDs still in it).
    pub fn retain_published(&mut self, published: &[u32]) {
        let before = self.by_oid.len();
        self.by_oid.retain(|oid, _| published.contains(oid));
        if self.by_oid.len() != before {
            self.publish();
        }
    }

    fn publish(&self) {
        gauge!(REFUSED_TABLES).set(self.by_oid.len() as f64);
    }
}

/// The reason, with its fix, that a table with `gap` is refused: the words the look at the
/// publication uses for it.
pub fn gap_reason(shape: &TableSchema, gap: KeyGap) -> String {
    let table = shape.qualified_name();
    let sql = sql_name(&shape.schema, &shape.name);
    let error = match gap {
        KeyGap::NoPrimaryKey => CatalogError::NoPrimaryKey {
            table,
            sql,
            ri: if shape.replica_identity == ReplicaIdentity::Full {
                " (REPLICA IDENTITY FULL is not enough)"
            } else {
                ""
            },
        },
        KeyGap::IdentityNothing => CatalogError::ReplicaIdentityNothing { table, sql },
        KeyGap::IdentityLacks(columns) => CatalogError::IdentityLacksKey {
            table,
            sql,
            index: "(its replica identity index)".to_owned(),
            plural: if columns.len() == 1 { "" } else { "s" },
            columns: columns.join(", "),
        },
    };
    error.to_string()
}
