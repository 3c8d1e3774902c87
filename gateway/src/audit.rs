//! `/v1/audit`: a tenant's audit trail for auditors (permission `audit.events.read`), served from
//! audit-svc with the caller's token.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use proto::audit::v1 as pb;
use proto::audit::v1::audit_log_service_client::AuditLogServiceClient;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::http_layer::RequestId;
use crate::upstream::{caller, request, respond, upstream};

const PERMISSION: &str = "audit.events.read";

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
}

/// `GET /v1/audit/events?from=&page_size=`
pub async fn list(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let c = caller(&state, &headers, PERMISSION).await?;
        let msg = pb::ListEntriesRequest { from_seq: q.from, page_size: q.page_size };
        let resp = client(&state).list_entries(request(&c, &id, msg)).await.map_err(upstream)?.into_inner();
        Ok(json!({
            "events": resp.entries.iter().map(entry_json).collect::<Vec<_>>(),
            "next_from": if resp.more { Value::from(resp.next_seq) } else { Value::Null },
        }))
    }
    .await;
    respond(result, id)
}

/// `GET /v1/audit/events/{seq}`: the entry, its inclusion proof and the checkpoint it is proved in.
pub async fn get(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    Path(seq): Path<u64>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let c = caller(&state, &headers, PERMISSION).await?;
        let resp = client(&state)
            .get_entry(request(&c, &id, pb::GetEntryRequest { seq }))
            .await
            .map_err(upstream)?
            .into_inner();
        let checkpoint = resp.checkpoint.unwrap_or_default();
        let mut body = resp.entry.as_ref().map(entry_json).unwrap_or(Value::Null);
        body["inclusion_proof"] = json!({
            "leaf_index": seq,
            "tree_size": checkpoint.tree_size,
            "hashes": resp.inclusion_proof.iter().map(|h| B64.encode(h)).collect::<Vec<_>>(),
        });
        body["checkpoint"] = checkpoint_json(&checkpoint);
        Ok(body)
    }
    .await;
    respond(result, id)
}

/// `GET /v1/audit/checkpoint`
pub async fn checkpoint(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let c = caller(&state, &headers, PERMISSION).await?;
        let cp = client(&state)
            .get_latest_checkpoint(request(&c, &id, pb::GetLatestCheckpointRequest {}))
            .await
            .map_err(upstream)?
            .into_inner();
        Ok(checkpoint_json(&cp))
    }
    .await;
    respond(result, id)
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
    Extension(id): Extension<RequestId>,
    Query(q): Query<ConsistencyQuery>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let c = caller(&state, &headers, PERMISSION).await?;
        let msg = pb::GetConsistencyProofRequest { from_size: q.from, to_size: q.to };
        let p = client(&state).get_consistency_proof(request(&c, &id, msg)).await.map_err(upstream)?.into_inner();
        Ok(json!({ "from_size": p.from_size, "tree_size": p.to_size, "hashes": p.proof.iter().map(|h| B64.encode(h)).collect::<Vec<_>>() }))
    }
    .await;
    respond(result, id)
}

/// `GET /v1/audit/verifier-key`: the C2SP verifier key string.
pub async fn verifier_key(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let c = caller(&state, &headers, PERMISSION).await?;
        let k = client(&state)
            .get_verifier_key(request(&c, &id, pb::GetVerifierKeyRequest {}))
            .await
            .map_err(upstream)?
            .into_inner();
        Ok(json!({ "verifier_key": k.verifier_key }))
    }
    .await;
    respond(result, id)
}
