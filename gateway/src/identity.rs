//! Identity routes: logins and sessions (`/v1/auth/*`), the caller's own account (`/v1/me*`),
//! and administration of users, roles, groups and API keys. The gateway authenticates and checks
//! each route's permission; auth-svc checks again (and decides the "own or with permission"
//! cases). Every answer is a typed DTO, so the OpenAPI document (`#[utoipa::path]` on each
//! handler) describes what is sent.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use kit::ApiError;
use kit::authz::Permission;
use kit::time::rfc3339;
use proto::auth::v1 as pb;
use proto::auth::v1::access_service_client::AccessServiceClient;
use proto::auth::v1::authentication_service_client::AuthenticationServiceClient;
use proto::auth::v1::session_service_client::SessionServiceClient;
use proto::auth::v1::user_service_client::UserServiceClient;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, IntoResponses, ToSchema};

use crate::AppState;
use crate::http_layer::{HttpError, JsonError, RequestId};
use crate::input::{JsonBody, PathParams, QueryParams};
use crate::openapi::ErrorBody;
use crate::upstream::{Call, authenticated, request, respond, upstream};

fn client_info(state: &AppState, addr: &SocketAddr, headers: &HeaderMap) -> pb::ClientInfo {
    let ua = headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let ip = crate::ratelimit::client_ip(addr.ip(), headers, state.limits.trusted_proxies());
    pb::ClientInfo { ip: ip.to_string(), user_agent: ua.chars().take(512).collect() }
}

fn anonymous<T>(tenant: &str, id: &RequestId, msg: T) -> tonic::Request<T> {
    kit::client::with_context(tonic::Request::new(msg), Some(tenant), Some(&id.0), None)
}

fn check_tenant(raw: &str) -> Result<String, ApiError> {
    kit::TenantSlug::parse(raw)
        .map(|s| s.to_string())
        .map_err(|_| ApiError::invalid_field("tenant", "must match ^[a-z][a-z0-9_]{2,39}$"))
}

fn authn(state: &AppState) -> AuthenticationServiceClient<kit::client::Channel> {
    AuthenticationServiceClient::new(state.upstreams.auth.clone())
}
fn users(state: &AppState) -> UserServiceClient<kit::client::Channel> {
    UserServiceClient::new(state.upstreams.auth.clone())
}
fn access(state: &AppState) -> AccessServiceClient<kit::client::Channel> {
    AccessServiceClient::new(state.upstreams.auth.clone())
}
fn sessions(state: &AppState) -> SessionServiceClient<kit::client::Channel> {
    SessionServiceClient::new(state.upstreams.auth.clone())
}

// ---- Answers ----

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

/// Where a user's account stands.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    Active,
    Suspended,
    Deleted,
    Unknown,
}

impl From<i32> for UserStatus {
    fn from(s: i32) -> Self {
        match s {
            1 => Self::Active,
            2 => Self::Suspended,
            3 => Self::Deleted,
            _ => Self::Unknown,
        }
    }
}

/// A user of the tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct User {
    id: String,
    email: String,
    display_name: String,
    status: UserStatus,
    suspension_reason: Option<String>,
    mfa_enabled: bool,
    roles: Vec<String>,
    #[schema(format = DateTime)]
    created_at: Option<String>,
}

impl From<&pb::User> for User {
    fn from(u: &pb::User) -> Self {
        Self {
            id: u.id.clone(),
            email: u.email.clone(),
            display_name: u.display_name.clone(),
            status: u.status.into(),
            suspension_reason: (!u.suspension_reason.is_empty()).then(|| u.suspension_reason.clone()),
            mfa_enabled: u.mfa_enabled,
            roles: u.roles.clone(),
            created_at: rfc3339(&u.create_time),
        }
    }
}

/// The user auth-svc answered.
fn user(u: tonic::Response<pb::User>) -> Json<User> {
    Json(u.get_ref().into())
}

/// The caller's account, permissions and session.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    user: Option<User>,
    permissions: Vec<String>,
    session_id: String,
    amr: Vec<String>,
    tenant: String,
}

/// A TOTP enrolment, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotpEnrollment {
    otpauth_uri: String,
    /// Base32, for manual entry.
    secret: String,
}

/// The backup codes of a confirmed TOTP, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackupCodes {
    backup_codes: Vec<String>,
    /// Always true: refresh for a full session.
    refresh_required: bool,
}

/// A session of the caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct Session {
    id: String,
    ip: String,
    user_agent: String,
    current: bool,
    #[schema(format = DateTime)]
    created_at: Option<String>,
    #[schema(format = DateTime)]
    last_seen_at: Option<String>,
    #[schema(format = DateTime)]
    revoked_at: Option<String>,
}

impl From<&pb::Session> for Session {
    fn from(s: &pb::Session) -> Self {
        Self {
            id: s.id.clone(),
            ip: s.ip.clone(),
            user_agent: s.user_agent.clone(),
            current: s.current,
            created_at: rfc3339(&s.create_time),
            last_seen_at: rfc3339(&s.last_seen_time),
            revoked_at: rfc3339(&s.revoke_time),
        }
    }
}

/// The caller's sessions.
#[derive(Debug, Serialize, ToSchema)]
pub struct Sessions {
    sessions: Vec<Session>,
}

/// A revocation was saved.
#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    /// Always true.
    revoked: bool,
}

/// A deletion was done.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    /// Always true.
    deleted: bool,
}

/// A role was granted (true) or revoked (false).
#[derive(Debug, Serialize, ToSchema)]
pub struct Granted {
    granted: bool,
}

/// A page of users.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage {
    users: Vec<User>,
    /// Empty on the last page.
    next_page_token: String,
}

/// A role and its permissions.
#[derive(Debug, Serialize, ToSchema)]
pub struct Role {
    id: String,
    name: String,
    description: String,
    permissions: Vec<String>,
    builtin: bool,
}

impl From<&pb::Role> for Role {
    fn from(r: &pb::Role) -> Self {
        Self {
            id: r.id.clone(),
            name: r.name.clone(),
            description: r.description.clone(),
            permissions: r.permissions.clone(),
            builtin: r.builtin,
        }
    }
}

/// A page of roles.
#[derive(Debug, Serialize, ToSchema)]
pub struct RolePage {
    roles: Vec<Role>,
    /// Empty on the last page.
    next_page_token: String,
}

/// A group with its roles and member count.
#[derive(Debug, Serialize, ToSchema)]
pub struct Group {
    id: String,
    name: String,
    description: String,
    #[schema(minimum = 0)]
    member_count: i64,
    roles: Vec<String>,
}

impl From<&pb::Group> for Group {
    fn from(g: &pb::Group) -> Self {
        Self {
            id: g.id.clone(),
            name: g.name.clone(),
            description: g.description.clone(),
            member_count: g.member_count,
            roles: g.roles.clone(),
        }
    }
}

/// The group auth-svc answered.
fn group(g: tonic::Response<pb::Group>) -> Json<Group> {
    Json(g.get_ref().into())
}

/// A page of groups.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupPage {
    groups: Vec<Group>,
    /// Empty on the last page.
    next_page_token: String,
}

/// A page of a group's member ids.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberPage {
    member_ids: Vec<String>,
    /// Empty on the last page.
    next_page_token: String,
}

/// An API key (never the key itself).
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKey {
    id: String,
    name: String,
    /// The key's first characters.
    display: String,
    scopes: Vec<String>,
    #[schema(format = DateTime)]
    created_at: Option<String>,
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    #[schema(format = DateTime)]
    last_used_at: Option<String>,
    #[schema(format = DateTime)]
    revoked_at: Option<String>,
}

impl From<&pb::ApiKey> for ApiKey {
    fn from(k: &pb::ApiKey) -> Self {
        Self {
            id: k.id.clone(),
            name: k.name.clone(),
            display: k.display.clone(),
            scopes: k.scopes.clone(),
            created_at: rfc3339(&k.create_time),
            expires_at: rfc3339(&k.expire_time),
            last_used_at: rfc3339(&k.last_used_time),
            revoked_at: rfc3339(&k.revoke_time),
        }
    }
}

/// A page of API keys, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyPage {
    api_keys: Vec<ApiKey>,
    /// Empty on the last page.
    next_page_token: String,
}

/// A new API key with the key itself, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewApiKey {
    // Always some: auth-svc answers the key it created.
    #[serde(flatten)]
    #[schema(value_type = ApiKey)]
    key: Option<ApiKey>,
    /// `srk_` + 32 base62 characters + a 6-character CRC32 checksum.
    api_key: String,
}

/// The tenant's identity policy (the body of a change, and the answer).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Failed logins per account (and account+IP) within the window before a lockout.
    #[schema(minimum = 1, maximum = 100)]
    lockout_threshold: u32,
    #[schema(minimum = 60, maximum = 86400)]
    lockout_window_secs: u32,
    #[schema(minimum = 300, maximum = 900)]
    access_token_ttl_secs: u32,
    #[schema(minimum = 3600, maximum = 7_776_000)]
    refresh_token_ttl_secs: u32,
    /// Roles whose holders must use a second factor.
    mfa_required_roles: Vec<String>,
    /// holders of any of these must use a second factor, and an API key carrying one needs a
    /// recent one; absent or empty keeps the current list
    #[serde(default)]
    privileged_permissions: Vec<String>,
}

impl From<&pb::Policy> for Policy {
    fn from(p: &pb::Policy) -> Self {
        Self {
            lockout_threshold: p.lockout_threshold,
            lockout_window_secs: p.lockout_window_secs,
            access_token_ttl_secs: p.access_token_ttl_secs,
            refresh_token_ttl_secs: p.refresh_token_ttl_secs,
            mfa_required_roles: p.mfa_required_roles.clone(),
            privileged_permissions: p.privileged_permissions.clone(),
        }
    }
}

impl From<Policy> for pb::Policy {
    fn from(p: Policy) -> Self {
        Self {
            lockout_threshold: p.lockout_threshold,
            lockout_window_secs: p.lockout_window_secs,
            access_token_ttl_secs: p.access_token_ttl_secs,
            refresh_token_ttl_secs: p.refresh_token_ttl_secs,
            mfa_required_roles: p.mfa_required_roles,
            privileged_permissions: p.privileged_permissions,
        }
    }
}

// ---- Refusals ----

/// The refusals every authenticated identity operation may answer.
#[derive(IntoResponses)]
#[allow(dead_code)] // describes the answers of `kit::ApiError`s from auth-svc
pub enum Refusals {
    #[response(status = 401, description = "not authenticated, or the session or key was revoked")]
    Unauthenticated(ErrorBody),
    #[response(status = 403, description = "missing permission, another tenant, or PRIVILEGE_ESCALATION")]
    Forbidden(ErrorBody),
    #[response(status = 404, description = "not found")]
    NotFound(ErrorBody),
}

/// A suspended user's refusal at a pre-session operation.
#[derive(IntoResponses)]
#[allow(dead_code)] // describes an answer of auth-svc
pub enum Suspended {
    #[response(
        status = 403,
        description = "USER_SUSPENDED (after the right password; the message carries the reason) or CROSS_SITE_REQUEST"
    )]
    Suspended(ErrorBody),
}

/// A refused credential at a pre-session operation.
#[derive(IntoResponses)]
#[allow(dead_code)] // describes an answer of auth-svc
pub enum BadCredentials {
    #[response(
        status = 401,
        description = "INVALID_CREDENTIALS, INVALID_MFA, INVALID_REFRESH_TOKEN, REFRESH_TOKEN_REUSED (the session is ended) or SESSION_ENDED"
    )]
    BadCredentials(ErrorBody),
}

/// The login lockouts.
#[derive(IntoResponses)]
#[allow(dead_code)] // describes an answer of auth-svc
pub enum LoginLocked {
    #[response(
        status = 429,
        description = "LOGIN_LOCKED (this account from this address), ACCOUNT_UNDER_ATTACK (this account from every address) or TOO_MANY_LOGINS, with Retry-After; or RATE_LIMITED"
    )]
    LoginLocked(ErrorBody),
}

/// Calls whose purpose is a revocation say when it is saved but not yet in force everywhere.
#[derive(IntoResponses)]
#[allow(dead_code)] // describes an answer of auth-svc
pub enum RevocationPending {
    #[response(
        status = 503,
        description = "REVOCATION_PENDING: saved, but the revocation list (Redis) did not take it yet; it is in force within a second of Redis answering, and repeating the call is safe"
    )]
    RevocationPending(ErrorBody),
}

// ---- Inputs ----

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

/// A second-factor code.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeBody {
    code: String,
}

/// A new user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserBody {
    email: String,
    #[serde(default)]
    display_name: String,
    #[schema(write_only, min_length = 12)]
    password: String,
    #[serde(default)]
    roles: Vec<String>,
    /// ignored: send the X-Request-Id header
    #[schema(deprecated)]
    request_id: Option<String>,
}

/// A user's new display name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserBody {
    display_name: String,
}

/// Why a user is suspended (shown to them after the right password).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuspendBody {
    #[schema(max_length = 500)]
    reason: String,
}

/// A new custom role.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoleBody {
    name: String,
    #[serde(default)]
    description: String,
    permissions: Vec<String>,
}

/// Who a role is granted to or revoked from: exactly one of a user and a group.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    user_id: Option<String>,
    group_id: Option<String>,
}

/// A new group.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroupBody {
    name: String,
    #[serde(default)]
    description: String,
}

/// A new API key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyBody {
    name: String,
    /// A subset of the caller's permissions.
    scopes: Vec<String>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 365)]
    ttl_days: u32,
}

/// A page of a listing (up to 500).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 0 or absent: the default page
    #[serde(default)]
    #[param(minimum = 0, maximum = 500)]
    page_size: i32,
    /// next_page_token of the previous page
    #[serde(default)]
    page_token: String,
}

/// A page of a group's members (up to 1,000).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MemberPageQuery {
    /// 0 or absent: the default page
    #[serde(default)]
    #[param(minimum = 0, maximum = 1000)]
    page_size: i32,
    /// next_page_token of the previous page
    #[serde(default)]
    page_token: String,
}

// ---- Logins and sessions ----

/// Password login. Answers tokens, an MFA challenge, or (with `cookie: true`) sets `__Host-` session cookies
#[utoipa::path(post, path = "/v1/auth/login", operation_id = "login", request_body = LoginBody, responses(
    (status = 200, description = "tokens, challenge or cookie session", body = SessionAnswer),
    BadCredentials, Suspended, LoginLocked,
))]
pub async fn login(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<LoginBody>,
) -> Response {
    let named = check_tenant(&body.tenant).ok();
    let result = async {
        let tenant = check_tenant(&body.tenant)?;
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
    let resp = match result {
        Ok(r) => session_response(&state, r, body.cookie, &id),
        Err(e) => JsonError(e, id.0).into_response(),
    };
    recorded_in(resp, named)
}

/// Names the tenant whose audit log the request belongs in, for the gateway's recorder: an
/// authentication request sends no `x-strongroom-tenant` header (security review item 11).
fn recorded_in(mut resp: Response, tenant: Option<String>) -> Response {
    if let Some(tenant) = tenant {
        resp.extensions_mut().insert(crate::recorder::RecordIn(tenant));
    }
    resp
}

/// Answers tokens as JSON, or (browsers) in `__Host-` cookies with a CSRF token.
fn session_response(state: &AppState, r: pb::LoginResponse, cookie: bool, id: &RequestId) -> Response {
    match session_answer(state, r, cookie) {
        Ok((headers, answer)) => (headers, Json(answer)).into_response(),
        Err(e) => JsonError(e, id.0.clone()).into_response(),
    }
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
    BadCredentials, Suspended,
    (status = 429, description = "MFA_LOCKED: too many wrong second-factor codes on this account, with Retry-After; or RATE_LIMITED", body = ErrorBody),
))]
pub async fn mfa(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<MfaBody>,
) -> Response {
    let named = tenant_or_token(body.tenant.as_deref(), kit::TenantSlug::of_mfa_token(&body.mfa_token)).ok();
    let result = async {
        let tenant = tenant_or_token(body.tenant.as_deref(), kit::TenantSlug::of_mfa_token(&body.mfa_token))?;
        let msg = pb::VerifyMfaRequest {
            tenant: tenant.clone(),
            mfa_token: body.mfa_token,
            code: body.code,
            client: Some(client_info(&state, &addr, &headers)),
        };
        Ok::<_, ApiError>(authn(&state).verify_mfa(anonymous(&tenant, &id, msg)).await.map_err(upstream)?.into_inner())
    }
    .await;
    let resp = match result {
        Ok(r) => session_response(&state, r, body.cookie, &id),
        Err(e) => JsonError(e, id.0).into_response(),
    };
    recorded_in(resp, named)
}

/// The tenant a body names, else the one its token names (auth-svc refuses the two differing).
fn tenant_or_token(given: Option<&str>, named_by_token: Option<kit::TenantSlug>) -> Result<String, ApiError> {
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
    (status = 401, description = "INVALID_REFRESH_TOKEN, REFRESH_TOKEN_REUSED, SESSION_ENDED, or MFA_REQUIRED (the user became privileged without a second factor: the session is ended, log in again)", body = ErrorBody),
    Suspended, LoginLocked,
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
    let resp = match result {
        Ok(t) => session_response(
            &state,
            pb::LoginResponse { result: Some(pb::login_response::Result::Tokens(t)) },
            from_cookie,
            &id,
        ),
        Err(e) => JsonError(e, id.0).into_response(),
    };
    recorded_in(resp, named)
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
    let t = t.get_ref();
    Ok(Json(SteppedUp {
        access_token: t.access_token.clone(),
        token_type: TokenType::Bearer,
        expires_in: t.expires_in,
    }))
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

// ---- The caller's own account ----

/// The caller's account, permissions and session
#[utoipa::path(get, path = "/v1/me", operation_id = "me", responses(
    (status = 200, description = "me", body = Me), Refusals,
))]
pub async fn me(State(state): State<AppState>, call: Call) -> Result<Json<Me>, HttpError> {
    let me = users(&state).get_me(call.request(pb::GetMeRequest {})).await.map_err(upstream)?.into_inner();
    Ok(Json(Me {
        user: me.user.as_ref().map(User::from),
        permissions: me.permissions,
        session_id: me.session_id,
        amr: me.amr,
        tenant: call.caller.tenant,
    }))
}

/// Everything held about the caller (JSON download)
#[utoipa::path(get, path = "/v1/me/export", operation_id = "exportMe", responses(
    (status = 200, description = "export: auth-svc's document of the caller's data", body = Object), Refusals,
))]
pub async fn export(State(state): State<AppState>, call: Call) -> Result<Response, HttpError> {
    let doc = users(&state).export_me(call.request(pb::ExportMeRequest {})).await.map_err(upstream)?.into_inner();
    let doc = serde_json::from_str::<Value>(&doc.json).map_err(|e| ApiError::internal(&e))?;
    let mut resp = Json(doc).into_response();
    resp.headers_mut().insert(
        http::header::CONTENT_DISPOSITION,
        http::HeaderValue::from_static("attachment; filename=\"strongroom-export.json\""),
    );
    Ok(resp)
}

/// Starts TOTP enrolment: the otpauth:// URI and secret, once
#[utoipa::path(post, path = "/v1/me/mfa/totp", operation_id = "enrollTotp", responses(
    (status = 200, description = "enrolment", body = TotpEnrollment),
    (status = 412, description = "TOTP_ALREADY_ENROLLED", body = ErrorBody),
    Refusals,
))]
pub async fn totp_enroll(State(state): State<AppState>, call: Call) -> Result<Json<TotpEnrollment>, HttpError> {
    let r = sessions(&state).enroll_totp(call.request(pb::EnrollTotpRequest {})).await.map_err(upstream)?.into_inner();
    Ok(Json(TotpEnrollment { otpauth_uri: r.otpauth_uri, secret: r.secret }))
}

/// Confirms TOTP with a first code; answers ten single-use backup codes once; refresh afterwards
/// for a full session
#[utoipa::path(post, path = "/v1/me/mfa/totp/confirm", operation_id = "confirmTotp", request_body = CodeBody,
    responses(
        (status = 200, description = "backup codes", body = BackupCodes),
        (status = 412, description = "NO_PENDING_TOTP (start enrolment first)", body = ErrorBody),
        Refusals,
    ))]
pub async fn totp_confirm(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody<CodeBody>,
) -> Result<Json<BackupCodes>, HttpError> {
    let r = sessions(&state)
        .confirm_totp(call.request(pb::ConfirmTotpRequest { code: body.code }))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(Json(BackupCodes { backup_codes: r.backup_codes, refresh_required: true }))
}

/// The caller's sessions
#[utoipa::path(get, path = "/v1/me/sessions", operation_id = "listMySessions", responses(
    (status = 200, description = "sessions", body = Sessions), Refusals,
))]
pub async fn my_sessions(State(state): State<AppState>, call: Call) -> Result<Json<Sessions>, HttpError> {
    let r = sessions(&state)
        .list_sessions(call.request(pb::ListSessionsRequest::default()))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(Json(Sessions { sessions: r.sessions.iter().map(Session::from).collect() }))
}

/// Revokes one of the caller's sessions (another's with sessions.revoke)
#[utoipa::path(delete, path = "/v1/me/sessions/{id}", operation_id = "revokeMySession",
    params(("id" = String, Path, description = "the session")),
    responses((status = 200, description = "revoked", body = Revoked), Refusals, RevocationPending))]
pub async fn revoke_my_session(
    State(state): State<AppState>,
    call: Call,
    PathParams(session): PathParams<String>,
) -> Result<Json<Revoked>, HttpError> {
    sessions(&state).revoke_session(call.request(pb::RevokeSessionRequest { id: session })).await.map_err(upstream)?;
    Ok(Json(Revoked { revoked: true }))
}

// ---- Users ----

/// Users; requires users.read
#[utoipa::path(get, path = "/v1/users", operation_id = "listUsers", params(PageQuery), responses(
    (status = 200, description = "a page of users", body = UserPage), Refusals,
))]
pub async fn list_users(
    State(state): State<AppState>,
    call: Call,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<UserPage>, HttpError> {
    call.require(Permission::UsersRead)?;
    let msg = pb::ListUsersRequest { page_size: q.page_size, page_token: q.page_token };
    let r = users(&state).list_users(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(UserPage { users: r.users.iter().map(User::from).collect(), next_page_token: r.next_page_token }))
}

/// Creates a user (password of 12+ characters); granting roles requires roles.grant and only
/// roles whose permissions the caller holds; requires users.write
#[utoipa::path(post, path = "/v1/users", operation_id = "createUser", request_body = CreateUserBody, responses(
    (status = 200, description = "the user", body = User),
    (status = 409, description = "EMAIL_TAKEN", body = ErrorBody),
    Refusals,
))]
pub async fn create_user(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody<CreateUserBody>,
) -> Result<Json<User>, HttpError> {
    call.require(Permission::UsersWrite)?;
    let msg = pb::CreateUserRequest {
        email: body.email,
        display_name: body.display_name,
        password: body.password,
        roles: body.roles,
        request_id: body.request_id.unwrap_or_default(),
    };
    Ok(user(users(&state).create_user(call.request(msg)).await.map_err(upstream)?))
}

/// One user; requires users.read
#[utoipa::path(get, path = "/v1/users/{id}", operation_id = "getUser", params(("id" = String, Path)),
    responses((status = 200, description = "the user", body = User), Refusals))]
pub async fn get_user(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
) -> Result<Json<User>, HttpError> {
    // auth-svc decides: a user may read themselves, anyone else needs users.read.
    Ok(user(users(&state).get_user(call.request(pb::GetUserRequest { id })).await.map_err(upstream)?))
}

/// Changes the display name; requires users.write
#[utoipa::path(patch, path = "/v1/users/{id}", operation_id = "updateUser", params(("id" = String, Path)),
    request_body = UpdateUserBody, responses((status = 200, description = "the user", body = User), Refusals))]
pub async fn update_user(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<UpdateUserBody>,
) -> Result<Json<User>, HttpError> {
    call.require(Permission::UsersWrite)?;
    let msg = pb::UpdateUserRequest { id, display_name: body.display_name };
    Ok(user(users(&state).update_user(call.request(msg)).await.map_err(upstream)?))
}

/// Removes the user's personal data and shreds their subject key; the audit trail stays
/// verifiable; requires users.delete
#[utoipa::path(delete, path = "/v1/users/{id}", operation_id = "deleteUser", params(("id" = String, Path)), responses(
    (status = 200, description = "deleted", body = Deleted),
    (status = 412, description = "CANNOT_DELETE_SELF", body = ErrorBody),
    Refusals,
))]
pub async fn delete_user(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
) -> Result<Json<Deleted>, HttpError> {
    call.require(Permission::UsersDelete)?;
    users(&state).delete_user(call.request(pb::DeleteUserRequest { id })).await.map_err(upstream)?;
    Ok(Json(Deleted { deleted: true }))
}

/// Suspends (sessions end at once); the user sees the reason only after the right password;
/// requires users.suspend
#[utoipa::path(post, path = "/v1/users/{id}/suspend", operation_id = "suspendUser", params(("id" = String, Path)),
    request_body = SuspendBody, responses(
        (status = 200, description = "the user", body = User),
        (status = 412, description = "CANNOT_SUSPEND_SELF", body = ErrorBody),
        Refusals, RevocationPending,
    ))]
pub async fn suspend_user(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<SuspendBody>,
) -> Result<Json<User>, HttpError> {
    call.require(Permission::UsersSuspend)?;
    let msg = pb::SuspendUserRequest { id, reason: body.reason };
    Ok(user(users(&state).suspend_user(call.request(msg)).await.map_err(upstream)?))
}

/// Lifts a suspension; requires users.suspend
#[utoipa::path(post, path = "/v1/users/{id}/reactivate", operation_id = "reactivateUser",
    params(("id" = String, Path)), responses(
        (status = 200, description = "the user", body = User),
        (status = 412, description = "NOT_SUSPENDED", body = ErrorBody),
        Refusals,
    ))]
pub async fn reactivate_user(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
) -> Result<Json<User>, HttpError> {
    call.require(Permission::UsersSuspend)?;
    Ok(user(users(&state).reactivate_user(call.request(pb::ReactivateUserRequest { id })).await.map_err(upstream)?))
}

// ---- Roles ----

/// Built-in and custom roles by name, with their permissions; requires roles.read
#[utoipa::path(get, path = "/v1/roles", operation_id = "listRoles", params(PageQuery), responses(
    (status = 200, description = "a page of roles", body = RolePage), Refusals,
))]
pub async fn list_roles(
    State(state): State<AppState>,
    call: Call,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<RolePage>, HttpError> {
    call.require(Permission::RolesRead)?;
    let msg = pb::ListRolesRequest { page_size: q.page_size, page_token: q.page_token };
    let r = access(&state).list_roles(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(RolePage { roles: r.roles.iter().map(Role::from).collect(), next_page_token: r.next_page_token }))
}

/// A custom role of known permissions the caller holds; requires roles.write
#[utoipa::path(post, path = "/v1/roles", operation_id = "createRole", request_body = CreateRoleBody, responses(
    (status = 200, description = "the role", body = Role),
    (status = 409, description = "ROLE_EXISTS", body = ErrorBody),
    Refusals,
))]
pub async fn create_role(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody<CreateRoleBody>,
) -> Result<Json<Role>, HttpError> {
    call.require(Permission::RolesWrite)?;
    let msg = pb::CreateRoleRequest { name: body.name, description: body.description, permissions: body.permissions };
    let r = access(&state).create_role(call.request(msg)).await.map_err(upstream)?;
    Ok(Json(r.get_ref().into()))
}

/// Deletes a custom role; requires roles.write
#[utoipa::path(delete, path = "/v1/roles/{id}", operation_id = "deleteRole", params(("id" = String, Path)), responses(
    (status = 200, description = "deleted", body = Deleted),
    (status = 412, description = "BUILTIN_ROLE", body = ErrorBody),
    Refusals,
))]
pub async fn delete_role(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
) -> Result<Json<Deleted>, HttpError> {
    call.require(Permission::RolesWrite)?;
    access(&state).delete_role(call.request(pb::DeleteRoleRequest { id })).await.map_err(upstream)?;
    Ok(Json(Deleted { deleted: true }))
}

async fn grant_or_revoke(
    state: &AppState,
    call: &Call,
    role: String,
    body: GrantBody,
    revoke: bool,
) -> Result<Json<Granted>, HttpError> {
    let grantee = match (body.user_id, body.group_id) {
        (Some(u), None) => pb::grant_role_request::Grantee::UserId(u),
        (None, Some(g)) => pb::grant_role_request::Grantee::GroupId(g),
        _ => return Err(ApiError::invalid_field("user_id", "give exactly one of user_id and group_id").into()),
    };
    let msg = pb::GrantRoleRequest { role, grantee: Some(grantee) };
    if revoke {
        access(state).revoke_role(call.request(msg)).await.map_err(upstream)?;
    } else {
        access(state).grant_role(call.request(msg)).await.map_err(upstream)?;
    }
    Ok(Json(Granted { granted: !revoke }))
}

/// Grants the role (by name) to a user or a group; only roles whose permissions the caller holds;
/// requires roles.grant
#[utoipa::path(post, path = "/v1/roles/{id}/grant", operation_id = "grantRole",
    params(("id" = String, Path, description = "the role's name")), request_body = GrantBody,
    responses((status = 200, description = "granted", body = Granted), Refusals))]
pub async fn grant_role(
    State(state): State<AppState>,
    call: Call,
    PathParams(role): PathParams<String>,
    JsonBody(body): JsonBody<GrantBody>,
) -> Result<Json<Granted>, HttpError> {
    call.require(Permission::RolesGrant)?;
    grant_or_revoke(&state, &call, role, body, false).await
}

/// Revokes the role (by name) from a user or a group; requires roles.grant
#[utoipa::path(post, path = "/v1/roles/{id}/revoke", operation_id = "revokeRole",
    params(("id" = String, Path, description = "the role's name")), request_body = GrantBody,
    responses((status = 200, description = "revoked (`granted` is false)", body = Granted), Refusals))]
pub async fn revoke_role(
    State(state): State<AppState>,
    call: Call,
    PathParams(role): PathParams<String>,
    JsonBody(body): JsonBody<GrantBody>,
) -> Result<Json<Granted>, HttpError> {
    call.require(Permission::RolesGrant)?;
    grant_or_revoke(&state, &call, role, body, true).await
}

// ---- Groups ----

/// Groups by name, with their roles and member count (members: /v1/groups/{id}/members); requires
/// groups.read
#[utoipa::path(get, path = "/v1/groups", operation_id = "listGroups", params(PageQuery), responses(
    (status = 200, description = "a page of groups", body = GroupPage), Refusals,
))]
pub async fn list_groups(
    State(state): State<AppState>,
    call: Call,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<GroupPage>, HttpError> {
    call.require(Permission::GroupsRead)?;
    let msg = pb::ListGroupsRequest { page_size: q.page_size, page_token: q.page_token };
    let r = access(&state).list_groups(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(GroupPage { groups: r.groups.iter().map(Group::from).collect(), next_page_token: r.next_page_token }))
}

/// A group's member ids in id order; requires groups.read
#[utoipa::path(get, path = "/v1/groups/{id}/members", operation_id = "listGroupMembers",
    params(("id" = String, Path), MemberPageQuery),
    responses((status = 200, description = "a page of member ids", body = MemberPage), Refusals))]
pub async fn list_group_members(
    State(state): State<AppState>,
    call: Call,
    PathParams(group_id): PathParams<String>,
    QueryParams(q): QueryParams<MemberPageQuery>,
) -> Result<Json<MemberPage>, HttpError> {
    call.require(Permission::GroupsRead)?;
    let msg = pb::ListGroupMembersRequest { group_id, page_size: q.page_size, page_token: q.page_token };
    let r = access(&state).list_group_members(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(MemberPage { member_ids: r.member_ids, next_page_token: r.next_page_token }))
}

/// Creates a group; requires groups.write
#[utoipa::path(post, path = "/v1/groups", operation_id = "createGroup", request_body = CreateGroupBody, responses(
    (status = 200, description = "the group", body = Group),
    (status = 409, description = "GROUP_EXISTS", body = ErrorBody),
    Refusals,
))]
pub async fn create_group(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody<CreateGroupBody>,
) -> Result<Json<Group>, HttpError> {
    call.require(Permission::GroupsWrite)?;
    let msg = pb::CreateGroupRequest { name: body.name, description: body.description };
    Ok(group(access(&state).create_group(call.request(msg)).await.map_err(upstream)?))
}

/// Deletes a group; requires groups.write
#[utoipa::path(delete, path = "/v1/groups/{id}", operation_id = "deleteGroup", params(("id" = String, Path)),
    responses((status = 200, description = "deleted", body = Deleted), Refusals))]
pub async fn delete_group(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
) -> Result<Json<Deleted>, HttpError> {
    call.require(Permission::GroupsWrite)?;
    access(&state).delete_group(call.request(pb::DeleteGroupRequest { id })).await.map_err(upstream)?;
    Ok(Json(Deleted { deleted: true }))
}

/// Adds a member (the caller must hold every permission the group confers); requires groups.write
#[utoipa::path(put, path = "/v1/groups/{id}/members/{user_id}", operation_id = "addGroupMember",
    params(("id" = String, Path), ("user_id" = String, Path)),
    responses((status = 200, description = "the group", body = Group), Refusals))]
pub async fn add_member(
    State(state): State<AppState>,
    call: Call,
    PathParams((group_id, user_id)): PathParams<(String, String)>,
) -> Result<Json<Group>, HttpError> {
    call.require(Permission::GroupsWrite)?;
    let msg = pb::GroupMemberRequest { group_id, user_id };
    Ok(group(access(&state).add_group_member(call.request(msg)).await.map_err(upstream)?))
}

/// Removes a member; requires groups.write
#[utoipa::path(delete, path = "/v1/groups/{id}/members/{user_id}", operation_id = "removeGroupMember",
    params(("id" = String, Path), ("user_id" = String, Path)),
    responses((status = 200, description = "the group", body = Group), Refusals))]
pub async fn remove_member(
    State(state): State<AppState>,
    call: Call,
    PathParams((group_id, user_id)): PathParams<(String, String)>,
) -> Result<Json<Group>, HttpError> {
    call.require(Permission::GroupsWrite)?;
    let msg = pb::GroupMemberRequest { group_id, user_id };
    Ok(group(access(&state).remove_group_member(call.request(msg)).await.map_err(upstream)?))
}

// ---- API keys ----

/// The caller's API keys, newest first (all of the tenant's with api_keys.read)
#[utoipa::path(get, path = "/v1/api-keys", operation_id = "listApiKeys", params(PageQuery), responses(
    (status = 200, description = "a page of keys", body = ApiKeyPage), Refusals,
))]
pub async fn list_api_keys(
    State(state): State<AppState>,
    call: Call,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<ApiKeyPage>, HttpError> {
    let msg = pb::ListApiKeysRequest { page_size: q.page_size, page_token: q.page_token };
    let r = sessions(&state).list_api_keys(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(ApiKeyPage { api_keys: r.keys.iter().map(ApiKey::from).collect(), next_page_token: r.next_page_token }))
}

/// An API key for a machine agent, scoped to a subset of the caller's permissions, 1–365 days;
/// the key is in the answer once; requires api_keys.create
#[utoipa::path(post, path = "/v1/api-keys", operation_id = "createApiKey", request_body = CreateApiKeyBody, responses(
    (status = 200, description = "the key", body = NewApiKey),
    (status = 412, description = "STEP_UP_REQUIRED: a key carrying a privileged or step-up permission needs a second factor within 10 minutes", body = ErrorBody),
    Refusals,
))]
pub async fn create_api_key(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody<CreateApiKeyBody>,
) -> Result<Json<NewApiKey>, HttpError> {
    call.require(Permission::ApiKeysCreate)?;
    let msg = pb::CreateApiKeyRequest { name: body.name, scopes: body.scopes, ttl_days: body.ttl_days };
    let r = sessions(&state).create_api_key(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(NewApiKey { key: r.key.as_ref().map(ApiKey::from), api_key: r.api_key }))
}

/// Revokes a key at once (another's with api_keys.revoke)
#[utoipa::path(delete, path = "/v1/api-keys/{id}", operation_id = "revokeApiKey", params(("id" = String, Path)),
    responses((status = 200, description = "revoked", body = Revoked), Refusals, RevocationPending))]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
) -> Result<Json<Revoked>, HttpError> {
    sessions(&state).revoke_api_key(call.request(pb::RevokeApiKeyRequest { id })).await.map_err(upstream)?;
    Ok(Json(Revoked { revoked: true }))
}

// ---- Tenant policy ----

/// The tenant's identity policy
#[utoipa::path(get, path = "/v1/tenant/policy", operation_id = "getPolicy",
    responses((status = 200, description = "policy", body = Policy), Refusals))]
pub async fn get_policy(State(state): State<AppState>, call: Call) -> Result<Json<Policy>, HttpError> {
    let p = access(&state).get_policy(call.request(pb::GetPolicyRequest {})).await.map_err(upstream)?;
    Ok(Json(p.get_ref().into()))
}

/// Changes the policy; dropping a role from mfa_required_roles needs every permission of that
/// role; requires tenant.policy.write
#[utoipa::path(put, path = "/v1/tenant/policy", operation_id = "putPolicy", request_body = Policy,
    responses((status = 200, description = "policy", body = Policy), Refusals))]
pub async fn put_policy(
    State(state): State<AppState>,
    call: Call,
    JsonBody(policy): JsonBody<Policy>,
) -> Result<Json<Policy>, HttpError> {
    call.require(Permission::TenantPolicyWrite)?;
    let p = access(&state).update_policy(call.request(policy.into())).await.map_err(upstream)?;
    Ok(Json(p.get_ref().into()))
}
