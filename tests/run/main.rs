//! End-to-end tests of `sluice run` against a real PostgreSQL: snapshot, stream, rules and the
//! atomic write of changelog, edges and LSN.

#[path = "../common/go.rs"]
mod go;
#[path = "../common/pg.rs"]
mod pg;
#[path = "../common/wasm.rs"]
mod wasm;

mod support;

mod admin;
mod checksum;
mod conformance;
mod crash;
mod errors;
mod failures;
mod identity;
mod join;
mod names;
mod observability;
mod operations;
mod operator;
mod prerequisites;
mod preview;
mod publication;
mod readme;
mod record_ids;
mod related;
mod reload;
mod reload_file;
mod semantics;
mod snapshot;
mod standby;
mod synchro_keys;
mod synchro_schema;
mod vanished;
