//! kit: the foundation every Strongroom service stands on.
//!
//! It owns configuration, mutual TLS and peer identities, end-user principals (JWT), tenancy-aware
//! PostgreSQL access (`TenantTx`), per-tenant migrations, the audit outbox, telemetry and the gRPC
//! server bootstrap. It must never hand out a tenant-scoped database connection without a
//! `TenantTx`, and never put a secret into a log, span or error.

pub mod access;
pub mod apikey;
pub mod authz;
pub mod bin;
pub mod client;
pub mod config;
pub mod datakey;
pub mod error;
pub mod export;
pub mod journal;
pub mod metrics;
pub mod migrate;
pub mod outbox;
pub mod pki;
pub mod principal;
pub mod redis;
pub mod revocation;
pub mod server;
pub mod signing;
pub mod telemetry;
pub mod tenancy;
pub mod time;
pub mod tls;

#[cfg(feature = "testing")]
pub mod localpg;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{ApiError, ErrorCode};
pub use tenancy::{Db, Tenant, TenantId, TenantSlug, TenantTx};
pub use tls::Identity;
