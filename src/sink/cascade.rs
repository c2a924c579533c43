//! Memberships over related rows: what flows along the rules' relations, and the cascade when a
//! row's memberships change.
//!
//! A row's memberships (its edges) are composed, never re-evaluated:
//! - `own(x)`: the buckets the rules gave x's latest change; a dropped change, a delete or a soft
//!   delete *excludes* x;
//! - `total(x)` is empty when x is excluded or absent, and otherwise `own(x)`, plus `total(p)` of
//!   each parent p that x inherits from, plus `own(c)` of each non-excluded child c that shares
//!   with x.
//!
//! The host keeps no row values, and reading the source's current rows would make an answer depend
//! on when it was read rather than on the stream's position. Composition needs neither: the sink
//! stores each related row's own buckets and links (`sluice_row_state`, `sluice_row_links`) in the
//! same transaction as its edges, so a cascade is a function of what the stream has applied so
//! far, and a replay after a crash or a `rebucket` computes the same memberships.
//!
//! One chunk is settled at a time, inside the sink transaction: the chunk's rows are applied in
//! stream order, then every row whose total may have changed is settled rank by rank (a parent
//! before the children that inherit from it), reading what it needs in bulk, one query per table
//! or relation per rank. The output is the chunk's records with their buckets made total, followed
//! by a membership-only record for each other row whose total changed; the edge diff turns those
//! into changelog entries as for any other record.

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::{FxHashMap, FxHashSet};
use tokio_postgres::Client;

use crate::model::{Flow, Operation};
use crate::sink::SinkError;
use crate::sink::edge_diff::{RecordKey, RecordMap};
use crate::sink::record::SinkRecord;
use crate::sink::relation_graph::{RelationGraph, RelationId};

/// A related row's stored state: its own buckets (`None`: excluded) and its checksum.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RowState {
    own: Option<Vec<String>>,
    checksum: Option<i32>,
}

/// A related row's state to store: (table, record, own buckets or `None`, checksum).
type StateUpsert = (String, String, Option<Vec<String>>, Option<i32>);

/// What settling a chunk leaves to write besides edges and changelog.
#[derive(Debug, Default)]
pub struct StateWrites {
    /// (table, record, own buckets or `None` when excluded, checksum)
    upserts: Vec<StateUpsert>,
    /// Rows that no longer exist.
    deletes: Vec<(String, String)>,
    /// (relation name, child, parent)
    link_upserts: Vec<(String, String, String)>,
    /// (relation name, child)
    link_deletes: Vec<(String, String)>,
}

/// How many rows a settle touched, for the log and the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CascadeStats {
    /// Rows outside the chunk whose memberships changed.
    pub cascaded: u64,
    /// Rows whose memberships may have changed but whose own buckets are unknown (they predate
    /// the relations: a `rebucket` of their table records them). Left as they are.
    pub unknown: u64,
}

/// The chunk settled: records to hand to the edge diff, and state to store.
#[derive(Debug, Default)]
pub struct Settled {
    pub records: Vec<SinkRecord>,
    pub writes: StateWrites,
    pub stats: CascadeStats,
}

type LinkKey = (RelationId, String);

/// Everything known while settling one chunk. `stored_*` hold what was read from the sink;
/// `chunk_*` what the chunk's records set, which takes precedence.
struct Settle<'a> {
    graph: &'a RelationGraph,
    client: &'a Client,
    stored_state: RecordMap<Option<RowState>>,
    chunk_state: RecordMap<Option<RowState>>,
    /// (relation, child) → parent, for children whose stored links were read.
    stored_links: FxHashMap<LinkKey, Option<String>>,
    chunk_links: FxHashMap<LinkKey, Option<String>>,
    /// (relation, parent) → stored children, for parents whose children were read.
    stored_children: FxHashMap<LinkKey, Vec<String>>,
    /// (relation, parent) → children that the chunk linked to it.
    chunk_children: FxHashMap<LinkKey, BTreeSet<String>>,
    /// Stored edges (the total as of before the chunk) and a checksum found on them.
    stored_total: RecordMap<(BTreeSet<String>, Option<i32>)>,
    /// Final totals of settled rows.
    total: RecordMap<BTreeSet<String>>,
    /// Buckets shared into settled rows by their children.
    shared: RecordMap<BTreeSet<String>>,
}

/// Settles `records` (one chunk, in stream order) against the stored state. Records of tables
/// outside the relations pass through untouched.
pub async fn settle(
    client: &Client,
    graph: &RelationGraph,
    records: &[&SinkRecord],
) -> Result<Settled, SinkError> {
    let mut settle = Settle::new(client, graph);
    let direct: Vec<RecordKey> = records
        .iter()
        .filter(|r| r.related.is_some())
        .map(|r| key(r))
        .collect();
    settle.load_state(&direct).await?;
    settle.load_links(&direct).await?;

    let mut affected: BTreeMap<usize, BTreeSet<RecordKey>> = BTreeMap::new();
    let mut positions: Vec<Option<Position>> = Vec::with_capacity(records.len());
    for record in records {
        positions.push(settle.apply(record, &mut affected));
    }
    settle.index_chunk_children();

    let unknown = settle.settle_all(affected).await?;

    let mut out = Vec::with_capacity(records.len());
    settle.load_intermediate_parents(&positions).await?;
    for (record, position) in records.iter().zip(&positions) {
        let mut record = (*record).clone();
        if let Some(position) = position {
            record.buckets = settle.desired(&record, position);
        }
        out.push(record);
    }
    let cascaded = settle.cascade_records(&direct.iter().collect());
    let stats = CascadeStats {
        cascaded: cascaded.len() as u64,
        unknown,
    };
    out.extend(cascaded);
    Ok(Settled {
        records: out,
        writes: settle.into_writes(),
        stats,
    })
}

/// A chunk record's view at its position in the stream: own buckets and inherit links as they
/// were right after it.
struct Position {
    own: Option<Vec<String>>,
    inherits: Vec<(RelationId, Option<String>)>,
}

fn key(record: &SinkRecord) -> RecordKey {
    (record.table_name.clone(), record.record_id.clone())
}

impl<'a> Settle<'a> {
    fn new(client: &'a Client, graph: &'a RelationGraph) -> Self {
        Settle {
            graph,
            client,
            stored_state: RecordMap::default(),
            chunk_state: RecordMap::default(),
            stored_links: FxHashMap::default(),
            chunk_links: FxHashMap::default(),
            stored_children: FxHashMap::default(),
            chunk_children: FxHashMap::default(),
            stored_total: RecordMap::default(),
            total: RecordMap::default(),
            shared: RecordMap::default(),
        }
    }

    /// Settles every affected row, rank by rank, and the dependants each rank adds; returns how
    /// many had unknown own buckets.
    async fn settle_all(
        &mut self,
        mut affected: BTreeMap<usize, BTreeSet<RecordKey>>,
    ) -> Result<u64, SinkError> {
        let mut unknown = 0;
        while let Some((&rank, _)) = affected.iter().next() {
            let Some(rows) = affected.remove(&rank) else {
                break;
            };
            // Each row settles once; only a cycle (refused at load) could bring one back.
            let rows: Vec<RecordKey> = rows
                .into_iter()
                .filter(|row| !self.total.contains_key(row))
                .collect();
            unknown += self.settle_rank(&rows, &mut affected).await?;
        }
        Ok(unknown)
    }

    /// A membership-only record for each settled row outside `direct` whose total changed, in
    /// [`Settle::settled_in_order`]. Its checksum is the stored one: the row itself did not change.
    fn cascade_records(&self, direct: &FxHashSet<&RecordKey>) -> Vec<SinkRecord> {
        let mut records = Vec::new();
        for (key, total) in self.settled_in_order() {
            if direct.contains(key) {
                continue;
            }
            let (stored, edge_checksum) = self.stored_total.get(key).cloned().unwrap_or_default();
            if *total == stored {
                continue;
            }
            records.push(SinkRecord {
                table_name: key.0.clone(),
                record_id: key.1.clone(),
                op: Operation::Update,
                buckets: total.iter().cloned().collect(),
                checksum: self
                    .state_of(key)
                    .and_then(|s| s.checksum)
                    .or(edge_checksum),
                membership_only: true,
                related: None,
            });
        }
        records
    }

    /// Settled rows, parents before the children that inherit from them, then by table and
    /// record id: the order their membership-only records are written in.
    fn settled_in_order(&self) -> Vec<(&RecordKey, &BTreeSet<String>)> {
        let mut rows: Vec<_> = self.total.iter().collect();
        rows.sort_by(|a, b| (self.graph.rank(&a.0.0), a.0).cmp(&(self.graph.rank(&b.0.0), b.0)));
        rows
    }

    fn state_of(&self, key: &RecordKey) -> Option<&RowState> {
        match self.chunk_state.get(key) {
            Some(state) => state.as_ref(),
            None => self.stored_state.get(key).and_then(Option::as_ref),
        }
    }

    fn state_known(&self, key: &RecordKey) -> bool {
        self.chunk_state.contains_key(key) || self.stored_state.contains_key(key)
    }

    /// A row with memberships but no stored own buckets: it was written before the rules
    /// declared relations over its table. Composing it would wipe its memberships, so it is left
    /// as it is until a `rebucket` of its table records it. (A row with neither does not exist,
    /// or is in no bucket: composing it gives nothing, which is right.)
    fn predates_relations(&self, row: &RecordKey) -> bool {
        !self.chunk_state.contains_key(row)
            && matches!(self.stored_state.get(row), Some(None) | None)
            && self
                .stored_total
                .get(row)
                .is_some_and(|(buckets, _)| !buckets.is_empty())
    }

    fn link_of(&self, relation: RelationId, child: &str) -> Option<&str> {
        let k = (relation, child.to_owned());
        match self.chunk_links.get(&k) {
            Some(parent) => parent.as_deref(),
            None => self.stored_links.get(&k).and_then(Option::as_deref),
        }
    }

    /// Applies one record of the chunk, noting which rows it may change the total of.
    fn apply(
        &mut self,
        record: &SinkRecord,
        affected: &mut BTreeMap<usize, BTreeSet<RecordKey>>,
    ) -> Option<Position> {
        let related = record.related.as_deref()?;
        let key = key(record);
        let table = key.0.as_str();
        let graph = self.graph;
        let excluded = record.op == Operation::Delete || !related.kept;
        // Sharing parents before and after: both may gain or lose this row's buckets.
        for relation in graph.as_child_with(table, Flow::Share) {
            if let Some(parent) = self.link_of(relation, &key.1) {
                let parent_table = graph.relation(relation).parent.clone();
                mark(affected, graph, (parent_table, parent.to_owned()));
            }
        }
        if record.op == Operation::Delete {
            self.chunk_state.insert(key.clone(), None);
            for &relation in graph.as_child(table) {
                self.chunk_links.insert((relation, key.1.clone()), None);
            }
        } else {
            self.chunk_state.insert(
                key.clone(),
                Some(RowState {
                    own: (!excluded).then(|| record.buckets.clone()),
                    checksum: record.checksum,
                }),
            );
            for (relation, parent) in &related.links {
                self.chunk_links
                    .insert((*relation, key.1.clone()), parent.clone());
            }
        }
        for relation in graph.as_child_with(table, Flow::Share) {
            if let Some(parent) = self.link_of(relation, &key.1) {
                let parent_table = graph.relation(relation).parent.clone();
                mark(affected, graph, (parent_table, parent.to_owned()));
            }
        }
        mark(affected, graph, key.clone());
        Some(Position {
            own: if excluded {
                None
            } else {
                Some(record.buckets.clone())
            },
            inherits: graph
                .as_child_with(table, Flow::Inherit)
                .map(|relation| (relation, self.link_of(relation, &key.1).map(str::to_owned)))
                .collect(),
        })
    }

    fn index_chunk_children(&mut self) {
        for ((relation, child), parent) in &self.chunk_links {
            if let Some(parent) = parent {
                self.chunk_children
                    .entry((*relation, parent.clone()))
                    .or_default()
                    .insert(child.clone());
            }
        }
    }

    /// Children of `parent` under `relation` as of the chunk's end.
    fn children_of(&self, relation: RelationId, parent: &str) -> BTreeSet<String> {
        let k = (relation, parent.to_owned());
        let mut children: BTreeSet<String> = self
            .stored_children
            .get(&k)
            .into_iter()
            .flatten()
            .filter(|child| !self.chunk_links.contains_key(&(relation, (*child).clone())))
            .cloned()
            .collect();
        if let Some(linked) = self.chunk_children.get(&k) {
            children.extend(linked.iter().cloned());
        }
        children
    }

    /// The total of a parent as of the chunk's end: settled this chunk, or as stored.
    fn parent_total(&self, key: &RecordKey) -> BTreeSet<String> {
        match self.total.get(key) {
            Some(total) => total.clone(),
            None => self
                .stored_total
                .get(key)
                .map(|(buckets, _)| buckets.clone())
                .unwrap_or_default(),
        }
    }

    /// Settles the rows of one rank; returns how many had unknown own buckets.
    async fn settle_rank(
        &mut self,
        rows: &[RecordKey],
        affected: &mut BTreeMap<usize, BTreeSet<RecordKey>>,
    ) -> Result<u64, SinkError> {
        let graph = self.graph;
        self.load_state(rows).await?;
        self.load_links(rows).await?;
        self.load_totals(rows).await?;
        let parents: Vec<RecordKey> = rows
            .iter()
            .flat_map(|(table, id)| {
                graph
                    .as_child_with(table, Flow::Inherit)
                    .filter_map(|relation| {
                        let parent = self.link_of(relation, id)?;
                        Some((graph.relation(relation).parent.clone(), parent.to_owned()))
                    })
                    .collect::<Vec<_>>()
            })
            .filter(|parent| !self.total.contains_key(parent))
            .collect();
        self.load_totals(&parents).await?;
        self.load_sharers(rows).await?;

        let mut unknown = 0;
        let mut changed = Vec::new();
        for row in rows {
            if self.predates_relations(row) {
                unknown += 1;
                continue;
            }
            let total = self.compose(row);
            let stored = self.parent_total(row);
            if total != stored {
                changed.push(row.clone());
            }
            self.total.insert(row.clone(), total);
        }
        self.load_children(&changed, Flow::Inherit).await?;
        for (table, id) in &changed {
            for relation in graph.as_parent_with(table, Flow::Inherit) {
                let child_table = graph.relation(relation).child.clone();
                for child in self.children_of(relation, id) {
                    mark(affected, graph, (child_table.clone(), child));
                }
            }
        }
        Ok(unknown)
    }

    /// `total(row)` from what is loaded: own, inherited, shared.
    fn compose(&mut self, row: &RecordKey) -> BTreeSet<String> {
        let Some(own) = self.state_of(row).and_then(|s| s.own.clone()) else {
            return BTreeSet::new();
        };
        let mut total: BTreeSet<String> = own.into_iter().collect();
        let graph = self.graph;
        for relation in graph.as_child_with(&row.0, Flow::Inherit) {
            if let Some(parent) = self.link_of(relation, &row.1) {
                let parent = (graph.relation(relation).parent.clone(), parent.to_owned());
                total.extend(self.parent_total(&parent));
            }
        }
        let shared = self.shared_into(row);
        total.extend(shared.iter().cloned());
        self.shared.insert(row.clone(), shared);
        total
    }

    fn shared_into(&self, row: &RecordKey) -> BTreeSet<String> {
        let graph = self.graph;
        let mut shared = BTreeSet::new();
        for relation in graph.as_parent_with(&row.0, Flow::Share) {
            let child_table = &graph.relation(relation).child;
            for child in self.children_of(relation, &row.1) {
                let child = (child_table.clone(), child);
                if let Some(own) = self.state_of(&child).and_then(|s| s.own.as_ref()) {
                    shared.extend(own.iter().cloned());
                }
            }
        }
        shared
    }

    /// A chunk record's buckets: its own at its position, what its parents at that position
    /// hold at the chunk's end, and what its children share at the chunk's end. The last record
    /// of a row therefore carries exactly the row's settled total.
    fn desired(&self, record: &SinkRecord, position: &Position) -> Vec<String> {
        let Some(own) = &position.own else {
            return Vec::new();
        };
        let mut buckets = own.clone();
        let mut seen: BTreeSet<String> = own.iter().cloned().collect();
        let mut extra = BTreeSet::new();
        for (relation, parent) in &position.inherits {
            if let Some(parent) = parent {
                let parent = (
                    self.graph.relation(*relation).parent.clone(),
                    parent.clone(),
                );
                extra.extend(self.parent_total(&parent));
            }
        }
        if let Some(shared) = self.shared.get(&key(record)) {
            extra.extend(shared.iter().cloned());
        }
        for bucket in extra {
            if seen.insert(bucket.clone()) {
                buckets.push(bucket);
            }
        }
        buckets
    }

    /// Parents that records of the chunk pointed at on the way (not only at its end).
    async fn load_intermediate_parents(
        &mut self,
        positions: &[Option<Position>],
    ) -> Result<(), SinkError> {
        let graph = self.graph;
        let parents: Vec<RecordKey> = positions
            .iter()
            .flatten()
            .flat_map(|p| p.inherits.iter())
            .filter_map(|(relation, parent)| {
                Some((graph.relation(*relation).parent.clone(), parent.clone()?))
            })
            .filter(|parent| !self.total.contains_key(parent))
            .collect();
        self.load_totals(&parents).await
    }

    fn into_writes(self) -> StateWrites {
        let mut writes = StateWrites::default();
        for (key, state) in self.chunk_state {
            match state {
                Some(state) => writes
                    .upserts
                    .push((key.0, key.1, state.own, state.checksum)),
                None => writes.deletes.push(key),
            }
        }
        for ((relation, child), parent) in self.chunk_links {
            let name = self.graph.name(relation).to_owned();
            match parent {
                Some(parent) => writes.link_upserts.push((name, child, parent)),
                None => writes.link_deletes.push((name, child)),
            }
        }
        writes
    }

    // Bulk reads. Each reads only what is not known yet, one statement per table or relation.

    async fn load_state(&mut self, rows: &[RecordKey]) -> Result<(), SinkError> {
        let wanted = by_table(rows.iter().filter(|k| !self.state_known(k)));
        for (table, ids) in wanted {
            let found = self
                .client
                .query(
                    "SELECT record_id, own_buckets, checksum FROM sluice_row_state \
                     WHERE table_name = $1 AND record_id = ANY($2::text[])",
                    &[&table, &ids],
                )
                .await
                .map_err(|e| SinkError::sql(format!("reading related-row state of {table}"), e))?;
            let mut missing: FxHashSet<String> = ids.into_iter().collect();
            for row in found {
                let id: String = row.get(0);
                missing.remove(&id);
                self.stored_state.insert(
                    (table.clone(), id),
                    Some(RowState {
                        own: row.get(1),
                        checksum: row.get(2),
                    }),
                );
            }
            // Remembered as absent, so they are not read again.
            for id in missing {
                self.stored_state.insert((table.clone(), id), None);
            }
        }
        Ok(())
    }

    async fn load_links(&mut self, rows: &[RecordKey]) -> Result<(), SinkError> {
        let graph = self.graph;
        let mut wanted: BTreeMap<RelationId, Vec<String>> = BTreeMap::new();
        for (table, id) in rows {
            for &relation in graph.as_child(table) {
                let k = (relation, id.clone());
                if !self.stored_links.contains_key(&k) {
                    wanted.entry(relation).or_default().push(id.clone());
                }
            }
        }
        for (relation, ids) in wanted {
            let name = graph.name(relation);
            let found = self
                .client
                .query(
                    "SELECT child_id, parent_id FROM sluice_row_links \
                     WHERE relation = $1 AND child_id = ANY($2::text[])",
                    &[&name, &ids],
                )
                .await
                .map_err(|e| SinkError::sql(format!("reading links of relation {name}"), e))?;
            for id in ids {
                self.stored_links.insert((relation, id), None);
            }
            for row in found {
                self.stored_links
                    .insert((relation, row.get(0)), Some(row.get(1)));
            }
        }
        Ok(())
    }

    async fn load_children(&mut self, parents: &[RecordKey], flow: Flow) -> Result<(), SinkError> {
        let graph = self.graph;
        let mut wanted: BTreeMap<RelationId, Vec<String>> = BTreeMap::new();
        for (table, id) in parents {
            for relation in graph.as_parent_with(table, flow) {
                let k = (relation, id.clone());
                if !self.stored_children.contains_key(&k) {
                    wanted.entry(relation).or_default().push(id.clone());
                }
            }
        }
        for (relation, ids) in wanted {
            let name = graph.name(relation);
            let found = self
                .client
                .query(
                    "SELECT parent_id, child_id FROM sluice_row_links \
                     WHERE relation = $1 AND parent_id = ANY($2::text[])",
                    &[&name, &ids],
                )
                .await
                .map_err(|e| {
                    SinkError::sql(format!("reading children under relation {name}"), e)
                })?;
            for id in ids {
                self.stored_children.insert((relation, id), Vec::new());
            }
            for row in found {
                let parent: String = row.get(0);
                if let Some(children) = self.stored_children.get_mut(&(relation, parent)) {
                    children.push(row.get(1));
                }
            }
        }
        Ok(())
    }

    /// Children that share into `rows`, and their own buckets.
    async fn load_sharers(&mut self, rows: &[RecordKey]) -> Result<(), SinkError> {
        self.load_children(rows, Flow::Share).await?;
        let graph = self.graph;
        let mut sharers = Vec::new();
        for (table, id) in rows {
            for relation in graph.as_parent_with(table, Flow::Share) {
                let child_table = &graph.relation(relation).child;
                for child in self.children_of(relation, id) {
                    sharers.push((child_table.clone(), child));
                }
            }
        }
        self.load_state(&sharers).await
    }

    async fn load_totals(&mut self, rows: &[RecordKey]) -> Result<(), SinkError> {
        let wanted = by_table(rows.iter().filter(|k| !self.stored_total.contains_key(*k)));
        for (table, ids) in wanted {
            let found = self
                .client
                .query(
                    "SELECT record_id, bucket_id, checksum FROM sync_bucket_edges \
                     WHERE table_name = $1 AND record_id = ANY($2::text[])",
                    &[&table, &ids],
                )
                .await
                .map_err(|e| SinkError::sql(format!("reading bucket edges of {table}"), e))?;
            for id in ids {
                self.stored_total.entry((table.clone(), id)).or_default();
            }
            for row in found {
                let entry = self
                    .stored_total
                    .entry((table.clone(), row.get(0)))
                    .or_default();
                entry.0.insert(row.get(1));
                entry.1 = entry.1.or(row.get(2));
            }
        }
        Ok(())
    }
}

fn mark(
    affected: &mut BTreeMap<usize, BTreeSet<RecordKey>>,
    graph: &RelationGraph,
    row: RecordKey,
) {
    affected.entry(graph.rank(&row.0)).or_default().insert(row);
}

fn by_table<'k>(keys: impl Iterator<Item = &'k RecordKey>) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (table, id) in keys {
        out.entry(table.clone()).or_default().insert(id.clone());
    }
    out.into_iter()
        .map(|(table, ids)| (table, ids.into_iter().collect()))
        .collect()
}

impl StateWrites {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty()
            && self.deletes.is_empty()
            && self.link_upserts.is_empty()
            && self.link_deletes.is_empty()
    }

    /// Stores the chunk's related-row state, in bulk, inside the sink transaction.
    pub async fn write(&self, client: &Client) -> Result<(), SinkError> {
        if !self.deletes.is_empty() {
            let (t, r): (Vec<&str>, Vec<&str>) = self
                .deletes
                .iter()
                .map(|(t, r)| (t.as_str(), r.as_str()))
                .unzip();
            client
                .execute(
                    "DELETE FROM sluice_row_state s USING unnest($1::text[], $2::text[]) AS d(t, r) \
                     WHERE s.table_name = d.t AND s.record_id = d.r",
                    &[&t, &r],
                )
                .await
                .map_err(|e| SinkError::sql("deleting related-row state", e))?;
        }
        if !self.upserts.is_empty() {
            let t: Vec<&str> = self.upserts.iter().map(|u| u.0.as_str()).collect();
            let r: Vec<&str> = self.upserts.iter().map(|u| u.1.as_str()).collect();
            // text[][] must be rectangular, so each row's buckets travel as one JSON array.
            let o: Vec<Option<serde_json::Value>> = self
                .upserts
                .iter()
                .map(|u| u.2.as_ref().map(|own| serde_json::json!(own)))
                .collect();
            let c: Vec<Option<i32>> = self.upserts.iter().map(|u| u.3).collect();
            client
                .execute(
                    "INSERT INTO sluice_row_state (table_name, record_id, own_buckets, checksum) \
                     SELECT t, r, CASE WHEN o IS NULL THEN NULL \
                                       ELSE ARRAY(SELECT jsonb_array_elements_text(o)) END, c \
                     FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::int4[]) AS u(t, r, o, c) \
                     ON CONFLICT (table_name, record_id) \
                     DO UPDATE SET own_buckets = EXCLUDED.own_buckets, checksum = EXCLUDED.checksum",
                    &[&t, &r, &o, &c],
                )
                .await
                .map_err(|e| SinkError::sql("storing related-row state", e))?;
        }
        if !self.link_deletes.is_empty() {
            let (n, c): (Vec<&str>, Vec<&str>) = self
                .link_deletes
                .iter()
                .map(|(n, c)| (n.as_str(), c.as_str()))
                .unzip();
            client
                .execute(
                    "DELETE FROM sluice_row_links l USING unnest($1::text[], $2::text[]) AS d(n, c) \
                     WHERE l.relation = d.n AND l.child_id = d.c",
                    &[&n, &c],
                )
                .await
                .map_err(|e| SinkError::sql("deleting related-row links", e))?;
        }
        if !self.link_upserts.is_empty() {
            let n: Vec<&str> = self.link_upserts.iter().map(|u| u.0.as_str()).collect();
            let c: Vec<&str> = self.link_upserts.iter().map(|u| u.1.as_str()).collect();
            let p: Vec<&str> = self.link_upserts.iter().map(|u| u.2.as_str()).collect();
            client
                .execute(
                    "INSERT INTO sluice_row_links (relation, child_id, parent_id) \
                     SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) \
                     ON CONFLICT (relation, child_id) DO UPDATE SET parent_id = EXCLUDED.parent_id",
                    &[&n, &c, &p],
                )
                .await
                .map_err(|e| SinkError::sql("storing related-row links", e))?;
        }
        Ok(())
    }
}

/// Before a TRUNCATE of `table` removes its rows: the rows whose totals it may change (children
/// that inherit from it, parents it shares into), and the removal of its state and links. The
/// caller settles the returned rows once the truncate's edges are gone.
pub async fn truncate(
    client: &Client,
    graph: &RelationGraph,
    table: &str,
) -> Result<Vec<RecordKey>, SinkError> {
    let mut affected = Vec::new();
    for relation in graph.as_parent_with(table, Flow::Inherit) {
        let name = graph.name(relation);
        let child_table = &graph.relation(relation).child;
        let rows = client
            .query(
                "SELECT child_id FROM sluice_row_links WHERE relation = $1",
                &[&name],
            )
            .await
            .map_err(|e| SinkError::sql(format!("reading children of truncated {table}"), e))?;
        affected.extend(rows.iter().map(|r| (child_table.clone(), r.get(0))));
    }
    for relation in graph.as_child_with(table, Flow::Share) {
        let name = graph.name(relation);
        let parent_table = &graph.relation(relation).parent;
        let rows = client
            .query(
                "SELECT DISTINCT parent_id FROM sluice_row_links WHERE relation = $1",
                &[&name],
            )
            .await
            .map_err(|e| SinkError::sql(format!("reading parents of truncated {table}"), e))?;
        affected.extend(rows.iter().map(|r| (parent_table.clone(), r.get(0))));
    }
    let names: Vec<&str> = graph
        .as_child(table)
        .iter()
        .map(|&relation| graph.name(relation))
        .collect();
    client
        .execute(
            "DELETE FROM sluice_row_links WHERE relation = ANY($1::text[])",
            &[&names],
        )
        .await
        .map_err(|e| SinkError::sql(format!("removing links of truncated {table}"), e))?;
    client
        .execute(
            "DELETE FROM sluice_row_state WHERE table_name = $1",
            &[&table],
        )
        .await
        .map_err(|e| SinkError::sql(format!("removing state of truncated {table}"), e))?;
    Ok(affected)
}

/// Settles rows that nothing in the stream touched directly (after a TRUNCATE): membership-only
/// records for those whose totals changed.
pub async fn settle_rows(
    client: &Client,
    graph: &RelationGraph,
    rows: Vec<RecordKey>,
) -> Result<Settled, SinkError> {
    let mut settle = Settle::new(client, graph);
    let mut affected: BTreeMap<usize, BTreeSet<RecordKey>> = BTreeMap::new();
    for row in rows {
        mark(&mut affected, graph, row);
    }
    let unknown = settle.settle_all(affected).await?;
    let records = settle.cascade_records(&FxHashSet::default());
    let stats = CascadeStats {
        cascaded: records.len() as u64,
        unknown,
    };
    Ok(Settled {
        records,
        writes: StateWrites::default(),
        stats,
    })
}
