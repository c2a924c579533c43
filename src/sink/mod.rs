//! sink stage.
