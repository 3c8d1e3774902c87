//! Roles, groups and effective permissions (the union over roles granted directly and through
//! groups). The permission catalogue is closed: a custom role may only hold known permissions,
//! and nobody grants a permission they do not hold.

use kit::tenancy::db_error;
use kit::{ApiError, TenantTx};

use crate::error::AuthError;

/// The users a change affects, as SQL for [`check_not_superior`] (`$1` the id named).
pub const ONE_USER: &str = "SELECT $1::uuid";
pub const GROUP_MEMBERS: &str = "SELECT user_id FROM group_members WHERE group_id = $1";
pub const ROLE_HOLDERS: &str = "SELECT g.user_id FROM role_grants g WHERE g.role_id = $1 AND g.user_id IS NOT NULL
     UNION SELECT m.user_id FROM role_grants g JOIN group_members m ON m.group_id = g.group_id WHERE g.role_id = $1";

pub fn check_known(permissions: &[String]) -> Result<(), ApiError> {
    // The catalogue is kit's `Permission` (docs/identity.md).
    if let Some(p) = permissions.iter().find(|p| kit::authz::Permission::parse(p).is_none()) {
        return Err(ApiError::invalid_field("permissions", format!("unknown permission {p:?}")));
    }
    Ok(())
}

/// Whether `held` covers `permission`: itself, or, for an owner-scoped `X.own`, the unscoped `X`.
pub fn covers(held: &[String], permission: &str) -> bool {
    held.iter().any(|h| h == permission) || permission.strip_suffix(".own").is_some_and(|p| held.iter().any(|h| h == p))
}

/// Refuses handing out permissions the granter does not hold.
pub fn check_subset(granted: &[String], held: &[String]) -> Result<(), ApiError> {
    if let Some(p) = granted.iter().find(|p| !covers(held, p)) {
        return Err(AuthError::GrantBeyondHeld(p.clone()).into());
    }
    Ok(())
}

/// The first permission held by one of the users `users` selects (an SQL query of user ids whose
/// `$1` is `param`) that `held` does not cover; `Err(PRIVILEGE_ESCALATION)` naming it.
pub async fn check_not_superior(
    tx: &mut TenantTx,
    users: &str,
    param: uuid::Uuid,
    held: &[String],
) -> Result<(), ApiError> {
    let covered: Vec<String> = held.iter().flat_map(|h| [h.clone(), format!("{h}.own")]).collect();
    let sql = format!(
        "SELECT p FROM ({users}) a(id) CROSS JOIN LATERAL (SELECT {}) e CROSS JOIN LATERAL unnest(e.permissions) p
          WHERE p <> ALL($2::text[]) LIMIT 1",
        effective_columns("a.id")
    );
    let uncovered: Option<String> =
        sqlx::query_scalar(&sql).bind(param).bind(&covered).fetch_optional(tx.conn()).await.map_err(db_error)?;
    match uncovered {
        // Nobody suspends, deletes or strips a superior.
        Some(p) => Err(AuthError::SuperiorAffected(p).into()),
        None => Ok(()),
    }
}

/// Serialises, per tenant, the changes that could remove an owner, so that two of them cannot
/// each see the other's owner remain.
pub async fn lock_owners(tx: &mut TenantTx) -> Result<(), ApiError> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtext('strongroom.owners.' || current_setting('strongroom.tenant_id')))",
    )
    .execute(tx.conn())
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Refuses (`FAILED_PRECONDITION` `LAST_OWNER`) a change after which the tenant has no active user
/// holding the built-in owner role; call it after the change, under [`lock_owners`].
pub async fn check_an_owner_remains(tx: &mut TenantTx) -> Result<(), ApiError> {
    let owners: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM users u WHERE u.status = 'active' AND u.id IN (
             SELECT g.user_id FROM role_grants g JOIN roles r ON r.id = g.role_id
              WHERE r.name = 'owner' AND r.builtin AND g.user_id IS NOT NULL
             UNION ALL
             SELECT m.user_id FROM role_grants g JOIN roles r ON r.id = g.role_id
               JOIN group_members m ON m.group_id = g.group_id
              WHERE r.name = 'owner' AND r.builtin)",
    )
    .fetch_one(tx.conn())
    .await
    .map_err(db_error)?;
    if owners == 0 {
        return Err(AuthError::LastOwner.into());
    }
    Ok(())
}

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
    sqlx::query_as(&format!("SELECT {}", effective_columns("$1")))
        .bind(user)
        .fetch_one(tx.conn())
        .await
        .map_err(db_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granting_more_than_held_is_escalation() {
        let held = vec!["users.read".to_owned(), "roles.grant".to_owned()];
        assert!(check_subset(&["users.read".to_owned()], &held).is_ok());
        let e = check_subset(&["users.delete".to_owned()], &held).expect_err("escalation");
        assert_eq!(e.reason, "PRIVILEGE_ESCALATION");
    }

    #[test]
    fn an_unscoped_permission_covers_its_own_scoped_form() {
        let held = vec!["ledger.accounts.read".to_owned()];
        assert!(check_subset(&["ledger.accounts.read.own".to_owned()], &held).is_ok());
        let own_only = vec!["ledger.accounts.read.own".to_owned()];
        assert!(check_subset(&["ledger.accounts.read".to_owned()], &own_only).is_err());
    }

    #[test]
    fn unknown_permissions_are_refused() {
        assert!(check_known(&["ledger.transfers.create".to_owned()]).is_ok());
        assert!(check_known(&["root.everything".to_owned()]).is_err());
    }
}
