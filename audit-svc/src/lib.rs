//! audit-svc owns each tenant's append-only, hash-chained audit log: it drains every service's
//! outbox into contiguous, RFC 9162 Merkle-hashed entries. Nobody updates or deletes an entry (the
//! database refuses it). Checkpoints, proofs over gRPC, queries and the gateway routes are the rest
//! of the Audit issue; a background job verifies every tenant's log continuously (`integrity`),
//! and another exports each tenant's outbox backlog and checkpoint staleness (`signals`). A
//! terminated tenant's log goes into its export bundle, whose manifest audit-svc signs (`export`).

pub mod api;
pub mod checkpoint;
pub mod config;
pub mod domain;
pub mod error;
pub mod export;
pub mod ingest;
pub mod integrity;
pub mod pseudonym;
pub mod retention;
pub mod sequencer;
pub mod signals;
pub mod store;
pub mod stream;
pub mod verify;

use std::future::Future;

use kit::Db;
use kit::migrate::MigrationSet;
use kit::server::{Api, Listeners, ServeError};

pub use config::AuditSettings;

pub const SERVICE: &str = "audit";

pub const MIGRATIONS: MigrationSet = MigrationSet {
    service: SERVICE,
    control: &[kit::migration!("control", "0001_create_retention_floor")],
    tenant: &[
        kit::migration!("tenant", "0001_create_retention_policy"),
        kit::migration!("tenant", "0002_create_audit_log"),
        kit::migration!("tenant", "0003_create_checkpoints"),
        kit::migration!("tenant", "0004_ingest_and_queries"),
        kit::migration!("tenant", "0005_retention_pruning"),
        kit::migration!("tenant", "0006_append_direct"),
        kit::migration!("tenant", "0007_lighter_outbox_and_log_writes"),
        kit::migration!("tenant", "0008_upper_merkle_levels_only"),
        kit::migration!("tenant", "0009_time_marks"),
        kit::migration!("tenant", "0010_time_marks_checked"),
        kit::migration!("tenant", "0011_time_mark_check_by_key"),
        kit::migration!("tenant", "0012_prune_only_inside_audit_prune_above_the_floor"),
    ],
};

/// Runs audit-svc until `shutdown`.
pub async fn run(
    config: kit::config::ServiceConfig<AuditSettings>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    config.validate().map_err(ServeError::Config)?;
    let (config, settings) = config.split();
    let (checkpoint_interval, sweep_interval) = (settings.checkpoint_interval(), settings.sweep_interval());
    let (integrity_interval, integrity_full_interval) = settings.integrity_intervals();
    let signals_interval = settings.signals_interval();
    kit::server::run_service(SERVICE, MIGRATIONS, config, listeners, shutdown, move |ctx| {
        use proto::audit::v1::audit_ingest_service_server::AuditIngestServiceServer;
        use proto::audit::v1::audit_log_service_server::AuditLogServiceServer;
        use proto::audit::v1::audit_retention_service_server::AuditRetentionServiceServer;
        use proto::vault::v1::signing_service_client::SigningServiceClient;
        let (signer, vault) = match &ctx.config.upstreams.vault {
            Some(url) => {
                let channel = ctx.channel(url, kit::Identity::VAULT)?;
                (Some(SigningServiceClient::new(channel.clone())), Some(channel))
            }
            None => {
                tracing::warn!("upstreams.vault is not configured: checkpoints are not signed, personal data refused");
                (None, None)
            }
        };
        let nudge =
            sequencer::spawn(ctx.db.clone(), ctx.shutdown.clone(), signer.clone(), checkpoint_interval, sweep_interval);
        let wake = stream::Wake::spawn(ctx.db.clone(), ctx.shutdown.clone());
        retention::spawn(ctx.db.clone(), ctx.shutdown.clone());
        export::spawn(ctx.db.clone(), signer.clone(), ctx.shutdown.clone());
        integrity::spawn(ctx.db.clone(), ctx.shutdown.clone(), integrity_interval, integrity_full_interval);
        let signals_db = Db::connect_lazy(&ctx.config.database.url, 1).map_err(|e| e.to_string())?;
        signals::spawn(signals_db, ctx.shutdown.clone(), signals_interval);
        let pseudonyms = pseudonym::Pseudonymizer::new(ctx.db.clone(), vault);
        pseudonyms.spawn_invalidation_listener(ctx.db.control_pool().clone());
        let ingest = ingest::AuditIngest {
            db: ctx.db.clone(),
            pseudonyms: pseudonyms.clone(),
            appender: ingest::Appender::new(ctx.db.clone(), nudge),
        };
        Ok(Api::new()
            .service(AuditLogServiceServer::new(api::AuditLog { db: ctx.db.clone(), signer, wake, pseudonyms }))
            .allow("/strongroom.audit.v1.AuditLogService/*", &[kit::Identity::GATEWAY, kit::Identity::OPERATOR])
            .service(AuditIngestServiceServer::new(ingest))
            .allow("/strongroom.audit.v1.AuditIngestService/*", &[kit::Identity::GATEWAY, kit::Identity::OPERATOR])
            .service(AuditRetentionServiceServer::new(retention::AuditRetention { db: ctx.db.clone() }))
            .allow("/strongroom.audit.v1.AuditRetentionService/*", &[kit::Identity::OPERATOR]))
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
