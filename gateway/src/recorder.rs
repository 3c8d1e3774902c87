//! Records every state-changing request (any method but GET, HEAD, OPTIONS) and every refused
//! request (401, 403, 429) in the tenant's audit log through audit-svc's `AppendBatch`: method,
//! route template, status, actor, request id, a description, and the client IP and user agent as
//! personal data (audit-svc stores only keyed pseudonyms of those). The client IP is the rate
//! limiter's: the TCP peer, or behind a trusted proxy the address its `X-Forwarded-For` names.
//!
//! Off the request path: the layer puts the event on a bounded queue and answers; a worker batches
//! events per tenant and retries a failed call with the same event ids (audit-svc is idempotent by
//! event id). Every event that cannot be recorded — queue full, no tenant named, retries exhausted,
//! refused by audit-svc — is counted in `strongroom_events{event="gateway_audit_*"}` and logged.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use kit::metrics::Metrics;
use kit::principal::Principal;
use proto::audit::v1 as pb;
use proto::audit::v1::audit_ingest_service_client::AuditIngestServiceClient;
use tokio::sync::mpsc;

use crate::ratelimit::{Cidr, client_ip};

/// Events waiting to be sent; beyond this, new events are counted as dropped.
pub const QUEUE: usize = 10_000;
const BATCH: usize = 500;
const ATTEMPTS: u32 = 6;

/// One request to record.
struct Pending {
    tenant: String,
    event: pb::Event,
}

/// Who a request's token proved to be, noted by the layer that verifies it
/// ([`crate::ratelimit::limit`]) while the request runs. So the recorder names the actor as the
/// request was authorised: it keeps no token and verifies none again later (when a logout has
/// revoked it, or at the cost of an introspection per refused API key).
#[derive(Clone, Debug, Default)]
pub struct Actor(Arc<std::sync::Mutex<Option<Result<String, String>>>>);

impl Actor {
    /// Notes in `extensions`' slot (when the recorder put one there) what verifying the request's
    /// token gave.
    pub fn note(extensions: &http::Extensions, verified: &Result<Principal, kit::ApiError>) {
        let Some(slot) = extensions.get::<Actor>() else { return };
        let noted = match verified {
            Ok(p) if p.amr.iter().any(|m| m == "api_key") => Ok(format!("api_key:{}", p.token_id)),
            Ok(p) => Ok(format!("user:{}", p.subject)),
            Err(e) => Err(e.reason.to_string()),
        };
        *slot.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(noted);
    }

    fn take(&self) -> Option<Result<String, String>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }
}

/// The recording layer's handle: cheap to clone.
#[derive(Clone, Debug)]
pub struct Recorder {
    queue: mpsc::Sender<Pending>,
    /// Proxies whose `X-Forwarded-For` names the client (`rate_limits.trusted_proxies`), so that
    /// the recorded client IP is the one the rate limiter sees, not the proxy's.
    trusted_proxies: Arc<[Cidr]>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("tenant", &self.tenant).finish_non_exhaustive()
    }
}

fn failed(event: &'static str, n: usize) {
    let metric = Metrics::global().events.get_or_create(&kit::metrics::EventLabels { event: event.to_owned() });
    metric.inc_by(n as u64);
}

impl Recorder {
    /// Starts the worker; it sends what is queued and stops once every `Recorder` is dropped.
    pub fn spawn(audit: kit::client::Channel, trusted_proxies: &[Cidr]) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let worker = tokio::spawn(work(rx, AuditIngestServiceClient::new(audit)));
        (Self { queue: tx, trusted_proxies: trusted_proxies.into() }, worker)
    }

    fn enqueue(&self, p: Pending) {
        match self.queue.try_send(p) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(p)) => {
                failed("gateway_audit_dropped", 1);
                tracing::error!(tenant = %p.tenant, request_id = %p.event.request_id, "audit queue full: request not recorded");
            }
            Err(mpsc::error::TrySendError::Closed(p)) => {
                failed("gateway_audit_dropped", 1);
                tracing::error!(tenant = %p.tenant, request_id = %p.event.request_id, "audit recorder stopped: request not recorded");
            }
        }
    }
}

/// What a request did, in words, from its method and route template.
fn describe(method: &str, route: &str, path: &str) -> String {
    let action = path.rsplit_once(':').map(|(_, a)| a).filter(|a| a.bytes().all(|b| b.is_ascii_lowercase()));
    match (method, route, action) {
        ("PUT", "/v1/secrets/{*path}", _) => "store a secret version".into(),
        ("DELETE", "/v1/secrets/{*path}", _) => "delete a secret".into(),
        ("POST", "/v1/secrets/{*path}", Some(a)) => format!("{a} a secret"),
        (m, r, _) => format!("{m} {r}"),
    }
}

fn outcome(status: u16) -> &'static str {
    match status {
        401 | 403 | 429 => "denied",
        200..=399 => "success",
        _ => "failure",
    }
}

/// The method as recorded: the standard ones by name, any other (an extension method of up to
/// hyper's limits, chosen by the client) as `_OTHER`.
fn method_name(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        _ => "_OTHER",
    }
}

/// The layer: runs the request, then queues its event if it changed state or was refused.
pub async fn record(State(recorder): State<Recorder>, mut req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let changes_state = !matches!(method, http::Method::GET | http::Method::HEAD | http::Method::OPTIONS);
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let path = req.uri().path().to_owned();
    let headers = req.headers();
    let tenant = headers.get(kit::access::TENANT_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    // Whether it carried a token (the bearer token or the browser's session cookie).
    let has_token = crate::browser::request_token(headers).is_some();
    let user_agent = headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(512).collect::<String>());
    let client_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| client_ip(c.0.ip(), headers, &recorder.trusted_proxies).to_string());
    let actor = Actor::default();
    req.extensions_mut().insert(actor.clone());

    let resp = next.run(req).await;

    let status = resp.status().as_u16();
    let refused = matches!(status, 401 | 403 | 429);
    if !(changes_state || refused) {
        return resp;
    }
    let request_id = resp.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let Some(tenant) = tenant.filter(|t| kit::TenantSlug::parse(t).is_ok()) else {
        // Nothing names a tenant log to record in (e.g. a 401 without x-strongroom-tenant).
        failed("gateway_audit_no_tenant", 1);
        tracing::info!(method = method_name(&method), status, request_id = %request_id, "request not recorded: no valid tenant named");
        return resp;
    };
    let route = route.unwrap_or_else(|| "unmatched".into());
    let method_name = method_name(&method);
    let mut details = serde_json::json!({
        "method": method_name,
        "route": route,
        "status": status,
        "description": describe(method_name, &route, &path),
    });
    let actor = match actor.take() {
        Some(Ok(actor)) => actor,
        // A refused token names nobody; say why it named nobody.
        Some(Err(reason)) => {
            details["authentication"] = serde_json::Value::String(reason);
            "anonymous".into()
        }
        None if has_token => {
            details["authentication"] = serde_json::Value::String("NOT_VERIFIED".into());
            "anonymous".into()
        }
        None => "anonymous".into(),
    };
    let mut personal = HashMap::new();
    if let Some(ip) = client_ip {
        personal.insert("client_ip".to_owned(), ip);
    }
    if let Some(ua) = user_agent {
        personal.insert("user_agent".to_owned(), ua);
    }
    let now = chrono::Utc::now();
    let event = pb::Event {
        event_id: uuid::Uuid::now_v7().to_string(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: now.timestamp(),
            nanos: now.timestamp_subsec_nanos() as i32,
        }),
        actor,
        action: if refused { "gateway.request.refused".into() } else { "gateway.request".into() },
        resource: format!("route:{method_name} {route}"),
        outcome: outcome(status).into(),
        request_id,
        trace_id: String::new(),
        details_json: details.to_string(),
        personal,
    };
    recorder.enqueue(Pending { tenant, event });
    resp
}

fn retryable(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::Aborted
            | tonic::Code::ResourceExhausted
            | tonic::Code::Cancelled
    )
}

async fn send(client: &mut AuditIngestServiceClient<kit::client::Channel>, tenant: &str, events: Vec<pb::Event>) {
    let n = events.len();
    let batch = pb::AppendBatchRequest { events, request_id: uuid::Uuid::now_v7().to_string() };
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=ATTEMPTS {
        // The same events (and event ids) on every attempt: audit-svc logs each once.
        let req =
            kit::client::with_context(tonic::Request::new(batch.clone()), Some(tenant), Some(&batch.request_id), None);
        match client.append_batch(req).await {
            Ok(_) => return,
            Err(s) if retryable(s.code()) && attempt < ATTEMPTS => {
                tracing::warn!(tenant, events = n, attempt, code = ?s.code(), "recording requests failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(s) => {
                failed("gateway_audit_failed", n);
                let ids: Vec<&str> = batch.events.iter().map(|e| e.request_id.as_str()).collect();
                tracing::error!(tenant, events = n, code = ?s.code(), reason = %kit::ApiError::from_status(&s).reason,
                    request_ids = ?ids, "requests not recorded in the audit log");
                return;
            }
        }
    }
}

async fn work(mut rx: mpsc::Receiver<Pending>, mut client: AuditIngestServiceClient<kit::client::Channel>) {
    while let Some(first) = rx.recv().await {
        let mut pending = vec![first];
        while pending.len() < BATCH {
            match rx.try_recv() {
                Ok(p) => pending.push(p),
                Err(_) => break,
            }
        }
        let mut by_tenant: HashMap<String, Vec<pb::Event>> = HashMap::new();
        for p in pending {
            by_tenant.entry(p.tenant).or_default().push(p.event);
        }
        for (tenant, events) in by_tenant {
            send(&mut client, &tenant, events).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_described_and_classified() {
        assert_eq!(describe("PUT", "/v1/secrets/{*path}", "/v1/secrets/a/b"), "store a secret version");
        assert_eq!(describe("POST", "/v1/secrets/{*path}", "/v1/secrets/a:reveal"), "reveal a secret");
        assert_eq!(describe("POST", "/v1/x", "/v1/x"), "POST /v1/x");
        assert_eq!(outcome(201), "success");
        assert_eq!(outcome(403), "denied");
        assert_eq!(outcome(429), "denied");
        assert_eq!(outcome(500), "failure");
        assert_eq!(outcome(404), "failure");
    }
}
