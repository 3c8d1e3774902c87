//! SQL of workload signing keys (`signing_keys`): each version's public half in clear and its
//! private half sealed by a tenant key.

use kit::tenancy::db_error;
use kit::{ApiError, TenantTx};

/// The active version of a signing key, its private half sealed under tenant key
/// `tenant_key_version`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SealedSigningKey {
    pub version: i32,
    pub tenant_key_version: i32,
    pub wrapped_private: Vec<u8>,
}

/// A version of a signing key being created.
#[derive(Debug)]
pub struct NewSigningKey<'a> {
    pub name: &'a str,
    pub version: u32,
    pub public_key: &'a [u8],
    pub tenant_key_version: u32,
    pub sealed_private: &'a [u8],
}

/// Stores `key` as an active version unless that version exists; returns whether it was stored.
pub async fn insert(tx: &mut TenantTx, key: &NewSigningKey<'_>) -> Result<bool, ApiError> {
    let inserted = tx
        .execute(
            sqlx::query(
                "INSERT INTO signing_keys (name, version, state, public_key, tenant_key_version, wrapped_private) \
         VALUES ($1, $2, 'active', $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(key.name)
            .bind(key.version as i32)
            .bind(key.public_key)
            .bind(key.tenant_key_version as i32)
            .bind(key.sealed_private),
        )
        .await?;
    Ok(inserted == 1)
}

/// The active version of `name`.
pub async fn active(tx: &mut TenantTx, name: &str) -> Result<Option<SealedSigningKey>, ApiError> {
    tx.optional(sqlx::query_as(
        "SELECT version, tenant_key_version, wrapped_private FROM signing_keys WHERE name = $1 AND state = 'active'",
    )
    .bind(name)).await
}

/// Whether any version of `name` was ever created.
pub async fn exists(tx: &mut TenantTx, name: &str) -> Result<bool, ApiError> {
    tx.scalar(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM signing_keys WHERE name = $1)").bind(name)).await
}

/// The version and public half of `name`: version `version`, or the active one for `None`.
pub async fn public_key(
    tx: &mut TenantTx,
    name: &str,
    version: Option<u32>,
) -> Result<Option<(i32, Vec<u8>)>, ApiError> {
    let query = match version {
        None => sqlx::query_as("SELECT version, public_key FROM signing_keys WHERE name = $1 AND state = 'active'")
            .bind(name),
        Some(v) => sqlx::query_as("SELECT version, public_key FROM signing_keys WHERE name = $1 AND version = $2")
            .bind(name)
            .bind(v as i32),
    };
    query.fetch_optional(tx.conn()).await.map_err(db_error)
}

/// Retires version `version` of `name` (it still verifies, it no longer signs).
pub async fn retire(tx: &mut TenantTx, name: &str, version: u32) -> Result<(), ApiError> {
    tx.execute(
        sqlx::query("UPDATE signing_keys SET state = 'retired', retired_at = now() WHERE name = $1 AND version = $2")
            .bind(name)
            .bind(version as i32),
    )
    .await?;
    Ok(())
}
