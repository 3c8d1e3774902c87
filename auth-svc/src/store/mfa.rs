//! SQL of second factors: TOTP enrolment and use, backup codes, the account's count of wrong
//! codes, and the login challenges waiting for a second factor (`mfa_challenges`).

use kit::{ApiError, TenantTx};

use crate::personal::Stored;

/// The user's email (sealed) and whether a TOTP seed is confirmed.
pub async fn email_and_totp_confirmed(tx: &mut TenantTx, user: uuid::Uuid) -> Result<(Stored, bool), ApiError> {
    let (sealed, plain, confirmed): (Option<String>, Option<String>, bool) = tx
        .one(
            sqlx::query_as(
                "SELECT u.email_sealed, u.email,
                        EXISTS (SELECT 1 FROM mfa_totp m WHERE m.user_id = u.id AND m.confirmed_at IS NOT NULL)
                   FROM users u WHERE u.id = $1",
            )
            .bind(user),
        )
        .await?;
    Ok((Stored::of(sealed, plain), confirmed))
}

/// Stores a new, unconfirmed seed (sealed by vault-svc), replacing an earlier unconfirmed one.
pub async fn start_totp(tx: &mut TenantTx, user: uuid::Uuid, sealed_seed: &str) -> Result<(), ApiError> {
    tx.execute(sqlx::query(
        "INSERT INTO mfa_totp (user_id, sealed_seed) VALUES ($1, $2)
         ON CONFLICT (tenant_id, user_id) DO UPDATE SET sealed_seed = EXCLUDED.sealed_seed, last_step = 0, created_at = now()",
    )
    .bind(user)
    .bind(sealed_seed)).await?;
    Ok(())
}

/// The user's TOTP seed and its last accepted step, locked until the transaction ends: the
/// `confirmed` one, else the one waiting for its confirmation.
pub async fn totp_seed(
    tx: &mut TenantTx,
    user: uuid::Uuid,
    confirmed: bool,
) -> Result<Option<(String, i64)>, ApiError> {
    let sql = if confirmed {
        "SELECT sealed_seed, last_step FROM mfa_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL FOR UPDATE"
    } else {
        "SELECT sealed_seed, last_step FROM mfa_totp WHERE user_id = $1 AND confirmed_at IS NULL FOR UPDATE"
    };
    tx.optional(sqlx::query_as(sql).bind(user)).await
}

/// A TOTP code of `step` was accepted (confirming the seed, when it is the first): no code of it
/// or earlier is accepted again.
pub async fn accept_totp_step(tx: &mut TenantTx, user: uuid::Uuid, step: i64, confirm: bool) -> Result<(), ApiError> {
    let sql = if confirm {
        "UPDATE mfa_totp SET confirmed_at = now(), last_step = $2 WHERE user_id = $1"
    } else {
        "UPDATE mfa_totp SET last_step = $2 WHERE user_id = $1"
    };
    tx.execute(sqlx::query(sql).bind(user).bind(step)).await?;
    Ok(())
}

/// Replaces the user's backup codes with these hashes.
pub async fn replace_backup_codes(tx: &mut TenantTx, user: uuid::Uuid, hashes: &[&[u8]]) -> Result<(), ApiError> {
    tx.execute(sqlx::query("DELETE FROM backup_codes WHERE user_id = $1").bind(user)).await?;
    for hash in hashes {
        tx.execute(sqlx::query("INSERT INTO backup_codes (user_id, code_hash) VALUES ($1, $2)").bind(user).bind(hash))
            .await?;
    }
    Ok(())
}

/// Spends the backup code whose hash is `hash`; whether it was the user's and unused.
pub async fn spend_backup_code(tx: &mut TenantTx, user: uuid::Uuid, hash: &[u8]) -> Result<bool, ApiError> {
    let done = tx
        .execute(
            sqlx::query(
                "UPDATE backup_codes SET used_at = now() WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
            )
            .bind(user)
            .bind(hash),
        )
        .await?;
    Ok(done == 1)
}

/// How many more seconds the user's second factor is locked (0: not locked); locks the user's
/// row first, so parallel guesses are counted one after another.
pub async fn locked_for(tx: &mut TenantTx, user: uuid::Uuid) -> Result<i64, ApiError> {
    Ok(tx
        .optional_scalar(
            sqlx::query_scalar(
                "SELECT coalesce(ceil(extract(epoch FROM mfa_locked_until - now())), 0)::bigint FROM users
          WHERE id = $1 FOR UPDATE",
            )
            .bind(user),
        )
        .await?
        .unwrap_or(0))
}

/// A right code: the account's count of wrong ones starts again.
pub async fn clear_failures(tx: &mut TenantTx, user: uuid::Uuid) -> Result<(), ApiError> {
    tx.execute(
        sqlx::query("UPDATE users SET mfa_failures = 0, mfa_lockouts = 0, mfa_locked_until = NULL WHERE id = $1")
            .bind(user),
    )
    .await?;
    Ok(())
}

/// Counts a wrong code: at `threshold` in a row the second factor locks for `window_secs`,
/// doubled at each further lockout (up to 64 times). Returns the failures in a row now and how
/// many seconds it is locked for (0: not locked).
pub async fn count_failure(
    tx: &mut TenantTx,
    user: uuid::Uuid,
    threshold: i32,
    window_secs: f64,
) -> Result<(i32, i64), ApiError> {
    tx.one(
        sqlx::query_as(
            "UPDATE users SET
                mfa_failures = CASE WHEN mfa_failures + 1 >= $2 THEN 0 ELSE mfa_failures + 1 END,
                mfa_lockouts = CASE WHEN mfa_failures + 1 >= $2 THEN mfa_lockouts + 1 ELSE mfa_lockouts END,
                mfa_locked_until = CASE WHEN mfa_failures + 1 >= $2
                    THEN now() + make_interval(secs => $3 * power(2, least(mfa_lockouts, 6)))
                    ELSE mfa_locked_until END
          WHERE id = $1
         RETURNING mfa_failures, coalesce(ceil(extract(epoch FROM mfa_locked_until - now())), 0)::bigint",
        )
        .bind(user)
        .bind(threshold)
        .bind(window_secs),
    )
    .await
}

/// A login challenge: a correct password waiting for `user`'s second factor for `secs`.
pub async fn insert_challenge(
    tx: &mut TenantTx,
    token_hash: &[u8],
    user: uuid::Uuid,
    secs: f64,
) -> Result<(), ApiError> {
    tx.execute(
        sqlx::query(
            "INSERT INTO mfa_challenges (token_hash, user_id, expires_at) VALUES ($1, $2, now() + make_interval(secs => $3))",
        )
        .bind(token_hash)
        .bind(user)
        .bind(secs),
    )
    .await?;
    Ok(())
}

/// The unused, unexpired challenge whose token digest is `token_hash`, of an active user (a
/// suspension after the password step ends the login): `(user, attempts)`, locked.
pub async fn challenge(tx: &mut TenantTx, token_hash: &[u8]) -> Result<Option<(uuid::Uuid, i32)>, ApiError> {
    tx.optional(
        sqlx::query_as(
            "SELECT c.user_id, c.attempts FROM mfa_challenges c JOIN users u ON u.id = c.user_id
          WHERE c.token_hash = $1 AND c.used_at IS NULL AND c.expires_at > now() AND u.status = 'active'
            FOR UPDATE OF c",
        )
        .bind(token_hash),
    )
    .await
}

/// Counts a wrong code against the challenge; an `exhausted` one can no longer be used.
pub async fn fail_challenge(tx: &mut TenantTx, token_hash: &[u8], exhausted: bool) -> Result<(), ApiError> {
    tx.execute(sqlx::query(
        "UPDATE mfa_challenges SET attempts = attempts + 1, used_at = CASE WHEN $2 THEN now() END WHERE token_hash = $1",
    )
    .bind(token_hash)
    .bind(exhausted)).await?;
    Ok(())
}

/// The challenge is passed: it cannot be used again.
pub async fn use_challenge(tx: &mut TenantTx, token_hash: &[u8]) -> Result<(), ApiError> {
    tx.execute(sqlx::query("UPDATE mfa_challenges SET used_at = now() WHERE token_hash = $1").bind(token_hash)).await?;
    Ok(())
}

/// Ends every login of `user` waiting for its second factor.
pub async fn void_challenges_of(tx: &mut TenantTx, user: uuid::Uuid) -> Result<(), ApiError> {
    tx.execute(
        sqlx::query("UPDATE mfa_challenges SET used_at = now() WHERE user_id = $1 AND used_at IS NULL").bind(user),
    )
    .await?;
    Ok(())
}
