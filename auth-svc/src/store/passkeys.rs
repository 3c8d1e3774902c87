//! SQL of passkeys and WebAuthn ceremonies (auth tenant migration 0021).

use kit::{ApiError, TenantTx};

/// A passkey as listed (not its credential).
#[derive(Debug, sqlx::FromRow)]
pub struct PasskeyRow {
    pub id: uuid::Uuid,
    pub name: String,
    pub backup_eligible: bool,
    pub backed_up: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A new passkey.
pub struct NewPasskey<'a> {
    pub id: uuid::Uuid,
    pub user: uuid::Uuid,
    pub name: &'a str,
    pub credential_id: &'a [u8],
    pub passkey: serde_json::Value,
    pub backup_eligible: bool,
    pub backed_up: bool,
}

pub async fn insert(tx: &mut TenantTx, p: NewPasskey<'_>) -> Result<PasskeyRow, ApiError> {
    tx.one(
        sqlx::query_as(
            "INSERT INTO passkeys (id, user_id, name, credential_id, passkey, backup_eligible, backed_up)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             RETURNING id, name, backup_eligible, backed_up, created_at, last_used_at",
        )
        .bind(p.id)
        .bind(p.user)
        .bind(p.name)
        .bind(p.credential_id)
        .bind(p.passkey)
        .bind(p.backup_eligible)
        .bind(p.backed_up),
    )
    .await
}

/// The user's passkeys, oldest first.
pub async fn list(tx: &mut TenantTx, user: uuid::Uuid) -> Result<Vec<PasskeyRow>, ApiError> {
    tx.all(
        sqlx::query_as(
            "SELECT id, name, backup_eligible, backed_up, created_at, last_used_at FROM passkeys
              WHERE user_id = $1 ORDER BY created_at, id",
        )
        .bind(user),
    )
    .await
}

/// The user's stored credentials (webauthn-rs's `Passkey`, as stored).
pub async fn credentials(tx: &mut TenantTx, user: uuid::Uuid) -> Result<Vec<serde_json::Value>, ApiError> {
    tx.scalars(sqlx::query_scalar("SELECT passkey FROM passkeys WHERE user_id = $1 ORDER BY created_at").bind(user))
        .await
}

/// The passkey with `credential_id`, if it is `user`'s: (id, stored credential).
pub async fn by_credential(
    tx: &mut TenantTx,
    user: uuid::Uuid,
    credential_id: &[u8],
) -> Result<Option<(uuid::Uuid, serde_json::Value)>, ApiError> {
    tx.optional(
        sqlx::query_as("SELECT id, passkey FROM passkeys WHERE credential_id = $1 AND user_id = $2")
            .bind(credential_id)
            .bind(user),
    )
    .await
}

/// Notes a use: the credential as updated (counter, backup state).
pub async fn used(
    tx: &mut TenantTx,
    credential_id: &[u8],
    passkey: serde_json::Value,
    backed_up: bool,
) -> Result<(), ApiError> {
    tx.execute(
        sqlx::query("UPDATE passkeys SET passkey = $2, backed_up = $3, last_used_at = now() WHERE credential_id = $1")
            .bind(credential_id)
            .bind(passkey)
            .bind(backed_up),
    )
    .await
    .map(drop)
}

/// Removes one of `user`'s passkeys; whether it was there.
pub async fn delete(tx: &mut TenantTx, user: uuid::Uuid, id: uuid::Uuid) -> Result<bool, ApiError> {
    Ok(tx.execute(sqlx::query("DELETE FROM passkeys WHERE id = $1 AND user_id = $2").bind(id).bind(user)).await? == 1)
}

/// A ceremony between its two calls.
pub struct NewCeremony<'a> {
    pub id: uuid::Uuid,
    pub purpose: &'a str,
    pub user: Option<uuid::Uuid>,
    pub session: Option<uuid::Uuid>,
    pub state: serde_json::Value,
}

/// Keeps a ceremony's state for five minutes.
pub async fn begin(tx: &mut TenantTx, c: NewCeremony<'_>) -> Result<(), ApiError> {
    tx.execute(
        sqlx::query(
            "INSERT INTO webauthn_ceremonies (id, purpose, user_id, session_id, state, expires_at)
             VALUES ($1, $2, $3, $4, $5, now() + interval '5 minutes')",
        )
        .bind(c.id)
        .bind(c.purpose)
        .bind(c.user)
        .bind(c.session)
        .bind(c.state),
    )
    .await
    .map(drop)
}

/// Takes (deletes) a live ceremony for `purpose`: (user, session, state).
pub async fn take(
    tx: &mut TenantTx,
    id: uuid::Uuid,
    purpose: &str,
) -> Result<Option<(Option<uuid::Uuid>, Option<uuid::Uuid>, serde_json::Value)>, ApiError> {
    tx.optional(
        sqlx::query_as(
            "DELETE FROM webauthn_ceremonies WHERE id = $1 AND purpose = $2 AND expires_at > now()
             RETURNING user_id, session_id, state",
        )
        .bind(id)
        .bind(purpose),
    )
    .await
}
