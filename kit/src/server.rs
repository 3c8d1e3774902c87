//! Server bootstrap shared by the four backend services: mTLS listener, access policy, token
//! verification, telemetry, `grpc.health.v1` (NOT_SERVING while the database is unreachable or
//! older than the build: the operator's `strongroom migrate` step migrates, never the service),
//! reflection, `/metrics` (with the runtime database pool's occupancy), and graceful shutdown that
//! drains in-flight calls.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic_health::ServingStatus;

use crate::access::{AccessLayer, AccessPolicy};
use crate::client;
use crate::config::ServiceConfig;
use crate::migrate::MigrationSet;
use crate::principal::{JwksClient, TokenVerifier};
use crate::telemetry::GrpcServerLayer;
use crate::tenancy::Db;
use crate::tls::{CertStore, Identity};

/// Calls one peer connection may have open at once. The gateway sends all its calls to a service
/// over one connection, so this is far above its load (64 concurrent clients in `strongroom
/// bench`); beyond it, a peer's further calls wait for a free stream.
const MAX_CALLS_PER_CONNECTION: u32 = 1024;

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called (not when the
/// future is first polled), so a signal arriving during start-up is not lost.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = wait(term) => {},
            () = wait(int) => {},
        }
        tracing::info!("shutdown signal received");
    }
}

/// A shutdown signal that many tasks can wait for.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Fires when `trigger` completes.
    pub fn from_future(trigger: impl Future<Output = ()> + Send + 'static) -> Self {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            trigger.await;
            let _ = tx.send(true);
        });
        Self(rx)
    }

    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|fired| *fired).await;
    }

    pub fn fired(&self) -> bool {
        *self.0.borrow()
    }
}

/// The service's gRPC surface: its tonic services and who may call each RPC.
pub struct Api {
    routes: Routes,
    names: Vec<&'static str>,
    policy: AccessPolicy,
}

impl Api {
    pub fn new() -> Self {
        Self { routes: Routes::default(), names: Vec::new(), policy: AccessPolicy::new() }
    }

    /// Adds a tonic service; its RPCs stay unreachable until allowed.
    pub fn service<S>(mut self, svc: S) -> Self
    where
        S: tower::Service<http::Request<tonic::body::Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes = self.routes.add_service(svc);
        self
    }

    /// Allows `identities` to call `path` (`/package.Service/Method` or `/package.Service/*`).
    pub fn allow(mut self, path: &str, identities: &[&str]) -> Self {
        self.policy = self.policy.allow(path, identities);
        self
    }

    pub fn allow_any_peer(mut self, path: &str) -> Self {
        self.policy = self.policy.allow_any_peer(path);
        self
    }

    /// Lets an enrolment-only session call `path` (a full method path); see
    /// [`AccessPolicy::allow_while_enrolling`].
    pub fn allow_while_enrolling(mut self, path: &str) -> Self {
        self.policy = self.policy.allow_while_enrolling(path);
        self
    }
}

impl Default for Api {
    fn default() -> Self {
        Self::new()
    }
}

/// What a service needs to build its API.
#[derive(Clone, Debug)]
pub struct ServiceContext {
    pub name: &'static str,
    pub config: ServiceConfig,
    pub db: Db,
    pub certs: CertStore,
    pub verifier: TokenVerifier,
    /// Fires when the service begins to shut down; background tasks stop on it.
    pub shutdown: Shutdown,
}

impl ServiceContext {
    /// An mTLS channel to another service of the constellation.
    pub fn channel(&self, url: &str, identity: &str) -> Result<client::Channel, String> {
        let id = Identity::new(identity).map_err(|e| e.to_string())?;
        client::channel(&self.certs, url, &id, self.config.upstreams.timeout()).map_err(|e| e.to_string())
    }
}

/// Listeners bound by the caller (tests bind port 0).
#[derive(Debug)]
pub struct Listeners {
    pub grpc: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    pub async fn bind<X>(cfg: &ServiceConfig<X>) -> std::io::Result<Self> {
        Ok(Self { grpc: TcpListener::bind(cfg.grpc.listen).await?, admin: TcpListener::bind(cfg.admin.listen).await? })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("config: {0}")]
    Config(String),
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Runs a backend service until `shutdown`; returns once in-flight calls drained (or the grace
/// period elapsed).
pub async fn run_service(
    name: &'static str,
    migrations: MigrationSet,
    config: ServiceConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
    build: impl FnOnce(&ServiceContext) -> Result<Api, String>,
) -> Result<(), ServeError> {
    crate::tls::install_crypto_provider();
    crate::error::set_domain(name);
    config.validate().map_err(ServeError::Config)?;
    let certs = CertStore::load(&config.tls)?;
    let reloader = certs.spawn_reloader(config.tls.reload_interval());
    let db = Db::connect_lazy(&config.database.url, config.database.max_connections)?;
    crate::metrics::Metrics::global().watch_pool(name, db.control_pool());
    // A suspension or termination made anywhere reaches this replica's registry cache at once.
    let registry_listener = db.spawn_registry_listener();
    let auth_url =
        config.upstreams.auth.clone().ok_or_else(|| ServeError::Config("upstreams.auth is required".into()))?;
    let jwks_channel = client::channel(&certs, &auth_url, &Identity::new(Identity::AUTH)?, config.upstreams.timeout())
        .map_err(|e| ServeError::Config(e.to_string()))?;
    let verifier = TokenVerifier::new(config.jwt.clone(), JwksClient::new(jwks_channel), Some(&config.tls.ca))
        .map_err(ServeError::Config)?;
    let shutdown = Shutdown::from_future(shutdown);
    let ctx = ServiceContext {
        shutdown: shutdown.clone(),
        name,
        config: config.clone(),
        db: db.clone(),
        certs: certs.clone(),
        verifier,
    };
    let api = build(&ctx).map_err(ServeError::Config)?;

    let ready = watch::channel(false);
    tokio::spawn(await_schema(name, db.clone(), migrations, ready.0, shutdown.clone()));
    let admin = tokio::spawn(crate::metrics::serve_admin(listeners.admin, shutdown.clone().wait()));
    let result = serve_grpc(
        name,
        &ctx.certs,
        api,
        Some((db, ready.1)),
        Some(ctx.verifier.clone()),
        listeners.grpc,
        shutdown,
        config.shutdown_grace(),
    )
    .await;
    reloader.abort();
    registry_listener.abort();
    let _ = admin.await;
    result
}

/// How many missing migrations a refusal to serve names.
const PENDING_SHOWN: usize = 5;

/// Marks the service ready once its login role is safe and the database schema is as current as
/// this build (the operator's `strongroom migrate` step brings it there; the service itself holds
/// no administrative credential and never migrates). Until then it answers NOT_SERVING and logs,
/// with backoff, what is missing.
async fn await_schema(
    name: &'static str,
    db: Db,
    migrations: MigrationSet,
    ready: watch::Sender<bool>,
    shutdown: Shutdown,
) {
    let mut delay = Duration::from_millis(200);
    loop {
        let attempt = async {
            db.check_runtime_role(name).await?;
            let pending = crate::migrate::pending(db.control_pool(), &migrations, PENDING_SHOWN)
                .await
                .map_err(|e| format!("cannot read control.schema_migrations ({e}); has `strongroom migrate` run?"))?;
            if pending.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "the database schema is older than this build; run `strongroom migrate` (missing: {})",
                    pending.join(", ")
                ))
            }
        };
        match attempt.await {
            Ok(()) => {
                tracing::info!("database schema current");
                let _ = ready.send(true);
                return;
            }
            Err(e) => {
                crate::metrics::Metrics::global().event("schema_not_current");
                tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "not serving");
            }
        }
        if shutdown.fired() {
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Serves `api` (plus health and reflection) over mTLS on `listener` until `shutdown`, then
/// drains in-flight calls for at most `grace`.
#[allow(clippy::too_many_arguments)]
pub async fn serve_grpc(
    name: &'static str,
    certs: &CertStore,
    api: Api,
    db: Option<(Db, watch::Receiver<bool>)>,
    verifier: Option<TokenVerifier>,
    listener: TcpListener,
    shutdown: Shutdown,
    grace: Duration,
) -> Result<(), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Config(format!("reflection: {e}")))?;
    let Api { routes, mut names, policy } = api;
    let policy =
        policy.allow_any_peer("/grpc.health.v1.Health/*").allow_any_peer("/grpc.reflection.v1.ServerReflection/*");
    let routes = routes.add_service(health).add_service(reflection);
    names.push("");
    let watcher = tokio::spawn(watch_health(reporter, names, db, shutdown.clone()));

    let tls = certs.server_config(&[b"h2"])?;
    let local = listener.local_addr().ok();
    let incoming = crate::tls::incoming(listener, tls);
    tracing::info!(service = name, addr = ?local, "serving grpc over mtls");
    // Access control first: a refused call is logged and counted there and never creates a metric
    // series of its own (a peer could otherwise mint one per random path).
    let layers =
        tower::ServiceBuilder::new().layer(AccessLayer::new(policy, verifier)).layer(GrpcServerLayer::new(name));
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.wait().await;
            let _ = drained_tx.send(());
            tracing::info!(service = name, "draining in-flight calls");
        }
    };
    // Long-lived HTTP/2 connections would keep a peer authenticated after its certificate or the
    // CA was rotated; recycle them. Unset, tonic allows a peer any number of calls at once per
    // connection (it lifts hyper's 200), and never notices a peer that vanished without closing
    // (HTTP/2 pings now find it; tonic ignores `tcp_keepalive` with our own TLS incoming).
    let server = tonic::transport::Server::builder()
        .max_connection_age(Duration::from_secs(600))
        .max_connection_age_grace(Duration::from_secs(30))
        .max_concurrent_streams(MAX_CALLS_PER_CONNECTION)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .layer(layers)
        .serve_with_incoming_shutdown(routes, incoming, signal);
    tokio::pin!(server);
    let result = tokio::select! {
        r = &mut server => r.map_err(ServeError::from),
        () = async { let _ = drained_rx.await; tokio::time::sleep(grace).await } => {
            tracing::warn!(service = name, grace_ms = grace.as_millis() as u64, "grace period over; dropping remaining calls");
            Ok(())
        }
    };
    watcher.abort();
    tracing::info!(service = name, "stopped");
    result
}

async fn watch_health(
    reporter: tonic_health::server::HealthReporter,
    names: Vec<&'static str>,
    db: Option<(Db, watch::Receiver<bool>)>,
    shutdown: Shutdown,
) {
    let mut last = None;
    loop {
        let serving = match &db {
            None => true,
            Some((db, ready)) => *ready.borrow() && db.ping().await,
        };
        let serving = serving && !shutdown.fired();
        if last != Some(serving) {
            let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
            for name in &names {
                reporter.set_service_status(*name, status).await;
            }
            if last.is_some() || !serving {
                tracing::info!(serving, "health changed");
            }
            last = Some(serving);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
