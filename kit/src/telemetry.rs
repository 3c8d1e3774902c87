//! Telemetry in one place: JSON logs carrying trace ids, OTLP span export when an endpoint is
//! configured, W3C trace context through HTTP and gRPC on both the client and the server side,
//! and per-RPC metrics. Span fields never carry secrets, tokens or request bodies.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::TelemetryConfig;
use crate::metrics::{Metrics, RpcLabels};

/// Attribute and span names from the OpenTelemetry semantic conventions, named once.
pub mod semconv {
    pub const RPC_SYSTEM: &str = "rpc.system";
    pub const RPC_SERVICE: &str = "rpc.service";
    pub const RPC_METHOD: &str = "rpc.method";
    pub const RPC_GRPC_STATUS_CODE: &str = "rpc.grpc.status_code";
    pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
    pub const HTTP_ROUTE: &str = "http.route";
    pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
    pub const SERVICE_NAME: &str = "service.name";
}

/// Keeps the tracer provider alive; flushes and shuts it down when dropped.
#[derive(Debug, Clone)]
pub struct Guard {
    provider: SdkTracerProvider,
}

impl Guard {
    /// Exports every finished span now.
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!(error = %e, "span flush failed");
        }
    }

    pub fn shutdown(&self) {
        let _ = self.provider.shutdown();
    }
}

static GUARD: OnceLock<Guard> = OnceLock::new();

/// Installs logging and tracing for `service` (once per process; later calls return the first
/// guard). Must run inside a Tokio runtime when an OTLP endpoint is configured.
pub fn init(service: &str, cfg: &TelemetryConfig) -> Result<Guard, String> {
    if let Some(guard) = GUARD.get() {
        return Ok(guard.clone());
    }
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(format!("strongroom-{service}")).build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = &cfg.otlp_endpoint {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|e| format!("otlp exporter: {e}"))?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    let tracer = provider.tracer("strongroom");
    let filter = EnvFilter::try_new(&cfg.log).map_err(|e| format!("telemetry.log: {e}"))?;
    let fmt = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(true)
        .with_target(true)
        .with_writer(std::io::stderr);
    // Spans are exported at INFO whatever the log level, so quiet logs do not break traces.
    let spans =
        tracing_opentelemetry::layer().with_tracer(tracer).with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    let _ = tracing_subscriber::registry().with(fmt.with_filter(filter)).with(spans).try_init();
    Ok(GUARD.get_or_init(|| Guard { provider }).clone())
}

/// The trace id of the current span, as 32 hex digits.
pub fn current_trace_id() -> Option<String> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(key), http::HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

/// Sets `span`'s parent from W3C `traceparent`/`tracestate` headers and records its trace id.
pub fn adopt_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    let trace_id = span.context().span().span_context().trace_id().to_string();
    span.record("trace_id", trace_id.as_str());
}

/// Writes `span`'s context into W3C headers.
pub fn inject(span: &tracing::Span, headers: &mut http::HeaderMap) {
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HeaderInjector(headers)));
}

fn split_rpc_path(path: &str) -> (String, String) {
    let trimmed = path.trim_start_matches('/');
    match trimmed.split_once('/') {
        Some((service, method)) => (service.to_owned(), method.to_owned()),
        None => (trimmed.to_owned(), String::new()),
    }
}

fn grpc_status(headers: &http::HeaderMap) -> String {
    // A unary error is sent trailers-only, so it is in the headers; success leaves it to the
    // trailers, which means OK unless the stream fails later.
    headers.get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("0").to_owned()
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Server side: a span per RPC continuing the caller's trace, and RED metrics.
#[derive(Debug, Clone)]
pub struct GrpcServerLayer {
    service: &'static str,
}

impl GrpcServerLayer {
    pub fn new(service: &'static str) -> Self {
        Self { service }
    }
}

impl<S> Layer<S> for GrpcServerLayer {
    type Service = GrpcServerTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerTelemetry { inner, service: self.service }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcServerTelemetry<S> {
    inner: S,
    service: &'static str,
}

impl<S, B, R> Service<http::Request<B>> for GrpcServerTelemetry<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
    S::Error: Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let (rpc_service, rpc_method) = split_rpc_path(req.uri().path());
        let span = tracing::info_span!(
            "rpc.server",
            otel.name = %format!("{rpc_service}/{rpc_method}"),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %rpc_service,
            rpc.method = %rpc_method,
            rpc.grpc.status_code = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        adopt_parent(&span, req.headers());
        let started = Instant::now();
        let service = self.service;
        let fut = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        Box::pin(
            async move {
                let result = fut.await;
                let code = match &result {
                    Ok(resp) => grpc_status(resp.headers()),
                    Err(_) => "2".to_owned(),
                };
                tracing::Span::current().record(semconv::RPC_GRPC_STATUS_CODE, code.as_str());
                Metrics::global()
                    .rpc_server
                    .get_or_create(&RpcLabels {
                        service: service.to_owned(),
                        rpc_service,
                        rpc_method,
                        rpc_grpc_status_code: code,
                    })
                    .observe(started.elapsed().as_secs_f64());
                result
            }
            .instrument(span),
        )
    }
}

/// Client side: a span per outgoing RPC whose context travels in `traceparent`.
#[derive(Debug, Clone, Default)]
pub struct GrpcClientLayer;

impl<S> Layer<S> for GrpcClientLayer {
    type Service = GrpcClientTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcClientTelemetry { inner }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcClientTelemetry<S> {
    inner: S,
}

impl<S, B, R> Service<http::Request<B>> for GrpcClientTelemetry<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let (rpc_service, rpc_method) = split_rpc_path(req.uri().path());
        let span = tracing::info_span!(
            "rpc.client",
            otel.name = %format!("{rpc_service}/{rpc_method}"),
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = %rpc_service,
            rpc.method = %rpc_method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        inject(&span, req.headers_mut());
        let fut = self.inner.call(req);
        Box::pin(
            async move {
                let result = fut.await;
                if let Ok(resp) = &result {
                    tracing::Span::current()
                        .record(semconv::RPC_GRPC_STATUS_CODE, grpc_status(resp.headers()).as_str());
                }
                result
            }
            .instrument(span),
        )
    }
}
