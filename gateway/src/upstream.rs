//! What every forwarding route does: authenticate the caller at the gateway, check the route's
//! permission, pass tenant, request id and token on to the service, and answer its result (or a
//! uniform JSON error).

use axum::Json;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use kit::ApiError;
use kit::authz::Permission;
use serde_json::Value;

use crate::AppState;
use crate::http_layer::{JsonError, RequestId};
use crate::routes::{authenticate, tenant_header, tenant_of};

/// An authenticated caller with the route's permission.
pub struct Caller {
    pub tenant: String,
    pub token: String,
    /// Who is calling: `user:<id>` or `api_key:<id>` ([`kit::outbox::Actor`]).
    pub actor: String,
}

impl Caller {
    pub fn new(tenant: String, token: String, principal: &kit::principal::Principal) -> Self {
        Self { tenant, token, actor: kit::outbox::Actor::of(principal).as_string() }
    }
}

/// Authenticates the request and checks `permission` (the service checks again).
pub async fn caller(state: &AppState, headers: &HeaderMap, permission: Permission) -> Result<Caller, ApiError> {
    let named = tenant_header(headers)?;
    let (principal, token) = authenticate(state, headers).await?;
    let tenant = tenant_of(named, &principal)?;
    principal.require(permission)?;
    Ok(Caller::new(tenant, token, &principal))
}

/// Authenticates the request, for routes whose permission auth-svc decides (own data, or
/// another's with a permission).
pub async fn authenticated(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let named = tenant_header(headers)?;
    let (principal, token) = authenticate(state, headers).await?;
    let tenant = tenant_of(named, &principal)?;
    Ok(Caller::new(tenant, token, &principal))
}

/// A gRPC request carrying the caller's tenant, the request id and the caller's token.
pub fn request<T>(c: &Caller, id: &RequestId, msg: T) -> tonic::Request<T> {
    kit::client::with_context(tonic::Request::new(msg), Some(&c.tenant), Some(&id.0), Some(&c.token))
}

/// A service's error, as the gateway shows it.
pub fn upstream(s: tonic::Status) -> ApiError {
    ApiError::from_status(&s)
}

pub fn respond(result: Result<Value, ApiError>, id: RequestId) -> Response {
    match result {
        Ok(body) => Json(body).into_response(),
        Err(e) => JsonError(e, id.0).into_response(),
    }
}
