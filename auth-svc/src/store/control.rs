//! SQL of auth-svc's control-schema tables.

use kit::tenancy::db_error;
use kit::{ApiError, Db, TenantTx};

/// The published public keys.
pub async fn jwks(db: &Db) -> Result<Vec<(serde_json::Value, Option<uuid::Uuid>)>, ApiError> {
    sqlx::query_as(
        "SELECT public_jwk, tenant_id FROM control.signing_keys WHERE expires_at IS NULL OR expires_at > now() ORDER BY created_at",
    )
        .fetch_all(db.control_pool())
        .await
        .map_err(db_error)
}

/// Sets the status of the transaction's tenant (`active`, `suspended`), in the transaction that
/// records the change.
pub async fn set_tenant_status(tx: &mut TenantTx, status: &str) -> Result<(), ApiError> {
    let tenant = tx.tenant().id.0;
    tx.execute(sqlx::query("UPDATE control.tenants SET status = $2 WHERE id = $1").bind(tenant).bind(status)).await?;
    Ok(())
}

/// One round trip to the control database, its answer ignored: what a login of an unknown tenant
/// spends where a known one reads, so that the timing does not tell them apart.
pub async fn round_trip(db: &Db) {
    let _ = sqlx::query("SELECT 1").execute(db.control_pool()).await;
}
