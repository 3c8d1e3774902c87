//! The gRPC adapters of auth-svc, one file per tonic service: decode, authorize (`kit::authz`),
//! call the rules and the store, encode. (`AuthenticationService` is still in `crate::authn`.)

pub mod access;
pub mod sessions;
pub mod tenants;
pub mod users;
