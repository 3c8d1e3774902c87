//! RED metrics (rate, errors, duration) per RPC and per HTTP route, exposed in Prometheus text on
//! the admin port (`/metrics`). Names and labels follow the OpenTelemetry RPC/HTTP conventions as
//! named in [`crate::telemetry::semconv`].

use std::sync::{Mutex, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub service: String,
    pub rpc_service: String,
    pub rpc_method: String,
    pub rpc_grpc_status_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub http_request_method: String,
    pub http_route: String,
    pub http_response_status_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_5, 2.0, 16))
}

/// The process's metric families.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub rpc_server: Family<RpcLabels, Histogram>,
    pub http_server: Family<HttpLabels, Histogram>,
    /// Notable security and reliability events (refused handshakes, refused calls, ...).
    pub events: Family<EventLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

impl Metrics {
    pub fn global() -> &'static Metrics {
        METRICS.get_or_init(|| {
            let mut registry = Registry::default();
            let rpc_server =
                Family::<RpcLabels, Histogram>::new_with_constructor(duration_histogram as fn() -> Histogram);
            let http_server =
                Family::<HttpLabels, Histogram>::new_with_constructor(duration_histogram as fn() -> Histogram);
            let events = Family::<EventLabels, Counter>::default();
            registry.register_with_unit(
                "rpc_server_call_duration",
                "Duration of RPCs handled, by outcome",
                prometheus_client::registry::Unit::Seconds,
                rpc_server.clone(),
            );
            registry.register_with_unit(
                "http_server_request_duration",
                "Duration of HTTP requests handled, by route and status",
                prometheus_client::registry::Unit::Seconds,
                http_server.clone(),
            );
            registry.register("strongroom_events", "Security and reliability events", events.clone());
            Metrics { registry: Mutex::new(registry), rpc_server, http_server, events }
        })
    }

    /// Counts one event.
    pub fn event(&self, event: &str) {
        self.events.get_or_create(&EventLabels { event: event.to_owned() }).inc();
    }

    /// The Prometheus/OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serves `/metrics` (and `/healthz`) over plain HTTP on the admin listener until `shutdown`.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(|| async {
                (
                    [(http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                    Metrics::global().encode(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
