//! Building the relations a rule declares.

use crate::{Flow, Relation};

impl Relation {
    /// Rows of `child` belong to every bucket of the `parent` row whose
    /// primary key their `columns` hold (in the parent's key order), besides
    /// their own buckets: synchro's child tables, an order line in its
    /// order's buckets. The parent's buckets are its *total* ones, so chains
    /// work (`order_details -> orders -> customers`).
    ///
    /// When the parent's memberships change (its owner changes, it is
    /// deleted or dropped), sluice moves its children with it, in the same
    /// sink transaction, without reading them again. A child whose columns
    /// are NULL, or whose parent does not exist (yet), inherits nothing.
    ///
    /// Inherit relations must not form a cycle between tables (`a -> b -> a`,
    /// or a table inheriting from itself): sluice refuses such a module at
    /// load, naming the cycle.
    ///
    /// ```
    /// use sluice_guest_sdk::{Change, Relation, Rule, Value};
    ///
    /// #[derive(Default)]
    /// struct Orders;
    ///
    /// impl Rule for Orders {
    ///     fn buckets(&self, change: &Change<'_>) -> Result<Vec<String>, String> {
    ///         match (change.table_name(), change.row().get("user_id")) {
    ///             ("orders", Value::Text(user)) => Ok(vec![format!("user:{user}")]),
    ///             // An order line has no buckets of its own: only its order's.
    ///             _ => Ok(vec![]),
    ///         }
    ///     }
    ///
    ///     fn relations(&self) -> Vec<Relation> {
    ///         vec![Relation::inherit("order_details", &["order_id"], "orders")]
    ///     }
    /// }
    /// assert_eq!(Orders.relations()[0].name(), "order_details(order_id)->orders");
    /// ```
    pub fn inherit(child: &str, columns: &[&str], parent: &str) -> Relation {
        Relation::new(child, columns, parent, Flow::Inherit)
    }

    /// The `parent` row belongs to the *own* buckets (what the rule returns
    /// for the row itself) of each `child` row whose `columns` hold its key
    /// and that is not dropped or deleted: a list shared with each member of
    /// its `list_members`. Adding a member row moves the list (and, through
    /// inherit relations, its items) into the member's bucket; removing it
    /// moves them out.
    ///
    /// Only own buckets flow up a share relation, never what the child
    /// inherits, so a child may also inherit from the parent it shares with
    /// (members see the list's other members) without a cycle.
    ///
    /// ```
    /// use sluice_guest_sdk::{Flow, Relation};
    ///
    /// let members = Relation::share("list_members", &["list_id"], "lists");
    /// assert_eq!(members.flow, Flow::Share);
    /// assert_eq!(members.name(), "list_members(list_id)=>lists");
    /// ```
    pub fn share(child: &str, columns: &[&str], parent: &str) -> Relation {
        Relation::new(child, columns, parent, Flow::Share)
    }

    /// The name sluice reports the relation by (`sluice check` lists them):
    /// `child(columns)->parent` for inherit, `child(columns)=>parent` for
    /// share.
    ///
    /// ```
    /// use sluice_guest_sdk::Relation;
    ///
    /// let r = Relation::inherit("memberships", &["org_id", "team_id"], "teams");
    /// assert_eq!(r.name(), "memberships(org_id,team_id)->teams");
    /// ```
    pub fn name(&self) -> String {
        let arrow = match self.flow {
            Flow::Inherit => "->",
            Flow::Share => "=>",
        };
        format!(
            "{}({}){arrow}{}",
            self.child,
            self.columns.join(","),
            self.parent
        )
    }

    fn new(child: &str, columns: &[&str], parent: &str, flow: Flow) -> Relation {
        Relation {
            child: child.to_string(),
            columns: columns.iter().map(|c| (*c).to_string()).collect(),
            parent: parent.to_string(),
            flow,
        }
    }
}
