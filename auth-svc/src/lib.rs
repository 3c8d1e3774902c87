//! auth-svc owns the tenant registry, the token signing keys (JWKS) and, as the Identity issue
//! lands, users, sessions and tokens. It never stores a secret in plaintext nor logs a credential.

pub mod api;
pub mod store;

use std::future::Future;

use kit::Identity;
use kit::migrate::MigrationSet;
use kit::server::{Api, Listeners, ServeError};

pub const SERVICE: &str = "auth";

pub const MIGRATIONS: MigrationSet = MigrationSet {
    service: SERVICE,
    control: &[kit::migration!("control", "0001_create_signing_keys")],
    tenant: &[kit::migration!("tenant", "0001_create_tenant_policy")],
};

/// Runs auth-svc until `shutdown`.
pub async fn run(
    config: kit::config::ServiceConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    kit::server::run_service(SERVICE, MIGRATIONS, config, listeners, shutdown, |ctx| {
        use proto::auth::v1::{
            identity_service_server::IdentityServiceServer, keys_service_server::KeysServiceServer,
            tenant_service_server::TenantServiceServer,
        };
        let tenants = api::Tenants { db: ctx.db.clone(), migrator: ctx.migrator.clone() };
        let keys = api::Keys { db: ctx.db.clone() };
        let identity = api::IdentityApi { db: ctx.db.clone() };
        Ok(Api::new()
            .service(TenantServiceServer::new(tenants))
            .allow("/strongroom.auth.v1.TenantService/*", &[Identity::OPERATOR])
            .service(KeysServiceServer::new(keys))
            .allow_any_peer("/strongroom.auth.v1.KeysService/GetJwks")
            .service(IdentityServiceServer::new(identity))
            .allow(
                "/strongroom.auth.v1.IdentityService/WhoAmI",
                &[Identity::GATEWAY, Identity::OPERATOR, Identity::VAULT, Identity::AUDIT, Identity::LEDGER],
            ))
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
