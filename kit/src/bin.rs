//! The shared `main` of every Strongroom server binary: config from `--config <file>` and
//! `STRONGROOM_*` (one line and exit 64 when bad), telemetry, listeners bound before anything
//! else runs, then the server's `run` until SIGTERM/SIGINT.

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;

use serde::de::DeserializeOwned;

/// Every binary that links kit allocates with mimalloc: the servers make many small, short-lived,
/// cross-thread allocations (requests, protobuf and JSON values, TLS records), and glibc's
/// malloc/free were among the top symbols of the gateway's and auth-svc's profiles.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use crate::config::{self, ServiceConfig, TelemetryConfig};
use crate::server::{Listeners, shutdown_signal};

/// A server binary's configuration.
pub trait BinConfig: DeserializeOwned {
    type Listeners;
    fn validate(&self) -> Result<(), String>;
    fn telemetry(&self) -> &TelemetryConfig;
    fn bind(&self) -> impl Future<Output = std::io::Result<Self::Listeners>>;
}

impl<X: DeserializeOwned + Default + config::ServiceSettings> BinConfig for ServiceConfig<X> {
    type Listeners = Listeners;

    fn validate(&self) -> Result<(), String> {
        ServiceConfig::validate(self)
    }

    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }

    async fn bind(&self) -> std::io::Result<Listeners> {
        Listeners::bind(self).await
    }
}

/// Loads `C` from `--config <file>` and `STRONGROOM_*`, or exits with 64.
pub fn load_config<C: BinConfig>() -> C {
    let path = config::config_path_from_args().unwrap_or_else(|e| config::exit_bad_config(&e));
    let cfg: C = config::load(path.as_deref()).unwrap_or_else(|e| config::exit_bad_config(&e));
    cfg.validate().unwrap_or_else(|e| config::exit_bad_config(&e));
    cfg
}

/// Shutdown future handed to `run`.
pub type ShutdownFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs a server binary named `name`.
pub fn server_main<C, F, Fut, E>(name: &'static str, run: F) -> ExitCode
where
    C: BinConfig,
    F: FnOnce(C, C::Listeners, ShutdownFuture) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    crate::tls::install_crypto_provider();
    let cfg: C = load_config();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let guard = match crate::telemetry::init(name, cfg.telemetry()) {
            Ok(g) => g,
            Err(e) => config::exit_bad_config(&e),
        };
        let listeners = match cfg.bind().await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(service = name, error = %e, "cannot bind listeners");
                eprintln!("{name}: cannot bind listeners: {e}");
                return ExitCode::from(71);
            }
        };
        let result = run(cfg, listeners, Box::pin(shutdown_signal())).await;
        guard.flush();
        guard.shutdown();
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(service = name, error = %e, "server failed");
                eprintln!("{name}: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Runs a backend service binary.
pub fn service_main<X, F, Fut, E>(name: &'static str, run: F) -> ExitCode
where
    X: DeserializeOwned + Default + config::ServiceSettings,
    F: FnOnce(ServiceConfig<X>, Listeners, ShutdownFuture) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    server_main::<ServiceConfig<X>, F, Fut, E>(name, run)
}
