//! Keyed pseudonyms of personal data (client IP, user agent, …) appended through
//! `AuditIngestService`. The raw value never reaches the database: audit-svc replaces it by
//! `hmac-sha256:<key version>:<base64url(HMAC-SHA-256(key, name ‖ 0x00 ‖ value))>` under the tenant's
//! pseudonym key. The key is a 256-bit data key from vault-svc (`GenerateDataKey`), stored only
//! wrapped in `pseudonym_keys` (a transit ciphertext that decrypts only for audit-svc, this tenant
//! and `purpose=audit.pseudonym`), unwrapped on first use and cached in memory for at most
//! [`KEY_TTL`]. vault-svc's key invalidations (`kit::tenancy::KEY_INVALIDATION_CHANNEL`) drop a
//! tenant's cached key on every replica at once, so after a tenant is shredded no replica makes
//! another pseudonym (the unwrap fails) nor keeps the key in memory.
//!
//! Equal values give equal pseudonyms within a tenant (an auditor can correlate one address's
//! requests), nothing links tenants, and without the key a pseudonym cannot be reversed or
//! brute-forced over the small IPv4 space. Shredding the tenant in vault-svc makes every pseudonym
//! permanently unlinkable; the log, its chain and its proofs stay valid, as they hash the pseudonym.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use kit::{ApiError, Db, Tenant};
use proto::vault::v1 as vault;
use proto::vault::v1::transit_service_client::TransitServiceClient;
use sha2::Sha256;
use tokio::sync::Mutex;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::error::AuditError;
use crate::store;

pub type Transit = TransitServiceClient<kit::client::Channel>;

fn call<T>(tenant: &Tenant, msg: T) -> tonic::Request<T> {
    kit::client::with_context(tonic::Request::new(msg), Some(tenant.slug.as_str()), None, None)
}

const PURPOSE: (&str, &str) = ("purpose", "audit.pseudonym");

struct Key {
    version: i32,
    bytes: Zeroizing<Vec<u8>>,
}

/// How long an unwrapped pseudonym key is used before vault-svc is asked again, should an
/// invalidation be lost.
pub const KEY_TTL: Duration = Duration::from_secs(300);

/// Per-tenant pseudonym keys, unwrapped by vault-svc on first use, with when.
#[derive(Clone)]
pub struct Pseudonymizer {
    db: Db,
    transit: Option<Transit>,
    keys: Arc<Mutex<Cached>>,
}

/// Unwrapped keys by tenant id, with when they were unwrapped.
type Cached = HashMap<Uuid, (Arc<Key>, Instant)>;

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pseudonymizer").finish_non_exhaustive()
    }
}

fn context() -> HashMap<String, String> {
    HashMap::from([(PURPOSE.0.to_owned(), PURPOSE.1.to_owned())])
}

/// The pseudonym of `value` (named `name`) under `key`.
pub fn pseudonym(key: &[u8], version: i32, name: &str, value: &str) -> String {
    // HMAC accepts keys of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(name.as_bytes());
    mac.update(&[0]);
    mac.update(value.as_bytes());
    format!("hmac-sha256:{version}:{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

impl Pseudonymizer {
    pub fn new(db: Db, transit: Option<Transit>) -> Self {
        Self { db, transit, keys: Arc::default() }
    }

    fn transit(&self) -> Result<Transit, ApiError> {
        self.transit.clone().ok_or_else(|| AuditError::NoVault.into())
    }

    async fn key(&self, tenant: &Tenant) -> Result<Arc<Key>, ApiError> {
        let mut keys = self.keys.lock().await;
        if let Some((k, _)) = keys.get(&tenant.id.0).filter(|(_, at)| at.elapsed() < KEY_TTL) {
            return Ok(k.clone());
        }
        keys.remove(&tenant.id.0);
        let key = Arc::new(self.load_or_create(tenant).await?);
        keys.insert(tenant.id.0, (key.clone(), Instant::now()));
        Ok(key)
    }

    /// Drops cached keys when vault-svc invalidates a tenant's keys (a shred, a rotation), on
    /// every replica, until the process ends; all of them whenever the listener (re)connects,
    /// since an invalidation may have been missed.
    pub fn spawn_invalidation_listener(&self, pool: sqlx::PgPool) -> tokio::task::JoinHandle<()> {
        let keys = self.keys.clone();
        tokio::spawn(async move {
            loop {
                let listen = async {
                    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
                    listener.listen(kit::tenancy::KEY_INVALIDATION_CHANNEL).await?;
                    keys.lock().await.clear();
                    loop {
                        let n = listener.recv().await?;
                        let mut keys = keys.lock().await;
                        match Uuid::parse_str(n.payload()) {
                            Ok(tenant) => keys.remove(&tenant).map(|_| ()).unwrap_or_default(),
                            Err(_) => keys.clear(),
                        }
                    }
                    #[allow(unreachable_code)]
                    Ok::<(), sqlx::Error>(())
                };
                if let Err(e) = listen.await {
                    tracing::warn!(error = %e, "key invalidation listener lost; dropping pseudonym keys and reconnecting");
                    keys.lock().await.clear();
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }

    async fn load_or_create(&self, tenant: &Tenant) -> Result<Key, ApiError> {
        let mut transit = self.transit()?;
        let stored = |db: Db| async move {
            let mut tx = db.begin(tenant).await?;
            let row = store::pseudonyms::newest(&mut tx).await?;
            tx.commit().await?;
            Ok::<_, ApiError>(row)
        };
        let (version, wrapped) = match stored(self.db.clone()).await? {
            Some(row) => row,
            None => {
                let generated = transit
                    .generate_data_key(call(
                        tenant,
                        vault::GenerateDataKeyRequest { context: context(), subject: String::new() },
                    ))
                    .await
                    .map_err(|s| ApiError::from_status(&s))?
                    .into_inner();
                drop(Zeroizing::new(generated.plaintext_key));
                // Two replicas may race: the first insert wins and both use the stored key.
                let mut tx = self.db.begin(tenant).await?;
                store::pseudonyms::insert_first(&mut tx, &generated.wrapped_key).await?;
                tx.commit().await?;
                stored(self.db.clone())
                    .await?
                    .ok_or_else(|| ApiError::internal(&"pseudonym key vanished after insert"))?
            }
        };
        let plain = transit
            .decrypt(call(
                tenant,
                vault::DecryptRequest { ciphertext: wrapped, context: context(), subject: String::new() },
            ))
            .await
            .map_err(|s| ApiError::from_status(&s))?
            .into_inner();
        Ok(Key { version, bytes: Zeroizing::new(plain.plaintext) })
    }

    /// Replaces every value of `personal` by its pseudonym, under the same name.
    pub async fn apply(
        &self,
        tenant: &Tenant,
        personal: Vec<HashMap<String, String>>,
    ) -> Result<Vec<Vec<(String, String)>>, ApiError> {
        if personal.iter().all(HashMap::is_empty) {
            return Ok(personal.into_iter().map(|_| Vec::new()).collect());
        }
        let key = self.key(tenant).await?;
        Ok(personal
            .into_iter()
            .map(|fields| {
                let mut out: Vec<(String, String)> = fields
                    .into_iter()
                    .map(|(name, value)| {
                        let value = Zeroizing::new(value);
                        let p = pseudonym(&key.bytes, key.version, &name, &value);
                        (name, p)
                    })
                    .collect();
                out.sort();
                out
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_keyed_named_and_stable() {
        let a = pseudonym(&[1u8; 32], 1, "client_ip", "192.0.2.1");
        assert_eq!(a, pseudonym(&[1u8; 32], 1, "client_ip", "192.0.2.1"));
        assert!(a.starts_with("hmac-sha256:1:"));
        assert!(!a.contains("192.0.2.1"));
        assert_ne!(a, pseudonym(&[2u8; 32], 1, "client_ip", "192.0.2.1"));
        assert_ne!(a, pseudonym(&[1u8; 32], 1, "user_agent", "192.0.2.1"));
        assert_ne!(a, pseudonym(&[1u8; 32], 1, "client_ip", "192.0.2.2"));
    }
}
