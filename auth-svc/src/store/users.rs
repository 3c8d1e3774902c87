//! SQL of users: their profile, status, password and erasure, and their direct role grants at
//! creation.

use kit::time::to_pb;
use kit::{ApiError, TenantTx};
use proto::auth::v1 as pb;

use crate::error::AuthError;
use crate::store::roles::{self, Grantee};

#[derive(sqlx::FromRow)]
struct UserRow {
    id: uuid::Uuid,
    email: Option<String>,
    display_name: Option<String>,
    status: String,
    suspension_reason: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    mfa_enabled: bool,
}

const USER_COLUMNS: &str = "u.id, u.email, u.display_name, u.status, u.suspension_reason, u.created_at,
    EXISTS (SELECT 1 FROM mfa_totp m WHERE m.user_id = u.id AND m.confirmed_at IS NOT NULL) AS mfa_enabled";

/// A user with its effective roles.
#[derive(sqlx::FromRow)]
struct WithRoles {
    #[sqlx(flatten)]
    user: UserRow,
    roles: Vec<String>,
}

impl From<WithRoles> for pb::User {
    fn from(row: WithRoles) -> Self {
        user_pb(row.user, row.roles)
    }
}

/// `SELECT` of users `u` as [`WithRoles`], to be followed by the statement's `WHERE`.
fn select_with_roles() -> String {
    format!("SELECT {USER_COLUMNS}, {} FROM users u", roles::effective_columns("u.id"))
}

/// User `id` with its effective roles; `USER_NOT_FOUND` when there is none.
pub async fn load_user(tx: &mut TenantTx, id: uuid::Uuid) -> Result<pb::User, ApiError> {
    let sql = format!("{} WHERE u.id = $1", select_with_roles());
    let row: Option<WithRoles> = tx.optional(sqlx::query_as(&sql).bind(id)).await?;
    Ok(row.ok_or(AuthError::UserNotFound)?.into())
}

fn user_pb(row: UserRow, roles: Vec<String>) -> pb::User {
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

/// Up to `limit` users (not deleted) with ids after `after`, by id, with their effective roles.
pub async fn page(tx: &mut TenantTx, after: uuid::Uuid, limit: i64) -> Result<Vec<pb::User>, ApiError> {
    let sql = format!("{} WHERE u.id > $1 AND u.status <> 'deleted' ORDER BY u.id LIMIT $2", select_with_roles());
    let rows: Vec<WithRoles> = tx.all(sqlx::query_as(&sql).bind(after).bind(limit)).await?;
    Ok(rows.into_iter().map(pb::User::from).collect())
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
    let id: uuid::Uuid = tx
        .optional_scalar(
            sqlx::query_scalar(
                "INSERT INTO users (email, display_name, password_hash, password_changed_at) VALUES ($1, $2, $3, now())
         ON CONFLICT (tenant_id, email) WHERE email IS NOT NULL DO NOTHING RETURNING id",
            )
            .bind(email)
            .bind(display_name)
            .bind(password_hash),
        )
        .await?
        .ok_or(AuthError::EmailTaken)?;
    for role in roles {
        let (role_id, _) = roles::by_name(tx, role).await?;
        roles::grant(tx, role_id, Grantee::User(id), granted_by).await?;
    }
    Ok(id)
}

/// Whether the tenant has any user at all.
pub async fn any(tx: &mut TenantTx) -> Result<bool, ApiError> {
    tx.scalar(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users)")).await
}

/// Whether user `id` is active; `None` when there is no such user.
pub async fn is_active(tx: &mut TenantTx, id: uuid::Uuid) -> Result<Option<bool>, ApiError> {
    tx.optional_scalar(sqlx::query_scalar("SELECT status = 'active' FROM users WHERE id = $1").bind(id)).await
}

/// Runs `sql` (an `UPDATE users` whose `$1` is the id) and refuses with `missing` when it changed
/// no row.
async fn update_one(
    tx: &mut TenantTx,
    sql: &str,
    id: uuid::Uuid,
    text: Option<&str>,
    missing: AuthError,
) -> Result<(), ApiError> {
    let mut query = sqlx::query(sql).bind(id);
    if let Some(text) = text {
        query = query.bind(text);
    }
    if tx.execute(query).await? == 0 {
        return Err(missing.into());
    }
    Ok(())
}

/// Sets the display name of a user who is not deleted; `USER_NOT_FOUND` otherwise.
pub async fn set_display_name(tx: &mut TenantTx, id: uuid::Uuid, name: &str) -> Result<(), ApiError> {
    let sql = "UPDATE users SET display_name = $2, updated_at = now() WHERE id = $1 AND status <> 'deleted'";
    update_one(tx, sql, id, Some(name), AuthError::UserNotFound).await
}

/// Suspends a user who is not deleted, with `reason`; `USER_NOT_FOUND` otherwise.
pub async fn suspend(tx: &mut TenantTx, id: uuid::Uuid, reason: &str) -> Result<(), ApiError> {
    let sql = "UPDATE users SET status = 'suspended', suspension_reason = $2, updated_at = now() WHERE id = $1 AND status <> 'deleted'";
    update_one(tx, sql, id, Some(reason), AuthError::UserNotFound).await
}

/// Reactivates a suspended user; `NOT_SUSPENDED` otherwise.
pub async fn reactivate(tx: &mut TenantTx, id: uuid::Uuid) -> Result<(), ApiError> {
    let sql = "UPDATE users SET status = 'active', suspension_reason = NULL, updated_at = now() WHERE id = $1 AND status = 'suspended'";
    update_one(tx, sql, id, None, AuthError::NotSuspended).await
}

/// Marks a user deleted and erases what identifies them: their profile and password, second
/// factors, pending logins, memberships, grants and their sessions' client details (the sessions
/// themselves and API keys are ended by the caller). `USER_NOT_FOUND` when there is no such user
/// or it is deleted already.
pub async fn erase(tx: &mut TenantTx, id: uuid::Uuid) -> Result<(), ApiError> {
    let sql = "UPDATE users SET status = 'deleted', email = NULL, display_name = NULL, password_hash = NULL,
                    suspension_reason = NULL, deleted_at = now(), updated_at = now()
              WHERE id = $1 AND status <> 'deleted'";
    update_one(tx, sql, id, None, AuthError::UserNotFound).await?;
    for sql in [
        "DELETE FROM mfa_totp WHERE user_id = $1",
        "DELETE FROM backup_codes WHERE user_id = $1",
        "DELETE FROM mfa_challenges WHERE user_id = $1",
        "DELETE FROM group_members WHERE user_id = $1",
        "DELETE FROM role_grants WHERE user_id = $1",
        "UPDATE sessions SET ip = '', user_agent = '' WHERE user_id = $1",
    ] {
        tx.execute(sqlx::query(sql).bind(id)).await?;
    }
    Ok(())
}

/// The user's password hash (none for a deleted user), locked until the transaction ends.
pub async fn password_hash_for_update(tx: &mut TenantTx, id: uuid::Uuid) -> Result<Option<String>, ApiError> {
    Ok(tx
        .optional_scalar(sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1 FOR UPDATE").bind(id))
        .await?
        .flatten())
}

/// Stores a new hash of the user's password: a password the user `changed`, or the same one
/// hashed again with the current parameters.
pub async fn set_password_hash(tx: &mut TenantTx, id: uuid::Uuid, hash: &str, changed: bool) -> Result<(), ApiError> {
    let sql = if changed {
        "UPDATE users SET password_hash = $2, password_changed_at = now(), updated_at = now() WHERE id = $1"
    } else {
        "UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1"
    };
    tx.execute(sqlx::query(sql).bind(id).bind(hash)).await?;
    Ok(())
}
