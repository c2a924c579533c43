//! The source stage: the replication connection, the pgoutput decoder and typed values.

pub mod values;
pub mod pgoutput;
