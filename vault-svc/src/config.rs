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
    /// How often the retention job destroys period keys past their class's retention
    /// (milliseconds, [`RETENTION_INTERVAL_MS`]; default one hour).
    #[serde(default = "default_retention_interval")]
    pub retention_interval_ms: u64,
    /// The erasure journal's directory (`kit::journal`, docs/operations.md): every subject or
    /// tenant key shredded is written there before it commits, so that a restore from a backup
    /// does not bring it back. Shared by every replica, kept beside the backup repository.
    #[serde(default)]
    pub erasure_journal: Option<std::path::PathBuf>,
}

/// Bounds of `service.retention_interval_ms`: 1 second – 1 day.
pub const RETENTION_INTERVAL_MS: std::ops::RangeInclusive<u64> = 1000..=86_400_000;

fn default_retention_interval() -> u64 {
    3_600_000
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
            _ if env == kit::config::Environment::Production && self.erasure_journal.is_none() => {
                Err("service.erasure_journal is required in production: without it a restore from a backup brings back shredded data".into())
            }
            _ if self.key_cache_ttl_secs > 3600 => Err("service.key_cache_ttl_secs must be at most 3600".into()),
            _ if self.key_cache_size == 0 => Err("service.key_cache_size must be positive".into()),
            _ if !(1..=3600).contains(&self.count_audit_interval_secs) => {
                Err("service.count_audit_interval_secs must be 1 to 3600".into())
            }
            _ => kit::config::within("retention_interval_ms", self.retention_interval_ms, RETENTION_INTERVAL_MS),
        }
    }
}

#[cfg(test)]
mod tests {
    use kit::config::{Environment, ServiceSettings};

    use super::*;

    fn local() -> VaultSettings {
        let kms = KmsConfig::Local { key_file: "/dev/null".into(), create: false };
        VaultSettings {
            kms: Some(kms),
            key_cache_ttl_secs: default_cache_ttl(),
            key_cache_size: default_cache_size(),
            count_audit_interval_secs: default_count_audit_interval(),
            retention_interval_ms: default_retention_interval(),
            ..Default::default()
        }
    }

    #[test]
    fn the_retention_job_runs_between_every_second_and_every_day() {
        assert!(local().validate(Environment::Development).is_ok());
        for (ms, ok) in [(999, false), (1000, true), (86_400_000, true), (86_400_001, false)] {
            let settings = VaultSettings { retention_interval_ms: ms, ..local() };
            assert_eq!(settings.validate(Environment::Development).is_ok(), ok, "{ms}");
        }
        let e = VaultSettings { retention_interval_ms: 0, ..local() }.validate(Environment::Development);
        assert_eq!(e.expect_err("zero"), "service.retention_interval_ms must be 1000–86400000");
    }

    #[test]
    fn production_needs_the_erasure_journal() {
        let kms = KmsConfig::Pkcs11 {
            module: "/usr/lib/softhsm/libsofthsm2.so".into(),
            token_label: "strongroom".into(),
            pin: "1234".to_owned().into(),
            key_label: "master".into(),
            create_key: false,
        };
        let hsm = VaultSettings { kms: Some(kms), ..local() };
        let e = hsm.validate(Environment::Production).expect_err("no journal");
        assert!(e.starts_with("service.erasure_journal is required in production"), "{e}");
        let journaled = VaultSettings { erasure_journal: Some("/var/lib/strongroom/erasure-journal".into()), ..hsm };
        assert!(journaled.validate(Environment::Production).is_ok());
    }
}
