//! SQL of API keys: minting, listing, revoking, and their lookup by hash at use.

use kit::tenancy::db_error;
use kit::{ApiError, Db, TenantTx};

/// An API key as listed (never its secret).
#[derive(Debug, sqlx::FromRow)]
pub struct KeyRow {
    pub id: uuid::Uuid,
    pub name: String,
    pub display: String,
    pub scopes: Vec<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

const COLUMNS: &str = "id, name, display, scopes, created_at, expires_at, last_used_at, revoked_at";

/// A key being minted.
#[derive(Debug)]
pub struct NewKey<'a> {
    pub user: uuid::Uuid,
    pub name: &'a str,
    pub display: &'a str,
    pub hash: &'a [u8],
    pub scopes: &'a [String],
    pub days: i32,
    pub minted_with_mfa: bool,
}

/// Stores the key and indexes its hash to its tenant (`control.api_key_index`), in the caller's
/// transaction.
pub async fn insert(tx: &mut TenantTx, k: &NewKey<'_>) -> Result<KeyRow, ApiError> {
    let row: KeyRow = tx
        .one(
            sqlx::query_as(&format!(
                "INSERT INTO api_keys (user_id, name, display, key_hash, scopes, expires_at, minted_with_mfa)
         VALUES ($1, $2, $3, $4, $5, now() + make_interval(days => $6), $7) RETURNING {COLUMNS}"
            ))
            .bind(k.user)
            .bind(k.name)
            .bind(k.display)
            .bind(k.hash)
            .bind(k.scopes)
            .bind(k.days)
            .bind(k.minted_with_mfa),
        )
        .await?;
    let tenant = tx.tenant().id.0;
    tx.execute(
        sqlx::query("INSERT INTO control.api_key_index (key_hash, tenant_id) VALUES ($1, $2)")
            .bind(k.hash)
            .bind(tenant),
    )
    .await?;
    Ok(row)
}

/// Up to `limit` keys created before `before` (creation time, id), newest first: every key of the
/// tenant, or `holder`'s. Two statements, each read from its own index: as one
/// `$1 OR user_id = $2`, a cached generic plan could only scan every key of the tenant.
pub async fn page(
    tx: &mut TenantTx,
    holder: Option<uuid::Uuid>,
    before: (chrono::DateTime<chrono::Utc>, uuid::Uuid),
    limit: i64,
) -> Result<Vec<KeyRow>, ApiError> {
    match holder {
        None => {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM api_keys WHERE (created_at, id) < ($1, $2)
              ORDER BY created_at DESC, id DESC LIMIT $3"
            ))
            .bind(before.0)
            .bind(before.1)
            .bind(limit)
            .fetch_all(tx.conn())
            .await
        }
        Some(user) => {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM api_keys WHERE user_id = $4 AND (created_at, id) < ($1, $2)
              ORDER BY created_at DESC, id DESC LIMIT $3"
            ))
            .bind(before.0)
            .bind(before.1)
            .bind(limit)
            .bind(user)
            .fetch_all(tx.conn())
            .await
        }
    }
    .map_err(db_error)
}

/// Who created key `id`.
pub async fn owner(tx: &mut TenantTx, id: uuid::Uuid) -> Result<Option<uuid::Uuid>, ApiError> {
    tx.optional_scalar(sqlx::query_scalar("SELECT user_id FROM api_keys WHERE id = $1").bind(id)).await
}

/// Revokes key `id` (listed as revoked by the tenant's trigger); revoking twice keeps the first time.
pub async fn revoke(tx: &mut TenantTx, id: uuid::Uuid) -> Result<(), ApiError> {
    tx.execute(sqlx::query("UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1").bind(id))
        .await?;
    Ok(())
}

/// Revokes every live key of `user` (each listed by the tenant's trigger); returns how many.
pub async fn revoke_all_of(tx: &mut TenantTx, user: uuid::Uuid) -> Result<u64, ApiError> {
    tx.execute(
        sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL").bind(user),
    )
    .await
}

/// Every key of the user, as its data export shows them (never a secret).
pub async fn export_of(tx: &mut TenantTx, user: uuid::Uuid) -> Result<Vec<serde_json::Value>, ApiError> {
    let sql = "SELECT jsonb_build_object('id', id, 'name', name, 'display', display, 'scopes', scopes, 'created_at', created_at,
                'expires_at', expires_at, 'last_used_at', last_used_at, 'revoked_at', revoked_at)
           FROM api_keys WHERE user_id = $1 ORDER BY created_at";
    super::json_rows(tx, sql, user).await
}

/// The slug of the tenant that holds the key whose hash is `hash` (`control.api_key_index`, by
/// primary key).
pub async fn tenant_of(db: &Db, hash: &[u8]) -> Result<Option<String>, ApiError> {
    sqlx::query_scalar(
        "SELECT t.slug FROM control.api_key_index k JOIN control.tenants t ON t.id = k.tenant_id
          WHERE k.key_hash = $1",
    )
    .bind(hash)
    .fetch_optional(db.control_pool())
    .await
    .map_err(db_error)
}

/// A key in use, as introspection answers it.
#[derive(Debug, sqlx::FromRow)]
pub struct KeyInUse {
    pub id: uuid::Uuid,
    pub user_id: uuid::Uuid,
    pub scopes: Vec<String>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    pub minted_with_mfa: bool,
}

/// The live key whose hash is `hash`, of an active user, marked used now; `None` otherwise.
pub async fn use_key(tx: &mut TenantTx, hash: &[u8]) -> Result<Option<KeyInUse>, ApiError> {
    tx.optional(
        sqlx::query_as(
            "UPDATE api_keys k SET last_used_at = now()
           FROM users u
          WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND k.expires_at > now()
            AND u.id = k.user_id AND u.status = 'active'
         RETURNING k.id, k.user_id, k.scopes, k.expires_at, k.minted_with_mfa",
        )
        .bind(hash),
    )
    .await
}
