//! audit-svc owns each tenant's append-only, hash-chained audit log. Nobody updates or deletes an entry. Today it serves its tenant provisioning, health and reflection; the Audit issue adds sequencing, proofs and queries.

use std::future::Future;

use kit::migrate::MigrationSet;
use kit::server::{Api, Listeners, ServeError};

pub const SERVICE: &str = "audit";

pub const MIGRATIONS: MigrationSet = MigrationSet {
    service: SERVICE,
    control: &[],
    tenant: &[kit::migration!("tenant", "0001_create_retention_policy")],
};

/// Runs audit-svc until `shutdown`.
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
