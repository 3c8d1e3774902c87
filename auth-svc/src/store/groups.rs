//! SQL of groups and their members (`groups`, `group_members`).

use kit::{ApiError, TenantTx};
use proto::auth::v1 as pb;

use crate::error::AuthError;

/// The columns of a group as `Group` carries them: its member count and its roles, not its
/// members (a group may hold every user of the tenant; `ListGroupMembers` pages through them).
const GROUP_COLUMNS: &str = "g.id, g.name, g.description, \
     (SELECT count(*) FROM group_members m WHERE m.group_id = g.id) AS member_count, \
     ARRAY(SELECT r.name FROM roles r JOIN role_grants rg ON rg.role_id = r.id WHERE rg.group_id = g.id \
           ORDER BY r.name) AS roles";

#[derive(sqlx::FromRow)]
struct GroupRow {
    id: uuid::Uuid,
    name: String,
    description: String,
    member_count: i64,
    roles: Vec<String>,
}

impl From<GroupRow> for pb::Group {
    fn from(g: GroupRow) -> Self {
        pb::Group {
            id: g.id.to_string(),
            name: g.name,
            description: g.description,
            roles: g.roles,
            member_count: g.member_count,
        }
    }
}

/// Group `id`; `GROUP_NOT_FOUND` when there is none.
pub async fn get(tx: &mut TenantTx, id: uuid::Uuid) -> Result<pb::Group, ApiError> {
    let row: Option<GroupRow> =
        tx.optional(sqlx::query_as(&format!("SELECT {GROUP_COLUMNS} FROM groups g WHERE g.id = $1")).bind(id)).await?;
    row.map(pb::Group::from).ok_or_else(|| AuthError::GroupNotFound.into())
}

/// Up to `limit` groups named after `after`, by name (names are unique in a tenant).
pub async fn page(tx: &mut TenantTx, after: &str, limit: i64) -> Result<Vec<pb::Group>, ApiError> {
    let rows: Vec<GroupRow> = tx
        .all(
            sqlx::query_as(&format!("SELECT {GROUP_COLUMNS} FROM groups g WHERE g.name > $1 ORDER BY g.name LIMIT $2"))
                .bind(after)
                .bind(limit),
        )
        .await?;
    Ok(rows.into_iter().map(pb::Group::from).collect())
}

/// The union of the permissions a group confers.
pub async fn permissions(tx: &mut TenantTx, group: uuid::Uuid) -> Result<Vec<String>, ApiError> {
    tx.scalars(sqlx::query_scalar(
        "SELECT DISTINCT p FROM roles r JOIN role_grants g ON g.role_id = r.id, unnest(r.permissions) p WHERE g.group_id = $1",
    )
    .bind(group)).await
}

/// Whether group `id` exists.
pub async fn exists(tx: &mut TenantTx, id: uuid::Uuid) -> Result<bool, ApiError> {
    tx.scalar(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM groups WHERE id = $1)").bind(id)).await
}

/// Up to `limit` members of `group` with ids after `after`, by id.
pub async fn member_page(
    tx: &mut TenantTx,
    group: uuid::Uuid,
    after: uuid::Uuid,
    limit: i64,
) -> Result<Vec<uuid::Uuid>, ApiError> {
    tx.scalars(
        sqlx::query_scalar(
            "SELECT user_id FROM group_members WHERE group_id = $1 AND user_id > $2 ORDER BY user_id LIMIT $3",
        )
        .bind(group)
        .bind(after)
        .bind(limit),
    )
    .await
}

/// Every member of `group`.
pub async fn members(tx: &mut TenantTx, group: uuid::Uuid) -> Result<Vec<uuid::Uuid>, ApiError> {
    tx.scalars(sqlx::query_scalar("SELECT user_id FROM group_members WHERE group_id = $1").bind(group)).await
}

/// The names of the groups `user` is in, by name.
pub async fn names_of(tx: &mut TenantTx, user: uuid::Uuid) -> Result<Vec<String>, ApiError> {
    tx.scalars(sqlx::query_scalar(
        "SELECT g.name FROM groups g JOIN group_members m ON m.group_id = g.id WHERE m.user_id = $1 ORDER BY g.name",
    )
    .bind(user)).await
}

/// Creates a group; `GROUP_EXISTS` when the name is taken.
pub async fn insert(tx: &mut TenantTx, name: &str, description: &str) -> Result<uuid::Uuid, ApiError> {
    let id: Option<uuid::Uuid> = tx
        .optional_scalar(
            sqlx::query_scalar(
                "INSERT INTO groups (name, description) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING id",
            )
            .bind(name)
            .bind(description),
        )
        .await?;
    id.ok_or_else(|| AuthError::GroupExists.into())
}

/// Deletes group `id` (its memberships and grants go with it); `GROUP_NOT_FOUND` when there is none.
pub async fn delete(tx: &mut TenantTx, id: uuid::Uuid) -> Result<(), ApiError> {
    let done = tx.execute(sqlx::query("DELETE FROM groups WHERE id = $1").bind(id)).await?;
    if done == 0 {
        return Err(AuthError::GroupNotFound.into());
    }
    Ok(())
}

/// Adds `user` to `group` (again: nothing); `NOT_FOUND` when either does not exist.
pub async fn add_member(tx: &mut TenantTx, group: uuid::Uuid, user: uuid::Uuid) -> Result<(), ApiError> {
    sqlx::query("INSERT INTO group_members (group_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(group)
        .bind(user)
        .execute(tx.conn())
        .await
        .map_err(|e| super::missing_reference(e, AuthError::MemberOrGroupNotFound))?;
    Ok(())
}

/// Removes `user` from `group`.
pub async fn remove_member(tx: &mut TenantTx, group: uuid::Uuid, user: uuid::Uuid) -> Result<(), ApiError> {
    tx.execute(sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND user_id = $2").bind(group).bind(user))
        .await?;
    Ok(())
}
