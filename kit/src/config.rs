//! Typed, layered configuration: an optional TOML file, then `STRONGROOM_*` environment variables
//! (nested keys joined by `__`, e.g. `STRONGROOM_DATABASE__URL`). Unknown keys are refused. Loading
//! never binds a port; a bad configuration ends the process with one line and exit code 64.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// `EX_CONFIG` from sysexits.h.
pub const EXIT_BAD_CONFIG: i32 = 64;

/// Loads `T` from `file` (if given) overlaid with `STRONGROOM_*` variables.
pub fn load<T: DeserializeOwned>(file: Option<&Path>) -> Result<T, String> {
    let mut figment = Figment::new();
    if let Some(file) = file {
        if !file.exists() {
            return Err(format!("config file {} does not exist", file.display()));
        }
        figment = figment.merge(Toml::file(file));
    }
    figment = figment.merge(Env::prefixed("STRONGROOM_").split("__"));
    figment.extract::<T>().map_err(|e| one_line(&e.to_string()))
}

/// One line, with any `scheme://user:password@` credentials masked (figment echoes values).
fn one_line(s: &str) -> String {
    let joined = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = String::with_capacity(joined.len());
    let mut rest = joined.as_str();
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail.find(|c: char| c.is_whitespace() || c == '"' || c == '`' || c == '\'').unwrap_or(tail.len());
        let authority_end = tail[..end].find('/').unwrap_or(end);
        match tail[..authority_end].rfind('@') {
            Some(at) => {
                let userinfo = &tail[..at];
                let user = userinfo.split(':').next().unwrap_or("");
                out.push_str(user);
                if userinfo.contains(':') {
                    out.push_str(":***");
                }
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// Prints `bad config: <reason>` to stderr and exits with 64.
pub fn exit_bad_config(reason: &str) -> ! {
    eprintln!("bad config: {}", one_line(reason));
    std::process::exit(EXIT_BAD_CONFIG)
}

/// Reads `--config <file>` (or `--config=<file>`) from the process arguments; anything else is an error.
pub fn config_path_from_args() -> Result<Option<PathBuf>, String> {
    let mut args = std::env::args().skip(1);
    let mut path = None;
    while let Some(arg) = args.next() {
        if arg == "--config" {
            path = Some(PathBuf::from(args.next().ok_or("--config needs a file")?));
        } else if let Some(p) = arg.strip_prefix("--config=") {
            path = Some(PathBuf::from(p));
        } else {
            return Err(format!("unknown argument {arg:?} (usage: --config <file>)"));
        }
    }
    Ok(path)
}

/// Deployment environment. Services that have development-only shortcuts (e.g. the vault's local key
/// file) refuse them in `production`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Development,
    Production,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    pub listen: SocketAddr,
}

/// The service's certificate, key and the CA that every peer must chain to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// How often the three files are checked for changes.
    #[serde(default = "default_reload_ms")]
    pub reload_interval_ms: u64,
}

fn default_reload_ms() -> u64 {
    2_000
}

impl TlsConfig {
    pub fn reload_interval(&self) -> Duration {
        Duration::from_millis(self.reload_interval_ms.max(50))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// The service's own login role (`strongroom_<service>`); used for every request. A service
    /// holds no other database credential: migrations and tenant provisioning run in the
    /// operator's `strongroom migrate` and `strongroom tenant create` steps.
    pub url: SecretString,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

fn default_max_connections() -> u32 {
    8
}

impl DatabaseConfig {
    pub fn validate(&self) -> Result<(), String> {
        let parsed = url::Url::parse(self.url.expose_secret()).map_err(|_| "database.url is not a URL".to_owned())?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err("database.url must be a postgres:// URL".into());
        }
        if self.max_connections == 0 {
            return Err("database.max_connections must be at least 1".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/gRPC collector, e.g. `http://otel-collector:4317`; spans are not exported without it.
    pub otlp_endpoint: Option<String>,
    /// `tracing` filter, e.g. `info,kit=debug`.
    #[serde(default = "default_log")]
    pub log: String,
}

fn default_log() -> String {
    "info".into()
}

/// Where the other services listen (`https://host:port`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamsConfig {
    pub auth: Option<String>,
    pub vault: Option<String>,
    pub audit: Option<String>,
    pub ledger: Option<String>,
    /// Deadline of each call to an upstream.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    5_000
}

impl UpstreamsConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }

    pub fn validate(&self) -> Result<(), String> {
        for (key, url) in [
            ("upstreams.auth", &self.auth),
            ("upstreams.vault", &self.vault),
            ("upstreams.audit", &self.audit),
            ("upstreams.ledger", &self.ledger),
        ] {
            if let Some(url) = url {
                let parsed = url::Url::parse(url).map_err(|_| format!("{key} is not a URL"))?;
                if parsed.scheme() != "https" || parsed.host_str().is_none() {
                    return Err(format!("{key} must be https://host:port"));
                }
            }
        }
        Ok(())
    }
}

/// How access tokens are verified.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    #[serde(default = "default_issuer")]
    pub issuer: String,
    #[serde(default = "default_audience")]
    pub audience: String,
    /// Accepted clock skew.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// Redis (`redis://`) where auth-svc lists revoked sessions and API keys. When set, every
    /// verification checks it, and a token is refused while Redis cannot answer (fail closed).
    /// Required in production.
    #[serde(default)]
    pub revocations_url: Option<SecretString>,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            issuer: default_issuer(),
            audience: default_audience(),
            leeway_secs: default_leeway(),
            revocations_url: None,
        }
    }
}

impl JwtConfig {
    pub fn validate(&self, env: Environment) -> Result<(), String> {
        match &self.revocations_url {
            Some(url) => {
                let parsed = url::Url::parse(url.expose_secret()).map_err(|_| "jwt.revocations_url is not a URL")?;
                if !matches!(parsed.scheme(), "redis" | "rediss") {
                    return Err("jwt.revocations_url must be redis:// or rediss://".into());
                }
                Ok(())
            }
            None if env == Environment::Production => {
                Err("jwt.revocations_url is required in production (revoked sessions must stop at once)".into())
            }
            None => Ok(()),
        }
    }
}

fn default_issuer() -> String {
    "https://auth.strongroom.local".into()
}

fn default_audience() -> String {
    "strongroom".into()
}

fn default_leeway() -> u64 {
    30
}

/// `service.<name>` is within `bounds`, or the reason it is not (a service's setting check).
pub fn within(name: &str, value: u64, bounds: std::ops::RangeInclusive<u64>) -> Result<(), String> {
    if bounds.contains(&value) {
        return Ok(());
    }
    Err(format!("service.{name} must be {}–{}", bounds.start(), bounds.end()))
}

/// Bounds of `service.integrity_interval_ms` (audit-svc and ledger-svc): 100 ms – 1 hour.
pub const INTEGRITY_MS: std::ops::RangeInclusive<u64> = 100..=3_600_000;
/// Bounds of `service.integrity_full_interval_ms`: 1 s – 7 days.
pub const INTEGRITY_FULL_MS: std::ops::RangeInclusive<u64> = 1000..=604_800_000;

/// Checks the two intervals of a continuous integrity verification: each within its bounds, and the
/// full pass not more frequent than the incremental one.
pub fn check_integrity_intervals(incremental_ms: u64, full_ms: u64) -> Result<(), String> {
    within("integrity_interval_ms", incremental_ms, INTEGRITY_MS)?;
    within("integrity_full_interval_ms", full_ms, INTEGRITY_FULL_MS)?;
    if full_ms < incremental_ms {
        return Err("service.integrity_full_interval_ms must not be shorter than service.integrity_interval_ms".into());
    }
    Ok(())
}

/// A service's own `[service]` settings.
pub trait ServiceSettings {
    /// Checks the settings for `env` (a development-only setting is refused in production).
    fn validate(&self, env: Environment) -> Result<(), String>;
}

/// Settings of a service that has none of its own (the `[service]` section must then be empty).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoSettings {}

impl ServiceSettings for NoSettings {
    fn validate(&self, _env: Environment) -> Result<(), String> {
        Ok(())
    }
}

impl<X: ServiceSettings> ServiceConfig<X> {
    /// Checks everything, the service's own settings included.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_common()?;
        self.service.validate(self.env)
    }
}

/// The configuration of a backend service (auth, vault, audit, ledger); `X` is the service's own
/// `[service]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig<X = NoSettings> {
    #[serde(default)]
    pub env: Environment,
    pub grpc: ListenConfig,
    pub admin: ListenConfig,
    pub tls: TlsConfig,
    pub database: DatabaseConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub upstreams: UpstreamsConfig,
    #[serde(default)]
    pub jwt: JwtConfig,
    /// Grace period for in-flight calls after SIGTERM.
    #[serde(default = "default_shutdown_ms")]
    pub shutdown_grace_ms: u64,
    /// The service's own settings (`[service]`, `STRONGROOM_SERVICE__*`).
    #[serde(default)]
    pub service: X,
}

fn default_shutdown_ms() -> u64 {
    20_000
}

impl<X> ServiceConfig<X> {
    /// Separates the common part from the service's own settings.
    pub fn split(self) -> (ServiceConfig, X) {
        let ServiceConfig { env, grpc, admin, tls, database, telemetry, upstreams, jwt, shutdown_grace_ms, service } =
            self;
        let base = ServiceConfig {
            env,
            grpc,
            admin,
            tls,
            database,
            telemetry,
            upstreams,
            jwt,
            shutdown_grace_ms,
            service: NoSettings {},
        };
        (base, service)
    }

    /// Attaches a service's own settings.
    pub fn with_settings<Y>(self, settings: Y) -> ServiceConfig<Y> {
        let (base, _) = self.split();
        let ServiceConfig { env, grpc, admin, tls, database, telemetry, upstreams, jwt, shutdown_grace_ms, .. } = base;
        ServiceConfig {
            env,
            grpc,
            admin,
            tls,
            database,
            telemetry,
            upstreams,
            jwt,
            shutdown_grace_ms,
            service: settings,
        }
    }

    /// Checks the common part.
    pub fn validate_common(&self) -> Result<(), String> {
        self.database.validate()?;
        self.upstreams.validate()?;
        if self.upstreams.auth.is_none() {
            return Err("upstreams.auth is required (access tokens are verified against its JWKS)".into());
        }
        self.jwt.validate(self.env)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// Hides a URL's password for logs.
pub fn redact_url(url: &SecretString) -> String {
    match url::Url::parse(url.expose_secret()) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<invalid url>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [grpc]
        listen = "127.0.0.1:7101"
        [admin]
        listen = "127.0.0.1:9101"
        [tls]
        ca = "ca.pem"
        cert = "auth.pem"
        key = "auth-key.pem"
        [database]
        url = "postgres://strongroom_auth@127.0.0.1/strongroom"
        [upstreams]
        auth = "https://127.0.0.1:7101"
    "#;

    fn from_str(s: &str) -> Result<ServiceConfig, String> {
        Figment::new().merge(Toml::string(s)).extract().map_err(|e| e.to_string())
    }

    #[test]
    fn minimal_config_loads_and_validates() {
        let cfg = from_str(MINIMAL).expect("loads");
        cfg.validate().expect("valid");
        assert_eq!(cfg.env, Environment::Development);
        assert_eq!(cfg.jwt.audience, "strongroom");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = from_str(&format!("{MINIMAL}\n[grpc2]\nlisten = \"x\"")).expect_err("refused");
        assert!(err.contains("grpc2"), "{err}");
        let err = from_str(&MINIMAL.replace("reload", "x").replace("[tls]", "[tls]\nbogus = 1")).expect_err("refused");
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn a_service_refuses_an_administrative_database_url() {
        let with_admin = MINIMAL
            .replace("[upstreams]", "admin_url = \"postgres://postgres:hunter2@127.0.0.1/strongroom\"\n[upstreams]");
        let err = from_str(&with_admin).expect_err("refused");
        assert!(err.contains("admin_url"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn plain_http_upstreams_are_refused() {
        let cfg = from_str(&MINIMAL.replace("https://127.0.0.1:7101", "http://127.0.0.1:7101")).expect("loads");
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn errors_never_echo_passwords() {
        let line = one_line("invalid type: found string \"postgres://u:hunter2@db/x\", expected a map");
        assert!(!line.contains("hunter2"), "{line}");
        assert!(line.contains("postgres://u:***@db/x"), "{line}");
    }

    #[test]
    fn passwords_are_redacted() {
        let url = SecretString::from("postgres://u:hunter2@db/x");
        assert!(!redact_url(&url).contains("hunter2"));
    }
}
