//! synchro's Northwind test tables, bucketed as synchro serves them:
//!
//! | table           | buckets                                            |
//! |-----------------|----------------------------------------------------|
//! | `orders`        | `user:<user_id>`                                   |
//! | `order_details` | its order's buckets                                |
//! | `categories`    | `user:<user_id>`, or `global` when `user_id` is null |
//! | `products`      | `global`                                           |
//!
//! A row whose `deleted_at` is set is dropped: it leaves its buckets, and an order's lines
//! leave with it (they have no buckets of their own). An order line gets its order's buckets
//! through the relation `order_details(order_id)->orders`, so when an order changes owner sluice
//! moves its lines in the same transaction, without this rule seeing them again. Tables are
//! created by `schema.sql`. Another table is an error: a row this rule does not know must not
//! land in a bucket by accident.

use sluice_guest_sdk::{Change, Operation, Relation, Rule, Value};

/// The northwind rule.
#[derive(Debug, Default)]
pub struct Northwind;

impl Rule for Northwind {
    fn filter(&self, change: &Change<'_>) -> bool {
        matches!(change.row().get("deleted_at"), Value::Null)
    }

    fn buckets(&self, change: &Change<'_>) -> Result<Vec<String>, String> {
        // A deleted row leaves every bucket whatever its outcome, and under a replica identity
        // other than FULL its old row holds only the key.
        if change.op() == Operation::Delete {
            return Ok(vec![]);
        }
        let user_id = change.row().get("user_id");
        match change.table_name() {
            "orders" => match user_id {
                Value::Text(user) => Ok(vec![format!("user:{user}")]),
                other => Err(format!("orders: user_id must be a uuid, got {other:?}")),
            },
            "order_details" => Ok(vec![]),
            "categories" => match user_id {
                Value::Text(user) => Ok(vec![format!("user:{user}")]),
                Value::Null => Ok(vec!["global".into()]),
                other => Err(format!("categories: user_id must be a uuid, got {other:?}")),
            },
            "products" => Ok(vec!["global".into()]),
            other => Err(format!("northwind has no bucket rule for table {other}")),
        }
    }

    fn relations(&self) -> Vec<Relation> {
        vec![Relation::inherit("order_details", &["order_id"], "orders")]
    }
}

sluice_guest_sdk::export_rule!(Northwind);

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use sluice_guest_sdk::Outcome;
    use sluice_guest_sdk::testing::{Memberships, TestTable};

    const U1: &str = "00000000-0000-0000-0000-0000000000a1";
    const U2: &str = "00000000-0000-0000-0000-0000000000a2";
    const O1: &str = "00000000-0000-0000-0000-000000000001";
    const D1: &str = "00000000-0000-0000-0000-0000000000d1";
    const D2: &str = "00000000-0000-0000-0000-0000000000d2";

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    fn set(buckets: &[&str]) -> BTreeSet<String> {
        buckets.iter().map(|b| (*b).to_string()).collect()
    }

    fn orders() -> TestTable {
        TestTable::new("orders", &["id", "user_id", "deleted_at"])
    }

    fn details() -> TestTable {
        TestTable::new("order_details", &["id", "order_id", "deleted_at"])
    }

    fn order(user: &str, deleted_at: Value) -> Vec<Value> {
        vec![text(O1), text(user), deleted_at]
    }

    fn detail(id: &str, deleted_at: Value) -> Vec<Value> {
        vec![text(id), text(O1), deleted_at]
    }

    #[test]
    fn order_lines_follow_their_order() {
        let mut model = Memberships::new(&Northwind).unwrap();
        // A line committed before its order has no buckets until the order arrives.
        model
            .apply(&details().insert(detail(D1, Value::Null)))
            .unwrap();
        assert_eq!(model.buckets("order_details", D1), set(&[]));
        model
            .apply(&orders().insert(order(U1, Value::Null)))
            .unwrap();
        model
            .apply(&details().insert(detail(D2, Value::Null)))
            .unwrap();
        assert_eq!(
            model.buckets("orders", O1),
            set(&["user:00000000-0000-0000-0000-0000000000a1"])
        );
        assert_eq!(
            model.buckets("order_details", D1),
            model.buckets("orders", O1)
        );
        assert_eq!(
            model.buckets("order_details", D2),
            model.buckets("orders", O1)
        );

        model
            .apply(&orders().update(order(U2, Value::Null)))
            .unwrap();
        let u2 = set(&["user:00000000-0000-0000-0000-0000000000a2"]);
        assert_eq!(model.buckets("order_details", D1), u2);
        assert_eq!(model.buckets("order_details", D2), u2);
    }

    #[test]
    fn soft_deletes_leave_their_buckets_and_take_the_lines_along() {
        let mut model = Memberships::new(&Northwind).unwrap();
        model
            .apply(&orders().insert(order(U1, Value::Null)))
            .unwrap();
        model
            .apply(&details().insert(detail(D1, Value::Null)))
            .unwrap();
        model
            .apply(&details().insert(detail(D2, Value::Null)))
            .unwrap();
        let deleted = Value::Timestamptz("2026-01-01T00:00:00Z".into());
        let outcomes = model
            .apply(&details().update(detail(D2, deleted.clone())))
            .unwrap();
        assert_eq!(outcomes, [Outcome::Drop]);
        assert_eq!(model.buckets("order_details", D2), set(&[]));
        assert_eq!(model.buckets("order_details", D1).len(), 1);

        model.apply(&orders().update(order(U1, deleted))).unwrap();
        assert_eq!(model.edges(), BTreeSet::new());
        // Undeleting the order brings its live line back.
        model
            .apply(&orders().update(order(U1, Value::Null)))
            .unwrap();
        assert_eq!(model.buckets("order_details", D1).len(), 1);
        assert_eq!(model.buckets("order_details", D2), set(&[]));
    }

    #[test]
    fn deleting_an_order_removes_its_lines_from_its_buckets() {
        let mut model = Memberships::new(&Northwind).unwrap();
        model
            .apply(&orders().insert(order(U1, Value::Null)))
            .unwrap();
        model
            .apply(&details().insert(detail(D1, Value::Null)))
            .unwrap();
        // Under the default replica identity the old row is the key alone.
        let delete = orders().delete(vec![text(O1), Value::Null, Value::Null]);
        assert_eq!(model.apply(&delete).unwrap(), [Outcome::Keep(vec![])]);
        assert_eq!(model.edges(), BTreeSet::new());
    }

    #[test]
    fn categories_and_products() {
        let categories = TestTable::new("categories", &["id", "user_id", "deleted_at"]);
        let products = TestTable::new("products", &["id", "deleted_at"]);
        let mut model = Memberships::new(&Northwind).unwrap();
        model
            .apply(&categories.insert(vec![text("c1"), text(U1), Value::Null]))
            .unwrap();
        model
            .apply(&categories.insert(vec![text("c2"), Value::Null, Value::Null]))
            .unwrap();
        model
            .apply(&products.insert(vec![text("p1"), Value::Null]))
            .unwrap();
        assert_eq!(
            model.buckets("categories", "c1"),
            set(&["user:00000000-0000-0000-0000-0000000000a1"])
        );
        assert_eq!(model.buckets("categories", "c2"), set(&["global"]));
        assert_eq!(model.buckets("products", "p1"), set(&["global"]));
    }

    #[test]
    fn unknown_tables_and_bad_owners_are_errors() {
        let mut model = Memberships::new(&Northwind).unwrap();
        let customers = TestTable::new("customers", &["id"]);
        assert_eq!(
            model.apply(&customers.insert(vec![text("x")])).unwrap(),
            [Outcome::Error(
                "northwind has no bucket rule for table customers".into()
            )]
        );
        assert_eq!(
            model
                .apply(&orders().insert(vec![text(O1), Value::Int(3), Value::Null]))
                .unwrap(),
            [Outcome::Error(
                "orders: user_id must be a uuid, got Value::Int(3)".into()
            )]
        );
        assert_eq!(model.edges(), BTreeSet::new());
    }
}
