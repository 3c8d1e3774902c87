//! What every forwarding route does: authenticate the caller at the gateway ([`Call`], an
//! extractor), check the route's permission (`kit::authz`, as the service will), pass tenant,
//! request id and token on to the service, and answer its result (or a uniform JSON error).

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use kit::ApiError;
use kit::authz::{Permission, Reach};
use kit::principal::Principal;
use serde_json::Value;

use crate::AppState;
use crate::http_layer::{HttpError, JsonError, RequestId};
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

/// Authenticates the request and resolves its tenant (the header's, else the credential's).
async fn authenticated_principal(state: &AppState, headers: &HeaderMap) -> Result<(Caller, Principal), ApiError> {
    let named = tenant_header(headers)?;
    let (principal, token) = authenticate(state, headers).await?;
    let tenant = tenant_of(named, &principal)?;
    Ok((Caller::new(tenant, token, &principal), principal))
}

/// Authenticates the request where a route cannot use [`Call`] (logout: its token is optional).
pub async fn authenticated(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    authenticated_principal(state, headers).await.map(|(caller, _)| caller)
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

/// The authenticated caller of a route and its request id, extracted before the handler runs: the
/// token (bearer or session cookie) verified — once per request, reusing the rate limiter's
/// verification — and the tenant resolved (the header's, else the credential's). The handler
/// checks the route's permission with [`Call::require`] (or lets the service decide).
pub struct Call {
    pub caller: Caller,
    pub principal: Principal,
    pub id: RequestId,
}

impl FromRequestParts<AppState> for Call {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, HttpError> {
        let id = RequestId(RequestId::of(&parts.extensions));
        let (caller, principal) = authenticated_principal(state, &parts.headers).await?;
        Ok(Self { caller, principal, id })
    }
}

impl Call {
    /// Requires `permission` (the service checks it again, with the same `kit::authz`).
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        self.principal.require(permission)
    }

    /// Requires `permission` or its owner-scoped form (the service then limits what is reached).
    pub fn reach(&self, permission: Permission) -> Result<Reach, ApiError> {
        self.principal.reach(permission)
    }

    /// A gRPC request carrying the caller's tenant, the request id and the caller's token.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        request(&self.caller, &self.id, msg)
    }
}
