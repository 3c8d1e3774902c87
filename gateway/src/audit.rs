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
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::http_layer::HttpError;
use crate::input::{PathParams, QueryParams};
use crate::upstream::{Call, upstream};

const PERMISSION: Permission = Permission::AuditEventsRead;

fn client(state: &AppState) -> AuditLogServiceClient<kit::client::Channel> {
    AuditLogServiceClient::new(state.upstreams.audit.clone())
}

fn entry_json(e: &pb::Entry) -> Value {
    let fields: Value = serde_json::from_slice(&e.canonical).unwrap_or(Value::Null);
    json!({
        "seq": e.seq,
        "fields": fields,
        "canonical": B64.encode(&e.canonical),
        "leaf_hash": B64.encode(&e.leaf_hash),
        "chain_hash": B64.encode(&e.chain_hash),
    })
}

fn checkpoint_json(c: &pb::Checkpoint) -> Value {
    json!({ "tree_size": c.tree_size, "root_hash": B64.encode(&c.root_hash), "signed_note": c.signed_note })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    from: u64,
    #[serde(default)]
    page_size: u32,
    /// RFC 3339; entries with `occurred_at` in `[start, end)`.
    start: Option<String>,
    end: Option<String>,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    request_id: String,
}

/// `GET /v1/audit/events?from=&page_size=&start=&end=&actor=&action=&resource=&outcome=&request_id=`
pub async fn list(
    State(state): State<AppState>,
    call: Call,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<Value>, HttpError> {
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
    Ok(Json(json!({
        "events": resp.entries.iter().map(entry_json).collect::<Vec<_>>(),
        "next_from": if resp.more { Value::from(resp.next_seq) } else { Value::Null },
    })))
}

/// `GET /v1/audit/events/{seq}`: the entry, its inclusion proof and the checkpoint it is proved in.
pub async fn get(
    State(state): State<AppState>,
    call: Call,
    PathParams(seq): PathParams<u64>,
) -> Result<Json<Value>, HttpError> {
    call.require(PERMISSION)?;
    let resp =
        client(&state).get_entry(call.request(pb::GetEntryRequest { seq })).await.map_err(upstream)?.into_inner();
    let checkpoint = resp.checkpoint.unwrap_or_default();
    let mut body = resp.entry.as_ref().map(entry_json).unwrap_or(Value::Null);
    body["inclusion_proof"] = json!({
        "leaf_index": seq,
        "tree_size": checkpoint.tree_size,
        "hashes": resp.inclusion_proof.iter().map(|h| B64.encode(h)).collect::<Vec<_>>(),
    });
    body["checkpoint"] = checkpoint_json(&checkpoint);
    Ok(Json(body))
}

/// `GET /v1/audit/checkpoint`
pub async fn checkpoint(State(state): State<AppState>, call: Call) -> Result<Json<Value>, HttpError> {
    call.require(PERMISSION)?;
    let cp = client(&state)
        .get_latest_checkpoint(call.request(pb::GetLatestCheckpointRequest {}))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(Json(checkpoint_json(&cp)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    from: u64,
    to: u64,
}

/// `GET /v1/audit/proofs/consistency?from=&to=`
pub async fn consistency(
    State(state): State<AppState>,
    call: Call,
    QueryParams(q): QueryParams<ConsistencyQuery>,
) -> Result<Json<Value>, HttpError> {
    call.require(PERMISSION)?;
    let msg = pb::GetConsistencyProofRequest { from_size: q.from, to_size: q.to };
    let p = client(&state).get_consistency_proof(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(
        json!({ "from_size": p.from_size, "tree_size": p.to_size, "hashes": p.proof.iter().map(|h| B64.encode(h)).collect::<Vec<_>>() }),
    ))
}

/// `GET /v1/audit/verifier-key`: the C2SP verifier key string.
pub async fn verifier_key(State(state): State<AppState>, call: Call) -> Result<Json<Value>, HttpError> {
    call.require(PERMISSION)?;
    let k = client(&state)
        .get_verifier_key(call.request(pb::GetVerifierKeyRequest {}))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(Json(json!({ "verifier_key": k.verifier_key })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
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

/// `GET /v1/audit/export?from=&to=`: entries `[from, to)` as JSON Lines, then the checkpoint line.
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    #[serde(default)]
    from: u64,
}

/// `GET /v1/audit/stream?from=`: Server-Sent Events, live. Each entry is an `entry` event whose id
/// is its seq (a reconnecting client's `Last-Event-ID` resumes after it); each new checkpoint is a
/// `checkpoint` event after the entries it covers.
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
        Ok(pb::StreamItem { item: Some(pb::stream_item::Item::Entry(e)) }) => {
            Ok(Event::default().event("entry").id(e.seq.to_string()).data(entry_json(&e).to_string()))
        }
        Ok(pb::StreamItem { item: Some(pb::stream_item::Item::Checkpoint(c)) }) => {
            Ok(Event::default().event("checkpoint").data(checkpoint_json(&c).to_string()))
        }
        Ok(pb::StreamItem { item: None }) => Ok(Event::default().comment("")),
        Err(s) => Err(std::io::Error::other(s.message().to_owned())),
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}
