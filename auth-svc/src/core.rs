//! What every auth-svc handler shares: the database, the password hasher, the login throttle,
//! the token signer, the revocation list and vault-svc; plus the tenant policy and effective
//! permissions.

use std::sync::Arc;

use kit::access::RequestContext;
use kit::outbox::{Actor, AuditRecord, Outcome};
use kit::principal::Principal;
use kit::revocation::{Revocations, Revoked};
use kit::tenancy::db_error;
use kit::{ApiError, Db, Tenant, TenantTx};

use crate::config::AuthSettings;
use crate::passwords::Hasher;
use crate::throttle::Throttle;
use crate::tokens::Signer;
use crate::{SERVICE, rbac};

#[derive(Clone, Debug)]
pub struct Core {
    pub db: Db,
    pub hasher: Hasher,
    pub throttle: Throttle,
    pub signer: Signer,
    pub revocations: Revocations,
    pub vault: kit::client::Channel,
    pub settings: Arc<AuthSettings>,
}

/// The tenant's identity policy (`tenant_policy`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Policy {
    pub lockout_threshold: i32,
    pub lockout_window_secs: i32,
    pub access_token_ttl_secs: i32,
    pub refresh_token_ttl_secs: i32,
    pub mfa_required_roles: Vec<String>,
}

/// The columns of [`Policy`] from `tenant_policy p`, for statements that read more in one go.
pub const POLICY_COLUMNS: &str = "p.lockout_threshold, p.lockout_window_secs, p.access_token_ttl_secs, p.refresh_token_ttl_secs, p.mfa_required_roles";

pub async fn policy(tx: &mut TenantTx) -> Result<Policy, ApiError> {
    sqlx::query_as(&format!("SELECT {POLICY_COLUMNS} FROM tenant_policy p"))
        .fetch_one(tx.conn())
        .await
        .map_err(db_error)
}

/// An audit record of auth-svc.
pub fn audit(actor: Actor, action: &str, resource: &str, outcome: Outcome, request_id: Option<String>) -> AuditRecord {
    AuditRecord::new(SERVICE, actor, action, resource, outcome).request_id(request_id)
}

/// The actor a principal stands for.
pub fn actor(p: &Principal) -> Actor {
    if p.amr.iter().any(|m| m == "api_key") {
        Actor::ApiKey(p.token_id.clone())
    } else {
        Actor::User(p.subject.clone())
    }
}

/// A handler's caller: verified principal of this tenant.
pub struct Authed {
    pub tenant: Tenant,
    pub principal: Principal,
    pub request_id: Option<String>,
}

impl Authed {
    pub fn user_id(&self) -> Result<uuid::Uuid, ApiError> {
        uuid::Uuid::parse_str(&self.principal.subject)
            .map_err(|_| ApiError::permission_denied("NOT_A_USER", "this call needs a user's token"))
    }

    /// Requires `permission` in the token (the gateway checked it too).
    pub fn require(&self, permission: &str) -> Result<(), ApiError> {
        if self.principal.has_permission(permission) {
            Ok(())
        } else {
            Err(ApiError::permission_denied("MISSING_PERMISSION", format!("requires {permission}")))
        }
    }

    pub fn actor(&self) -> Actor {
        actor(&self.principal)
    }
}

impl Core {
    /// The verified caller of a request, in its own tenant.
    pub async fn authed<T>(&self, request: &tonic::Request<T>) -> Result<Authed, ApiError> {
        let ctx = RequestContext::of(request)?;
        let principal = ctx.require_principal()?.clone();
        let tenant = self.db.authorize_tenant(&ctx.tenant_slug()?, Some(&principal)).await?;
        Ok(Authed { tenant, principal, request_id: ctx.request_id })
    }

    /// Lists sessions as revoked everywhere (after the database says so).
    pub async fn revoke_sessions(&self, ids: &[uuid::Uuid]) -> Result<(), ApiError> {
        let ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        self.revocations.revoke(Revoked::Session, &ids).await
    }

    /// Writes one audit record in a transaction of its own (security events without a change).
    pub async fn record_alone(&self, tenant: &Tenant, record: AuditRecord) -> Result<(), ApiError> {
        let mut tx = self.db.begin(tenant).await?;
        tx.record(record).await?;
        tx.commit().await
    }

    /// A user's effective roles and permissions, and whether a role of theirs requires MFA.
    pub async fn access_of(
        &self,
        tx: &mut TenantTx,
        user: uuid::Uuid,
        policy: &Policy,
    ) -> Result<(Vec<String>, Vec<String>, bool), ApiError> {
        let (roles, permissions) = rbac::effective(tx, user).await?;
        let privileged = roles.iter().any(|r| policy.mfa_required_roles.contains(r));
        Ok((roles, permissions, privileged))
    }
}
