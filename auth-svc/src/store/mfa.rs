//! SQL of TOTP enrolment and backup codes.

use kit::tenancy::db_error;
use kit::{ApiError, TenantTx};

/// The user's email and whether a TOTP seed is confirmed.
pub async fn email_and_totp_confirmed(tx: &mut TenantTx, user: uuid::Uuid) -> Result<(Option<String>, bool), ApiError> {
    sqlx::query_as(
        "SELECT u.email, EXISTS (SELECT 1 FROM mfa_totp m WHERE m.user_id = u.id AND m.confirmed_at IS NOT NULL)
           FROM users u WHERE u.id = $1",
    )
    .bind(user)
    .fetch_one(tx.conn())
    .await
    .map_err(db_error)
}

/// Stores a new, unconfirmed seed (sealed by vault-svc), replacing an earlier unconfirmed one.
pub async fn start_totp(tx: &mut TenantTx, user: uuid::Uuid, sealed_seed: &str) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO mfa_totp (user_id, sealed_seed) VALUES ($1, $2)
         ON CONFLICT (tenant_id, user_id) DO UPDATE SET sealed_seed = EXCLUDED.sealed_seed, last_step = 0, created_at = now()",
    )
    .bind(user)
    .bind(sealed_seed)
    .execute(tx.conn())
    .await
    .map_err(db_error)?;
    Ok(())
}

/// The unconfirmed seed and its last accepted step, locked until the transaction ends.
pub async fn pending_totp(tx: &mut TenantTx, user: uuid::Uuid) -> Result<Option<(String, i64)>, ApiError> {
    sqlx::query_as("SELECT sealed_seed, last_step FROM mfa_totp WHERE user_id = $1 AND confirmed_at IS NULL FOR UPDATE")
        .bind(user)
        .fetch_optional(tx.conn())
        .await
        .map_err(db_error)
}

/// Confirms the seed at the accepted `step`.
pub async fn confirm_totp(tx: &mut TenantTx, user: uuid::Uuid, step: i64) -> Result<(), ApiError> {
    sqlx::query("UPDATE mfa_totp SET confirmed_at = now(), last_step = $2 WHERE user_id = $1")
        .bind(user)
        .bind(step)
        .execute(tx.conn())
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Replaces the user's backup codes with these hashes.
pub async fn replace_backup_codes(tx: &mut TenantTx, user: uuid::Uuid, hashes: &[&[u8]]) -> Result<(), ApiError> {
    sqlx::query("DELETE FROM backup_codes WHERE user_id = $1").bind(user).execute(tx.conn()).await.map_err(db_error)?;
    for hash in hashes {
        sqlx::query("INSERT INTO backup_codes (user_id, code_hash) VALUES ($1, $2)")
            .bind(user)
            .bind(hash)
            .execute(tx.conn())
            .await
            .map_err(db_error)?;
    }
    Ok(())
}
