//! SQL of tenant terminations and their export bundles (`control.tenant_terminations`,
//! `control.tenant_export_parts`, `control.tenant_export_files`; see `kit::export`).

use kit::tenancy::db_error;
use kit::{ApiError, Db, TenantTx};
use uuid::Uuid;

/// A termination as recorded.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Termination {
    pub recipient: String,
    pub reason: String,
    pub terminated_by: String,
    pub terminated_at: chrono::DateTime<chrono::Utc>,
    pub export_until: chrono::DateTime<chrono::Utc>,
    pub manifest_sha256: Option<String>,
    pub exported_at: Option<chrono::DateTime<chrono::Utc>>,
    pub fetched_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// One part's progress.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Part {
    pub part: String,
    pub rows_done: i64,
    pub rows_total: Option<i64>,
    pub files: i32,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub completed_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Flips the transaction's tenant to `terminated` and records the termination with one pending
/// part per service; returns the end of its export window. None when the tenant was terminated
/// meanwhile (nothing written).
pub async fn terminate(
    tx: &mut TenantTx,
    recipient: &str,
    reason: &str,
    by: &str,
    window_days: u32,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    let tenant = tx.tenant().clone();
    let flipped = tx
        .execute(
            sqlx::query(
                "UPDATE control.tenants SET status = 'terminated', terminated_at = now()
                 WHERE id = $1 AND status <> 'terminated'",
            )
            .bind(tenant.id.0),
        )
        .await?;
    if flipped == 0 {
        return Ok(None);
    }
    let export_until: chrono::DateTime<chrono::Utc> = tx
        .scalar(
            sqlx::query_scalar(
                "INSERT INTO control.tenant_terminations (tenant_id, slug, recipient, reason, terminated_by, export_until)
                 VALUES ($1, $2, $3, $4, $5, now() + make_interval(days => $6)) RETURNING export_until",
            )
            .bind(tenant.id.0)
            .bind(tenant.slug.as_str())
            .bind(recipient)
            .bind(reason)
            .bind(by)
            .bind(i32::try_from(window_days).unwrap_or(i32::MAX)),
        )
        .await?;
    tx.execute(
        sqlx::query("INSERT INTO control.tenant_export_parts (tenant_id, part) SELECT $1, unnest($2::text[])")
            .bind(tenant.id.0)
            .bind(kit::export::PARTS.map(str::to_owned).to_vec()),
    )
    .await?;
    Ok(Some(export_until))
}

/// The termination of `tenant_id` with its parts, if it is terminated.
pub async fn get(db: &Db, tenant_id: Uuid) -> Result<Option<(Termination, Vec<Part>)>, ApiError> {
    let termination: Option<Termination> = sqlx::query_as(
        "SELECT recipient, reason, terminated_by, terminated_at, export_until, manifest_sha256, exported_at, fetched_at
         FROM control.tenant_terminations WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_optional(db.control_pool())
    .await
    .map_err(db_error)?;
    let Some(termination) = termination else { return Ok(None) };
    let parts = sqlx::query_as(
        "SELECT part, rows_done, rows_total, files, started_at, completed_at FROM control.tenant_export_parts
         WHERE tenant_id = $1 ORDER BY array_position(ARRAY['auth', 'vault', 'audit', 'ledger'], part)",
    )
    .bind(tenant_id)
    .fetch_all(db.control_pool())
    .await
    .map_err(db_error)?;
    Ok(Some((termination, parts)))
}

/// The signed manifest (canonical text, signature, SHA-256), once audit-svc signed it.
pub async fn manifest(db: &Db, tenant_id: Uuid) -> Result<Option<(String, String, String)>, ApiError> {
    sqlx::query_as(
        "SELECT manifest, manifest_signature, manifest_sha256 FROM control.tenant_terminations
         WHERE tenant_id = $1 AND manifest IS NOT NULL",
    )
    .bind(tenant_id)
    .fetch_optional(db.control_pool())
    .await
    .map_err(db_error)
}

/// One stored age file of the bundle.
pub async fn file_data(db: &Db, tenant_id: Uuid, part: &str, seq: i32) -> Result<Vec<u8>, ApiError> {
    sqlx::query_scalar("SELECT data FROM control.tenant_export_files WHERE tenant_id = $1 AND part = $2 AND seq = $3")
        .bind(tenant_id)
        .bind(part)
        .bind(seq)
        .fetch_one(db.control_pool())
        .await
        .map_err(db_error)
}

/// Notes the first complete fetch of the bundle.
pub async fn mark_fetched(db: &Db, tenant_id: Uuid) -> Result<(), ApiError> {
    sqlx::query(
        "UPDATE control.tenant_terminations SET fetched_at = now() WHERE tenant_id = $1 AND fetched_at IS NULL",
    )
    .bind(tenant_id)
    .execute(db.control_pool())
    .await
    .map_err(db_error)?;
    Ok(())
}
