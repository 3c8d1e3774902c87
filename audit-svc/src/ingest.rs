//! `strongroom.audit.v1.AuditIngestService`: events from callers that hold no transaction of their
//! own (the gateway). They go straight into the tenant's log — with the verified caller's name as
//! `service` and personal data as keyed pseudonyms — without the outbox round trip: concurrent
//! calls for one tenant are grouped into one transaction (group commit), and a call returns once
//! its events are committed in the log. Idempotent by event id: an event already logged is not
//! appended again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use kit::access::RequestContext;
use kit::tenancy::TenantStatus;
use kit::{ApiError, Db, Tenant, TenantId};
use proto::audit::v1 as pb;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::error::AuditError;
use crate::pseudonym::Pseudonymizer;
use crate::sequencer::Nudge;
use crate::store::log::RecordFields;

/// Most events in one `AppendBatch`.
pub const MAX_BATCH: usize = 1000;
const MAX_DETAILS: usize = 16 * 1024;

#[derive(Clone)]
pub struct AuditIngest {
    pub db: Db,
    pub pseudonyms: Pseudonymizer,
    pub appender: Appender,
}

/// Most events one group-commit transaction takes.
const GROUP_MAX: usize = 8000;
/// A tenant's queue and task end after this long without an append (the next append starts new
/// ones), so a replica serving many tenants keeps a task only for those appending lately.
const IDLE: std::time::Duration = std::time::Duration::from_secs(300);

struct Job {
    rows: Vec<RecordFields>,
    reply: oneshot::Sender<Result<usize, ApiError>>,
}

/// Group commit of direct appends: one queue and one task per tenant; the task takes whatever
/// has queued while the previous transaction ran and appends it in one transaction.
#[derive(Clone)]
pub struct Appender {
    db: Db,
    nudge: Nudge,
    queues: Arc<Mutex<HashMap<TenantId, mpsc::Sender<Job>>>>,
    idle: std::time::Duration,
}

impl Appender {
    pub fn new(db: Db, nudge: Nudge) -> Self {
        Self { db, nudge, queues: Arc::default(), idle: IDLE }
    }

    /// Appends `rows` (unique event ids) to `tenant`'s log; returns how many were new.
    async fn append(&self, tenant: &Tenant, rows: Vec<RecordFields>) -> Result<usize, ApiError> {
        let (reply, rx) = oneshot::channel();
        let gone = || ApiError::from(AuditError::ShuttingDown);
        if let Err(mpsc::error::SendError(job)) = self.queue(tenant).send(Job { rows, reply }).await {
            // The tenant's queue retired (idle) after this call took it: a new one takes the job.
            self.queue(tenant).send(job).await.map_err(|_| gone())?;
        }
        rx.await.map_err(|_| gone())?
    }

    /// How many tenants have a queue (and a task) now.
    #[cfg(test)]
    fn queues(&self) -> usize {
        self.queues.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn queue(&self, tenant: &Tenant) -> mpsc::Sender<Job> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = queues.get(&tenant.id)
            && !q.is_closed()
        {
            return q.clone();
        }
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(self.clone().run(tenant.clone(), rx));
        queues.insert(tenant.id, tx.clone());
        tx
    }

    async fn run(self, tenant: Tenant, mut rx: mpsc::Receiver<Job>) {
        loop {
            let first = match tokio::time::timeout(self.idle, rx.recv()).await {
                Ok(Some(job)) => job,
                Ok(None) => return,
                Err(_) => {
                    // Idle: retire. Under the map's lock no caller can take this queue any more;
                    // jobs already queued are still served (recv yields them, then None).
                    let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
                    rx.close();
                    if queues.get(&tenant.id).is_some_and(mpsc::Sender::is_closed) {
                        queues.remove(&tenant.id);
                    }
                    continue;
                }
            };
            let mut count = first.rows.len();
            let mut jobs = vec![first];
            while count < GROUP_MAX {
                match rx.try_recv() {
                    Ok(job) => {
                        count += job.rows.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            let mut owners = Vec::with_capacity(jobs.len());
            let mut rows = Vec::with_capacity(count);
            for job in &mut jobs {
                owners.push(job.rows.iter().map(|r| r.event_id).collect::<Vec<_>>());
                rows.append(&mut job.rows);
            }
            match crate::sequencer::append_direct(&self.db, &tenant, rows).await {
                Ok(appended) => {
                    // Each new event is counted once, for the first call that carried it.
                    let mut new: HashSet<Uuid> = appended.into_iter().collect();
                    for (job, ids) in jobs.into_iter().zip(owners) {
                        let n = ids.iter().filter(|id| new.remove(id)).count();
                        let _ = job.reply.send(Ok(n));
                    }
                    self.nudge.tenant(&tenant);
                }
                Err(e) => {
                    tracing::warn!(tenant = %tenant.slug, reason = %e.reason, "direct audit append failed");
                    for job in jobs {
                        let _ = job.reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}

/// One validated event: its fields for the log, `details` a JSON object still without the
/// pseudonyms of `personal`.
struct Valid {
    fields: RecordFields,
    personal: HashMap<String, String>,
}

/// How far ahead of audit-svc's clock an event's `occurred_at` may be (producers' clock skew).
const MAX_CLOCK_AHEAD: chrono::TimeDelta = chrono::TimeDelta::minutes(5);
/// How far an appended event's `occurred_at` may lie behind audit-svc's clock.
const MAX_AGE: chrono::TimeDelta = chrono::TimeDelta::hours(24);

fn field(i: usize, name: &str, why: &str) -> ApiError {
    ApiError::invalid_field(&format!("events[{i}].{name}"), why)
}

fn names_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    kit::outbox::SECRET_KEYS.iter().any(|s| k.contains(s))
}

fn valid_name(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
}

/// Whether a JSON value holds NUL in a string or an object key, which jsonb cannot store.
fn holds_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(holds_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// Validates event `i` of a call by `service`.
fn validate(i: usize, e: pb::Event, service: &str) -> Result<Valid, ApiError> {
    let event_id = Uuid::parse_str(&e.event_id).map_err(|_| field(i, "event_id", "must be a UUID"))?;
    let occurred_at = match &e.occurred_at {
        Some(t) => kit::time::from_pb(&format!("events[{i}].occurred_at"), t)?,
        None => Utc::now(),
    };
    // An event cannot have happened in the future, and an event from long ago did not come from
    // a producer that records as it goes. Either would also widen every later time-filtered
    // query's range for good (tenant migration 0009).
    let now = Utc::now();
    if occurred_at > now + MAX_CLOCK_AHEAD {
        return Err(field(i, "occurred_at", "more than 5 minutes ahead of audit-svc's clock"));
    }
    if occurred_at < now - MAX_AGE {
        return Err(field(i, "occurred_at", "more than 24 hours behind audit-svc's clock"));
    }
    // NUL is the one text PostgreSQL cannot store; a batch must not fail for one caller's event.
    let actor_ok = e.actor == "anonymous"
        || ["user:", "api_key:", "service:"].iter().any(|p| e.actor.strip_prefix(p).is_some_and(|r| !r.is_empty()));
    if !actor_ok || e.actor.len() > 256 || e.actor.contains('\0') {
        return Err(field(i, "actor", "user:<id>, api_key:<id>, service:<name> or anonymous (≤ 256 bytes, no NUL)"));
    }
    if !valid_name(&e.action, 128) {
        return Err(field(i, "action", "1–128 of [a-z0-9._-]"));
    }
    if e.resource.is_empty() || e.resource.len() > 1024 || e.resource.contains('\0') {
        return Err(field(i, "resource", "1–1024 bytes, no NUL"));
    }
    if !matches!(e.outcome.as_str(), "success" | "failure" | "denied") {
        return Err(field(i, "outcome", "success, failure or denied"));
    }
    // Trace ids are W3C hex ids; both are indexed or shown as they are.
    let optional = |s: String, name: &str| match s.as_str() {
        "" => Ok(None),
        id if kit::access::is_request_id(id) => Ok(Some(s)),
        _ => Err(field(i, name, kit::access::REQUEST_ID_RULE)),
    };
    let request_id = optional(e.request_id, "request_id")?;
    let trace_id = optional(e.trace_id, "trace_id")?;
    if e.details_json.len() > MAX_DETAILS {
        return Err(field(i, "details_json", "at most 16 KiB"));
    }
    let details = match e.details_json.trim() {
        "" => Map::new(),
        text => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => m,
            _ => return Err(field(i, "details_json", "must be a JSON object")),
        },
    };
    if details.keys().any(|k| names_secret(k)) {
        return Err(field(i, "details_json", "detail keys must not name a secret"));
    }
    if details.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)) {
        return Err(field(i, "details_json", "must not contain NUL (\\u0000)"));
    }
    for (k, v) in &e.personal {
        if !valid_name(k, 64) || names_secret(k) || details.contains_key(k) {
            return Err(field(i, "personal", "keys: 1–64 of [a-z0-9._-], not naming a secret, not in details"));
        }
        if v.len() > 1024 {
            return Err(field(i, "personal", "values at most 1024 bytes"));
        }
    }
    let fields = RecordFields {
        event_id,
        occurred_at,
        service: service.to_owned(),
        actor: e.actor,
        action: e.action,
        resource: e.resource,
        outcome: e.outcome,
        request_id,
        trace_id,
        details: Value::Object(details),
    };
    Ok(Valid { fields, personal: e.personal })
}

impl AuditIngest {
    async fn tenant(&self, ctx: &RequestContext) -> Result<Tenant, ApiError> {
        // Identity-authorized (gateway, operator); refused requests of a suspended tenant are
        // recorded too, a terminated tenant's log is closed.
        let tenant = self.db.tenant(&ctx.tenant_slug()?).await?;
        if tenant.status == TenantStatus::Terminated {
            return Err(AuditError::TenantTerminated.into());
        }
        Ok(tenant)
    }

    /// Validates, pseudonymizes and appends `events` to the log; returns how many were new.
    async fn append(&self, ctx: &RequestContext, events: Vec<pb::Event>) -> Result<u32, ApiError> {
        if events.is_empty() || events.len() > MAX_BATCH {
            return Err(ApiError::invalid_field("events", "1–1000 events"));
        }
        let tenant = self.tenant(ctx).await?;
        let service = ctx.caller.identity.name();
        let mut valid = Vec::with_capacity(events.len());
        let mut seen = std::collections::HashSet::new();
        for (i, e) in events.into_iter().enumerate() {
            let v = validate(i, e, service)?;
            // A retried event inside one batch counts once.
            if seen.insert(v.fields.event_id) {
                valid.push(v);
            }
        }
        let personal: Vec<HashMap<String, String>> =
            valid.iter_mut().map(|v| std::mem::take(&mut v.personal)).collect();
        let pseudonyms = self.pseudonyms.apply(&tenant, personal).await?;
        let mut rows = Vec::with_capacity(valid.len());
        for (Valid { mut fields, .. }, p) in valid.into_iter().zip(pseudonyms) {
            if let Value::Object(details) = &mut fields.details {
                details.extend(p.into_iter().map(|(name, value)| (name, Value::String(value))));
            }
            rows.push(fields);
        }
        let accepted = self.appender.append(&tenant, rows).await?;
        Ok(accepted as u32)
    }
}

#[tonic::async_trait]
impl pb::audit_ingest_service_server::AuditIngestService for AuditIngest {
    async fn append(&self, request: Request<pb::AppendRequest>) -> Result<Response<pb::AppendResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let event = request.into_inner().event.ok_or_else(|| ApiError::invalid_field("event", "required"))?;
        AuditIngest::append(self, &ctx, vec![event]).await?;
        Ok(Response::new(pb::AppendResponse {}))
    }

    async fn append_batch(
        &self,
        request: Request<pb::AppendBatchRequest>,
    ) -> Result<Response<pb::AppendBatchResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let events = request.into_inner().events;
        let accepted = AuditIngest::append(self, &ctx, events).await?;
        Ok(Response::new(pb::AppendBatchResponse { accepted }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_idle_tenant_queue_retires_and_the_next_append_gets_a_new_one() {
        let db = Db::connect_lazy(&"postgres://nobody@127.0.0.1:1/none".to_owned().into(), 1).expect("lazy pool");
        let mut appender = Appender::new(db, Nudge::default());
        appender.idle = std::time::Duration::from_millis(50);
        let tenant = Tenant {
            id: TenantId(Uuid::new_v4()),
            slug: kit::TenantSlug::parse("alpha").expect("slug"),
            status: TenantStatus::Active,
            created_at: Utc::now(),
        };
        let first = appender.queue(&tenant);
        assert_eq!(appender.queues(), 1);
        assert!(appender.queue(&tenant).same_channel(&first), "one queue per tenant while in use");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while appender.queues() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "the idle queue was not retired");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(first.is_closed(), "a caller still holding the retired queue learns it is closed");
        let second = appender.queue(&tenant);
        assert!(!second.is_closed() && !second.same_channel(&first));
        assert_eq!(appender.queues(), 1);
    }

    fn event() -> pb::Event {
        pb::Event {
            event_id: Uuid::now_v7().to_string(),
            occurred_at: None,
            actor: "user:u1".into(),
            action: "http.request".into(),
            resource: "POST /v1/secrets/{*path}".into(),
            outcome: "success".into(),
            request_id: "r1".into(),
            trace_id: String::new(),
            details_json: r#"{"status":200}"#.into(),
            personal: HashMap::from([("client_ip".into(), "192.0.2.1".into())]),
        }
    }

    #[test]
    fn events_are_validated() {
        assert!(validate(0, event(), "gateway").is_ok());
        let bad: [fn(&mut pb::Event); 7] = [
            |e| e.event_id = "nope".into(),
            |e| e.actor = "root".into(),
            |e| e.action = "HTTP Request".into(),
            |e| e.outcome = "ok".into(),
            |e| e.details_json = "[1]".into(),
            |e| e.details_json = r#"{"api_token":"x"}"#.into(),
            |e| e.details_json = r#"{"client_ip":"x"}"#.into(),
        ];
        for f in bad {
            let mut e = event();
            f(&mut e);
            assert!(validate(0, e, "gateway").is_err());
        }
    }
}
