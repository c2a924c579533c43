//! A rules version's relations, indexed the way the sink walks them.
//!
//! The rules declare foreign keys to follow ([`Relation`]); the sink asks three questions of
//! them while it cascades: which relations a table is the child of (its links), which it is the
//! parent of (whom its changes reach), and in which order tables can be settled so that every
//! parent's memberships are final before its inheriting children read them (the rank).

use rustc_hash::FxHashMap;

use crate::model::{Flow, Relation};

/// Index of a relation in its [`RelationGraph`].
pub type RelationId = usize;

/// The relations of the active rules version. Empty for modules of world 0.1.0 and for modules
/// that declare none, in which case the sink does no relation work at all.
#[derive(Debug, Default)]
pub struct RelationGraph {
    relations: Vec<Relation>,
    names: Vec<String>,
    as_child: FxHashMap<String, Vec<RelationId>>,
    as_parent: FxHashMap<String, Vec<RelationId>>,
    /// 0 for a table that inherits from nothing, otherwise one more than the highest rank of the
    /// tables it inherits from.
    rank: FxHashMap<String, usize>,
}

impl RelationGraph {
    /// Indexes `relations`, which the rules engine has already checked for inherit cycles (a
    /// cycle that slipped through only makes ranks approximate: the walk is bounded).
    pub fn new(relations: &[Relation]) -> Self {
        let mut graph = RelationGraph {
            relations: relations.to_vec(),
            names: relations.iter().map(Relation::name).collect(),
            ..RelationGraph::default()
        };
        for (id, relation) in relations.iter().enumerate() {
            graph
                .as_child
                .entry(relation.child.clone())
                .or_default()
                .push(id);
            graph
                .as_parent
                .entry(relation.parent.clone())
                .or_default()
                .push(id);
        }
        graph.rank = ranks(relations);
        graph
    }

    pub fn is_empty(&self) -> bool {
        self.relations.is_empty()
    }

    /// The table takes part in some relation, as child or parent.
    pub fn involves(&self, table: &str) -> bool {
        self.as_child.contains_key(table) || self.as_parent.contains_key(table)
    }

    pub fn relation(&self, id: RelationId) -> &Relation {
        &self.relations[id]
    }

    /// The name links of relation `id` are stored under ([`Relation::name`]).
    pub fn name(&self, id: RelationId) -> &str {
        &self.names[id]
    }

    /// Relations whose child is `table`.
    pub fn as_child(&self, table: &str) -> &[RelationId] {
        self.as_child.get(table).map_or(&[], Vec::as_slice)
    }

    /// Relations whose parent is `table`.
    pub fn as_parent(&self, table: &str) -> &[RelationId] {
        self.as_parent.get(table).map_or(&[], Vec::as_slice)
    }

    /// Relations of `flow` whose child is `table`.
    pub fn as_child_with(&self, table: &str, flow: Flow) -> impl Iterator<Item = RelationId> + '_ {
        self.as_child(table)
            .iter()
            .copied()
            .filter(move |&id| self.relations[id].flow == flow)
    }

    /// Relations of `flow` whose parent is `table`.
    pub fn as_parent_with(&self, table: &str, flow: Flow) -> impl Iterator<Item = RelationId> + '_ {
        self.as_parent(table)
            .iter()
            .copied()
            .filter(move |&id| self.relations[id].flow == flow)
    }

    /// Settling order: a table's rank is above the rank of every table it inherits from.
    pub fn rank(&self, table: &str) -> usize {
        self.rank.get(table).copied().unwrap_or(0)
    }
}

fn ranks(relations: &[Relation]) -> FxHashMap<String, usize> {
    let mut rank: FxHashMap<String, usize> = FxHashMap::default();
    // Longest inherit path by repeated relaxation; without cycles it settles within one pass per
    // relation.
    for _ in 0..=relations.len() {
        let mut changed = false;
        for r in relations.iter().filter(|r| r.flow == Flow::Inherit) {
            let wanted = rank.get(&r.parent).copied().unwrap_or(0) + 1;
            let current = rank.entry(r.child.clone()).or_insert(0);
            if *current < wanted {
                *current = wanted;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    rank
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(child: &str, parent: &str, flow: Flow) -> Relation {
        Relation {
            child: child.into(),
            columns: vec![format!("{parent}_id")],
            parent: parent.into(),
            flow,
        }
    }

    #[test]
    fn ranks_follow_inherit_chains_and_ignore_share() {
        let graph = RelationGraph::new(&[
            rel("order_details", "orders", Flow::Inherit),
            rel("orders", "customers", Flow::Inherit),
            rel("list_members", "lists", Flow::Share),
            rel("list_members", "lists", Flow::Inherit),
        ]);
        assert_eq!(graph.rank("customers"), 0);
        assert_eq!(graph.rank("orders"), 1);
        assert_eq!(graph.rank("order_details"), 2);
        assert_eq!(graph.rank("lists"), 0);
        assert_eq!(graph.rank("list_members"), 1);
        assert_eq!(
            graph
                .as_parent_with("lists", Flow::Share)
                .collect::<Vec<_>>(),
            vec![2]
        );
        assert!(graph.involves("customers") && !graph.involves("products"));
        assert_eq!(graph.name(0), "order_details(orders_id)->orders");
    }

    #[test]
    fn a_cycle_that_slipped_through_does_not_hang() {
        let graph =
            RelationGraph::new(&[rel("a", "b", Flow::Inherit), rel("b", "a", Flow::Inherit)]);
        assert!(graph.rank("a") > 0);
    }
}
