//! The audit outbox writer: `tx.record(AuditRecord)` inserts into the tenant's `audit_outbox` in the
//! caller's transaction, so a change and its audit record commit or fail together. audit-svc
//! drains the outbox into the chained log. Details must never carry secrets: keys that name one
//! are refused.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::error::ApiError;
use crate::tenancy::{TenantTx, db_error};

/// The channel audit-svc listens on; the payload is a tenant id.
pub const WAKE_CHANNEL: &str = "strongroom_audit_outbox";
/// After a wake-up is sent, the next waits this long, gathering every tenant written meanwhile.
/// audit-svc starts a round at most every 100 ms anyway, so this adds no latency that matters.
const WAKE_WINDOW: Duration = Duration::from_millis(20);

/// Wakes audit-svc after commits that wrote outbox records. A `NOTIFY` inside the writing
/// transaction would serialise every such commit (PostgreSQL takes a database-wide lock for it and
/// holds it through the WAL flush); instead one background task per process sends one `NOTIFY`
/// per tenant at most once per [`WAKE_WINDOW`], outside any business transaction. A wake-up that
/// is lost (queue full, database error) only delays: audit-svc also sweeps every tenant at least
/// once per its `service.sweep_interval_ms` (10 s by default).
#[derive(Clone)]
pub struct Waker {
    pool: PgPool,
    queue: Arc<OnceLock<mpsc::Sender<Uuid>>>,
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waker")
    }
}

impl Waker {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, queue: Arc::default() }
    }

    /// Asks for a wake-up of `tenant`'s drain; returns at once. Call after the commit.
    pub fn wake(&self, tenant: Uuid) {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(1024);
            tokio::spawn(send_wakes(self.pool.clone(), rx));
            tx
        });
        // Full: a wake-up is due anyway, and audit-svc's sweep covers a tenant it misses.
        let _ = queue.try_send(tenant);
    }
}

/// Sends the queued wake-ups until every [`Waker`] is gone.
async fn send_wakes(pool: PgPool, mut rx: mpsc::Receiver<Uuid>) {
    while let Some(first) = rx.recv().await {
        let mut tenants = BTreeSet::from([first]);
        while let Ok(t) = rx.try_recv() {
            tenants.insert(t);
        }
        let tenants: Vec<Uuid> = tenants.into_iter().collect();
        send_wake(&pool, &tenants).await;
        tokio::time::sleep(WAKE_WINDOW).await;
    }
}

/// Wakes audit-svc for `tenants` now, with one statement outside any transaction of the caller's;
/// a failure is counted and logged (audit-svc's sweep picks the records up).
pub async fn send_wake(pool: &PgPool, tenants: &[Uuid]) {
    let ids: Vec<String> = tenants.iter().map(|t| t.hyphenated().to_string()).collect();
    let sent = sqlx::query("SELECT pg_notify($1, t) FROM unnest($2::text[]) AS t")
        .bind(WAKE_CHANNEL)
        .bind(&ids)
        .execute(pool)
        .await;
    if let Err(e) = sent {
        crate::metrics::Metrics::global().event("audit_wake_failed");
        tracing::warn!(error = %e, tenants = ids.len(), "audit wake-up not sent; audit-svc's sweep picks the records up");
    }
}

/// Who acted: a user, an API key or a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    User(String),
    ApiKey(String),
    Service(String),
    Anonymous,
}

impl Actor {
    /// Who a verified principal stands for: its API key (`api_key:<id>`), or its user.
    pub fn of(p: &crate::principal::Principal) -> Self {
        if p.amr.iter().any(|m| m == "api_key") {
            Self::ApiKey(p.token_id.clone())
        } else {
            Self::User(p.subject.clone())
        }
    }

    pub fn as_string(&self) -> String {
        match self {
            Self::User(id) => format!("user:{id}"),
            Self::ApiKey(id) => format!("api_key:{id}"),
            Self::Service(name) => format!("service:{name}"),
            Self::Anonymous => "anonymous".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Denied => "denied",
        }
    }
}

/// One audit event.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub event_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub service: String,
    pub actor: Actor,
    /// Dotted verb, e.g. `tenant.provision`.
    pub action: String,
    /// What was acted upon, e.g. `tenant/demo`.
    pub resource: String,
    pub outcome: Outcome,
    pub request_id: Option<String>,
    /// Filled from the current span when left empty.
    pub trace_id: Option<String>,
    pub details: Map<String, Value>,
}

/// Substrings of detail keys that would name a secret.
pub const SECRET_KEYS: [&str; 7] = ["password", "secret", "token", "private", "seed", "plaintext", "credential"];

impl AuditRecord {
    pub fn new(service: &str, actor: Actor, action: &str, resource: &str, outcome: Outcome) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            occurred_at: Utc::now(),
            service: service.to_owned(),
            actor,
            action: action.to_owned(),
            resource: resource.to_owned(),
            outcome,
            request_id: None,
            trace_id: None,
            details: Map::new(),
        }
    }

    pub fn request_id(mut self, id: Option<String>) -> Self {
        self.request_id = id;
        self
    }

    /// Adds a non-secret detail.
    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    fn check(&self) -> Result<(), ApiError> {
        if let Some(key) = self.details.keys().find(|k| SECRET_KEYS.iter().any(|s| k.to_ascii_lowercase().contains(s)))
        {
            tracing::error!(key = %key, action = %self.action, "audit detail key names a secret; record refused");
            return Err(ApiError::new(crate::ErrorCode::Internal, "INTERNAL", "internal error"));
        }
        Ok(())
    }
}

impl TenantTx {
    /// Inserts `record` into this tenant's outbox, inside this transaction.
    pub async fn record(&mut self, record: AuditRecord) -> Result<(), ApiError> {
        insert(self.conn(), record).await?;
        self.mark_recorded();
        Ok(())
    }

    /// Inserts `records` into this tenant's outbox with one statement, inside this transaction.
    pub async fn record_all(&mut self, records: Vec<AuditRecord>) -> Result<(), ApiError> {
        if records.is_empty() {
            return Ok(());
        }
        insert_many(self.conn(), records).await?;
        self.mark_recorded();
        Ok(())
    }
}

/// Inserts many records with one statement (`UNNEST`), inside the caller's transaction: a batch of
/// thousands of ledger transfers costs one round trip, not thousands.
async fn insert_many(conn: &mut sqlx::PgConnection, records: Vec<AuditRecord>) -> Result<(), ApiError> {
    if records.is_empty() {
        return Ok(());
    }
    let trace = crate::telemetry::current_trace_id();
    let n = records.len();
    let (mut ids, mut at, mut service, mut actor, mut action) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut resource, mut outcome, mut request, mut traces, mut details) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for r in records {
        r.check()?;
        ids.push(r.event_id);
        at.push(r.occurred_at);
        service.push(r.service);
        actor.push(r.actor.as_string());
        action.push(r.action);
        resource.push(r.resource);
        outcome.push(r.outcome.as_str());
        request.push(r.request_id);
        traces.push(r.trace_id.or_else(|| trace.clone()));
        details.push(Value::Object(r.details).to_string());
    }
    sqlx::query(
        "INSERT INTO audit_outbox (event_id, occurred_at, service, actor, action, resource, outcome, request_id, trace_id, details) \
         SELECT u.e, u.o, u.s, u.a, u.ac, u.r, u.out, u.req, u.tr, u.d::jsonb \
         FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], \
         $9::text[], $10::text[]) AS u(e, o, s, a, ac, r, out, req, tr, d)",
    )
    .bind(ids)
    .bind(at)
    .bind(service)
    .bind(actor)
    .bind(action)
    .bind(resource)
    .bind(outcome)
    .bind(request)
    .bind(traces)
    .bind(details)
    .execute(conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Inserts into `audit_outbox` of the schema and tenant scope `conn` is set to.
pub(crate) async fn insert(conn: &mut sqlx::PgConnection, mut record: AuditRecord) -> Result<(), ApiError> {
    record.check()?;
    if record.trace_id.is_none() {
        record.trace_id = crate::telemetry::current_trace_id();
    }
    sqlx::query(
        "INSERT INTO audit_outbox (event_id, occurred_at, service, actor, action, resource, outcome, request_id, trace_id, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(record.event_id)
    .bind(record.occurred_at)
    .bind(&record.service)
    .bind(record.actor.as_string())
    .bind(&record.action)
    .bind(&record.resource)
    .bind(record.outcome.as_str())
    .bind(&record.request_id)
    .bind(&record.trace_id)
    .bind(Value::Object(record.details))
    .execute(conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_key_acts_as_itself_not_as_its_user() {
        let mut p = crate::principal::Principal {
            tenant_id: crate::tenancy::TenantId(Uuid::nil()),
            tenant: None,
            subject: "alice".into(),
            session_id: None,
            token_id: "key-1".into(),
            permissions: vec![],
            roles: vec![],
            amr: vec!["api_key".into()],
            expires_at: 0,
            mfa_time: None,
            enrollment_only: false,
        };
        assert_eq!(Actor::of(&p).as_string(), "api_key:key-1");
        p.amr = vec!["pwd".into()];
        assert_eq!(Actor::of(&p).as_string(), "user:alice");
    }

    #[test]
    fn secret_detail_keys_are_refused() {
        let ok = AuditRecord::new("vault", Actor::Anonymous, "x.y", "r", Outcome::Success).detail("path", "a/b");
        assert!(ok.check().is_ok());
        let bad = AuditRecord::new("vault", Actor::Anonymous, "x.y", "r", Outcome::Success).detail("api_Token", "x");
        assert!(bad.check().is_err());
    }
}
