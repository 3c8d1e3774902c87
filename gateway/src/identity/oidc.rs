//! A tenant's OpenID Connect provider metadata and UserInfo (docs/identity.md): the discovery
//! document at `/t/<slug>/.well-known/openid-configuration` (the issuer is `<issuer>/t/<slug>`)
//! says exactly what is implemented, and `/t/<slug>/oauth/userinfo` answers the claims of the
//! scopes the bearer's session was granted.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use kit::ApiError;
use proto::auth::v1 as pb;
use serde::Serialize;
use utoipa::ToSchema;

use super::oauth_flow;
use crate::AppState;
use crate::http_layer::{JsonError, RequestId};
use crate::input::PathParams;
use crate::openapi::ErrorBody;
use crate::upstream::upstream;

/// A tenant's OpenID Connect provider metadata (OpenID Connect Discovery 1.0, RFC 8414).
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderMetadata {
    /// `<issuer>/t/<slug>`: the `iss` of the tenant's ID tokens.
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    userinfo_endpoint: String,
    jwks_uri: String,
    revocation_endpoint: String,
    introspection_endpoint: String,
    end_session_endpoint: String,
    scopes_supported: Vec<&'static str>,
    response_types_supported: Vec<&'static str>,
    response_modes_supported: Vec<&'static str>,
    grant_types_supported: Vec<&'static str>,
    subject_types_supported: Vec<&'static str>,
    id_token_signing_alg_values_supported: Vec<&'static str>,
    token_endpoint_auth_methods_supported: Vec<&'static str>,
    revocation_endpoint_auth_methods_supported: Vec<&'static str>,
    introspection_endpoint_auth_methods_supported: Vec<&'static str>,
    code_challenge_methods_supported: Vec<&'static str>,
    claims_supported: Vec<&'static str>,
    prompt_values_supported: Vec<&'static str>,
    /// RFC 9207: every answer to the redirect URI carries `iss`.
    authorization_response_iss_parameter_supported: bool,
    claims_parameter_supported: bool,
    request_parameter_supported: bool,
    request_uri_parameter_supported: bool,
}

/// A tenant's OpenID Connect discovery document
///
/// The tenant is not looked up: the document of a tenant that does not exist describes endpoints
/// that answer `invalid_client` for it.
#[utoipa::path(get, path = "/t/{tenant}/.well-known/openid-configuration", operation_id = "tenantOpenidConfiguration",
    params(("tenant" = String, Path, description = "the tenant's slug")),
    responses(
        (status = 200, description = "the provider metadata", body = ProviderMetadata),
        (status = 400, description = "not a tenant slug", body = crate::openapi::ErrorBody),
    ))]
pub async fn discovery(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    PathParams(tenant): PathParams<String>,
) -> Response {
    let tenant = match super::login::check_tenant(&tenant) {
        Ok(t) => t,
        Err(e) => return JsonError(e, id.0).into_response(),
    };
    let base = format!("{}/t/{tenant}", state.public_url.trim_end_matches('/'));
    let root = state.public_url.trim_end_matches('/');
    let metadata = ProviderMetadata {
        issuer: format!("{}/t/{tenant}", state.issuer.trim_end_matches('/')),
        authorization_endpoint: format!("{base}/oauth/authorize"),
        token_endpoint: format!("{base}/oauth/token"),
        userinfo_endpoint: format!("{base}/oauth/userinfo"),
        jwks_uri: format!("{root}/.well-known/jwks.json"),
        revocation_endpoint: format!("{base}/oauth/revoke"),
        introspection_endpoint: format!("{base}/oauth/introspect"),
        end_session_endpoint: format!("{base}/oauth/logout"),
        scopes_supported: vec!["openid", "profile", "email", "offline_access"],
        response_types_supported: vec!["code"],
        response_modes_supported: vec!["query"],
        grant_types_supported: vec!["authorization_code", "refresh_token", "client_credentials"],
        subject_types_supported: vec!["public"],
        id_token_signing_alg_values_supported: vec!["EdDSA"],
        token_endpoint_auth_methods_supported: vec!["client_secret_basic", "client_secret_post", "none"],
        revocation_endpoint_auth_methods_supported: vec!["client_secret_basic", "client_secret_post", "none"],
        introspection_endpoint_auth_methods_supported: vec!["client_secret_basic", "client_secret_post", "none"],
        code_challenge_methods_supported: vec!["S256"],
        claims_supported: vec![
            "iss",
            "sub",
            "aud",
            "azp",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "amr",
            "sid",
            "email",
            "name",
        ],
        prompt_values_supported: vec!["none", "login", "consent"],
        authorization_response_iss_parameter_supported: true,
        claims_parameter_supported: false,
        request_parameter_supported: false,
        request_uri_parameter_supported: false,
    };
    let mut resp = Json(metadata).into_response();
    // Public and the same for everyone: clients may cache it for a while.
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    resp
}

/// The claims UserInfo answers (OpenID Connect Core 5.3.2).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserInfo {
    sub: String,
    /// With the `email` scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    /// With the `profile` scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

/// OpenID Connect UserInfo
///
/// The claims of the scopes the bearer's session was granted: only an access token the code flow
/// gave a client, with `openid`. Refusals carry RFC 6750's `WWW-Authenticate: Bearer
/// error="invalid_token"` (401) or `error="insufficient_scope"` (403) besides the JSON error.
#[utoipa::path(get, path = "/t/{tenant}/oauth/userinfo", operation_id = "oauthUserinfo",
    params(("tenant" = String, Path, description = "the tenant's slug")),
    responses(
        (status = 200, description = "the user's claims", body = UserInfo),
        (status = 400, description = "a malformed tenant", body = ErrorBody),
        (status = 401, description = "INVALID_TOKEN (not an OAuth client's session), or no, an expired or a revoked token", body = ErrorBody),
        (status = 403, description = "INSUFFICIENT_SCOPE (no openid), or TENANT_MISMATCH (another tenant's token or header)", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn userinfo(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    PathParams(tenant): PathParams<String>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let tenant = super::login::check_tenant(&tenant)?;
        // The path names the tenant; a tenant header, if sent, must name the same.
        if let Some(named) = headers.get("x-strongroom-tenant") {
            let named = super::login::check_tenant(named.to_str().unwrap_or_default())?;
            if named != tenant {
                return Err(ApiError::permission_denied("TENANT_MISMATCH", "the header names another tenant"));
            }
        }
        let token = crate::browser::request_token(&headers)
            .ok_or_else(|| ApiError::unauthenticated("TOKEN_REQUIRED", "an access token is required"))?;
        let msg = tonic::Request::new(pb::UserInfoRequest {});
        let msg = kit::client::with_context(msg, Some(&tenant), Some(&id.0), Some(token));
        Ok(oauth_flow(&state).user_info(msg).await.map_err(upstream)?.into_inner())
    }
    .await;
    match result {
        Ok(r) => {
            let some = |s: String| Some(s).filter(|s| !s.is_empty());
            Json(UserInfo { sub: r.sub, email: some(r.email), name: some(r.name) }).into_response()
        }
        Err(e) => {
            let challenge = match (e.code, e.reason.as_ref()) {
                (kit::ErrorCode::Unauthenticated, _) => Some("Bearer error=\"invalid_token\""),
                (kit::ErrorCode::PermissionDenied, "INSUFFICIENT_SCOPE") => Some("Bearer error=\"insufficient_scope\""),
                _ => None,
            };
            let mut resp = JsonError(e, id.0).into_response();
            if let Some(value) = challenge {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(value));
            }
            resp
        }
    }
}
