//! rules stage.
