//! Routes of the HTTP API. Each handler decodes, authenticates, calls one service and maps its
//! answer; business rules live in the services.

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use kit::ApiError;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::http_layer::{HttpError, JsonError, RequestId, observe};
use crate::identity::{appeals, directory, hosted, login, me, oauth, oidc, passkeys, privacy};
use crate::openapi::ErrorBody;
use crate::upstream::{Call, upstream};

/// Every route of the API with its documentation: `(routes, batches)`, the batch route apart for
/// its own body limit. A route added with `routes!` is in the OpenAPI document by construction.
fn api_parts() -> (OpenApiRouter<AppState>, OpenApiRouter<AppState>) {
    let batches = OpenApiRouter::new().routes(routes!(crate::ledger::create_transfers));
    let routes = OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(openapi))
        .routes(routes!(whoami))
        .routes(routes!(login::login))
        .routes(routes!(login::mfa))
        .routes(routes!(login::refresh))
        .routes(routes!(login::logout))
        .routes(routes!(login::step_up))
        .routes(routes!(passkeys::start_login))
        .routes(routes!(passkeys::login))
        .routes(routes!(passkeys::start_second_factor))
        .routes(routes!(passkeys::second_factor))
        .routes(routes!(passkeys::start_step_up))
        .routes(routes!(passkeys::step_up))
        .routes(routes!(passkeys::list, passkeys::register))
        .routes(routes!(passkeys::start_registration))
        .routes(routes!(passkeys::delete))
        .routes(routes!(appeals::file))
        .routes(routes!(appeals::status))
        .routes(routes!(appeals::answer))
        .routes(routes!(appeals::list))
        .routes(routes!(appeals::request_information))
        .routes(routes!(appeals::decide))
        .routes(routes!(me::me))
        .routes(routes!(me::export))
        .routes(routes!(me::change_password))
        .routes(routes!(me::change_email))
        .routes(routes!(me::totp_enroll))
        .routes(routes!(me::totp_confirm))
        .routes(routes!(me::my_sessions))
        .routes(routes!(me::revoke_my_session))
        .routes(routes!(privacy::file_mine, privacy::list_mine))
        .routes(routes!(privacy::file, privacy::list))
        .routes(routes!(privacy::get))
        .routes(routes!(privacy::update))
        .routes(routes!(privacy::execute))
        .routes(routes!(privacy::place_hold, privacy::list_holds))
        .routes(routes!(privacy::release_hold))
        .routes(routes!(directory::list_users, directory::create_user))
        .routes(routes!(directory::get_user, directory::update_user, directory::delete_user))
        .routes(routes!(directory::suspend_user))
        .routes(routes!(directory::reactivate_user))
        .routes(routes!(directory::list_roles, directory::create_role))
        .routes(routes!(directory::delete_role))
        .routes(routes!(directory::grant_role))
        .routes(routes!(directory::revoke_role))
        .routes(routes!(directory::list_groups, directory::create_group))
        .routes(routes!(directory::delete_group))
        .routes(routes!(directory::list_group_members))
        .routes(routes!(directory::add_member, directory::remove_member))
        .routes(routes!(directory::list_api_keys, directory::create_api_key))
        .routes(routes!(directory::revoke_api_key))
        .routes(routes!(oauth::list_clients, oauth::create_client))
        .routes(routes!(oauth::get_client, oauth::put_client, oauth::delete_client))
        .routes(routes!(oauth::rotate_secret))
        // The hosted login pages (HTML, documented in docs/identity.md, not in the API document).
        .route("/t/{tenant}/oauth/authorize", get(hosted::authorize_page).post(hosted::authorize_step))
        .route("/t/{tenant}/oauth/logout", get(hosted::logout))
        .route("/oauth/assets/hosted.css", get(hosted::stylesheet))
        .route("/oauth/assets/hosted.js", get(hosted::script))
        .routes(routes!(directory::get_policy, directory::put_policy))
        .routes(routes!(crate::retention::get_policy, crate::retention::put_policy))
        .routes(routes!(crate::retention::list_classes))
        .routes(routes!(crate::retention::put_class))
        .routes(routes!(crate::audit::list))
        .routes(routes!(crate::audit::get))
        .routes(routes!(crate::audit::checkpoint))
        .routes(routes!(crate::audit::consistency))
        .routes(routes!(crate::audit::verifier_key))
        .routes(routes!(crate::audit::export))
        .routes(routes!(crate::audit::stream))
        .routes(routes!(crate::secrets::list))
        // One segment or many, and `:reveal` at the end: documented in `openapi::ApiDoc`.
        .route(
            "/v1/secrets/{*path}",
            get(crate::secrets::get).put(crate::secrets::put).delete(crate::secrets::delete).post(crate::secrets::post),
        )
        .routes(routes!(crate::ledger::list_ledgers, crate::ledger::create_ledger))
        .routes(routes!(crate::ledger::create_account))
        .routes(routes!(crate::ledger::get_account))
        .routes(routes!(crate::ledger::balances))
        .routes(routes!(crate::ledger::account_transfers))
        .routes(routes!(crate::ledger::get_transfer))
        // `{id}:post` and `{id}:void`: documented in `openapi::ApiDoc`.
        .route("/v1/ledger/transfers/{id}", post(crate::ledger::resolve))
        .routes(routes!(crate::ledger::verify));
    (routes.merge(relying_party_routes()), batches)
}

/// What a relying party's code calls from the browser (an SPA with oidc-client-ts on its own
/// origin): the discovery documents, the JWKS, and the token, UserInfo, revocation and
/// introspection endpoints. They answer CORS from any origin, without credentials: none of them
/// reads a cookie (a client proves itself in the request), so no other site gains anything a
/// script could not do from a server.
fn relying_party_routes() -> OpenApiRouter<AppState> {
    let cors = tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([http::Method::GET, http::Method::POST])
        .allow_headers([http::header::AUTHORIZATION, http::header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600));
    OpenApiRouter::new()
        .routes(routes!(login::jwks))
        .routes(routes!(login::openid_configuration))
        .routes(routes!(oidc::discovery))
        .routes(routes!(oauth::token))
        .routes(routes!(oauth::revoke))
        .routes(routes!(oauth::introspect))
        .routes(routes!(oidc::userinfo))
        .layer(cors)
}

/// Every route with its documentation (the OpenAPI document's source).
pub fn api() -> OpenApiRouter<AppState> {
    let (routes, batches) = api_parts();
    routes.merge(batches)
}

pub fn router(state: AppState, body_limit: usize, batch_body_limit: usize) -> Router {
    let (routes, batches) = api_parts();
    // A full batch (8,190 transfers as JSON) is larger than any other request: its own limit.
    let routes = body_limited(routes.split_for_parts().0.fallback(not_found), body_limit)
        .merge(body_limited(batches.split_for_parts().0, batch_body_limit));
    routes
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

/// The liveness answer.
#[derive(Serialize, ToSchema)]
struct Alive {
    /// Always `ok`.
    status: &'static str,
}

/// Liveness of the gateway process.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", responses((status = 200, description = "alive", body = Alive)))]
async fn healthz() -> Json<Alive> {
    Json(Alive { status: "ok" })
}

/// Whether every upstream serves.
#[derive(Serialize, ToSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Ready {
    Ready,
    NotReady,
}

/// What an upstream answered to the health check.
#[derive(Serialize, ToSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Upstream {
    Serving,
    NotServing,
    Unreachable,
}

/// Whether Redis answered a PING.
#[derive(Serialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum RedisState {
    Ok,
    Unavailable,
}

/// The readiness answer.
#[derive(Serialize, ToSchema)]
struct Readiness {
    status: Ready,
    /// Each upstream service by name.
    upstreams: std::collections::BTreeMap<&'static str, Upstream>,
    redis: RedisState,
}

/// Readiness: every upstream service reports SERVING over mTLS.
///
/// 200 only when every upstream reports SERVING. The answer is computed at most once a second
/// (single flight), so the public endpoint cannot amplify load upstream.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", responses(
    (status = 200, description = "ready", body = Readiness),
    (status = 503, description = "an upstream is not serving", body = Readiness),
))]
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
                    Upstream::Serving
                }
                Ok(Ok(_)) => Upstream::NotServing,
                Ok(Err(_)) | Err(_) => Upstream::Unreachable,
            };
            (name, status)
        }
    });
    let upstreams: std::collections::BTreeMap<_, _> = futures::future::join_all(checks).await.into_iter().collect();
    let ready = upstreams.values().all(|s| *s == Upstream::Serving);
    let body = Readiness {
        status: if ready { Ready::Ready } else { Ready::NotReady },
        upstreams,
        redis: redis_status(&state.redis).await,
    };
    let status = if ready { http::StatusCode::OK } else { http::StatusCode::SERVICE_UNAVAILABLE };
    (status, serde_json::to_value(body).unwrap_or_default())
}

async fn redis_status(client: &redis::Client) -> RedisState {
    let ping = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(Duration::from_secs(2), ping).await {
        Ok(Ok(_)) => RedisState::Ok,
        _ => RedisState::Unavailable,
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi", responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
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

/// The verified principal of the credential, as auth-svc sees it.
#[derive(Serialize, ToSchema)]
#[schema(as = Principal)]
struct WhoAmI {
    #[schema(format = "uuid")]
    tenant_id: String,
    subject: String,
    session_id: String,
    permissions: Vec<String>,
    amr: Vec<String>,
}

/// The verified principal of the bearer token.
#[utoipa::path(get, path = "/v1/whoami", operation_id = "whoami", responses(
    (status = 200, description = "the principal", body = WhoAmI),
    (status = 400, description = "missing or malformed tenant", body = ErrorBody),
    (status = 401, description = "missing, malformed, expired or forged token", body = ErrorBody),
    (status = 403, description = "token of another tenant", body = ErrorBody),
    (status = 404, description = "unknown tenant", body = ErrorBody),
))]
async fn whoami(State(state): State<AppState>, call: Call) -> Result<Json<WhoAmI>, HttpError> {
    let mut client = proto::auth::v1::identity_service_client::IdentityServiceClient::new(state.upstreams.auth.clone());
    let me = client.who_am_i(call.request(proto::auth::v1::WhoAmIRequest {})).await.map_err(upstream)?.into_inner();
    Ok(Json(WhoAmI {
        tenant_id: me.tenant_id,
        subject: me.subject,
        session_id: me.session_id,
        permissions: me.permissions,
        amr: me.amr,
    }))
}
