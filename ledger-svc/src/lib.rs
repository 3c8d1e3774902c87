//! ledger-svc owns double-entry accounts and transfers (TigerBeetle semantics: linked chains,
//! two-phase pending/post/void with expiry, balancing transfers, limits), idempotency and the
//! receipt chain, which it verifies continuously ([`integrity`]). It never uses floats and never
//! commits a transfer without its audit record and receipt in the same transaction.

pub mod api;
pub mod batcher;
pub mod config;
pub mod domain;
pub mod error;
pub mod export;
pub mod integrity;
pub mod receipts;
pub mod store;
pub mod sweeper;
pub mod tenants;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::future::Future;
use std::time::Duration;

use kit::Identity;
use kit::migrate::MigrationSet;
use kit::server::{Api, Listeners, ServeError};

pub use config::LedgerSettings;

pub const SERVICE: &str = "ledger";

/// How long the batcher waits for more submissions before committing what it has.
pub const BATCH_WINDOW: Duration = Duration::from_micros(500);

pub const MIGRATIONS: MigrationSet = MigrationSet {
    service: SERVICE,
    control: &[],
    tenant: &[
        kit::migration!("tenant", "0001_create_ledgers"),
        kit::migration!("tenant", "0002_create_accounts_and_transfers"),
        kit::migration!("tenant", "0003_lighter_transfer_indexes"),
        kit::migration!("tenant", "0004_policies_evaluated_once"),
        kit::migration!("tenant", "0005_receipts_append_only"),
    ],
};

/// Runs ledger-svc until `shutdown`. `S` is [`LedgerSettings`], or a configuration without
/// ledger-svc's own section (`kit::config::NoSettings`), which runs on the defaults.
pub async fn run(
    config: kit::config::ServiceConfig<LedgerSettings>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    config.validate().map_err(ServeError::Config)?;
    let (config, settings) = config.split();
    let schedule =
        integrity::Schedule { incremental: settings.integrity_interval(), full: settings.integrity_full_interval() };
    kit::server::run_service(SERVICE, MIGRATIONS, config, listeners, shutdown, move |ctx| {
        use proto::ledger::v1::ledger_service_server::LedgerServiceServer;
        use proto::vault::v1::signing_service_client::SigningServiceClient;
        let signer = match &ctx.config.upstreams.vault {
            Some(url) => Some(SigningServiceClient::new(ctx.channel(url, Identity::VAULT)?)),
            // Unsigned receipts vouch for nothing: acceptable in development only.
            None if ctx.config.env == kit::config::Environment::Production => {
                return Err("upstreams.vault is required in production (it signs the receipts)".into());
            }
            None => None,
        };
        let unsigned = batcher::Unsigned::default();
        let expiries = batcher::Expiries::default();
        let batcher = batcher::Batcher::new(ctx.db.clone(), BATCH_WINDOW, unsigned.clone(), expiries.clone());
        receipts::spawn_signer(ctx.db.clone(), signer.clone(), unsigned, ctx.shutdown.clone());
        sweeper::spawn(ctx.db.clone(), batcher.clone(), expiries, ctx.shutdown.clone());
        integrity::spawn(ctx.db.clone(), signer.clone(), schedule, ctx.shutdown.clone());
        let part = export::LedgerPart { db: ctx.db.clone(), signer: signer.clone() };
        kit::export::spawn(ctx.db.clone(), std::sync::Arc::new(part), ctx.shutdown.clone());
        let ledger = api::Ledger { db: ctx.db.clone(), batcher, signer };
        Ok(Api::new()
            .service(LedgerServiceServer::new(ledger).max_decoding_message_size(16 * 1024 * 1024))
            .allow("/strongroom.ledger.v1.LedgerService/*", &[Identity::GATEWAY, Identity::OPERATOR]))
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
