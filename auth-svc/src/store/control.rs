//! SQL of auth-svc's control-schema tables.

use kit::tenancy::db_error;
use kit::{ApiError, Db};

/// The published public keys.
pub async fn jwks(db: &Db) -> Result<Vec<(serde_json::Value, Option<uuid::Uuid>)>, ApiError> {
    sqlx::query_as(
        "SELECT public_jwk, tenant_id FROM control.signing_keys WHERE expires_at IS NULL OR expires_at > now() ORDER BY created_at",
    )
        .fetch_all(db.control_pool())
        .await
        .map_err(db_error)
}
