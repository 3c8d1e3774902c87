//! vault-svc owns the key hierarchy (master key in a KMS/HSM → per-tenant keys → data keys,
//! AES-256-GCM), stored secrets, transit encryption and retention classes (whose period keys it
//! destroys by time). It never lets a key leave memory
//! unwrapped, never writes a credential unencrypted, and never reveals stored data without an
//! audit record committed in the same transaction.

pub mod api;
pub mod config;
pub mod domain;
pub mod error;
pub mod export;
pub mod journal;
pub mod keyring;
pub mod kms;
pub mod retention;
pub mod rotation;
pub mod signals;
pub mod signing_keys;
pub mod store;
pub mod tally;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kit::Identity;
use kit::config::ServiceConfig;
use kit::migrate::MigrationSet;
use kit::server::{Api, Listeners, ServeError};

pub use config::{KmsConfig, VaultSettings};

pub const SERVICE: &str = "vault";

pub const MIGRATIONS: MigrationSet = MigrationSet {
    service: SERVICE,
    control: &[],
    tenant: &[
        kit::migration!("tenant", "0001_create_vault_settings"),
        kit::migration!("tenant", "0002_create_key_hierarchy"),
        kit::migration!("tenant", "0003_create_subject_and_signing_keys"),
        kit::migration!("tenant", "0004_index_by_tenant_key_version"),
        kit::migration!("tenant", "0005_index_secret_listing"),
        kit::migration!("tenant", "0006_create_retention_classes_and_period_keys"),
        kit::migration!("tenant", "0007_index_secrets_by_subject"),
        kit::migration!("tenant", "0008_index_idempotency_keys_by_age"),
    ],
};

/// Runs vault-svc until `shutdown`.
pub async fn run(
    config: ServiceConfig<VaultSettings>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    config.validate().map_err(ServeError::Config)?;
    let (config, settings) = config.split();
    let kms = settings.kms.clone().ok_or_else(|| ServeError::Config("service.kms is required".into()))?;
    let provider = open_provider(&kms).await?;
    let mut previous = Vec::new();
    for cfg in &settings.previous_kms {
        previous.push(Arc::from(open_provider(cfg).await?));
    }
    tracing::info!(master_key = provider.key_id(), "master key provider ready");
    let audit_interval_secs = settings.count_audit_interval_secs;
    let retention_every = Duration::from_millis(settings.retention_interval_ms);
    let journal_dir = settings.erasure_journal.clone();
    let keyring = keyring::Keyring::new(
        Arc::from(provider),
        previous,
        Duration::from_secs(settings.key_cache_ttl_secs),
        settings.key_cache_size,
    );
    kit::server::run_service(SERVICE, MIGRATIONS, config, listeners, shutdown, move |ctx| {
        use proto::vault::v1::{
            key_management_service_server::KeyManagementServiceServer,
            retention_service_server::RetentionServiceServer, secrets_service_server::SecretsServiceServer,
            signing_service_server::SigningServiceServer, transit_service_server::TransitServiceServer,
        };
        // Rotation and shredding on any replica reach this one's caches.
        keyring.spawn_listener(ctx.db.control_pool().clone());
        let secrets = api::Secrets { db: ctx.db.clone(), keyring: keyring.clone() };
        // Signatures and transit decrypts are audited as counts per interval.
        let tally = tally::Tally::default();
        tally.spawn_flusher(ctx.db.clone(), Duration::from_secs(audit_interval_secs));
        let transit = api::Transit { db: ctx.db.clone(), keyring: keyring.clone(), tally: tally.clone() };
        let journal =
            kit::journal::from_setting(journal_dir.as_deref(), &ctx.certs, SERVICE).map_err(|e| e.to_string())?;
        let admin = api::KeyManagement { db: ctx.db.clone(), keyring: keyring.clone(), journal };
        let retention_classes = api::Retention { db: ctx.db.clone() };
        // Period keys past their class's retention are destroyed on every replica's schedule.
        retention::spawn(ctx.db.clone(), retention_every, ctx.shutdown.clone());
        // A terminated tenant's secrets leave only in its export bundle, sealed to its recipient.
        let part = export::VaultPart { db: ctx.db.clone(), keyring: keyring.clone() };
        kit::export::spawn(ctx.db.clone(), Arc::new(part), ctx.shutdown.clone());
        let signing = api::Signing { db: ctx.db.clone(), keyring, tally };
        let verifiers = [Identity::AUDIT, Identity::LEDGER, Identity::GATEWAY, Identity::OPERATOR];
        Ok(Api::new()
            .service(SecretsServiceServer::new(secrets))
            .allow("/strongroom.vault.v1.SecretsService/*", &[Identity::GATEWAY, Identity::OPERATOR])
            .service(TransitServiceServer::new(transit))
            .allow("/strongroom.vault.v1.TransitService/*", &[Identity::AUTH, Identity::AUDIT, Identity::LEDGER])
            .service(KeyManagementServiceServer::new(admin))
            .allow("/strongroom.vault.v1.KeyManagementService/*", &[Identity::OPERATOR])
            // auth-svc shreds a deleted user's subject key.
            .allow("/strongroom.vault.v1.KeyManagementService/ShredSubject", &[Identity::OPERATOR, Identity::AUTH])
            // The gateway only with a user's token holding `privacy.requests.write` (api/keys.rs).
            .allow(
                "/strongroom.vault.v1.KeyManagementService/DescribeSubject",
                &[Identity::OPERATOR, Identity::GATEWAY],
            )
            // The gateway only with a user's token holding `tenant.policy.write` (api/retention.rs).
            .service(RetentionServiceServer::new(retention_classes))
            .allow("/strongroom.vault.v1.RetentionService/*", &[Identity::OPERATOR, Identity::GATEWAY])
            .service(SigningServiceServer::new(signing))
            // Each signs only with its own keys (domain/signing.rs).
            .allow("/strongroom.vault.v1.SigningService/Sign", &[Identity::AUDIT, Identity::LEDGER])
            .allow(
                "/strongroom.vault.v1.SigningService/CreateSigningKey",
                &[Identity::AUDIT, Identity::LEDGER, Identity::OPERATOR],
            )
            .allow("/strongroom.vault.v1.SigningService/GetPublicKey", &verifiers)
            .allow("/strongroom.vault.v1.SigningService/RotateSigningKey", &[Identity::OPERATOR]))
    })
    .await
}

/// Opens a master key provider. A token that is briefly unavailable at boot (an HSM restarting,
/// another process writing SoftHSM's token store) gets a few more tries.
async fn open_provider(cfg: &KmsConfig) -> Result<Box<dyn kms::KeyProvider>, ServeError> {
    let mut attempt = 0;
    loop {
        let owned = cfg.clone();
        match tokio::task::spawn_blocking(move || kms::open(&owned))
            .await
            .map_err(|e| ServeError::Config(e.to_string()))?
        {
            Ok(p) => return Ok(p),
            Err(e) if attempt < 5 => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "master key provider not ready; retrying");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => return Err(ServeError::Config(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_migration_file_is_embedded() {
        kit::migrate::assert_all_embedded(env!("CARGO_MANIFEST_DIR"), &super::MIGRATIONS);
    }
}
