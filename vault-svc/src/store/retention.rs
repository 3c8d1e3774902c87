//! SQL of retention classes (`retention_classes`) and their period keys (`period_keys`, each
//! sealed by a tenant key; a destroyed one keeps its row without the sealed key), and of the
//! retention job's deletion of old idempotency records (`idempotency_keys`).

use chrono::{DateTime, Utc};
use kit::{ApiError, TenantTx};

use crate::domain::retention::{ClassName, Window};

/// A retention class, with how many of its period keys are live and destroyed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClassRow {
    pub name: String,
    pub retention_days: i32,
    pub period: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub live_keys: i64,
    pub destroyed_keys: i64,
}

/// A period key as its tenant key sealed it (`wrapped` is gone once destroyed).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PeriodKeyRow {
    pub id: i32,
    pub class: String,
    pub tenant_key_version: i32,
    pub wrapped: Option<Vec<u8>>,
}

const CLASS_COLUMNS: &str = "c.name, c.retention_days, c.period, c.created_at, c.updated_at, \
     (SELECT count(*) FROM period_keys p WHERE p.class = c.name AND p.wrapped IS NOT NULL) AS live_keys, \
     (SELECT count(*) FROM period_keys p WHERE p.class = c.name AND p.wrapped IS NULL) AS destroyed_keys";

/// The class `name`.
pub async fn class(tx: &mut TenantTx, name: &ClassName) -> Result<Option<ClassRow>, ApiError> {
    tx.optional(
        sqlx::query_as(&format!("SELECT {CLASS_COLUMNS} FROM retention_classes c WHERE c.name = $1"))
            .bind(name.as_str()),
    )
    .await
}

/// The period of class `name`.
pub async fn class_period(tx: &mut TenantTx, name: &ClassName) -> Result<Option<String>, ApiError> {
    tx.optional_scalar(sqlx::query_scalar("SELECT period FROM retention_classes WHERE name = $1").bind(name.as_str()))
        .await
}

/// The class `name`'s retention and period, locked against a concurrent change (a put waits for
/// the retention job, and the job for a put).
pub async fn lock_class(tx: &mut TenantTx, name: &ClassName) -> Result<Option<(i32, String)>, ApiError> {
    tx.optional(
        sqlx::query_as("SELECT retention_days, period FROM retention_classes WHERE name = $1 FOR UPDATE")
            .bind(name.as_str()),
    )
    .await
}

/// Up to `limit` classes after `after` in name order (byte order).
pub async fn classes_after(tx: &mut TenantTx, after: &str, limit: i64) -> Result<Vec<ClassRow>, ApiError> {
    tx.all(
        sqlx::query_as(&format!(
            "SELECT {CLASS_COLUMNS} FROM retention_classes c WHERE c.name COLLATE \"C\" > $1 \
             ORDER BY c.name COLLATE \"C\" LIMIT $2"
        ))
        .bind(after)
        .bind(limit),
    )
    .await
}

/// Creates class `name`.
pub async fn insert_class(
    tx: &mut TenantTx,
    name: &ClassName,
    retention_days: u32,
    period: &str,
) -> Result<bool, ApiError> {
    let inserted = tx
        .execute(
            sqlx::query(
                "INSERT INTO retention_classes (name, retention_days, period) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(name.as_str())
            .bind(retention_days as i32)
            .bind(period),
        )
        .await?;
    Ok(inserted == 1)
}

/// Sets class `name`'s retention.
pub async fn set_retention(tx: &mut TenantTx, name: &ClassName, retention_days: u32) -> Result<(), ApiError> {
    tx.execute(
        sqlx::query("UPDATE retention_classes SET retention_days = $2, updated_at = now() WHERE name = $1")
            .bind(name.as_str())
            .bind(retention_days as i32),
    )
    .await?;
    Ok(())
}

/// Every class's name and retention, locked for this transaction's share: the retention job
/// destroys by the retention it read, so a concurrent put must not change it under the job.
pub async fn lock_all_classes(tx: &mut TenantTx) -> Result<Vec<(String, i32)>, ApiError> {
    tx.all(sqlx::query_as("SELECT name, retention_days FROM retention_classes ORDER BY name FOR SHARE")).await
}

/// The key of `class` for period `label`.
pub async fn period_key_of(
    tx: &mut TenantTx,
    class: &ClassName,
    label: &str,
) -> Result<Option<PeriodKeyRow>, ApiError> {
    tx.optional(
        sqlx::query_as(
            "SELECT id, class, tenant_key_version, wrapped FROM period_keys WHERE class = $1 AND period = $2",
        )
        .bind(class.as_str())
        .bind(label),
    )
    .await
}

/// Period key number `id`.
pub async fn period_key(tx: &mut TenantTx, id: u32) -> Result<Option<PeriodKeyRow>, ApiError> {
    let Ok(id) = i32::try_from(id) else { return Ok(None) };
    tx.optional(sqlx::query_as("SELECT id, class, tenant_key_version, wrapped FROM period_keys WHERE id = $1").bind(id))
        .await
}

/// Reserves the key of `class` for `window` unless it exists (returns its number when this
/// transaction reserved it). The sealed key is bound to that number, so it is stored next, by
/// [`seal_period_key`], in the same transaction: no other transaction sees the reservation.
pub async fn reserve_period_key(
    tx: &mut TenantTx,
    class: &ClassName,
    window: &Window,
    tenant_key_version: u32,
) -> Result<Option<u32>, ApiError> {
    let id: Option<i32> = tx
        .optional_scalar(
            sqlx::query_scalar(
                "INSERT INTO period_keys (class, period, period_start, period_end, tenant_key_version, wrapped) \
                 VALUES ($1, $2, $3, $4, $5, '\\x'::bytea) ON CONFLICT DO NOTHING RETURNING id",
            )
            .bind(class.as_str())
            .bind(&window.label)
            .bind(window.start)
            .bind(window.end)
            .bind(tenant_key_version as i32),
        )
        .await?;
    Ok(id.map(|id| id as u32))
}

/// Stores reserved period key `id` sealed.
pub async fn seal_period_key(tx: &mut TenantTx, id: u32, sealed: &[u8]) -> Result<(), ApiError> {
    tx.execute(sqlx::query("UPDATE period_keys SET wrapped = $2 WHERE id = $1").bind(id as i32).bind(sealed)).await?;
    Ok(())
}

/// Destroys the live keys of `class` whose period ended at or before `ended_by`; returns how
/// many. A key another transaction destroys first is skipped once that one commits (the row's
/// lock, then `wrapped IS NOT NULL` again): each key is destroyed, and counted, once.
pub async fn destroy_period_keys(tx: &mut TenantTx, class: &str, ended_by: DateTime<Utc>) -> Result<u64, ApiError> {
    tx.execute(
        sqlx::query(
            "UPDATE period_keys SET wrapped = NULL, destroyed_at = now() \
             WHERE class = $1 AND wrapped IS NOT NULL AND period_end <= $2",
        )
        .bind(class)
        .bind(ended_by),
    )
    .await
}

/// Deletes up to `limit` idempotency records created before `before` (oldest first, by the index
/// of vault tenant migration 0008); returns how many. A record another transaction deletes first
/// is skipped once that one commits: each is deleted, and counted, once.
pub async fn delete_request_records(tx: &mut TenantTx, before: DateTime<Utc>, limit: i64) -> Result<u64, ApiError> {
    tx.execute(
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE request_id IN \
             (SELECT request_id FROM idempotency_keys WHERE created_at < $1 ORDER BY created_at LIMIT $2)",
        )
        .bind(before)
        .bind(limit),
    )
    .await
}

/// Whether the tenant is under an active tenant-wide legal hold, which defers every period key's
/// destruction. `legal_holds` is auth-svc's; vault-svc may read only these columns (auth tenant
/// migration 0012, a published contract), and row-level security keeps it to this tenant.
pub async fn tenant_held(tx: &mut TenantTx) -> Result<bool, ApiError> {
    tx.scalar(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM legal_holds WHERE scope = 'tenant' AND released_at IS NULL)",
    ))
    .await
}
