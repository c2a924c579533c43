//! The relations a module declares in `init` (world 0.2.0), checked at load.
//!
//! What the host refuses here is what has no meaning whatever the database holds: an `inherit`
//! cycle between tables (a row's total buckets would be defined through themselves), a relation
//! without columns, the same relation twice. Whether the tables and columns exist is the
//! pipeline's check, against the catalog. `share` relations never cycle: a parent gets only its
//! children's *own* buckets, which never depend on other rows.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::bindings::{WitFlow, WitRelation};
use super::error::RulesError;
use super::guest_text::guest_text;
use crate::model::{Flow, Relation};

/// The declared relations as the host represents them, in declaration order, or why the module
/// is refused.
pub(crate) fn validate(
    module: &str,
    declared: Vec<WitRelation>,
) -> Result<Vec<Relation>, RulesError> {
    let relations: Vec<Relation> = declared.into_iter().map(from_wit).collect();
    let mut seen = HashSet::with_capacity(relations.len());
    for relation in &relations {
        let name = relation.name();
        if relation.child.is_empty() || relation.parent.is_empty() {
            return Err(RulesError::RelationWithoutTable {
                module: module.to_owned(),
                relation: guest_text(&name),
            });
        }
        if relation.columns.is_empty() || relation.columns.iter().any(String::is_empty) {
            return Err(RulesError::RelationWithoutColumns {
                module: module.to_owned(),
                relation: guest_text(&name),
            });
        }
        if !seen.insert(name) {
            return Err(RulesError::DuplicateRelation {
                module: module.to_owned(),
                relation: guest_text(&relation.name()),
            });
        }
    }
    if let Some(cycle) = inherit_cycle(&relations) {
        return Err(RulesError::RelationCycle {
            module: module.to_owned(),
            cycle: guest_text(&cycle),
        });
    }
    Ok(relations)
}

fn from_wit(relation: WitRelation) -> Relation {
    Relation {
        child: relation.child,
        columns: relation.columns,
        parent: relation.parent,
        flow: match relation.flow {
            WitFlow::Inherit => Flow::Inherit,
            WitFlow::Share => Flow::Share,
        },
    }
}

/// The first cycle of `inherit` relations, as a chain from its smallest table back to it:
/// `a(b_id)->b(a_id)->a`, or `a(parent_id)->a` for a table inheriting from itself. Tables and
/// edges are visited in sorted order so that the same declarations always name the same cycle.
fn inherit_cycle(relations: &[Relation]) -> Option<String> {
    let mut edges: BTreeMap<&str, Vec<&Relation>> = BTreeMap::new();
    for relation in relations.iter().filter(|r| r.flow == Flow::Inherit) {
        edges.entry(&relation.child).or_default().push(relation);
    }
    for out in edges.values_mut() {
        out.sort_by(|a, b| (&a.parent, &a.columns).cmp(&(&b.parent, &b.columns)));
    }
    let mut done = BTreeSet::new();
    let starts: Vec<&str> = edges.keys().copied().collect();
    for start in starts {
        let mut path = Vec::new();
        if let Some(cycle) = visit(start, &edges, &mut path, &mut done) {
            return Some(render(&cycle));
        }
    }
    None
}

/// Depth-first search from `table`. `path` holds the relations followed to get here; a relation
/// leading back to a table on it closes a cycle, returned as those relations.
fn visit<'a>(
    table: &'a str,
    edges: &BTreeMap<&'a str, Vec<&'a Relation>>,
    path: &mut Vec<&'a Relation>,
    done: &mut BTreeSet<&'a str>,
) -> Option<Vec<&'a Relation>> {
    if done.contains(table) {
        return None;
    }
    for &relation in edges.get(table).map(Vec::as_slice).unwrap_or_default() {
        path.push(relation);
        if let Some(at) = path.iter().position(|r| r.child == relation.parent) {
            return Some(path[at..].to_vec());
        }
        if let Some(cycle) = visit(&relation.parent, edges, path, done) {
            return Some(cycle);
        }
        path.pop();
    }
    done.insert(table);
    None
}

/// `a(b_id)->b(a_id)->a`, rotated to start at the cycle's smallest table.
fn render(cycle: &[&Relation]) -> String {
    let first = (0..cycle.len())
        .min_by_key(|&i| &cycle[i].child)
        .unwrap_or(0);
    let mut text = String::new();
    for relation in cycle[first..].iter().chain(&cycle[..first]) {
        text.push_str(&format!(
            "{}({})->",
            relation.child,
            relation.columns.join(",")
        ));
    }
    text.push_str(&cycle[first].child);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inherit(child: &str, columns: &[&str], parent: &str) -> WitRelation {
        WitRelation {
            child: child.into(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            parent: parent.into(),
            flow: WitFlow::Inherit,
        }
    }

    fn share(child: &str, columns: &[&str], parent: &str) -> WitRelation {
        WitRelation {
            flow: WitFlow::Share,
            ..inherit(child, columns, parent)
        }
    }

    fn refused(declared: Vec<WitRelation>) -> String {
        validate("m.wasm", declared).unwrap_err().to_string()
    }

    #[test]
    fn chains_and_shares_are_accepted_in_declaration_order() {
        let relations = validate(
            "m.wasm",
            vec![
                inherit("order_details", &["order_id"], "orders"),
                inherit("orders", &["customer_id"], "customers"),
                share("list_members", &["list_id"], "lists"),
                inherit("list_members", &["list_id"], "lists"),
                // Sharing with itself cannot cycle: only own buckets flow.
                share("people", &["manager_id"], "people"),
                // Two foreign keys to one table are two relations.
                inherit("orders", &["payer_id"], "customers"),
            ],
        )
        .unwrap();
        let names: Vec<String> = relations.iter().map(Relation::name).collect();
        assert_eq!(
            names,
            [
                "order_details(order_id)->orders",
                "orders(customer_id)->customers",
                "list_members(list_id)=>lists",
                "list_members(list_id)->lists",
                "people(manager_id)=>people",
                "orders(payer_id)->customers",
            ]
        );
    }

    #[test]
    fn inherit_cycles_are_named_from_their_smallest_table() {
        let cycle = |declared| match validate("m.wasm", declared) {
            Err(RulesError::RelationCycle { cycle, .. }) => cycle,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            cycle(vec![
                inherit("b", &["a_id"], "a"),
                inherit("a", &["b_id"], "b")
            ]),
            "a(b_id)->b(a_id)->a"
        );
        assert_eq!(
            cycle(vec![inherit("tree", &["parent_id"], "tree")]),
            "tree(parent_id)->tree"
        );
        assert_eq!(
            cycle(vec![
                inherit("x", &["y_id"], "y"),
                inherit("c", &["a_id"], "a"),
                inherit("y", &["c_id"], "c"),
                inherit("b", &["c_id"], "c"),
                inherit("a", &["b_id"], "b"),
            ]),
            "a(b_id)->b(c_id)->c(a_id)->a"
        );
    }

    #[test]
    fn malformed_declarations_are_refused_by_name() {
        assert_eq!(
            refused(vec![inherit("a", &[], "b")]),
            "module m.wasm declares relation `a()->b` without columns: list the child's columns that hold the parent's primary key, in its order"
        );
        assert_eq!(
            refused(vec![inherit("a", &["b_id", ""], "b")]),
            "module m.wasm declares relation `a(b_id,)->b` without columns: list the child's columns that hold the parent's primary key, in its order"
        );
        assert_eq!(
            refused(vec![share("", &["b_id"], "b")]),
            "module m.wasm declares relation `(b_id)=>b` without a child or parent table"
        );
        assert_eq!(
            refused(vec![
                share("a", &["b_id"], "b"),
                inherit("a", &["b_id"], "b"),
                share("a", &["b_id"], "b"),
            ]),
            "module m.wasm declares relation `a(b_id)=>b` twice"
        );
    }
}
