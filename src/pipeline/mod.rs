//! The pipeline: joins source, rules and sink.

pub mod config;
