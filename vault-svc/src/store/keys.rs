//! SQL of the keyring's tables: `tenant_keys` (each version of the tenant key, wrapped by a master
//! key) and `subject_keys` (each version of a data subject's key, sealed by a tenant key), and the
//! notification that tells every replica to drop a tenant's cached keys.

use chrono::{DateTime, Utc};
use kit::{ApiError, TenantTx};

/// A version of the tenant key, as listed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantKeyRow {
    pub version: i32,
    pub state: String,
    pub master_key_id: String,
    pub created_at: DateTime<Utc>,
    pub destroyed_at: Option<DateTime<Utc>>,
}

/// A version of the tenant key as the master key wrapped it (`wrapped` is gone once destroyed).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WrappedTenantKey {
    pub version: i32,
    pub state: String,
    pub master_key_id: String,
    pub wrapped: Option<Vec<u8>>,
}

/// A version of a data subject's key as its tenant key sealed it (`wrapped` is gone once shredded).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SubjectKeyRow {
    pub version: i32,
    pub tenant_key_version: i32,
    pub wrapped: Option<Vec<u8>>,
}

/// Every version of the tenant key, oldest first.
pub async fn tenant_keys(tx: &mut TenantTx) -> Result<Vec<TenantKeyRow>, ApiError> {
    tx.all(sqlx::query_as(
        "SELECT version, state, master_key_id, created_at, destroyed_at FROM tenant_keys ORDER BY version",
    ))
    .await
}

/// The active version of the tenant key, and whether any version exists. One statement, one
/// snapshot: "no active version" and "no version at all" are told apart consistently even while
/// another transaction creates the first key.
pub async fn active_tenant_key_version(tx: &mut TenantTx) -> Result<(Option<u32>, bool), ApiError> {
    let (active, any): (Option<i32>, i64) = tx
        .one(sqlx::query_as("SELECT max(version) FILTER (WHERE state = 'active'), count(*) FROM tenant_keys"))
        .await?;
    Ok((active.map(|v| v as u32), any > 0))
}

/// The active version, locked for this transaction when `lock` (rotations serialize here).
pub async fn active_version(tx: &mut TenantTx, lock: bool) -> Result<Option<u32>, ApiError> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let version: Option<i32> = tx
        .optional_scalar(sqlx::query_scalar(&format!("SELECT version FROM tenant_keys WHERE state = 'active'{lock}")))
        .await?;
    Ok(version.map(|v| v as u32))
}

/// Stores version 1 of the tenant key unless a version 1 exists; returns whether it was stored.
pub async fn insert_first_tenant_key(tx: &mut TenantTx, master_key_id: &str, wrapped: &[u8]) -> Result<bool, ApiError> {
    let inserted = tx
        .execute(
            sqlx::query(
                "INSERT INTO tenant_keys (version, state, master_key_id, wrapped) VALUES (1, 'active', $1, $2) \
         ON CONFLICT DO NOTHING",
            )
            .bind(master_key_id)
            .bind(wrapped),
        )
        .await?;
    Ok(inserted == 1)
}

/// Makes `current` decrypt-only and stores `next` as the active version.
pub async fn rotate_tenant_key(
    tx: &mut TenantTx,
    current: u32,
    next: u32,
    master_key_id: &str,
    wrapped: &[u8],
) -> Result<(), ApiError> {
    tx.execute(
        sqlx::query("UPDATE tenant_keys SET state = 'decrypt_only', retired_at = now() WHERE version = $1")
            .bind(current as i32),
    )
    .await?;
    tx.execute(
        sqlx::query("INSERT INTO tenant_keys (version, state, master_key_id, wrapped) VALUES ($1, 'active', $2, $3)")
            .bind(next as i32)
            .bind(master_key_id)
            .bind(wrapped),
    )
    .await?;
    Ok(())
}

/// Version `version` of the tenant key.
pub async fn wrapped_tenant_key(tx: &mut TenantTx, version: u32) -> Result<Option<WrappedTenantKey>, ApiError> {
    tx.optional(
        sqlx::query_as("SELECT version, state, master_key_id, wrapped FROM tenant_keys WHERE version = $1")
            .bind(version as i32),
    )
    .await
}

/// The live versions wrapped by another master key than `master_key_id`, locked, oldest first.
pub async fn lock_wrapped_by_other_master(
    tx: &mut TenantTx,
    master_key_id: &str,
) -> Result<Vec<WrappedTenantKey>, ApiError> {
    tx.all(
        sqlx::query_as(
            "SELECT version, state, master_key_id, wrapped FROM tenant_keys \
         WHERE wrapped IS NOT NULL AND master_key_id <> $1 ORDER BY version FOR UPDATE",
        )
        .bind(master_key_id),
    )
    .await
}

/// Stores version `version` wrapped again, by master key `master_key_id`.
pub async fn set_wrapped(tx: &mut TenantTx, version: u32, wrapped: &[u8], master_key_id: &str) -> Result<(), ApiError> {
    tx.execute(
        sqlx::query("UPDATE tenant_keys SET wrapped = $2, master_key_id = $3 WHERE version = $1")
            .bind(version as i32)
            .bind(wrapped)
            .bind(master_key_id),
    )
    .await?;
    Ok(())
}

/// Destroys the decrypt-only tenant key versions below `active`; returns their versions.
pub async fn retire_tenant_keys_below(tx: &mut TenantTx, active: u32) -> Result<Vec<i32>, ApiError> {
    tx.scalars(
        sqlx::query_scalar(
            "UPDATE tenant_keys SET state = 'destroyed', wrapped = NULL, destroyed_at = now() \
         WHERE state = 'decrypt_only' AND version < $1 RETURNING version",
        )
        .bind(active as i32),
    )
    .await
}

/// Crypto-shreds every version of the tenant key; returns how many were live.
pub async fn destroy_tenant_keys(tx: &mut TenantTx) -> Result<u64, ApiError> {
    tx.execute(sqlx::query(
        "UPDATE tenant_keys SET state = 'destroyed', wrapped = NULL, destroyed_at = now() WHERE state <> 'destroyed'",
    ))
    .await
}

/// Tells every replica (after commit) to forget the tenant's cached keys.
pub async fn notify_key_change(tx: &mut TenantTx) -> Result<(), ApiError> {
    let tenant = tx.tenant().id.0.to_string();
    tx.execute(sqlx::query("SELECT pg_notify($1, $2)").bind(kit::tenancy::KEY_INVALIDATION_CHANNEL).bind(tenant))
        .await?;
    Ok(())
}

/// The subject's latest key version.
pub async fn latest_subject_key(tx: &mut TenantTx, subject: &str) -> Result<Option<SubjectKeyRow>, ApiError> {
    tx.optional(sqlx::query_as(
        "SELECT version, tenant_key_version, wrapped FROM subject_keys WHERE subject = $1 ORDER BY version DESC LIMIT 1",
    )
    .bind(subject)).await
}

/// Version `version` of the subject's key.
pub async fn subject_key(tx: &mut TenantTx, subject: &str, version: u32) -> Result<Option<SubjectKeyRow>, ApiError> {
    tx.optional(
        sqlx::query_as(
            "SELECT version, tenant_key_version, wrapped FROM subject_keys WHERE subject = $1 AND version = $2",
        )
        .bind(subject)
        .bind(version as i32),
    )
    .await
}

/// Stores version 1 of the subject's key unless one exists; returns whether it was stored.
pub async fn insert_first_subject_key(
    tx: &mut TenantTx,
    subject: &str,
    tenant_key_version: u32,
    sealed: &[u8],
) -> Result<bool, ApiError> {
    let inserted = tx.execute(sqlx::query(
        "INSERT INTO subject_keys (subject, version, state, tenant_key_version, wrapped) VALUES ($1, 1, 'active', $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(subject)
    .bind(tenant_key_version as i32)
    .bind(sealed)).await?;
    Ok(inserted == 1)
}

/// A version of a data subject's key, as a subject export lists it (never its material).
#[derive(Debug, sqlx::FromRow)]
pub struct SubjectKeyVersionRow {
    pub version: i32,
    pub state: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub destroyed_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Every version of `subject`'s key, oldest first.
pub async fn subject_key_versions(tx: &mut TenantTx, subject: &str) -> Result<Vec<SubjectKeyVersionRow>, ApiError> {
    tx.all(
        sqlx::query_as(
            "SELECT version, state, created_at, destroyed_at FROM subject_keys WHERE subject = $1 ORDER BY version",
        )
        .bind(subject),
    )
    .await
}

/// Crypto-shreds every version of the key of the data subject whose id has the hex SHA-256
/// `subject_sha256` (as the erasure journal names it); returns how many were live.
pub async fn destroy_subject_keys_by_digest(tx: &mut TenantTx, subject_sha256: &str) -> Result<u64, ApiError> {
    tx.execute(
        sqlx::query(
            "UPDATE subject_keys SET state = 'destroyed', wrapped = NULL, destroyed_at = now() \
         WHERE encode(sha256(convert_to(subject, 'UTF8')), 'hex') = $1 AND state <> 'destroyed'",
        )
        .bind(subject_sha256),
    )
    .await
}

/// Crypto-shreds every version of a data subject's key; returns how many were live.
pub async fn destroy_subject_keys(tx: &mut TenantTx, subject: &str) -> Result<u64, ApiError> {
    tx.execute(
        sqlx::query(
            "UPDATE subject_keys SET state = 'destroyed', wrapped = NULL, destroyed_at = now() \
         WHERE subject = $1 AND state <> 'destroyed'",
        )
        .bind(subject),
    )
    .await
}
