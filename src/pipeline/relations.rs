//! The rules' relations checked against the published tables, before a version goes live.
//!
//! The rules engine checks what it can without a database (cycles, duplicates). Whether the
//! tables and columns exist, and whether a relation's columns match its parent's primary key, is
//! only known here: a version that gets it wrong is refused at start and at reload, with the
//! relation named, rather than linking rows to parents that can never be found.

use std::sync::Arc;

use crate::model::Relation;
use crate::rules::RulesModule;
use crate::sink::RelationGraph;
use crate::source::catalog::PublishedTable;

/// A relation that does not fit the published tables.
#[derive(Debug, thiserror::Error)]
#[error("module {module}: relation {relation}: {problem}")]
pub struct RelationError {
    pub module: String,
    pub relation: String,
    pub problem: String,
}

/// The module's relations, indexed for the sink, once they fit `tables`.
pub fn relation_graph(
    module: &RulesModule,
    tables: &[PublishedTable],
) -> Result<Arc<RelationGraph>, RelationError> {
    for relation in module.relations() {
        check(relation, tables).map_err(|problem| RelationError {
            module: module.label().to_owned(),
            relation: relation.name(),
            problem,
        })?;
    }
    Ok(Arc::new(RelationGraph::new(module.relations())))
}

fn check(relation: &Relation, tables: &[PublishedTable]) -> Result<(), String> {
    let find = |name: &str| {
        tables
            .iter()
            .find(|t| t.schema.qualified_name() == name)
            .map(|t| &t.schema)
    };
    let published = || {
        let mut names: Vec<String> = tables.iter().map(|t| t.schema.qualified_name()).collect();
        names.sort();
        names.join(", ")
    };
    let child = find(&relation.child).ok_or_else(|| {
        format!(
            "child table {} is not in the publication (published: {})",
            relation.child,
            published()
        )
    })?;
    let parent = find(&relation.parent).ok_or_else(|| {
        format!(
            "parent table {} is not in the publication (published: {})",
            relation.parent,
            published()
        )
    })?;
    if let Some(missing) = relation
        .columns
        .iter()
        .find(|c| child.column_index(c).is_none())
    {
        return Err(format!(
            "table {} has no column {missing:?}",
            relation.child
        ));
    }
    let key: Vec<&str> = parent
        .primary_key
        .iter()
        .filter_map(|&i| parent.columns.get(i).map(|c| c.name.as_str()))
        .collect();
    if key.len() != relation.columns.len() {
        return Err(format!(
            "{} column(s) given, but the primary key of {} has {} ({}): list the child's columns in the order of the parent's key",
            relation.columns.len(),
            relation.parent,
            key.len(),
            key.join(", ")
        ));
    }
    Ok(())
}
