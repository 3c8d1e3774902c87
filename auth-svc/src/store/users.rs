//! SQL of users and their direct role grants.

use kit::tenancy::db_error;
use kit::time::to_pb;
use kit::{ApiError, TenantTx};
use proto::auth::v1 as pb;

use crate::rbac;

#[derive(sqlx::FromRow)]
pub struct UserRow {
    pub id: uuid::Uuid,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub status: String,
    pub suspension_reason: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub mfa_enabled: bool,
}

pub const USER_COLUMNS: &str = "u.id, u.email, u.display_name, u.status, u.suspension_reason, u.created_at,
    EXISTS (SELECT 1 FROM mfa_totp m WHERE m.user_id = u.id AND m.confirmed_at IS NOT NULL) AS mfa_enabled";

pub async fn load_user(tx: &mut TenantTx, id: uuid::Uuid) -> Result<pb::User, ApiError> {
    #[derive(sqlx::FromRow)]
    struct WithRoles {
        #[sqlx(flatten)]
        user: UserRow,
        roles: Vec<String>,
    }
    let sql = format!("SELECT {USER_COLUMNS}, {} FROM users u WHERE u.id = $1", rbac::effective_columns("u.id"));
    let row: Option<WithRoles> = sqlx::query_as(&sql).bind(id).fetch_optional(tx.conn()).await.map_err(db_error)?;
    let row = row.ok_or_else(|| ApiError::not_found("USER_NOT_FOUND", "no such user"))?;
    Ok(user_pb(row.user, row.roles))
}

pub fn user_pb(row: UserRow, roles: Vec<String>) -> pb::User {
    pb::User {
        id: row.id.to_string(),
        email: row.email.unwrap_or_default(),
        display_name: row.display_name.unwrap_or_default(),
        status: match row.status.as_str() {
            "active" => pb::UserStatus::Active,
            "suspended" => pb::UserStatus::Suspended,
            _ => pb::UserStatus::Deleted,
        } as i32,
        suspension_reason: row.suspension_reason.unwrap_or_default(),
        mfa_enabled: row.mfa_enabled,
        roles,
        create_time: Some(to_pb(row.created_at)),
    }
}

/// A role by name: `(id, permissions)`.
pub async fn role_by_name(tx: &mut TenantTx, name: &str) -> Result<(uuid::Uuid, Vec<String>), ApiError> {
    let row: Option<(uuid::Uuid, Vec<String>)> = sqlx::query_as("SELECT id, permissions FROM roles WHERE name = $1")
        .bind(name)
        .fetch_optional(tx.conn())
        .await
        .map_err(db_error)?;
    row.ok_or_else(|| ApiError::not_found("ROLE_NOT_FOUND", format!("no role named {name:?}")))
}

/// Creates a user with `roles` granted directly (checks are the caller's business).
pub async fn insert_user(
    tx: &mut TenantTx,
    email: &str,
    display_name: &str,
    password_hash: &str,
    roles: &[String],
    granted_by: &str,
) -> Result<uuid::Uuid, ApiError> {
    let id: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO users (email, display_name, password_hash, password_changed_at) VALUES ($1, $2, $3, now())
         ON CONFLICT (tenant_id, email) WHERE email IS NOT NULL DO NOTHING RETURNING id",
    )
    .bind(email)
    .bind(display_name)
    .bind(password_hash)
    .fetch_optional(tx.conn())
    .await
    .map_err(db_error)?
    .ok_or_else(|| ApiError::already_exists("EMAIL_TAKEN", "a user with this email exists"))?;
    for role in roles {
        let (role_id, _) = role_by_name(tx, role).await?;
        sqlx::query(
            "INSERT INTO role_grants (role_id, user_id, granted_by) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(role_id)
        .bind(id)
        .bind(granted_by)
        .execute(tx.conn())
        .await
        .map_err(db_error)?;
    }
    Ok(id)
}
