//! By-name views over the positional rows the host sends.

use crate::bindings::sluice::rules::types::Change as WireChange;
use crate::{Column, Operation, Table, Value};

static NULL: Value = Value::Null;

/// One row change, as a rule sees it.
///
/// ```
/// use sluice_guest_sdk::testing::TestTable;
/// use sluice_guest_sdk::{Operation, Value};
///
/// let items = TestTable::new("items", &["id", "user_id"]);
/// let batch = items.insert(vec![Value::Int(1), Value::Text("u1".into())]);
/// let change = batch.change();
/// assert_eq!(change.table_name(), "items");
/// assert_eq!(change.op(), Operation::Insert);
/// assert_eq!(change.row().get("user_id"), &Value::Text("u1".into()));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Change<'a> {
    table: &'a Table,
    wire: &'a WireChange,
}

impl<'a> Change<'a> {
    /// Pairs a wire change with its table. `None` when the host sent a table
    /// index outside the batch's tables.
    pub(crate) fn from_wire(tables: &'a [Table], wire: &'a WireChange) -> Option<Self> {
        let table = tables.get(usize::try_from(wire.table).ok()?)?;
        Some(Change { table, wire })
    }

    /// The table's name, schema-qualified where the schema is not `public`
    /// (`items`, `billing.invoices`): the sidecar tables' `table_name`. A
    /// schema or table name containing `.` or `"` is double-quoted as
    /// PostgreSQL's `quote_ident` does (schema `a.b`, table `c`: `"a.b".c`), so
    /// two tables never share a name.
    ///
    /// ```
    /// # use sluice_guest_sdk::{testing::TestTable, Value};
    /// let batch = TestTable::new("billing.invoices", &["id"]).insert(vec![Value::Int(1)]);
    /// assert_eq!(batch.change().table_name(), "billing.invoices");
    /// ```
    pub fn table_name(&self) -> &'a str {
        &self.table.name
    }

    /// The table's columns, in order.
    ///
    /// ```
    /// # use sluice_guest_sdk::{testing::TestTable, Value};
    /// let batch = TestTable::new("items", &["id", "title"]).insert(vec![Value::Int(1), Value::Null]);
    /// assert_eq!(batch.change().columns()[1].name, "title");
    /// ```
    pub fn columns(&self) -> &'a [Column] {
        &self.table.columns
    }

    /// Insert, update or delete.
    ///
    /// ```
    /// # use sluice_guest_sdk::{testing::TestTable, Operation, Value};
    /// let batch = TestTable::new("items", &["id"]).delete(vec![Value::Int(1)]);
    /// assert_eq!(batch.change().op(), Operation::Delete);
    /// ```
    pub fn op(&self) -> Operation {
        self.wire.op
    }

    /// The row after the change; `None` for deletes.
    ///
    /// ```
    /// # use sluice_guest_sdk::{testing::TestTable, Value};
    /// let batch = TestTable::new("items", &["id"]).delete(vec![Value::Int(1)]);
    /// assert!(batch.change().new_row().is_none());
    /// ```
    pub fn new_row(&self) -> Option<Row<'a>> {
        self.wire.new.as_deref().map(|values| self.row_of(values))
    }

    /// The row before the change, where PostgreSQL sent one: the full row
    /// under `REPLICA IDENTITY FULL`, otherwise only the replica identity's
    /// columns (the primary key's under the default identity) are set and the
    /// others read as `Null`. `None` for inserts.
    ///
    /// ```
    /// # use sluice_guest_sdk::{testing::TestTable, Value};
    /// let batch = TestTable::new("items", &["id"]).delete(vec![Value::Int(7)]);
    /// assert_eq!(batch.change().old_row().unwrap().get("id"), &Value::Int(7));
    /// ```
    pub fn old_row(&self) -> Option<Row<'a>> {
        self.wire.old.as_deref().map(|values| self.row_of(values))
    }

    /// The row a rule should usually look at: the new row, or the old row
    /// for a delete. A change with neither gives a row where every column is
    /// `Null`.
    ///
    /// ```
    /// # use sluice_guest_sdk::{testing::TestTable, Value};
    /// let items = TestTable::new("items", &["id"]);
    /// assert_eq!(items.delete(vec![Value::Int(3)]).change().row().get("id"), &Value::Int(3));
    /// assert_eq!(items.insert(vec![Value::Int(4)]).change().row().get("id"), &Value::Int(4));
    /// ```
    pub fn row(&self) -> Row<'a> {
        let values = self
            .wire
            .new
            .as_deref()
            .or(self.wire.old.as_deref())
            .unwrap_or(&[]);
        self.row_of(values)
    }

    /// The LSN of the change's commit record (0 in `sluice eval`).
    ///
    /// ```
    /// # use sluice_guest_sdk::{testing::TestTable, Value};
    /// let batch = TestTable::new("items", &["id"]).insert(vec![Value::Int(1)]);
    /// assert_eq!(batch.change().lsn(), 0);
    /// ```
    pub fn lsn(&self) -> u64 {
        self.wire.lsn
    }

    fn row_of(&self, values: &'a [Value]) -> Row<'a> {
        Row {
            columns: &self.table.columns,
            values,
        }
    }
}

/// A row, read by column name.
///
/// ```
/// # use sluice_guest_sdk::{testing::TestTable, Value};
/// let batch = TestTable::new("items", &["id", "user_id"]).insert(vec![Value::Int(1), Value::Null]);
/// let row = batch.change().row();
/// assert_eq!(row.get("id"), &Value::Int(1));
/// assert_eq!(row.get("user_id"), &Value::Null);
/// assert_eq!(row.column("missing"), None);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Row<'a> {
    columns: &'a [Column],
    values: &'a [Value],
}

impl<'a> Row<'a> {
    /// The value of column `name`. A column the table does not have reads
    /// as `Null`; use [`Row::column`] to tell the two apart.
    ///
    /// ```
    /// # use sluice_guest_sdk::{testing::TestTable, Value};
    /// let batch = TestTable::new("items", &["user_id"]).insert(vec![Value::Text("u1".into())]);
    /// match batch.change().row().get("user_id") {
    ///     Value::Text(id) => assert_eq!(id, "u1"),
    ///     other => panic!("unexpected {other:?}"),
    /// }
    /// ```
    pub fn get(&self, name: &str) -> &'a Value {
        self.column(name).unwrap_or(&NULL)
    }

    /// The value of column `name`, or `None` if the table has no such column.
    ///
    /// ```
    /// # use sluice_guest_sdk::{testing::TestTable, Value};
    /// let batch = TestTable::new("items", &["id"]).insert(vec![Value::Int(1)]);
    /// assert_eq!(batch.change().row().column("id"), Some(&Value::Int(1)));
    /// assert_eq!(batch.change().row().column("user_id"), None);
    /// ```
    pub fn column(&self, name: &str) -> Option<&'a Value> {
        let index = self.columns.iter().position(|c| c.name == name)?;
        Some(self.values.get(index).unwrap_or(&NULL))
    }

    /// Whether the table has a column called `name`.
    ///
    /// ```
    /// # use sluice_guest_sdk::{testing::TestTable, Value};
    /// let batch = TestTable::new("items", &["id"]).insert(vec![Value::Int(1)]);
    /// assert!(batch.change().row().has("id"));
    /// assert!(!batch.change().row().has("user_id"));
    /// ```
    pub fn has(&self, name: &str) -> bool {
        self.columns.iter().any(|c| c.name == name)
    }

    /// The values in column order.
    ///
    /// ```
    /// # use sluice_guest_sdk::{testing::TestTable, Value};
    /// let batch = TestTable::new("items", &["id"]).insert(vec![Value::Int(1)]);
    /// assert_eq!(batch.change().row().values(), &[Value::Int(1)]);
    /// ```
    pub fn values(&self) -> &'a [Value] {
        self.values
    }
}
