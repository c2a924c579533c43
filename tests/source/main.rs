//! Integration tests of the replication client and pgoutput decoder against a real PostgreSQL.

#[path = "../common/pg.rs"]
mod pg;

mod harness;
