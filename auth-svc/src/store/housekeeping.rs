//! SQL of the purge of expired rows (`housekeeping.rs` decides what is purged when, from the
//! tenant's retention policy): refresh tokens, the sessions that lost their last one, MFA
//! challenges, retired signing keys, deleted users with what refers to them. Each statement
//! removes at most a batch, inside the caller's `TenantTx`, and nothing of the `held` users (under
//! a legal hold).

use kit::{ApiError, TenantTx};

/// Deletes up to `limit` refresh tokens that expired `days` ago, but none of a session of the
/// `held` users; returns the session of each (a session once per token).
pub async fn delete_expired_refresh_tokens(
    tx: &mut TenantTx,
    days: i32,
    limit: i64,
    held: &[uuid::Uuid],
) -> Result<Vec<uuid::Uuid>, ApiError> {
    tx.scalars(
        sqlx::query_scalar(
            "DELETE FROM refresh_tokens WHERE ctid = ANY(ARRAY(
             SELECT ctid FROM refresh_tokens t WHERE t.expires_at < now() - make_interval(days => $1)
                AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = t.session_id AND s.user_id = ANY($3))
              LIMIT $2))
         RETURNING session_id",
        )
        .bind(days)
        .bind(limit)
        .bind(held)
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

/// Deletes up to `limit` MFA challenges that expired `days` ago, but none of the `held` users;
/// returns how many.
pub async fn delete_expired_mfa_challenges(
    tx: &mut TenantTx,
    days: i32,
    limit: i64,
    held: &[uuid::Uuid],
) -> Result<u64, ApiError> {
    // WebAuthn ceremonies live five minutes, and go when they expired.
    tx.execute(
        sqlx::query(
            "DELETE FROM webauthn_ceremonies WHERE ctid = ANY(ARRAY(
             SELECT ctid FROM webauthn_ceremonies WHERE expires_at < now() LIMIT $1))",
        )
        .bind(limit)
        .persistent(false),
    )
    .await?;
    // OAuth authorization codes live a minute; a day after they expired they go too.
    tx.execute(
        sqlx::query(
            "DELETE FROM oauth_codes WHERE ctid = ANY(ARRAY(
             SELECT ctid FROM oauth_codes WHERE expires_at < now() - interval '1 day' LIMIT $1))",
        )
        .bind(limit)
        .persistent(false),
    )
    .await?;
    tx.execute(
        sqlx::query(
            "DELETE FROM mfa_challenges WHERE ctid = ANY(ARRAY(
             SELECT ctid FROM mfa_challenges WHERE expires_at < now() - make_interval(days => $1)
                AND user_id <> ALL($3) LIMIT $2))",
        )
        .bind(days)
        .bind(limit)
        .bind(held)
        .persistent(false),
    )
    .await
}

/// Up to `limit` users deleted `days` ago, locked until the transaction ends: nothing can refer
/// to them meanwhile (a foreign key check waits for the lock), and a replica purging at the same
/// time skips them. None of the `held` users.
pub async fn lock_erased_users(
    tx: &mut TenantTx,
    days: i32,
    limit: i64,
    held: &[uuid::Uuid],
) -> Result<Vec<uuid::Uuid>, ApiError> {
    tx.scalars(
        sqlx::query_scalar(
            "SELECT id FROM users WHERE status = 'deleted' AND deleted_at < now() - make_interval(days => $1)
                AND id <> ALL($3)
              ORDER BY deleted_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(days)
        .bind(limit)
        .bind(held)
        .persistent(false),
    )
    .await
}

/// What refers to a user, children before parents. The deletion of a user already removed their
/// second factors, memberships, grants and email index rows (`users::erase`); they are here too,
/// so that nothing a foreign key protects can keep the row. Revoked API keys leave the control
/// schema's index of key hashes too.
const USER_REFERENCES: [&str; 15] = [
    "DELETE FROM refresh_tokens t USING sessions s WHERE s.id = t.session_id AND s.user_id = ANY($1)",
    "DELETE FROM sessions WHERE user_id = ANY($1)",
    "DELETE FROM control.api_key_index i USING api_keys k WHERE k.key_hash = i.key_hash AND k.user_id = ANY($1)",
    "DELETE FROM api_keys WHERE user_id = ANY($1)",
    "DELETE FROM appeal_messages m USING appeals a WHERE a.id = m.appeal_id AND a.user_id = ANY($1)",
    "DELETE FROM appeals WHERE user_id = ANY($1)",
    "DELETE FROM mfa_totp WHERE user_id = ANY($1)",
    "DELETE FROM backup_codes WHERE user_id = ANY($1)",
    "DELETE FROM mfa_challenges WHERE user_id = ANY($1)",
    "DELETE FROM group_members WHERE user_id = ANY($1)",
    "DELETE FROM role_grants WHERE user_id = ANY($1)",
    "DELETE FROM user_email_index WHERE user_id = ANY($1)",
    "DELETE FROM oauth_codes WHERE user_id = ANY($1)",
    "DELETE FROM passkeys WHERE user_id = ANY($1)",
    "DELETE FROM webauthn_ceremonies WHERE user_id = ANY($1)",
];

/// Deletes the (locked, deleted) `users` and every row that refers to them; returns `(users,
/// rows that referred to them)`.
pub async fn delete_erased_users(tx: &mut TenantTx, users: &[uuid::Uuid]) -> Result<(u64, u64), ApiError> {
    let mut references = 0;
    for sql in USER_REFERENCES {
        references += tx.execute(sqlx::query(sql).bind(users).persistent(false)).await?;
    }
    let removed = tx
        .execute(
            sqlx::query("DELETE FROM users WHERE id = ANY($1) AND status = 'deleted'").bind(users).persistent(false),
        )
        .await?;
    Ok((removed, references))
}

/// Deletes up to `limit` data-subject requests closed `days` ago, with their steps; none about
/// the `held` users. Returns how many requests.
pub async fn delete_closed_privacy_requests(
    tx: &mut TenantTx,
    days: i32,
    limit: i64,
    held: &[uuid::Uuid],
) -> Result<u64, ApiError> {
    let held: Vec<String> = held.iter().map(uuid::Uuid::to_string).collect();
    let due: Vec<uuid::Uuid> = tx
        .scalars(
            sqlx::query_scalar(
                "SELECT id FROM privacy_requests WHERE closed_at < now() - make_interval(days => $1)
                    AND NOT (subject_kind = 'user' AND subject_id = ANY($3))
                  ORDER BY closed_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            )
            .bind(days)
            .bind(limit)
            .bind(&held)
            .persistent(false),
        )
        .await?;
    if due.is_empty() {
        return Ok(0);
    }
    tx.execute(
        sqlx::query("DELETE FROM privacy_request_steps WHERE request_id = ANY($1)").bind(&due).persistent(false),
    )
    .await?;
    tx.execute(sqlx::query("DELETE FROM privacy_requests WHERE id = ANY($1)").bind(&due).persistent(false)).await
}

/// How many rows a legal hold keeps that the policy would have removed: expired refresh
/// tokens, MFA challenges, deleted users and closed data-subject requests of the `held` users, or
/// of everyone when `tenant`.
pub async fn count_held(
    tx: &mut TenantTx,
    policy: &crate::domain::retention::RetentionPolicy,
    held: &[uuid::Uuid],
    tenant: bool,
) -> Result<u64, ApiError> {
    let n: i64 = tx
        .scalar(
            sqlx::query_scalar(
                "SELECT (SELECT count(*) FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
                          WHERE t.expires_at < now() - make_interval(days => $1) AND ($4 OR s.user_id = ANY($3)))
                      + (SELECT count(*) FROM mfa_challenges
                          WHERE expires_at < now() - make_interval(days => $2) AND ($4 OR user_id = ANY($3)))
                      + (SELECT count(*) FROM users WHERE status = 'deleted'
                            AND deleted_at < now() - make_interval(days => $5) AND ($4 OR id = ANY($3)))
                      + (SELECT count(*) FROM privacy_requests WHERE closed_at < now() - make_interval(days => $6)
                            AND ($4 OR (subject_kind = 'user' AND subject_id = ANY($3::text[]))))",
            )
            .bind(policy.ended_sessions_days)
            .bind(policy.mfa_challenges_days)
            .bind(held)
            .bind(tenant)
            .bind(policy.erased_users_days)
            .bind(policy.privacy_requests_days)
            .persistent(false),
        )
        .await?;
    Ok(u64::try_from(n).unwrap_or_default())
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
