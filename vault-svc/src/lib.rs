//! vault-svc owns the key hierarchy (master key in a KMS/HSM, per-tenant keys, data keys), stored secrets, transit and signing keys. It never lets a key leave memory unwrapped and never decrypts stored data without an audit record. Today it serves its tenant provisioning, health and reflection; the Vault issue adds its API.

use std::future::Future;

use kit::migrate::MigrationSet;
use kit::server::{Api, Listeners, ServeError};

pub const SERVICE: &str = "vault";

pub const MIGRATIONS: MigrationSet =
    MigrationSet { service: SERVICE, control: &[], tenant: &[kit::migration!("tenant", "0001_create_vault_settings")] };

/// Runs vault-svc until `shutdown`.
pub async fn run(
    config: kit::config::ServiceConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    kit::server::run_service(SERVICE, MIGRATIONS, config, listeners, shutdown, |_ctx| Ok(Api::new())).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_migration_file_is_embedded() {
        kit::migrate::assert_all_embedded(env!("CARGO_MANIFEST_DIR"), &super::MIGRATIONS);
    }
}
