//! SQL of OAuth clients (auth tenant migration 0016): registration, listing, changes, secrets.

use kit::{ApiError, TenantTx};

use crate::domain::oauth::Settings;

/// A client as stored (never its secret's hash).
#[derive(Debug, sqlx::FromRow)]
pub struct ClientRow {
    pub id: uuid::Uuid,
    pub kind: String,
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub allowed_scopes: Vec<String>,
    pub grant_types: Vec<String>,
    pub first_party: bool,
    pub created_by: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub secret_created_at: Option<chrono::DateTime<chrono::Utc>>,
}

const COLUMNS: &str = "id, kind, name, redirect_uris, post_logout_redirect_uris, allowed_scopes, grant_types, \
                       first_party, created_by, created_at, updated_at, secret_created_at";

/// Registers a client; `secret_hash` for a confidential one.
pub async fn insert(
    tx: &mut TenantTx,
    id: uuid::Uuid,
    kind: &str,
    s: &Settings,
    secret_hash: Option<&[u8]>,
    created_by: &str,
) -> Result<ClientRow, ApiError> {
    tx.one(
        sqlx::query_as(&format!(
            "INSERT INTO oauth_clients (id, kind, name, redirect_uris, post_logout_redirect_uris, allowed_scopes,
                                        grant_types, first_party, secret_hash, secret_created_at, created_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, CASE WHEN $9 IS NULL THEN NULL ELSE now() END, $10)
             RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(kind)
        .bind(&s.name)
        .bind(&s.redirect_uris)
        .bind(&s.post_logout_redirect_uris)
        .bind(&s.allowed_scopes)
        .bind(&s.grant_types)
        .bind(s.first_party)
        .bind(secret_hash)
        .bind(created_by),
    )
    .await
}

/// Client `id`, if registered.
pub async fn get(tx: &mut TenantTx, id: uuid::Uuid) -> Result<Option<ClientRow>, ApiError> {
    tx.optional(sqlx::query_as(&format!("SELECT {COLUMNS} FROM oauth_clients WHERE id = $1")).bind(id)).await
}

/// Up to `limit` clients created before `before` (creation time, id), newest first.
pub async fn page(
    tx: &mut TenantTx,
    before: (chrono::DateTime<chrono::Utc>, uuid::Uuid),
    limit: i64,
) -> Result<Vec<ClientRow>, ApiError> {
    tx.all(
        sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM oauth_clients WHERE (created_at, id) < ($1, $2)
             ORDER BY created_at DESC, id DESC LIMIT $3"
        ))
        .bind(before.0)
        .bind(before.1)
        .bind(limit),
    )
    .await
}

/// Replaces client `id`'s settings; the client as changed, if it exists.
pub async fn update(tx: &mut TenantTx, id: uuid::Uuid, s: &Settings) -> Result<Option<ClientRow>, ApiError> {
    tx.optional(
        sqlx::query_as(&format!(
            "UPDATE oauth_clients SET name = $2, redirect_uris = $3, post_logout_redirect_uris = $4,
                    allowed_scopes = $5, grant_types = $6, first_party = $7, updated_at = now()
              WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(&s.name)
        .bind(&s.redirect_uris)
        .bind(&s.post_logout_redirect_uris)
        .bind(&s.allowed_scopes)
        .bind(&s.grant_types)
        .bind(s.first_party),
    )
    .await
}

/// Replaces a confidential client's secret hash; the client, if it is one.
pub async fn set_secret(tx: &mut TenantTx, id: uuid::Uuid, secret_hash: &[u8]) -> Result<Option<ClientRow>, ApiError> {
    tx.optional(
        sqlx::query_as(&format!(
            "UPDATE oauth_clients SET secret_hash = $2, secret_created_at = now(), updated_at = now()
              WHERE id = $1 AND kind = 'confidential' RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(secret_hash),
    )
    .await
}

/// Deletes client `id`; whether it existed.
pub async fn delete(tx: &mut TenantTx, id: uuid::Uuid) -> Result<bool, ApiError> {
    Ok(tx.execute(sqlx::query("DELETE FROM oauth_clients WHERE id = $1").bind(id)).await? == 1)
}
