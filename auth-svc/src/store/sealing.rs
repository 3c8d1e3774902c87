//! SQL of the sealing sweep: rows written before auth tenant migration 0007 that still hold
//! personal data in plaintext, and sealing them.

use kit::{ApiError, TenantTx};

use crate::email_index::Blinds;

/// A user whose email is still in plaintext.
#[derive(Debug, sqlx::FromRow)]
pub struct PlainUser {
    pub id: uuid::Uuid,
    pub email: String,
    pub display_name: Option<String>,
}

/// Up to `limit` users after `after` (by id) whose email is still in plaintext.
pub async fn plain_users(tx: &mut TenantTx, after: uuid::Uuid, limit: i64) -> Result<Vec<PlainUser>, ApiError> {
    tx.all(
        sqlx::query_as(
            "SELECT id, email, display_name FROM users WHERE email IS NOT NULL AND id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit),
    )
    .await
}

/// Replaces user `u`'s plaintext by `email_sealed` and `name_sealed` and indexes its email as
/// `blind`, unless the row changed since it was read or another user has that index already (a
/// duplicate written during a rolling upgrade: left in plaintext for an operator). Whether it did.
pub async fn seal_user(
    tx: &mut TenantTx,
    u: &PlainUser,
    email_sealed: &str,
    name_sealed: Option<&str>,
    blinds: &Blinds,
) -> Result<bool, ApiError> {
    let (versions, blinds) = super::users::split(blinds);
    let done: Vec<uuid::Uuid> = tx
        .scalars(
            sqlx::query_scalar(
                "WITH sealed AS (
                     UPDATE users SET email_sealed = $2, display_name_sealed = $3, email = NULL, display_name = NULL
                      WHERE id = $1 AND email = $4 AND display_name IS NOT DISTINCT FROM $5
                        AND NOT EXISTS (SELECT 1 FROM user_email_index
                                         WHERE (key_version, blind) IN (SELECT * FROM unnest($6::int[], $7::bytea[])))
                  RETURNING id
                 )
                 INSERT INTO user_email_index (key_version, blind, user_id)
                 SELECT v, b, id FROM sealed, unnest($6::int[], $7::bytea[]) AS x(v, b) RETURNING user_id",
            )
            .bind(u.id)
            .bind(email_sealed)
            .bind(name_sealed)
            .bind(&u.email)
            .bind(&u.display_name)
            .bind(versions)
            .bind(blinds),
        )
        .await?;
    Ok(!done.is_empty())
}

/// A session whose client details are still in plaintext.
#[derive(Debug, sqlx::FromRow)]
pub struct PlainSession {
    pub id: uuid::Uuid,
    pub user_id: uuid::Uuid,
    pub ip: String,
    pub user_agent: String,
}

/// Up to `limit` sessions after `after` (by id) whose client details are still in plaintext.
pub async fn plain_sessions(tx: &mut TenantTx, after: uuid::Uuid, limit: i64) -> Result<Vec<PlainSession>, ApiError> {
    tx.all(
        sqlx::query_as(
            "SELECT id, user_id, ip, user_agent FROM sessions
              WHERE (ip <> '' OR user_agent <> '') AND id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit),
    )
    .await
}

/// Replaces session `s`'s plaintext by the sealed values, unless it changed since it was read.
pub async fn seal_session(
    tx: &mut TenantTx,
    s: &PlainSession,
    ip_sealed: Option<&str>,
    user_agent_sealed: Option<&str>,
) -> Result<bool, ApiError> {
    let n = tx
        .execute(
            sqlx::query(
                "UPDATE sessions SET ip_sealed = $2, user_agent_sealed = $3, ip = '', user_agent = ''
                  WHERE id = $1 AND ip = $4 AND user_agent = $5",
            )
            .bind(s.id)
            .bind(ip_sealed)
            .bind(user_agent_sealed)
            .bind(&s.ip)
            .bind(&s.user_agent),
        )
        .await?;
    Ok(n == 1)
}
