//! vault-svc owns the key hierarchy (master key in a KMS/HSM → per-tenant keys → data keys,
//! AES-256-GCM), stored secrets and transit encryption. It never lets a key leave memory
//! unwrapped, never writes a credential unencrypted, and never reveals stored data without an
//! audit record committed in the same transaction.

pub mod api;
pub mod config;
pub mod domain;
pub mod keyring;
pub mod kms;
pub mod store;

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
    // A token that is briefly unavailable at boot (an HSM restarting, another process writing
    // SoftHSM's token store) gets a few more tries before the service gives up.
    let mut attempt = 0;
    let provider = loop {
        let cfg = kms.clone();
        match tokio::task::spawn_blocking(move || kms::open(&cfg))
            .await
            .map_err(|e| ServeError::Config(e.to_string()))?
        {
            Ok(p) => break p,
            Err(e) if attempt < 5 => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "master key provider not ready; retrying");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => return Err(ServeError::Config(e.to_string())),
        }
    };
    tracing::info!(master_key = provider.key_id(), "master key provider ready");
    let keyring = keyring::Keyring::new(
        Arc::from(provider),
        Duration::from_secs(settings.key_cache_ttl_secs),
        settings.key_cache_size,
    );
    kit::server::run_service(SERVICE, MIGRATIONS, config, listeners, shutdown, move |ctx| {
        use proto::vault::v1::{
            secrets_service_server::SecretsServiceServer, transit_service_server::TransitServiceServer,
        };
        let secrets = api::Secrets { db: ctx.db.clone(), keyring: keyring.clone() };
        let transit = api::Transit { db: ctx.db.clone(), keyring };
        Ok(Api::new()
            .service(SecretsServiceServer::new(secrets))
            .allow("/strongroom.vault.v1.SecretsService/*", &[Identity::GATEWAY, Identity::OPERATOR])
            .service(TransitServiceServer::new(transit))
            .allow("/strongroom.vault.v1.TransitService/*", &[Identity::AUTH, Identity::AUDIT, Identity::LEDGER]))
    })
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_migration_file_is_embedded() {
        kit::migrate::assert_all_embedded(env!("CARGO_MANIFEST_DIR"), &super::MIGRATIONS);
    }
}
