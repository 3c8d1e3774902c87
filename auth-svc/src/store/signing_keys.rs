//! SQL of the tenant's token signing keys: the sealed private halves in `token_signing_keys` and
//! their public halves in the JWKS, `control.signing_keys` (bound to the tenant). Which key signs
//! and when one rotates is decided in `tokens.rs`.

use std::time::Duration;

use kit::{ApiError, TenantTx};

/// The key that signs now: its kid, its sealed private half, and in how many seconds the next
/// one (already published) takes over, if one is.
pub type ActiveRow = (String, String, Option<f64>);

/// Serializes, per tenant and across replicas, what changes the tenant's signing keys (creating the
/// first one, rotating), for the rest of `tx`.
pub async fn lock(tx: &mut TenantTx) -> Result<(), ApiError> {
    tx.execute(
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('strongroom.auth.signing-key.' || $1, 0))")
            .bind(tx.tenant().id.0.to_string()),
    )
    .await?;
    Ok(())
}

/// Stores key `kid` (its sealed private half) to sign `delay` after the transaction's start and
/// publishes its public half `jwk` in the JWKS; returns when it starts signing.
pub async fn insert(
    tx: &mut TenantTx,
    kid: &str,
    sealed_private: &str,
    jwk: &serde_json::Value,
    delay: Duration,
) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    let activates_at: chrono::DateTime<chrono::Utc> = tx
        .scalar(
            sqlx::query_scalar(
                "INSERT INTO token_signing_keys (kid, sealed_private, activates_at)
         VALUES ($1, $2, now() + make_interval(secs => $3)) RETURNING activates_at",
            )
            .bind(kid)
            .bind(sealed_private)
            .bind(delay.as_secs_f64()),
        )
        .await?;
    let tenant = tx.tenant().id.0;
    tx.execute(
        sqlx::query("INSERT INTO control.signing_keys (kid, alg, public_jwk, tenant_id) VALUES ($1, 'EdDSA', $2, $3)")
            .bind(kid)
            .bind(jwk)
            .bind(tenant),
    )
    .await?;
    Ok(activates_at)
}

/// The key that signs now, if the tenant has one.
pub async fn active(tx: &mut TenantTx) -> Result<Option<ActiveRow>, ApiError> {
    tx.optional(sqlx::query_as(
        "SELECT kid, sealed_private,
                (SELECT extract(epoch FROM min(n.activates_at) - now())::float8
                   FROM token_signing_keys n WHERE n.activates_at > now()) AS next_in
           FROM token_signing_keys
          WHERE activates_at <= now() AND (retired_at IS NULL OR retired_at > now())
          ORDER BY activates_at DESC LIMIT 1",
    ))
    .await
}

/// Whether the newest key started signing at least `after` ago; `None` when there is no key.
pub async fn newest_signed_for(tx: &mut TenantTx, after: Duration) -> Result<Option<bool>, ApiError> {
    tx.scalar(
        sqlx::query_scalar("SELECT max(activates_at) <= now() - make_interval(secs => $1) FROM token_signing_keys")
            .bind(after.as_secs_f64()),
    )
    .await
}

/// Retires every key but `kid` at `retired_at` and unpublishes each at `unpublished_at`; returns
/// the kids it retired.
pub async fn retire_all_but(
    tx: &mut TenantTx,
    kid: &str,
    retired_at: chrono::DateTime<chrono::Utc>,
    unpublished_at: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<String>, ApiError> {
    let old: Vec<String> = tx
        .scalars(
            sqlx::query_scalar(
                "UPDATE token_signing_keys SET retired_at = $2 WHERE kid <> $1 AND retired_at IS NULL RETURNING kid",
            )
            .bind(kid)
            .bind(retired_at),
        )
        .await?;
    tx.execute(
        sqlx::query("UPDATE control.signing_keys SET expires_at = $2 WHERE kid = ANY($1)")
            .bind(&old)
            .bind(unpublished_at),
    )
    .await?;
    Ok(old)
}
