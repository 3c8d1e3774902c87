//! `/v1/oauth/clients`: the tenant's OAuth 2 / OpenID Connect clients, registered by its admins
//! (`oauth.clients.read` / `oauth.clients.write`; auth-svc checks again and audits every change).
//! A confidential client's secret is in the answer that makes it and in no other.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use kit::authz::Permission;
use kit::time::rfc3339;
use proto::auth::v1 as pb;
use proto::auth::v1::o_auth_client_service_client::OAuthClientServiceClient;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Refusals;
use super::directory::PageQuery;
use crate::AppState;
use crate::http_layer::{HttpError, RequestId};
use crate::input::{JsonBody, PathParams, QueryParams};
use crate::upstream::{Call, upstream};

fn clients(state: &AppState) -> OAuthClientServiceClient<kit::client::Channel> {
    OAuthClientServiceClient::new(state.upstreams.auth.clone())
}

/// Who a client is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    /// A browser or native app: no secret; PKCE (S256) is required.
    Public,
    /// A server: authenticates with its secret (client_secret_basic or client_secret_post).
    Confidential,
}

impl From<ClientKind> for pb::ClientKind {
    fn from(k: ClientKind) -> Self {
        match k {
            ClientKind::Public => Self::Public,
            ClientKind::Confidential => Self::Confidential,
        }
    }
}

/// A client's settings (the body of a registration or a change).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    /// 1–100 characters, shown to users on the consent screen.
    name: String,
    /// 1–10 exact redirect URIs: https, http on 127.0.0.1 or [::1] (native apps, any port), or a
    /// private-use scheme with a dot (com.example.app:/cb); no fragment, user info or wildcard.
    /// None for a client without authorization_code.
    #[serde(default)]
    redirect_uris: Vec<String>,
    /// 0–10 URIs RP-initiated logout may return to, the same rules.
    #[serde(default)]
    post_logout_redirect_uris: Vec<String>,
    /// Of openid, profile, email, offline_access (at least one with authorization_code).
    #[serde(default)]
    allowed_scopes: Vec<String>,
    /// Of authorization_code, refresh_token (with authorization_code), client_credentials
    /// (confidential clients only).
    grant_types: Vec<String>,
    /// A first-party client's users are not asked for consent.
    #[serde(default)]
    first_party: bool,
    /// What the client's own tokens (client_credentials) may do, e.g. `users.read`: each held by
    /// the caller (a sensitive one with a recent second factor). Only with client_credentials.
    #[serde(default)]
    permissions: Vec<String>,
}

impl From<ClientSettings> for pb::ClientSettings {
    fn from(s: ClientSettings) -> Self {
        Self {
            name: s.name,
            redirect_uris: s.redirect_uris,
            post_logout_redirect_uris: s.post_logout_redirect_uris,
            allowed_scopes: s.allowed_scopes,
            grant_types: s.grant_types,
            first_party: s.first_party,
            permissions: s.permissions,
        }
    }
}

/// A registered client (never its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthClient {
    /// The client_id.
    id: String,
    kind: Option<ClientKind>,
    name: String,
    redirect_uris: Vec<String>,
    post_logout_redirect_uris: Vec<String>,
    allowed_scopes: Vec<String>,
    grant_types: Vec<String>,
    first_party: bool,
    /// What its client_credentials tokens may do.
    permissions: Vec<String>,
    created_by: String,
    #[schema(format = DateTime)]
    created_at: Option<String>,
    #[schema(format = DateTime)]
    updated_at: Option<String>,
    /// When the current secret was made (confidential clients).
    #[schema(format = DateTime)]
    secret_created_at: Option<String>,
}

impl From<pb::OAuthClient> for OAuthClient {
    fn from(c: pb::OAuthClient) -> Self {
        let s = c.settings.unwrap_or_default();
        Self {
            kind: match pb::ClientKind::try_from(c.kind) {
                Ok(pb::ClientKind::Public) => Some(ClientKind::Public),
                Ok(pb::ClientKind::Confidential) => Some(ClientKind::Confidential),
                _ => None,
            },
            id: c.id,
            name: s.name,
            redirect_uris: s.redirect_uris,
            post_logout_redirect_uris: s.post_logout_redirect_uris,
            allowed_scopes: s.allowed_scopes,
            grant_types: s.grant_types,
            first_party: s.first_party,
            permissions: s.permissions,
            created_by: c.created_by,
            created_at: rfc3339(&c.create_time),
            updated_at: rfc3339(&c.update_time),
            secret_created_at: rfc3339(&c.secret_time),
        }
    }
}

/// A page of clients, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthClientPage {
    clients: Vec<OAuthClient>,
    /// Empty on the last page.
    next_page_token: String,
}

/// A client with its secret, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthClientWithSecret {
    client: Option<OAuthClient>,
    /// The client_secret of a confidential client (43 base64url characters); null for a public one.
    client_secret: Option<String>,
}

impl From<pb::CreateClientResponse> for OAuthClientWithSecret {
    fn from(r: pb::CreateClientResponse) -> Self {
        Self { client: r.client.map(OAuthClient::from), client_secret: Some(r.client_secret).filter(|s| !s.is_empty()) }
    }
}

/// A new client: its kind and its settings (as [`ClientSettings`]).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewClientBody {
    kind: ClientKind,
    /// 1–100 characters, shown to users on the consent screen.
    name: String,
    /// 1–10 exact redirect URIs (see ClientSettings).
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    post_logout_redirect_uris: Vec<String>,
    #[serde(default)]
    allowed_scopes: Vec<String>,
    grant_types: Vec<String>,
    #[serde(default)]
    first_party: bool,
    /// What its client_credentials tokens may do (see ClientSettings).
    #[serde(default)]
    permissions: Vec<String>,
}

impl NewClientBody {
    fn into_pb(self) -> pb::CreateClientRequest {
        let kind: pb::ClientKind = self.kind.into();
        let settings = ClientSettings {
            name: self.name,
            redirect_uris: self.redirect_uris,
            post_logout_redirect_uris: self.post_logout_redirect_uris,
            allowed_scopes: self.allowed_scopes,
            grant_types: self.grant_types,
            first_party: self.first_party,
            permissions: self.permissions,
        };
        pb::CreateClientRequest { kind: kind.into(), settings: Some(settings.into()) }
    }
}

/// A deletion was done.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    /// Always true.
    deleted: bool,
}

/// The tenant's OAuth clients, newest first; requires oauth.clients.read
#[utoipa::path(get, path = "/v1/oauth/clients", operation_id = "listOAuthClients", params(PageQuery), responses(
    (status = 200, description = "a page of clients", body = OAuthClientPage), Refusals,
))]
pub async fn list_clients(
    State(state): State<AppState>,
    call: Call,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<OAuthClientPage>, HttpError> {
    call.require(Permission::OAuthClientsRead)?;
    let msg = pb::ListClientsRequest { page_size: q.page_size, page_token: q.page_token };
    let r = clients(&state).list_clients(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(OAuthClientPage {
        clients: r.clients.into_iter().map(OAuthClient::from).collect(),
        next_page_token: r.next_page_token,
    }))
}

/// Registers a client; a confidential client's secret is in this answer only; requires
/// oauth.clients.write
#[utoipa::path(post, path = "/v1/oauth/clients", operation_id = "createOAuthClient", request_body = NewClientBody,
    responses((status = 200, description = "the client (and its secret)", body = OAuthClientWithSecret), Refusals))]
pub async fn create_client(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody<NewClientBody>,
) -> Result<Json<OAuthClientWithSecret>, HttpError> {
    call.require(Permission::OAuthClientsWrite)?;
    let r = clients(&state).create_client(call.request(body.into_pb())).await.map_err(upstream)?.into_inner();
    Ok(Json(r.into()))
}

/// One client; requires oauth.clients.read
#[utoipa::path(get, path = "/v1/oauth/clients/{id}", operation_id = "getOAuthClient", params(("id" = String, Path)),
    responses((status = 200, description = "the client", body = OAuthClient), Refusals))]
pub async fn get_client(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
) -> Result<Json<OAuthClient>, HttpError> {
    call.require(Permission::OAuthClientsRead)?;
    let r = clients(&state).get_client(call.request(pb::GetClientRequest { id })).await.map_err(upstream)?;
    Ok(Json(r.into_inner().into()))
}

/// Replaces a client's settings (not its kind or secret); requires oauth.clients.write
#[utoipa::path(put, path = "/v1/oauth/clients/{id}", operation_id = "putOAuthClient", params(("id" = String, Path)),
    request_body = ClientSettings,
    responses((status = 200, description = "the client", body = OAuthClient), Refusals))]
pub async fn put_client(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<ClientSettings>,
) -> Result<Json<OAuthClient>, HttpError> {
    call.require(Permission::OAuthClientsWrite)?;
    let msg = pb::UpdateClientRequest { id, settings: Some(body.into()) };
    let r = clients(&state).update_client(call.request(msg)).await.map_err(upstream)?;
    Ok(Json(r.into_inner().into()))
}

/// Deletes a client: its tokens are refused from then on; requires oauth.clients.write
#[utoipa::path(delete, path = "/v1/oauth/clients/{id}", operation_id = "deleteOAuthClient",
    params(("id" = String, Path)), responses((status = 200, description = "deleted", body = Deleted), Refusals))]
pub async fn delete_client(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
) -> Result<Json<Deleted>, HttpError> {
    call.require(Permission::OAuthClientsWrite)?;
    clients(&state).delete_client(call.request(pb::DeleteClientRequest { id })).await.map_err(upstream)?;
    Ok(Json(Deleted { deleted: true }))
}

/// A new secret for a confidential client, in this answer only; the old one stops working at
/// once; requires oauth.clients.write
#[utoipa::path(post, path = "/v1/oauth/clients/{id}/secret", operation_id = "rotateOAuthClientSecret",
    params(("id" = String, Path)), responses(
        (status = 200, description = "the client and its new secret", body = OAuthClientWithSecret),
        (status = 412, description = "PUBLIC_CLIENT: a public client has no secret", body = crate::openapi::ErrorBody),
        Refusals,
    ))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
) -> Result<Json<OAuthClientWithSecret>, HttpError> {
    call.require(Permission::OAuthClientsWrite)?;
    let msg = pb::RotateClientSecretRequest { id };
    let r = clients(&state).rotate_client_secret(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(r.into()))
}

// ---- The token endpoint (RFC 6749, section 3.2) ----

/// The token endpoint's form (`application/x-www-form-urlencoded`; RFC 6749 4.1.3).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct TokenForm {
    /// `authorization_code`, `refresh_token` or `client_credentials`.
    grant_type: String,
    /// With `client_credentials`: some of the client's permissions, space-separated (default all).
    #[serde(default)]
    scope: String,
    /// With `refresh_token`: the refresh token (rotated: use the one answered next time).
    #[serde(default)]
    refresh_token: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    redirect_uri: String,
    /// The PKCE verifier (RFC 7636).
    #[serde(default)]
    code_verifier: String,
    /// A public client's id, or a confidential client's with `client_secret_post`.
    #[serde(default)]
    client_id: String,
    /// `client_secret_post` (or the `Authorization: Basic` header, `client_secret_basic`; not both).
    #[serde(default)]
    client_secret: String,
}

/// Tokens (RFC 6749 5.1); sent with `Cache-Control: no-store`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenAnswer {
    access_token: String,
    /// `Bearer`.
    token_type: String,
    expires_in: u32,
    /// With the `offline_access` scope, to a client that may refresh.
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    /// With the `openid` scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
    scope: String,
}

/// An OAuth error (RFC 6749 5.2).
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthErrorBody {
    /// `invalid_request`, `invalid_client`, `invalid_grant`, `unauthorized_client`,
    /// `unsupported_grant_type`, `invalid_scope` or `temporarily_unavailable`.
    error: String,
    error_description: String,
}

/// An OAuth error answer; `invalid_client` after Basic authentication asks for it again.
fn oauth_refusal(status: StatusCode, error: &str, description: &str, basic: bool) -> Response {
    let body = OAuthErrorBody { error: error.to_owned(), error_description: description.to_owned() };
    let mut resp = (status, no_store(), Json(body)).into_response();
    if basic && status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"strongroom\""));
    }
    resp
}

fn no_store() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::PRAGMA, HeaderValue::from_static("no-cache")),
    ]
}

/// The client's id and secret from `Authorization: Basic` (each form-urlencoded, RFC 6749 2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Option<Result<(String, String), ()>> {
    use base64::Engine;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decode = || -> Option<(String, String)> {
        let raw = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?).ok()?;
        let (id, secret) = raw.split_once(':')?;
        let part =
            |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8().ok().map(String::from);
        Some((part(id)?, part(secret)?))
    };
    Some(decode().ok_or(()))
}

/// A form every client-authenticated endpoint of a tenant's issuer takes.
trait ClientForm: serde::de::DeserializeOwned {
    /// The `client_id` and `client_secret` in the form (`client_secret_post`, or a public client).
    fn credentials(&self) -> (&str, &str);
}

impl ClientForm for TokenForm {
    fn credentials(&self) -> (&str, &str) {
        (&self.client_id, &self.client_secret)
    }
}

/// A client-authenticated request to a tenant's issuer, read.
struct ClientRequest<T> {
    tenant: kit::TenantSlug,
    form: T,
    client_id: String,
    client_secret: String,
    /// The client authenticated with `Authorization: Basic`.
    basic: bool,
}

/// Reads what every client-authenticated endpoint reads first: the tenant of the path, the form
/// (`application/x-www-form-urlencoded`), and the client's credentials from `Authorization: Basic`
/// or the form, never both (RFC 6749 2.3). A refusal is RFC 6749's answer.
fn client_request<T: ClientForm>(
    tenant: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<ClientRequest<T>, Box<Response>> {
    let bad =
        |description: &str| Box::new(oauth_refusal(StatusCode::BAD_REQUEST, "invalid_request", description, false));
    let Ok(tenant) = kit::TenantSlug::parse(tenant) else { return Err(bad("no such issuer")) };
    let form_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
    });
    if !form_type {
        return Err(bad("the body must be application/x-www-form-urlencoded"));
    }
    let Ok(form) = serde_urlencoded::from_bytes::<T>(body) else { return Err(bad("the form does not parse")) };
    let (form_id, form_secret) = form.credentials();
    let (client_id, client_secret, basic) = match basic_credentials(headers) {
        Some(Err(())) => {
            let why = "malformed Basic credentials";
            return Err(Box::new(oauth_refusal(StatusCode::UNAUTHORIZED, "invalid_client", why, true)));
        }
        Some(Ok(_)) if !form_secret.is_empty() => return Err(bad("use one client authentication method")),
        Some(Ok((id, secret))) if form_id.is_empty() || form_id == id => (id, secret, true),
        Some(Ok(_)) => return Err(bad("client_id differs from the authenticated client")),
        None => (form_id.to_owned(), form_secret.to_owned(), false),
    };
    Ok(ClientRequest { tenant, form, client_id, client_secret, basic })
}

/// auth-svc's refusal of a client-authenticated call as RFC 6749's answer.
fn oauth_failure(status: tonic::Status, basic: bool) -> Response {
    let e = upstream(status);
    let (code, error) = match e.reason.as_ref() {
        "INVALID_CLIENT" => (StatusCode::UNAUTHORIZED, "invalid_client"),
        "INVALID_GRANT" => (StatusCode::BAD_REQUEST, "invalid_grant"),
        "UNAUTHORIZED_CLIENT" => (StatusCode::BAD_REQUEST, "unauthorized_client"),
        "INVALID_SCOPE" => (StatusCode::BAD_REQUEST, "invalid_scope"),
        _ if e.code == kit::ErrorCode::InvalidArgument => (StatusCode::BAD_REQUEST, "invalid_request"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable"),
    };
    let description = if code == StatusCode::SERVICE_UNAVAILABLE { "try again" } else { e.message.as_str() };
    oauth_refusal(code, error, description, basic)
}

/// Exchanges an authorization code (with its PKCE verifier), or a refresh token the code flow gave
/// the client, for tokens: the client authenticates with `client_secret_basic` or
/// `client_secret_post`, a public client sends only its `client_id`. Errors are RFC 6749's
/// (`{"error": …}`), not the API's.
#[utoipa::path(post, path = "/t/{tenant}/oauth/token", operation_id = "oauthToken",
    params(("tenant" = String, Path, description = "the tenant's slug (its issuer is /t/<slug>)")),
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "tokens", body = TokenAnswer),
        (status = 400, description = "invalid_request, invalid_grant, unsupported_grant_type, …", body = OAuthErrorBody),
        (status = 401, description = "invalid_client", body = OAuthErrorBody),
        (status = 503, description = "temporarily_unavailable", body = OAuthErrorBody),
    ))]
pub async fn token(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    PathParams(tenant): PathParams<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = match client_request::<TokenForm>(&tenant, &headers, &body) {
        Ok(r) => r,
        Err(refusal) => return *refusal,
    };
    let ClientRequest { tenant, form, client_id, client_secret, basic } = request;
    let bad = |description: &str| oauth_refusal(StatusCode::BAD_REQUEST, "invalid_request", description, false);
    let mut flow = super::oauth_flow(&state);
    let called = match form.grant_type.as_str() {
        "authorization_code" => {
            let msg = pb::ExchangeCodeRequest {
                client_id,
                client_secret,
                code: form.code,
                redirect_uri: form.redirect_uri,
                code_verifier: form.code_verifier,
            };
            flow.exchange_code(super::login::anonymous(tenant.as_str(), &id, msg)).await
        }
        "refresh_token" => {
            let msg = pb::RefreshTokenRequest { client_id, client_secret, refresh_token: form.refresh_token };
            flow.refresh_token(super::login::anonymous(tenant.as_str(), &id, msg)).await
        }
        "client_credentials" => {
            let msg = pb::ClientCredentialsRequest { client_id, client_secret, scope: form.scope };
            flow.client_credentials(super::login::anonymous(tenant.as_str(), &id, msg)).await
        }
        "" => return bad("grant_type is required"),
        _ => {
            let why = "grant_type must be authorization_code, refresh_token or client_credentials";
            return oauth_refusal(StatusCode::BAD_REQUEST, "unsupported_grant_type", why, false);
        }
    };
    let answer = match called {
        Ok(r) => {
            let t = r.into_inner();
            let answer = TokenAnswer {
                access_token: t.access_token,
                token_type: t.token_type,
                expires_in: t.expires_in,
                refresh_token: Some(t.refresh_token).filter(|s| !s.is_empty()),
                id_token: Some(t.id_token).filter(|s| !s.is_empty()),
                scope: t.scope,
            };
            (StatusCode::OK, no_store(), Json(answer)).into_response()
        }
        Err(status) => oauth_failure(status, basic),
    };
    super::login::recorded_in(answer, Some(tenant.to_string()))
}

/// The form of revocation (RFC 7009) and introspection (RFC 7662).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ClientTokenForm {
    /// A refresh or access token the client was given.
    token: String,
    /// `access_token` or `refresh_token` (a hint: both are tried).
    #[serde(default)]
    token_type_hint: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    client_secret: String,
}

impl ClientForm for ClientTokenForm {
    fn credentials(&self) -> (&str, &str) {
        (&self.client_id, &self.client_secret)
    }
}

/// What a token is (RFC 7662 2.2); only `active` when it is not.
#[derive(Debug, Serialize, ToSchema)]
pub struct Introspection {
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    /// `access_token` or `refresh_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    token_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    /// The session.
    #[serde(skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
}

/// Calls `call` with a client-authenticated token form; RFC 6749 refusals.
async fn with_token_form<T>(
    tenant: &str,
    headers: &HeaderMap,
    body: &[u8],
    call: impl AsyncFnOnce(kit::TenantSlug, pb::ClientTokenRequest) -> Result<T, tonic::Status>,
) -> Result<(kit::TenantSlug, T), Box<Response>> {
    let ClientRequest { tenant, form, client_id, client_secret, basic } =
        client_request::<ClientTokenForm>(tenant, headers, body)?;
    if form.token.is_empty() {
        return Err(Box::new(oauth_refusal(StatusCode::BAD_REQUEST, "invalid_request", "token is required", false)));
    }
    let msg =
        pb::ClientTokenRequest { client_id, client_secret, token: form.token, token_type_hint: form.token_type_hint };
    match call(tenant.clone(), msg).await {
        Ok(answer) => Ok((tenant, answer)),
        Err(status) => Err(Box::new(oauth_failure(status, basic))),
    }
}

/// Revokes a refresh or access token the client was given: the session it belongs to ends (RFC
/// 7009). An unknown, invalid or another client's token is answered the same, and changes nothing.
#[utoipa::path(post, path = "/t/{tenant}/oauth/revoke", operation_id = "oauthRevoke",
    params(("tenant" = String, Path, description = "the tenant's slug")),
    request_body(content = ClientTokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "revoked, or nothing to revoke (no body)"),
        (status = 400, description = "invalid_request", body = OAuthErrorBody),
        (status = 401, description = "invalid_client", body = OAuthErrorBody),
        (status = 503, description = "temporarily_unavailable", body = OAuthErrorBody),
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    PathParams(tenant): PathParams<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = async |tenant: kit::TenantSlug, msg| {
        super::oauth_flow(&state).revoke_token(super::login::anonymous(tenant.as_str(), &id, msg)).await
    };
    match with_token_form(&tenant, &headers, &body, call).await {
        Ok((tenant, _)) => {
            super::login::recorded_in((StatusCode::OK, no_store()).into_response(), Some(tenant.to_string()))
        }
        Err(refusal) => *refusal,
    }
}

/// Whether a refresh or access token the client was given is active, and whose (RFC 7662); any
/// other token is `{"active": false}`.
#[utoipa::path(post, path = "/t/{tenant}/oauth/introspect", operation_id = "oauthIntrospect",
    params(("tenant" = String, Path, description = "the tenant's slug")),
    request_body(content = ClientTokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "what the token is", body = Introspection),
        (status = 400, description = "invalid_request", body = OAuthErrorBody),
        (status = 401, description = "invalid_client", body = OAuthErrorBody),
        (status = 503, description = "temporarily_unavailable", body = OAuthErrorBody),
    ))]
pub async fn introspect(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    PathParams(tenant): PathParams<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = async |tenant: kit::TenantSlug, msg| {
        super::oauth_flow(&state).introspect_token(super::login::anonymous(tenant.as_str(), &id, msg)).await
    };
    match with_token_form(&tenant, &headers, &body, call).await {
        Ok((_, answer)) => {
            let t = answer.into_inner();
            let some = |v: String| Some(v).filter(|_| t.active);
            let answer = Introspection {
                active: t.active,
                sub: some(t.sub.clone()),
                client_id: some(t.client_id.clone()),
                token_type: some(t.token_type.clone()),
                exp: Some(t.exp).filter(|_| t.active),
                sid: some(t.sid.clone()),
            };
            (StatusCode::OK, no_store(), Json(answer)).into_response()
        }
        Err(refusal) => *refusal,
    }
}
