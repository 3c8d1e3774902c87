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
//!
//! A flood must not become the victim's seven-year log, nor crowd out other tenants' records:
//! refusals of requests that proved no caller (no token, or a refused one) are summed up per
//! tenant, client address and `http.refusal_summary_interval_ms` into one record
//! (`gateway.request.refused_anonymous` with the count, statuses, reasons and routes; at most
//! [`MAX_SOURCES`] addresses a tenant per interval, the rest as one); authentication requests
//! (`/v1/auth/*`, whose tenant the handler names: the login body, or the token) are recorded one by
//! one, as auth-svc records each attempt itself. And no tenant holds more than [`TENANT_SHARE`] of
//! the queue.

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
/// Events of one tenant waiting to be sent; beyond this, that tenant's new events are dropped
/// (counted) while other tenants' still queue.
pub const TENANT_SHARE: usize = QUEUE / 10;
/// Client addresses whose refusals a tenant's summary names one by one per interval; beyond,
/// they are summed up as one source without an address.
pub const MAX_SOURCES: usize = 100;
/// Tenants (names that look like one: a flood may invent them) whose refusals are summed up per
/// interval; refusals naming further tenants are only counted
/// (`strongroom_events{event="gateway_audit_refusals_unrecorded"}`), so one flush cannot fill the
/// queue with summaries for invented tenants.
pub const MAX_TENANTS: usize = 1_000;
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
pub struct Actor {
    noted: Arc<std::sync::Mutex<Option<Result<String, String>>>>,
    /// The tenant a verified credential names (the record's tenant when no header names one).
    tenant: Arc<std::sync::Mutex<Option<String>>>,
}

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
        *slot.noted.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(noted);
        *slot.tenant.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            verified.as_ref().ok().and_then(|p| p.tenant.as_ref()).map(ToString::to_string);
    }

    fn take(&self) -> Option<Result<String, String>> {
        self.noted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }

    fn tenant(&self) -> Option<String> {
        self.tenant.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// The tenant whose log a response's request belongs in, when the handler learnt it from
/// elsewhere than the `x-strongroom-tenant` header (a login body, a token that names its tenant).
#[derive(Clone, Debug)]
pub struct RecordIn(pub String);

/// The recording layer's handle: cheap to clone.
#[derive(Clone, Debug)]
pub struct Recorder {
    queue: mpsc::Sender<Pending>,
    /// Events queued per tenant ([`TENANT_SHARE`]).
    queued: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    /// Anonymous refusals being summed up ([`Refusals`]).
    refusals: Refusals,
    /// Proxies whose `X-Forwarded-For` names the client (`rate_limits.trusted_proxies`), so that
    /// the recorded client IP is the one the rate limiter sees, not the proxy's.
    trusted_proxies: Arc<[Cidr]>,
}

/// One source's refusals in the current interval.
#[derive(Debug, Default)]
struct Refused {
    count: u64,
    statuses: std::collections::BTreeMap<u16, u64>,
    /// Why a token named nobody (`NO_TOKEN` when none was sent).
    reasons: std::collections::BTreeMap<String, u64>,
    routes: std::collections::BTreeMap<String, u64>,
    first_request_id: String,
    user_agent: Option<String>,
}

/// Refusals of requests that proved no caller, per tenant and client address (`None`: the
/// sources beyond [`MAX_SOURCES`]), since the last summary (and when that was).
#[derive(Clone, Debug)]
struct Refusals(Arc<std::sync::Mutex<(chrono::DateTime<chrono::Utc>, RefusedBySource)>>);

type RefusedBySource = HashMap<String, HashMap<Option<String>, Refused>>;

impl Default for Refusals {
    fn default() -> Self {
        Self(Arc::new(std::sync::Mutex::new((chrono::Utc::now(), HashMap::new()))))
    }
}

/// What one anonymous refusal was.
struct Refusal {
    tenant: String,
    client_ip: Option<String>,
    status: u16,
    reason: String,
    route: String,
    request_id: String,
    user_agent: Option<String>,
}

impl Refusals {
    fn add(&self, r: Refusal) {
        let mut all = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !all.1.contains_key(&r.tenant) && all.1.len() >= MAX_TENANTS {
            failed("gateway_audit_refusals_unrecorded", 1);
            return;
        }
        let sources = all.1.entry(r.tenant).or_default();
        let key = match r.client_ip {
            Some(ip) if sources.contains_key(&Some(ip.clone())) || sources.len() < MAX_SOURCES => Some(ip),
            _ => None,
        };
        let entry = sources.entry(key).or_default();
        entry.count += 1;
        *entry.statuses.entry(r.status).or_default() += 1;
        *entry.reasons.entry(r.reason).or_default() += 1;
        if entry.routes.len() < 20 || entry.routes.contains_key(&r.route) {
            *entry.routes.entry(r.route).or_default() += 1;
        }
        if entry.first_request_id.is_empty() {
            entry.first_request_id = r.request_id;
        }
        if entry.user_agent.is_none() {
            entry.user_agent = r.user_agent;
        }
    }

    /// One summary event per tenant and source since the last summary.
    fn take(&self) -> Vec<Pending> {
        let until = chrono::Utc::now();
        let (since, all) = {
            let mut guard = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let since = std::mem::replace(&mut guard.0, until);
            (since, std::mem::take(&mut guard.1))
        };
        let mut out = Vec::new();
        for (tenant, sources) in all {
            for (client_ip, r) in sources {
                let statuses: std::collections::BTreeMap<String, u64> =
                    r.statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect();
                let details = serde_json::json!({
                    "count": r.count,
                    "statuses": statuses,
                    "authentication": r.reasons,
                    "routes": r.routes,
                    "from": since.to_rfc3339(),
                    "until": until.to_rfc3339(),
                    "other_sources": client_ip.is_none(),
                });
                let mut personal = HashMap::new();
                if let Some(ip) = client_ip {
                    personal.insert("client_ip".to_owned(), ip);
                }
                if let Some(ua) = r.user_agent {
                    personal.insert("user_agent".to_owned(), ua);
                }
                let event = pb::Event {
                    event_id: uuid::Uuid::now_v7().to_string(),
                    occurred_at: Some(kit::time::to_pb(until)),
                    actor: "anonymous".into(),
                    action: "gateway.request.refused_anonymous".into(),
                    resource: "gateway".into(),
                    outcome: "denied".into(),
                    request_id: r.first_request_id,
                    trace_id: String::new(),
                    details_json: details.to_string(),
                    personal,
                };
                out.push(Pending { tenant: tenant.clone(), event });
            }
        }
        out
    }
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
    /// Starts the worker (it sends what is queued, then the last summary of anonymous refusals,
    /// and stops once every `Recorder` is dropped) and the summary of anonymous refusals every
    /// `summary_interval`.
    pub fn spawn(
        audit: kit::client::Channel,
        trusted_proxies: &[Cidr],
        summary_interval: Duration,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let queued: Arc<std::sync::Mutex<HashMap<String, usize>>> = Arc::default();
        let refusals = Refusals::default();
        let client = AuditIngestServiceClient::new(audit);
        let worker = tokio::spawn(work(rx, client, queued.clone(), refusals.clone()));
        let recorder = Self { queue: tx, queued, refusals, trusted_proxies: trusted_proxies.into() };
        // Holds the queue only weakly: the worker ends when the gateway drops its recorders.
        let (weak, queued, refusals) = (recorder.queue.downgrade(), recorder.queued.clone(), recorder.refusals.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(summary_interval).await;
                let Some(queue) = weak.upgrade() else { return };
                for p in refusals.take() {
                    push(&queue, &queued, p);
                }
            }
        });
        (recorder, worker)
    }

    fn enqueue(&self, p: Pending) {
        push(&self.queue, &self.queued, p);
    }
}

/// Queues `p` unless its tenant's share or the queue is full (counted and logged).
fn push(queue: &mpsc::Sender<Pending>, queued: &std::sync::Mutex<HashMap<String, usize>>, p: Pending) {
    {
        let mut queued = queued.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = queued.entry(p.tenant.clone()).or_default();
        if *n >= TENANT_SHARE {
            failed("gateway_audit_dropped", 1);
            tracing::warn!(tenant = %p.tenant, request_id = %p.event.request_id, "tenant's share of the audit queue full: request not recorded");
            return;
        }
        *n += 1;
    }
    let tenant = p.tenant.clone();
    let queued_now = queue.try_send(p);
    Metrics::global().recorder_queue_depth(depth(queue));
    match queued_now {
        Ok(()) => return,
        Err(mpsc::error::TrySendError::Full(p)) => {
            tracing::error!(tenant = %p.tenant, request_id = %p.event.request_id, "audit queue full: request not recorded");
        }
        Err(mpsc::error::TrySendError::Closed(p)) => {
            tracing::error!(tenant = %p.tenant, request_id = %p.event.request_id, "audit recorder stopped: request not recorded");
        }
    }
    failed("gateway_audit_dropped", 1);
    dequeued(queued, &tenant, 1);
}

/// Events waiting in the queue (`strongroom_gateway_recorder_queue_depth`).
fn depth(queue: &mpsc::Sender<Pending>) -> usize {
    queue.max_capacity() - queue.capacity()
}

/// Gives back `n` of `tenant`'s share of the queue.
fn dequeued(queued: &std::sync::Mutex<HashMap<String, usize>>, tenant: &str, n: usize) {
    let mut queued = queued.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(count) = queued.get_mut(tenant) {
        *count = count.saturating_sub(n);
        if *count == 0 {
            queued.remove(tenant);
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
    let named_by_handler = resp.extensions().get::<RecordIn>().map(|t| t.0.clone());
    let tenant = named_by_handler.clone().or(tenant).or_else(|| actor.tenant());
    let Some(tenant) = tenant.filter(|t| kit::TenantSlug::parse(t).is_ok()) else {
        // Nothing names a tenant log to record in (e.g. a 401 without x-strongroom-tenant or a
        // verified credential).
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
    let (actor, why) = match actor.take() {
        Some(Ok(actor)) => (actor, None),
        // A refused token names nobody; say why it named nobody.
        Some(Err(reason)) => ("anonymous".to_owned(), Some(reason)),
        None if has_token => ("anonymous".to_owned(), Some("NOT_VERIFIED".to_owned())),
        None => ("anonymous".to_owned(), None),
    };
    // An authentication request is recorded one by one only when its handler ran and named its
    // tenant (not a header anyone sets), and was not a 429: a flood of logins naming a victim in
    // `x-strongroom-tenant`, refused by the rate limiter, is summed up like any other.
    let authentication =
        (route.starts_with("/v1/auth/") || route.starts_with("/t/")) && named_by_handler.is_some() && status != 429;
    if refused && actor == "anonymous" && !authentication {
        recorder.refusals.add(Refusal {
            tenant,
            client_ip,
            status,
            reason: why.unwrap_or_else(|| "NO_TOKEN".into()),
            route: format!("{method_name} {route}"),
            request_id,
            user_agent,
        });
        return resp;
    }
    if let Some(reason) = why {
        details["authentication"] = serde_json::Value::String(reason);
    }
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
        occurred_at: Some(kit::time::to_pb(now)),
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
            Err(s) if kit::ApiError::from_status(&s).reason == "TENANT_TERMINATED" => {
                // The tenant's log is closed; the requests were refused with TENANT_TERMINATED.
                failed("gateway_audit_tenant_terminated", n);
                tracing::info!(tenant, events = n, "requests of a terminated tenant not recorded: its log is closed");
                return;
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

async fn work(
    mut rx: mpsc::Receiver<Pending>,
    mut client: AuditIngestServiceClient<kit::client::Channel>,
    queued: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    refusals: Refusals,
) {
    while let Some(first) = rx.recv().await {
        let mut pending = vec![first];
        while pending.len() < BATCH {
            match rx.try_recv() {
                Ok(p) => pending.push(p),
                Err(_) => break,
            }
        }
        Metrics::global().recorder_queue_depth(rx.len());
        let mut by_tenant: HashMap<String, Vec<pb::Event>> = HashMap::new();
        for p in pending {
            by_tenant.entry(p.tenant).or_default().push(p.event);
        }
        for (tenant, events) in &by_tenant {
            dequeued(&queued, tenant, events.len());
        }
        for (tenant, events) in by_tenant {
            send(&mut client, &tenant, events).await;
        }
    }
    // The gateway is stopping: the last summary of anonymous refusals goes out too.
    let mut by_tenant: HashMap<String, Vec<pb::Event>> = HashMap::new();
    for p in refusals.take() {
        by_tenant.entry(p.tenant).or_default().push(p.event);
    }
    for (tenant, events) in by_tenant {
        send(&mut client, &tenant, events).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(tenant: &str) -> Pending {
        Pending { tenant: tenant.into(), event: pb::Event::default() }
    }

    #[test]
    fn one_tenant_cannot_fill_the_queue() {
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let queued = std::sync::Mutex::new(HashMap::new());
        for _ in 0..QUEUE {
            push(&tx, &queued, pending("victim"));
        }
        push(&tx, &queued, pending("other"));
        let mut by_tenant: HashMap<String, usize> = HashMap::new();
        while let Ok(p) = rx.try_recv() {
            *by_tenant.entry(p.tenant).or_default() += 1;
        }
        assert_eq!(by_tenant.get("victim"), Some(&TENANT_SHARE), "the flooded tenant keeps its share only");
        assert_eq!(by_tenant.get("other"), Some(&1), "another tenant still gets in");
    }

    #[test]
    fn the_depth_is_what_waits_in_the_queue() {
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let queued = std::sync::Mutex::new(HashMap::new());
        assert_eq!(depth(&tx), 0);
        for tenant in ["a", "b", "a"] {
            push(&tx, &queued, pending(tenant));
        }
        assert_eq!(depth(&tx), 3);
        rx.try_recv().expect("queued");
        assert_eq!(depth(&tx), 2);
    }

    #[test]
    fn anonymous_refusals_are_summed_per_source_and_bounded() {
        let refusals = Refusals::default();
        for i in 0..(MAX_SOURCES + 50) {
            for _ in 0..3 {
                refusals.add(Refusal {
                    tenant: "victim".into(),
                    client_ip: Some(format!("192.0.2.{}", i % 256)),
                    status: 401,
                    reason: "NO_TOKEN".into(),
                    route: "POST /v1/secrets/{*path}".into(),
                    request_id: format!("r{i}"),
                    user_agent: None,
                });
            }
        }
        let summaries = refusals.take();
        assert_eq!(summaries.len(), MAX_SOURCES + 1, "one per source, the rest as one");
        let counts: Vec<u64> = summaries
            .iter()
            .map(|p| {
                serde_json::from_str::<serde_json::Value>(&p.event.details_json).expect("json")["count"]
                    .as_u64()
                    .expect("count")
            })
            .collect();
        assert_eq!(counts.iter().sum::<u64>(), 3 * (MAX_SOURCES as u64 + 50));
        assert!(refusals.take().is_empty(), "each refusal is summed once");
    }

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
