//! SQL of data-subject requests and their steps (notes sealed).

use kit::{ApiError, TenantTx};

use crate::domain::privacy_requests::Status;
use crate::error::AuthError;

/// A request as stored, with whether it is overdue now (by the database's clock).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RequestRow {
    pub id: uuid::Uuid,
    pub request_type: String,
    pub subject_kind: String,
    pub subject_id: String,
    pub status: String,
    pub due_at: chrono::DateTime<chrono::Utc>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub overdue: bool,
    pub execution: Option<String>,
    pub executed_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A step of a request, its note sealed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StepRow {
    pub id: uuid::Uuid,
    pub request_id: uuid::Uuid,
    pub actor: String,
    pub action: String,
    pub status: String,
    pub note_sealed: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// A new request, as [`insert`] files it.
#[derive(Debug)]
pub struct NewRequest<'a> {
    pub id: uuid::Uuid,
    pub request_type: &'a str,
    pub subject_kind: &'a str,
    pub subject_id: &'a str,
    pub filed_by: &'a str,
    pub due_at: chrono::DateTime<chrono::Utc>,
}

const COLUMNS: &str = "id, request_type, subject_kind, subject_id, status, due_at, created_at, updated_at,
     (status IN ('received', 'in_progress') AND due_at < now()) AS overdue, execution, executed_at";

/// Files a request (status `received`).
pub async fn insert(tx: &mut TenantTx, r: &NewRequest<'_>) -> Result<(), ApiError> {
    tx.execute(
        sqlx::query(
            "INSERT INTO privacy_requests (id, request_type, subject_kind, subject_id, filed_by, due_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, now())",
        )
        .bind(r.id)
        .bind(r.request_type)
        .bind(r.subject_kind)
        .bind(r.subject_id)
        .bind(r.filed_by)
        .bind(r.due_at),
    )
    .await
    .map(drop)
}

/// Adds step `id` of `request` by `actor`, leaving it in `status`, with its sealed note.
pub async fn add_step(
    tx: &mut TenantTx,
    id: uuid::Uuid,
    request: uuid::Uuid,
    actor: &str,
    action: &str,
    status: Status,
    note_sealed: Option<&str>,
) -> Result<(), ApiError> {
    tx.execute(
        sqlx::query(
            "INSERT INTO privacy_request_steps (id, request_id, actor, action, status, note_sealed)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(request)
        .bind(actor)
        .bind(action)
        .bind(status.as_str())
        .bind(note_sealed),
    )
    .await
    .map(drop)
}

/// Request `id`, locked until the transaction ends when `lock`.
pub async fn get(tx: &mut TenantTx, id: uuid::Uuid, lock: bool) -> Result<RequestRow, ApiError> {
    let sql = format!("SELECT {COLUMNS} FROM privacy_requests WHERE id = $1{}", if lock { " FOR UPDATE" } else { "" });
    tx.optional(sqlx::query_as(&sql).bind(id)).await?.ok_or_else(|| AuthError::PrivacyRequestNotFound.into())
}

/// Moves request `id` to `status` (closed when final).
pub async fn set_status(tx: &mut TenantTx, id: uuid::Uuid, status: Status) -> Result<(), ApiError> {
    tx.execute(
        sqlx::query(
            "UPDATE privacy_requests SET status = $2, updated_at = now(),
                    closed_at = CASE WHEN $3 THEN now() END
              WHERE id = $1",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(status.is_final()),
    )
    .await
    .map(drop)
}

/// Records what executing request `id` did (`exported`, `erased`, `restricted`, `deferred`).
pub async fn set_execution(tx: &mut TenantTx, id: uuid::Uuid, execution: &str) -> Result<(), ApiError> {
    tx.execute(
        sqlx::query(
            "UPDATE privacy_requests SET execution = $2, executed_at = now(), updated_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(execution),
    )
    .await
    .map(drop)
}

/// The open requests whose erasure a legal hold deferred.
pub async fn deferred(tx: &mut TenantTx) -> Result<Vec<RequestRow>, ApiError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM privacy_requests
          WHERE execution = 'deferred' AND status IN ('received', 'in_progress') ORDER BY created_at, id"
    );
    tx.all(sqlx::query_as(&sql)).await
}

/// Up to `limit` requests in `statuses` (every status when empty) from `offset`: open ones past
/// their due date first, then by due date.
pub async fn page(tx: &mut TenantTx, statuses: &[&str], offset: i64, limit: i64) -> Result<Vec<RequestRow>, ApiError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM privacy_requests
          WHERE cardinality($1::text[]) = 0 OR status = ANY($1)
          ORDER BY overdue DESC, due_at, id OFFSET $2 LIMIT $3"
    );
    tx.all(sqlx::query_as(&sql).bind(statuses).bind(offset).bind(limit)).await
}

/// The requests about `subject` (kind and id), newest first.
pub async fn of_subject(tx: &mut TenantTx, kind: &str, id: &str) -> Result<Vec<RequestRow>, ApiError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM privacy_requests WHERE subject_kind = $1 AND subject_id = $2
          ORDER BY created_at DESC, id"
    );
    tx.all(sqlx::query_as(&sql).bind(kind).bind(id)).await
}

/// Open requests of the tenant past their due date.
pub async fn count_overdue(tx: &mut TenantTx) -> Result<i64, ApiError> {
    tx.scalar(sqlx::query_scalar(
        "SELECT count(*) FROM privacy_requests WHERE status IN ('received', 'in_progress') AND due_at < now()",
    ))
    .await
}

/// The steps of `requests`, oldest first.
pub async fn steps_of(tx: &mut TenantTx, requests: &[uuid::Uuid]) -> Result<Vec<StepRow>, ApiError> {
    tx.all(
        sqlx::query_as(
            "SELECT id, request_id, actor, action, status, note_sealed, created_at FROM privacy_request_steps
              WHERE request_id = ANY($1) ORDER BY created_at, id",
        )
        .bind(requests),
    )
    .await
}
