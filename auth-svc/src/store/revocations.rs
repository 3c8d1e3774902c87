//! SQL of `control.revocations`, the database's side of the revocation list (`revocations.rs`
//! keeps Redis true to it). Every statement runs on the control pool: the rows of every tenant.

use kit::tenancy::db_error;
use kit::{ApiError, Db};

use crate::revocations::KEEP;

/// A revocation: its kind (as `kit::revocation::Revoked` spells it) and the id it revokes.
pub type Row = (String, uuid::Uuid);

/// Marks `rows` as listed in Redis.
pub async fn mark_listed(db: &Db, rows: &[Row]) -> Result<(), ApiError> {
    let (kinds, ids): (Vec<&str>, Vec<uuid::Uuid>) = rows.iter().map(|(k, id)| (k.as_str(), *id)).unzip();
    sqlx::query(
        "UPDATE control.revocations r SET listed_at = now()
           FROM unnest($1::text[], $2::uuid[]) AS u(kind, id)
          WHERE r.kind = u.kind AND r.id = u.id AND r.listed_at IS NULL",
    )
    .bind(&kinds)
    .bind(&ids)
    .execute(db.control_pool())
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Up to `limit` revocations of `tenant` (of every tenant with `None`) not listed yet, oldest
/// first.
pub async fn unlisted(db: &Db, tenant: Option<uuid::Uuid>, limit: i64) -> Result<Vec<Row>, ApiError> {
    sqlx::query_as(
        "SELECT kind, id FROM control.revocations
          WHERE listed_at IS NULL AND ($1::uuid IS NULL OR tenant_id = $1)
          ORDER BY revoked_at LIMIT $2",
    )
    .bind(tenant)
    .bind(limit)
    .fetch_all(db.control_pool())
    .await
    .map_err(db_error)
}

/// Up to `limit` revocations younger than [`KEEP`] that come after `after`, by kind and id.
pub async fn kept_after(db: &Db, after: &Row, limit: i64) -> Result<Vec<Row>, ApiError> {
    sqlx::query_as(&format!(
        "SELECT kind, id FROM control.revocations
          WHERE revoked_at > now() - interval '{KEEP}' AND (kind, id) > ($1, $2)
          ORDER BY kind, id LIMIT $3"
    ))
    .bind(&after.0)
    .bind(after.1)
    .bind(limit)
    .fetch_all(db.control_pool())
    .await
    .map_err(db_error)
}

/// Deletes up to `limit` revocations older than [`KEEP`]; returns how many.
pub async fn delete_expired(db: &Db, limit: i64) -> Result<u64, ApiError> {
    Ok(sqlx::query(&format!(
        "DELETE FROM control.revocations WHERE ctid = ANY(ARRAY(
             SELECT ctid FROM control.revocations WHERE revoked_at < now() - interval '{KEEP}' LIMIT $1))"
    ))
    .bind(limit)
    .execute(db.control_pool())
    .await
    .map_err(db_error)?
    .rows_affected())
}
