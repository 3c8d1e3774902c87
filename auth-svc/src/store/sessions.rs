//! SQL of sessions, as the session API reads and changes them (the login flows' own statements
//! are still in `authn.rs`).

use kit::tenancy::db_error;
use kit::{ApiError, TenantTx};

/// A session as a user's list shows it.
#[derive(Debug, sqlx::FromRow)]
pub struct SessionRow {
    pub id: uuid::Uuid,
    pub ip: String,
    pub user_agent: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_seen_at: chrono::DateTime<chrono::Utc>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The user's live sessions and those ended in the last 30 days, newest first (at most 200).
pub async fn recent(tx: &mut TenantTx, user: uuid::Uuid) -> Result<Vec<SessionRow>, ApiError> {
    sqlx::query_as(
        "SELECT id, ip, user_agent, created_at, last_seen_at, revoked_at FROM sessions
          WHERE user_id = $1 AND (revoked_at IS NULL OR revoked_at > now() - interval '30 days')
          ORDER BY created_at DESC LIMIT 200",
    )
    .bind(user)
    .fetch_all(tx.conn())
    .await
    .map_err(db_error)
}

/// Whose session `id` is.
pub async fn owner(tx: &mut TenantTx, id: uuid::Uuid) -> Result<Option<uuid::Uuid>, ApiError> {
    sqlx::query_scalar("SELECT user_id FROM sessions WHERE id = $1")
        .bind(id)
        .fetch_optional(tx.conn())
        .await
        .map_err(db_error)
}

/// The enrolling session of `user` has passed a second factor: its next refresh is complete.
pub async fn passed_second_factor(tx: &mut TenantTx, id: uuid::Uuid, user: uuid::Uuid) -> Result<(), ApiError> {
    sqlx::query(
        "UPDATE sessions SET enrollment_only = false, mfa_at = now(),
                amr = (SELECT array_agg(DISTINCT m) FROM unnest(amr || ARRAY['otp']) m)
          WHERE id = $1 AND user_id = $2",
    )
    .bind(id)
    .bind(user)
    .execute(tx.conn())
    .await
    .map_err(db_error)?;
    Ok(())
}
