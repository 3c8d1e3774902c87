//! The gateway's configuration.

use std::net::SocketAddr;

use kit::config::{Environment, JwtConfig, ListenConfig, TelemetryConfig, TlsConfig, UpstreamsConfig};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// The public HTTPS listener.
    pub listen: SocketAddr,
    /// Largest accepted request body.
    #[serde(default = "default_body_limit")]
    pub body_limit_bytes: usize,
    /// Largest accepted body of `POST /v1/ledger/transfers` (a batch of up to 8,190 transfers).
    #[serde(default = "default_batch_body_limit")]
    pub batch_body_limit_bytes: usize,
    /// The gateway's public base URL (e.g. `https://api.example.com`), for
    /// `/.well-known/openid-configuration`; default: the token issuer.
    #[serde(default)]
    pub public_url: Option<String>,
    /// An HTTP/1 client must send a request's headers within this long of starting it (and of an
    /// idle keep-alive connection's last response): slowloris clients are cut off.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// A write to a client that stays blocked this long (the client stopped reading) closes the
    /// connection, and with it whatever it streams.
    #[serde(default = "default_write_timeout_ms")]
    pub write_timeout_ms: u64,
    /// Audit exports and live streams open at once, in all, and per caller (user or API key).
    #[serde(default = "default_max_streams")]
    pub max_streams: usize,
    #[serde(default = "default_max_streams_per_caller")]
    pub max_streams_per_caller: usize,
    /// Refusals of requests that proved no caller are written to the tenant's audit log as one
    /// summary per client address every this many milliseconds (1 s to 1 h).
    #[serde(default = "default_refusal_summary_interval_ms")]
    pub refusal_summary_interval_ms: u64,
}

fn default_refusal_summary_interval_ms() -> u64 {
    60_000
}

fn default_header_read_timeout_ms() -> u64 {
    10_000
}

fn default_write_timeout_ms() -> u64 {
    30_000
}

fn default_max_streams() -> usize {
    256
}

fn default_max_streams_per_caller() -> usize {
    4
}

fn default_body_limit() -> usize {
    1024 * 1024
}

fn default_batch_body_limit() -> usize {
    16 * 1024 * 1024
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    pub url: SecretString,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    #[serde(default)]
    pub env: Environment,
    pub http: HttpConfig,
    pub admin: ListenConfig,
    /// The gateway's certificate: served to browsers and presented to the services (mTLS).
    pub tls: TlsConfig,
    pub upstreams: UpstreamsConfig,
    pub redis: RedisConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub jwt: JwtConfig,
    #[serde(default = "default_shutdown_ms")]
    pub shutdown_grace_ms: u64,
    #[serde(default)]
    pub rate_limits: crate::ratelimit::RateLimitConfig,
    #[serde(default)]
    pub browser: crate::browser::BrowserConfig,
}

fn default_shutdown_ms() -> u64 {
    20_000
}

impl GatewayConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.upstreams.validate()?;
        self.jwt.validate(self.env)?;
        let u = &self.upstreams;
        if u.auth.is_none() || u.vault.is_none() || u.audit.is_none() || u.ledger.is_none() {
            return Err("upstreams.auth, .vault, .audit and .ledger are all required".into());
        }
        let redis = url::Url::parse(self.redis.url.expose_secret()).map_err(|_| "redis.url is not a URL".to_owned())?;
        if !matches!(redis.scheme(), "redis" | "rediss") {
            return Err("redis.url must be redis:// or rediss://".into());
        }
        if self.http.body_limit_bytes == 0 || self.http.batch_body_limit_bytes == 0 {
            return Err("http.body_limit_bytes and http.batch_body_limit_bytes must be positive".into());
        }
        if self.http.header_read_timeout_ms == 0 || self.http.write_timeout_ms == 0 {
            return Err("http.header_read_timeout_ms and http.write_timeout_ms must be positive".into());
        }
        if !(1_000..=3_600_000).contains(&self.http.refusal_summary_interval_ms) {
            return Err("http.refusal_summary_interval_ms must be 1000 to 3600000".into());
        }
        if !(1..=100_000).contains(&self.http.max_streams) || self.http.max_streams_per_caller == 0 {
            return Err("http.max_streams must be 1 to 100000 and http.max_streams_per_caller positive".into());
        }
        self.rate_limits.validate()?;
        self.browser.validate(self.env)?;
        Ok(())
    }
}

/// The gateway's bound listeners.
#[derive(Debug)]
pub struct GatewayListeners {
    pub http: tokio::net::TcpListener,
    pub admin: tokio::net::TcpListener,
}

impl kit::bin::BinConfig for GatewayConfig {
    type Listeners = GatewayListeners;

    fn validate(&self) -> Result<(), String> {
        GatewayConfig::validate(self)
    }

    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }

    async fn bind(&self) -> std::io::Result<GatewayListeners> {
        Ok(GatewayListeners {
            http: tokio::net::TcpListener::bind(self.http.listen).await?,
            admin: tokio::net::TcpListener::bind(self.admin.listen).await?,
        })
    }
}
