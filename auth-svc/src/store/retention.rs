//! SQL of the tenant's retention policy (`identity_retention_policy`, one row per tenant).

use chrono::{DateTime, Utc};
use kit::{ApiError, TenantTx};

use crate::domain::retention::RetentionPolicy;

/// The tenant's retention policy and when it last changed.
pub async fn get(tx: &mut TenantTx) -> Result<(RetentionPolicy, DateTime<Utc>), ApiError> {
    let (ended_sessions_days, mfa_challenges_days, erased_users_days, privacy_requests_days, updated_at) = tx
        .one(sqlx::query_as(
            "SELECT ended_sessions_days, mfa_challenges_days, erased_users_days, privacy_requests_days, updated_at
               FROM identity_retention_policy",
        ))
        .await?;
    let policy = RetentionPolicy { ended_sessions_days, mfa_challenges_days, erased_users_days, privacy_requests_days };
    Ok((policy, updated_at))
}

/// The policy, locked until the transaction ends (an update reads what it replaces).
pub async fn get_for_update(tx: &mut TenantTx) -> Result<RetentionPolicy, ApiError> {
    tx.one(sqlx::query_as(
        "SELECT ended_sessions_days, mfa_challenges_days, erased_users_days, privacy_requests_days
           FROM identity_retention_policy FOR UPDATE",
    ))
    .await
}

/// Replaces the policy with `p` (checked by the caller); returns when that happened.
pub async fn update(tx: &mut TenantTx, p: &RetentionPolicy) -> Result<DateTime<Utc>, ApiError> {
    tx.scalar(
        sqlx::query_scalar(
            "UPDATE identity_retention_policy SET ended_sessions_days = $1, mfa_challenges_days = $2, erased_users_days = $3,
                privacy_requests_days = $4, updated_at = now()
             RETURNING updated_at",
        )
        .bind(p.ended_sessions_days)
        .bind(p.mfa_challenges_days)
        .bind(p.erased_users_days)
        .bind(p.privacy_requests_days),
    )
    .await
}
