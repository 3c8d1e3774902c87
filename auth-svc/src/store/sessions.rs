//! SQL of sessions: listing, ending and stepping them up (opening one, and its refresh grants,
//! are `store::login`'s).

use kit::{ApiError, TenantTx};

use crate::personal::{Item, SESSION_IP, SESSION_USER_AGENT, Stored};

/// A session as a user's list and data export show it, its client details still sealed.
#[derive(Debug, sqlx::FromRow)]
pub struct SessionRow {
    pub id: uuid::Uuid,
    pub user_id: uuid::Uuid,
    ip_sealed: Option<String>,
    user_agent_sealed: Option<String>,
    // Until auth tenant migration 0007's sweep seals the rows written before it.
    ip: String,
    user_agent: String,
    pub amr: Vec<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_seen_at: chrono::DateTime<chrono::Utc>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
    pub revoke_reason: Option<String>,
}

impl SessionRow {
    /// The client address and user agent, to open in one call with others.
    pub fn personal(&self) -> [Item<Stored>; 2] {
        let item = |field, sealed: &Option<String>, plain: &str| Item {
            field,
            row: self.id,
            subject: self.user_id,
            value: Stored::of(sealed.clone(), Some(plain.to_owned())),
        };
        [
            item(SESSION_IP, &self.ip_sealed, &self.ip),
            item(SESSION_USER_AGENT, &self.user_agent_sealed, &self.user_agent),
        ]
    }
}

const SESSION_COLUMNS: &str =
    "id, user_id, ip_sealed, user_agent_sealed, ip, user_agent, amr, created_at, last_seen_at,
    revoked_at, revoke_reason";

/// The user's live sessions and those ended in the last 30 days, newest first (at most 200).
pub async fn recent(tx: &mut TenantTx, user: uuid::Uuid) -> Result<Vec<SessionRow>, ApiError> {
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM sessions
          WHERE user_id = $1 AND (revoked_at IS NULL OR revoked_at > now() - interval '30 days')
          ORDER BY created_at DESC LIMIT 200"
    );
    tx.all(sqlx::query_as(&sql).bind(user)).await
}

/// Whose session `id` is.
pub async fn owner(tx: &mut TenantTx, id: uuid::Uuid) -> Result<Option<uuid::Uuid>, ApiError> {
    tx.optional_scalar(sqlx::query_scalar("SELECT user_id FROM sessions WHERE id = $1").bind(id)).await
}

/// The enrolling session of `user` has passed a second factor: its next refresh is complete.
pub async fn passed_second_factor(tx: &mut TenantTx, id: uuid::Uuid, user: uuid::Uuid) -> Result<(), ApiError> {
    tx.execute(
        sqlx::query(
            "UPDATE sessions SET enrollment_only = false, mfa_at = now(),
                amr = (SELECT array_agg(DISTINCT m) FROM unnest(amr || ARRAY['otp']) m)
          WHERE id = $1 AND user_id = $2",
        )
        .bind(id)
        .bind(user),
    )
    .await?;
    Ok(())
}

/// Ends session `id` with `reason`; whether it was live.
pub async fn end(tx: &mut TenantTx, id: uuid::Uuid, reason: &str) -> Result<bool, ApiError> {
    let done = tx
        .execute(
            sqlx::query(
                "UPDATE sessions SET revoked_at = now(), revoke_reason = $2 WHERE id = $1 AND revoked_at IS NULL",
            )
            .bind(id)
            .bind(reason),
        )
        .await?;
    Ok(done == 1)
}

/// Ends the user's open sessions, but `keep` (each listed as revoked by the tenant's trigger);
/// returns how many.
pub async fn end_all_of(
    tx: &mut TenantTx,
    user: uuid::Uuid,
    keep: Option<uuid::Uuid>,
    reason: &str,
) -> Result<u64, ApiError> {
    let done = tx
        .execute(
            sqlx::query(
                "UPDATE sessions SET revoked_at = now(), revoke_reason = $2
          WHERE user_id = $1 AND revoked_at IS NULL AND ($3::uuid IS NULL OR id <> $3)",
            )
            .bind(user)
            .bind(reason)
            .bind(keep),
        )
        .await?;
    Ok(done)
}

/// Ends the live sessions that never passed a second factor of those `users` (every user, when
/// `None`) who are now privileged: granting privilege must not hand it to a session opened with a
/// password alone (each session's next refresh would refuse it too, but its access token would
/// carry the new permissions until then). Returns how many.
pub async fn end_lacking_mfa(tx: &mut TenantTx, users: Option<&[uuid::Uuid]>) -> Result<u64, ApiError> {
    let sql = format!(
        "UPDATE sessions SET revoked_at = now(), revoke_reason = 'privilege_requires_mfa'
          WHERE id IN (
              SELECT s.id FROM sessions s CROSS JOIN tenant_policy p CROSS JOIN LATERAL (SELECT {}) e
               WHERE s.revoked_at IS NULL AND s.mfa_at IS NULL AND NOT s.enrollment_only AND s.expires_at > now()
                 AND ($1::uuid[] IS NULL OR s.user_id = ANY($1))
                 AND (e.permissions && (p.privileged_permissions COLLATE \"C\")
                      OR e.roles && (p.mfa_required_roles COLLATE \"C\")))",
        super::roles::effective_columns("s.user_id")
    );
    tx.execute(sqlx::query(&sql).bind(users)).await
}

/// Ends session `id` because a spent refresh token of it was presented again.
pub async fn end_for_reuse(tx: &mut TenantTx, id: uuid::Uuid) -> Result<(), ApiError> {
    tx.execute(
        sqlx::query("UPDATE sessions SET revoked_at = now(), revoke_reason = 'refresh_token_reuse' WHERE id = $1")
            .bind(id),
    )
    .await?;
    Ok(())
}

/// Every session of the user, for its data export.
pub async fn export_of(tx: &mut TenantTx, user: uuid::Uuid) -> Result<Vec<SessionRow>, ApiError> {
    let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 ORDER BY created_at");
    tx.all(sqlx::query_as(&sql).bind(user)).await
}

/// The session (and its user) of the refresh token whose digest is `token_hash`, spent or not;
/// with `holder`, only a session of that user (by subject).
pub async fn of_refresh_token(
    tx: &mut TenantTx,
    token_hash: &[u8],
    holder: Option<&str>,
) -> Result<Option<(uuid::Uuid, uuid::Uuid)>, ApiError> {
    tx.optional(
        sqlx::query_as(
            "SELECT s.id, s.user_id FROM refresh_tokens rt JOIN sessions s ON s.id = rt.session_id
          WHERE rt.token_hash = $1 AND ($2::text IS NULL OR s.user_id::text = $2)",
        )
        .bind(token_hash)
        .bind(holder),
    )
    .await
}

/// The OAuth client whose session a refresh token (its digest) belongs to: `Some(None)` for a
/// first-party session, `None` for no such token.
pub async fn oauth_client_of_refresh_token(
    tx: &mut TenantTx,
    token_hash: &[u8],
) -> Result<Option<Option<uuid::Uuid>>, ApiError> {
    tx.optional_scalar(
        sqlx::query_scalar(
            "SELECT s.oauth_client_id FROM refresh_tokens rt JOIN sessions s ON s.id = rt.session_id
              WHERE rt.token_hash = $1",
        )
        .bind(token_hash),
    )
    .await
}

/// A live session that OAuth client `client` was given: its user and when it (or the refresh token
/// naming it, `refresh_hash`) expires. None for an ended, expired or another's session, or a used
/// or expired refresh token.
pub async fn live_of_oauth_client(
    tx: &mut TenantTx,
    client: uuid::Uuid,
    session: Option<uuid::Uuid>,
    refresh_hash: Option<&[u8]>,
) -> Result<Option<(uuid::Uuid, uuid::Uuid, chrono::DateTime<chrono::Utc>)>, ApiError> {
    tx.optional(
        sqlx::query_as(
            "SELECT s.id, s.user_id, coalesce(rt.expires_at, s.expires_at)
               FROM sessions s LEFT JOIN refresh_tokens rt ON rt.session_id = s.id AND rt.token_hash = $3
              WHERE s.oauth_client_id = $1 AND s.revoked_at IS NULL AND s.expires_at > now()
                AND ($2::uuid IS NULL OR s.id = $2)
                AND ($3::bytea IS NULL OR (rt.token_hash IS NOT NULL AND rt.used_at IS NULL AND rt.expires_at > now()))
              LIMIT 1",
        )
        .bind(client)
        .bind(session)
        .bind(refresh_hash),
    )
    .await
}

/// Ends every live session of OAuth client `client` (deleted); returns how many.
pub async fn end_of_oauth_client(tx: &mut TenantTx, client: uuid::Uuid) -> Result<u64, ApiError> {
    tx.execute(
        sqlx::query(
            "UPDATE sessions SET revoke_reason = 'oauth_client_deleted', revoked_at = now()
              WHERE oauth_client_id = $1 AND revoked_at IS NULL",
        )
        .bind(client),
    )
    .await
}

/// Session `id` has passed a second factor again (`amr` its method) and gets a new access token
/// (`access_jti`); returns its methods now.
pub async fn stepped_up(
    tx: &mut TenantTx,
    id: uuid::Uuid,
    amr: &str,
    access_jti: uuid::Uuid,
) -> Result<Vec<String>, ApiError> {
    tx.scalar(
        sqlx::query_scalar(
            "UPDATE sessions SET mfa_at = now(), access_jti = $3,
                    amr = (SELECT array_agg(DISTINCT m) FROM unnest(amr || $2::text[]) m)
              WHERE id = $1 RETURNING amr",
        )
        .bind(id)
        .bind(vec![amr])
        .bind(access_jti),
    )
    .await
}

/// Session `id` got a new access token (`access_jti`) outside a rotation (a refresh retried
/// within the grace window).
pub async fn set_access_jti(tx: &mut TenantTx, id: uuid::Uuid, access_jti: uuid::Uuid) -> Result<(), ApiError> {
    tx.execute(sqlx::query("UPDATE sessions SET access_jti = $2 WHERE id = $1").bind(id).bind(access_jti))
        .await
        .map(drop)
}
