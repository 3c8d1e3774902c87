//! Roles, groups and effective permissions (the union over roles granted directly and through
//! groups). The permission catalogue is closed: a custom role may only hold known permissions,
//! and nobody grants a permission they do not hold.

use std::collections::BTreeSet;

use kit::tenancy::db_error;
use kit::{ApiError, TenantTx};

/// Every permission the platform knows (docs/identity.md).
pub const PERMISSIONS: &[&str] = &[
    "users.read",
    "users.write",
    "users.suspend",
    "users.delete",
    "roles.read",
    "roles.write",
    "roles.grant",
    "groups.read",
    "groups.write",
    "sessions.read",
    "sessions.revoke",
    "api_keys.create",
    "api_keys.read",
    "api_keys.revoke",
    "tenant.policy.write",
    "audit.events.read",
    "vault.secrets.read",
    "vault.secrets.write",
    "vault.secrets.reveal",
    "vault.secrets.destroy",
    "ledger.accounts.create",
    "ledger.accounts.read",
    "ledger.transfers.create",
    "ledger.transfers.read",
    "ledger.receipts.verify",
];

pub fn check_known(permissions: &[String]) -> Result<(), ApiError> {
    if let Some(p) = permissions.iter().find(|p| !PERMISSIONS.contains(&p.as_str())) {
        return Err(ApiError::invalid_field("permissions", format!("unknown permission {p:?}")));
    }
    Ok(())
}

/// Refuses handing out permissions the granter does not hold.
pub fn check_subset(granted: &[String], held: &[String]) -> Result<(), ApiError> {
    if let Some(p) = granted.iter().find(|p| !held.contains(p)) {
        return Err(ApiError::permission_denied(
            "PRIVILEGE_ESCALATION",
            format!("cannot grant {p}, which the caller does not hold"),
        ));
    }
    Ok(())
}

/// `(roles, permissions)` of a user, sorted and without duplicates.
pub async fn effective(tx: &mut TenantTx, user: uuid::Uuid) -> Result<(Vec<String>, Vec<String>), ApiError> {
    let rows: Vec<(String, Vec<String>)> = sqlx::query_as(
        "SELECT r.name, r.permissions FROM roles r
           JOIN role_grants g ON g.role_id = r.id
          WHERE g.user_id = $1
             OR g.group_id IN (SELECT group_id FROM group_members WHERE user_id = $1)",
    )
    .bind(user)
    .fetch_all(tx.conn())
    .await
    .map_err(db_error)?;
    let mut roles = BTreeSet::new();
    let mut permissions = BTreeSet::new();
    for (role, perms) in rows {
        roles.insert(role);
        permissions.extend(perms);
    }
    Ok((roles.into_iter().collect(), permissions.into_iter().collect()))
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
    fn unknown_permissions_are_refused() {
        assert!(check_known(&["ledger.transfers.create".to_owned()]).is_ok());
        assert!(check_known(&["root.everything".to_owned()]).is_err());
    }
}
