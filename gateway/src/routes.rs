//! Routes of the HTTP API. Each handler decodes, authenticates, calls one service and maps its
//! answer; business rules live in the services.

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Extension, Json, Router};
use kit::ApiError;
use kit::principal::{Principal, bearer};
use serde_json::json;

use crate::AppState;
use crate::http_layer::{JsonError, RequestId, observe};

pub fn router(state: AppState, body_limit: usize, batch_body_limit: usize) -> Router {
    // A full batch (8,190 transfers as JSON) is larger than any other request: its own limit.
    let batches = body_limited(
        Router::new().route("/v1/ledger/transfers", axum::routing::post(crate::ledger::create_transfers)),
        batch_body_limit,
    );
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
        .route("/v1/whoami", get(whoami))
        .route("/.well-known/jwks.json", get(crate::identity::jwks))
        .route("/.well-known/openid-configuration", get(crate::identity::openid_configuration))
        .route("/v1/auth/login", post(crate::identity::login))
        .route("/v1/auth/mfa", post(crate::identity::mfa))
        .route("/v1/auth/refresh", post(crate::identity::refresh))
        .route("/v1/auth/logout", post(crate::identity::logout))
        .route("/v1/auth/step-up", post(crate::identity::step_up))
        .route("/v1/me", get(crate::identity::me))
        .route("/v1/me/export", get(crate::identity::export))
        .route("/v1/me/mfa/totp", post(crate::identity::totp_enroll))
        .route("/v1/me/mfa/totp/confirm", post(crate::identity::totp_confirm))
        .route("/v1/me/sessions", get(crate::identity::my_sessions))
        .route("/v1/me/sessions/{id}", delete(crate::identity::revoke_my_session))
        .route("/v1/users", get(crate::identity::list_users).post(crate::identity::create_user))
        .route(
            "/v1/users/{id}",
            get(crate::identity::get_user).patch(crate::identity::update_user).delete(crate::identity::delete_user),
        )
        .route("/v1/users/{id}/suspend", post(crate::identity::suspend_user))
        .route("/v1/users/{id}/reactivate", post(crate::identity::reactivate_user))
        .route("/v1/roles", get(crate::identity::list_roles).post(crate::identity::create_role))
        .route("/v1/roles/{id}", delete(crate::identity::delete_role))
        .route("/v1/roles/{id}/grant", post(crate::identity::grant_role))
        .route("/v1/roles/{id}/revoke", post(crate::identity::revoke_role))
        .route("/v1/groups", get(crate::identity::list_groups).post(crate::identity::create_group))
        .route("/v1/groups/{id}", delete(crate::identity::delete_group))
        .route("/v1/groups/{id}/members", get(crate::identity::list_group_members))
        .route(
            "/v1/groups/{id}/members/{user_id}",
            put(crate::identity::add_member).delete(crate::identity::remove_member),
        )
        .route("/v1/api-keys", get(crate::identity::list_api_keys).post(crate::identity::create_api_key))
        .route("/v1/api-keys/{id}", delete(crate::identity::revoke_api_key))
        .route("/v1/tenant/policy", get(crate::identity::get_policy).put(crate::identity::put_policy))
        .route("/v1/audit/events", get(crate::audit::list))
        .route("/v1/audit/events/{seq}", get(crate::audit::get))
        .route("/v1/audit/checkpoint", get(crate::audit::checkpoint))
        .route("/v1/audit/proofs/consistency", get(crate::audit::consistency))
        .route("/v1/audit/verifier-key", get(crate::audit::verifier_key))
        .route("/v1/audit/export", get(crate::audit::export))
        .route("/v1/audit/stream", get(crate::audit::stream))
        .route("/v1/secrets", get(crate::secrets::list))
        .route(
            "/v1/secrets/{*path}",
            get(crate::secrets::get).put(crate::secrets::put).delete(crate::secrets::delete).post(crate::secrets::post),
        )
        .route("/v1/ledger/ledgers", get(crate::ledger::list_ledgers).post(crate::ledger::create_ledger))
        .route("/v1/ledger/accounts", axum::routing::post(crate::ledger::create_account))
        .route("/v1/ledger/accounts/{id}", get(crate::ledger::get_account))
        .route("/v1/ledger/accounts/{id}/balances", get(crate::ledger::balances))
        .route("/v1/ledger/accounts/{id}/transfers", get(crate::ledger::account_transfers))
        .route("/v1/ledger/transfers/{id}", get(crate::ledger::get_transfer).post(crate::ledger::resolve))
        .route("/v1/ledger/receipts/verify", get(crate::ledger::verify))
        .fallback(not_found);
    body_limited(routes, body_limit)
        .merge(batches)
        // Then, from the inside out: CSRF defence of cookie sessions, rate limits.
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::browser::csrf))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::ratelimit::limit))
        // Outermost, so that framework rejections (413, 405) get the JSON body and headers too.
        .layer(axum::middleware::from_fn(observe))
        .with_state(state)
}

async fn not_found(Extension(id): Extension<RequestId>) -> Response {
    JsonError(ApiError::not_found("ROUTE_NOT_FOUND", "no such route"), id.0).into_response()
}

/// Liveness: the process answers.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: 200 only when every upstream reports SERVING over mTLS. The answer is computed at
/// most once a second (single flight), so the public endpoint cannot amplify load upstream.
async fn readyz(State(state): State<AppState>) -> Response {
    let mut cached = state.readiness.lock().await;
    let fresh = match cached.as_ref() {
        Some((at, status, body)) if at.elapsed() < Duration::from_secs(1) => (*status, body.clone()),
        _ => {
            let (status, body) = check_readiness(&state).await;
            *cached = Some((std::time::Instant::now(), status, body.clone()));
            (status, body)
        }
    };
    drop(cached);
    (fresh.0, Json(fresh.1)).into_response()
}

async fn check_readiness(state: &AppState) -> (http::StatusCode, serde_json::Value) {
    let checks = state.upstreams.all().map(|(name, channel)| {
        let channel = channel.clone();
        async move {
            let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
            let req = tonic::Request::new(tonic_health::pb::HealthCheckRequest { service: String::new() });
            let status = match tokio::time::timeout(Duration::from_secs(3), client.check(req)).await {
                Ok(Ok(r))
                    if r.get_ref().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 =>
                {
                    "serving"
                }
                Ok(Ok(_)) => "not_serving",
                Ok(Err(_)) | Err(_) => "unreachable",
            };
            (name, status)
        }
    });
    let results = futures::future::join_all(checks).await;
    let ready = results.iter().all(|(_, s)| *s == "serving");
    let redis = redis_status(&state.redis).await;
    let upstreams: serde_json::Map<String, serde_json::Value> =
        results.into_iter().map(|(n, s)| (n.to_owned(), json!(s))).collect();
    let body = json!({ "status": if ready { "ready" } else { "not_ready" }, "upstreams": upstreams, "redis": redis });
    let status = if ready { http::StatusCode::OK } else { http::StatusCode::SERVICE_UNAVAILABLE };
    (status, body)
}

async fn redis_status(client: &redis::Client) -> &'static str {
    let ping = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(Duration::from_secs(2), ping).await {
        Ok(Ok(_)) => "ok",
        _ => "unavailable",
    }
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}

/// `routes` with bodies limited to `limit` bytes: larger ones get 413, a declared one after
/// [`drain_oversized`] has read it.
fn body_limited(routes: Router<AppState>, limit: usize) -> Router<AppState> {
    routes
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(limit))
        .layer(axum::middleware::from_fn_with_state(limit, drain_oversized))
}

/// The most of a refused body [`drain_oversized`] reads, and for how long.
const DRAIN_BYTES: usize = 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// A request whose `Content-Length` exceeds `limit` is refused (413, by the limit layer inside)
/// only after what the client sends has been read and discarded, up to [`DRAIN_BYTES`] and
/// [`DRAIN_TIME`]. Answered and closed with its body unread, the connection is reset by the
/// kernel, and a client still writing saw the reset instead of the 413 and its JSON error.
async fn drain_oversized(
    State(limit): State<usize>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use futures::StreamExt;
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_none_or(|n| n <= limit as u64) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let mut chunks = body.into_data_stream();
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut read = 0;
        while read < DRAIN_BYTES {
            match chunks.next().await {
                Some(Ok(chunk)) => read += chunk.len(),
                _ => break,
            }
        }
    })
    .await;
    next.run(axum::extract::Request::from_parts(parts, axum::body::Body::empty())).await
}

/// Verifies the access token of a request at the gateway: the bearer token, or, when there is no
/// `Authorization` header, the browser's session cookie (whose unsafe requests passed the CSRF
/// middleware).
pub(crate) async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<(Principal, String), ApiError> {
    let token = match headers.get(http::header::AUTHORIZATION) {
        Some(value) => value.to_str().ok().and_then(bearer).ok_or_else(|| {
            ApiError::unauthenticated("MALFORMED_AUTHORIZATION", "authorization must be a bearer token")
        })?,
        None => crate::browser::session_token(headers)
            .ok_or_else(|| ApiError::unauthenticated("TOKEN_REQUIRED", "an access token is required"))?,
    };
    let principal = match crate::verified::lookup(token) {
        Some(principal) => principal,
        None => state.verifier.verify(token).await?,
    };
    Ok((principal, token.to_owned()))
}

/// The tenant `x-strongroom-tenant` names, if any (a malformed one is refused before anything else).
pub(crate) fn tenant_header(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(kit::access::TENANT_HEADER) else { return Ok(None) };
    value
        .to_str()
        .ok()
        .and_then(|raw| kit::TenantSlug::parse(raw).ok())
        .map(|s| Some(s.to_string()))
        .ok_or_else(|| ApiError::invalid_field(kit::access::TENANT_HEADER, "must match ^[a-z][a-z0-9_]{2,39}$"))
}

/// The tenant a request acts in: the header's, else the one the credential names (the service
/// checks that they agree where both are given).
pub(crate) fn tenant_of(named: Option<String>, principal: &Principal) -> Result<String, ApiError> {
    named.or_else(|| principal.tenant.as_ref().map(ToString::to_string)).ok_or_else(|| {
        ApiError::invalid_field(kit::access::TENANT_HEADER, "required when the credential does not name its tenant")
    })
}

/// The caller's own identity, as auth-svc sees it.
async fn whoami(State(state): State<AppState>, Extension(id): Extension<RequestId>, headers: HeaderMap) -> Response {
    let result = async {
        let named = tenant_header(&headers)?;
        let (principal, token) = authenticate(&state, &headers).await?;
        let tenant = tenant_of(named, &principal)?;
        let mut client =
            proto::auth::v1::identity_service_client::IdentityServiceClient::new(state.upstreams.auth.clone());
        let req = kit::client::with_context(
            tonic::Request::new(proto::auth::v1::WhoAmIRequest {}),
            Some(&tenant),
            Some(&id.0),
            Some(&token),
        );
        let me = client.who_am_i(req).await.map_err(|s| ApiError::from_status(&s))?.into_inner();
        Ok::<_, ApiError>(json!({
            "tenant_id": me.tenant_id,
            "subject": me.subject,
            "session_id": me.session_id,
            "permissions": me.permissions,
            "amr": me.amr,
        }))
    }
    .await;
    match result {
        Ok(body) => Json(body).into_response(),
        Err(e) => JsonError(e, id.0).into_response(),
    }
}
