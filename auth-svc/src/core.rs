//! What every auth-svc handler shares: the database, the password hasher, the login throttle,
//! the token signer, the revocation list and vault-svc; the caller of a request, its audit
//! records, ending a session, and effective permissions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kit::access::RequestContext;
use kit::authz::Permission;
use kit::outbox::{Actor, AuditRecord, Outcome};
use kit::principal::Principal;
use kit::revocation::Revocations;
use kit::{ApiError, Db, Tenant, TenantTx};

use crate::SERVICE;
use crate::config::AuthSettings;
use crate::domain::policy::Policy;
use crate::email_index::{Blinds, EmailIndex};
use crate::error::AuthError;
use crate::passwords::Hasher;
use crate::personal::{Item, Personal, USER_DISPLAY_NAME, USER_EMAIL};
use crate::store::roles;
use crate::store::users::{NewUser, StoredUser};
use crate::throttle::Throttle;
use crate::tokens::Signer;

#[derive(Clone, Debug)]
pub struct Core {
    pub db: Db,
    pub hasher: Hasher,
    pub throttle: Throttle,
    pub signer: Signer,
    pub revocations: Revocations,
    pub vault: kit::client::Channel,
    pub personal: Personal,
    pub email_index: EmailIndex,
    pub settings: Arc<AuthSettings>,
    pub profiles: Profiles,
    /// Where every termination is written before it commits (`service.erasure_journal`).
    pub journal: Option<kit::journal::Journal>,
    /// Passkeys' verifier (`service.webauthn`); none when they are off.
    pub webauthn: Option<Arc<webauthn_rs::Webauthn>>,
}

/// How long this replica shows a user's profile (`GetMe`) without reading it again: the bound a
/// revocation takes to reach every verifier, too.
pub const PROFILE_TTL: Duration = kit::principal::REVOCATION_RECHECK;
const PROFILES_MAX: usize = 10_000;

type ProfileMap = HashMap<(uuid::Uuid, uuid::Uuid), (proto::auth::v1::User, Instant)>;

/// Users as `GetMe` (`/v1/me`, asked on every page load) shows them, remembered for at most
/// [`PROFILE_TTL`]. A change made through this replica forgets its tenant's profiles at once; one
/// made through another replica shows within the TTL.
#[derive(Clone, Debug, Default)]
pub struct Profiles(Arc<Mutex<ProfileMap>>);

impl Profiles {
    fn map(&self) -> std::sync::MutexGuard<'_, ProfileMap> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, tenant: &Tenant, user: uuid::Uuid) -> Option<proto::auth::v1::User> {
        self.map().get(&(tenant.id.0, user)).filter(|(_, at)| at.elapsed() < PROFILE_TTL).map(|(u, _)| u.clone())
    }

    pub fn put(&self, tenant: &Tenant, user: uuid::Uuid, profile: proto::auth::v1::User) {
        let mut map = self.map();
        if map.len() >= PROFILES_MAX {
            map.retain(|_, (_, at)| at.elapsed() < PROFILE_TTL);
            if map.len() >= PROFILES_MAX {
                map.clear();
            }
        }
        map.insert((tenant.id.0, user), (profile, Instant::now()));
    }

    /// After a change to users, roles, groups or TOTP of `tenant` (a role change reaches many users).
    pub fn forget(&self, tenant: &Tenant) {
        self.map().retain(|(t, _), _| *t != tenant.id.0);
    }
}

/// A new user's sealed profile and email index ([`Core::seal_profile`]).
pub struct SealedProfile {
    email: String,
    display_name: Option<String>,
    index: Blinds,
}

impl SealedProfile {
    /// The user row `id` with this profile and password `hash`.
    pub fn row<'a>(&'a self, id: uuid::Uuid, hash: &'a str) -> NewUser<'a> {
        NewUser {
            id,
            email_sealed: &self.email,
            display_name_sealed: self.display_name.as_deref(),
            email_index: &self.index,
            password_hash: hash,
        }
    }
}

/// An audit record of auth-svc.
pub fn audit(actor: Actor, action: &str, resource: &str, outcome: Outcome, request_id: Option<String>) -> AuditRecord {
    AuditRecord::new(SERVICE, actor, action, resource, outcome).request_id(request_id)
}

/// A handler's caller: verified principal of this tenant.
pub struct Authed {
    pub tenant: Tenant,
    pub principal: Principal,
    pub request_id: Option<String>,
}

impl Authed {
    pub fn user_id(&self) -> Result<uuid::Uuid, ApiError> {
        uuid::Uuid::parse_str(&self.principal.subject).map_err(|_| AuthError::NotAUser.into())
    }

    /// Requires `permission` in the token (the gateway checked it too).
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        self.principal.require(permission)
    }

    pub fn actor(&self) -> Actor {
        Actor::of(&self.principal)
    }

    /// An audit record of this caller's `action` on `resource`.
    pub fn audit(&self, action: &str, resource: &str, outcome: Outcome) -> AuditRecord {
        audit(self.actor(), action, resource, outcome, self.request_id.clone())
    }

    /// The session the caller's token belongs to, if it names one.
    pub fn session_id(&self) -> Option<uuid::Uuid> {
        self.principal.session_id.as_deref().and_then(|s| uuid::Uuid::parse_str(s).ok())
    }
}

impl Core {
    /// The users as the API shows them, their personal fields opened in one call.
    pub async fn open_users(
        &self,
        tenant: &Tenant,
        users: Vec<StoredUser>,
    ) -> Result<Vec<proto::auth::v1::User>, ApiError> {
        let items = users.iter().flat_map(StoredUser::personal).collect();
        let mut opened = self.personal.open(tenant, items).await?.into_iter();
        Ok(users
            .into_iter()
            .map(|u| {
                let mut next = || opened.next().unwrap_or_default();
                let (email, name, reason) = (next(), next(), next());
                u.into_pb(email, name, reason)
            })
            .collect())
    }

    /// A new user's profile, sealed for row `id`, with its email's blind index; `EMAIL_TAKEN`
    /// (before anything is sealed) when another user has the email.
    pub async fn seal_profile(
        &self,
        tx: &mut TenantTx,
        id: uuid::Uuid,
        email: &str,
        display_name: &str,
    ) -> Result<SealedProfile, ApiError> {
        let tenant = tx.tenant().clone();
        let index = self.email_index.blinds_for_write(tx, email).await?;
        if crate::store::users::email_taken(tx, &index, email).await? {
            return Err(AuthError::EmailTaken.into());
        }
        let items = [
            Item { field: USER_EMAIL, row: id, subject: id, value: email },
            Item { field: USER_DISPLAY_NAME, row: id, subject: id, value: display_name },
        ];
        let mut sealed = self.personal.seal(&tenant, &items).await?.into_iter();
        let email = sealed.next().flatten().ok_or_else(|| ApiError::internal(&"an email sealed to nothing"))?;
        Ok(SealedProfile { email, display_name: sealed.next().flatten(), index })
    }

    /// One user as the API shows it.
    pub async fn open_user(&self, tenant: &Tenant, user: StoredUser) -> Result<proto::auth::v1::User, ApiError> {
        let mut users = self.open_users(tenant, vec![user]).await?;
        users.pop().ok_or_else(|| ApiError::internal(&"an opened user went missing"))
    }

    /// User `id` as the API shows it, from the cache of opened profiles or the database.
    pub async fn profile(&self, tenant: &Tenant, id: uuid::Uuid) -> Result<proto::auth::v1::User, ApiError> {
        if let Some(user) = self.profiles.get(tenant, id) {
            return Ok(user);
        }
        let mut tx = self.db.begin(tenant).await?;
        let user = crate::store::users::load_user(&mut tx, id).await?;
        tx.commit().await?;
        let user = self.open_user(tenant, user).await?;
        self.profiles.put(tenant, id, user.clone());
        Ok(user)
    }

    /// The verified caller of a request, in its own tenant.
    pub async fn authed<T>(&self, request: &tonic::Request<T>) -> Result<Authed, ApiError> {
        let ctx = RequestContext::of(request)?;
        let principal = ctx.require_principal()?.clone();
        let tenant = self.db.authorize_tenant(&ctx.tenant_slug()?, Some(&principal)).await?;
        Ok(Authed { tenant, principal, request_id: ctx.request_id })
    }

    /// Lists in Redis what `tenant` has revoked and Redis has not taken, after the revoking
    /// transaction committed. When Redis does not take it, the caller learns that the change is
    /// saved but not yet in force everywhere (`REVOCATION_PENDING`): for calls whose purpose is the
    /// revocation, and which may be repeated. auth-svc lists it within a second of Redis answering
    /// ([`crate::revocations`]).
    pub async fn publish_revocations(&self, tenant: &Tenant) -> Result<(), ApiError> {
        crate::revocations::publish(&self.db, &self.revocations, Some(tenant.id.0)).await.map(|_| ()).map_err(|e| {
            tracing::warn!(tenant = %tenant.slug, reason = %e.reason, "a revocation is saved but Redis has not taken it yet");
            AuthError::RevocationPending.into()
        })
    }

    /// [`Self::publish_revocations`] for calls whose revocations follow from another change that
    /// is saved and must not look failed (a password change, a deletion, a logout): when Redis
    /// does not take them, the sweep lists them within a second of Redis answering.
    pub async fn publish_revocations_soon(&self, tenant: &Tenant) {
        let _ = self.publish_revocations(tenant).await;
    }

    /// After a change that shrank permissions in `tenant` (committed): verifiers resolve the
    /// tenant's API keys again at their next use, so a key loses what its creator lost at once.
    /// Best effort: otherwise within the verifiers' 30 s cache of resolved keys.
    pub async fn access_changed(&self, tenant: &Tenant) {
        if let Err(e) = self.revocations.access_changed(tenant.id.0).await {
            tracing::warn!(tenant = %tenant.slug, reason = %e.reason, "permission change not announced; API keys follow within 30 s");
        }
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
        let (roles, permissions) = roles::effective(tx, user).await?;
        let privileged = policy.privileged(&roles, &permissions);
        Ok((roles, permissions, privileged))
    }
}

/// Ends a session in the database and records it, in `tx` (committed here); whether it was live.
/// The caller then lists the revocation in Redis.
pub async fn end_session(
    mut tx: TenantTx,
    session: uuid::Uuid,
    reason: &str,
    actor: Actor,
    request_id: Option<String>,
) -> Result<bool, ApiError> {
    let ended = crate::store::sessions::end(&mut tx, session, reason).await?;
    if ended {
        tx.record(
            audit(actor, "session.revoke", &format!("session/{session}"), Outcome::Success, request_id)
                .detail("reason", reason),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(slug: &str) -> Tenant {
        Tenant {
            id: kit::TenantId(uuid::Uuid::new_v4()),
            slug: kit::TenantSlug::parse(slug).expect("slug"),
            status: kit::tenancy::TenantStatus::Active,
            created_at: chrono::Utc::now(),
        }
    }

    fn user(name: &str) -> proto::auth::v1::User {
        proto::auth::v1::User { display_name: name.into(), ..Default::default() }
    }

    #[test]
    fn profiles_are_per_tenant_expire_and_are_forgotten_on_change() {
        let (alpha, bravo) = (tenant("alpha"), tenant("bravo"));
        let id = uuid::Uuid::new_v4();
        let profiles = Profiles::default();
        profiles.put(&alpha, id, user("Alice"));
        assert_eq!(profiles.get(&alpha, id).map(|u| u.display_name), Some("Alice".into()));
        assert!(profiles.get(&bravo, id).is_none(), "another tenant's entry");
        profiles.put(&bravo, id, user("Bob"));
        profiles.forget(&alpha);
        assert!(profiles.get(&alpha, id).is_none(), "forgotten after a change");
        assert_eq!(profiles.get(&bravo, id).map(|u| u.display_name), Some("Bob".into()), "other tenants kept");
        std::thread::sleep(PROFILE_TTL);
        assert!(profiles.get(&bravo, id).is_none(), "expired");
    }
}
