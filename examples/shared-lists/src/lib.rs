//! Lists shared through a membership table:
//!
//! | table          | buckets                                                     |
//! |----------------|-------------------------------------------------------------|
//! | `lists`        | `user:<owner_id>` plus `user:<user_id>` of each of its members |
//! | `list_members` | its list's buckets, so members see who else is on the list  |
//! | `items`        | its list's buckets                                          |
//!
//! Each row's own buckets come from the row alone: a list's owner, a member row's user, nothing
//! for an item. The relations do the rest:
//! - `list_members(list_id)=>lists` shares: a list is also in each member row's own bucket;
//! - `list_members(list_id)->lists` and `items(list_id)->lists` inherit: members and items are
//!   in all of their list's buckets.
//!
//! So changing `owner_id`, adding a member or removing one moves the list, its items and its
//! member rows, and sluice does it without this rule seeing them again. Only own buckets flow
//! up a share relation, which is why a member row may also inherit from its list without a
//! cycle. Tables are created by `schema.sql`; another table is an error.

use sluice_guest_sdk::{Change, Operation, Relation, Rule, Value};

/// The shared-lists rule.
#[derive(Debug, Default)]
pub struct SharedLists;

impl Rule for SharedLists {
    fn buckets(&self, change: &Change<'_>) -> Result<Vec<String>, String> {
        // A deleted row leaves every bucket whatever its outcome; its old row may hold only the
        // key.
        if change.op() == Operation::Delete {
            return Ok(vec![]);
        }
        let row = change.row();
        match change.table_name() {
            "lists" => user_bucket("lists", "owner_id", row.get("owner_id")),
            "list_members" => user_bucket("list_members", "user_id", row.get("user_id")),
            "items" => Ok(vec![]),
            other => Err(format!("shared-lists has no bucket rule for table {other}")),
        }
    }

    fn relations(&self) -> Vec<Relation> {
        vec![
            Relation::share("list_members", &["list_id"], "lists"),
            Relation::inherit("list_members", &["list_id"], "lists"),
            Relation::inherit("items", &["list_id"], "lists"),
        ]
    }
}

fn user_bucket(table: &str, column: &str, value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::Text(user) if !user.is_empty() => Ok(vec![format!("user:{user}")]),
        other => Err(format!(
            "{table}: {column} must be non-empty text, got {other:?}"
        )),
    }
}

sluice_guest_sdk::export_rule!(SharedLists);

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use sluice_guest_sdk::Outcome;
    use sluice_guest_sdk::testing::{Memberships, TestTable};

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    fn set(buckets: &[&str]) -> BTreeSet<String> {
        buckets.iter().map(|b| (*b).to_string()).collect()
    }

    fn lists() -> TestTable {
        TestTable::new("lists", &["id", "owner_id", "title"])
    }

    fn members() -> TestTable {
        TestTable::new("list_members", &["list_id", "user_id"]).with_key(&["list_id", "user_id"])
    }

    fn items() -> TestTable {
        TestTable::new("items", &["id", "list_id", "title"])
    }

    fn list(id: i64, owner: &str) -> Vec<Value> {
        vec![Value::Int(id), text(owner), text("groceries")]
    }

    fn member(list: i64, user: &str) -> Vec<Value> {
        vec![Value::Int(list), text(user)]
    }

    fn item(id: i64, list: i64) -> Vec<Value> {
        vec![Value::Int(id), Value::Int(list), text("milk")]
    }

    /// A list, a member, an item; all three must be in exactly `buckets`.
    fn assert_list(model: &Memberships<'_, SharedLists>, buckets: &[&str], member_ids: &[&str]) {
        assert_eq!(model.buckets("lists", "1"), set(buckets));
        assert_eq!(model.buckets("items", "10"), set(buckets));
        for id in member_ids {
            assert_eq!(model.buckets("list_members", id), set(buckets), "{id}");
        }
    }

    #[test]
    fn members_share_the_list_and_everything_follows_it() {
        let mut model = Memberships::new(&SharedLists).unwrap();
        // Children first, in one transaction with their list: nothing until the list arrives.
        let mut batch = items().insert(item(10, 1));
        batch.push(members().insert(member(1, "u2")));
        batch.push(lists().insert(list(1, "u1")));
        model.apply(&batch).unwrap();
        assert_list(&model, &["user:u1", "user:u2"], &[r#"["1","u2"]"#]);

        model.apply(&members().insert(member(1, "u3"))).unwrap();
        assert_list(
            &model,
            &["user:u1", "user:u2", "user:u3"],
            &[r#"["1","u2"]"#, r#"["1","u3"]"#],
        );

        model.apply(&lists().update(list(1, "u9"))).unwrap();
        assert_list(
            &model,
            &["user:u9", "user:u2", "user:u3"],
            &[r#"["1","u2"]"#, r#"["1","u3"]"#],
        );

        model.apply(&members().delete(member(1, "u2"))).unwrap();
        assert_list(&model, &["user:u9", "user:u3"], &[r#"["1","u3"]"#]);
        assert_eq!(model.buckets("list_members", r#"["1","u2"]"#), set(&[]));
    }

    #[test]
    fn a_member_moved_to_another_list_changes_both() {
        let mut model = Memberships::new(&SharedLists).unwrap();
        model.apply(&lists().insert(list(1, "u1"))).unwrap();
        model.apply(&lists().insert(list(2, "u5"))).unwrap();
        model.apply(&members().insert(member(1, "u2"))).unwrap();
        // A key change: PostgreSQL sends the old key with the update.
        let moved = members().change(
            Operation::Update,
            Some(member(2, "u2")),
            Some(member(1, "u2")),
        );
        model.apply(&moved).unwrap();
        assert_eq!(model.buckets("lists", "1"), set(&["user:u1"]));
        assert_eq!(model.buckets("lists", "2"), set(&["user:u5", "user:u2"]));
        assert_eq!(model.buckets("list_members", r#"["1","u2"]"#), set(&[]));
        assert_eq!(
            model.buckets("list_members", r#"["2","u2"]"#),
            set(&["user:u5", "user:u2"])
        );
    }

    #[test]
    fn deleting_the_list_empties_its_dependants_and_truncate_empties_everything() {
        let mut model = Memberships::new(&SharedLists).unwrap();
        model.apply(&lists().insert(list(1, "u1"))).unwrap();
        model.apply(&members().insert(member(1, "u2"))).unwrap();
        model.apply(&items().insert(item(10, 1))).unwrap();
        model
            .apply(&lists().delete(vec![Value::Int(1), Value::Null, Value::Null]))
            .unwrap();
        // A member row keeps its own bucket: its user still sees it until it is deleted too.
        assert_eq!(
            model.buckets("list_members", r#"["1","u2"]"#),
            set(&["user:u2"])
        );
        assert_eq!(model.buckets("items", "10"), set(&[]));
        model.truncate("list_members");
        assert_eq!(model.edges(), BTreeSet::new());
    }

    #[test]
    fn bad_owners_are_errors_that_change_nothing() {
        let mut model = Memberships::new(&SharedLists).unwrap();
        model.apply(&lists().insert(list(1, "u1"))).unwrap();
        let outcomes = model.apply(&lists().update(list(1, ""))).unwrap();
        assert_eq!(
            outcomes,
            [Outcome::Error(
                "lists: owner_id must be non-empty text, got Value::Text(\"\")".into()
            )]
        );
        assert_eq!(model.buckets("lists", "1"), set(&["user:u1"]));
    }
}
