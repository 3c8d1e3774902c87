//! `/v1/secrets`: the vault's stored secrets for frontends. The gateway authenticates, checks the
//! route's permission, then calls vault-svc with the caller's token (vault-svc checks again).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kit::ApiError;
use kit::authz::Permission;
use kit::time::{parse_rfc3339, rfc3339};
use proto::vault::v1 as pb;
use proto::vault::v1::secrets_service_client::SecretsServiceClient;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::http_layer::HttpError;
use crate::input::{JsonBody, PathParams, QueryParams};
use crate::upstream::{Call, upstream};

pub fn metadata_json(m: &pb::SecretMetadata) -> Value {
    let labels: BTreeMap<&String, &String> = m.labels.iter().collect();
    json!({
        "path": m.path,
        "current_version": m.current_version,
        "labels": labels,
        "rotate_after": rfc3339(&m.rotate_after),
        "expires_at": rfc3339(&m.expires_at),
        "created_at": rfc3339(&m.create_time),
        "updated_at": rfc3339(&m.update_time),
        "deleted_at": rfc3339(&m.delete_time),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    /// The secret as UTF-8 text; or `value_base64` for binary values.
    value: Option<String>,
    value_base64: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    rotate_after: Option<String>,
    expires_at: Option<String>,
    expected_version: Option<u32>,
    request_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevealBody {
    reason: String,
    #[serde(default)]
    version: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    page_token: String,
    #[serde(default)]
    page_size: u32,
}

/// `PUT /v1/secrets/{path}`
pub async fn put(
    State(state): State<AppState>,
    call: Call,
    PathParams(path): PathParams<String>,
    JsonBody(body): JsonBody<PutBody>,
) -> Result<Json<Value>, HttpError> {
    call.require(Permission::VaultSecretsWrite)?;
    let value = match (body.value, body.value_base64) {
        (Some(v), None) => v.into_bytes(),
        (None, Some(b)) => B64.decode(b).map_err(|_| ApiError::invalid_field("value_base64", "not base64"))?,
        _ => return Err(ApiError::invalid_field("value", "give exactly one of value and value_base64").into()),
    };
    let msg = pb::PutSecretRequest {
        path,
        value,
        labels: body.labels.into_iter().collect(),
        rotate_after: parse_rfc3339("rotate_after", body.rotate_after.as_deref())?,
        expires_at: parse_rfc3339("expires_at", body.expires_at.as_deref())?,
        expected_version: body.expected_version,
        request_id: body.request_id.unwrap_or_default(),
    };
    let mut client = SecretsServiceClient::new(state.upstreams.vault.clone());
    let resp = client.put_secret(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(json!({ "version": resp.version, "secret": resp.secret.as_ref().map(metadata_json) })))
}

/// `GET /v1/secrets?prefix=&page_token=&page_size=`
pub async fn list(
    State(state): State<AppState>,
    call: Call,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<Value>, HttpError> {
    call.require(Permission::VaultSecretsRead)?;
    let msg = pb::ListSecretsRequest { prefix: q.prefix, page_size: q.page_size, page_token: q.page_token };
    let mut client = SecretsServiceClient::new(state.upstreams.vault.clone());
    let resp = client.list_secrets(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(json!({
        "secrets": resp.secrets.iter().map(metadata_json).collect::<Vec<_>>(),
        "next_page_token": resp.next_page_token,
    })))
}

/// `GET /v1/secrets/{path}`: metadata only.
pub async fn get(
    State(state): State<AppState>,
    call: Call,
    PathParams(path): PathParams<String>,
) -> Result<Json<Value>, HttpError> {
    call.require(Permission::VaultSecretsRead)?;
    let mut client = SecretsServiceClient::new(state.upstreams.vault.clone());
    let resp = client.get_secret(call.request(pb::GetSecretRequest { path })).await.map_err(upstream)?.into_inner();
    Ok(Json(resp.secret.as_ref().map(metadata_json).unwrap_or(Value::Null)))
}

/// `DELETE /v1/secrets/{path}`: soft delete.
pub async fn delete(
    State(state): State<AppState>,
    call: Call,
    PathParams(path): PathParams<String>,
) -> Result<Json<Value>, HttpError> {
    call.require(Permission::VaultSecretsWrite)?;
    let mut client = SecretsServiceClient::new(state.upstreams.vault.clone());
    let msg = pb::DeleteSecretRequest { path, request_id: String::new() };
    let resp = client.delete_secret(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(resp.secret.as_ref().map(metadata_json).unwrap_or(Value::Null)))
}

/// `POST /v1/secrets/{path}:reveal` with `{"reason": ..., "version": 0}`.
pub async fn post(
    State(state): State<AppState>,
    call: Call,
    PathParams(path): PathParams<String>,
    JsonBody(body): JsonBody<RevealBody>,
) -> Result<Json<Value>, HttpError> {
    let path = path
        .strip_suffix(":reveal")
        .ok_or_else(|| ApiError::not_found("ROUTE_NOT_FOUND", "POST is only defined for {path}:reveal"))?
        .to_owned();
    call.require(Permission::VaultSecretsReveal)?;
    let mut client = SecretsServiceClient::new(state.upstreams.vault.clone());
    let msg = pb::RevealSecretRequest { path, version: body.version, reason: body.reason };
    let resp = client.reveal_secret(call.request(msg)).await.map_err(upstream)?.into_inner();
    let text = String::from_utf8(resp.value.clone()).ok();
    Ok(Json(json!({
        "path": resp.path,
        "version": resp.version,
        "value": text,
        "value_base64": B64.encode(&resp.value),
    })))
}
