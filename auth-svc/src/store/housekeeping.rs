//! SQL of the purge of expired rows (`housekeeping.rs` decides what is purged when): refresh
//! tokens, the sessions that lost their last one, MFA challenges, retired signing keys. Each
//! statement removes at most a batch, inside the caller's `TenantTx`.

use kit::{ApiError, TenantTx};

use crate::housekeeping::KEEP_ENDED;

/// Deletes up to `limit` refresh tokens that expired [`KEEP_ENDED`] ago; returns the session of
/// each (a session once per token).
pub async fn delete_expired_refresh_tokens(tx: &mut TenantTx, limit: i64) -> Result<Vec<uuid::Uuid>, ApiError> {
    tx.scalars(
        sqlx::query_scalar(&format!(
            "DELETE FROM refresh_tokens WHERE ctid = ANY(ARRAY(
             SELECT ctid FROM refresh_tokens WHERE expires_at < now() - interval '{KEEP_ENDED}' LIMIT $1))
         RETURNING session_id"
        ))
        .bind(limit)
        .persistent(false),
    )
    .await
}

/// Deletes those of `sessions` that have expired and have no refresh token left; returns how
/// many.
pub async fn delete_ended_sessions(tx: &mut TenantTx, sessions: &[uuid::Uuid]) -> Result<u64, ApiError> {
    tx.execute(
        sqlx::query(
            "DELETE FROM sessions s USING (SELECT DISTINCT id FROM unnest($1::uuid[]) AS w(id)) w
          WHERE s.id = w.id AND s.expires_at < now()
            AND NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.session_id = s.id)",
        )
        .bind(sessions)
        .persistent(false),
    )
    .await
}

/// Deletes up to `limit` MFA challenges that expired a day ago; returns how many.
pub async fn delete_expired_mfa_challenges(tx: &mut TenantTx, limit: i64) -> Result<u64, ApiError> {
    tx.execute(
        sqlx::query(
            "DELETE FROM mfa_challenges WHERE ctid = ANY(ARRAY(
             SELECT ctid FROM mfa_challenges WHERE expires_at < now() - interval '1 day' LIMIT $1))",
        )
        .bind(limit)
        .persistent(false),
    )
    .await
}

/// Deletes the private halves of the signing keys retired a day ago; returns their kids.
pub async fn delete_retired_signing_keys(tx: &mut TenantTx) -> Result<Vec<String>, ApiError> {
    tx.scalars(sqlx::query_scalar(
        "DELETE FROM token_signing_keys WHERE retired_at < now() - interval '1 day' RETURNING kid",
    ))
    .await
}

/// Removes from the JWKS those of the tenant's keys `kids` that are past their `expires_at`.
pub async fn unpublish_expired_signing_keys(tx: &mut TenantTx, kids: &[String]) -> Result<(), ApiError> {
    let tenant = tx.tenant().id.0;
    tx.execute(
        sqlx::query("DELETE FROM control.signing_keys WHERE kid = ANY($1) AND tenant_id = $2 AND expires_at < now()")
            .bind(kids)
            .bind(tenant),
    )
    .await?;
    Ok(())
}
