//! The primary key of streamed tables, from the catalog.
//!
//! A pgoutput Relation message flags the replica identity's columns (every column under FULL, an
//! index's columns under USING INDEX), not the primary key, and says nothing of key order. The
//! record id is the primary key in key order whatever the replica identity, so for every Relation
//! message (they come after DDL and are rare) the key is read from the catalog, and the changes
//! that follow carry a shape with that key. The decoder stays free of I/O: this runs where the
//! catalog connection lives, between the source and the rules.
//!
//! The table's name is also the catalog's current one, not the Relation message's (which is the
//! name as of its WAL position): a table keeps one `table_name` for all its changes, and a
//! renamed one's stored memberships move to its new name (see [`crate::sink::relations`]) at
//! the first Relation message that shows the rename, in stream order.
//!
//! The catalog is read when the Relation message is received, not as of its WAL position. While
//! the stream is behind DDL that changed the key, the changes still in the stream are identified
//! by the current key: a change whose tuple does not carry a current key column (a delete's
//! old-key tuple under the replica identity of that time) has no key, and fails under the failure
//! policy rather than being given a guessed one.

use std::sync::Arc;

use rustc_hash::FxHashMap;
use tokio_postgres::Client;
use tracing::{debug, warn};

use crate::model::{Change, KeyGap, RelationNames, TableMove, TableSchema, reconcile};

use super::catalog::{CatalogError, RelationNow, relation_now, sql_name, table_names_now};

/// Stream shapes with their primary key filled in, by relation OID.
#[derive(Default)]
pub struct KeyedRelations {
    /// The shape as decoded (compared by `Arc` identity) and the same shape with its key.
    by_oid: FxHashMap<u32, (Arc<TableSchema>, Arc<TableSchema>)>,
    /// Names and primary keys read at the session's start, by relation OID, each used for
    /// that table's first Relation message only.
    seeds: FxHashMap<u32, RelationNow>,
    /// The `table_name` each relation's memberships are stored under (or will be, once the
    /// pending renames are written).
    names: FxHashMap<u32, String>,
    /// Renames and new relations seen since last taken, for the sink.
    pending: RelationNames,
}

impl KeyedRelations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts from the names and keys the session's preflight read from the catalog: the first
    /// Relation message of each table (every table gets one when the stream starts) then needs
    /// no catalog round trip, so the stream starts without one query per table and does not
    /// wait on the catalog connection. A later Relation message (after DDL) reads the catalog.
    /// `names` are the `table_name`s the sink stores each relation under.
    pub fn seeded(
        tables: &[super::catalog::PublishedTable],
        names: FxHashMap<u32, String>,
    ) -> Self {
        let seeds = tables
            .iter()
            .map(|t| {
                let s = &t.schema;
                let primary_key = s
                    .primary_key
                    .iter()
                    .map(|&i| s.columns[i].name.clone())
                    .collect();
                let name = Some((s.schema.clone(), s.name.clone()));
                (s.oid, RelationNow { name, primary_key })
            })
            .collect();
        KeyedRelations {
            by_oid: FxHashMap::default(),
            seeds,
            names,
            pending: RelationNames::default(),
        }
    }

    /// Renames and new relations seen since the last call: what the sink must write before the
    /// changes that follow.
    pub fn take_names(&mut self) -> Option<RelationNames> {
        let names = std::mem::take(&mut self.pending);
        (!names.is_empty()).then_some(names)
    }

    /// Reads the primary key of a table the stream just described, and returns its shape with
    /// that key. Warns when some of its changes will not be tied to a row (see
    /// [`TableSchema::key_gap`]) and when the key differs from the one seen before.
    pub async fn relation(
        &mut self,
        client: &Client,
        decoded: Arc<TableSchema>,
    ) -> Result<Arc<TableSchema>, CatalogError> {
        // A seed whose name is not the message's is stale (the table was renamed since, or
        // the stream is still behind a rename): the catalog says what holds now.
        let seed = self.seeds.remove(&decoded.oid).filter(|seed| {
            seed.name
                .as_ref()
                .is_some_and(|(schema, name)| *schema == decoded.schema && *name == decoded.name)
        });
        let now = match seed {
            Some(now) => now,
            None => relation_now(client, decoded.oid).await?,
        };
        let names = now.primary_key;
        let mut decoded_now = (*decoded).clone();
        // A dropped table keeps the name the stream gives it.
        if let Some((schema, name)) = now.name {
            decoded_now.schema = schema;
            decoded_now.name = name;
        }
        self.follow_name(client, &decoded_now).await?;
        let (shape, unstreamed) = keyed_shape(&decoded_now, &names);
        let table = shape.qualified_name();
        let sql = sql_name(&shape.schema, &shape.name);
        if !unstreamed.is_empty() {
            warn!(
                table,
                columns = unstreamed.join(", "),
                "the stream does not carry these primary key columns (a column list or a generated column leaves them out): the table's changes cannot be tied to a row and fail under the failure policy; publish them"
            );
        } else {
            match shape.key_gap() {
                None => {}
                Some(KeyGap::NoPrimaryKey) => warn!(
                    table,
                    "the table has no primary key now: its changes cannot be tied to a row and fail under the failure policy; add one with `ALTER TABLE {sql} ADD PRIMARY KEY (...)`"
                ),
                Some(KeyGap::IdentityNothing) => warn!(
                    table,
                    "the table has REPLICA IDENTITY NOTHING now: `ALTER TABLE {sql} REPLICA IDENTITY DEFAULT;`"
                ),
                Some(KeyGap::IdentityLacks(columns)) => warn!(
                    table,
                    columns = columns.join(", "),
                    "the replica identity leaves out these primary key columns: deletes cannot be tied to a row and fail under the failure policy; run `ALTER TABLE {sql} REPLICA IDENTITY DEFAULT;`"
                ),
            }
        }
        if let Some((_, before)) = self.by_oid.get(&decoded.oid) {
            let key = |s: &TableSchema| -> Vec<String> {
                s.primary_key
                    .iter()
                    .map(|&i| s.columns[i].name.clone())
                    .collect()
            };
            let (old, new) = (key(before), key(&shape));
            if old != new && !old.is_empty() {
                warn!(
                    table,
                    before = old.join(", "),
                    now = new.join(", "),
                    "the primary key changed: changes from here on are identified by the new key; memberships stored under the old key's record ids stay until they are cleared"
                );
            }
        }
        debug!(table, key = ?shape.primary_key, "primary key read from the catalog");
        let shape = Arc::new(shape);
        self.by_oid
            .insert(decoded.oid, (decoded, Arc::clone(&shape)));
        Ok(shape)
    }

    /// Notes the relation's current name: recorded if new; if the memberships are stored under
    /// another name, every recorded relation's current name is read (a rename can swap names
    /// between tables, and all of them must move at once) and the moves are queued.
    async fn follow_name(
        &mut self,
        client: &Client,
        shape: &TableSchema,
    ) -> Result<(), CatalogError> {
        let name = shape.qualified_name();
        match self.names.get(&shape.oid) {
            Some(stored) if *stored == name => return Ok(()),
            None => {
                self.record(vec![(shape.oid, name)], Vec::new());
                return Ok(());
            }
            Some(_) => {}
        }
        let oids: Vec<u32> = self.names.keys().copied().collect();
        let mut current = table_names_now(client, &oids).await?;
        current.retain(|(oid, _)| *oid != shape.oid);
        current.push((shape.oid, name));
        let found = reconcile(&current, &self.names);
        for m in &found.moves {
            warn!(
                from = %m.from,
                to = %m.to,
                "table renamed: its memberships move to the new name (the changelog deletes each under the old name and inserts it under the new one)"
            );
        }
        self.record(found.names, found.moves);
        Ok(())
    }

    fn record(&mut self, names: Vec<(u32, String)>, moves: Vec<TableMove>) {
        for (oid, name) in &names {
            self.names.insert(*oid, name.clone());
        }
        self.pending.names.extend(names);
        self.pending.moves.extend(moves);
    }

    /// The keyed shape for a decoded one, reading the catalog if it has not been seen (the
    /// decoder always sends a Relation first, so that is a fallback).
    pub async fn keyed(
        &mut self,
        client: &Client,
        decoded: &Arc<TableSchema>,
    ) -> Result<Arc<TableSchema>, CatalogError> {
        match self.by_oid.get(&decoded.oid) {
            Some((seen, keyed)) if Arc::ptr_eq(seen, decoded) => Ok(Arc::clone(keyed)),
            _ => self.relation(client, Arc::clone(decoded)).await,
        }
    }

    /// Gives `change` the keyed shape of its table.
    pub async fn key_change(
        &mut self,
        client: &Client,
        change: &mut Change,
    ) -> Result<(), CatalogError> {
        change.table = self.keyed(client, &change.table).await?;
        Ok(())
    }
}

/// `decoded` with the primary key `names` (in key order) resolved to its columns, and the key
/// columns the stream's shape lacks. A key with a missing column is no key at all: a partial
/// key would be a guess.
fn keyed_shape(decoded: &TableSchema, names: &[String]) -> (TableSchema, Vec<String>) {
    let mut key = Vec::with_capacity(names.len());
    let mut missing = Vec::new();
    for name in names {
        match decoded.column_index(name) {
            Some(i) => key.push(i),
            None => missing.push(name.clone()),
        }
    }
    if !missing.is_empty() {
        key.clear();
    }
    (decoded.with_primary_key(key), missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Column, ReplicaIdentity};

    fn decoded(ri: ReplicaIdentity, identity: Vec<usize>) -> TableSchema {
        let col = |name: &str| Column {
            name: name.into(),
            type_oid: 25,
            type_modifier: -1,
            key: false,
        };
        TableSchema {
            oid: 7,
            schema: "public".into(),
            name: "m".into(),
            replica_identity: ri,
            columns: vec![col("org"), col("member"), col("note")],
            primary_key: Vec::new(),
            identity,
        }
    }

    #[test]
    fn key_follows_the_catalog_order_not_the_column_order() {
        let (shape, missing) = keyed_shape(
            &decoded(ReplicaIdentity::Full, vec![0, 1, 2]),
            &["member".into(), "org".into()],
        );
        assert!(missing.is_empty());
        assert_eq!(shape.primary_key, vec![1, 0]);
        assert_eq!(
            shape.columns.iter().map(|c| c.key).collect::<Vec<_>>(),
            vec![true, true, false]
        );
        assert_eq!(shape.key_gap(), None);
    }

    #[test]
    fn a_key_column_the_stream_lacks_leaves_no_key() {
        let (shape, missing) = keyed_shape(
            &decoded(ReplicaIdentity::Default, vec![0]),
            &["org".into(), "gone".into()],
        );
        assert_eq!(missing, vec!["gone".to_owned()]);
        assert!(shape.primary_key.is_empty());
        assert_eq!(shape.key_gap(), Some(KeyGap::NoPrimaryKey));
    }

    #[test]
    fn an_identity_index_without_the_key_is_a_gap() {
        let (shape, _) = keyed_shape(
            &decoded(ReplicaIdentity::Index, vec![2]),
            &["org".into(), "member".into()],
        );
        assert_eq!(
            shape.key_gap(),
            Some(KeyGap::IdentityLacks(vec!["org".into(), "member".into()]))
        );
        let (nothing, _) = keyed_shape(&decoded(ReplicaIdentity::Nothing, vec![]), &["org".into()]);
        assert_eq!(nothing.key_gap(), Some(KeyGap::IdentityNothing));
    }
}
