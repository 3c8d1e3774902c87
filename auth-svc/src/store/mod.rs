//! All of auth-svc's SQL that has moved out of the API layer so far (the rest is still inline in
//! `api/` and `authn.rs`; see docs/architecture.md).

pub mod control;
pub mod users;
