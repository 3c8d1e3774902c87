//! The cross-service tests, one test binary (linking all five services once, not once per file):
//! each module boots what it needs of the constellation — real servers on loopback ports over real
//! mTLS, real PostgreSQL, Redis, SoftHSM2 and Chromium — and attacks or exercises one area.
//! nextest runs every test in a process of its own, so tests share no global state.

mod audit;
mod audit_durability;
mod audit_ingest;
mod backups;
mod binaries;
mod browser;
mod erasure_journal;
mod gateway_http;
mod hosted_login;
mod identity;
mod identity_http;
mod jwt;
mod ledger;
mod legal_holds;
mod lifecycle;
mod mtls;
mod oauth_clients;
mod oauth_flow;
mod observability;
mod passkeys;
mod personal_data;
mod privacy_execution;
mod privacy_requests;
mod retention;
mod signals;
mod tenancy;
mod tenant_termination;
mod tracing;
mod vault;
mod vault_keys;
mod vault_retention;
