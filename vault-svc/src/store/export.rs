//! SQL of a terminated tenant's export (`crate::export`): every secret version with its sealed
//! value, and the metadata of the tenant's keys (never their material), each read in pages after
//! the last row written, in primary key order (a range of the primary key's index: a page costs
//! its rows, not the table), so a resumed export neither repeats nor skips a row.

use chrono::{DateTime, Utc};
use kit::{ApiError, TenantTx};

/// A version of the tenant key, as the export lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantKeyMeta {
    pub version: i32,
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
    pub destroyed_at: Option<DateTime<Utc>>,
}

/// A version of a workload signing key, as the export lists it: its public half only.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SigningKeyMeta {
    pub name: String,
    pub version: i32,
    pub state: String,
    pub algorithm: String,
    pub public_key: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
}

/// A version of a data subject's key, as the export lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SubjectKeyMeta {
    pub subject: String,
    pub version: i32,
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub destroyed_at: Option<DateTime<Utc>>,
}

/// A version of a secret with its secret's metadata; `ciphertext` is its envelope (none once
/// destroyed).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SecretVersionExport {
    pub path: String,
    pub version: i32,
    pub key_version: i32,
    pub ciphertext: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
    pub destroyed_at: Option<DateTime<Utc>>,
    pub current_version: i32,
    /// The secret's labels, as stored.
    #[sqlx(json)]
    pub labels: serde_json::Value,
    pub rotate_after: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// Up to `limit` versions of the tenant key after version `after`.
pub async fn tenant_keys(tx: &mut TenantTx, after: u32, limit: i64) -> Result<Vec<TenantKeyMeta>, ApiError> {
    tx.all(
        sqlx::query_as(
            "SELECT version, state, created_at, retired_at, destroyed_at FROM tenant_keys \
             WHERE version > $1 ORDER BY version LIMIT $2",
        )
        .bind(after as i32)
        .bind(limit),
    )
    .await
}

/// Up to `limit` signing key versions after (`name`, `version`), by name and version.
pub async fn signing_keys(
    tx: &mut TenantTx,
    name: &str,
    version: u32,
    limit: i64,
) -> Result<Vec<SigningKeyMeta>, ApiError> {
    tx.all(
        sqlx::query_as(
            "SELECT name, version, state, algorithm, public_key, created_at, retired_at FROM signing_keys \
             WHERE (name, version) > ($1, $2) ORDER BY name, version LIMIT $3",
        )
        .bind(name)
        .bind(version as i32)
        .bind(limit),
    )
    .await
}

/// Up to `limit` subject key versions after (`subject`, `version`), by subject and version.
pub async fn subject_keys(
    tx: &mut TenantTx,
    subject: &str,
    version: u32,
    limit: i64,
) -> Result<Vec<SubjectKeyMeta>, ApiError> {
    tx.all(
        sqlx::query_as(
            "SELECT subject, version, state, created_at, destroyed_at FROM subject_keys \
             WHERE (subject, version) > ($1, $2) ORDER BY subject, version LIMIT $3",
        )
        .bind(subject)
        .bind(version as i32)
        .bind(limit),
    )
    .await
}

/// Up to `limit` secret versions after (`path`, `version`), deleted secrets' too, by path and
/// version.
pub async fn secret_versions(
    tx: &mut TenantTx,
    path: &str,
    version: u32,
    limit: i64,
) -> Result<Vec<SecretVersionExport>, ApiError> {
    tx.all(
        sqlx::query_as(
            "SELECT v.path, v.version, v.key_version, v.ciphertext, v.created_at, v.destroyed_at, \
                    s.current_version, s.labels, s.rotate_after, s.expires_at, s.deleted_at \
             FROM secret_versions v JOIN secrets s ON s.tenant_id = v.tenant_id AND s.path = v.path \
             WHERE (v.path, v.version) > ($1, $2) ORDER BY v.path, v.version LIMIT $3",
        )
        .bind(path)
        .bind(version as i32)
        .bind(limit),
    )
    .await
}
