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
    pub permissions: Vec<String>,
    pub created_by: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub secret_created_at: Option<chrono::DateTime<chrono::Utc>>,
}

const COLUMNS: &str = "id, kind, name, redirect_uris, post_logout_redirect_uris, allowed_scopes, grant_types, \
                       first_party, permissions, created_by, created_at, updated_at, secret_created_at";

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
                                        grant_types, first_party, secret_hash, secret_created_at, created_by,
                                        permissions)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, CASE WHEN $9 IS NULL THEN NULL ELSE now() END, $10, $11)
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
        .bind(created_by)
        .bind(&s.permissions),
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
                    allowed_scopes = $5, grant_types = $6, first_party = $7, permissions = $8, updated_at = now()
              WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(&s.name)
        .bind(&s.redirect_uris)
        .bind(&s.post_logout_redirect_uris)
        .bind(&s.allowed_scopes)
        .bind(&s.grant_types)
        .bind(s.first_party)
        .bind(&s.permissions),
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

/// The SHA-256 of client `id`'s secret (confidential clients).
pub async fn secret_hash(tx: &mut TenantTx, id: uuid::Uuid) -> Result<Option<Vec<u8>>, ApiError> {
    Ok(tx
        .optional_scalar(sqlx::query_scalar("SELECT secret_hash FROM oauth_clients WHERE id = $1").bind(id))
        .await?
        .flatten())
}

/// A code being issued.
#[derive(Debug)]
pub struct NewCode<'a> {
    pub hash: &'a [u8],
    pub client: uuid::Uuid,
    pub user: uuid::Uuid,
    pub redirect_uri: &'a str,
    pub scopes: &'a [String],
    pub nonce: &'a str,
    pub code_challenge: &'a str,
    pub amr: &'a [String],
    pub mfa: bool,
    pub auth_time: chrono::DateTime<chrono::Utc>,
}

/// How long a code lives.
pub const CODE_TTL_SECS: f64 = 60.0;

/// Stores a code (its hash) for [`CODE_TTL_SECS`].
pub async fn insert_code(tx: &mut TenantTx, c: &NewCode<'_>) -> Result<(), ApiError> {
    tx.execute(
        sqlx::query(
            "INSERT INTO oauth_codes (code_hash, client_id, user_id, redirect_uri, scopes, nonce, code_challenge, amr,
                                      mfa, auth_time, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now() + make_interval(secs => $11))",
        )
        .bind(c.hash)
        .bind(c.client)
        .bind(c.user)
        .bind(c.redirect_uri)
        .bind(c.scopes)
        .bind(c.nonce)
        .bind(c.code_challenge)
        .bind(c.amr)
        .bind(c.mfa)
        .bind(c.auth_time)
        .bind(CODE_TTL_SECS),
    )
    .await?;
    Ok(())
}

/// A stored code, locked until the transaction ends.
#[derive(Debug, sqlx::FromRow)]
pub struct CodeRow {
    pub client_id: uuid::Uuid,
    pub user_id: uuid::Uuid,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub nonce: String,
    pub code_challenge: String,
    pub amr: Vec<String>,
    pub mfa: bool,
    pub auth_time: chrono::DateTime<chrono::Utc>,
    pub expired: bool,
    pub used: bool,
    pub issued_session: Option<uuid::Uuid>,
}

/// The code whose hash is `hash`, locked (a concurrent exchange of it waits, then sees it used).
pub async fn code_for_update(tx: &mut TenantTx, hash: &[u8]) -> Result<Option<CodeRow>, ApiError> {
    tx.optional(
        sqlx::query_as(
            "SELECT client_id, user_id, redirect_uri, scopes, nonce, code_challenge, amr, mfa, auth_time,
                    expires_at <= now() AS expired, used_at IS NOT NULL AS used, issued_session
               FROM oauth_codes WHERE code_hash = $1 FOR UPDATE",
        )
        .bind(hash),
    )
    .await
}

/// Marks the code used, by the exchange that opened `session`.
pub async fn use_code(tx: &mut TenantTx, hash: &[u8], session: uuid::Uuid) -> Result<(), ApiError> {
    tx.execute(
        sqlx::query("UPDATE oauth_codes SET used_at = now(), issued_session = $2 WHERE code_hash = $1")
            .bind(hash)
            .bind(session),
    )
    .await?;
    Ok(())
}
