//! Pure vault rules: key material, the ciphertext envelope, associated data, secret paths. No I/O.

pub mod crypto;
pub mod envelope;
pub mod path;
