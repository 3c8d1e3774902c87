//! vault-svc's own settings (`[service]` in its configuration, `STRONGROOM_SERVICE__*`).

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultSettings {
    /// Where the master key lives. Required.
    pub kms: Option<KmsConfig>,
    /// Earlier master keys, still needed to unwrap tenant keys until `RotateMasterKey` has
    /// re-wrapped them under `kms`.
    #[serde(default)]
    pub previous_kms: Vec<KmsConfig>,
    /// How long unwrapped tenant keys stay cached (seconds, ≤ 3600).
    #[serde(default = "default_cache_ttl")]
    pub key_cache_ttl_secs: u64,
    /// At most this many unwrapped keys are cached.
    #[serde(default = "default_cache_size")]
    pub key_cache_size: usize,
    /// Signatures and transit decrypts are counted and written as one audit record per tenant,
    /// key (or context) and caller every this many seconds (1–3600).
    #[serde(default = "default_count_audit_interval")]
    pub count_audit_interval_secs: u64,
}

fn default_count_audit_interval() -> u64 {
    60
}

fn default_cache_ttl() -> u64 {
    300
}

fn default_cache_size() -> usize {
    10_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase", deny_unknown_fields)]
pub enum KmsConfig {
    /// A non-extractable AES-256 key inside a PKCS#11 token (an HSM; SoftHSM2 in development).
    Pkcs11 {
        /// The PKCS#11 library, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
        module: PathBuf,
        token_label: String,
        pin: SecretString,
        key_label: String,
        /// Generate the master key inside the token when it is missing (development only).
        #[serde(default)]
        create_key: bool,
    },
    /// A key file on this machine. Development only: refused when `env = "production"`.
    Local {
        key_file: PathBuf,
        /// Create the file with a fresh key when it is missing.
        #[serde(default)]
        create: bool,
    },
}

impl kit::config::ServiceSettings for VaultSettings {
    fn validate(&self, env: kit::config::Environment) -> Result<(), String> {
        match &self.kms {
            None => Err("service.kms is required (provider = \"pkcs11\" or \"local\")".into()),
            Some(KmsConfig::Local { .. }) if env == kit::config::Environment::Production => {
                Err("service.kms.provider = \"local\" keeps the master key on this machine; refused in production"
                    .into())
            }
            _ if env == kit::config::Environment::Production
                && self.previous_kms.iter().any(|k| matches!(k, KmsConfig::Local { .. })) =>
            {
                Err("service.previous_kms holds a local key file; refused in production".into())
            }
            Some(KmsConfig::Pkcs11 { create_key: true, .. }) if env == kit::config::Environment::Production => {
                Err("service.kms.create_key is for development; provision the master key in the HSM".into())
            }
            _ if self.key_cache_ttl_secs > 3600 => Err("service.key_cache_ttl_secs must be at most 3600".into()),
            _ if self.key_cache_size == 0 => Err("service.key_cache_size must be positive".into()),
            _ if !(1..=3600).contains(&self.count_audit_interval_secs) => {
                Err("service.count_audit_interval_secs must be 1 to 3600".into())
            }
            _ => Ok(()),
        }
    }
}
