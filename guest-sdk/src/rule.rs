//! The trait a rule implements, and how a batch is run through it.

use crate::bindings::sluice::rules::types::Change as WireChange;
use crate::{Change, Outcome, Relation, Table};

/// A bucket rule.
///
/// sluice builds the rule once per module instance with `Default`, calls
/// [`Rule::init`] with the user's configuration, then for every change calls
/// [`Rule::filter`] and, if it keeps the change, [`Rule::buckets`].
///
/// A rule must be a pure function of its configuration and its input: the
/// host grants no clock, randomness, filesystem or network, so that replays
/// and re-bucketing give the same answers.
///
/// ```
/// use sluice_guest_sdk::{Change, Rule, Value};
///
/// /// Drops soft-deleted rows; everything else goes to `global`.
/// #[derive(Default)]
/// struct LiveRows;
///
/// impl Rule for LiveRows {
///     fn filter(&self, change: &Change<'_>) -> bool {
///         matches!(change.row().get("deleted_at"), Value::Null)
///     }
///
///     fn buckets(&self, _change: &Change<'_>) -> Result<Vec<String>, String> {
///         Ok(vec!["global".into()])
///     }
/// }
/// ```
pub trait Rule: Default + 'static {
    /// Reads the user's rule configuration (the text of the file given with
    /// `--rules-config`, empty when none). An error rejects this module
    /// version: sluice keeps running the previous one and reports the
    /// message. The default accepts any configuration.
    ///
    /// ```
    /// use sluice_guest_sdk::{Change, Rule};
    ///
    /// #[derive(Default)]
    /// struct Prefixed { prefix: String }
    ///
    /// impl Rule for Prefixed {
    ///     fn init(&mut self, config: &str) -> Result<(), String> {
    ///         if config.trim().is_empty() {
    ///             return Err("config must be the bucket prefix".into());
    ///         }
    ///         self.prefix = config.trim().to_string();
    ///         Ok(())
    ///     }
    ///     fn buckets(&self, _change: &Change<'_>) -> Result<Vec<String>, String> {
    ///         Ok(vec![self.prefix.clone()])
    ///     }
    /// }
    ///
    /// let mut rule = Prefixed::default();
    /// assert!(rule.init("").is_err());
    /// assert!(rule.init("tenant").is_ok());
    /// ```
    fn init(&mut self, config: &str) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// Whether the change is kept. A dropped change belongs to no bucket
    /// (sluice removes the row from the buckets it was in). Keeps everything
    /// by default.
    ///
    /// ```
    /// use sluice_guest_sdk::{Change, Operation, Rule};
    ///
    /// #[derive(Default)]
    /// struct InsertsOnly;
    ///
    /// impl Rule for InsertsOnly {
    ///     fn filter(&self, change: &Change<'_>) -> bool {
    ///         change.op() == Operation::Insert
    ///     }
    ///     fn buckets(&self, _change: &Change<'_>) -> Result<Vec<String>, String> {
    ///         Ok(vec!["global".into()])
    ///     }
    /// }
    /// ```
    fn filter(&self, change: &Change<'_>) -> bool {
        let _ = change;
        true
    }

    /// The bucket ids the row belongs to. Each must be non-empty and free of
    /// control characters, format characters (zero-width and bidi characters,
    /// U+FEFF, the soft hyphen) and U+2028/U+2029, and at most 255 bytes once
    /// the host has normalised it to NFC; the host removes duplicates (after
    /// NFC) and caps how many one change may have (64 by default). An `Err` becomes
    /// this change's error outcome, handled by sluice's failure policy
    /// without affecting other changes.
    ///
    /// ```
    /// use sluice_guest_sdk::{Change, Rule, Value};
    ///
    /// #[derive(Default)]
    /// struct ByTeam;
    ///
    /// impl Rule for ByTeam {
    ///     fn buckets(&self, change: &Change<'_>) -> Result<Vec<String>, String> {
    ///         match change.row().get("team_id") {
    ///             Value::Int(team) => Ok(vec![format!("team:{team}")]),
    ///             other => Err(format!("team_id must be an integer, got {other:?}")),
    ///         }
    ///     }
    /// }
    /// ```
    fn buckets(&self, change: &Change<'_>) -> Result<Vec<String>, String>;

    /// The foreign keys along which memberships flow between rows, asked
    /// once, right after [`Rule::init`] (so they may depend on the
    /// configuration). None by default: each row is in the buckets its own
    /// outcome gives.
    ///
    /// With relations, what [`Rule::filter`] and [`Rule::buckets`] decide is
    /// a row's *own* outcome, from that row alone; sluice adds what flows
    /// along the relations and keeps it current:
    ///
    /// - own(x): `buckets` for row x's latest change (possibly empty); a
    ///   dropped, deleted or soft-deleted row is *excluded*.
    /// - total(x), the buckets x is in: nothing if x is excluded or absent;
    ///   otherwise own(x), plus total(p) of the parent row p of each
    ///   [`Relation::inherit`] from x's table (nothing when one of its
    ///   columns is NULL or p does not exist), plus own(c) of each
    ///   non-excluded child row c pointing at x through a
    ///   [`Relation::share`] to x's table.
    ///
    /// sluice never reads a dependant row again to move it: a rule cannot
    /// look at related rows, so a cascade needs only the stored outcomes and
    /// links, and the answer depends only on the changes applied so far.
    /// [`testing::Memberships`](crate::testing::Memberships) computes the
    /// same thing natively, for unit tests.
    ///
    /// ```
    /// use sluice_guest_sdk::{Change, Relation, Rule, Value};
    ///
    /// /// A list is in its owner's bucket and each member's; members and
    /// /// items are in their list's.
    /// #[derive(Default)]
    /// struct SharedLists;
    ///
    /// impl Rule for SharedLists {
    ///     fn buckets(&self, change: &Change<'_>) -> Result<Vec<String>, String> {
    ///         let row = change.row();
    ///         Ok(match (change.table_name(), row.get("owner_id"), row.get("user_id")) {
    ///             ("lists", Value::Text(owner), _) => vec![format!("user:{owner}")],
    ///             ("list_members", _, Value::Text(user)) => vec![format!("user:{user}")],
    ///             _ => vec![],
    ///         })
    ///     }
    ///
    ///     fn relations(&self) -> Vec<Relation> {
    ///         vec![
    ///             Relation::share("list_members", &["list_id"], "lists"),
    ///             Relation::inherit("list_members", &["list_id"], "lists"),
    ///             Relation::inherit("items", &["list_id"], "lists"),
    ///         ]
    ///     }
    /// }
    /// assert_eq!(SharedLists.relations().len(), 3);
    /// ```
    fn relations(&self) -> Vec<Relation> {
        Vec::new()
    }
}

/// Runs one change through a rule exactly as the exported module does:
/// [`Rule::filter`], then [`Rule::buckets`].
///
/// ```
/// use sluice_guest_sdk::testing::TestTable;
/// use sluice_guest_sdk::{evaluate, Change, Outcome, Rule, Value};
///
/// #[derive(Default)]
/// struct Global;
/// impl Rule for Global {
///     fn buckets(&self, _change: &Change<'_>) -> Result<Vec<String>, String> {
///         Ok(vec!["global".into()])
///     }
/// }
///
/// let batch = TestTable::new("items", &["id"]).insert(vec![Value::Int(1)]);
/// assert_eq!(evaluate(&Global, &batch.change()), Outcome::Keep(vec!["global".into()]));
/// ```
pub fn evaluate<R: Rule>(rule: &R, change: &Change<'_>) -> Outcome {
    if !rule.filter(change) {
        return Outcome::Drop;
    }
    match rule.buckets(change) {
        Ok(buckets) => Outcome::Keep(buckets),
        Err(message) => Outcome::Error(message),
    }
}

/// Runs a whole batch (as the host sends it: tables once, rows positional)
/// through a rule, one outcome per change, in order. This is what the
/// exported `evaluate` function does; native tests and benchmarks can call
/// it directly.
///
/// ```
/// use sluice_guest_sdk::testing::TestTable;
/// use sluice_guest_sdk::{evaluate_batch, Change, Outcome, Rule, Value};
///
/// #[derive(Default)]
/// struct Global;
/// impl Rule for Global {
///     fn buckets(&self, _change: &Change<'_>) -> Result<Vec<String>, String> {
///         Ok(vec!["global".into()])
///     }
/// }
///
/// let batch = TestTable::new("items", &["id"]).insert(vec![Value::Int(1)]);
/// let outcomes = evaluate_batch(&Global, batch.tables(), batch.changes());
/// assert_eq!(outcomes, vec![Outcome::Keep(vec!["global".into()])]);
/// ```
pub fn evaluate_batch<R: Rule>(rule: &R, tables: &[Table], changes: &[WireChange]) -> Vec<Outcome> {
    changes
        .iter()
        .map(|wire| match Change::from_wire(tables, wire) {
            Some(change) => evaluate(rule, &change),
            None => Outcome::Error(format!(
                "change refers to table #{} but the batch has {} tables",
                wire.table,
                tables.len()
            )),
        })
        .collect()
}
