//! audit-svc owns each tenant's append-only, hash-chained audit log: it drains every service's
//! outbox into contiguous, RFC 9162 Merkle-hashed entries. Nobody updates or deletes an entry (the
//! database refuses it). Checkpoints, proofs over gRPC, queries and the gateway routes are the rest
//! of the Audit issue.

pub mod api;
pub mod checkpoint;
pub mod domain;
pub mod sequencer;
pub mod verify;

use std::future::Future;

use kit::migrate::MigrationSet;
use kit::server::{Api, Listeners, ServeError};

pub const SERVICE: &str = "audit";

pub const MIGRATIONS: MigrationSet = MigrationSet {
    service: SERVICE,
    control: &[],
    tenant: &[
        kit::migration!("tenant", "0001_create_retention_policy"),
        kit::migration!("tenant", "0002_create_audit_log"),
        kit::migration!("tenant", "0003_create_checkpoints"),
    ],
};

/// Runs audit-svc until `shutdown`.
pub async fn run(
    config: kit::config::ServiceConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    kit::server::run_service(SERVICE, MIGRATIONS, config, listeners, shutdown, |ctx| {
        use proto::audit::v1::audit_log_service_server::AuditLogServiceServer;
        use proto::vault::v1::signing_service_client::SigningServiceClient;
        let signer = match &ctx.config.upstreams.vault {
            Some(url) => Some(SigningServiceClient::new(ctx.channel(url, kit::Identity::VAULT)?)),
            None => {
                tracing::warn!("upstreams.vault is not configured: checkpoints are not signed");
                None
            }
        };
        sequencer::spawn(ctx.db.clone(), ctx.shutdown.clone(), signer.clone());
        Ok(Api::new()
            .service(AuditLogServiceServer::new(api::AuditLog { db: ctx.db.clone(), signer }))
            .allow("/strongroom.audit.v1.AuditLogService/*", &[kit::Identity::GATEWAY, kit::Identity::OPERATOR]))
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
