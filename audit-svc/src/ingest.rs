//! `strongroom.audit.v1.AuditIngestService`: events from callers that hold no transaction of their
//! own (the gateway). They go into the tenant's `audit_outbox` — with the verified caller's name as
//! `service` and personal data as keyed pseudonyms — and are sequenced like every other record.
//! Idempotent by event id: an event already waiting or already logged is not inserted again.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use kit::access::RequestContext;
use kit::tenancy::{TenantStatus, db_error};
use kit::{ApiError, Db, ErrorCode, Tenant};
use proto::audit::v1 as pb;
use serde_json::{Map, Value};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::pseudonym::Pseudonymizer;

/// Most events in one `AppendBatch`.
pub const MAX_BATCH: usize = 1000;
const MAX_DETAILS: usize = 16 * 1024;

#[derive(Clone, Debug)]
pub struct AuditIngest {
    pub db: Db,
    pub pseudonyms: Pseudonymizer,
}

/// One validated event, ready for the outbox.
#[derive(Debug)]
struct Valid {
    event_id: Uuid,
    occurred_at: DateTime<Utc>,
    actor: String,
    action: String,
    resource: String,
    outcome: String,
    request_id: Option<String>,
    trace_id: Option<String>,
    details: Map<String, Value>,
    personal: HashMap<String, String>,
}

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

fn validate(i: usize, e: pb::Event) -> Result<Valid, ApiError> {
    let event_id = Uuid::parse_str(&e.event_id).map_err(|_| field(i, "event_id", "must be a UUID"))?;
    let occurred_at = match e.occurred_at {
        Some(t) => DateTime::from_timestamp(t.seconds, t.nanos.clamp(0, 999_999_999) as u32)
            .ok_or_else(|| field(i, "occurred_at", "out of range"))?,
        None => Utc::now(),
    };
    let actor_ok = e.actor == "anonymous"
        || ["user:", "api_key:", "service:"].iter().any(|p| e.actor.strip_prefix(p).is_some_and(|r| !r.is_empty()));
    if !actor_ok || e.actor.len() > 256 {
        return Err(field(i, "actor", "user:<id>, api_key:<id>, service:<name> or anonymous (≤ 256 bytes)"));
    }
    if !valid_name(&e.action, 128) {
        return Err(field(i, "action", "1–128 of [a-z0-9._-]"));
    }
    if e.resource.is_empty() || e.resource.len() > 1024 {
        return Err(field(i, "resource", "1–1024 bytes"));
    }
    if !matches!(e.outcome.as_str(), "success" | "failure" | "denied") {
        return Err(field(i, "outcome", "success, failure or denied"));
    }
    let optional = |s: String, name: &str| match s.len() {
        0 => Ok(None),
        1..=128 => Ok(Some(s)),
        _ => Err(field(i, name, "at most 128 bytes")),
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
    for (k, v) in &e.personal {
        if !valid_name(k, 64) || names_secret(k) || details.contains_key(k) {
            return Err(field(i, "personal", "keys: 1–64 of [a-z0-9._-], not naming a secret, not in details"));
        }
        if v.len() > 1024 {
            return Err(field(i, "personal", "values at most 1024 bytes"));
        }
    }
    Ok(Valid {
        event_id,
        occurred_at,
        actor: e.actor,
        action: e.action,
        resource: e.resource,
        outcome: e.outcome,
        request_id,
        trace_id,
        details,
        personal: e.personal,
    })
}

impl AuditIngest {
    async fn tenant(&self, ctx: &RequestContext) -> Result<Tenant, ApiError> {
        // Identity-authorized (gateway, operator); refused requests of a suspended tenant are
        // recorded too, a terminated tenant's log is closed.
        let tenant = self.db.tenant(&ctx.tenant_slug()?).await?;
        if tenant.status == TenantStatus::Terminated {
            return Err(ApiError::new(ErrorCode::FailedPrecondition, "TENANT_TERMINATED", "tenant is terminated"));
        }
        Ok(tenant)
    }

    /// Validates, pseudonymizes and inserts `events` in one transaction; returns how many were new.
    async fn append(&self, ctx: &RequestContext, events: Vec<pb::Event>) -> Result<u32, ApiError> {
        if events.is_empty() || events.len() > MAX_BATCH {
            return Err(ApiError::invalid_field("events", "1–1000 events"));
        }
        let tenant = self.tenant(ctx).await?;
        let mut valid = Vec::with_capacity(events.len());
        let mut seen = std::collections::HashSet::new();
        for (i, e) in events.into_iter().enumerate() {
            let v = validate(i, e)?;
            // A retried event inside one batch counts once.
            if seen.insert(v.event_id) {
                valid.push(v);
            }
        }
        let personal: Vec<HashMap<String, String>> =
            valid.iter_mut().map(|v| std::mem::take(&mut v.personal)).collect();
        let pseudonyms = self.pseudonyms.apply(&tenant, personal).await?;
        for (v, p) in valid.iter_mut().zip(pseudonyms) {
            for (name, value) in p {
                v.details.insert(name, Value::String(value));
            }
        }
        let n = valid.len();
        let mut ids = Vec::with_capacity(n);
        let mut at = Vec::with_capacity(n);
        let (mut actor, mut action, mut resource, mut outcome) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut rid, mut tid, mut details) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        for v in valid {
            ids.push(v.event_id);
            at.push(v.occurred_at);
            actor.push(v.actor);
            action.push(v.action);
            resource.push(v.resource);
            outcome.push(v.outcome);
            rid.push(v.request_id);
            tid.push(v.trace_id);
            details.push(Value::Object(v.details));
        }
        let mut tx = self.db.begin(&tenant).await?;
        sqlx::query("SELECT set_config('strongroom.append_service', $1, true)")
            .bind(ctx.caller.identity.name())
            .execute(tx.conn())
            .await
            .map_err(db_error)?;
        // In input order (the outbox position); none already logged.
        let accepted = sqlx::query(
            "INSERT INTO audit_outbox (event_id, occurred_at, service, actor, action, resource, outcome, request_id, trace_id, details) \
             SELECT u.event_id, u.occurred_at, '', u.actor, u.action, u.resource, u.outcome, u.request_id, u.trace_id, u.details \
             FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::jsonb[]) \
                  WITH ORDINALITY AS u(event_id, occurred_at, actor, action, resource, outcome, request_id, trace_id, details, n) \
             WHERE NOT EXISTS (SELECT 1 FROM audit_log l WHERE l.event_id = u.event_id) \
             ORDER BY u.n \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(&ids)
        .bind(&at)
        .bind(&actor)
        .bind(&action)
        .bind(&resource)
        .bind(&outcome)
        .bind(&rid)
        .bind(&tid)
        .bind(&details)
        .execute(tx.conn())
        .await
        .map_err(db_error)?
        .rows_affected();
        tx.commit().await?;
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
        assert!(validate(0, event()).is_ok());
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
            assert!(validate(0, e).is_err());
        }
    }
}
