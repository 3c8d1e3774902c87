//! auth-svc owns the tenant registry, the token signing keys (JWKS) and, as the Identity issue
//! lands, users, sessions and tokens. It never stores a secret in plaintext nor logs a credential.

pub mod api;
pub mod config;
pub mod core;
pub mod domain;
pub mod email_index;
pub mod error;
pub mod export;
pub mod housekeeping;
pub mod journal;
pub mod passwords;
pub mod personal;
pub mod privacy_signals;
pub mod rbac;
pub mod revocations;
pub mod sealing;
pub mod store;
pub mod throttle;
pub mod tokens;
pub mod totp;

use std::future::Future;

use kit::Identity;
use kit::migrate::MigrationSet;
use kit::server::{Api, Listeners, ServeError};

pub use config::{AuthSettings, WebauthnSettings};

pub const SERVICE: &str = "auth";

pub const MIGRATIONS: MigrationSet = MigrationSet {
    service: SERVICE,
    control: &[
        kit::migration!("control", "0001_create_signing_keys"),
        kit::migration!("control", "0002_create_api_key_index"),
        kit::migration!("control", "0003_remove_expired_signing_keys"),
        kit::migration!("control", "0004_create_revocations"),
    ],
    tenant: &[
        kit::migration!("tenant", "0001_create_tenant_policy"),
        kit::migration!("tenant", "0002_create_identity"),
        kit::migration!("tenant", "0003_index_lookups_by_holder_and_expiry"),
        kit::migration!("tenant", "0004_record_revocations"),
        kit::migration!("tenant", "0005_count_second_factor_failures_and_privilege_by_permission"),
        kit::migration!("tenant", "0006_record_api_keys_minted_with_a_second_factor"),
        kit::migration!("tenant", "0007_seal_personal_data_and_index_emails"),
        kit::migration!("tenant", "0008_create_suspension_appeals"),
        kit::migration!("tenant", "0009_create_identity_retention_policy"),
        kit::migration!("tenant", "0010_create_data_subject_requests"),
        kit::migration!("tenant", "0011_create_legal_holds"),
        kit::migration!("tenant", "0012_publish_tenant_legal_holds"),
        kit::migration!("tenant", "0013_privacy_request_execution"),
        kit::migration!("tenant", "0014_retain_privacy_request_records"),
        kit::migration!("tenant", "0015_seal_suspension_and_decision_reasons"),
        kit::migration!("tenant", "0016_create_oauth_clients"),
        kit::migration!("tenant", "0017_create_oauth_codes"),
        kit::migration!("tenant", "0018_bind_sessions_to_oauth_clients"),
        kit::migration!("tenant", "0019_record_oauth_session_scopes"),
        kit::migration!("tenant", "0020_let_oauth_clients_act_for_themselves"),
        kit::migration!("tenant", "0021_create_passkeys"),
    ],
};

/// Runs auth-svc until `shutdown`.
pub async fn run(
    config: kit::config::ServiceConfig<AuthSettings>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    config.validate().map_err(ServeError::Config)?;
    let (config, settings) = config.split();
    let redis_url =
        settings.redis_url.clone().ok_or_else(|| ServeError::Config("service.redis_url is required".into()))?;
    // auth-svc lists revocations in its Redis; verifiers (itself included) read jwt.revocations_url.
    if let Some(read) = &config.jwt.revocations_url
        && secrecy::ExposeSecret::expose_secret(read) != secrecy::ExposeSecret::expose_secret(&redis_url)
    {
        return Err(ServeError::Config(
            "jwt.revocations_url must be service.redis_url: auth-svc lists revocations where verifiers read them"
                .into(),
        ));
    }
    let throttle = throttle::Throttle::new(&redis_url, &config.tls.ca).map_err(ServeError::Config)?;
    let revocations =
        kit::revocation::Revocations::new(&redis_url, Some(&config.tls.ca)).map_err(ServeError::Config)?;
    let workers =
        settings.hash_workers.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
    let hasher = passwords::Hasher::new(workers, settings.hash_queue).map_err(|e| ServeError::Config(e.to_string()))?;
    let settings = std::sync::Arc::new(settings);
    kit::server::run_service(SERVICE, MIGRATIONS, config, listeners, shutdown, move |ctx| {
        use proto::auth::v1::{
            access_service_server::AccessServiceServer, appeal_service_server::AppealServiceServer,
            authentication_service_server::AuthenticationServiceServer, identity_service_server::IdentityServiceServer,
            keys_service_server::KeysServiceServer, o_auth_client_service_server::OAuthClientServiceServer,
            o_auth_service_server::OAuthServiceServer, passkey_service_server::PasskeyServiceServer,
            privacy_service_server::PrivacyServiceServer, session_service_server::SessionServiceServer,
            tenant_service_server::TenantServiceServer, user_service_server::UserServiceServer,
        };
        let cfg = &ctx.config;
        let vault_url = cfg.upstreams.vault.clone().ok_or("upstreams.vault is required (TOTP seeds, signing keys)")?;
        let vault = kit::client::channel(
            &ctx.certs,
            &vault_url,
            &Identity::new(Identity::VAULT).map_err(|e| e.to_string())?,
            cfg.upstreams.timeout(),
        )
        .map_err(|e| e.to_string())?;
        let signer = tokens::Signer::new(
            vault.clone(),
            cfg.jwt.issuer.clone(),
            cfg.jwt.audience.clone(),
            std::time::Duration::from_secs(settings.signing_key_publish_ahead_secs),
        );
        if settings.signing_key_rotate_after_secs > 0 {
            let after = std::time::Duration::from_secs(settings.signing_key_rotate_after_secs);
            tokens::spawn_rotation(ctx.db.clone(), signer.clone(), after, ctx.shutdown.clone());
        }
        if settings.purge_every_secs > 0 {
            let every = std::time::Duration::from_secs(settings.purge_every_secs);
            housekeeping::spawn(ctx.db.clone(), every, ctx.shutdown.clone());
            privacy_signals::spawn(ctx.db.clone(), every, ctx.shutdown.clone());
        }
        // Lists what Redis lost or never took: its first round runs as the service starts, but
        // does not hold it back (verifiers refuse tokens until the list is complete).
        revocations::spawn(ctx.db.clone(), revocations.clone(), ctx.shutdown.clone());
        let profiles = core::Profiles::default();
        let personal = personal::Personal::new(vault.clone());
        let email_index = email_index::EmailIndex::new(ctx.db.clone(), vault.clone());
        email_index.spawn_invalidation_listener(ctx.db.control_pool().clone());
        if settings.purge_every_secs > 0 {
            let every = std::time::Duration::from_secs(settings.purge_every_secs);
            sealing::spawn(ctx.db.clone(), personal.clone(), email_index.clone(), every, ctx.shutdown.clone());
        }
        let part = export::AuthPart { db: ctx.db.clone(), personal: personal.clone() };
        kit::export::spawn(ctx.db.clone(), std::sync::Arc::new(part), ctx.shutdown.clone());
        let journal = kit::journal::from_setting(settings.erasure_journal.as_deref(), &ctx.certs, SERVICE)
            .map_err(|e| e.to_string())?;
        let webauthn = settings.webauthn.build(cfg.env)?.map(std::sync::Arc::new);
        let core = core::Core {
            db: ctx.db.clone(),
            hasher,
            throttle,
            signer,
            revocations,
            vault,
            personal,
            email_index,
            settings,
            profiles,
            journal,
            webauthn,
        };
        let tenants = api::tenants::Tenants { db: ctx.db.clone(), core: core.clone() };
        let keys = api::tenants::Keys { db: ctx.db.clone() };
        let identity = api::tenants::IdentityApi { db: ctx.db.clone() };
        const FRONT: &[&str] = &[Identity::GATEWAY, Identity::OPERATOR];
        const SERVICES: &[&str] =
            &[Identity::GATEWAY, Identity::OPERATOR, Identity::VAULT, Identity::AUDIT, Identity::LEDGER];
        Ok(Api::new()
            .service(AuthenticationServiceServer::new(api::authn::Authn { core: core.clone() }))
            .allow("/strongroom.auth.v1.AuthenticationService/*", FRONT)
            .allow_any_peer("/strongroom.auth.v1.AuthenticationService/IntrospectApiKey")
            .service(UserServiceServer::new(api::users::Users { core: core.clone() }))
            .allow("/strongroom.auth.v1.UserService/*", FRONT)
            .service(AccessServiceServer::new(api::access::Access { core: core.clone() }))
            .allow("/strongroom.auth.v1.AccessService/*", FRONT)
            .allow("/strongroom.auth.v1.AccessService/CheckPermission", SERVICES)
            .service(AppealServiceServer::new(api::appeals::Appeals {
                core: core.clone(),
                authn: api::authn::Authn { core: core.clone() },
            }))
            .allow("/strongroom.auth.v1.AppealService/*", FRONT)
            .service(PrivacyServiceServer::new(api::privacy::Privacy { core: core.clone() }))
            .allow("/strongroom.auth.v1.PrivacyService/*", FRONT)
            .service(OAuthClientServiceServer::new(api::oauth::OAuthClients { core: core.clone() }))
            .allow("/strongroom.auth.v1.OAuthClientService/*", FRONT)
            .service(OAuthServiceServer::new(api::oauth::OAuthFlow {
                core: core.clone(),
                authn: api::authn::Authn { core: core.clone() },
                verifier: ctx.verifier.clone(),
            }))
            .allow("/strongroom.auth.v1.OAuthService/*", FRONT)
            .service(PasskeyServiceServer::new(api::passkeys::Passkeys {
                core: core.clone(),
                authn: api::authn::Authn { core: core.clone() },
            }))
            .allow("/strongroom.auth.v1.PasskeyService/*", FRONT)
            .service(SessionServiceServer::new(api::sessions::Sessions { core }))
            .allow("/strongroom.auth.v1.SessionService/*", FRONT)
            .service(TenantServiceServer::new(tenants))
            .allow("/strongroom.auth.v1.TenantService/*", &[Identity::OPERATOR])
            .service(KeysServiceServer::new(keys))
            .allow_any_peer("/strongroom.auth.v1.KeysService/GetJwks")
            .service(IdentityServiceServer::new(identity))
            .allow("/strongroom.auth.v1.IdentityService/WhoAmI", SERVICES)
            // A privileged user without TOTP gets a session that can only enrol (and see itself,
            // and log out); every other call of every service refuses it.
            .allow_while_enrolling("/strongroom.auth.v1.SessionService/EnrollTotp")
            .allow_while_enrolling("/strongroom.auth.v1.SessionService/ConfirmTotp")
            .allow_while_enrolling("/strongroom.auth.v1.UserService/GetMe")
            .allow_while_enrolling("/strongroom.auth.v1.AuthenticationService/Logout"))
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
