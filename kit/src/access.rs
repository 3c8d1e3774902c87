//! Who may call what. Every RPC a server exposes names the workload identities allowed to call
//! it; anything not declared is refused (deny by default). The layer also verifies a bearer token
//! when one is sent, so handlers receive a [`Caller`] and, optionally, a verified [`Principal`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use crate::error::ApiError;
use crate::principal::{Principal, TokenVerifier, bearer};
use crate::tenancy::TenantSlug;
use crate::tls::{Identity, PeerInfo};

/// Metadata key naming the tenant of a request.
pub const TENANT_HEADER: &str = "x-strongroom-tenant";
/// Metadata key carrying the end-to-end request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// What a request id may be, in every service and in the audit log.
pub const REQUEST_ID_RULE: &str = "1 to 128 of [A-Za-z0-9._-]";

/// Whether `v` is a request id every service accepts: 1 to 128 of `[A-Za-z0-9._-]`. The audit log
/// stores and indexes the request id of every entry, and an index entry holds at most about
/// 2.7 kB: an unbounded one would fail every drain of the tenant's audit outbox.
pub fn is_request_id(v: &str) -> bool {
    (1..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[derive(Debug, Clone)]
enum Allowed {
    /// Any peer holding a certificate of our CA with a strongroom identity.
    AnyPeer,
    Only(Vec<Identity>),
}

/// The allow-list of one server: `/package.Service/Method` (or `/package.Service/*`) → identities.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    rules: HashMap<String, Allowed>,
    /// Methods an enrolment-only session may call (see [`AccessPolicy::allow_while_enrolling`]).
    enrolling: std::collections::HashSet<String>,
}

impl AccessPolicy {
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows `identities` to call `path` (a full method path, or a service path ending in `/*`).
    ///
    /// # Panics
    /// On an identity name that is not valid; policies are static and this is a programming error.
    #[allow(clippy::expect_used)]
    pub fn allow(mut self, path: &str, identities: &[&str]) -> Self {
        let ids = identities.iter().map(|n| Identity::new(n).expect("valid identity in policy")).collect();
        self.rules.insert(path.to_owned(), Allowed::Only(ids));
        self
    }

    /// Allows every identity of the constellation (health checks, reflection, public keys).
    pub fn allow_any_peer(mut self, path: &str) -> Self {
        self.rules.insert(path.to_owned(), Allowed::AnyPeer);
        self
    }

    /// Lets a session that may only enrol a second factor (`Principal::enrollment_only`) call the
    /// method `path`; every other method refuses it (`MFA_ENROLLMENT_REQUIRED`).
    pub fn allow_while_enrolling(mut self, path: &str) -> Self {
        self.enrolling.insert(path.to_owned());
        self
    }

    /// Refuses an enrolment-only `principal` on a method not allowed while enrolling.
    pub fn check_principal(&self, path: &str, principal: &Principal) -> Result<(), ApiError> {
        if principal.enrollment_only && !self.enrolling.contains(path) {
            return Err(ApiError::permission_denied(
                "MFA_ENROLLMENT_REQUIRED",
                "this session may only enrol a second factor (TOTP); enrol, then refresh",
            ));
        }
        Ok(())
    }

    /// Decides a call.
    pub fn check(&self, path: &str, identity: Option<&Identity>) -> Result<(), ApiError> {
        let rule = self.rules.get(path).or_else(|| {
            let service = path.rsplit_once('/').map(|(s, _)| s)?;
            self.rules.get(&format!("{service}/*"))
        });
        let Some(identity) = identity else {
            return Err(ApiError::permission_denied(
                "NO_PEER_IDENTITY",
                "peer certificate carries no strongroom identity",
            ));
        };
        match rule {
            Some(Allowed::AnyPeer) => Ok(()),
            Some(Allowed::Only(ids)) if ids.contains(identity) => Ok(()),
            _ => Err(ApiError::permission_denied("CALLER_NOT_ALLOWED", format!("{identity} may not call {path}"))),
        }
    }
}

/// The workload on the other end of the mTLS connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub identity: Identity,
    pub remote_addr: Option<std::net::SocketAddr>,
}

/// Everything a handler needs to know about who is asking.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub caller: Caller,
    pub principal: Option<Principal>,
    pub request_id: Option<String>,
    tenant: Option<String>,
}

impl RequestContext {
    /// Reads the context the access layer attached to a request.
    pub fn of<T>(req: &tonic::Request<T>) -> Result<Self, ApiError> {
        let caller = req
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::permission_denied("NO_PEER_IDENTITY", "no authenticated peer"))?;
        let principal = req.extensions().get::<Principal>().cloned();
        let text = |key: &str| req.metadata().get(key).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let request_id = match req.metadata().get(REQUEST_ID_HEADER) {
            None => None,
            Some(v) => match v.to_str() {
                Ok(id) if is_request_id(id) => Some(id.to_owned()),
                _ => return Err(ApiError::invalid_field(REQUEST_ID_HEADER, REQUEST_ID_RULE)),
            },
        };
        Ok(Self { caller, principal, request_id, tenant: text(TENANT_HEADER) })
    }

    /// The request id a request names in its body's `request_id` field, else the one of its
    /// `x-request-id` metadata; refuses one that is not [`is_request_id`].
    pub fn request_id_or(&self, field: String) -> Result<Option<String>, ApiError> {
        match field.as_str() {
            "" => Ok(self.request_id.clone()),
            id if is_request_id(id) => Ok(Some(field)),
            _ => Err(ApiError::invalid_field("request_id", REQUEST_ID_RULE)),
        }
    }

    /// The tenant the request acts in: the one `x-strongroom-tenant` names, else the one the
    /// caller's credential names. Where both are given, resolving the tenant checks that they
    /// agree (`Db::authorize_tenant`, `TENANT_MISMATCH`).
    pub fn tenant_slug(&self) -> Result<TenantSlug, ApiError> {
        match (self.tenant.as_deref(), self.principal.as_ref().and_then(|p| p.tenant.clone())) {
            (Some(raw), _) => TenantSlug::parse(raw)
                .map_err(|_| ApiError::invalid_field(TENANT_HEADER, "must match ^[a-z][a-z0-9_]{2,39}$")),
            (None, Some(slug)) => Ok(slug),
            (None, None) => {
                Err(ApiError::invalid_field(TENANT_HEADER, "required when the credential does not name its tenant"))
            }
        }
    }

    /// The verified principal, or UNAUTHENTICATED.
    pub fn require_principal(&self) -> Result<&Principal, ApiError> {
        self.principal
            .as_ref()
            .ok_or_else(|| ApiError::unauthenticated("TOKEN_REQUIRED", "an access token is required"))
    }
}

/// Tower layer enforcing an [`AccessPolicy`] and verifying bearer tokens.
#[derive(Clone)]
pub struct AccessLayer {
    policy: Arc<AccessPolicy>,
    verifier: Option<TokenVerifier>,
}

impl AccessLayer {
    pub fn new(policy: AccessPolicy, verifier: Option<TokenVerifier>) -> Self {
        Self { policy: Arc::new(policy), verifier }
    }
}

impl<S> Layer<S> for AccessLayer {
    type Service = AccessService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessService { inner, policy: self.policy.clone(), verifier: self.verifier.clone() }
    }
}

#[derive(Clone)]
pub struct AccessService<S> {
    inner: S,
    policy: Arc<AccessPolicy>,
    verifier: Option<TokenVerifier>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<http::Request<B>> for AccessService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let peer = req.extensions().get::<PeerInfo>().cloned();
        let identity = peer.as_ref().and_then(|p| p.identity.clone());
        let path = req.uri().path().to_owned();
        if let Err(e) = self.policy.check(&path, identity.as_ref()) {
            tracing::warn!(
                peer = ?identity,
                remote = ?peer.as_ref().and_then(|p| p.remote_addr),
                rpc = %path,
                reason = %e.reason,
                "call refused"
            );
            crate::metrics::Metrics::global().event("call_refused");
            return Box::pin(std::future::ready(Ok(e.to_status().into_http())));
        }
        let Some(identity) = identity else {
            return Box::pin(std::future::ready(Ok(ApiError::permission_denied("NO_PEER_IDENTITY", "no identity")
                .to_status()
                .into_http())));
        };
        req.extensions_mut().insert(Caller { identity, remote_addr: peer.and_then(|p| p.remote_addr) });
        let token = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| bearer(v).map(str::to_owned));
        let verifier = self.verifier.clone();
        let policy = self.policy.clone();
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            match (token, verifier) {
                (None, _) => {}
                (Some(None), _) => {
                    return Ok(ApiError::unauthenticated(
                        "MALFORMED_AUTHORIZATION",
                        "authorization must be a bearer token",
                    )
                    .to_status()
                    .into_http());
                }
                (Some(Some(_)), None) => {
                    return Ok(ApiError::unauthenticated("TOKENS_NOT_ACCEPTED", "this server does not accept tokens")
                        .to_status()
                        .into_http());
                }
                (Some(Some(token)), Some(verifier)) => match verifier.verify(&token).await {
                    Ok(principal) => {
                        if let Err(e) = policy.check_principal(&path, &principal) {
                            tracing::info!(rpc = %path, reason = %e.reason, "enrolment-only session refused");
                            return Ok(e.to_status().into_http());
                        }
                        req.extensions_mut().insert(principal);
                    }
                    Err(e) => {
                        tracing::warn!(rpc = %path, reason = %e.reason, "access token refused");
                        crate::metrics::Metrics::global().event("token_refused");
                        return Ok(e.to_status().into_http());
                    }
                },
            }
            inner.call(req).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: &str) -> Identity {
        Identity::new(n).expect("id")
    }

    #[test]
    fn deny_by_default() {
        let policy = AccessPolicy::new()
            .allow("/strongroom.vault.v1.KeyManagementService/ListTenantKeys", &["operator"])
            .allow_any_peer("/grpc.health.v1.Health/*");
        let list_keys = "/strongroom.vault.v1.KeyManagementService/ListTenantKeys";
        assert!(policy.check(list_keys, Some(&id("operator"))).is_ok());
        assert!(policy.check(list_keys, Some(&id("gateway"))).is_err());
        assert!(policy.check(list_keys, None).is_err());
        assert!(policy.check("/grpc.health.v1.Health/Check", Some(&id("gateway"))).is_ok());
        assert!(policy.check("/grpc.health.v1.Health/Check", None).is_err());
        assert!(policy.check("/strongroom.vault.v1.KeyManagementService/Other", Some(&id("operator"))).is_err());
        assert!(policy.check("/x.Y/Z", Some(&id("operator"))).is_err());
    }

    #[test]
    fn an_enrolment_only_session_reaches_only_the_methods_allowed_while_enrolling() {
        let policy = AccessPolicy::new().allow_while_enrolling("/strongroom.auth.v1.SessionService/EnrollTotp");
        let mut p = Principal {
            tenant_id: crate::tenancy::TenantId(uuid::Uuid::nil()),
            tenant: None,
            subject: "owner".into(),
            session_id: Some("s".into()),
            token_id: "j".into(),
            permissions: vec![],
            roles: vec![],
            amr: vec!["pwd".into()],
            expires_at: i64::MAX,
            mfa_time: None,
            enrollment_only: true,
        };
        assert!(policy.check_principal("/strongroom.auth.v1.SessionService/EnrollTotp", &p).is_ok());
        let refused = policy.check_principal("/strongroom.auth.v1.SessionService/ListSessions", &p);
        assert_eq!(refused.expect_err("refused").reason, "MFA_ENROLLMENT_REQUIRED");
        p.enrollment_only = false;
        assert!(policy.check_principal("/strongroom.auth.v1.SessionService/ListSessions", &p).is_ok());
    }
}
