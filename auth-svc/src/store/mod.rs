//! All of auth-svc's SQL that has moved out of the API layer so far (the rest is still inline in
//! `api/users.rs`, `api/access.rs` and `authn.rs`; see docs/architecture.md).

pub mod api_keys;
pub mod control;
pub mod mfa;
pub mod sessions;
pub mod users;
