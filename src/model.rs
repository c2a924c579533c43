//! The data that flows through the pipeline: source → rules → sink.
//!
//! Every stage speaks these types, so none needs to know another's internals.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// A PostgreSQL write-ahead-log position.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Error for text that is not of the form `XXX/YYY`.
#[derive(Debug, thiserror::Error)]
#[error("invalid LSN {0:?}: expected the form 16/B374D848")]
pub struct LsnParseError(String);

impl FromStr for Lsn {
    type Err = LsnParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (hi, lo) = s
            .split_once('/')
            .ok_or_else(|| LsnParseError(s.to_owned()))?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| LsnParseError(s.to_owned()))?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| LsnParseError(s.to_owned()))?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

/// A typed column value. Mirrors the WIT `value` variant.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    /// A TOASTed value PostgreSQL did not send because it did not change.
    /// Never the same as `Null`.
    Unchanged,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    /// Exact decimal text.
    Numeric(String),
    Bytes(Vec<u8>),
    /// json, jsonb, arrays and composites as JSON text.
    Json(String),
    Date(String),
    Time(String),
    Timestamp(String),
    Timestamptz(String),
}

/// The kind of a row change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    Insert,
    Update,
    Delete,
}

impl Operation {
    /// synchro's `operation` column code: 1 insert, 2 update, 3 delete.
    pub fn code(self) -> i16 {
        match self {
            Operation::Insert => 1,
            Operation::Update => 2,
            Operation::Delete => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Insert => "insert",
            Operation::Update => "update",
            Operation::Delete => "delete",
        }
    }
}

/// REPLICA IDENTITY setting of a table, as pgoutput reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaIdentity {
    Default,
    Nothing,
    Full,
    Index,
}

/// One column of a table.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
    /// Part of the primary key (as the catalog says, whatever the replica identity). What the
    /// rules see as `column.key`, in the snapshot and the stream alike.
    pub key: bool,
}

/// A table's shape as of some point in the stream. Replaced, not mutated,
/// when the schema changes, so changes already in flight keep the shape they
/// were decoded with.
#[derive(Clone, Debug, PartialEq)]
pub struct TableSchema {
    /// Relation OID (0 where unknown, e.g. `sluice eval` input).
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub replica_identity: ReplicaIdentity,
    pub columns: Vec<Column>,
    /// Column indexes of the primary key, in key order (`PRIMARY KEY (member, org)` over columns
    /// `(org, member)` is `[1, 0]`). Empty where the key is not known: a Relation message alone
    /// does not say it, the pipeline reads it from the catalog.
    pub primary_key: Vec<usize>,
    /// Column indexes whose values an old-key tuple carries (the replica identity's columns:
    /// the flags of a Relation message, every column under FULL, none under NOTHING), in column
    /// order. A delete, or an update that changes the key, identifies its row from these alone.
    pub identity: Vec<usize>,
}

/// The `table_name` of a table in the sidecar tables: see [`TableSchema::qualified_name`].
pub fn qualified_name(schema: &str, name: &str) -> String {
    table_name(schema, name)
}

impl TableSchema {
    /// The table's `table_name` in the sidecar tables, and its name as the rules see it: see
    /// [`table_name`].
    pub fn qualified_name(&self) -> String {
        table_name(&self.schema, &self.name)
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The primary key's column indexes, in key order.
    pub fn key_indexes(&self) -> impl Iterator<Item = usize> + '_ {
        self.primary_key.iter().copied()
    }

    /// The same shape with `primary_key` (column indexes in key order) as its key, and the
    /// columns' `key` flags following it.
    pub fn with_primary_key(&self, primary_key: Vec<usize>) -> TableSchema {
        let mut shape = self.clone();
        for (i, column) in shape.columns.iter_mut().enumerate() {
            column.key = primary_key.contains(&i);
        }
        shape.primary_key = primary_key;
        shape
    }

    /// Why the stream cannot always tell which row a change touched, if it cannot: the table has
    /// no primary key, or its replica identity leaves a key column out of the old-key tuples that
    /// deletes (and key-changing updates) carry. `None` when every operation carries the key.
    pub fn key_gap(&self) -> Option<KeyGap> {
        if self.primary_key.is_empty() {
            return Some(KeyGap::NoPrimaryKey);
        }
        if self.replica_identity == ReplicaIdentity::Nothing {
            return Some(KeyGap::IdentityNothing);
        }
        let missing: Vec<String> = self
            .primary_key
            .iter()
            .filter(|i| !self.identity.contains(i))
            .map(|&i| self.columns[i].name.clone())
            .collect();
        if missing.is_empty() {
            None
        } else {
            Some(KeyGap::IdentityLacks(missing))
        }
    }
}

/// `name` for the `public` schema, `schema.name` otherwise: the form synchro's `table_name`
/// column uses. A part that contains `.` or `"` is written as PostgreSQL's `quote_ident` writes
/// it (in double quotes, inner quotes doubled), so that two tables never share a name: schema
/// `a.b` with table `c` is `"a.b".c`, schema `a` with table `b.c` is `a."b.c"`. Other names,
/// upper case and spaces included, are written as they are: a part without `.` or `"` cannot be
/// mistaken for two, and a quoted part is told apart by its leading quote.
pub fn table_name(schema: &str, name: &str) -> String {
    fn part(ident: &str) -> std::borrow::Cow<'_, str> {
        if ident.contains(['.', '"']) {
            format!("\"{}\"", ident.replace('"', "\"\"")).into()
        } else {
            ident.into()
        }
    }
    if schema == "public" || schema.is_empty() {
        part(name).into_owned()
    } else {
        format!("{}.{}", part(schema), part(name))
    }
}

/// A relation whose `table_name` changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableMove {
    pub oid: u32,
    pub from: String,
    pub to: String,
}

/// What the sink must do about relation names at one point of the stream: move the memberships
/// of renamed tables, and record the current name of each relation listed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelationNames {
    pub moves: Vec<TableMove>,
    /// (relation OID, `table_name`) to record; every move's new name is among them.
    pub names: Vec<(u32, String)>,
}

impl RelationNames {
    pub fn is_empty(&self) -> bool {
        self.moves.is_empty() && self.names.is_empty()
    }
}

/// What to do so that every relation in `current` (OID, name as of now) is stored under its
/// current name, given the `recorded` names: a move for each relation recorded under another
/// name, and a record for each one new or moved.
pub fn reconcile(
    current: &[(u32, String)],
    recorded: &rustc_hash::FxHashMap<u32, String>,
) -> RelationNames {
    let mut out = RelationNames::default();
    for (oid, name) in current {
        match recorded.get(oid) {
            Some(old) if old == name => {}
            Some(old) => {
                out.moves.push(TableMove {
                    oid: *oid,
                    from: old.clone(),
                    to: name.clone(),
                });
                out.names.push((*oid, name.clone()));
            }
            None => out.names.push((*oid, name.clone())),
        }
    }
    out
}

/// Why a table's changes cannot all be tied to a primary key (see [`TableSchema::key_gap`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyGap {
    NoPrimaryKey,
    IdentityNothing,
    /// Primary-key columns that the replica identity leaves out.
    IdentityLacks(Vec<String>),
}

/// One row change, decoded and typed.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub table: Arc<TableSchema>,
    pub op: Operation,
    /// Row after the change (insert, update).
    pub new: Option<Vec<Value>>,
    /// Row before the change where PostgreSQL sent one (update with key
    /// change or REPLICA IDENTITY FULL; delete). Non-key columns are `Null`
    /// when only the key was sent.
    pub old: Option<Vec<Value>>,
    /// LSN of the commit record of the transaction that holds this change
    /// (pgoutput Begin's `final_lsn`). Snapshot rows carry the slot's
    /// consistent point. The sink persists the Commit's *end* LSN, which the
    /// source reports separately.
    pub lsn: Lsn,
}

/// What the rules decided about one change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Drop,
    Keep(Vec<String>),
    Error(String),
}

/// PostgreSQL's name for a built-in type OID, used to tell rules what a
/// column is. Unknown OIDs (user types, enums, domains) are `unknown`.
pub fn type_name(oid: u32) -> &'static str {
    match oid {
        16 => "bool",
        17 => "bytea",
        18 => "char",
        19 => "name",
        20 => "int8",
        21 => "int2",
        23 => "int4",
        25 => "text",
        26 => "oid",
        114 => "json",
        700 => "float4",
        701 => "float8",
        1042 => "bpchar",
        1043 => "varchar",
        1082 => "date",
        1083 => "time",
        1114 => "timestamp",
        1184 => "timestamptz",
        1266 => "timetz",
        1700 => "numeric",
        2950 => "uuid",
        3802 => "jsonb",
        1000 => "_bool",
        1005 => "_int2",
        1007 => "_int4",
        1016 => "_int8",
        1009 => "_text",
        1015 => "_varchar",
        1021 => "_float4",
        1022 => "_float8",
        1231 => "_numeric",
        2951 => "_uuid",
        3807 => "_jsonb",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_through_text() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn.0, 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert!("nope".parse::<Lsn>().is_err());
    }

    #[test]
    fn table_names_quote_only_the_parts_that_could_be_misread() {
        assert_eq!(table_name("public", "items"), "items");
        assert_eq!(table_name("billing", "Invoices 2"), "billing.Invoices 2");
        assert_eq!(table_name("a.b", "c"), "\"a.b\".c");
        assert_eq!(table_name("a", "b.c"), "a.\"b.c\"");
        assert_eq!(table_name("public", "a.b"), "\"a.b\"");
        assert_eq!(table_name("a", "b"), "a.b");
        assert_eq!(table_name("q\"s", "t"), "\"q\"\"s\".t");
        assert_eq!(table_name("public", "\"x\""), "\"\"\"x\"\"\"");
    }

    #[test]
    fn only_renamed_relations_move_and_new_ones_are_recorded() {
        let recorded: rustc_hash::FxHashMap<u32, String> =
            [(1, "items".to_owned()), (2, "a".to_owned())]
                .into_iter()
                .collect();
        let current = vec![
            (1, "things".to_owned()),
            (2, "a".to_owned()),
            (3, "new".to_owned()),
        ];
        let r = reconcile(&current, &recorded);
        assert_eq!(
            r.moves,
            vec![TableMove {
                oid: 1,
                from: "items".into(),
                to: "things".into()
            }]
        );
        assert_eq!(r.names, vec![(1, "things".into()), (3, "new".into())]);
        assert!(reconcile(&[(2, "a".into())], &recorded).is_empty());
    }
}

/// How buckets flow along a [`Relation`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flow {
    /// The child row belongs to every bucket its parent row belongs to, besides the buckets its own
    /// outcome gives (synchro's child tables: an order line in its order's buckets).
    Inherit,
    /// The parent row belongs to every bucket its child rows' own outcomes give (a list shared with
    /// the user of each of its `list_members` rows).
    Share,
}

/// A foreign key a rules module follows: rows of `child` whose `columns` hold the primary key of a
/// `parent` row, in the parent's key order. Declared by the module's `init` (world
/// `sluice:rules@0.2.0`); the host resolves it, stores the link and cascades membership changes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Relation {
    /// Table name as rules see it: `order_details`, `billing.invoices`.
    pub child: String,
    /// The child's columns holding the parent's key, in the parent's primary key order.
    pub columns: Vec<String>,
    /// Table name as rules see it.
    pub parent: String,
    pub flow: Flow,
}

impl Relation {
    /// The stable name links are stored under: `order_details(order_id)->orders` for inherit,
    /// `list_members(list_id)=>lists` for share. A different declaration is a different relation.
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
}
