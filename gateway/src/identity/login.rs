//! Logins and sessions: password login, its second step, refresh, logout and step-up, the
//! cookie-session answers of browsers, and the public JWKS and discovery documents. Sign-in
//! requests carry no session, so they name their tenant themselves (body or token).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use kit::ApiError;
use proto::auth::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoResponses, ToSchema};

use super::{CodeBody, Refusals, authn};
use crate::AppState;
use crate::http_layer::{HttpError, JsonError, RequestId};
use crate::input::JsonBody;
use crate::openapi::ErrorBody;
use crate::upstream::{Call, authenticated, request, respond, upstream};

pub(super) fn client_info(state: &AppState, addr: &SocketAddr, headers: &HeaderMap) -> pb::ClientInfo {
    let ua = headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let ip = crate::ratelimit::client_ip(addr.ip(), headers, state.limits.trusted_proxies());
    pb::ClientInfo { ip: ip.to_string(), user_agent: ua.chars().take(512).collect() }
}

pub(super) fn anonymous<T>(tenant: &str, id: &RequestId, msg: T) -> tonic::Request<T> {
    kit::client::with_context(tonic::Request::new(msg), Some(tenant), Some(&id.0), None)
}

pub(super) fn check_tenant(raw: &str) -> Result<String, ApiError> {
    kit::TenantSlug::parse(raw)
        .map(|s| s.to_string())
        .map_err(|_| ApiError::invalid_field("tenant", "must match ^[a-z][a-z0-9_]{2,39}$"))
}

/// The kind of an access token.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub enum TokenType {
    Bearer,
}

/// A session's tokens.
#[derive(Debug, Serialize, ToSchema)]
pub struct Tokens {
    /// JWT (typ at+jwt, EdDSA), 5–15 minutes
    access_token: String,
    token_type: TokenType,
    expires_in: u32,
    /// opaque, single use
    refresh_token: String,
    refresh_expires_in: u32,
    session_id: String,
    /// the session may only enrol TOTP (privileged role without a second factor)
    mfa_enrollment_required: bool,
}

impl From<&pb::Tokens> for Tokens {
    fn from(t: &pb::Tokens) -> Self {
        Self {
            access_token: t.access_token.clone(),
            token_type: TokenType::Bearer,
            expires_in: t.expires_in,
            refresh_token: t.refresh_token.clone(),
            refresh_expires_in: t.refresh_expires_in,
            session_id: t.session_id.clone(),
            mfa_enrollment_required: t.mfa_enrollment_required,
        }
    }
}

/// The first step of a login passed: a second factor is required.
#[derive(Debug, Serialize, ToSchema)]
pub struct MfaChallenge {
    /// Always true.
    mfa_required: bool,
    /// Send it to `/v1/auth/mfa` with the code.
    mfa_token: String,
    expires_in: u32,
    methods: Vec<String>,
}

/// A browser session: its tokens are in `__Host-` cookies.
#[derive(Debug, Serialize, ToSchema)]
pub struct CookieSession {
    session_id: String,
    expires_in: u32,
    mfa_enrollment_required: bool,
    /// send as X-CSRF-Token on unsafe requests (cookie sessions)
    csrf_token: String,
}

/// The answer to a login or its second step: tokens, an MFA challenge, or (with `cookie: true`) a
/// cookie session.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum SessionAnswer {
    Tokens(Tokens),
    Challenge(MfaChallenge),
    Cookie(CookieSession),
}

/// The answer to a refresh: tokens, or (a browser's refresh cookie) a cookie session. Answered as
/// a [`SessionAnswer`]; this type only describes it.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // describes the answer; `SessionAnswer` is what is sent
pub enum Refreshed {
    Tokens(Tokens),
    Cookie(CookieSession),
}

/// A new access token after a fresh second factor.
#[derive(Debug, Serialize, ToSchema)]
pub struct SteppedUp {
    access_token: String,
    token_type: TokenType,
    expires_in: u32,
}

impl From<&pb::Tokens> for SteppedUp {
    fn from(t: &pb::Tokens) -> Self {
        Self { access_token: t.access_token.clone(), token_type: TokenType::Bearer, expires_in: t.expires_in }
    }
}

/// A public key that verifies access tokens (RFC 7517).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Jwk {
    /// `OKP` or `EC`.
    kty: String,
    /// `Ed25519` or `P-256`.
    crv: String,
    /// base64url public key (x coordinate for EC).
    x: String,
    /// base64url y coordinate (EC only).
    #[serde(skip_serializing_if = "Option::is_none")]
    y: Option<String>,
    kid: String,
    /// `EdDSA` or `ES256`.
    alg: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    usage: &'static str,
}

impl From<&pb::Jwk> for Jwk {
    fn from(k: &pb::Jwk) -> Self {
        Self {
            kty: k.kty.clone(),
            crv: k.crv.clone(),
            x: k.x.clone(),
            y: (!k.y.is_empty()).then(|| k.y.clone()),
            kid: k.kid.clone(),
            alg: k.alg.clone(),
            usage: "sig",
        }
    }
}

/// A JSON Web Key Set.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Jwks {
    keys: Vec<Jwk>,
}

/// What a resource server needs to verify access tokens.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenIdConfiguration {
    issuer: String,
    jwks_uri: String,
}

/// The refusals of a sign-in operation (login, its second step, refresh), which runs before any
/// session exists. An operation whose own refusal differs lists it after this type: utoipa keeps
/// the last answer given for a status.
#[derive(IntoResponses)]
#[allow(dead_code)] // describes answers of auth-svc
pub enum SignInRefusals {
    #[response(
        status = 401,
        description = "INVALID_CREDENTIALS, INVALID_MFA, INVALID_REFRESH_TOKEN, REFRESH_TOKEN_REUSED (the session is ended) or SESSION_ENDED"
    )]
    BadCredentials(ErrorBody),
    #[response(
        status = 403,
        description = "USER_SUSPENDED (after the right password; the message carries the reason) or CROSS_SITE_REQUEST"
    )]
    Suspended(ErrorBody),
    #[response(
        status = 429,
        description = "LOGIN_LOCKED (this account from this address), ACCOUNT_UNDER_ATTACK (this account from every address) or TOO_MANY_LOGINS, with Retry-After; or RATE_LIMITED"
    )]
    LoginLocked(ErrorBody),
}

/// A password login.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    /// tenant slug
    tenant: String,
    email: String,
    #[schema(write_only)]
    password: String,
    /// Answer a cookie session instead of tokens (browsers).
    #[serde(default)]
    cookie: bool,
}

/// The second step of a login.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaBody {
    /// optional: the MFA token names its tenant
    tenant: Option<String>,
    mfa_token: String,
    /// Six TOTP digits, or a backup code.
    code: String,
    /// Answer a cookie session instead of tokens (browsers).
    #[serde(default)]
    cookie: bool,
}

/// A refresh token to exchange.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    /// optional: the refresh token names its tenant
    tenant: Option<String>,
    /// Absent for browsers: the refresh cookie is used.
    refresh_token: Option<String>,
}

/// The refresh token whose session ends when the access token has expired.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogoutBody {
    refresh_token: Option<String>,
}

/// Password login. Answers tokens, an MFA challenge, or (with `cookie: true`) sets `__Host-` session cookies
#[utoipa::path(post, path = "/v1/auth/login", operation_id = "login", request_body = LoginBody, responses(
    (status = 200, description = "tokens, challenge or cookie session", body = SessionAnswer),
    SignInRefusals,
))]
pub async fn login(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<LoginBody>,
) -> Response {
    let tenant = check_tenant(&body.tenant);
    let named = tenant.clone().ok();
    let result = async {
        let tenant = tenant?;
        let msg = pb::LoginRequest {
            tenant: tenant.clone(),
            email: body.email,
            password: body.password,
            client: Some(client_info(&state, &addr, &headers)),
        };
        let r = authn(&state).login(anonymous(&tenant, &id, msg)).await.map_err(upstream)?.into_inner();
        Ok::<_, ApiError>(r)
    }
    .await;
    session_response(&state, result, body.cookie, id, named)
}

/// Names the tenant whose audit log the request belongs in, for the gateway's recorder: an
/// authentication request sends no `x-strongroom-tenant` header (security review item 11).
pub(super) fn recorded_in(mut resp: Response, tenant: Option<String>) -> Response {
    if let Some(tenant) = tenant {
        resp.extensions_mut().insert(crate::recorder::RecordIn(tenant));
    }
    resp
}

/// The answer to a sign-in, recorded in `tenant`'s audit log: tokens as JSON, or (browsers) in
/// `__Host-` cookies with a CSRF token; or the refusal.
pub(super) fn session_response(
    state: &AppState,
    result: Result<pb::LoginResponse, ApiError>,
    cookie: bool,
    id: RequestId,
    tenant: Option<String>,
) -> Response {
    let resp = match result.and_then(|r| session_answer(state, r, cookie)) {
        Ok((headers, answer)) => (headers, Json(answer)).into_response(),
        Err(e) => JsonError(e, id.0).into_response(),
    };
    recorded_in(resp, tenant)
}

/// The answer to a login, and the cookies it sets.
fn session_answer(
    state: &AppState,
    r: pb::LoginResponse,
    cookie: bool,
) -> Result<(HeaderMap, SessionAnswer), ApiError> {
    let mut headers = HeaderMap::new();
    let answer = match r.result {
        Some(pb::login_response::Result::Tokens(t)) if cookie => {
            let csrf_token = state.browser.set_session_cookies(
                &mut headers,
                &t.access_token,
                &t.refresh_token,
                &t.session_id,
                t.expires_in.into(),
                t.refresh_expires_in.into(),
            )?;
            SessionAnswer::Cookie(CookieSession {
                session_id: t.session_id,
                expires_in: t.expires_in,
                mfa_enrollment_required: t.mfa_enrollment_required,
                csrf_token,
            })
        }
        Some(pb::login_response::Result::Tokens(t)) => SessionAnswer::Tokens((&t).into()),
        Some(pb::login_response::Result::Mfa(m)) => SessionAnswer::Challenge(MfaChallenge {
            mfa_required: true,
            mfa_token: m.mfa_token,
            expires_in: m.expires_in,
            methods: m.methods,
        }),
        None => return Err(ApiError::internal(&"empty login response")),
    };
    Ok((headers, answer))
}

/// Second step of a login: a TOTP code or a backup code
#[utoipa::path(post, path = "/v1/auth/mfa", operation_id = "verifyMfa", request_body = MfaBody, responses(
    (status = 200, description = "tokens or cookie session", body = SessionAnswer),
    SignInRefusals,
    (status = 429, description = "MFA_LOCKED: too many wrong second-factor codes on this account, with Retry-After; or RATE_LIMITED", body = ErrorBody),
))]
pub async fn mfa(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<MfaBody>,
) -> Response {
    let tenant = tenant_or_token(body.tenant.as_deref(), kit::TenantSlug::of_mfa_token(&body.mfa_token));
    let named = tenant.clone().ok();
    let result = async {
        let tenant = tenant?;
        let msg = pb::VerifyMfaRequest {
            tenant: tenant.clone(),
            mfa_token: body.mfa_token,
            code: body.code,
            client: Some(client_info(&state, &addr, &headers)),
        };
        Ok::<_, ApiError>(authn(&state).verify_mfa(anonymous(&tenant, &id, msg)).await.map_err(upstream)?.into_inner())
    }
    .await;
    session_response(&state, result, body.cookie, id, named)
}

/// The tenant a body names, else the one its token names (auth-svc refuses the two differing).
pub(super) fn tenant_or_token(
    given: Option<&str>,
    named_by_token: Option<kit::TenantSlug>,
) -> Result<String, ApiError> {
    match (given, named_by_token) {
        (Some(t), _) => check_tenant(t),
        (None, Some(slug)) => Ok(slug.to_string()),
        (None, None) => Err(ApiError::invalid_field("tenant", "required: the token names no tenant")),
    }
}

/// Single-use refresh token for new tokens; a retry within the grace window gets the same
/// successor, a later reuse ends the session. Browsers omit refresh_token (cookie).
#[utoipa::path(post, path = "/v1/auth/refresh", operation_id = "refresh", request_body = RefreshBody, responses(
    (status = 200, description = "tokens", body = Refreshed),
    SignInRefusals,
    (status = 401, description = "INVALID_REFRESH_TOKEN, REFRESH_TOKEN_REUSED, SESSION_ENDED, or MFA_REQUIRED (the user became privileged without a second factor: the session is ended, log in again)", body = ErrorBody),
))]
pub async fn refresh(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<RefreshBody>,
) -> Response {
    let from_cookie = body.refresh_token.is_none();
    let presented = body.refresh_token.as_deref().or_else(|| crate::browser::refresh_token(&headers));
    let named =
        presented.and_then(|t| tenant_or_token(body.tenant.as_deref(), kit::TenantSlug::of_refresh_token(t)).ok());
    let result = async {
        let token = match body.refresh_token {
            Some(t) => t,
            None => crate::browser::refresh_token(&headers)
                .map(str::to_owned)
                .ok_or_else(|| ApiError::invalid_field("refresh_token", "required (or the refresh cookie)"))?,
        };
        let tenant = tenant_or_token(body.tenant.as_deref(), kit::TenantSlug::of_refresh_token(&token))?;
        let msg = pb::RefreshRequest {
            tenant: tenant.clone(),
            refresh_token: token,
            client: Some(client_info(&state, &addr, &headers)),
        };
        Ok::<_, ApiError>(authn(&state).refresh(anonymous(&tenant, &id, msg)).await.map_err(upstream)?.into_inner())
    }
    .await;
    let result = result.map(|t| pb::LoginResponse { result: Some(pb::login_response::Result::Tokens(t)) });
    session_response(&state, result, from_cookie, id, named)
}

/// Ends the session (revoked at once everywhere) and clears cookies
///
/// Ends the session of the access token, or, when that has expired (a browser idle past its
/// access cookie), the session the refresh token (body or cookie) belongs to. The answer clears
/// the session cookies whatever happened: a shared device must not keep a refresh token because
/// the logout failed.
#[utoipa::path(post, path = "/v1/auth/logout", operation_id = "logout", request_body(content = Option<LogoutBody>),
    responses(
        (status = 204, description = "ended"),
        (status = 401, description = "not authenticated", body = ErrorBody),
        (status = 412, description = "NO_SESSION (an API key has no session to end)", body = ErrorBody),
    ))]
pub async fn logout(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    extensions: http::Extensions,
    body: Option<JsonBody<LogoutBody>>,
) -> Response {
    let body = body.map(|JsonBody(b)| b).unwrap_or_default();
    let refresh = body.refresh_token.or_else(|| crate::browser::refresh_token(&headers).map(str::to_owned));
    let named = refresh.as_deref().and_then(kit::TenantSlug::of_refresh_token).map(|s| s.to_string());
    let result = async {
        // No access token (the cookie expired), or one that no longer verifies: the refresh token
        // alone ends its session.
        let caller = match crate::browser::request_token(&headers) {
            Some(_) => Some(authenticated(&state, &headers, &extensions).await),
            None => None,
        };
        match (caller, refresh) {
            (Some(Ok(c)), refresh) => {
                let msg = pb::LogoutRequest { refresh_token: refresh.unwrap_or_default() };
                authn(&state).logout(request(&c, &id, msg)).await.map_err(upstream)?;
            }
            (None, Some(refresh)) => by_refresh_token(&state, &id, refresh).await?,
            (Some(Err(e)), Some(refresh)) if e.code == kit::ErrorCode::Unauthenticated => {
                by_refresh_token(&state, &id, refresh).await?;
            }
            (Some(Err(e)), _) => return Err(e),
            (None, None) => return Err(ApiError::unauthenticated("TOKEN_REQUIRED", "no session to end")),
        }
        Ok::<_, ApiError>(())
    }
    .await;
    let mut cleared = HeaderMap::new();
    crate::browser::clear_session_cookies(&mut cleared);
    let resp = match result {
        Ok(()) => (StatusCode::NO_CONTENT, cleared).into_response(),
        Err(e) => (cleared, JsonError(e, id.0)).into_response(),
    };
    recorded_in(resp, named)
}

/// Ends the session `refresh` (a refresh token, which names its tenant) belongs to.
async fn by_refresh_token(state: &AppState, id: &RequestId, refresh: String) -> Result<(), ApiError> {
    let tenant = tenant_or_token(None, kit::TenantSlug::of_refresh_token(&refresh))?;
    let msg = pb::LogoutRequest { refresh_token: refresh };
    authn(state).logout(anonymous(&tenant, id, msg)).await.map_err(upstream)?;
    Ok(())
}

/// A fresh second factor for the current session (sensitive operations)
#[utoipa::path(post, path = "/v1/auth/step-up", operation_id = "stepUp", request_body = CodeBody, responses(
    (status = 200, description = "a new access token", body = SteppedUp),
    (status = 412, description = "NO_SESSION (an API key has no session to step up)", body = ErrorBody),
    (status = 429, description = "MFA_LOCKED: too many wrong second-factor codes on this account (login challenges and step-ups count together), with Retry-After", body = ErrorBody),
    Refusals,
))]
pub async fn step_up(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody<CodeBody>,
) -> Result<Json<SteppedUp>, HttpError> {
    let t = authn(&state).step_up(call.request(pb::StepUpRequest { code: body.code })).await.map_err(upstream)?;
    Ok(Json(SteppedUp::from(t.get_ref())))
}

/// How long the gateway serves a fetched JWKS document before asking auth-svc again. Far below
/// the time a new signing key is published before it signs (`signing_key_publish_ahead_secs`,
/// 360 s), less the clients' own `max-age`.
const JWKS_FRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// Public keys that verify access tokens (RFC 7517)
///
/// Public and unauthenticated, so it is answered from a document fetched at most every
/// [`JWKS_FRESH`], by one request at a time (the others wait for it): a flood of hits costs
/// auth-svc one `GetJwks` per interval, not one each. Failures are not kept.
#[utoipa::path(get, path = "/.well-known/jwks.json", operation_id = "jwks",
    responses((status = 200, description = "JWKS", body = Jwks)))]
pub async fn jwks(State(state): State<AppState>, Extension(id): Extension<RequestId>) -> Response {
    let result = async {
        let mut cached = state.jwks.lock().await;
        if let Some((at, doc)) = cached.as_ref()
            && at.elapsed() < JWKS_FRESH
        {
            return Ok(doc.clone());
        }
        let mut client = proto::auth::v1::keys_service_client::KeysServiceClient::new(state.upstreams.auth.clone());
        let keys = client.get_jwks(pb::GetJwksRequest {}).await.map_err(upstream)?.into_inner().keys;
        let doc = Jwks { keys: keys.iter().map(Jwk::from).collect() };
        *cached = Some((std::time::Instant::now(), doc.clone()));
        Ok(doc)
    }
    .await;
    let mut resp = respond(result, id);
    resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("public, max-age=60"));
    resp
}

/// Issuer and JWKS location
///
/// What a resource server needs to verify access tokens, and nothing this gateway does not do (it
/// is not an OAuth token endpoint nor an OpenID provider: no grant types, no ID tokens).
#[utoipa::path(get, path = "/.well-known/openid-configuration", operation_id = "openidConfiguration",
    responses((status = 200, description = "discovery document", body = OpenIdConfiguration)))]
pub async fn openid_configuration(State(state): State<AppState>) -> Json<OpenIdConfiguration> {
    let base = state.public_url.trim_end_matches('/').to_owned();
    Json(OpenIdConfiguration { issuer: state.issuer.clone(), jwks_uri: format!("{base}/.well-known/jwks.json") })
}
