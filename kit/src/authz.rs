//! Authorization, written once for the platform: the closed catalogue of permissions and the one
//! check every service and the gateway make. A request is authorized when its credential belongs
//! to the tenant it names and its principal holds the permission; a refusal is always
//! PERMISSION_DENIED `MISSING_PERMISSION` naming the permission, whoever refuses.

use std::fmt;

use crate::access::RequestContext;
use crate::error::ApiError;
use crate::principal::Principal;
use crate::tenancy::{Db, Tenant};

macro_rules! permissions {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// Every permission the platform knows (docs/identity.md). A role may only hold these.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Permission {
            $($(#[$doc])* $variant,)*
        }

        impl Permission {
            /// The catalogue, in documentation order.
            pub const ALL: &'static [Permission] = &[$(Permission::$variant,)*];

            /// The name tokens and roles carry, e.g. `ledger.accounts.read`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Permission::$variant => $name,)*
                }
            }
        }
    };
}

permissions! {
    UsersRead => "users.read",
    UsersWrite => "users.write",
    UsersSuspend => "users.suspend",
    UsersDelete => "users.delete",
    RolesRead => "roles.read",
    RolesWrite => "roles.write",
    RolesGrant => "roles.grant",
    GroupsRead => "groups.read",
    GroupsWrite => "groups.write",
    SessionsRead => "sessions.read",
    SessionsRevoke => "sessions.revoke",
    ApiKeysCreate => "api_keys.create",
    ApiKeysRead => "api_keys.read",
    ApiKeysRevoke => "api_keys.revoke",
    /// The tenant's OAuth / OpenID Connect clients: see them.
    OAuthClientsRead => "oauth.clients.read",
    /// The tenant's OAuth / OpenID Connect clients: register, change, rotate secrets, delete.
    OAuthClientsWrite => "oauth.clients.write",
    TenantPolicyWrite => "tenant.policy.write",
    AuditEventsRead => "audit.events.read",
    VaultSecretsRead => "vault.secrets.read",
    VaultSecretsWrite => "vault.secrets.write",
    /// Needs a recent second factor ([`Permission::needs_step_up`]).
    VaultSecretsReveal => "vault.secrets.reveal",
    VaultSecretsDestroy => "vault.secrets.destroy",
    LedgerLedgersCreate => "ledger.ledgers.create",
    LedgerAccountsCreate => "ledger.accounts.create",
    LedgerAccountsRead => "ledger.accounts.read",
    /// Only the accounts the caller owns.
    LedgerAccountsReadOwn => "ledger.accounts.read.own",
    LedgerTransfersCreate => "ledger.transfers.create",
    /// Only from accounts the caller owns.
    LedgerTransfersCreateOwn => "ledger.transfers.create.own",
    LedgerTransfersRead => "ledger.transfers.read",
    /// Only transfers touching accounts the caller owns.
    LedgerTransfersReadOwn => "ledger.transfers.read.own",
    LedgerReceiptsVerify => "ledger.receipts.verify",
    /// Data-subject requests: read them, including overdue ones.
    PrivacyRequestsRead => "privacy.requests.read",
    /// Data-subject requests: file them for any subject and move them on.
    PrivacyRequestsWrite => "privacy.requests.write",
    /// Legal holds: place and release them (a release completes the erasures it frees).
    PrivacyHoldsWrite => "privacy.holds.write",
    /// Read the email and display name of a user restricted under a legal hold (audited).
    PrivacyRestrictedRead => "privacy.restricted.read",
}

impl Permission {
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|p| p.as_str() == name)
    }

    /// Whether using it needs a second factor within
    /// [`crate::principal::STEP_UP_MAX_AGE_SECS`] (and minting an API key that carries it, too).
    pub const fn needs_step_up(self) -> bool {
        matches!(self, Self::VaultSecretsReveal)
    }

    /// The owner-scoped form (`X.own`) of an unscoped permission `X`, if it has one.
    pub fn owned(self) -> Option<Self> {
        Self::ALL.iter().copied().find(|o| o.as_str().strip_suffix(".own") == Some(self.as_str()))
    }

    /// For an owner-scoped permission, the unscoped one that covers it too.
    pub fn unscoped(self) -> Option<Self> {
        self.as_str().strip_suffix(".own").and_then(Self::parse)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The refusal for a missing permission, the same in every service and the gateway.
pub fn missing(permission: Permission) -> ApiError {
    ApiError::permission_denied("MISSING_PERMISSION", format!("requires {permission}"))
}

/// How far an owner-scoped permission reaches for one principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The unscoped permission: every row.
    All,
    /// Only the `.own` form: the rows the principal owns.
    Own,
}

impl Principal {
    pub fn holds(&self, permission: Permission) -> bool {
        self.has_permission(permission.as_str())
    }

    /// Requires `permission` (PERMISSION_DENIED `MISSING_PERMISSION`).
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.holds(permission) { Ok(()) } else { Err(missing(permission)) }
    }

    /// Requires `permission` or its owner-scoped form, and says which one the principal holds.
    pub fn reach(&self, permission: Permission) -> Result<Reach, ApiError> {
        if self.holds(permission) {
            Ok(Reach::All)
        } else if permission.owned().is_some_and(|own| self.holds(own)) {
            Ok(Reach::Own)
        } else {
            Err(missing(permission))
        }
    }
}

/// A request that passed [`authorize`]: the tenant it acts in, who asks, and its request id.
#[derive(Debug, Clone)]
pub struct Authorized {
    pub tenant: Tenant,
    pub principal: Principal,
    pub request_id: Option<String>,
}

/// The one authorization check of a tenant-scoped call: a verified principal, of the tenant the
/// request names (else `TENANT_MISMATCH`, without saying whether that tenant exists), the tenant
/// active, and `permission` held.
pub async fn authorize(db: &Db, ctx: &RequestContext, permission: Permission) -> Result<Authorized, ApiError> {
    let principal = ctx.require_principal()?;
    let tenant = db.authorize_tenant(&ctx.tenant_slug()?, Some(principal)).await?;
    principal.require(permission)?;
    Ok(Authorized { tenant, principal: principal.clone(), request_id: ctx.request_id.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut names: Vec<&str> = Permission::ALL.iter().map(|p| p.as_str()).collect();
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(*p));
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Permission::ALL.len());
        assert_eq!(Permission::parse("ledger.accounts.write"), None);
    }

    #[test]
    fn owner_scoped_forms_pair_up() {
        assert_eq!(Permission::LedgerAccountsRead.owned(), Some(Permission::LedgerAccountsReadOwn));
        assert_eq!(Permission::LedgerAccountsReadOwn.unscoped(), Some(Permission::LedgerAccountsRead));
        assert_eq!(Permission::UsersRead.owned(), None);
        assert_eq!(Permission::UsersRead.unscoped(), None);
        assert!(Permission::VaultSecretsReveal.needs_step_up());
        assert!(!Permission::VaultSecretsRead.needs_step_up());
    }
}
