//! The gateway: the HTTP/JSON API for frontends (backend-for-frontend over typed tonic clients).
//! It authenticates, sets security headers, limits bodies, answers errors with one JSON shape and
//! documents itself at `/openapi.json`. It holds no business state and never forwards a request it
//! has not authenticated.

mod audit;
pub mod browser;
mod config;
mod http_layer;
mod identity;
mod input;
mod ledger;
pub mod openapi;
pub mod ratelimit;
mod recorder;
mod retention;
mod routes;
mod secrets;
mod streams;
mod upstream;

use std::sync::Arc;

pub use browser::BrowserConfig;
pub use config::{GatewayConfig, GatewayListeners, HttpConfig, RedisConfig};
use kit::Identity;
use kit::principal::{JwksClient, TokenVerifier};
use kit::server::Shutdown;
use kit::tls::CertStore;
pub use openapi::document as openapi_document;
pub use ratelimit::RateLimitConfig;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("config: {0}")]
    Config(String),
    #[error("tls: {0}")]
    Tls(#[from] kit::tls::TlsError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Typed clients of the services, over mTLS.
#[derive(Clone, Debug)]
pub struct Upstreams {
    pub auth: kit::client::Channel,
    pub vault: kit::client::Channel,
    pub audit: kit::client::Channel,
    pub ledger: kit::client::Channel,
}

impl Upstreams {
    /// `(name, channel)` of every upstream.
    pub fn all(&self) -> [(&'static str, &kit::client::Channel); 4] {
        [("auth", &self.auth), ("vault", &self.vault), ("audit", &self.audit), ("ledger", &self.ledger)]
    }
}

/// Shared state of the handlers: one allocation, so the clone every extractor and middleware
/// takes is one reference count (cloning the fields cost a dozen per request).
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
#[derive(Debug)]
pub struct Shared {
    pub upstreams: Upstreams,
    pub verifier: TokenVerifier,
    pub redis: Arc<redis::Client>,
    /// The last readiness answer and when it was computed.
    pub readiness: Arc<tokio::sync::Mutex<Option<(std::time::Instant, http::StatusCode, serde_json::Value)>>>,
    /// The last public JWKS document and when it was fetched (see `identity::login::jwks`).
    pub jwks: tokio::sync::Mutex<Option<(std::time::Instant, identity::login::Jwks)>>,
    pub limits: Arc<ratelimit::RateLimiter>,
    /// Browser sessions: cookies and the CSRF key.
    pub browser: Arc<browser::Browser>,
    /// The access tokens' issuer, and the gateway's public base URL (discovery document).
    pub issuer: String,
    pub public_url: String,
    /// Open audit exports and live streams.
    pub streams: Arc<streams::Streams>,
}

fn upstream(
    certs: &CertStore,
    url: &Option<String>,
    name: &str,
    cfg: &GatewayConfig,
) -> Result<kit::client::Channel, GatewayError> {
    let url = url.as_deref().ok_or_else(|| GatewayError::Config(format!("upstreams.{name} is required")))?;
    kit::client::channel(certs, url, &Identity::new(name)?, cfg.upstreams.timeout())
        .map_err(|e| GatewayError::Config(e.to_string()))
}

/// Runs the gateway until `shutdown`; in-flight requests get the grace period to finish.
pub async fn run(
    config: GatewayConfig,
    listeners: GatewayListeners,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    use secrecy::ExposeSecret;
    kit::tls::install_crypto_provider();
    kit::error::set_domain("gateway");
    config.validate().map_err(GatewayError::Config)?;
    let certs = CertStore::load(&config.tls)?;
    let reloader = certs.spawn_reloader(config.tls.reload_interval());
    let u = &config.upstreams;
    let upstreams = Upstreams {
        auth: upstream(&certs, &u.auth, Identity::AUTH, &config)?,
        vault: upstream(&certs, &u.vault, Identity::VAULT, &config)?,
        audit: upstream(&certs, &u.audit, Identity::AUDIT, &config)?,
        ledger: upstream(&certs, &u.ledger, Identity::LEDGER, &config)?,
    };
    let verifier =
        TokenVerifier::new(config.jwt.clone(), JwksClient::new(upstreams.auth.clone()), Some(&config.tls.ca))
            .map_err(GatewayError::Config)?;
    let redis = kit::redis::client(config.redis.url.expose_secret(), Some(&config.tls.ca))
        .map_err(|e| GatewayError::Config(format!("redis.url cannot be used: {e}")))?;
    let redis = Arc::new(redis);
    let limits = Arc::new(ratelimit::RateLimiter::new(config.rate_limits.clone(), redis.clone()));
    let browser = Arc::new(browser::Browser::new(&config.browser, config.env).map_err(GatewayError::Config)?);
    let issuer = config.jwt.issuer.clone();
    let public_url = config.http.public_url.clone().unwrap_or_else(|| issuer.clone());
    let state = AppState(Arc::new(Shared {
        upstreams,
        verifier,
        redis,
        readiness: Arc::default(),
        jwks: tokio::sync::Mutex::default(),
        limits,
        browser,
        issuer,
        public_url,
        streams: streams::Streams::new(
            config.http.max_streams,
            config.http.max_streams_per_caller,
            std::time::Duration::from_millis(config.http.write_timeout_ms),
        ),
    }));
    // Outermost: records every state-changing or refused request, whatever answered it.
    let (recorder, recording) = recorder::Recorder::spawn(
        state.upstreams.audit.clone(),
        state.limits.trusted_proxies(),
        std::time::Duration::from_millis(config.http.refusal_summary_interval_ms),
    );
    let app = routes::router(state, config.http.body_limit_bytes, config.http.batch_body_limit_bytes)
        .layer(axum::middleware::from_fn_with_state(recorder, recorder::record));

    let shutdown = Shutdown::from_future(shutdown);
    let admin = tokio::spawn(kit::metrics::serve_admin(listeners.admin, shutdown.clone().wait()));
    let tls = certs.public_server_config(&[b"h2", b"http/1.1"])?;
    let handle = axum_server::Handle::new();
    {
        let handle = handle.clone();
        let grace = std::time::Duration::from_millis(config.shutdown_grace_ms);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.wait().await;
            tracing::info!("gateway draining in-flight requests");
            handle.graceful_shutdown(Some(grace));
        });
    }
    let local = listeners.http.local_addr()?;
    tracing::info!(addr = %local, "gateway serving https");
    let write_timeout = WriteTimeout(std::time::Duration::from_millis(config.http.write_timeout_ms));
    let mut server = axum_server::from_tcp_rustls(
        listeners.http.into_std()?,
        axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(tls)),
    )?
    .map(move |tls| tls.acceptor(write_timeout))
    .handle(handle);
    // hyper enforces no timeout without a timer; axum-server sets none.
    let http = server.http_builder();
    http.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_millis(config.http.header_read_timeout_ms));
    http.http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(HTTP2_MAX_STREAMS)
        .keep_alive_interval(std::time::Duration::from_secs(30))
        .keep_alive_timeout(std::time::Duration::from_secs(20));
    let server = server.serve(app.into_make_service_with_connect_info::<std::net::SocketAddr>());
    let result = server.await;
    // Requests already answered are still recorded.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), recording).await;
    reloader.abort();
    let _ = admin.await;
    tracing::info!("gateway stopped");
    result.map_err(GatewayError::from)
}

/// Requests one HTTP/2 connection may have open at once (hyper's default, stated).
const HTTP2_MAX_STREAMS: u32 = 200;

/// Wraps each accepted connection so that a write blocked longer than the timeout fails: a client
/// that stops reading loses its connection (and whatever it streams) instead of holding it, and the
/// upstream call behind it, forever. Reads have no timeout: an idle HTTP/1 connection is bounded by
/// the header read timeout, an HTTP/2 one by keep-alive pings.
#[derive(Debug, Clone, Copy)]
struct WriteTimeout(std::time::Duration);

impl<S> axum_server::accept::Accept<tokio::net::TcpStream, S> for WriteTimeout {
    type Stream = std::pin::Pin<Box<tokio_io_timeout::TimeoutStream<tokio::net::TcpStream>>>;
    type Service = S;
    type Future = std::future::Ready<std::io::Result<(Self::Stream, S)>>;

    fn accept(&self, stream: tokio::net::TcpStream, service: S) -> Self::Future {
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_write_timeout(Some(self.0));
        std::future::ready(Ok((Box::pin(stream), service)))
    }
}
