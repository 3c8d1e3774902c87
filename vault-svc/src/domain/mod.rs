//! Pure vault rules: key material, the ciphertext envelope, associated data, secret paths, signing
//! keys, key management requests, retention classes and their periods. No I/O.

pub mod crypto;
pub mod envelope;
pub mod keys;
pub mod path;
pub mod retention;
pub mod signing;
