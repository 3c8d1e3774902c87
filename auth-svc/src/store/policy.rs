//! SQL of the tenant's identity policy (`tenant_policy`, one row per tenant).

use kit::{ApiError, TenantTx};

use crate::domain::policy::Policy;

/// The columns of [`Policy`] from `tenant_policy p`, for statements that read more in one go.
pub const POLICY_COLUMNS: &str = "p.lockout_threshold, p.lockout_window_secs, p.access_token_ttl_secs, p.refresh_token_ttl_secs, p.mfa_required_roles, p.privileged_permissions";

/// The tenant's policy.
pub async fn get(tx: &mut TenantTx) -> Result<Policy, ApiError> {
    tx.one(sqlx::query_as(&format!("SELECT {POLICY_COLUMNS} FROM tenant_policy p"))).await
}

/// Replaces the tenant's policy with `p` (checked by the caller); returns it as stored.
pub async fn update(tx: &mut TenantTx, p: &Policy) -> Result<Policy, ApiError> {
    tx.one(
        sqlx::query_as(&format!(
            "UPDATE tenant_policy p SET lockout_threshold = $1, lockout_window_secs = $2, access_token_ttl_secs = $3,
                refresh_token_ttl_secs = $4, mfa_required_roles = $5, privileged_permissions = $6, updated_at = now()
         RETURNING {POLICY_COLUMNS}"
        ))
        .bind(p.lockout_threshold)
        .bind(p.lockout_window_secs)
        .bind(p.access_token_ttl_secs)
        .bind(p.refresh_token_ttl_secs)
        .bind(&p.mfa_required_roles)
        .bind(&p.privileged_permissions),
    )
    .await
}
