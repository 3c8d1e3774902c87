//! Cross-cutting HTTP behaviour: request ids, the request span (continuing a W3C trace),
//! RED metrics, security headers, and one JSON shape for every error.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use kit::ErrorCode;
use kit::error::ApiError;
use kit::metrics::{HttpLabels, Metrics};
use tracing::Instrument;

/// The request id of the current request (set by [`observe`]).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl RequestId {
    /// The request id [`observe`] put into a request's extensions (empty outside it).
    pub fn of(extensions: &http::Extensions) -> String {
        extensions.get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default()
    }
}

/// An error answered as `{"error":{"code","reason","message","request_id"}}`.
#[derive(Debug)]
pub struct JsonError(pub ApiError, pub String);

impl IntoResponse for JsonError {
    fn into_response(self) -> Response {
        let mut resp = (self.0.code.http(), axum::Json(self.0.to_json(&self.1))).into_response();
        if self.0.code == ErrorCode::Unauthenticated {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(after) = self.0.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        resp
    }
}

/// A handler's refusal: `?` turns any [`ApiError`] into one. It is rendered as the JSON error,
/// with the request's id, by [`observe`] (which alone knows the id of every request).
#[derive(Debug)]
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

/// The error [`HttpError`] left in a response for [`observe`] to render.
#[derive(Debug, Clone)]
struct Unrendered(ApiError);

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut resp = self.0.code.http().into_response();
        resp.extensions_mut().insert(Unrendered(self.0));
        resp
    }
}

const SECURITY_HEADERS: [(&str, &str); 7] = [
    ("strict-transport-security", "max-age=63072000; includeSubDomains; preload"),
    ("content-security-policy", "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
    ("cross-origin-resource-policy", "same-origin"),
];

/// The security headers a handler may set otherwise.
const HANDLER_MAY_SET: [&str; 2] = ["content-security-policy", "cache-control"];

/// Request id, span, metrics, security headers and JSON errors around every request.
pub async fn observe(mut req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| kit::access::is_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(request_id.clone()));
    // Unknown methods share one label, so nobody can mint metric series (OTel's `_OTHER`).
    let method = match *req.method() {
        http::Method::GET
        | http::Method::HEAD
        | http::Method::POST
        | http::Method::PUT
        | http::Method::PATCH
        | http::Method::DELETE
        | http::Method::OPTIONS => req.method().as_str().to_owned(),
        _ => "_OTHER".to_owned(),
    };
    let route =
        req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let span = tracing::info_span!(
        "http.server",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        request_id = %request_id,
        trace_id = tracing::field::Empty,
    );
    kit::telemetry::adopt_parent(&span, req.headers());
    let started = std::time::Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    if let Some(Unrendered(e)) = resp.extensions_mut().remove::<Unrendered>() {
        resp = JsonError(e, request_id.clone()).into_response();
    }

    let status = resp.status();
    if status.is_client_error() || status.is_server_error() {
        let is_json = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let is_page = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/html"));
        if !is_json && !is_page {
            // Keep the framework's status (a 405 stays a 405) and headers (`WWW-Authenticate`);
            // only the body is made uniform.
            let (mut parts, _) = resp.into_parts();
            let (json, body) = JsonError(error_for_status(status), request_id.clone()).into_response().into_parts();
            parts.headers.remove(header::CONTENT_LENGTH);
            for (name, value) in &json.headers {
                parts.headers.entry(name).or_insert_with(|| value.clone());
            }
            if let Some(json_type) = json.headers.get(header::CONTENT_TYPE) {
                parts.headers.insert(header::CONTENT_TYPE, json_type.clone());
            }
            resp = Response::from_parts(parts, body);
        }
    }
    span.record(kit::telemetry::semconv::HTTP_RESPONSE_STATUS_CODE, status.as_u16());
    let headers = resp.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        // A handler may set its own CSP (the hosted login pages: their stylesheet and forms) and
        // caching (public documents); every other header is the same on every answer.
        if HANDLER_MAY_SET.contains(&name) && headers.contains_key(name) {
            continue;
        }
        headers.insert(name, HeaderValue::from_static(value));
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert("x-request-id", v);
    }
    Metrics::global()
        .http_server
        .get_or_create(&HttpLabels {
            http_request_method: method,
            http_route: route,
            http_response_status_code: status.as_u16().to_string(),
        })
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// The error of a response produced by the framework rather than a handler.
fn error_for_status(status: StatusCode) -> ApiError {
    match status {
        StatusCode::NOT_FOUND => ApiError::not_found("ROUTE_NOT_FOUND", "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ApiError::new(ErrorCode::InvalidArgument, "METHOD_NOT_ALLOWED", "method not allowed on this route")
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::PayloadTooLarge, "BODY_TOO_LARGE", "request body too large")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::new(ErrorCode::InvalidArgument, "UNSUPPORTED_MEDIA_TYPE", "expected application/json")
        }
        s if s.is_client_error() => ApiError::new(ErrorCode::InvalidArgument, "BAD_REQUEST", "malformed request"),
        _ => ApiError::new(ErrorCode::Internal, "INTERNAL", "internal error"),
    }
}
