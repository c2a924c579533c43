//! Write [sluice](https://github.com/) bucket rules in Rust.
//!
//! A rule decides, for every row change that sluice reads from PostgreSQL,
//! whether the change is kept and which buckets (`user:42`, `org:7`, `global`)
//! the row belongs to. You implement [`Rule`], export it with
//! [`export_rule!`], and build the crate as a WebAssembly component:
//!
//! ```
//! use sluice_guest_sdk::{Change, Rule, Value};
//!
//! #[derive(Default)]
//! pub struct ByOwner;
//!
//! impl Rule for ByOwner {
//!     fn buckets(&self, change: &Change<'_>) -> Result<Vec<String>, String> {
//!         Ok(vec![match change.row().get("user_id") {
//!             Value::Text(id) if !id.is_empty() => format!("user:{id}"),
//!             Value::Int(id) => format!("user:{id}"),
//!             _ => "global".to_string(),
//!         }])
//!     }
//! }
//!
//! sluice_guest_sdk::export_rule!(ByOwner);
//! ```
//!
//! The crate must be a `cdylib` (for the Wasm build) and may also be an
//! `rlib` (so its rules can be unit-tested natively with `cargo test`, see
//! [`testing`]). Build it with
//! `cargo build --target wasm32-wasip2 --release` and load the resulting
//! `.wasm` file with `sluice check` / `sluice eval` / `sluice run`.
//!
//! Everything here also compiles for the host target: off Wasm,
//! [`export_rule!`] expands to nothing and [`log`] writes to stderr.

#![warn(missing_docs)]

mod change;
mod relation;
mod rule;
pub mod testing;

pub use change::{Change, Row};
pub use rule::{Rule, evaluate, evaluate_batch};

/// The bindings generated from the `sluice:rules` WIT world.
///
/// Rule authors do not need this module: [`export_rule!`] uses it. It is
/// public so that the macro can reach it from the author's crate.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "rules",
        pub_export_macro: true,
        default_bindings_module: "sluice_guest_sdk::bindings",
        additional_derives: [PartialEq],
    });
}

/// A column value, read from a [`Row`] with [`Row::get`].
///
/// `Unchanged` is a TOASTed value that PostgreSQL did not send because the
/// update did not touch it; it is never the same as `Null` (under
/// `REPLICA IDENTITY FULL` the host fills it in from the old row). Dates and times
/// are ISO-8601 text; `Numeric` is the exact decimal text; `Json` carries
/// json/jsonb, arrays and composites as JSON text.
///
/// ```
/// use sluice_guest_sdk::Value;
///
/// let id = Value::Int(42);
/// assert!(matches!(id, Value::Int(42)));
/// assert_ne!(Value::Unchanged, Value::Null);
/// ```
pub use bindings::sluice::rules::types::Value;

/// The kind of a change: insert, update or delete.
///
/// ```
/// use sluice_guest_sdk::Operation;
///
/// assert_ne!(Operation::Insert, Operation::Delete);
/// ```
pub use bindings::sluice::rules::types::Operation;

/// What a rule decided about one change: `Drop`, `Keep(bucket ids)` or
/// `Error(message)`.
///
/// ```
/// use sluice_guest_sdk::Outcome;
///
/// let kept = Outcome::Keep(vec!["user:u1".to_string()]);
/// assert_eq!(kept, Outcome::Keep(vec!["user:u1".into()]));
/// ```
pub use bindings::sluice::rules::types::Outcome;

/// One column of a table: its name, PostgreSQL type name and whether it is
/// part of the primary key (whatever the table's replica identity).
///
/// ```
/// use sluice_guest_sdk::Column;
///
/// let column = Column { name: "id".into(), type_name: "int8".into(), key: true };
/// assert!(column.key);
/// ```
pub use bindings::sluice::rules::types::Column;

/// A table touched by a batch: its name (schema-qualified where the schema
/// is not `public`; a part containing `.` or `"` double-quoted as
/// `quote_ident` does) and its columns in order.
///
/// ```
/// use sluice_guest_sdk::{Column, Table};
///
/// let table = Table { name: "items".into(), columns: vec![] };
/// assert_eq!(table.name, "items");
/// ```
pub use bindings::sluice::rules::types::Table;

/// A change in the host's wire form (positional values, table by index), as
/// [`evaluate_batch`] takes it. Rules read changes through [`Change`]; build
/// wire changes in tests with [`testing::TestTable`].
///
/// ```
/// use sluice_guest_sdk::{Operation, Value, WireChange};
///
/// let wire = WireChange { table: 0, op: Operation::Insert, new: Some(vec![Value::Int(1)]), old: None, lsn: 0 };
/// assert_eq!(wire.table, 0);
/// ```
pub use bindings::sluice::rules::types::Change as WireChange;

/// A foreign key along which bucket memberships flow between rows, declared
/// by [`Rule::relations`]. Build one with [`Relation::inherit`] or
/// [`Relation::share`]; see the [`relation`](crate::Relation::inherit)
/// constructors for the semantics.
///
/// ```
/// use sluice_guest_sdk::{Flow, Relation};
///
/// let lines = Relation::inherit("order_details", &["order_id"], "orders");
/// assert_eq!(lines.flow, Flow::Inherit);
/// assert_eq!(lines.name(), "order_details(order_id)->orders");
/// ```
pub use bindings::sluice::rules::types::Relation;

/// How buckets flow along a [`Relation`]: `Inherit` (child gets the parent's
/// buckets) or `Share` (parent gets the children's own buckets).
///
/// ```
/// use sluice_guest_sdk::{Flow, Relation};
///
/// assert_eq!(Relation::share("list_members", &["list_id"], "lists").flow, Flow::Share);
/// ```
pub use bindings::sluice::rules::types::Flow;

/// Severity of a [`log`] line.
///
/// ```
/// use sluice_guest_sdk::Level;
///
/// sluice_guest_sdk::log(Level::Info, "rule loaded");
/// ```
pub use bindings::sluice::rules::types::Level;

/// Writes a line to the sluice host's log, tagged with this module's
/// version. The host may rate-limit it. Off Wasm (native unit tests) the line
/// goes to stderr.
///
/// ```
/// sluice_guest_sdk::log(sluice_guest_sdk::Level::Warn, "tenant column missing");
/// ```
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    bindings::sluice::rules::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Exports a [`Rule`] as the module's implementation of the `sluice:rules`
/// world. Use it once per crate, at the top level.
///
/// On Wasm it generates the component exports of world
/// `sluice:rules/rules@0.2.0`: `init` builds the rule with `Default`, calls
/// [`Rule::init`] with the user's configuration text and returns
/// [`Rule::relations`] as the module's declarations;
/// `evaluate` runs [`evaluate`] on every change of a batch. It also routes
/// panic messages to the host log, so that the host can say why a change
/// trapped. Off Wasm it expands to nothing, so the crate still builds and
/// tests natively.
///
/// ```
/// use sluice_guest_sdk::{Change, Rule};
///
/// #[derive(Default)]
/// pub struct Everything;
///
/// impl Rule for Everything {
///     fn buckets(&self, _change: &Change<'_>) -> Result<Vec<String>, String> {
///         Ok(vec!["global".into()])
///     }
/// }
///
/// sluice_guest_sdk::export_rule!(Everything);
/// ```
#[macro_export]
macro_rules! export_rule {
    ($rule:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __SluiceRuleExport;

            impl $crate::bindings::Guest for __SluiceRuleExport {
                fn init(
                    config: ::std::string::String,
                ) -> ::core::result::Result<
                    $crate::bindings::sluice::rules::types::Declarations,
                    ::std::string::String,
                > {
                    $crate::__private::init::<$rule>(&config)
                }

                fn evaluate(
                    tables: ::std::vec::Vec<$crate::Table>,
                    changes: ::std::vec::Vec<$crate::bindings::sluice::rules::types::Change>,
                ) -> ::std::vec::Vec<$crate::Outcome> {
                    $crate::__private::evaluate::<$rule>(&tables, &changes)
                }
            }

    $crate::bindings::export!(__SluiceRuleExport with_types_in $crate::bindings);
        };
    };
}

/// Support for [`export_rule!`]; not part of the API.
#[doc(hidden)]
pub mod __private {
    use std::any::Any;
    use std::cell::RefCell;

    use crate::bindings::sluice::rules::types::{Change as WireChange, Declarations};
    use crate::{Level, Outcome, Rule, Table};

    thread_local! {
        // A component instance is single-threaded; the rule lives for the
        // instance's lifetime, set once by `init`.
        static RULE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    }

    pub fn init<R: Rule>(config: &str) -> Result<Declarations, String> {
        // With panic=abort a panic traps the instance; logging the message
        // first lets the host report why the change failed.
        std::panic::set_hook(Box::new(|info| {
            let message = info.payload_as_str().unwrap_or("(no message)");
            let line = match info.location() {
                Some(at) => format!("rule panicked at {}:{}: {message}", at.file(), at.line()),
                None => format!("rule panicked: {message}"),
            };
            crate::log(Level::Error, &line);
        }));
        let mut rule = R::default();
        rule.init(config)?;
        let relations = rule.relations();
        RULE.with(|slot| *slot.borrow_mut() = Some(Box::new(rule)));
        Ok(Declarations { relations })
    }

    pub fn evaluate<R: Rule>(tables: &[Table], changes: &[WireChange]) -> Vec<Outcome> {
        RULE.with(|slot| {
            let slot = slot.borrow();
            match slot.as_ref().and_then(|rule| rule.downcast_ref::<R>()) {
                Some(rule) => crate::evaluate_batch(rule, tables, changes),
                None => changes
                    .iter()
                    .map(|_| Outcome::Error("the host called evaluate before init".into()))
                    .collect(),
            }
        })
    }
}
