//! SQL of roles and their grants to users and groups (`roles`, `role_grants`).

use kit::tenancy::db_error;
use kit::{ApiError, TenantTx};
use proto::auth::v1 as pb;

use crate::error::AuthError;

/// Who a role is granted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grantee {
    User(uuid::Uuid),
    Group(uuid::Uuid),
}

impl Grantee {
    /// The grantee's column in `role_grants`, and its id.
    fn column(self) -> (&'static str, uuid::Uuid) {
        match self {
            Grantee::User(id) => ("user_id", id),
            Grantee::Group(id) => ("group_id", id),
        }
    }
}

/// A role by name: `(id, permissions)`.
pub async fn by_name(tx: &mut TenantTx, name: &str) -> Result<(uuid::Uuid, Vec<String>), ApiError> {
    let row: Option<(uuid::Uuid, Vec<String>)> = sqlx::query_as("SELECT id, permissions FROM roles WHERE name = $1")
        .bind(name)
        .fetch_optional(tx.conn())
        .await
        .map_err(db_error)?;
    row.ok_or_else(|| AuthError::NoRoleNamed(name.to_owned()).into())
}

/// Up to `limit` roles named after `after`, by name (names are unique in a tenant).
pub async fn page(tx: &mut TenantTx, after: &str, limit: i64) -> Result<Vec<pb::Role>, ApiError> {
    let rows: Vec<(uuid::Uuid, String, String, Vec<String>, bool)> = sqlx::query_as(
        "SELECT id, name, description, permissions, builtin FROM roles WHERE name > $1 ORDER BY name LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(tx.conn())
    .await
    .map_err(db_error)?;
    Ok(rows
        .into_iter()
        .map(|(id, name, description, permissions, builtin)| pb::Role {
            id: id.to_string(),
            name,
            description,
            permissions,
            builtin,
        })
        .collect())
}

/// Creates a custom role; `ROLE_EXISTS` when the name is taken.
pub async fn insert(
    tx: &mut TenantTx,
    name: &str,
    description: &str,
    permissions: &[String],
) -> Result<uuid::Uuid, ApiError> {
    let id: Option<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO roles (name, description, permissions) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(name)
    .bind(description)
    .bind(permissions)
    .fetch_optional(tx.conn())
    .await
    .map_err(db_error)?;
    id.ok_or_else(|| AuthError::RoleExists.into())
}

/// Whether role `id` is built in; `None` when there is no such role.
pub async fn builtin(tx: &mut TenantTx, id: uuid::Uuid) -> Result<Option<bool>, ApiError> {
    sqlx::query_scalar("SELECT builtin FROM roles WHERE id = $1")
        .bind(id)
        .fetch_optional(tx.conn())
        .await
        .map_err(db_error)
}

/// The permissions role `id` grants.
pub async fn permissions(tx: &mut TenantTx, id: uuid::Uuid) -> Result<Vec<String>, ApiError> {
    sqlx::query_scalar("SELECT permissions FROM roles WHERE id = $1")
        .bind(id)
        .fetch_one(tx.conn())
        .await
        .map_err(db_error)
}

/// Deletes role `id` (its grants go with it).
pub async fn delete(tx: &mut TenantTx, id: uuid::Uuid) -> Result<(), ApiError> {
    sqlx::query("DELETE FROM roles WHERE id = $1").bind(id).execute(tx.conn()).await.map_err(db_error)?;
    Ok(())
}

/// Grants role `role` to `grantee` (again: nothing); `GRANTEE_NOT_FOUND` when there is no such
/// user or group.
pub async fn grant(tx: &mut TenantTx, role: uuid::Uuid, grantee: Grantee, granted_by: &str) -> Result<(), ApiError> {
    let (column, id) = grantee.column();
    sqlx::query(&format!(
        "INSERT INTO role_grants (role_id, {column}, granted_by) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
    ))
    .bind(role)
    .bind(id)
    .bind(granted_by)
    .execute(tx.conn())
    .await
    .map_err(|e| super::missing_reference(e, AuthError::GranteeNotFound))?;
    Ok(())
}

/// Takes role `role` from `grantee`.
pub async fn revoke(tx: &mut TenantTx, role: uuid::Uuid, grantee: Grantee) -> Result<(), ApiError> {
    let (column, id) = grantee.column();
    sqlx::query(&format!("DELETE FROM role_grants WHERE role_id = $1 AND {column} = $2"))
        .bind(role)
        .bind(id)
        .execute(tx.conn())
        .await
        .map_err(db_error)?;
    Ok(())
}
