//! All of auth-svc's SQL, one module per table or flow; the rest of the crate holds none. Tenant
//! statements run inside the caller's `TenantTx`; control-schema statements that concern no one
//! tenant (`control.rs`, `revocations.rs`) take the `Db`. The rules that decide what to run stay
//! out of here: `rbac.rs`, `tokens.rs`, `housekeeping.rs`, `revocations.rs` and the API layer.

pub mod api_keys;
pub mod appeals;
pub mod control;
pub mod email_index;
pub mod groups;
pub mod housekeeping;
pub mod legal_holds;
pub mod login;
pub mod mfa;
pub mod oauth_clients;
pub mod passkeys;
pub mod policy;
pub mod privacy_requests;
pub mod retention;
pub mod revocations;
pub mod roles;
pub mod sealing;
pub mod sessions;
pub mod signing_keys;
pub mod terminations;
pub mod users;

use kit::tenancy::db_error;
use kit::{ApiError, TenantTx};

use crate::error::AuthError;

/// A foreign-key violation as `missing` (the row a statement refers to does not exist), any other
/// database error as `db_error` does.
fn missing_reference(e: sqlx::Error, missing: AuthError) -> ApiError {
    match &e {
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => missing.into(),
        _ => db_error(e),
    }
}

/// The rows `sql` (whose `$1` is a user id) selects as one JSON object each, for a user's data
/// export.
async fn json_rows(tx: &mut TenantTx, sql: &str, user: uuid::Uuid) -> Result<Vec<serde_json::Value>, ApiError> {
    tx.scalars(sqlx::query_scalar(sql).bind(user)).await
}
