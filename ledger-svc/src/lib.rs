//! ledger-svc owns double-entry accounts and transfers; it never uses floats and never commits a transfer without its audit record. Today it serves its tenant provisioning, health and reflection; the Ledger issue adds accounts and transfers.

use std::future::Future;

use kit::migrate::MigrationSet;
use kit::server::{Api, Listeners, ServeError};

pub const SERVICE: &str = "ledger";

pub const MIGRATIONS: MigrationSet =
    MigrationSet { service: SERVICE, control: &[], tenant: &[kit::migration!("tenant", "0001_create_ledgers")] };

/// Runs ledger-svc until `shutdown`.
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
