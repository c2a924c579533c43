//! The source stage: the replication connection, the pgoutput decoder and typed values.
//!
//! [`ReplicationConnection`] speaks the streaming-replication protocol natively (tokio-postgres
//! has no CopyBoth support); [`ReplicationStream`] yields [`SourceEvent`]s decoded from pgoutput.

pub mod catalog;
mod error;
mod events;
mod keys;
pub mod pgoutput;
mod replication;
pub mod row_json;
pub mod rows_by_key;
mod slot;
mod slot_claim;
pub mod snapshot;
mod stream;
pub mod values;
mod wire;

pub use error::{ServerError, SourceError};
pub use events::{EventDecoder, SourceEvent};
pub use keys::KeyedRelations;
pub use replication::{ReplicationConnection, SlotInfo, SnapshotAction, StartOptions, SystemInfo};
pub use slot::{SlotState, lookup_slot};
pub use slot_claim::{ClaimError, claim_slot};
pub use stream::{Acker, ReplicationStream, StreamPositions};
