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
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::http_layer::HttpError;
use crate::input::{JsonBody, PathParams, QueryParams};
use crate::openapi::ErrorBody;
use crate::upstream::{Call, upstream};

fn client(state: &AppState) -> SecretsServiceClient<kit::client::Channel> {
    SecretsServiceClient::new(state.upstreams.vault.clone())
}

/// A secret's metadata (never its value).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SecretMetadata)]
pub struct Metadata {
    path: String,
    current_version: u32,
    labels: BTreeMap<String, String>,
    #[schema(format = DateTime)]
    rotate_after: Option<String>,
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    #[schema(format = DateTime)]
    created_at: Option<String>,
    #[schema(format = DateTime)]
    updated_at: Option<String>,
    #[schema(format = DateTime)]
    deleted_at: Option<String>,
}

impl From<&pb::SecretMetadata> for Metadata {
    fn from(m: &pb::SecretMetadata) -> Self {
        Self {
            path: m.path.clone(),
            current_version: m.current_version,
            labels: m.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            rotate_after: rfc3339(&m.rotate_after),
            expires_at: rfc3339(&m.expires_at),
            created_at: rfc3339(&m.create_time),
            updated_at: rfc3339(&m.update_time),
            deleted_at: rfc3339(&m.delete_time),
        }
    }
}

/// The metadata vault-svc answered (it always answers some).
fn metadata(m: Option<&pb::SecretMetadata>) -> Result<Json<Metadata>, HttpError> {
    m.map(|m| Json(m.into())).ok_or_else(|| ApiError::internal(&"vault-svc answered no metadata").into())
}

/// A new version and the secret's metadata.
#[derive(Debug, Serialize, ToSchema)]
pub struct Written {
    version: u32,
    secret: Option<Metadata>,
}

/// A page of secrets, in byte order of their paths.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretPage {
    secrets: Vec<Metadata>,
    /// Empty on the last page.
    next_page_token: String,
}

/// A version's value.
#[derive(Debug, Serialize, ToSchema)]
pub struct Revealed {
    path: String,
    version: u32,
    /// UTF-8 text, null when binary.
    value: Option<String>,
    #[schema(content_encoding = "base64")]
    value_base64: String,
}

/// A new version: exactly one of `value` and `value_base64`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PutSecret)]
pub struct PutBody {
    /// The secret as UTF-8 text; or `value_base64` for binary values.
    value: Option<String>,
    #[schema(content_encoding = "base64")]
    value_base64: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[schema(format = DateTime)]
    rotate_after: Option<String>,
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    /// Check-and-set; 0: must not exist.
    expected_version: Option<u32>,
    /// A repeat returns the original response.
    #[schema(format = "uuid")]
    request_id: Option<String>,
}

/// Why a value is read, and which version.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevealBody {
    #[schema(min_length = 1, max_length = 500)]
    reason: String,
    /// 0: the current version.
    #[serde(default)]
    version: u32,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Paths starting with this.
    #[serde(default)]
    prefix: String,
    /// next_page_token of the previous page.
    #[serde(default)]
    page_token: String,
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    page_size: u32,
}

/// Write a new version; requires vault.secrets.write.
#[utoipa::path(put, path = "/v1/secrets/{path}", operation_id = "putSecret", params(SecretPath), request_body = PutBody,
    responses(
        (status = 200, description = "written", body = Written),
        (status = 400, description = "bad path, value, labels or timestamps", body = ErrorBody),
        (status = 409, description = "VERSION_CONFLICT or REQUEST_ID_REUSED", body = ErrorBody),
    ))]
pub async fn put(
    State(state): State<AppState>,
    call: Call,
    PathParams(path): PathParams<String>,
    JsonBody(body): JsonBody<PutBody>,
) -> Result<Json<Written>, HttpError> {
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
    let resp = client(&state).put_secret(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(Written { version: resp.version, secret: resp.secret.as_ref().map(Metadata::from) }))
}

/// List secrets (metadata) by path prefix, in byte order of their paths; requires vault.secrets.read.
#[utoipa::path(get, path = "/v1/secrets", operation_id = "listSecrets", params(ListQuery), responses(
    (status = 200, description = "a page", body = SecretPage),
    (status = 400, description = "bad prefix, page size or token", body = ErrorBody),
))]
pub async fn list(
    State(state): State<AppState>,
    call: Call,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<SecretPage>, HttpError> {
    call.require(Permission::VaultSecretsRead)?;
    let msg = pb::ListSecretsRequest { prefix: q.prefix, page_size: q.page_size, page_token: q.page_token };
    let resp = client(&state).list_secrets(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(SecretPage {
        secrets: resp.secrets.iter().map(Metadata::from).collect(),
        next_page_token: resp.next_page_token,
    }))
}

/// A secret's metadata (never its value); requires vault.secrets.read.
#[utoipa::path(get, path = "/v1/secrets/{path}", operation_id = "getSecret", params(SecretPath), responses(
    (status = 200, description = "metadata", body = Metadata),
    (status = 404, description = "no such secret", body = ErrorBody),
))]
pub async fn get(
    State(state): State<AppState>,
    call: Call,
    PathParams(path): PathParams<String>,
) -> Result<Json<Metadata>, HttpError> {
    call.require(Permission::VaultSecretsRead)?;
    let resp =
        client(&state).get_secret(call.request(pb::GetSecretRequest { path })).await.map_err(upstream)?.into_inner();
    metadata(resp.secret.as_ref())
}

/// Soft-delete a secret; requires vault.secrets.write.
#[utoipa::path(delete, path = "/v1/secrets/{path}", operation_id = "deleteSecret", params(SecretPath), responses(
    (status = 200, description = "deleted", body = Metadata),
    (status = 404, description = "no such secret", body = ErrorBody),
))]
pub async fn delete(
    State(state): State<AppState>,
    call: Call,
    PathParams(path): PathParams<String>,
) -> Result<Json<Metadata>, HttpError> {
    call.require(Permission::VaultSecretsWrite)?;
    let msg = pb::DeleteSecretRequest { path, request_id: String::new() };
    let resp = client(&state).delete_secret(call.request(msg)).await.map_err(upstream)?.into_inner();
    metadata(resp.secret.as_ref())
}

/// The plaintext of a version; requires vault.secrets.reveal and a reason. Audited.
#[utoipa::path(post, path = "/v1/secrets/{path}:reveal", operation_id = "revealSecret", params(SecretPath),
    request_body = RevealBody,
    responses(
        (status = 200, description = "the value", body = Revealed),
        (status = 400, description = "missing reason", body = ErrorBody),
        (status = 404, description = "no such secret or version", body = ErrorBody),
        (status = 412, description = "SECRET_VERSION_DESTROYED or KEY_DESTROYED", body = ErrorBody),
    ))]
pub async fn post(
    State(state): State<AppState>,
    call: Call,
    PathParams(path): PathParams<String>,
    JsonBody(body): JsonBody<RevealBody>,
) -> Result<Json<Revealed>, HttpError> {
    let path = path
        .strip_suffix(":reveal")
        .ok_or_else(|| ApiError::not_found("ROUTE_NOT_FOUND", "POST is only defined for {path}:reveal"))?
        .to_owned();
    call.require(Permission::VaultSecretsReveal)?;
    let msg = pb::RevealSecretRequest { path, version: body.version, reason: body.reason };
    let resp = client(&state).reveal_secret(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(Revealed {
        path: resp.path,
        version: resp.version,
        value: String::from_utf8(resp.value.clone()).ok(),
        value_base64: B64.encode(&resp.value),
    }))
}

/// The path of a secret, for the document.
#[derive(IntoParams)]
#[into_params(names("path"), parameter_in = Path)]
#[allow(dead_code)] // read by `PathParams<String>`; this type only describes it
pub struct SecretPath(
    /// Segments of [A-Za-z0-9._-] joined by '/', ≤ 256 characters.
    String,
);
