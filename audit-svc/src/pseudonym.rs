//! Keyed pseudonyms of personal data (client IP, user agent, …) appended through
//! `AuditIngestService`. The raw value never reaches the database: audit-svc replaces it by
//! `hmac-sha256:<key version>:<base64url(HMAC-SHA-256(key, name ‖ 0x00 ‖ value))>` under the tenant's
//! pseudonym key: a `kit::datakey` key of purpose `audit.pseudonym`, stored only wrapped in
//! `pseudonym_keys`, so after a tenant is shredded no replica makes another pseudonym (the unwrap
//! fails) nor keeps the key in memory.
//!
//! Equal values give equal pseudonyms within a tenant (an auditor can correlate one address's
//! requests), nothing links tenants, and without the key a pseudonym cannot be reversed or
//! brute-forced over the small IPv4 space. Shredding the tenant in vault-svc makes every pseudonym
//! permanently unlinkable; the log, its chain and its proofs stay valid, as they hash the pseudonym.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use kit::datakey::DataKeys;
use kit::{ApiError, Db, Tenant};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Per-tenant pseudonym keys (`pseudonym_keys`), unwrapped by vault-svc on first use.
#[derive(Clone, Debug)]
pub struct Pseudonymizer {
    keys: DataKeys,
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
    pub fn new(db: Db, vault: Option<kit::client::Channel>) -> Self {
        Self { keys: DataKeys::new(db, vault, "audit.pseudonym", "pseudonym_keys") }
    }

    /// Drops cached keys when vault-svc invalidates a tenant's keys (see [`DataKeys`]).
    pub fn spawn_invalidation_listener(&self, pool: sqlx::PgPool) -> tokio::task::JoinHandle<()> {
        self.keys.spawn_invalidation_listener(pool)
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
        let live = self.keys.live(tenant).await?;
        let key = live.last().ok_or_else(|| ApiError::internal(&"no pseudonym key"))?;
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

    /// The pseudonyms that `values` (name, value) make under every live key of the tenant, each
    /// with the value it stands for: what resolves a subject's own pseudonyms for an access
    /// export. Computed on request and never stored.
    pub async fn resolutions(
        &self,
        tenant: &Tenant,
        values: &[(String, String)],
    ) -> Result<HashMap<String, (String, String)>, ApiError> {
        if values.is_empty() {
            return Ok(HashMap::new());
        }
        let live = self.keys.live(tenant).await?;
        let mut out = HashMap::with_capacity(values.len() * live.len());
        for key in live.iter() {
            for (name, value) in values {
                out.insert(pseudonym(&key.bytes, key.version, name, value), (name.clone(), value.clone()));
            }
        }
        Ok(out)
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
