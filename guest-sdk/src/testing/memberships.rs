//! A reference model of the memberships sluice computes from a rule's own
//! outcomes and its relations.

use std::collections::{BTreeMap, BTreeSet};

use super::TestBatch;
use super::record_id::{encode, record_id};
use crate::{Flow, Operation, Outcome, Relation, Rule, Table, Value, evaluate};

static NULL: Value = Value::Null;

/// The bucket memberships sluice derives from a rule, computed natively from
/// the changes you [`apply`](Memberships::apply), so that a rule with
/// [`Rule::relations`] is unit-testable without Wasm or a database.
///
/// For each row (table and [`record_id`]) it keeps what sluice's sink keeps:
/// the row's own outcome, from its latest change, and its links (the parent
/// key each relation's columns hold). [`Memberships::buckets`] is then
/// total(x) as [`Rule::relations`] defines it:
///
/// - a row that was dropped or deleted, or never seen, is in no bucket;
/// - otherwise it is in its own buckets, plus its parent's total buckets for
///   each [`Relation::inherit`] from its table, plus the own buckets of each
///   live child row pointing at it through a [`Relation::share`].
///
/// A change the rule errors on changes nothing, as under sluice's
/// `dead-letter` failure policy. An update that changes the key removes the
/// old row. A link column that is `Unchanged` keeps the row's previous link.
/// sluice's `soft_delete` setting is not modelled: a rule that should
/// exclude soft-deleted rows drops them itself.
///
/// ```
/// use sluice_guest_sdk::testing::{Memberships, TestTable};
/// use sluice_guest_sdk::{Change, Relation, Rule, Value};
///
/// #[derive(Default)]
/// struct Orders;
/// impl Rule for Orders {
///     fn buckets(&self, change: &Change<'_>) -> Result<Vec<String>, String> {
///         Ok(match change.row().get("user_id") {
///             Value::Text(user) => vec![format!("user:{user}")],
///             _ => vec![],
///         })
///     }
///     fn relations(&self) -> Vec<Relation> {
///         vec![Relation::inherit("order_details", &["order_id"], "orders")]
///     }
/// }
///
/// let orders = TestTable::new("orders", &["id", "user_id"]);
/// let details = TestTable::new("order_details", &["id", "order_id"]);
/// let mut model = Memberships::new(&Orders).unwrap();
///
/// // The line arrives before its order: it has no buckets until the order does.
/// model.apply(&details.insert(vec![Value::Int(10), Value::Int(1)])).unwrap();
/// assert!(model.buckets("order_details", "10").is_empty());
/// model.apply(&orders.insert(vec![Value::Int(1), Value::Text("u1".into())])).unwrap();
/// assert_eq!(model.buckets("order_details", "10"), ["user:u1".to_string()].into());
///
/// // The order changes owner: the line moves with it.
/// model.apply(&orders.update(vec![Value::Int(1), Value::Text("u2".into())])).unwrap();
/// assert_eq!(model.buckets("order_details", "10"), ["user:u2".to_string()].into());
/// ```
pub struct Memberships<'r, R: Rule> {
    rule: &'r R,
    relations: Vec<Relation>,
    /// By table, then record id.
    rows: BTreeMap<String, BTreeMap<String, ModelRow>>,
}

/// What the sink keeps of a row.
#[derive(Clone, Debug)]
struct ModelRow {
    /// `None` when the row is excluded (dropped).
    own: Option<BTreeSet<String>>,
    /// By index into `relations` (those whose child is the row's table): the parent's record id.
    /// Absent when a link column is NULL.
    links: BTreeMap<usize, String>,
}

impl<'r, R: Rule> Memberships<'r, R> {
    /// A model with no rows, for `rule` (already [`init`](Rule::init)ed).
    /// Refuses the rule's relations as sluice would at load: an inherit
    /// cycle (named as a chain, `a(b_id)->b(a_id)->a`), a relation without
    /// columns or declared twice.
    ///
    /// ```
    /// use sluice_guest_sdk::testing::Memberships;
    /// use sluice_guest_sdk::{Change, Relation, Rule};
    ///
    /// #[derive(Default)]
    /// struct Tree;
    /// impl Rule for Tree {
    ///     fn buckets(&self, _: &Change<'_>) -> Result<Vec<String>, String> { Ok(vec![]) }
    ///     fn relations(&self) -> Vec<Relation> {
    ///         vec![Relation::inherit("nodes", &["parent_id"], "nodes")]
    ///     }
    /// }
    /// assert_eq!(
    ///     Memberships::new(&Tree).err().unwrap(),
    ///     "inherit relations form a cycle, nodes(parent_id)->nodes: a row would inherit buckets from itself"
    /// );
    /// ```
    pub fn new(rule: &'r R) -> Result<Self, String> {
        let relations = rule.relations();
        check(&relations)?;
        Ok(Memberships {
            rule,
            relations,
            rows: BTreeMap::new(),
        })
    }

    /// Runs each change of `batch` through the rule, in order, and applies
    /// its outcome; returns the outcomes. An error names a change whose key
    /// cannot be read (mark key columns with
    /// [`TestTable::with_key`](super::TestTable::with_key)) or a relation
    /// column its table lacks.
    ///
    /// ```
    /// use sluice_guest_sdk::testing::{Memberships, TestTable};
    /// use sluice_guest_sdk::{Change, Outcome, Rule, Value};
    ///
    /// #[derive(Default)]
    /// struct Global;
    /// impl Rule for Global {
    ///     fn buckets(&self, _: &Change<'_>) -> Result<Vec<String>, String> {
    ///         Ok(vec!["global".into()])
    ///     }
    /// }
    /// let items = TestTable::new("items", &["id"]);
    /// let mut model = Memberships::new(&Global).unwrap();
    /// let outcomes = model.apply(&items.insert(vec![Value::Int(1)])).unwrap();
    /// assert_eq!(outcomes, [Outcome::Keep(vec!["global".into()])]);
    /// model.apply(&items.delete(vec![Value::Int(1)])).unwrap();
    /// assert!(model.buckets("items", "1").is_empty());
    /// ```
    pub fn apply(&mut self, batch: &TestBatch) -> Result<Vec<Outcome>, String> {
        let mut outcomes = Vec::with_capacity(batch.changes().len());
        for (index, wire) in batch.changes().iter().enumerate() {
            let table = usize::try_from(wire.table)
                .ok()
                .and_then(|at| batch.tables().get(at));
            let (Some(table), Some(change)) = (table, batch.get(index)) else {
                return Err(format!(
                    "change #{index} refers to table #{}, which the batch does not have",
                    wire.table
                ));
            };
            let outcome = evaluate(self.rule, &change);
            self.apply_one(table, &change, &outcome)
                .map_err(|why| format!("change #{index} on {}: {why}", table.name))?;
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    /// Removes every row of `table`, as a `TRUNCATE` does.
    ///
    /// ```
    /// # use sluice_guest_sdk::testing::{Memberships, TestTable};
    /// # use sluice_guest_sdk::{Change, Rule, Value};
    /// # #[derive(Default)]
    /// # struct Global;
    /// # impl Rule for Global {
    /// #     fn buckets(&self, _: &Change<'_>) -> Result<Vec<String>, String> { Ok(vec!["global".into()]) }
    /// # }
    /// let mut model = Memberships::new(&Global).unwrap();
    /// model.apply(&TestTable::new("items", &["id"]).insert(vec![Value::Int(1)])).unwrap();
    /// model.truncate("items");
    /// assert!(model.edges().is_empty());
    /// ```
    pub fn truncate(&mut self, table: &str) {
        self.rows.remove(table);
    }

    /// The buckets the row of `table` with record id `key` is in (see
    /// [`record_id`] for the id's form).
    ///
    /// ```
    /// # use sluice_guest_sdk::testing::{Memberships, TestTable};
    /// # use sluice_guest_sdk::{Change, Rule, Value};
    /// # #[derive(Default)]
    /// # struct Global;
    /// # impl Rule for Global {
    /// #     fn buckets(&self, _: &Change<'_>) -> Result<Vec<String>, String> { Ok(vec!["global".into()]) }
    /// # }
    /// let mut model = Memberships::new(&Global).unwrap();
    /// model.apply(&TestTable::new("items", &["id"]).insert(vec![Value::Int(1)])).unwrap();
    /// assert_eq!(model.buckets("items", "1"), ["global".to_string()].into());
    /// assert!(model.buckets("items", "2").is_empty());
    /// ```
    pub fn buckets(&self, table: &str, key: &str) -> BTreeSet<String> {
        let Some(row) = self.rows.get(table).and_then(|rows| rows.get(key)) else {
            return BTreeSet::new();
        };
        let Some(own) = &row.own else {
            return BTreeSet::new();
        };
        let mut total = own.clone();
        for (index, relation) in self.relations.iter().enumerate() {
            match relation.flow {
                Flow::Inherit if relation.child == table => {
                    if let Some(parent) = row.links.get(&index) {
                        total.extend(self.buckets(&relation.parent, parent));
                    }
                }
                Flow::Share if relation.parent == table => {
                    let children = self.rows.get(&relation.child).into_iter().flatten();
                    for (_, child) in children {
                        if child.links.get(&index).map(String::as_str) == Some(key)
                            && let Some(own) = &child.own
                        {
                            total.extend(own.iter().cloned());
                        }
                    }
                }
                _ => {}
            }
        }
        total
    }

    /// Every membership, as `(table, record id, bucket)`: what sluice's
    /// `sync_bucket_edges` holds.
    ///
    /// ```
    /// # use sluice_guest_sdk::testing::{Memberships, TestTable};
    /// # use sluice_guest_sdk::{Change, Rule, Value};
    /// # #[derive(Default)]
    /// # struct Global;
    /// # impl Rule for Global {
    /// #     fn buckets(&self, _: &Change<'_>) -> Result<Vec<String>, String> { Ok(vec!["global".into()]) }
    /// # }
    /// let mut model = Memberships::new(&Global).unwrap();
    /// model.apply(&TestTable::new("items", &["id"]).insert(vec![Value::Int(1)])).unwrap();
    /// let edge = ("items".to_string(), "1".to_string(), "global".to_string());
    /// assert_eq!(model.edges(), [edge].into());
    /// ```
    pub fn edges(&self) -> BTreeSet<(String, String, String)> {
        let mut edges = BTreeSet::new();
        for (table, rows) in &self.rows {
            for key in rows.keys() {
                for bucket in self.buckets(table, key) {
                    edges.insert((table.clone(), key.clone(), bucket));
                }
            }
        }
        edges
    }

    fn apply_one(
        &mut self,
        table: &Table,
        change: &crate::Change<'_>,
        outcome: &Outcome,
    ) -> Result<(), String> {
        let new_id = change
            .new_row()
            .and_then(|row| record_id(table, row.values()));
        let old_id = change
            .old_row()
            .and_then(|row| record_id(table, row.values()));
        let id = match change.op() {
            Operation::Delete => old_id.clone(),
            _ => new_id,
        }
        .ok_or(
            "cannot determine the row's primary key (mark key columns with TestTable::with_key)",
        )?;
        let own = match outcome {
            // Nothing is stored for a failed change: the row keeps what it had.
            Outcome::Error(_) => return Ok(()),
            Outcome::Drop => None,
            Outcome::Keep(buckets) => Some(buckets.iter().cloned().collect()),
        };
        let rows = self.rows.entry(table.name.clone()).or_default();
        if let Some(old_id) = old_id.filter(|old| *old != id) {
            rows.remove(&old_id);
        }
        let Some(new) = change
            .new_row()
            .filter(|_| change.op() != Operation::Delete)
        else {
            rows.remove(&id);
            return Ok(());
        };
        let previous = rows.remove(&id).map(|row| row.links).unwrap_or_default();
        let mut links = BTreeMap::new();
        for (index, relation) in self.relations.iter().enumerate() {
            if relation.child != table.name {
                continue;
            }
            let mut parts = Vec::with_capacity(relation.columns.len());
            for name in &relation.columns {
                let at = table
                    .columns
                    .iter()
                    .position(|c| c.name == *name)
                    .ok_or_else(|| {
                        format!(
                            "relation {} names column {name}, which the table does not have",
                            relation.name()
                        )
                    })?;
                let value = new.values().get(at).unwrap_or(&NULL);
                parts.push((value, table.columns[at].type_name.as_str()));
            }
            let link = if parts
                .iter()
                .any(|(value, _)| matches!(value, Value::Unchanged))
            {
                previous.get(&index).cloned()
            } else {
                encode(parts.into_iter().map(Some))
            };
            if let Some(link) = link {
                links.insert(index, link);
            }
        }
        rows.insert(id, ModelRow { own, links });
        Ok(())
    }
}

/// The checks sluice makes at load, with the same wording.
fn check(relations: &[Relation]) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for relation in relations {
        let name = relation.name();
        if relation.child.is_empty() || relation.parent.is_empty() {
            return Err(format!("relation `{name}` has no child or parent table"));
        }
        if relation.columns.is_empty() || relation.columns.iter().any(String::is_empty) {
            return Err(format!("relation `{name}` has no columns"));
        }
        if !seen.insert(name.clone()) {
            return Err(format!("relation `{name}` is declared twice"));
        }
    }
    let inherits: Vec<&Relation> = relations
        .iter()
        .filter(|r| r.flow == Flow::Inherit)
        .collect();
    let mut tables: Vec<&str> = inherits.iter().map(|r| r.child.as_str()).collect();
    tables.sort_unstable();
    for start in tables {
        let mut path = Vec::new();
        if let Some(cycle) = cycle_from(start, &inherits, &mut path) {
            return Err(format!(
                "inherit relations form a cycle, {cycle}: a row would inherit buckets from itself"
            ));
        }
    }
    Ok(())
}

/// A cycle reachable from `table` by inherit relations (tried in sorted order), as the chain
/// `a(b_id)->b(a_id)->a` from its smallest table.
fn cycle_from<'a>(
    table: &str,
    inherits: &[&'a Relation],
    path: &mut Vec<&'a Relation>,
) -> Option<String> {
    let mut out: Vec<&Relation> = inherits
        .iter()
        .copied()
        .filter(|r| r.child == table)
        .collect();
    out.sort_by(|a, b| (&a.parent, &a.columns).cmp(&(&b.parent, &b.columns)));
    for relation in out {
        path.push(relation);
        if let Some(at) = path.iter().position(|r| r.child == relation.parent) {
            let cycle = &path[at..];
            let first = (0..cycle.len())
                .min_by_key(|&i| &cycle[i].child)
                .unwrap_or(0);
            let mut text = String::new();
            for r in cycle[first..].iter().chain(&cycle[..first]) {
                text.push_str(&format!("{}({})->", r.child, r.columns.join(",")));
            }
            text.push_str(&cycle[first].child);
            return Some(text);
        }
        if let Some(cycle) = cycle_from(&relation.parent, inherits, path) {
            return Some(cycle);
        }
        path.pop();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Change;
    use crate::testing::TestTable;

    /// `owner` gives `user:<owner>` on any table; `refs` is the relations.
    #[derive(Default)]
    struct Owners {
        refs: Vec<Relation>,
    }

    impl Rule for Owners {
        fn filter(&self, change: &Change<'_>) -> bool {
            !matches!(change.row().get("hidden"), Value::Bool(true))
        }
        fn buckets(&self, change: &Change<'_>) -> Result<Vec<String>, String> {
            match change.row().get("owner") {
                Value::Text(owner) if owner == "bad" => Err("bad owner".into()),
                Value::Text(owner) => Ok(vec![format!("user:{owner}")]),
                _ => Ok(vec![]),
            }
        }
        fn relations(&self) -> Vec<Relation> {
            self.refs.clone()
        }
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    fn set(buckets: &[&str]) -> BTreeSet<String> {
        buckets.iter().map(|b| (*b).to_string()).collect()
    }

    #[test]
    fn inheritance_chains_through_every_level() {
        let rule = Owners {
            refs: vec![
                Relation::inherit("lines", &["order_id"], "orders"),
                Relation::inherit("orders", &["customer_id"], "customers"),
            ],
        };
        let customers = TestTable::new("customers", &["id", "owner"]);
        let orders = TestTable::new("orders", &["id", "customer_id", "owner"]);
        let lines = TestTable::new("lines", &["id", "order_id"]);
        let mut model = Memberships::new(&rule).unwrap();
        model
            .apply(&lines.insert(vec![Value::Int(100), Value::Int(10)]))
            .unwrap();
        model
            .apply(&orders.insert(vec![Value::Int(10), Value::Int(1), text("clerk")]))
            .unwrap();
        model
            .apply(&customers.insert(vec![Value::Int(1), text("c1")]))
            .unwrap();
        assert_eq!(
            model.buckets("lines", "100"),
            set(&["user:c1", "user:clerk"])
        );

        model
            .apply(&customers.update(vec![Value::Int(1), text("c2")]))
            .unwrap();
        assert_eq!(
            model.buckets("lines", "100"),
            set(&["user:c2", "user:clerk"])
        );
        // The middle row's link goes NULL: the line keeps only what the order itself has.
        model
            .apply(&orders.update(vec![Value::Int(10), Value::Null, text("clerk")]))
            .unwrap();
        assert_eq!(model.buckets("lines", "100"), set(&["user:clerk"]));
        model
            .apply(&orders.delete(vec![Value::Int(10), Value::Null, Value::Null]))
            .unwrap();
        assert_eq!(model.buckets("lines", "100"), set(&[]));
    }

    #[test]
    fn shares_take_only_live_childrens_own_buckets() {
        let rule = Owners {
            refs: vec![
                Relation::share("members", &["team_id"], "teams"),
                Relation::inherit("teams", &["org_id"], "orgs"),
            ],
        };
        let orgs = TestTable::new("orgs", &["id", "owner"]);
        let teams = TestTable::new("teams", &["id", "org_id", "owner"]);
        let members = TestTable::new("members", &["team_id", "owner", "hidden"])
            .with_key(&["team_id", "owner"]);
        let mut model = Memberships::new(&rule).unwrap();
        model
            .apply(&orgs.insert(vec![Value::Int(1), text("boss")]))
            .unwrap();
        model
            .apply(&teams.insert(vec![Value::Int(5), Value::Int(1), Value::Null]))
            .unwrap();
        model
            .apply(&members.insert(vec![Value::Int(5), text("m1"), Value::Bool(false)]))
            .unwrap();
        model
            .apply(&members.insert(vec![Value::Int(5), text("m2"), Value::Bool(true)]))
            .unwrap();
        assert_eq!(model.buckets("teams", "5"), set(&["user:boss", "user:m1"]));
        // Nothing flows down a share: a member row is in its own bucket only.
        assert_eq!(model.buckets("members", r#"["5","m1"]"#), set(&["user:m1"]));
        assert_eq!(model.buckets("members", r#"["5","m2"]"#), set(&[]));
        // A failed change leaves the row as it was.
        let outcomes = model
            .apply(&members.update(vec![Value::Int(5), text("bad"), Value::Bool(false)]))
            .unwrap();
        assert_eq!(outcomes, [Outcome::Error("bad owner".into())]);
        assert_eq!(model.buckets("teams", "5"), set(&["user:boss", "user:m1"]));
    }

    #[test]
    fn an_unchanged_link_column_keeps_the_link_and_composite_links_are_json() {
        let rule = Owners {
            refs: vec![Relation::inherit("cells", &["org", "sheet"], "sheets")],
        };
        let sheets =
            TestTable::new("sheets", &["org", "sheet", "owner"]).with_key(&["org", "sheet"]);
        let cells = TestTable::new("cells", &["id", "org", "sheet"]);
        let mut model = Memberships::new(&rule).unwrap();
        model
            .apply(&sheets.insert(vec![text("o"), Value::Int(2), text("u1")]))
            .unwrap();
        model
            .apply(&cells.insert(vec![Value::Int(1), text("o"), Value::Int(2)]))
            .unwrap();
        assert_eq!(model.buckets("sheets", r#"["o","2"]"#), set(&["user:u1"]));
        assert_eq!(model.buckets("cells", "1"), set(&["user:u1"]));
        model
            .apply(&cells.update(vec![Value::Int(1), text("o"), Value::Unchanged]))
            .unwrap();
        assert_eq!(model.buckets("cells", "1"), set(&["user:u1"]));
    }

    #[test]
    fn bad_declarations_and_keyless_changes_are_refused() {
        let refused = |refs: Vec<Relation>| Memberships::new(&Owners { refs }).err().unwrap();
        assert_eq!(
            refused(vec![
                Relation::inherit("b", &["a_id"], "a"),
                Relation::inherit("a", &["b_id"], "b"),
            ]),
            "inherit relations form a cycle, a(b_id)->b(a_id)->a: a row would inherit buckets from itself"
        );
        assert_eq!(
            refused(vec![Relation::share("a", &[], "b")]),
            "relation `a()=>b` has no columns"
        );
        assert_eq!(
            refused(vec![
                Relation::share("a", &["x"], "b"),
                Relation::share("a", &["x"], "b")
            ]),
            "relation `a(x)=>b` is declared twice"
        );
        let rule = Owners {
            refs: vec![Relation::inherit("a", &["missing"], "b")],
        };
        let mut model = Memberships::new(&rule).unwrap();
        let a = TestTable::new("a", &["id"]);
        assert_eq!(
            model.apply(&a.insert(vec![Value::Int(1)])).err().unwrap(),
            "change #0 on a: relation a(missing)->b names column missing, which the table does not have"
        );
        let keyless = TestTable::new("a", &["id"]).with_key(&[]);
        assert_eq!(
            model
                .apply(&keyless.insert(vec![Value::Int(1)]))
                .err()
                .unwrap(),
            "change #0 on a: cannot determine the row's primary key (mark key columns with TestTable::with_key)"
        );
    }
}
