//! auth-svc's rules that need no I/O.

pub mod email;
pub mod input;
pub mod legal_holds;
pub mod login;
pub mod oauth;
pub mod policy;
pub mod privacy_requests;
pub mod retention;
