//! Building changes by hand, to unit-test a rule natively with `cargo test`
//! (no Wasm build, no database).
//!
//! ```
//! use sluice_guest_sdk::testing::TestTable;
//! use sluice_guest_sdk::{evaluate, Change, Outcome, Rule, Value};
//!
//! #[derive(Default)]
//! struct ByOwner;
//! impl Rule for ByOwner {
//!     fn buckets(&self, change: &Change<'_>) -> Result<Vec<String>, String> {
//!         Ok(vec![match change.row().get("user_id") {
//!             Value::Text(id) => format!("user:{id}"),
//!             _ => "global".into(),
//!         }])
//!     }
//! }
//!
//! let items = TestTable::new("items", &["id", "user_id"]);
//! let batch = items.insert(vec![Value::Int(1), Value::Text("u1".into())]);
//! assert_eq!(evaluate(&ByOwner, &batch.change()), Outcome::Keep(vec!["user:u1".into()]));
//! ```

mod memberships;
mod record_id;

pub use memberships::Memberships;
pub use record_id::record_id;

use crate::bindings::sluice::rules::types::Change as WireChange;
use crate::{Change, Column, Operation, Table, Value};

/// A table to build test changes for. Columns are typed `unknown` and the
/// first one is the key; use [`TestTable::with_columns`] for full control.
///
/// ```
/// use sluice_guest_sdk::testing::TestTable;
///
/// let items = TestTable::new("items", &["id", "user_id"]);
/// assert_eq!(items.table().columns.len(), 2);
/// ```
#[derive(Clone, Debug)]
pub struct TestTable {
    table: Table,
}

impl TestTable {
    /// A table called `name` (schema-qualified unless `public`) with these
    /// column names.
    ///
    /// ```
    /// use sluice_guest_sdk::testing::TestTable;
    ///
    /// let t = TestTable::new("billing.invoices", &["id"]);
    /// assert_eq!(t.table().name, "billing.invoices");
    /// assert!(t.table().columns[0].key);
    /// ```
    pub fn new(name: &str, columns: &[&str]) -> Self {
        let columns = columns
            .iter()
            .enumerate()
            .map(|(i, column)| Column {
                name: (*column).to_string(),
                type_name: "unknown".to_string(),
                key: i == 0,
            })
            .collect();
        Self::with_columns(name, columns)
    }

    /// A table with explicit column definitions.
    ///
    /// ```
    /// use sluice_guest_sdk::testing::TestTable;
    /// use sluice_guest_sdk::Column;
    ///
    /// let t = TestTable::with_columns("items", vec![
    ///     Column { name: "id".into(), type_name: "int8".into(), key: true },
    /// ]);
    /// assert_eq!(t.table().columns[0].type_name, "int8");
    /// ```
    pub fn with_columns(name: &str, columns: Vec<Column>) -> Self {
        TestTable {
            table: Table {
                name: name.to_string(),
                columns,
            },
        }
    }

    /// The same table with exactly `key` as its primary key columns (the
    /// host marks them from the catalog). Record ids, which
    /// [`Memberships`] keys rows by, take the key columns in column order.
    ///
    /// ```
    /// use sluice_guest_sdk::testing::TestTable;
    ///
    /// let members = TestTable::new("list_members", &["list_id", "user_id", "role"])
    ///     .with_key(&["list_id", "user_id"]);
    /// let keys: Vec<bool> = members.table().columns.iter().map(|c| c.key).collect();
    /// assert_eq!(keys, [true, true, false]);
    /// ```
    pub fn with_key(mut self, key: &[&str]) -> Self {
        for column in &mut self.table.columns {
            column.key = key.contains(&column.name.as_str());
        }
        self
    }

    /// The table as the host would send it.
    ///
    /// ```
    /// # use sluice_guest_sdk::testing::TestTable;
    /// assert_eq!(TestTable::new("items", &["id"]).table().name, "items");
    /// ```
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// A one-change batch inserting `new`.
    ///
    /// ```
    /// # use sluice_guest_sdk::{testing::TestTable, Operation, Value};
    /// let batch = TestTable::new("items", &["id"]).insert(vec![Value::Int(1)]);
    /// assert_eq!(batch.change().op(), Operation::Insert);
    /// ```
    pub fn insert(&self, new: Vec<Value>) -> TestBatch {
        self.change(Operation::Insert, Some(new), None)
    }

    /// A one-change batch updating a row to `new` (no old row, as with the
    /// default replica identity when the key did not change).
    ///
    /// ```
    /// # use sluice_guest_sdk::{testing::TestTable, Operation, Value};
    /// let batch = TestTable::new("items", &["id"]).update(vec![Value::Int(1)]);
    /// assert_eq!(batch.change().op(), Operation::Update);
    /// ```
    pub fn update(&self, new: Vec<Value>) -> TestBatch {
        self.change(Operation::Update, Some(new), None)
    }

    /// A one-change batch deleting a row whose old values are `old`.
    ///
    /// ```
    /// # use sluice_guest_sdk::{testing::TestTable, Operation, Value};
    /// let batch = TestTable::new("items", &["id"]).delete(vec![Value::Int(1)]);
    /// assert_eq!(batch.change().op(), Operation::Delete);
    /// ```
    pub fn delete(&self, old: Vec<Value>) -> TestBatch {
        self.change(Operation::Delete, None, Some(old))
    }

    /// A one-change batch with everything explicit.
    ///
    /// ```
    /// # use sluice_guest_sdk::{testing::TestTable, Operation, Value};
    /// let batch = TestTable::new("items", &["id"])
    ///     .change(Operation::Update, Some(vec![Value::Int(2)]), Some(vec![Value::Int(1)]));
    /// assert_eq!(batch.change().old_row().unwrap().get("id"), &Value::Int(1));
    /// ```
    pub fn change(
        &self,
        op: Operation,
        new: Option<Vec<Value>>,
        old: Option<Vec<Value>>,
    ) -> TestBatch {
        TestBatch {
            tables: vec![self.table.clone()],
            changes: vec![WireChange {
                table: 0,
                op,
                new,
                old,
                lsn: 0,
            }],
        }
    }
}

/// Changes in the host's wire form, ready to hand to
/// [`crate::evaluate_batch`] or to view with [`TestBatch::change`].
///
/// ```
/// # use sluice_guest_sdk::{testing::TestTable, Value};
/// let items = TestTable::new("items", &["id"]);
/// let mut batch = items.insert(vec![Value::Int(1)]);
/// batch.push(items.delete(vec![Value::Int(2)]));
/// assert_eq!(batch.changes().len(), 2);
/// ```
#[derive(Clone, Debug)]
pub struct TestBatch {
    tables: Vec<Table>,
    changes: Vec<WireChange>,
}

impl TestBatch {
    /// Appends another batch's changes (its tables are added as needed).
    ///
    /// ```
    /// # use sluice_guest_sdk::{testing::TestTable, Value};
    /// let a = TestTable::new("a", &["id"]);
    /// let b = TestTable::new("b", &["id"]);
    /// let mut batch = a.insert(vec![Value::Int(1)]);
    /// batch.push(b.insert(vec![Value::Int(2)]));
    /// assert_eq!(batch.tables().len(), 2);
    /// ```
    pub fn push(&mut self, other: TestBatch) {
        let mut index_of = Vec::with_capacity(other.tables.len());
        for table in other.tables {
            let index = match self.tables.iter().position(|t| *t == table) {
                Some(index) => index,
                None => {
                    self.tables.push(table);
                    self.tables.len() - 1
                }
            };
            index_of.push(index);
        }
        for mut change in other.changes {
            if let Some(&index) = usize::try_from(change.table)
                .ok()
                .and_then(|i| index_of.get(i))
            {
                change.table = u32::try_from(index).unwrap_or(u32::MAX);
            }
            self.changes.push(change);
        }
    }

    /// The tables, as the host would send them.
    ///
    /// ```
    /// # use sluice_guest_sdk::{testing::TestTable, Value};
    /// let batch = TestTable::new("items", &["id"]).insert(vec![Value::Int(1)]);
    /// assert_eq!(batch.tables()[0].name, "items");
    /// ```
    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    /// The changes, as the host would send them.
    ///
    /// ```
    /// # use sluice_guest_sdk::{testing::TestTable, Value};
    /// let batch = TestTable::new("items", &["id"]).insert(vec![Value::Int(1)]);
    /// assert_eq!(batch.changes()[0].table, 0);
    /// ```
    pub fn changes(&self) -> &[WireChange] {
        &self.changes
    }

    /// A view of the first change.
    ///
    /// ```
    /// # use sluice_guest_sdk::{testing::TestTable, Value};
    /// let batch = TestTable::new("items", &["id"]).insert(vec![Value::Int(1)]);
    /// assert_eq!(batch.change().row().get("id"), &Value::Int(1));
    /// ```
    ///
    /// # Panics
    ///
    /// If the batch is empty, which a `TestTable` never produces.
    pub fn change(&self) -> Change<'_> {
        self.get(0).expect("a TestBatch holds at least one change")
    }

    /// A view of change `index`, if there is one.
    ///
    /// ```
    /// # use sluice_guest_sdk::{testing::TestTable, Value};
    /// let batch = TestTable::new("items", &["id"]).insert(vec![Value::Int(1)]);
    /// assert!(batch.get(1).is_none());
    /// ```
    pub fn get(&self, index: usize) -> Option<Change<'_>> {
        Change::from_wire(&self.tables, self.changes.get(index)?)
    }
}
