//! SQL of suspension appeals and their messages.

use kit::{ApiError, TenantTx};

use crate::error::AuthError;

/// An appeal as stored (its messages' bodies sealed).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AppealRow {
    pub id: uuid::Uuid,
    pub user_id: uuid::Uuid,
    pub status: String,
    /// Plaintext in rows from before auth tenant migration 0015 (and for reasons auth-svc writes).
    pub suspension_reason: Option<String>,
    pub suspension_reason_sealed: Option<String>,
    pub decision_reason: Option<String>,
    pub decision_reason_sealed: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub decided_at: Option<chrono::DateTime<chrono::Utc>>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// A message of an appeal, its body sealed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageRow {
    pub id: uuid::Uuid,
    pub appeal_id: uuid::Uuid,
    pub author: String,
    pub body_sealed: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

const APPEAL_COLUMNS: &str =
    "id, user_id, status, suspension_reason, suspension_reason_sealed, decision_reason, decision_reason_sealed,
     created_at, decided_at, updated_at";

/// Files an appeal `id` of `user` against the suspension's reason (sealed for the appeal's row);
/// `APPEAL_OPEN` when one is waiting.
pub async fn insert(
    tx: &mut TenantTx,
    id: uuid::Uuid,
    user: uuid::Uuid,
    suspension_reason_sealed: Option<&str>,
) -> Result<(), ApiError> {
    let inserted = tx
        .execute(
            sqlx::query(
                "INSERT INTO appeals (id, user_id, suspension_reason_sealed) VALUES ($1, $2, $3)
                 ON CONFLICT (tenant_id, user_id) WHERE status IN ('open', 'information_requested') DO NOTHING",
            )
            .bind(id)
            .bind(user)
            .bind(suspension_reason_sealed),
        )
        .await?;
    if inserted == 0 {
        return Err(AuthError::AppealOpen.into());
    }
    Ok(())
}

/// Adds message `id` (sealed) by `author` (`user`, `staff`) to appeal `appeal`.
pub async fn add_message(
    tx: &mut TenantTx,
    id: uuid::Uuid,
    appeal: uuid::Uuid,
    author: &str,
    author_id: &str,
    body_sealed: &str,
) -> Result<(), ApiError> {
    tx.execute(
        sqlx::query(
            "INSERT INTO appeal_messages (id, appeal_id, author, author_id, body_sealed) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(appeal)
        .bind(author)
        .bind(author_id)
        .bind(body_sealed),
    )
    .await
    .map(drop)
}

/// Appeal `id`, locked until the transaction ends.
pub async fn for_update(tx: &mut TenantTx, id: uuid::Uuid) -> Result<AppealRow, ApiError> {
    let sql = format!("SELECT {APPEAL_COLUMNS} FROM appeals WHERE id = $1 FOR UPDATE");
    tx.optional(sqlx::query_as(&sql).bind(id)).await?.ok_or_else(|| AuthError::AppealNotFound.into())
}

/// The user's latest appeal, locked until the transaction ends.
pub async fn latest_of(tx: &mut TenantTx, user: uuid::Uuid) -> Result<Option<AppealRow>, ApiError> {
    let sql =
        format!("SELECT {APPEAL_COLUMNS} FROM appeals WHERE user_id = $1 ORDER BY created_at DESC LIMIT 1 FOR UPDATE");
    tx.optional(sqlx::query_as(&sql).bind(user)).await
}

/// Every appeal of the user, oldest first (for the data export).
pub async fn all_of(tx: &mut TenantTx, user: uuid::Uuid) -> Result<Vec<AppealRow>, ApiError> {
    let sql = format!("SELECT {APPEAL_COLUMNS} FROM appeals WHERE user_id = $1 ORDER BY created_at");
    tx.all(sqlx::query_as(&sql).bind(user)).await
}

/// Moves appeal `id` to `status` (waiting states only).
pub async fn set_status(tx: &mut TenantTx, id: uuid::Uuid, status: &str) -> Result<(), ApiError> {
    tx.execute(sqlx::query("UPDATE appeals SET status = $2, updated_at = now() WHERE id = $1").bind(id).bind(status))
        .await
        .map(drop)
}

/// Decides appeal `id`: `lifted` or `upheld`, with its reason sealed, by `by`.
pub async fn decide(
    tx: &mut TenantTx,
    id: uuid::Uuid,
    status: &str,
    reason_sealed: &str,
    by: &str,
) -> Result<(), ApiError> {
    tx.execute(
        sqlx::query(
            "UPDATE appeals SET status = $2, decision_reason_sealed = $3, decision_reason = NULL, decided_by = $4,
                    decided_at = now(), updated_at = now()
              WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .bind(reason_sealed)
        .bind(by),
    )
    .await
    .map(drop)
}

/// Up to `limit` appeals in `statuses` after `after` (by `(updated_at, id)`, oldest first).
pub async fn page(
    tx: &mut TenantTx,
    statuses: &[&str],
    after: Option<(chrono::DateTime<chrono::Utc>, uuid::Uuid)>,
    limit: i64,
) -> Result<Vec<AppealRow>, ApiError> {
    let sql = format!(
        "SELECT {APPEAL_COLUMNS} FROM appeals
          WHERE status = ANY($1) AND ($2::timestamptz IS NULL OR (updated_at, id) > ($2, $3))
          ORDER BY updated_at, id LIMIT $4"
    );
    let (at, id) = after.map(|(t, i)| (Some(t), Some(i))).unwrap_or((None, None));
    tx.all(sqlx::query_as(&sql).bind(statuses).bind(at).bind(id).bind(limit)).await
}

/// The messages of `appeals`, oldest first.
pub async fn messages_of(tx: &mut TenantTx, appeals: &[uuid::Uuid]) -> Result<Vec<MessageRow>, ApiError> {
    tx.all(
        sqlx::query_as(
            "SELECT id, appeal_id, author, body_sealed, created_at FROM appeal_messages
              WHERE appeal_id = ANY($1) ORDER BY created_at, id",
        )
        .bind(appeals),
    )
    .await
}

/// Clears the sealed messages of the user's appeals (their key is shredded with them).
pub async fn erase_messages_of(tx: &mut TenantTx, user: uuid::Uuid) -> Result<(), ApiError> {
    tx.execute(
        sqlx::query(
            "UPDATE appeal_messages SET body_sealed = NULL
              WHERE appeal_id IN (SELECT id FROM appeals WHERE user_id = $1)",
        )
        .bind(user),
    )
    .await?;
    // The reasons too, sealed or (in rows from before sealing) plain.
    tx.execute(
        sqlx::query(
            "UPDATE appeals SET suspension_reason = NULL, suspension_reason_sealed = NULL, decision_reason = NULL,
                    decision_reason_sealed = NULL
              WHERE user_id = $1",
        )
        .bind(user),
    )
    .await
    .map(drop)
}
