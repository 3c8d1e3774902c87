//! The keyed blind index of users' emails: how a login finds its user and how an address is kept
//! unique in a tenant while it is stored only sealed. The index is HMAC-SHA-256 of the normalized
//! address ([`crate::domain::email`]) under a tenant key of purpose `auth.email-index`, which
//! auth-svc keeps wrapped by vault-svc (`kit::datakey`).
//!
//! The key is versioned and rotatable (`strongroom tenant rotate-email-index-key`): a rotation adds
//! a version, indexes every user under it (their sealed emails opened a page at a time), then
//! retires the old version, deleting its rows: an index copied before (a backup) can no longer be
//! matched to an address once its key is gone. While two versions are live, every writer indexes
//! under both and lookups try both; a writer checks, in its own transaction, that it indexed under
//! exactly the live versions, which the activation locks, so no user is left out.
//!
//! The newest live version also keys the login throttle's Redis identifiers of an account and an
//! address ([`EmailIndex::throttle_ids`]): a rotation starts every counter afresh, once.

use kit::datakey::DataKeys;
use kit::outbox::{Actor, Outcome};
use kit::{ApiError, Db, ErrorCode, Tenant, TenantTx};

use crate::core::audit;
use crate::domain::email::blind_index;
use crate::error::AuthError;
use crate::personal::{Item, Personal, Stored, USER_EMAIL};
use crate::store::email_index as store;

/// Users indexed per transit call and transaction during a rotation.
const PAGE: i64 = 500;

/// `(key version, blind index)` of an email, one per live version.
pub type Blinds = Vec<(i32, Vec<u8>)>;

/// The tenant's email blind-index keys.
#[derive(Clone, Debug)]
pub struct EmailIndex {
    keys: DataKeys,
}

fn unwrap_failed(e: ApiError) -> ApiError {
    tracing::error!(reason = %e.reason, "the email index key could not be unwrapped");
    AuthError::VaultUnavailable.into()
}

/// What a rotation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotated {
    pub version: i32,
    pub users: u64,
}

impl EmailIndex {
    pub fn new(db: Db, vault: kit::client::Channel) -> Self {
        Self { keys: DataKeys::new(db, Some(vault), "auth.email-index", "email_index_keys") }
    }

    /// The index of `email` under every live key version, for a lookup.
    pub async fn blinds(&self, tenant: &Tenant, email: &str) -> Result<Blinds, ApiError> {
        let live = self.keys.live(tenant).await.map_err(unwrap_failed)?;
        live.iter()
            .map(|k| Ok((k.version, blind_index(&k.bytes, email).map_err(|e| ApiError::internal(&e))?.to_vec())))
            .collect()
    }

    /// The login throttle's (account, address) identifiers of `email` from `ip` in `tenant`: keyed
    /// HMACs under the newest live version (loaded already for [`Self::blinds`]), per tenant since
    /// the key is. A rotation changes them: every counter starts afresh once, when its new version
    /// is added (each replica as it hears of it), and lockouts in progress are forgotten then.
    pub async fn throttle_ids(&self, tenant: &Tenant, email: &str, ip: &str) -> Result<(String, String), ApiError> {
        let live = self.keys.live(tenant).await.map_err(unwrap_failed)?;
        let key = live.last().ok_or(AuthError::VaultUnavailable)?;
        crate::throttle::ids(&key.bytes, "", email, ip)
    }

    /// The index of `email` under exactly the versions live in `tx` (locked until it ends), for a
    /// write.
    pub async fn blinds_for_write(&self, tx: &mut TenantTx, email: &str) -> Result<Blinds, ApiError> {
        let tenant = tx.tenant().clone();
        for _ in 0..2 {
            let blinds = self.blinds(&tenant, email).await?;
            let live = store::live_versions(tx).await?;
            if blinds.iter().map(|(v, _)| *v).eq(live.iter().copied()) {
                return Ok(blinds);
            }
            // This replica's keys are older than the table's: a rotation began or ended.
            self.keys.forget(&tenant).await;
        }
        Err(AuthError::VaultUnavailable.into())
    }

    /// See [`DataKeys::spawn_invalidation_listener`].
    pub fn spawn_invalidation_listener(&self, pool: sqlx::PgPool) -> tokio::task::JoinHandle<()> {
        self.keys.spawn_invalidation_listener(pool)
    }

    /// Rotates the tenant's index key (or finishes a rotation that was interrupted): adds a
    /// version, indexes every user under it and retires the older ones, with one audit record.
    pub async fn rotate(
        &self,
        db: &Db,
        personal: &Personal,
        tenant: &Tenant,
        actor: Actor,
        request_id: Option<String>,
    ) -> Result<Rotated, ApiError> {
        // A tenant that never indexed an email gets its first key, which is then rotated.
        self.keys.live(tenant).await.map_err(unwrap_failed)?;
        let wrapped = self.keys.generate_wrapped(tenant).await.map_err(unwrap_failed)?;
        let mut tx = db.begin(tenant).await?;
        let version = store::start_rotation(&mut tx, &wrapped).await?.ok_or(AuthError::VaultUnavailable)?;
        store::announce(&mut tx).await?;
        tx.commit().await?;
        self.keys.forget(tenant).await;
        let key = self.keys.live(tenant).await.map_err(unwrap_failed)?;
        let key = key.iter().find(|k| k.version == version).ok_or(AuthError::VaultUnavailable)?;
        let mut users = 0;
        loop {
            let mut tx = db.begin(tenant).await?;
            let page = store::unindexed(&mut tx, version, PAGE).await?;
            tx.commit().await?;
            if page.is_empty() {
                let mut tx = db.begin(tenant).await?;
                if store::activate(&mut tx, version).await? {
                    let rec = audit(actor, "auth.email_index_rotate", "email_index", Outcome::Success, request_id)
                        .detail("key_version", version)
                        .detail("users", users);
                    tx.record(rec).await?;
                    tx.commit().await?;
                    self.keys.forget(tenant).await;
                    return Ok(Rotated { version, users });
                }
                // A user was created under the old versions only while this ran: index it too.
                tx.rollback().await?;
                continue;
            }
            let items = page.iter().map(|(id, sealed)| Item {
                field: USER_EMAIL,
                row: *id,
                subject: *id,
                value: Stored::Sealed(sealed.clone()),
            });
            let emails = personal.open(tenant, items.collect()).await?;
            let rows = page
                .iter()
                .zip(emails)
                .filter(|(_, email)| !email.is_empty())
                .map(|((id, _), email)| {
                    Ok((*id, blind_index(&key.bytes, &email).map_err(|e| ApiError::internal(&e))?.to_vec()))
                })
                .collect::<Result<Vec<_>, ApiError>>()?;
            let mut tx = db.begin(tenant).await?;
            let added = store::insert(&mut tx, version, &rows).await?;
            tx.commit().await?;
            if added == 0 {
                // Users whose email no longer opens (their key shredded, the user not deleted).
                return Err(ApiError::new(
                    ErrorCode::FailedPrecondition,
                    "EMAIL_INDEX_INCOMPLETE",
                    "some users' emails no longer open (their key was shredded): delete them, then rotate again",
                ));
            }
            users += added;
        }
    }
}
