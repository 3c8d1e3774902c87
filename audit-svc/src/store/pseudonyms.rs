//! SQL of `pseudonym_keys`: the tenant's pseudonym keys, stored only wrapped by vault-svc.

use kit::{ApiError, TenantTx};

/// `(version, wrapped key)` of the newest pseudonym key.
pub async fn newest(tx: &mut TenantTx) -> Result<Option<(i32, String)>, ApiError> {
    tx.optional(sqlx::query_as("SELECT version, wrapped_key FROM pseudonym_keys ORDER BY version DESC LIMIT 1")).await
}

/// Stores `wrapped` as key version 1 unless a first key is stored already (two replicas may race:
/// the first insert wins).
pub async fn insert_first(tx: &mut TenantTx, wrapped: &str) -> Result<(), ApiError> {
    let insert = sqlx::query("INSERT INTO pseudonym_keys (version, wrapped_key) VALUES (1, $1) ON CONFLICT DO NOTHING");
    tx.execute(insert.bind(wrapped)).await.map(drop)
}
