//! SQL of legal holds, and of the users whose erasure one deferred.

use kit::{ApiError, TenantTx};

use crate::domain::legal_holds::Scope;
use crate::error::AuthError;

/// A hold as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HoldRow {
    pub id: uuid::Uuid,
    pub scope: String,
    pub subject_id: Option<uuid::Uuid>,
    pub reason: String,
    pub placed_by: String,
    pub placed_at: chrono::DateTime<chrono::Utc>,
    pub released_at: Option<chrono::DateTime<chrono::Utc>>,
    pub released_by: Option<String>,
    pub release_note: Option<String>,
}

impl HoldRow {
    /// What the hold covers (a row the migration's checks let through always has a scope).
    pub fn scope(&self) -> Option<Scope> {
        Scope::stored(&self.scope, self.subject_id)
    }
}

const COLUMNS: &str = "id, scope, subject_id, reason, placed_by, placed_at, released_at, released_by, release_note";

/// Places hold `id`; `HOLD_EXISTS` when the same scope and subject is held already.
pub async fn insert(
    tx: &mut TenantTx,
    id: uuid::Uuid,
    scope: Scope,
    reason: &str,
    placed_by: &str,
) -> Result<HoldRow, ApiError> {
    let sql = format!(
        "INSERT INTO legal_holds (id, scope, subject_id, reason, placed_by) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT DO NOTHING RETURNING {COLUMNS}"
    );
    let row = tx
        .optional(sqlx::query_as(&sql).bind(id).bind(scope.as_str()).bind(scope.subject()).bind(reason).bind(placed_by))
        .await?;
    row.ok_or_else(|| AuthError::HoldExists.into())
}

/// Locks user `id` (deleted ones too: a hold keeps their row from the purge) until the
/// transaction ends; `USER_NOT_FOUND` when there is none.
pub async fn lock_subject(tx: &mut TenantTx, id: uuid::Uuid) -> Result<(), ApiError> {
    let found: Option<uuid::Uuid> =
        tx.optional_scalar(sqlx::query_scalar("SELECT id FROM users WHERE id = $1 FOR UPDATE").bind(id)).await?;
    found.map(drop).ok_or_else(|| AuthError::UserNotFound.into())
}

/// Hold `id`, locked until the transaction ends; `HOLD_NOT_FOUND` when there is none.
pub async fn lock(tx: &mut TenantTx, id: uuid::Uuid) -> Result<HoldRow, ApiError> {
    let sql = format!("SELECT {COLUMNS} FROM legal_holds WHERE id = $1 FOR UPDATE");
    tx.optional(sqlx::query_as(&sql).bind(id)).await?.ok_or_else(|| AuthError::HoldNotFound.into())
}

/// Releases (active, locked) hold `id`.
pub async fn release(tx: &mut TenantTx, id: uuid::Uuid, by: &str, note: &str) -> Result<HoldRow, ApiError> {
    let sql = format!(
        "UPDATE legal_holds SET released_at = now(), released_by = $2, release_note = NULLIF($3, '')
          WHERE id = $1 AND released_at IS NULL RETURNING {COLUMNS}"
    );
    tx.optional(sqlx::query_as(&sql).bind(id).bind(by).bind(note)).await?.ok_or_else(|| AuthError::HoldReleased.into())
}

/// Every hold, active ones first, then newest first.
pub async fn all(tx: &mut TenantTx) -> Result<Vec<HoldRow>, ApiError> {
    let sql = format!("SELECT {COLUMNS} FROM legal_holds ORDER BY released_at IS NOT NULL, placed_at DESC, id");
    tx.all(sqlx::query_as(&sql)).await
}

/// The scopes of the active holds (a handful at most).
pub async fn active(tx: &mut TenantTx) -> Result<Vec<Scope>, ApiError> {
    let rows: Vec<HoldRow> =
        tx.all(sqlx::query_as(&format!("SELECT {COLUMNS} FROM legal_holds WHERE released_at IS NULL"))).await?;
    Ok(rows.iter().filter_map(HoldRow::scope).collect())
}

/// The active holds that cover `user`, share-locked until the transaction ends: a release waits
/// for the deletion that saw them, so it finds the erasure that deletion deferred.
pub async fn covering(tx: &mut TenantTx, user: uuid::Uuid) -> Result<Vec<uuid::Uuid>, ApiError> {
    tx.scalars(
        sqlx::query_scalar(
            "SELECT id FROM legal_holds WHERE released_at IS NULL AND (scope = 'tenant' OR subject_id = $1)
          ORDER BY id FOR SHARE",
        )
        .bind(user),
    )
    .await
}

/// The users whose erasure a hold deferred (not erased since), with when it was asked for.
pub async fn deferred(tx: &mut TenantTx) -> Result<Vec<(uuid::Uuid, chrono::DateTime<chrono::Utc>)>, ApiError> {
    let rows: Vec<(uuid::Uuid, chrono::DateTime<chrono::Utc>)> = tx
        .all(sqlx::query_as(
            "SELECT id, erasure_deferred_at FROM users
              WHERE erasure_deferred_at IS NOT NULL AND status <> 'deleted' ORDER BY erasure_deferred_at, id",
        ))
        .await?;
    Ok(rows)
}
