//! The rules of roles, groups and effective permissions (the union over roles granted directly
//! and through groups). The permission catalogue is closed: a custom role may only hold known
//! permissions, and nobody grants a permission they do not hold. Their SQL is in `store/roles.rs`.

use kit::{ApiError, TenantTx};

use crate::error::AuthError;
use crate::store::roles;

/// Kept at this path for the tests and tools that build statements with it.
pub use crate::store::roles::effective_columns;

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

/// The first permission held by one of the users `users` selects (`store::roles::ONE_USER`,
/// `GROUP_MEMBERS` or `ROLE_HOLDERS`, whose `$1` is `param`) that `held` does not cover;
/// `Err(PRIVILEGE_ESCALATION)` naming it.
pub async fn check_not_superior(
    tx: &mut TenantTx,
    users: &str,
    param: uuid::Uuid,
    held: &[String],
) -> Result<(), ApiError> {
    let covered: Vec<String> = held.iter().flat_map(|h| [h.clone(), format!("{h}.own")]).collect();
    let uncovered = roles::first_uncovered(tx, users, param, &covered).await?;
    match uncovered {
        // Nobody suspends, deletes or strips a superior.
        Some(p) => Err(AuthError::SuperiorAffected(p).into()),
        None => Ok(()),
    }
}

/// Refuses (`FAILED_PRECONDITION` `LAST_OWNER`) a change after which the tenant has no active user
/// holding the built-in owner role; call it after the change, under [`roles::lock_owners`].
pub async fn check_an_owner_remains(tx: &mut TenantTx) -> Result<(), ApiError> {
    let owners = roles::active_owners(tx).await?;
    if owners == 0 {
        return Err(AuthError::LastOwner.into());
    }
    Ok(())
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
