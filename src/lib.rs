//! sluice: PostgreSQL change capture with WebAssembly bucket rules.
//!
//! Data flows one way, source → rules → sink, joined by the pipeline;
//! acknowledgements flow back from sink to source as LSNs.

pub mod cli;
pub mod error_text;
#[doc(hidden)]
pub mod fuzzing;
pub mod model;
pub mod pg;
pub mod pipeline;
pub mod rules;
pub mod sink;
pub mod source;
