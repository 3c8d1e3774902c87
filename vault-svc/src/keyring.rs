//! Tenant keys: created on first need (and at provisioning), stored only wrapped by the master
//! key, unwrapped on demand and cached for a bounded time. A destroyed version answers
//! `FAILED_PRECONDITION`/`KEY_DESTROYED`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kit::{ApiError, TenantTx};
use uuid::Uuid;

use crate::domain::crypto::{Aad, Key256};
use crate::domain::retention::{ClassName, Period, period_key_aad};
use crate::error::VaultError;
use crate::kms::{KeyProvider, KmsError};
use crate::signals::Operation;
use crate::store::keys as store;
use crate::store::retention as retention_store;

/// Associated data of a tenant key wrapped by the master key: a wrapped key copied to another
/// tenant or version does not unwrap.
fn wrap_aad(tenant: Uuid, version: u32) -> Aad {
    Aad::new("strongroom.vault.tenant-key").with("tenant", tenant.as_bytes()).with("version", &version.to_be_bytes())
}

/// Classifies a failed KMS/HSM call (counted in `strongroom_vault_kms_errors_total`).
fn kms_error(e: KmsError) -> ApiError {
    kit::metrics::Metrics::global().kms_error();
    match e {
        KmsError::Unauthentic => ApiError::internal(&"a wrapped tenant key does not authenticate under the master key"),
        other => {
            tracing::error!(error = %other, "key provider failure");
            VaultError::KmsUnavailable.into()
        }
    }
}

struct Cached {
    key: Key256,
    at: Instant,
}

/// Unwrapped tenant keys, shared by every request of this process.
#[derive(Clone)]
pub struct Keyring {
    provider: Arc<dyn KeyProvider>,
    /// Earlier master keys, kept to unwrap what they protect until it is re-wrapped.
    previous: Arc<Vec<Arc<dyn KeyProvider>>>,
    keys: Arc<Mutex<HashMap<(Uuid, u32), Cached>>>,
    active: Arc<Mutex<HashMap<Uuid, (u32, Instant)>>>,
    ttl: Duration,
    max: usize,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("master", &self.provider.key_id()).finish_non_exhaustive()
    }
}

impl Keyring {
    pub fn new(provider: Arc<dyn KeyProvider>, previous: Vec<Arc<dyn KeyProvider>>, ttl: Duration, max: usize) -> Self {
        Self {
            provider,
            previous: Arc::new(previous),
            keys: Arc::default(),
            active: Arc::default(),
            ttl,
            max: max.max(1),
        }
    }

    pub fn provider(&self) -> &Arc<dyn KeyProvider> {
        &self.provider
    }

    /// Forgets every cached key of `tenant` (after rotation or shredding, on every replica).
    pub fn invalidate(&self, tenant: Uuid) {
        if let Ok(mut keys) = self.keys.lock() {
            keys.retain(|(t, _), _| *t != tenant);
        }
        if let Ok(mut active) = self.active.lock() {
            active.remove(&tenant);
        }
    }

    /// The active version and key if both are cached.
    pub fn active_cached(&self, tenant: Uuid) -> Option<(u32, Key256)> {
        let version =
            self.active.lock().ok()?.get(&tenant).filter(|(_, at)| at.elapsed() < self.ttl).map(|(v, _)| *v)?;
        Some((version, self.cached(tenant, version)?))
    }

    /// A version's key if cached.
    pub fn cached_version(&self, tenant: Uuid, version: u32) -> Option<Key256> {
        self.cached(tenant, version)
    }

    fn cached(&self, tenant: Uuid, version: u32) -> Option<Key256> {
        let keys = self.keys.lock().ok()?;
        keys.get(&(tenant, version)).filter(|c| c.at.elapsed() < self.ttl).map(|c| c.key.clone())
    }

    fn remember(&self, tenant: Uuid, version: u32, key: &Key256) {
        if let Ok(mut keys) = self.keys.lock() {
            if keys.len() >= self.max {
                let ttl = self.ttl;
                keys.retain(|_, c| c.at.elapsed() < ttl);
                if keys.len() >= self.max {
                    keys.clear();
                }
            }
            keys.insert((tenant, version), Cached { key: key.clone(), at: Instant::now() });
        }
    }

    /// The tenant's active key version and key, creating version 1 when the tenant has none.
    pub async fn active(&self, tx: &mut TenantTx) -> Result<(u32, Key256), ApiError> {
        let tenant = tx.tenant().id.0;
        let hit = self
            .active
            .lock()
            .ok()
            .and_then(|a| a.get(&tenant).filter(|(_, at)| at.elapsed() < self.ttl).map(|(v, _)| *v));
        if let Some(version) = hit
            && let Some(key) = self.cached(tenant, version)
        {
            return Ok((version, key));
        }
        let version = match store::active_tenant_key_version(tx).await? {
            (Some(v), _) => v,
            // Shredded or retired: a fresh key must never be started silently.
            (None, true) => return Err(VaultError::KeyDestroyed.into()),
            (None, false) => match self.create_first(tx).await? {
                // Created by this (uncommitted) transaction: used, but not cached, since the
                // transaction may still roll back.
                (v, Some(key)) => return Ok((v, key)),
                (v, None) => v,
            },
        };
        let key = self.version(tx, version).await?;
        if let Ok(mut active) = self.active.lock() {
            active.insert(tenant, (version, Instant::now()));
        }
        Ok((version, key))
    }

    /// Creates version 1 if no key exists yet (idempotent under concurrency). Returns the
    /// version, and the key when this transaction created it.
    pub async fn create_first(&self, tx: &mut TenantTx) -> Result<(u32, Option<Key256>), ApiError> {
        let tenant = tx.tenant().id.0;
        let key = Key256::generate().map_err(|e| ApiError::internal(&e))?;
        let wrapped = self.wrap(tenant, 1, key.clone()).await?;
        if store::insert_first_tenant_key(tx, self.provider.key_id(), &wrapped).await? {
            return Ok((1, Some(key)));
        }
        let v = store::active_version(tx, false).await?.ok_or(VaultError::KeyDestroyed)?;
        Ok((v, None))
    }

    async fn wrap(&self, tenant: Uuid, version: u32, key: Key256) -> Result<Vec<u8>, ApiError> {
        let provider = self.provider.clone();
        tokio::task::spawn_blocking(move || provider.wrap(wrap_aad(tenant, version).bytes(), &key))
            .await
            .map_err(|e| ApiError::internal(&e))?
            .map_err(kms_error)
    }

    /// The tenant key of `version` (cached, else unwrapped by the master key).
    pub async fn version(&self, tx: &mut TenantTx, version: u32) -> Result<Key256, ApiError> {
        let tenant = tx.tenant().id.0;
        if let Some(key) = self.cached(tenant, version) {
            return Ok(key);
        }
        let (master_key_id, wrapped) = match store::wrapped_tenant_key(tx, version).await? {
            Some(store::WrappedTenantKey { state, master_key_id, wrapped: Some(wrapped), .. })
                if state != "destroyed" =>
            {
                (master_key_id, wrapped)
            }
            Some(_) => return Err(VaultError::KeyDestroyed.into()),
            None => return Err(VaultError::KeyNotFound.into()),
        };
        let key = self.unwrap_tenant_key(tenant, version, &master_key_id, wrapped).await?;
        self.remember(tenant, version, &key);
        Ok(key)
    }

    /// The provider holding master key `id`: the current one or a previous one.
    fn provider_for(&self, id: &str) -> Result<Arc<dyn KeyProvider>, ApiError> {
        std::iter::once(&self.provider).chain(self.previous.iter()).find(|p| p.key_id() == id).cloned().ok_or_else(
            || {
                tracing::error!(master_key = id, "a tenant key is wrapped by a master key that is not configured");
                VaultError::MasterKeyUnavailable.into()
            },
        )
    }

    async fn unwrap_tenant_key(
        &self,
        tenant: Uuid,
        version: u32,
        master_key_id: &str,
        wrapped: Vec<u8>,
    ) -> Result<Key256, ApiError> {
        let provider = self.provider_for(master_key_id)?;
        let key = tokio::task::spawn_blocking(move || provider.unwrap(wrap_aad(tenant, version).bytes(), &wrapped))
            .await
            .map_err(|e| ApiError::internal(&e))?
            .map_err(kms_error)?;
        Operation::Unwrap.done();
        Ok(key)
    }

    /// Re-wraps every live tenant key of this tenant that a previous master key protects under
    /// the current one (master key rotation). Returns how many were re-wrapped.
    pub async fn rewrap_under_current_master(&self, tx: &mut TenantTx) -> Result<u32, ApiError> {
        let tenant = tx.tenant().id.0;
        let mut moved = 0;
        for row in store::lock_wrapped_by_other_master(tx, self.provider.key_id()).await? {
            let version = row.version as u32;
            // Selected by `wrapped IS NOT NULL`.
            let Some(wrapped) = row.wrapped else { continue };
            let key = self.unwrap_tenant_key(tenant, version, &row.master_key_id, wrapped).await?;
            let rewrapped = self.wrap(tenant, version, key).await?;
            store::set_wrapped(tx, version, &rewrapped, self.provider.key_id()).await?;
            moved += 1;
        }
        Ok(moved)
    }

    /// Creates the next tenant key version and makes it the one new encryptions use.
    pub async fn rotate(&self, tx: &mut TenantTx) -> Result<u32, ApiError> {
        self.active(tx).await?;
        // `active` made sure there is one.
        let current =
            store::active_version(tx, true).await?.ok_or_else(|| ApiError::internal(&"no active tenant key"))?;
        let next = current + 1;
        let tenant = tx.tenant().id.0;
        let wrapped = self.wrap(tenant, next, Key256::generate().map_err(|e| ApiError::internal(&e))?).await?;
        store::rotate_tenant_key(tx, current, next, self.provider.key_id(), &wrapped).await?;
        store::notify_key_change(tx).await?;
        Ok(next)
    }

    /// Seals 32 bytes of key material under the tenant key `version` (nonce ‖ ciphertext).
    pub fn seal_key(tenant_key: &Key256, aad: &Aad, material: &Key256) -> Result<Vec<u8>, ApiError> {
        let (nonce, ct) = tenant_key.seal(aad.bytes(), material.expose()).map_err(|e| ApiError::internal(&e))?;
        Ok([nonce.as_slice(), &ct].concat())
    }

    pub fn open_key(tenant_key: &Key256, aad: &Aad, sealed: &[u8]) -> Result<Key256, ApiError> {
        use crate::domain::crypto::NONCE_LEN;
        if sealed.len() < NONCE_LEN + 16 {
            return Err(ApiError::internal(&"sealed key too short"));
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| ApiError::internal(&"nonce"))?;
        let raw = tenant_key
            .open(&nonce, aad.bytes(), ct)
            .map_err(|_| ApiError::internal(&"a sealed key does not authenticate"))?;
        Key256::from_slice(&raw).map_err(|e| ApiError::internal(&e))
    }
}

/// Associated data of a subject key sealed by a tenant key.
pub fn subject_aad(tenant: Uuid, subject: &str, version: u32) -> Aad {
    Aad::new("strongroom.vault.subject-key")
        .with("tenant", tenant.as_bytes())
        .with("subject", subject.as_bytes())
        .with("version", &version.to_be_bytes())
}

/// The LISTEN/NOTIFY channel of key invalidations.
pub const INVALIDATION_CHANNEL: &str = kit::tenancy::KEY_INVALIDATION_CHANNEL;

impl Keyring {
    /// Forgets every cached key (after a lost listener connection, when notifications may be lost).
    pub fn clear(&self) {
        if let Ok(mut keys) = self.keys.lock() {
            keys.clear();
        }
        if let Ok(mut active) = self.active.lock() {
            active.clear();
        }
    }

    /// Listens for invalidations from every replica until the process ends.
    pub fn spawn_listener(&self, pool: sqlx::PgPool) -> tokio::task::JoinHandle<()> {
        let keyring = self.clone();
        tokio::spawn(async move {
            loop {
                let listen = async {
                    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
                    listener.listen(INVALIDATION_CHANNEL).await?;
                    // Anything cached before the listener was up may be stale.
                    keyring.clear();
                    loop {
                        let n = listener.recv().await?;
                        match Uuid::parse_str(n.payload()) {
                            Ok(tenant) => keyring.invalidate(tenant),
                            Err(_) => keyring.clear(),
                        }
                    }
                    #[allow(unreachable_code)]
                    Ok::<(), sqlx::Error>(())
                };
                if let Err(e) = listen.await {
                    tracing::warn!(error = %e, "key invalidation listener lost; clearing caches and reconnecting");
                    keyring.clear();
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }

    /// The subject's active key, created on first use when `create`.
    pub async fn subject_key(&self, tx: &mut TenantTx, subject: &str, create: bool) -> Result<(u32, Key256), ApiError> {
        match store::latest_subject_key(tx, subject).await? {
            Some(row) => self.open_subject_key(tx, subject, row).await,
            None if create => {
                let (tkv, tenant_key) = self.active(tx).await?;
                let key = Key256::generate().map_err(|e| ApiError::internal(&e))?;
                let sealed = Self::seal_key(&tenant_key, &subject_aad(tx.tenant().id.0, subject, 1), &key)?;
                if store::insert_first_subject_key(tx, subject, tkv, &sealed).await? {
                    Ok((1, key))
                } else {
                    Box::pin(self.subject_key(tx, subject, false)).await
                }
            }
            None => Err(VaultError::NoSubjectKey.into()),
        }
    }

    /// The subject key of `version` (for decryption).
    pub async fn subject_key_version(
        &self,
        tx: &mut TenantTx,
        subject: &str,
        version: u32,
    ) -> Result<Key256, ApiError> {
        let row = store::subject_key(tx, subject, version).await?.ok_or(VaultError::NoSubjectKey)?;
        Ok(self.open_subject_key(tx, subject, row).await?.1)
    }

    /// A stored subject key, opened by its tenant key; a shredded one is `KEY_DESTROYED`.
    async fn open_subject_key(
        &self,
        tx: &mut TenantTx,
        subject: &str,
        row: store::SubjectKeyRow,
    ) -> Result<(u32, Key256), ApiError> {
        let Some(wrapped) = row.wrapped else { return Err(VaultError::KeyDestroyed.into()) };
        let version = row.version as u32;
        let tenant_key = self.version(tx, row.tenant_key_version as u32).await?;
        Ok((version, Self::open_key(&tenant_key, &subject_aad(tx.tenant().id.0, subject, version), &wrapped)?))
    }
}

/// A retention class's key of one period, opened.
#[derive(Debug, Clone)]
pub struct PeriodKey {
    /// Its number in the tenant, written into each ciphertext's envelope.
    pub number: u32,
    pub class: String,
    pub key: Key256,
}

impl Keyring {
    /// The key of `class` for the period `now` falls in, created on first use (sealed by the
    /// active tenant key). A class the tenant does not have is `RETENTION_CLASS_NOT_FOUND`.
    pub async fn current_period_key(
        &self,
        tx: &mut TenantTx,
        class: &ClassName,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<PeriodKey, ApiError> {
        let period = retention_store::class_period(tx, class).await?.ok_or(VaultError::RetentionClassNotFound)?;
        let period = Period::from_stored(&period).ok_or_else(|| ApiError::internal(&"a stored period is unknown"))?;
        let window = period.containing(now);
        if let Some(row) = retention_store::period_key_of(tx, class, &window.label).await? {
            return self.open_period_key(tx, row).await;
        }
        let (tenant_key_version, tenant_key) = self.active(tx).await?;
        match retention_store::reserve_period_key(tx, class, &window, tenant_key_version).await? {
            Some(number) => {
                let key = Key256::generate().map_err(|e| ApiError::internal(&e))?;
                let aad = period_key_aad(tx.tenant().id.0, class.as_str(), number);
                retention_store::seal_period_key(tx, number, &Self::seal_key(&tenant_key, &aad, &key)?).await?;
                Ok(PeriodKey { number, class: class.as_str().to_owned(), key })
            }
            // Another transaction created it first (and committed: the insert waited for it).
            None => match retention_store::period_key_of(tx, class, &window.label).await? {
                Some(row) => self.open_period_key(tx, row).await,
                None => Err(ApiError::internal(&"a period key conflicted and then was not found")),
            },
        }
    }

    /// Period key number `number` (for decryption). A number this tenant never had means the
    /// ciphertext is not this tenant's (`DECRYPTION_FAILED`); a destroyed key is
    /// `RETENTION_EXPIRED`.
    pub async fn period_key(&self, tx: &mut TenantTx, number: u32) -> Result<PeriodKey, ApiError> {
        let row = retention_store::period_key(tx, number).await?.ok_or(VaultError::DecryptionFailed)?;
        self.open_period_key(tx, row).await
    }

    async fn open_period_key(
        &self,
        tx: &mut TenantTx,
        row: retention_store::PeriodKeyRow,
    ) -> Result<PeriodKey, ApiError> {
        let Some(wrapped) = row.wrapped else { return Err(VaultError::RetentionExpired.into()) };
        let number = row.id as u32;
        let tenant_key = self.version(tx, row.tenant_key_version as u32).await?;
        let key = Self::open_key(&tenant_key, &period_key_aad(tx.tenant().id.0, &row.class, number), &wrapped)?;
        Ok(PeriodKey { number, class: row.class, key })
    }
}
