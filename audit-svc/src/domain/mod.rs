//! Pure audit rules: RFC 9162 Merkle hashing and proofs, the hash chain, canonical entry bytes.

pub mod entry;
pub mod merkle;
pub mod note;
