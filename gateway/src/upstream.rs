//! How a request's caller is known, once: the rate-limit layer verifies the request's token and
//! leaves the [`Verification`] in the request's extensions; [`Call`] (an extractor) takes it,
//! resolves the tenant (the header's, else the credential's) and hands the handler the caller; the
//! handler checks the route's permission (`kit::authz`, as the service will) and sends the gRPC
//! request with tenant, request id and token; the answer, or a uniform JSON error, goes back.

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap};
use axum::response::{IntoResponse, Response};
use kit::ApiError;
use kit::authz::{Permission, Reach};
use kit::principal::Principal;

use crate::AppState;
use crate::http_layer::{HttpError, JsonError, RequestId};

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

/// What verifying a request's token gave (`crate::ratelimit::limit` verifies it, before it charges
/// the principal's bucket), kept in the request's extensions for [`Call`].
#[derive(Debug, Clone)]
pub struct Verification {
    pub token: String,
    pub result: Result<Principal, ApiError>,
}

/// Verifies the access token of a request: the bearer token, or, when there is no
/// `Authorization` header, the browser's session cookie (whose unsafe requests passed the CSRF
/// middleware). The rate-limit layer's [`Verification`] of the same token is taken as it is.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> Result<(Principal, String), ApiError> {
    let token = match headers.get(http::header::AUTHORIZATION) {
        Some(value) => value.to_str().ok().and_then(kit::principal::bearer).ok_or_else(|| {
            ApiError::unauthenticated("MALFORMED_AUTHORIZATION", "authorization must be a bearer token")
        })?,
        None => crate::browser::session_token(headers)
            .ok_or_else(|| ApiError::unauthenticated("TOKEN_REQUIRED", "an access token is required"))?,
    };
    let principal = match extensions.get::<Verification>().filter(|v| v.token == token) {
        Some(v) => v.result.clone()?,
        None => state.verifier.verify(token).await?,
    };
    Ok((principal, token.to_owned()))
}

/// The tenant `x-strongroom-tenant` names, if any (a malformed one is refused before anything else).
pub fn tenant_header(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
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
fn tenant_of(named: Option<String>, principal: &Principal) -> Result<String, ApiError> {
    named.or_else(|| principal.tenant.as_ref().map(ToString::to_string)).ok_or_else(|| {
        ApiError::invalid_field(kit::access::TENANT_HEADER, "required when the credential does not name its tenant")
    })
}

/// Authenticates the request and resolves its tenant (the header's, else the credential's).
async fn authenticated_principal(
    state: &AppState,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> Result<(Caller, Principal), ApiError> {
    let named = tenant_header(headers)?;
    let (principal, token) = authenticate(state, headers, extensions).await?;
    let tenant = tenant_of(named, &principal)?;
    Ok((Caller::new(tenant, token, &principal), principal))
}

/// Authenticates the request where a route cannot use [`Call`] (logout: its token is optional).
pub async fn authenticated(state: &AppState, headers: &HeaderMap, extensions: &Extensions) -> Result<Caller, ApiError> {
    authenticated_principal(state, headers, extensions).await.map(|(caller, _)| caller)
}

/// A gRPC request carrying the caller's tenant, the request id and the caller's token.
pub fn request<T>(c: &Caller, id: &RequestId, msg: T) -> tonic::Request<T> {
    kit::client::with_context(tonic::Request::new(msg), Some(&c.tenant), Some(&id.0), Some(&c.token))
}

/// A service's error, as the gateway shows it.
pub fn upstream(s: tonic::Status) -> ApiError {
    ApiError::from_status(&s)
}

/// `result` as a JSON answer, or the error's.
pub fn respond<T: serde::Serialize>(result: Result<T, ApiError>, id: RequestId) -> Response {
    match result {
        Ok(body) => Json(body).into_response(),
        Err(e) => JsonError(e, id.0).into_response(),
    }
}

/// The authenticated caller of a route and its request id, extracted before the handler runs: the
/// token (bearer or session cookie) verified once per request (the rate-limit layer's
/// [`Verification`]) and the tenant resolved (the header's, else the credential's). The handler
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
        let (caller, principal) = authenticated_principal(state, &parts.headers, &parts.extensions).await?;
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
