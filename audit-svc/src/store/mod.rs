//! All of audit-svc's SQL, one module per family of tenant tables: the log and its Merkle levels
//! (`log`), signed checkpoints (`checkpoints`), the outbox the sequencer drains (`outbox`),
//! retention (`retention`) and pseudonym keys (`pseudonyms`). Every function runs inside a
//! `TenantTx` and returns domain types, proto types or plain values; none decides a rule.

pub mod checkpoints;
pub mod log;
pub mod outbox;
pub mod retention;

use kit::ApiError;

use crate::domain::merkle::Hash;

/// A sequence number or count as a `bigint` (they never reach `i64::MAX`; a caller's larger bound
/// means "to the end").
fn bigint(n: u64) -> i64 {
    n.min(i64::MAX as u64) as i64
}

/// A stored hash (a leaf, a node, a chain link), which the schema keeps at 32 bytes.
fn hash(bytes: Vec<u8>) -> Result<Hash, ApiError> {
    bytes.try_into().map_err(|_| ApiError::internal(&"stored hash is not 32 bytes"))
}
