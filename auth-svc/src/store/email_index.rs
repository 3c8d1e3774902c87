//! SQL of the email blind index: its key versions (`email_index_keys`) and its rows
//! (`user_email_index`), and what a rotation of its key reads and writes.

use kit::{ApiError, TenantTx};

/// The live key versions (oldest first), locked against a rotation's activation until the
/// transaction ends: a writer that indexes an email under exactly these versions cannot miss one.
pub async fn live_versions(tx: &mut TenantTx) -> Result<Vec<i32>, ApiError> {
    tx.scalars(sqlx::query_scalar(
        "SELECT version FROM email_index_keys WHERE wrapped_key IS NOT NULL ORDER BY version FOR SHARE",
    ))
    .await
}

/// Adds key version `newest + 1` wrapped as `wrapped`, unless a rotation is under way (more than
/// one live version): then the newest live version, to finish. `None` if no key exists yet.
pub async fn start_rotation(tx: &mut TenantTx, wrapped: &str) -> Result<Option<i32>, ApiError> {
    let live = live_versions_for_update(tx).await?;
    match live.as_slice() {
        [] => Ok(None),
        [.., newest] if live.len() > 1 => Ok(Some(*newest)),
        _ => tx
            .scalar(
                sqlx::query_scalar(
                    "INSERT INTO email_index_keys (version, wrapped_key)
                     SELECT max(version) + 1, $1 FROM email_index_keys RETURNING version",
                )
                .bind(wrapped),
            )
            .await
            .map(Some),
    }
}

/// Up to `limit` users (not deleted, sealed) whose email has no index row under `version`: their
/// id and sealed email.
pub async fn unindexed(tx: &mut TenantTx, version: i32, limit: i64) -> Result<Vec<(uuid::Uuid, String)>, ApiError> {
    tx.all(
        sqlx::query_as(
            "SELECT u.id, u.email_sealed FROM users u
              WHERE u.status <> 'deleted' AND u.email_sealed IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM user_email_index i WHERE i.key_version = $1 AND i.user_id = u.id)
              ORDER BY u.id LIMIT $2",
        )
        .bind(version)
        .bind(limit),
    )
    .await
}

/// Indexes each `(user, blind)` under `version`; how many rows were added.
pub async fn insert(tx: &mut TenantTx, version: i32, rows: &[(uuid::Uuid, Vec<u8>)]) -> Result<u64, ApiError> {
    let (users, blinds): (Vec<uuid::Uuid>, Vec<Vec<u8>>) = rows.iter().cloned().unzip();
    tx.execute(
        sqlx::query(
            "INSERT INTO user_email_index (key_version, blind, user_id)
             SELECT $1, b, u FROM unnest($2::uuid[], $3::bytea[]) AS x(u, b) ON CONFLICT DO NOTHING",
        )
        .bind(version)
        .bind(users)
        .bind(blinds),
    )
    .await
}

/// Makes `version` the only live one if every user is indexed under it: retires the older
/// versions (their keys are dropped) and removes their rows; the key rows are locked first, so
/// no writer is indexing under the old versions only. `false` (nothing changed) while a user is
/// missing.
pub async fn activate(tx: &mut TenantTx, version: i32) -> Result<bool, ApiError> {
    live_versions_for_update(tx).await?;
    if !unindexed(tx, version, 1).await?.is_empty() {
        return Ok(false);
    }
    tx.execute(sqlx::query("DELETE FROM user_email_index WHERE key_version < $1").bind(version)).await?;
    tx.execute(
        sqlx::query(
            "UPDATE email_index_keys SET wrapped_key = NULL, retired_at = now()
              WHERE version < $1 AND wrapped_key IS NOT NULL",
        )
        .bind(version),
    )
    .await?;
    announce(tx).await?;
    Ok(true)
}

async fn live_versions_for_update(tx: &mut TenantTx) -> Result<Vec<i32>, ApiError> {
    tx.scalars(sqlx::query_scalar(
        "SELECT version FROM email_index_keys WHERE wrapped_key IS NOT NULL ORDER BY version FOR UPDATE",
    ))
    .await
}

/// Tells every replica (this one too) that the tenant's keys changed: each drops its cached ones.
pub async fn announce(tx: &mut TenantTx) -> Result<(), ApiError> {
    tx.execute(
        sqlx::query("SELECT pg_notify($1, current_setting('strongroom.tenant_id'))")
            .bind(kit::tenancy::KEY_INVALIDATION_CHANNEL),
    )
    .await
    .map(drop)
}
