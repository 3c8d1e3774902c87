//! SQL of roles and their grants to users and groups (`roles`, `role_grants`), and what is read
//! through them: a user's effective roles and permissions, the users a change affects, the
//! tenant's active owners (and the lock that serialises changes to them). The rules that use
//! these (`covers`, escalation, the last owner) are in `rbac.rs`.

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
    let row: Option<(uuid::Uuid, Vec<String>)> =
        tx.optional(sqlx::query_as("SELECT id, permissions FROM roles WHERE name = $1").bind(name)).await?;
    row.ok_or_else(|| AuthError::NoRoleNamed(name.to_owned()).into())
}

/// Up to `limit` roles named after `after`, by name (names are unique in a tenant).
pub async fn page(tx: &mut TenantTx, after: &str, limit: i64) -> Result<Vec<pb::Role>, ApiError> {
    let rows: Vec<(uuid::Uuid, String, String, Vec<String>, bool)> = tx
        .all(
            sqlx::query_as(
                "SELECT id, name, description, permissions, builtin FROM roles WHERE name > $1 ORDER BY name LIMIT $2",
            )
            .bind(after)
            .bind(limit),
        )
        .await?;
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
    let id: Option<uuid::Uuid> = tx.optional_scalar(sqlx::query_scalar(
        "INSERT INTO roles (name, description, permissions) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(name)
    .bind(description)
    .bind(permissions)).await?;
    id.ok_or_else(|| AuthError::RoleExists.into())
}

/// Whether role `id` is built in; `None` when there is no such role.
pub async fn builtin(tx: &mut TenantTx, id: uuid::Uuid) -> Result<Option<bool>, ApiError> {
    tx.optional_scalar(sqlx::query_scalar("SELECT builtin FROM roles WHERE id = $1").bind(id)).await
}

/// The permissions role `id` grants.
pub async fn permissions(tx: &mut TenantTx, id: uuid::Uuid) -> Result<Vec<String>, ApiError> {
    tx.scalar(sqlx::query_scalar("SELECT permissions FROM roles WHERE id = $1").bind(id)).await
}

/// Deletes role `id` (its grants go with it).
pub async fn delete(tx: &mut TenantTx, id: uuid::Uuid) -> Result<(), ApiError> {
    tx.execute(sqlx::query("DELETE FROM roles WHERE id = $1").bind(id)).await?;
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
    tx.execute(
        sqlx::query(&format!("DELETE FROM role_grants WHERE role_id = $1 AND {column} = $2")).bind(role).bind(id),
    )
    .await?;
    Ok(())
}

/// The users a change affects, as SQL for [`first_uncovered`] (`$1` the id named): the user named.
pub const ONE_USER: &str = "SELECT $1::uuid";
/// The members of the group named.
pub const GROUP_MEMBERS: &str = "SELECT user_id FROM group_members WHERE group_id = $1";
/// The holders of the role named, directly or through a group.
pub const ROLE_HOLDERS: &str = "SELECT g.user_id FROM role_grants g WHERE g.role_id = $1 AND g.user_id IS NOT NULL
     UNION SELECT m.user_id FROM role_grants g JOIN group_members m ON m.group_id = g.group_id WHERE g.role_id = $1";

/// Two array columns, `roles` and `permissions`: the effective roles and permissions of the user
/// `user` (an SQL expression: a parameter or a column), sorted bytewise and without duplicates, so
/// that a statement reading a user can read them in the same round trip.
pub fn effective_columns(user: &str) -> String {
    // The roles held directly and through groups, each branch an index probe by holder (auth
    // tenant migration 0003). As one `g.user_id = … OR g.group_id IN (…)`, PostgreSQL could only
    // filter every grant of the tenant, at every login, refresh grant and permission check.
    let held = format!(
        "SELECT g.role_id FROM role_grants g WHERE g.user_id = {user}
         UNION ALL
         SELECT g.role_id FROM group_members m JOIN role_grants g ON g.group_id = m.group_id
          WHERE m.user_id = {user}"
    );
    format!(
        "ARRAY(SELECT DISTINCT r.name COLLATE \"C\" FROM roles r WHERE r.id IN ({held}) ORDER BY 1) AS roles,
         ARRAY(SELECT DISTINCT p COLLATE \"C\" FROM roles r CROSS JOIN LATERAL unnest(r.permissions) p
                WHERE r.id IN ({held}) ORDER BY 1) AS permissions"
    )
}

/// `(roles, permissions)` of a user, sorted and without duplicates.
pub async fn effective(tx: &mut TenantTx, user: uuid::Uuid) -> Result<(Vec<String>, Vec<String>), ApiError> {
    tx.one(sqlx::query_as(&format!("SELECT {}", effective_columns("$1"))).bind(user)).await
}

/// The first permission held by one of the users `users` selects (one of [`ONE_USER`],
/// [`GROUP_MEMBERS`], [`ROLE_HOLDERS`], whose `$1` is `param`) that is not in `covered`.
pub async fn first_uncovered(
    tx: &mut TenantTx,
    users: &str,
    param: uuid::Uuid,
    covered: &[String],
) -> Result<Option<String>, ApiError> {
    let sql = format!(
        "SELECT p FROM ({users}) a(id) CROSS JOIN LATERAL (SELECT {}) e CROSS JOIN LATERAL unnest(e.permissions) p
          WHERE p <> ALL($2::text[]) LIMIT 1",
        effective_columns("a.id")
    );
    tx.optional_scalar(sqlx::query_scalar(&sql).bind(param).bind(covered)).await
}

/// Serialises, per tenant, the changes that could remove an owner, so that two of them cannot
/// each see the other's owner remain.
pub async fn lock_owners(tx: &mut TenantTx) -> Result<(), ApiError> {
    tx.execute(sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtext('strongroom.owners.' || current_setting('strongroom.tenant_id')))",
    ))
    .await?;
    Ok(())
}

/// How many active users hold the built-in owner role, directly or through a group.
pub async fn active_owners(tx: &mut TenantTx) -> Result<i64, ApiError> {
    tx.scalar(sqlx::query_scalar(
        "SELECT count(*) FROM users u WHERE u.status = 'active' AND u.id IN (
             SELECT g.user_id FROM role_grants g JOIN roles r ON r.id = g.role_id
              WHERE r.name = 'owner' AND r.builtin AND g.user_id IS NOT NULL
             UNION ALL
             SELECT m.user_id FROM role_grants g JOIN roles r ON r.id = g.role_id
               JOIN group_members m ON m.group_id = g.group_id
              WHERE r.name = 'owner' AND r.builtin)",
    ))
    .await
}
