//! `/v1/audit`: a tenant's audit trail for auditors (permission `audit.events.read`), served from
//! audit-svc with the caller's token.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kit::authz::Permission;
use kit::time::parse_rfc3339;
use proto::audit::v1 as pb;
use proto::audit::v1::audit_log_service_client::AuditLogServiceClient;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, IntoResponses, ToSchema};

use crate::AppState;
use crate::http_layer::HttpError;
use crate::input::{PathParams, QueryParams};
use crate::openapi::{ErrorBody, TOO_MANY_STREAMS};
use crate::upstream::{Call, upstream};

const PERMISSION: Permission = Permission::AuditEventsRead;

fn client(state: &AppState) -> AuditLogServiceClient<kit::client::Channel> {
    AuditLogServiceClient::new(state.upstreams.audit.clone())
}

/// An entry of the audit log.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AuditEntry)]
pub struct Entry {
    seq: u64,
    /// The entry's fields (event_id, occurred_at, service, actor, action, resource, outcome,
    /// request_id, trace_id, details).
    #[schema(value_type = Object)]
    fields: Value,
    /// RFC 8785 bytes, base64; the Merkle leaf is SHA-256(0x00 ‖ canonical).
    #[schema(content_encoding = "base64")]
    canonical: String,
    #[schema(content_encoding = "base64")]
    leaf_hash: String,
    #[schema(content_encoding = "base64")]
    chain_hash: String,
}

impl From<&pb::Entry> for Entry {
    fn from(e: &pb::Entry) -> Self {
        Self {
            seq: e.seq,
            fields: serde_json::from_slice(&e.canonical).unwrap_or(Value::Null),
            canonical: B64.encode(&e.canonical),
            leaf_hash: B64.encode(&e.leaf_hash),
            chain_hash: B64.encode(&e.chain_hash),
        }
    }
}

/// A signed checkpoint of the log.
#[derive(Debug, Serialize, ToSchema)]
pub struct Checkpoint {
    tree_size: u64,
    #[schema(content_encoding = "base64")]
    root_hash: String,
    /// C2SP tlog-checkpoint signed note.
    signed_note: String,
}

impl From<&pb::Checkpoint> for Checkpoint {
    fn from(c: &pb::Checkpoint) -> Self {
        Self { tree_size: c.tree_size, root_hash: B64.encode(&c.root_hash), signed_note: c.signed_note.clone() }
    }
}

/// A page of entries.
#[derive(Debug, Serialize, ToSchema)]
pub struct EntryPage {
    events: Vec<Entry>,
    /// `from` of the next page; null on the last one.
    next_from: Option<u64>,
}

/// An inclusion proof of an entry in a checkpoint's tree.
#[derive(Debug, Serialize, ToSchema)]
pub struct Proof {
    leaf_index: u64,
    tree_size: u64,
    #[schema(content_encoding = "base64")]
    hashes: Vec<String>,
}

/// An entry with its inclusion proof and the checkpoint it is proved in.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProvedEntry {
    #[serde(flatten)]
    entry: Entry,
    inclusion_proof: Proof,
    checkpoint: Checkpoint,
}

/// A consistency proof between two tree sizes.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsistencyProof {
    from_size: u64,
    tree_size: u64,
    #[schema(content_encoding = "base64")]
    hashes: Vec<String>,
}

/// The C2SP verifier key of the tenant's log.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifierKey {
    verifier_key: String,
}

fn base64_all(hashes: &[Vec<u8>]) -> Vec<String> {
    hashes.iter().map(|h| B64.encode(h)).collect()
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The first sequence number.
    #[serde(default)]
    from: u64,
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    page_size: u32,
    /// RFC 3339: occurred_at ≥ start.
    #[param(format = DateTime)]
    start: Option<String>,
    /// RFC 3339: occurred_at < end.
    #[param(format = DateTime)]
    end: Option<String>,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    resource: String,
    /// success, failure or denied.
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    request_id: String,
}

/// Audit entries in sequence order; requires audit.events.read.
#[utoipa::path(get, path = "/v1/audit/events", operation_id = "listAuditEvents", params(ListQuery),
    responses((status = 200, description = "a page", body = EntryPage)))]
pub async fn list(
    State(state): State<AppState>,
    call: Call,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<EntryPage>, HttpError> {
    call.require(PERMISSION)?;
    let msg = pb::ListEntriesRequest {
        from_seq: q.from,
        page_size: q.page_size,
        page_token: String::new(),
        start_time: parse_rfc3339("start", q.start.as_deref())?,
        end_time: parse_rfc3339("end", q.end.as_deref())?,
        actor: q.actor,
        action: q.action,
        resource: q.resource,
        outcome: q.outcome,
        request_id: q.request_id,
    };
    let resp = client(&state).list_entries(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(EntryPage {
        events: resp.entries.iter().map(Entry::from).collect(),
        next_from: resp.more.then_some(resp.next_seq),
    }))
}

/// One entry with its inclusion proof and the checkpoint it is proved in; requires audit.events.read.
#[utoipa::path(get, path = "/v1/audit/events/{seq}", operation_id = "getAuditEvent",
    params(("seq" = u64, Path, description = "sequence number")),
    responses(
        (status = 200, description = "the entry, its inclusion proof and checkpoint", body = ProvedEntry),
        (status = 404, description = "no such entry in the latest checkpoint", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    call: Call,
    PathParams(seq): PathParams<u64>,
) -> Result<Json<ProvedEntry>, HttpError> {
    call.require(PERMISSION)?;
    let resp =
        client(&state).get_entry(call.request(pb::GetEntryRequest { seq })).await.map_err(upstream)?.into_inner();
    let checkpoint = resp.checkpoint.unwrap_or_default();
    let entry = resp.entry.as_ref().ok_or_else(|| kit::ApiError::internal(&"audit-svc answered no entry"))?;
    Ok(Json(ProvedEntry {
        entry: entry.into(),
        inclusion_proof: Proof {
            leaf_index: seq,
            tree_size: checkpoint.tree_size,
            hashes: base64_all(&resp.inclusion_proof),
        },
        checkpoint: (&checkpoint).into(),
    }))
}

/// The latest signed checkpoint; requires audit.events.read.
#[utoipa::path(get, path = "/v1/audit/checkpoint", operation_id = "getAuditCheckpoint", responses(
    (status = 200, description = "the checkpoint", body = Checkpoint),
    (status = 412, description = "no checkpoint yet", body = ErrorBody),
))]
pub async fn checkpoint(State(state): State<AppState>, call: Call) -> Result<Json<Checkpoint>, HttpError> {
    call.require(PERMISSION)?;
    let cp = client(&state)
        .get_latest_checkpoint(call.request(pb::GetLatestCheckpointRequest {}))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(Json((&cp).into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyQuery {
    /// The older tree size.
    from: u64,
    /// The newer tree size.
    to: u64,
}

/// The refusals of a read over a range of the log.
#[derive(IntoResponses)]
#[allow(dead_code)] // describes answers of audit-svc
pub enum RangeRefusals {
    #[response(status = 400, description = "bad range")]
    BadRange(ErrorBody),
    #[response(status = 412, description = "no checkpoint yet")]
    NoCheckpoint(ErrorBody),
}

/// A consistency proof between two tree sizes; requires audit.events.read.
#[utoipa::path(get, path = "/v1/audit/proofs/consistency", operation_id = "getAuditConsistencyProof", params(ConsistencyQuery),
    responses((status = 200, description = "the proof", body = ConsistencyProof), RangeRefusals))]
pub async fn consistency(
    State(state): State<AppState>,
    call: Call,
    QueryParams(q): QueryParams<ConsistencyQuery>,
) -> Result<Json<ConsistencyProof>, HttpError> {
    call.require(PERMISSION)?;
    let msg = pb::GetConsistencyProofRequest { from_size: q.from, to_size: q.to };
    let p = client(&state).get_consistency_proof(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(ConsistencyProof { from_size: p.from_size, tree_size: p.to_size, hashes: base64_all(&p.proof) }))
}

/// The C2SP verifier key of the tenant's checkpoints; requires audit.events.read.
#[utoipa::path(get, path = "/v1/audit/verifier-key", operation_id = "getAuditVerifierKey",
    responses((status = 200, description = "the verifier key", body = VerifierKey)))]
pub async fn verifier_key(State(state): State<AppState>, call: Call) -> Result<Json<VerifierKey>, HttpError> {
    call.require(PERMISSION)?;
    let k = client(&state)
        .get_verifier_key(call.request(pb::GetVerifierKeyRequest {}))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(Json(VerifierKey { verifier_key: k.verifier_key }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// The first sequence number.
    #[serde(default)]
    from: u64,
    /// Exclusive; absent = the latest checkpoint's size.
    to: Option<u64>,
}

/// One JSON Lines line of an export (the format `strongroom audit verify` reads).
fn export_line(item: pb::StreamItem) -> Option<String> {
    let mut line = match item.item? {
        pb::stream_item::Item::Entry(e) if e.pruned => {
            // Pruned beyond retention: the leaf (and, on the last one, the chain link) only.
            let mut l = json!({ "seq": e.seq, "pruned": true, "leaf_hash": B64.encode(&e.leaf_hash) });
            if !e.chain_hash.is_empty() {
                l["chain_hash"] = json!(B64.encode(&e.chain_hash));
            }
            l.to_string()
        }
        pb::stream_item::Item::Entry(e) => json!({
            "seq": e.seq,
            "canonical": B64.encode(&e.canonical),
            "leaf_hash": B64.encode(&e.leaf_hash),
            "chain_hash": B64.encode(&e.chain_hash),
        })
        .to_string(),
        pb::stream_item::Item::Checkpoint(c) => json!({ "checkpoint": c.signed_note }).to_string(),
    };
    line.push('\n');
    Some(line)
}

/// Entries `[from, to)` as JSON Lines, then the checkpoint line; requires audit.events.read.
///
/// The format `strongroom audit verify` reads: one entry per line, then the signed checkpoint.
/// Entries pruned beyond retention carry only their leaf hash.
#[utoipa::path(get, path = "/v1/audit/export", operation_id = "exportAuditLog", params(ExportQuery), responses(
    (status = 200, description = "JSON Lines", content_type = "application/jsonl", body = String),
    RangeRefusals,
    (status = 429, description = TOO_MANY_STREAMS, body = ErrorBody),
))]
pub async fn export(
    State(state): State<AppState>,
    call: Call,
    QueryParams(q): QueryParams<ExportQuery>,
) -> Result<Response, HttpError> {
    use futures::StreamExt;
    call.require(PERMISSION)?;
    let msg = pb::ExportEntriesRequest { from_seq: q.from, to_seq: q.to.unwrap_or(0) };
    if q.to == Some(0) {
        return Err(kit::ApiError::invalid_field("to", "must be greater than from").into());
    }
    let slot = state.streams.open(&format!("{}/{}", call.caller.tenant, call.caller.actor))?;
    let stream = client(&state).export_entries(call.request(msg)).await.map_err(upstream)?;
    // A failure mid-way, the caller's credential ceasing to be valid, or a client that stops
    // reading abort the body (the client sees a truncated transfer).
    let stream = crate::streams::guarded(stream.into_inner(), slot, state, call.caller.token);
    let body = stream.filter_map(|item| async move {
        match item {
            Ok(item) => export_line(item).map(|l| Ok::<_, std::io::Error>(axum::body::Bytes::from(l))),
            Err(s) => Some(Err(std::io::Error::other(s.message().to_owned()))),
        }
    });
    let mut resp = axum::body::Body::from_stream(body).into_response();
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/jsonl"));
    Ok(resp)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// The first sequence number (a `Last-Event-ID` header resumes after its entry instead).
    #[serde(default)]
    from: u64,
}

/// The log live, as Server-Sent Events; requires audit.events.read.
///
/// Each entry is an `entry` event (an `AuditEntry`) whose id is its seq (a reconnecting client's
/// `Last-Event-ID` resumes after it); each new checkpoint is a `checkpoint` event (a
/// `Checkpoint`) after the entries it covers.
#[utoipa::path(get, path = "/v1/audit/stream", operation_id = "streamAuditLog", params(StreamQuery), responses(
    (status = 200, description = "an event stream", content_type = "text/event-stream", body = String),
    (status = 429, description = TOO_MANY_STREAMS, body = ErrorBody),
))]
pub async fn stream(
    State(state): State<AppState>,
    call: Call,
    QueryParams(q): QueryParams<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures::StreamExt;
    call.require(PERMISSION)?;
    let from = match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .and_then(|seq| seq.checked_add(1))
            .ok_or_else(|| kit::ApiError::invalid_field("last-event-id", "a sequence number"))?,
        None => q.from,
    };
    let slot = state.streams.open(&format!("{}/{}", call.caller.tenant, call.caller.actor))?;
    let stream = client(&state)
        .stream_entries(call.request(pb::StreamEntriesRequest { from_seq: from }))
        .await
        .map_err(upstream)?;
    // Ends when the caller's credential does (or the client stops reading): the client reconnects
    // with a new one and `Last-Event-ID`.
    let stream = crate::streams::guarded(stream.into_inner(), slot, state, call.caller.token);
    let events = stream.map(|item| match item {
        Ok(pb::StreamItem { item: Some(pb::stream_item::Item::Entry(e)) }) => Event::default()
            .event("entry")
            .id(e.seq.to_string())
            .json_data(Entry::from(&e))
            .map_err(std::io::Error::other),
        Ok(pb::StreamItem { item: Some(pb::stream_item::Item::Checkpoint(c)) }) => {
            Event::default().event("checkpoint").json_data(Checkpoint::from(&c)).map_err(std::io::Error::other)
        }
        Ok(pb::StreamItem { item: None }) => Ok(Event::default().comment("")),
        Err(s) => Err(std::io::Error::other(s.message().to_owned())),
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}
