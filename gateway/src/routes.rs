//! Routes of the HTTP API. Each handler decodes, authenticates, calls one service and maps its
//! answer; business rules live in the services.

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use kit::ApiError;
use kit::principal::{Principal, bearer};
use serde_json::json;

use crate::AppState;
use crate::http_layer::{JsonError, RequestId, observe};

pub fn router(state: AppState, body_limit: usize) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
        .route("/v1/whoami", get(whoami))
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
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(body_limit))
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

/// Verifies the bearer token of a request at the gateway.
pub(crate) async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<(Principal, String), ApiError> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthenticated("TOKEN_REQUIRED", "an access token is required"))?;
    let token =
        value.to_str().ok().and_then(bearer).ok_or_else(|| {
            ApiError::unauthenticated("MALFORMED_AUTHORIZATION", "authorization must be a bearer token")
        })?;
    let principal = state.verifier.verify(token).await?;
    Ok((principal, token.to_owned()))
}

pub(crate) fn tenant_header(headers: &HeaderMap) -> Result<String, ApiError> {
    let raw = headers
        .get(kit::access::TENANT_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::invalid_field(kit::access::TENANT_HEADER, "required"))?;
    kit::TenantSlug::parse(raw)
        .map(|s| s.to_string())
        .map_err(|_| ApiError::invalid_field(kit::access::TENANT_HEADER, "must match ^[a-z][a-z0-9_]{2,39}$"))
}

/// The caller's own identity, as auth-svc sees it.
async fn whoami(State(state): State<AppState>, Extension(id): Extension<RequestId>, headers: HeaderMap) -> Response {
    let result = async {
        let tenant = tenant_header(&headers)?;
        let (_principal, token) = authenticate(&state, &headers).await?;
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
