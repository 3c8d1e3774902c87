//! A tenant's data keys that a service uses in its own memory (HMAC keys: audit-svc's pseudonyms,
//! auth-svc's email blind index), kept in the tenant's schema only wrapped by vault-svc.
//!
//! A key is a 256-bit data key from vault-svc (`GenerateDataKey`, context `purpose=<purpose>`),
//! stored as the transit ciphertext vault-svc returned: it decrypts only for the service that asked,
//! for this tenant and this purpose. It is unwrapped on first use and cached for at most
//! [`KEY_TTL`]. vault-svc's key invalidations ([`crate::tenancy::KEY_INVALIDATION_CHANNEL`]) drop a
//! tenant's cached key on every replica at once, so after a tenant is shredded no replica keeps
//! the key in memory nor can unwrap it again.
//!
//! The table (the service's own, in its tenant migrations) has at least `version integer` and
//! `wrapped_key text`, with `version` unique per tenant. A row whose `wrapped_key` is NULL is a
//! retired version; every other row is live (a service that rotates keeps an old and a new one
//! live while it moves to the new one).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::vault::v1 as vault;
use proto::vault::v1::transit_service_client::TransitServiceClient;
use tokio::sync::Mutex;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::{ApiError, Db, Tenant};

/// How long an unwrapped key is used before vault-svc is asked again, should an invalidation be
/// lost.
pub const KEY_TTL: Duration = Duration::from_secs(300);

/// An unwrapped data key and its version.
pub struct DataKey {
    pub version: i32,
    pub bytes: Zeroizing<Vec<u8>>,
}

/// The live keys of a tenant, oldest first.
pub type LiveKeys = Arc<Vec<DataKey>>;

/// Unwrapped keys by tenant id, with when they were unwrapped, and how many invalidations were
/// seen: a load that an invalidation overtook is used once but not kept.
#[derive(Default)]
struct Cached {
    keys: HashMap<Uuid, (LiveKeys, Instant)>,
    invalidations: u64,
}

impl Cached {
    fn forget(&mut self, tenant: Option<Uuid>) {
        match tenant {
            Some(t) => drop(self.keys.remove(&t)),
            None => self.keys.clear(),
        }
        self.invalidations += 1;
    }

    /// Keeps `live` for `tenant` unless an invalidation came after the load began (`seen`).
    fn keep(&mut self, tenant: Uuid, live: &LiveKeys, seen: u64) -> bool {
        let fresh = self.invalidations == seen;
        if fresh {
            self.keys.insert(tenant, (live.clone(), Instant::now()));
        }
        fresh
    }
}

/// One purpose's data keys of every tenant, unwrapped by vault-svc on first use.
#[derive(Clone)]
pub struct DataKeys {
    db: Db,
    vault: Option<crate::client::Channel>,
    purpose: &'static str,
    table: &'static str,
    keys: Arc<Mutex<Cached>>,
}

impl std::fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKeys").field("purpose", &self.purpose).finish_non_exhaustive()
    }
}

fn call<T>(tenant: &Tenant, msg: T) -> tonic::Request<T> {
    crate::client::with_context(tonic::Request::new(msg), Some(tenant.slug.as_str()), None, None)
}

impl DataKeys {
    /// Keys of `purpose`, kept wrapped in the tenant table `table`; `vault` is `None` where the
    /// deployment has no vault-svc (every use then answers `NO_VAULT`).
    pub fn new(db: Db, vault: Option<crate::client::Channel>, purpose: &'static str, table: &'static str) -> Self {
        Self { db, vault, purpose, table, keys: Arc::default() }
    }

    fn context(&self) -> HashMap<String, String> {
        HashMap::from([("purpose".to_owned(), self.purpose.to_owned())])
    }

    fn transit(&self) -> Result<TransitServiceClient<crate::client::Channel>, ApiError> {
        let vault =
            self.vault.clone().ok_or_else(|| ApiError::unavailable("NO_VAULT", "upstreams.vault is not configured"))?;
        Ok(TransitServiceClient::new(vault))
    }

    /// Every live key of the tenant, oldest first (at least one: created by vault-svc on first
    /// use). A vault-svc refusal keeps its code and reason (`KEY_DESTROYED` once the tenant is
    /// shredded).
    pub async fn live(&self, tenant: &Tenant) -> Result<LiveKeys, ApiError> {
        let seen = {
            let cached = self.keys.lock().await;
            if let Some((k, _)) = cached.keys.get(&tenant.id.0).filter(|(_, at)| at.elapsed() < KEY_TTL) {
                return Ok(k.clone());
            }
            cached.invalidations
        };
        // Loaded without the lock: one tenant's round trips to vault-svc hold up no other tenant.
        let live = Arc::new(self.load_or_create(tenant).await?);
        self.keys.lock().await.keep(tenant.id.0, &live, seen);
        Ok(live)
    }

    /// Forgets the tenant's keys on this replica (after it changed them; other replicas hear of it
    /// through [`crate::tenancy::KEY_INVALIDATION_CHANNEL`]).
    pub async fn forget(&self, tenant: &Tenant) {
        self.keys.lock().await.forget(Some(tenant.id.0));
    }

    /// Unwraps `wrapped` (a key of this purpose) for `tenant`.
    pub async fn unwrap_key(&self, tenant: &Tenant, version: i32, wrapped: String) -> Result<DataKey, ApiError> {
        let req = vault::DecryptRequest { ciphertext: wrapped, context: self.context(), subject: String::new() };
        let plain = self.transit()?.decrypt(call(tenant, req)).await.map_err(|s| ApiError::from_status(&s))?;
        Ok(DataKey { version, bytes: Zeroizing::new(plain.into_inner().plaintext) })
    }

    /// A new key of this purpose from vault-svc, wrapped (its plaintext is dropped at once).
    pub async fn generate_wrapped(&self, tenant: &Tenant) -> Result<String, ApiError> {
        let req = vault::GenerateDataKeyRequest { context: self.context(), subject: String::new() };
        let generated =
            self.transit()?.generate_data_key(call(tenant, req)).await.map_err(|s| ApiError::from_status(&s))?;
        let generated = generated.into_inner();
        drop(Zeroizing::new(generated.plaintext_key));
        Ok(generated.wrapped_key)
    }

    /// Drops cached keys when vault-svc invalidates a tenant's keys (a shred, a rotation), on
    /// every replica, until the process ends; all of them whenever the listener (re)connects,
    /// since an invalidation may have been missed.
    pub fn spawn_invalidation_listener(&self, pool: sqlx::PgPool) -> tokio::task::JoinHandle<()> {
        let keys = self.keys.clone();
        let purpose = self.purpose;
        tokio::spawn(async move {
            loop {
                let listen = async {
                    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
                    listener.listen(crate::tenancy::KEY_INVALIDATION_CHANNEL).await?;
                    keys.lock().await.forget(None);
                    loop {
                        let n = listener.recv().await?;
                        keys.lock().await.forget(Uuid::parse_str(n.payload()).ok());
                    }
                    #[allow(unreachable_code)]
                    Ok::<(), sqlx::Error>(())
                };
                if let Err(e) = listen.await {
                    tracing::warn!(error = %e, purpose, "key invalidation listener lost; dropping data keys and reconnecting");
                    keys.lock().await.forget(None);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }

    async fn stored(&self, tenant: &Tenant) -> Result<Vec<(i32, String)>, ApiError> {
        let sql =
            format!("SELECT version, wrapped_key FROM {} WHERE wrapped_key IS NOT NULL ORDER BY version", self.table);
        let mut tx = self.db.begin(tenant).await?;
        let rows = tx.all(sqlx::query_as(&sql)).await?;
        tx.commit().await?;
        Ok(rows)
    }

    async fn load_or_create(&self, tenant: &Tenant) -> Result<Vec<DataKey>, ApiError> {
        let mut stored = self.stored(tenant).await?;
        if stored.is_empty() {
            let wrapped = self.generate_wrapped(tenant).await?;
            // Two replicas may race: the first insert wins and both use the stored key.
            let sql =
                format!("INSERT INTO {} (version, wrapped_key) VALUES (1, $1) ON CONFLICT DO NOTHING", self.table);
            let mut tx = self.db.begin(tenant).await?;
            tx.execute(sqlx::query(&sql).bind(&wrapped)).await?;
            tx.commit().await?;
            stored = self.stored(tenant).await?;
        }
        if stored.is_empty() {
            return Err(ApiError::internal(&"data key vanished after insert"));
        }
        let mut live = Vec::with_capacity(stored.len());
        for (version, wrapped) in stored {
            live.push(self.unwrap_key(tenant, version, wrapped).await?);
        }
        Ok(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_overtaken_by_an_invalidation_is_not_kept() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let live: LiveKeys = Arc::new(vec![DataKey { version: 1, bytes: Zeroizing::new(vec![7; 32]) }]);
        let mut cached = Cached::default();
        let seen = cached.invalidations;
        cached.forget(Some(b));
        assert!(!cached.keep(a, &live, seen), "a shred seen while loading: not kept");
        assert!(cached.keys.is_empty());
        let seen = cached.invalidations;
        assert!(cached.keep(a, &live, seen));
        cached.forget(None);
        assert!(cached.keys.is_empty());
    }
}
