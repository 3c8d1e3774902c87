//! SQL of retention: the tenant's `retention_policy`, the deployment's floor under it,
//! `audit_prune` (tenant migration 0005), the only way past the log's append-only triggers, and
//! whether a legal hold defers it.

use kit::{ApiError, TenantTx};

/// `(retention_days, pruned_below)`: the tenant's configured retention, if any, and how many
/// entries from the front of the log were pruned.
pub async fn policy(tx: &mut TenantTx) -> Result<(Option<u32>, u64), ApiError> {
    let (days, below): (Option<i32>, i64) = tx.one(sqlx::query_as(
        "SELECT (SELECT retention_days FROM retention_policy), (SELECT coalesce(max(pruned_below), 0) FROM prune_marks)",
    )).await?;
    Ok((days.map(|d| d as u32), below as u64))
}

/// The deployment's least retention in days (audit control migration 0001).
pub async fn floor(tx: &mut TenantTx) -> Result<i32, ApiError> {
    tx.scalar(sqlx::query_scalar("SELECT days FROM control.audit_retention_floor")).await
}

/// Sets the tenant's retention; returns the previous one, if any. The database refuses less than
/// the floor.
pub async fn set(tx: &mut TenantTx, days: i32) -> Result<Option<i32>, ApiError> {
    tx.scalar(sqlx::query_scalar("SELECT audit_set_retention($1)").bind(days)).await
}

/// Whether the tenant's schema has `audit_prune` yet (it is provisioned for audit-svc).
pub async fn prunable(tx: &mut TenantTx) -> Result<bool, ApiError> {
    tx.scalar(sqlx::query_scalar("SELECT to_regprocedure('audit_prune(bigint)') IS NOT NULL")).await
}

/// Prunes at most `limit` entries beyond retention from the front of the log; returns the new
/// `pruned_below`.
pub async fn prune(tx: &mut TenantTx, limit: i64) -> Result<u64, ApiError> {
    let below: i64 = tx.scalar(sqlx::query_scalar("SELECT audit_prune($1)").bind(limit)).await?;
    Ok(below as u64)
}

/// Whether the tenant is under an active tenant-wide legal hold, which defers pruning.
/// `legal_holds` is auth-svc's; audit-svc may read only these columns (auth tenant migration 0012,
/// a published contract), and row-level security keeps it to this tenant.
pub async fn tenant_held(tx: &mut TenantTx) -> Result<bool, ApiError> {
    tx.scalar(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM legal_holds WHERE scope = 'tenant' AND released_at IS NULL)",
    ))
    .await
}
