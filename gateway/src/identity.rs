//! Identity routes: logins and sessions (`/v1/auth/*`), the caller's own account (`/v1/me*`),
//! and administration of users, roles, groups and API keys. The gateway authenticates and checks
//! each route's permission; auth-svc checks again (and decides the "own or with permission"
//! cases).

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
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::http_layer::{HttpError, JsonError, RequestId};
use crate::input::{JsonBody, PathParams, QueryParams};
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

pub fn tokens_json(t: &pb::Tokens) -> Value {
    json!({
        "access_token": t.access_token,
        "token_type": "Bearer",
        "expires_in": t.expires_in,
        "refresh_token": t.refresh_token,
        "refresh_expires_in": t.refresh_expires_in,
        "session_id": t.session_id,
        "mfa_enrollment_required": t.mfa_enrollment_required,
    })
}

fn login_json(r: pb::LoginResponse) -> Result<Value, ApiError> {
    match r.result {
        Some(pb::login_response::Result::Tokens(t)) => Ok(tokens_json(&t)),
        Some(pb::login_response::Result::Mfa(m)) => Ok(json!({
            "mfa_required": true,
            "mfa_token": m.mfa_token,
            "expires_in": m.expires_in,
            "methods": m.methods,
        })),
        None => Err(ApiError::internal(&"empty login response")),
    }
}

fn user_json(u: &pb::User) -> Value {
    json!({
        "id": u.id,
        "email": u.email,
        "display_name": u.display_name,
        "status": match u.status { 1 => "active", 2 => "suspended", 3 => "deleted", _ => "unknown" },
        "suspension_reason": if u.suspension_reason.is_empty() { Value::Null } else { json!(u.suspension_reason) },
        "mfa_enabled": u.mfa_enabled,
        "roles": u.roles,
        "created_at": rfc3339(&u.create_time),
    })
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    tenant: String,
    email: String,
    password: String,
    #[serde(default)]
    cookie: bool,
}

/// `POST /v1/auth/login`
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
    match (&r.result, cookie) {
        (Some(pb::login_response::Result::Tokens(t)), true) => {
            let mut headers = HeaderMap::new();
            let set = state.browser.set_session_cookies(
                &mut headers,
                &t.access_token,
                &t.refresh_token,
                &t.session_id,
                t.expires_in.into(),
                t.refresh_expires_in.into(),
            );
            match set {
                Ok(csrf) => {
                    let body = json!({
                        "session_id": t.session_id,
                        "expires_in": t.expires_in,
                        "mfa_enrollment_required": t.mfa_enrollment_required,
                        "csrf_token": csrf,
                    });
                    (headers, Json(body)).into_response()
                }
                Err(e) => JsonError(e, id.0.clone()).into_response(),
            }
        }
        _ => match login_json(r) {
            Ok(v) => Json(v).into_response(),
            Err(e) => JsonError(e, id.0.clone()).into_response(),
        },
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MfaBody {
    /// Optional: the challenge token names its tenant.
    tenant: Option<String>,
    mfa_token: String,
    code: String,
    #[serde(default)]
    cookie: bool,
}

/// `POST /v1/auth/mfa`
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    /// Optional: the refresh token names its tenant.
    tenant: Option<String>,
    /// Absent for browsers: the refresh cookie is used.
    refresh_token: Option<String>,
}

/// `POST /v1/auth/refresh`
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogoutBody {
    refresh_token: Option<String>,
}

/// `POST /v1/auth/logout`: ends the session of the access token, or, when that has expired (a
/// browser idle past its access cookie), the session the refresh token (body or cookie) belongs
/// to. The answer clears the session cookies whatever happened: a shared device must not keep a
/// refresh token because the logout failed.
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeBody {
    code: String,
}

/// `POST /v1/auth/step-up`: a fresh second factor for the current session.
pub async fn step_up(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody<CodeBody>,
) -> Result<Json<Value>, HttpError> {
    let t = authn(&state).step_up(call.request(pb::StepUpRequest { code: body.code })).await.map_err(upstream)?;
    Ok(Json(
        json!({ "access_token": t.get_ref().access_token, "token_type": "Bearer", "expires_in": t.get_ref().expires_in }),
    ))
}

/// How long the gateway serves a fetched JWKS document before asking auth-svc again. Far below
/// the time a new signing key is published before it signs (`signing_key_publish_ahead_secs`,
/// 360 s), less the clients' own `max-age`.
const JWKS_FRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// `GET /.well-known/jwks.json`. Public and unauthenticated, so it is answered from a document
/// fetched at most every [`JWKS_FRESH`], by one request at a time (the others wait for it): a
/// flood of hits costs auth-svc one `GetJwks` per interval, not one each. Failures are not kept.
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
        let keys: Vec<Value> = keys
            .iter()
            .map(|k| {
                let mut v = json!({ "kty": k.kty, "crv": k.crv, "x": k.x, "kid": k.kid, "alg": k.alg, "use": "sig" });
                if !k.y.is_empty() {
                    v["y"] = json!(k.y);
                }
                v
            })
            .collect();
        let doc = json!({ "keys": keys });
        *cached = Some((std::time::Instant::now(), doc.clone()));
        Ok(doc)
    }
    .await;
    let mut resp = respond(result, id);
    resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("public, max-age=60"));
    resp
}

/// `GET /.well-known/openid-configuration`: what a resource server needs to verify access tokens,
/// and nothing this gateway does not do (it is not an OAuth token endpoint nor an OpenID provider:
/// no grant types, no ID tokens).
pub async fn openid_configuration(State(state): State<AppState>) -> Json<Value> {
    let base = state.public_url.trim_end_matches('/').to_owned();
    Json(json!({
        "issuer": state.issuer,
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
    }))
}

/// `GET /v1/me`
pub async fn me(State(state): State<AppState>, call: Call) -> Result<Json<Value>, HttpError> {
    let me = users(&state).get_me(call.request(pb::GetMeRequest {})).await.map_err(upstream)?.into_inner();
    Ok(Json(json!({
        "user": me.user.as_ref().map(user_json),
        "permissions": me.permissions,
        "session_id": me.session_id,
        "amr": me.amr,
        "tenant": call.caller.tenant,
    })))
}

/// `GET /v1/me/export`: everything held about the caller.
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

/// `POST /v1/me/mfa/totp`: starts TOTP enrolment.
pub async fn totp_enroll(State(state): State<AppState>, call: Call) -> Result<Json<Value>, HttpError> {
    let r = sessions(&state).enroll_totp(call.request(pb::EnrollTotpRequest {})).await.map_err(upstream)?.into_inner();
    Ok(Json(json!({ "otpauth_uri": r.otpauth_uri, "secret": r.secret })))
}

/// `POST /v1/me/mfa/totp/confirm`: the first code; answers the backup codes once.
pub async fn totp_confirm(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody<CodeBody>,
) -> Result<Json<Value>, HttpError> {
    let r = sessions(&state)
        .confirm_totp(call.request(pb::ConfirmTotpRequest { code: body.code }))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(Json(json!({ "backup_codes": r.backup_codes, "refresh_required": true })))
}

fn session_json(s: &pb::Session) -> Value {
    json!({
        "id": s.id, "ip": s.ip, "user_agent": s.user_agent, "current": s.current,
        "created_at": rfc3339(&s.create_time), "last_seen_at": rfc3339(&s.last_seen_time),
        "revoked_at": rfc3339(&s.revoke_time),
    })
}

/// `GET /v1/me/sessions`
pub async fn my_sessions(State(state): State<AppState>, call: Call) -> Result<Json<Value>, HttpError> {
    let r = sessions(&state)
        .list_sessions(call.request(pb::ListSessionsRequest::default()))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(Json(json!({ "sessions": r.sessions.iter().map(session_json).collect::<Vec<_>>() })))
}

/// `DELETE /v1/me/sessions/{id}`
pub async fn revoke_my_session(
    State(state): State<AppState>,
    call: Call,
    PathParams(session): PathParams<String>,
) -> Result<Json<Value>, HttpError> {
    sessions(&state).revoke_session(call.request(pb::RevokeSessionRequest { id: session })).await.map_err(upstream)?;
    Ok(Json(json!({ "revoked": true })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    #[serde(default)]
    page_size: i32,
    #[serde(default)]
    page_token: String,
}

/// `GET /v1/users`
pub async fn list_users(
    State(state): State<AppState>,
    call: Call,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<Value>, HttpError> {
    call.require(Permission::UsersRead)?;
    let msg = pb::ListUsersRequest { page_size: q.page_size, page_token: q.page_token };
    let r = users(&state).list_users(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(
        json!({ "users": r.users.iter().map(user_json).collect::<Vec<_>>(), "next_page_token": r.next_page_token }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUserBody {
    email: String,
    #[serde(default)]
    display_name: String,
    password: String,
    #[serde(default)]
    roles: Vec<String>,
    request_id: Option<String>,
}

/// `POST /v1/users`
pub async fn create_user(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody<CreateUserBody>,
) -> Result<Json<Value>, HttpError> {
    call.require(Permission::UsersWrite)?;
    let msg = pb::CreateUserRequest {
        email: body.email,
        display_name: body.display_name,
        password: body.password,
        roles: body.roles,
        request_id: body.request_id.unwrap_or_default(),
    };
    let u = users(&state).create_user(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(user_json(&u)))
}

/// `GET /v1/users/{id}`
pub async fn get_user(
    State(state): State<AppState>,
    call: Call,
    PathParams(user): PathParams<String>,
) -> Result<Json<Value>, HttpError> {
    // auth-svc decides: a user may read themselves, anyone else needs users.read.
    let u = users(&state).get_user(call.request(pb::GetUserRequest { id: user })).await.map_err(upstream)?;
    Ok(Json(user_json(u.get_ref())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserBody {
    display_name: String,
}

/// `PATCH /v1/users/{id}`
pub async fn update_user(
    State(state): State<AppState>,
    call: Call,
    PathParams(user): PathParams<String>,
    JsonBody(body): JsonBody<UpdateUserBody>,
) -> Result<Json<Value>, HttpError> {
    call.require(Permission::UsersWrite)?;
    let msg = pb::UpdateUserRequest { id: user, display_name: body.display_name };
    let u = users(&state).update_user(call.request(msg)).await.map_err(upstream)?;
    Ok(Json(user_json(u.get_ref())))
}

/// `DELETE /v1/users/{id}`: removes personal data and shreds the user's key.
pub async fn delete_user(
    State(state): State<AppState>,
    call: Call,
    PathParams(user): PathParams<String>,
) -> Result<Json<Value>, HttpError> {
    call.require(Permission::UsersDelete)?;
    users(&state).delete_user(call.request(pb::DeleteUserRequest { id: user })).await.map_err(upstream)?;
    Ok(Json(json!({ "deleted": true })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuspendBody {
    reason: String,
}

/// `POST /v1/users/{id}/suspend`
pub async fn suspend_user(
    State(state): State<AppState>,
    call: Call,
    PathParams(user): PathParams<String>,
    JsonBody(body): JsonBody<SuspendBody>,
) -> Result<Json<Value>, HttpError> {
    call.require(Permission::UsersSuspend)?;
    let msg = pb::SuspendUserRequest { id: user, reason: body.reason };
    let u = users(&state).suspend_user(call.request(msg)).await.map_err(upstream)?;
    Ok(Json(user_json(u.get_ref())))
}

/// `POST /v1/users/{id}/reactivate`
pub async fn reactivate_user(
    State(state): State<AppState>,
    call: Call,
    PathParams(user): PathParams<String>,
) -> Result<Json<Value>, HttpError> {
    call.require(Permission::UsersSuspend)?;
    let u =
        users(&state).reactivate_user(call.request(pb::ReactivateUserRequest { id: user })).await.map_err(upstream)?;
    Ok(Json(user_json(u.get_ref())))
}

fn role_json(r: &pb::Role) -> Value {
    json!({ "id": r.id, "name": r.name, "description": r.description, "permissions": r.permissions, "builtin": r.builtin })
}

/// `GET /v1/roles?page_size=&page_token=`
pub async fn list_roles(
    State(state): State<AppState>,
    call: Call,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<Value>, HttpError> {
    call.require(Permission::RolesRead)?;
    let msg = pb::ListRolesRequest { page_size: q.page_size, page_token: q.page_token };
    let r = access(&state).list_roles(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(
        json!({ "roles": r.roles.iter().map(role_json).collect::<Vec<_>>(), "next_page_token": r.next_page_token }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoleBody {
    name: String,
    #[serde(default)]
    description: String,
    permissions: Vec<String>,
}

/// `POST /v1/roles`
pub async fn create_role(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody<CreateRoleBody>,
) -> Result<Json<Value>, HttpError> {
    call.require(Permission::RolesWrite)?;
    let msg = pb::CreateRoleRequest { name: body.name, description: body.description, permissions: body.permissions };
    let r = access(&state).create_role(call.request(msg)).await.map_err(upstream)?;
    Ok(Json(role_json(r.get_ref())))
}

/// `DELETE /v1/roles/{id}`
pub async fn delete_role(
    State(state): State<AppState>,
    call: Call,
    PathParams(role): PathParams<String>,
) -> Result<Json<Value>, HttpError> {
    call.require(Permission::RolesWrite)?;
    access(&state).delete_role(call.request(pb::DeleteRoleRequest { id: role })).await.map_err(upstream)?;
    Ok(Json(json!({ "deleted": true })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    user_id: Option<String>,
    group_id: Option<String>,
}

async fn grant_or_revoke(
    state: &AppState,
    call: &Call,
    role: String,
    body: GrantBody,
    revoke: bool,
) -> Result<Json<Value>, HttpError> {
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
    Ok(Json(json!({ "granted": !revoke })))
}

/// `POST /v1/roles/{name}/grant`
pub async fn grant_role(
    State(state): State<AppState>,
    call: Call,
    PathParams(role): PathParams<String>,
    JsonBody(body): JsonBody<GrantBody>,
) -> Result<Json<Value>, HttpError> {
    call.require(Permission::RolesGrant)?;
    grant_or_revoke(&state, &call, role, body, false).await
}

/// `POST /v1/roles/{name}/revoke`
pub async fn revoke_role(
    State(state): State<AppState>,
    call: Call,
    PathParams(role): PathParams<String>,
    JsonBody(body): JsonBody<GrantBody>,
) -> Result<Json<Value>, HttpError> {
    call.require(Permission::RolesGrant)?;
    grant_or_revoke(&state, &call, role, body, true).await
}

fn group_json(g: &pb::Group) -> Value {
    json!({ "id": g.id, "name": g.name, "description": g.description, "member_count": g.member_count, "roles": g.roles })
}

/// `GET /v1/groups?page_size=&page_token=`
pub async fn list_groups(
    State(state): State<AppState>,
    call: Call,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<Value>, HttpError> {
    call.require(Permission::GroupsRead)?;
    let msg = pb::ListGroupsRequest { page_size: q.page_size, page_token: q.page_token };
    let r = access(&state).list_groups(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(
        json!({ "groups": r.groups.iter().map(group_json).collect::<Vec<_>>(), "next_page_token": r.next_page_token }),
    ))
}

/// `GET /v1/groups/{id}/members?page_size=&page_token=`
pub async fn list_group_members(
    State(state): State<AppState>,
    call: Call,
    PathParams(group): PathParams<String>,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<Value>, HttpError> {
    call.require(Permission::GroupsRead)?;
    let msg = pb::ListGroupMembersRequest { group_id: group, page_size: q.page_size, page_token: q.page_token };
    let r = access(&state).list_group_members(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(json!({ "member_ids": r.member_ids, "next_page_token": r.next_page_token })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGroupBody {
    name: String,
    #[serde(default)]
    description: String,
}

/// `POST /v1/groups`
pub async fn create_group(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody<CreateGroupBody>,
) -> Result<Json<Value>, HttpError> {
    call.require(Permission::GroupsWrite)?;
    let msg = pb::CreateGroupRequest { name: body.name, description: body.description };
    let g = access(&state).create_group(call.request(msg)).await.map_err(upstream)?;
    Ok(Json(group_json(g.get_ref())))
}

/// `DELETE /v1/groups/{id}`
pub async fn delete_group(
    State(state): State<AppState>,
    call: Call,
    PathParams(group): PathParams<String>,
) -> Result<Json<Value>, HttpError> {
    call.require(Permission::GroupsWrite)?;
    access(&state).delete_group(call.request(pb::DeleteGroupRequest { id: group })).await.map_err(upstream)?;
    Ok(Json(json!({ "deleted": true })))
}

/// `PUT /v1/groups/{id}/members/{user_id}`
pub async fn add_member(
    State(state): State<AppState>,
    call: Call,
    PathParams((group, user)): PathParams<(String, String)>,
) -> Result<Json<Value>, HttpError> {
    call.require(Permission::GroupsWrite)?;
    let msg = pb::GroupMemberRequest { group_id: group, user_id: user };
    let g = access(&state).add_group_member(call.request(msg)).await.map_err(upstream)?;
    Ok(Json(group_json(g.get_ref())))
}

/// `DELETE /v1/groups/{id}/members/{user_id}`
pub async fn remove_member(
    State(state): State<AppState>,
    call: Call,
    PathParams((group, user)): PathParams<(String, String)>,
) -> Result<Json<Value>, HttpError> {
    call.require(Permission::GroupsWrite)?;
    let msg = pb::GroupMemberRequest { group_id: group, user_id: user };
    let g = access(&state).remove_group_member(call.request(msg)).await.map_err(upstream)?;
    Ok(Json(group_json(g.get_ref())))
}

fn key_json(k: &pb::ApiKey) -> Value {
    json!({
        "id": k.id, "name": k.name, "display": k.display, "scopes": k.scopes,
        "created_at": rfc3339(&k.create_time), "expires_at": rfc3339(&k.expire_time),
        "last_used_at": rfc3339(&k.last_used_time), "revoked_at": rfc3339(&k.revoke_time),
    })
}

/// `GET /v1/api-keys?page_size=&page_token=`
pub async fn list_api_keys(
    State(state): State<AppState>,
    call: Call,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<Value>, HttpError> {
    let msg = pb::ListApiKeysRequest { page_size: q.page_size, page_token: q.page_token };
    let r = sessions(&state).list_api_keys(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(
        json!({ "api_keys": r.keys.iter().map(key_json).collect::<Vec<_>>(), "next_page_token": r.next_page_token }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyBody {
    name: String,
    scopes: Vec<String>,
    #[serde(default)]
    ttl_days: u32,
}

/// `POST /v1/api-keys`: the key is in the answer, once.
pub async fn create_api_key(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody<CreateApiKeyBody>,
) -> Result<Json<Value>, HttpError> {
    call.require(Permission::ApiKeysCreate)?;
    let msg = pb::CreateApiKeyRequest { name: body.name, scopes: body.scopes, ttl_days: body.ttl_days };
    let r = sessions(&state).create_api_key(call.request(msg)).await.map_err(upstream)?.into_inner();
    let mut v = r.key.as_ref().map(key_json).unwrap_or(Value::Null);
    v["api_key"] = json!(r.api_key);
    Ok(Json(v))
}

/// `DELETE /v1/api-keys/{id}`
pub async fn revoke_api_key(
    State(state): State<AppState>,
    call: Call,
    PathParams(key): PathParams<String>,
) -> Result<Json<Value>, HttpError> {
    sessions(&state).revoke_api_key(call.request(pb::RevokeApiKeyRequest { id: key })).await.map_err(upstream)?;
    Ok(Json(json!({ "revoked": true })))
}

fn policy_json(p: &pb::Policy) -> Value {
    json!({
        "lockout_threshold": p.lockout_threshold,
        "lockout_window_secs": p.lockout_window_secs,
        "access_token_ttl_secs": p.access_token_ttl_secs,
        "refresh_token_ttl_secs": p.refresh_token_ttl_secs,
        "mfa_required_roles": p.mfa_required_roles,
        "privileged_permissions": p.privileged_permissions,
    })
}

/// `GET /v1/tenant/policy`
pub async fn get_policy(State(state): State<AppState>, call: Call) -> Result<Json<Value>, HttpError> {
    let p = access(&state).get_policy(call.request(pb::GetPolicyRequest {})).await.map_err(upstream)?;
    Ok(Json(policy_json(p.get_ref())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    lockout_threshold: u32,
    lockout_window_secs: u32,
    access_token_ttl_secs: u32,
    refresh_token_ttl_secs: u32,
    mfa_required_roles: Vec<String>,
    /// Absent or empty keeps the current list.
    #[serde(default)]
    privileged_permissions: Vec<String>,
}

/// `PUT /v1/tenant/policy`
pub async fn put_policy(
    State(state): State<AppState>,
    call: Call,
    JsonBody(b): JsonBody<PolicyBody>,
) -> Result<Json<Value>, HttpError> {
    call.require(Permission::TenantPolicyWrite)?;
    let msg = pb::Policy {
        lockout_threshold: b.lockout_threshold,
        lockout_window_secs: b.lockout_window_secs,
        access_token_ttl_secs: b.access_token_ttl_secs,
        refresh_token_ttl_secs: b.refresh_token_ttl_secs,
        mfa_required_roles: b.mfa_required_roles,
        privileged_permissions: b.privileged_permissions,
    };
    let p = access(&state).update_policy(call.request(msg)).await.map_err(upstream)?;
    Ok(Json(policy_json(p.get_ref())))
}
