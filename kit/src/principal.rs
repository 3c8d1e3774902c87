//! End-user principals: verification of access tokens (JWT) against auth-svc's JWKS.
//!
//! Only EdDSA and ES256 are accepted; `alg=none`, HMAC and RSA are refused before any key is
//! touched (an HMAC token "signed" with a public key is the classic confusion attack). The `kid`
//! must name a key of the JWKS whose algorithm equals the header's; `typ` must be `at+jwt`;
//! `iss`, `aud`, `exp`, `nbf` are checked. An unknown `kid` triggers one rate-limited refresh.
//! Tokens are never logged.
//!
//! A successful verification is remembered under the SHA-256 of the exact token for at most
//! [`VERIFIED_TTL`] (never past the token's `exp`) and forgotten whenever the JWKS is fetched again,
//! so a token seen again skips the signature check; its revocation is checked on every use.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, RwLock};

use crate::config::JwtConfig;
use crate::error::ApiError;
use crate::revocation::{Revocations, Revoked};
use crate::tenancy::{TenantId, TenantSlug};

/// A verified end user (or machine agent) acting through a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: TenantId,
    /// The tenant's slug, when the credential names it (access tokens' claim `tenant`, API keys):
    /// a request with such a credential needs no `x-strongroom-tenant`. The slug is checked
    /// against `tenant_id` wherever the tenant is resolved.
    pub tenant: Option<TenantSlug>,
    pub subject: String,
    pub session_id: Option<String>,
    pub token_id: String,
    pub permissions: Vec<String>,
    pub roles: Vec<String>,
    /// Authentication methods (RFC 8176), e.g. `pwd`, `otp`.
    pub amr: Vec<String>,
    pub expires_at: i64,
    /// When the session last passed a second factor (Unix seconds), for step-up.
    pub mfa_time: Option<i64>,
    /// The session may only enrol a second factor (claim `mfa_enrollment_required`): a privileged
    /// user without TOTP. Servers refuse it every call not allowed while enrolling.
    pub enrollment_only: bool,
}

/// How recent a second factor must be for a sensitive operation.
pub const STEP_UP_MAX_AGE_SECS: i64 = 600;

impl Principal {
    pub fn has_permission(&self, permission: &str) -> bool {
        self.permissions.iter().any(|p| p == permission)
    }

    /// Requires a second factor within [`STEP_UP_MAX_AGE_SECS`] for a sensitive operation
    /// (FAILED_PRECONDITION `STEP_UP_REQUIRED`; the client calls `POST /v1/auth/step-up`).
    /// API keys pass: a key carrying a step-up permission was minted with a recent second factor
    /// (auth-svc `CreateApiKey`), and its scopes bound it.
    pub fn require_recent_mfa(&self) -> Result<(), ApiError> {
        if self.amr.iter().any(|m| m == "api_key") {
            return Ok(());
        }
        let now = chrono::Utc::now().timestamp();
        match self.mfa_time {
            Some(t) if now - t <= STEP_UP_MAX_AGE_SECS => Ok(()),
            _ => Err(ApiError::failed_precondition(
                "STEP_UP_REQUIRED",
                "this operation needs a second factor within the last 10 minutes: POST /v1/auth/step-up",
            )),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    tid: String,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    sid: Option<String>,
    jti: String,
    exp: i64,
    #[serde(default)]
    amr: Vec<String>,
    #[serde(default)]
    permissions: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    mfa_time: Option<i64>,
    #[serde(default)]
    mfa_enrollment_required: bool,
}

/// Fetches the current JWKS (the `proto` form) from auth-svc and resolves API keys.
#[derive(Clone)]
pub struct JwksClient {
    keys: proto::auth::v1::keys_service_client::KeysServiceClient<crate::client::Channel>,
    authn: proto::auth::v1::authentication_service_client::AuthenticationServiceClient<crate::client::Channel>,
}

impl JwksClient {
    pub fn new(channel: crate::client::Channel) -> Self {
        Self {
            keys: proto::auth::v1::keys_service_client::KeysServiceClient::new(channel.clone()),
            authn: proto::auth::v1::authentication_service_client::AuthenticationServiceClient::new(channel),
        }
    }

    async fn fetch(&self) -> Result<Vec<proto::auth::v1::Jwk>, tonic::Status> {
        let mut client = self.keys.clone();
        Ok(client.get_jwks(proto::auth::v1::GetJwksRequest {}).await?.into_inner().keys)
    }

    async fn introspect(&self, api_key: &str) -> Result<proto::auth::v1::IntrospectApiKeyResponse, tonic::Status> {
        let mut client = self.authn.clone();
        let req = proto::auth::v1::IntrospectApiKeyRequest { api_key: api_key.to_owned() };
        Ok(client.introspect_api_key(req).await?.into_inner())
    }
}

/// How long a resolved API key is trusted before auth-svc is asked again (its revocation is
/// checked on every use regardless).
const API_KEY_TTL: Duration = Duration::from_secs(30);
const API_KEY_CACHE_MAX: usize = 10_000;

/// How long a "not revoked" answer is reused: a revocation takes effect everywhere within this.
pub const REVOCATION_RECHECK: Duration = Duration::from_millis(500);

/// Resolved API keys by SHA-256, with when they were resolved (and that in Unix milliseconds, to
/// compare with auth-svc's permission changes).
type ApiKeyCache = HashMap<[u8; 32], (Principal, Instant, i64)>;

/// How long an API key auth-svc did not know is refused without asking again: the checksum of a
/// key is not secret, so anyone can mint well-formed keys, and each unknown one cost an
/// introspection and a database lookup.
const UNKNOWN_API_KEY_TTL: Duration = Duration::from_secs(30);

/// How long a verified access token is taken as verified without checking its signature again.
pub const VERIFIED_TTL: Duration = Duration::from_secs(30);
const VERIFIED_CACHE_MAX: usize = 10_000;

/// Access tokens verified recently, by SHA-256 of the exact token, with when that stops counting.
type VerifiedCache = HashMap<[u8; 32], (Principal, Instant)>;

struct Key {
    alg: Algorithm,
    key: DecodingKey,
    /// A tenant key signs only that tenant's tokens.
    tenant: Option<uuid::Uuid>,
}

/// Verifies access tokens; cheap to clone.
#[derive(Clone)]
pub struct TokenVerifier {
    cfg: Arc<JwtConfig>,
    source: JwksClient,
    keys: Arc<RwLock<Keys>>,
    last_refresh: Arc<Mutex<Option<Instant>>>,
    revocations: Option<Revocations>,
    api_keys: Arc<RwLock<ApiKeyCache>>,
    /// API keys auth-svc answered unknown, by SHA-256, with when ([`UNKNOWN_API_KEY_TTL`]).
    unknown_keys: Arc<RwLock<HashMap<[u8; 32], Instant>>>,
    /// Sessions and keys recently found NOT revoked, and when: each is asked again after
    /// [`REVOCATION_RECHECK`], so a revocation takes effect within that time.
    not_revoked: Arc<RwLock<HashMap<String, Instant>>>,
    /// Signatures already checked: an EdDSA verification costs ~50 µs of CPU per request.
    verified: Arc<RwLock<VerifiedCache>>,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, Arc<Key>>,
    fetched_at: Option<Instant>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier").field("issuer", &self.cfg.issuer).finish_non_exhaustive()
    }
}

/// Minimum time between two JWKS fetches triggered by unknown `kid`s (a flood of forged tokens
/// must not become a flood of fetches).
const REFRESH_COOLDOWN: Duration = Duration::from_millis(500);
/// How long a fetched JWKS is trusted: a key withdrawn by auth-svc stops verifying within this.
const JWKS_TTL: Duration = Duration::from_secs(300);

fn algorithm(alg: &str) -> Option<Algorithm> {
    match alg {
        "EdDSA" => Some(Algorithm::EdDSA),
        "ES256" => Some(Algorithm::ES256),
        _ => None,
    }
}

fn decoding_key(jwk: &proto::auth::v1::Jwk) -> Option<Key> {
    let alg = algorithm(&jwk.alg)?;
    let mut json = serde_json::json!({ "kty": jwk.kty, "crv": jwk.crv, "x": jwk.x, "kid": jwk.kid, "alg": jwk.alg });
    if !jwk.y.is_empty() {
        json["y"] = serde_json::Value::String(jwk.y.clone());
    }
    let parsed: jsonwebtoken::jwk::Jwk = serde_json::from_value(json).ok()?;
    let key = DecodingKey::from_jwk(&parsed).ok()?;
    let tenant = if jwk.tenant_id.is_empty() { None } else { Some(uuid::Uuid::parse_str(&jwk.tenant_id).ok()?) };
    Some(Key { alg, key, tenant })
}

fn invalid(reason: &'static str) -> ApiError {
    ApiError::unauthenticated(reason, "invalid access token")
}

impl TokenVerifier {
    /// A verifier; with `jwt.revocations_url` set it also checks revocations (`redis_ca` verifies a
    /// `rediss://` list: the constellation's CA).
    pub fn new(cfg: JwtConfig, source: JwksClient, redis_ca: Option<&std::path::Path>) -> Result<Self, String> {
        let revocations = cfg.revocations_url.as_ref().map(|url| Revocations::new(url, redis_ca)).transpose()?;
        if revocations.is_none() {
            tracing::warn!("jwt.revocations_url is not set: revoked sessions stay usable until their tokens expire");
        }
        Ok(Self {
            cfg: Arc::new(cfg),
            source,
            keys: Arc::default(),
            last_refresh: Arc::default(),
            revocations,
            api_keys: Arc::default(),
            unknown_keys: Arc::default(),
            not_revoked: Arc::default(),
            verified: Arc::default(),
        })
    }

    /// The revocation list, when configured.
    pub fn revocations(&self) -> Option<&Revocations> {
        self.revocations.as_ref()
    }

    async fn check_revoked(&self, kind: Revoked, id: &str) -> Result<(), ApiError> {
        let Some(list) = &self.revocations else { return Ok(()) };
        let key = format!("{kind:?}:{id}");
        if self.not_revoked.read().await.get(&key).is_some_and(|at| at.elapsed() < REVOCATION_RECHECK) {
            return Ok(());
        }
        if !list.is_revoked(kind, id).await? {
            let mut seen = self.not_revoked.write().await;
            if seen.len() >= API_KEY_CACHE_MAX * 10 {
                seen.retain(|_, at| at.elapsed() < REVOCATION_RECHECK);
            }
            seen.insert(key, Instant::now());
            return Ok(());
        }
        Err(ApiError::unauthenticated(
            match kind {
                Revoked::Session => "SESSION_REVOKED",
                Revoked::ApiKey => "API_KEY_REVOKED",
            },
            "the credential has been revoked",
        ))
    }

    /// Resolves an API key through auth-svc (cached briefly), then checks its revocation and
    /// whether its tenant's permissions changed since it was resolved (then resolves it again:
    /// a key's permissions are its scopes within its creator's current ones).
    async fn verify_api_key(&self, key: &str) -> Result<Principal, ApiError> {
        if !crate::apikey::well_formed(key) {
            return Err(invalid("MALFORMED_API_KEY"));
        }
        let digest = crate::apikey::hash(key);
        let cached = self.api_keys.read().await.get(&digest).filter(|(_, at, _)| at.elapsed() < API_KEY_TTL).cloned();
        let (principal, resolved_ms) = match cached {
            Some((p, _, resolved_ms)) => (p, resolved_ms),
            None => self.resolve_api_key(key, digest).await?,
        };
        if principal.expires_at <= chrono::Utc::now().timestamp() {
            return Err(invalid("API_KEY_EXPIRED"));
        }
        if self.api_key_is_current(&principal, resolved_ms).await? {
            return Ok(principal);
        }
        // Resolved before a permission change of its tenant: ask auth-svc again.
        let (principal, _) = self.resolve_api_key(key, digest).await?;
        if principal.expires_at <= chrono::Utc::now().timestamp() {
            return Err(invalid("API_KEY_EXPIRED"));
        }
        Ok(principal)
    }

    /// Whether a key resolved at `resolved_ms` may be used as resolved: `Err` when revoked,
    /// `Ok(false)` when its tenant's permissions changed since. Reuses a "current" answer for
    /// [`REVOCATION_RECHECK`].
    async fn api_key_is_current(&self, principal: &Principal, resolved_ms: i64) -> Result<bool, ApiError> {
        let Some(list) = &self.revocations else { return Ok(true) };
        let seen = format!("{:?}:{}", Revoked::ApiKey, principal.token_id);
        if self.not_revoked.read().await.get(&seen).is_some_and(|at| at.elapsed() < REVOCATION_RECHECK) {
            return Ok(true);
        }
        let (revoked, changed_ms) = list.api_key_state(&principal.token_id, principal.tenant_id.0).await?;
        if revoked {
            return Err(ApiError::unauthenticated("API_KEY_REVOKED", "the credential has been revoked"));
        }
        if changed_ms.is_some_and(|changed| changed >= resolved_ms) {
            return Ok(false);
        }
        let mut current = self.not_revoked.write().await;
        if current.len() >= API_KEY_CACHE_MAX * 10 {
            current.retain(|_, at| at.elapsed() < REVOCATION_RECHECK);
        }
        current.insert(seen, Instant::now());
        Ok(true)
    }

    /// Asks auth-svc what `key` proves (remembering an unknown key), and caches the answer.
    async fn resolve_api_key(&self, key: &str, digest: [u8; 32]) -> Result<(Principal, i64), ApiError> {
        let known_unknown =
            self.unknown_keys.read().await.get(&digest).is_some_and(|at| at.elapsed() < UNKNOWN_API_KEY_TTL);
        if known_unknown {
            return Err(invalid("UNKNOWN_API_KEY"));
        }
        // Taken before asking, from Redis's clock (the one auth-svc's marks are read from): a change
        // made while auth-svc answers makes the answer stale.
        let resolved_ms = match &self.revocations {
            Some(list) => list.now_ms().await?,
            None => chrono::Utc::now().timestamp_millis(),
        };
        let resolved = match self.source.introspect(key).await {
            Ok(resolved) => resolved,
            Err(s) => match s.code() {
                tonic::Code::Unauthenticated | tonic::Code::NotFound | tonic::Code::PermissionDenied => {
                    let mut unknown = self.unknown_keys.write().await;
                    if unknown.len() >= API_KEY_CACHE_MAX {
                        unknown.retain(|_, at| at.elapsed() < UNKNOWN_API_KEY_TTL);
                        if unknown.len() >= API_KEY_CACHE_MAX {
                            unknown.clear();
                        }
                    }
                    unknown.insert(digest, Instant::now());
                    return Err(invalid("UNKNOWN_API_KEY"));
                }
                _ => {
                    return Err(ApiError::unavailable(
                        "API_KEY_CHECK_UNAVAILABLE",
                        "cannot check the API key, retry later",
                    ));
                }
            },
        };
        let tenant = uuid::Uuid::parse_str(&resolved.tenant_id).map_err(|_| invalid("UNKNOWN_API_KEY"))?;
        let slug = Some(resolved.tenant_slug.as_str()).filter(|s| !s.is_empty()).map(TenantSlug::parse).transpose();
        let p = Principal {
            tenant_id: TenantId(tenant),
            tenant: slug.map_err(|_| invalid("UNKNOWN_API_KEY"))?,
            subject: resolved.subject,
            session_id: None,
            token_id: resolved.key_id,
            permissions: resolved.permissions,
            roles: Vec::new(),
            amr: vec!["api_key".into()],
            expires_at: resolved.expires_at,
            mfa_time: None,
            enrollment_only: false,
        };
        let mut cache = self.api_keys.write().await;
        if cache.len() >= API_KEY_CACHE_MAX {
            cache.clear();
        }
        cache.insert(digest, (p.clone(), Instant::now(), resolved_ms));
        Ok((p, resolved_ms))
    }

    /// Re-fetches the JWKS unless that happened since `asked_at`; at most once per cooldown, so
    /// a key published just after the last fetch (a new tenant's first token) is waited for
    /// rather than refused.
    async fn refresh(&self, asked_at: Instant) -> Result<(), ApiError> {
        let mut last = self.last_refresh.lock().await;
        if last.is_some_and(|at| at >= asked_at) {
            return Ok(());
        }
        if let Some(at) = *last {
            tokio::time::sleep(REFRESH_COOLDOWN.saturating_sub(at.elapsed())).await;
        }
        let jwks = self.source.fetch().await.map_err(|e| {
            tracing::warn!(error = %e, "jwks fetch failed");
            ApiError::unavailable("JWKS_UNAVAILABLE", "token keys unavailable, retry later")
        })?;
        let by_kid: HashMap<String, Arc<Key>> =
            jwks.iter().filter_map(|jwk| decoding_key(jwk).map(|k| (jwk.kid.clone(), Arc::new(k)))).collect();
        tracing::debug!(keys = by_kid.len(), "jwks refreshed");
        *self.keys.write().await = Keys { by_kid, fetched_at: Some(Instant::now()) };
        // A withdrawn key must not keep its tokens alive through the cache.
        self.verified.write().await.clear();
        *last = Some(Instant::now());
        Ok(())
    }

    async fn key(&self, kid: &str) -> Result<Arc<Key>, ApiError> {
        let asked_at = Instant::now();
        {
            let keys = self.keys.read().await;
            let fresh = keys.fetched_at.is_some_and(|at| at.elapsed() < JWKS_TTL);
            if let (true, Some(key)) = (fresh, keys.by_kid.get(kid)) {
                return Ok(key.clone());
            }
        }
        if let Err(e) = self.refresh(asked_at).await {
            // auth-svc unreachable: a key fetched recently enough keeps working for a while.
            let keys = self.keys.read().await;
            let usable = keys.fetched_at.is_some_and(|at| at.elapsed() < 3 * JWKS_TTL);
            return match (usable, keys.by_kid.get(kid)) {
                (true, Some(key)) => Ok(key.clone()),
                _ => Err(e),
            };
        }
        self.keys.read().await.by_kid.get(kid).cloned().ok_or_else(|| invalid("UNKNOWN_SIGNING_KEY"))
    }

    /// Verifies `token` (an access token or an API key) and returns the principal it proves.
    pub async fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        if token.starts_with(crate::apikey::PREFIX) {
            return self.verify_api_key(token).await;
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        let cached = self.verified.read().await.get(&digest).filter(|(_, until)| now < *until).map(|(p, _)| p.clone());
        let principal = match cached {
            Some(p) if p.expires_at > chrono::Utc::now().timestamp() => p,
            _ => {
                let p = self.verify_signed(token).await?;
                self.remember(digest, &p).await;
                p
            }
        };
        if let Some(sid) = &principal.session_id {
            self.check_revoked(Revoked::Session, sid).await?;
        }
        Ok(principal)
    }

    /// Remembers a verified token until [`VERIFIED_TTL`] from now or its `exp`, whichever is first.
    async fn remember(&self, digest: [u8; 32], principal: &Principal) {
        let left = principal.expires_at - chrono::Utc::now().timestamp();
        let Ok(left) = u64::try_from(left) else { return };
        let until = Instant::now() + VERIFIED_TTL.min(Duration::from_secs(left));
        let mut cache = self.verified.write().await;
        if cache.len() >= VERIFIED_CACHE_MAX {
            let now = Instant::now();
            cache.retain(|_, (_, until)| now < *until);
            if cache.len() >= VERIFIED_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(digest, (principal.clone(), until));
    }

    /// Checks an OpenID Connect ID token of `tenant` (issuer `issuer`) offered as a hint (RP-initiated
    /// logout's `id_token_hint`): header, signature, issuer and the signing key's tenant. Its
    /// expiry is not checked: an expired ID token still names the session it was issued with.
    pub async fn verify_id_token_hint(
        &self,
        token: &str,
        issuer: &str,
        tenant: TenantId,
    ) -> Result<IdTokenHint, ApiError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("MALFORMED_TOKEN"))?;
        if !matches!(header.alg, Algorithm::EdDSA | Algorithm::ES256) {
            return Err(invalid("ALGORITHM_NOT_ALLOWED"));
        }
        if !header.typ.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("JWT")) {
            return Err(invalid("WRONG_TOKEN_TYPE"));
        }
        let kid = header.kid.ok_or_else(|| invalid("MISSING_KEY_ID"))?;
        let key = self.key(&kid).await?;
        if key.alg != header.alg {
            return Err(invalid("ALGORITHM_MISMATCH"));
        }
        if key.tenant.is_some_and(|t| t != tenant.0) {
            return Err(invalid("KEY_TENANT_MISMATCH"));
        }
        let mut validation = Validation::new(key.alg);
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["iss", "aud", "sub"]);
        validation.validate_exp = false;
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<IdTokenHint>(token, &key.key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidIssuer => invalid("WRONG_ISSUER"),
                ErrorKind::InvalidSignature => invalid("BAD_SIGNATURE"),
                _ => invalid("INVALID_TOKEN"),
            }
        })?;
        Ok(data.claims)
    }

    /// Checks an access token's header, signature and claims (not its revocation).
    async fn verify_signed(&self, token: &str) -> Result<Principal, ApiError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("MALFORMED_TOKEN"))?;
        if !matches!(header.alg, Algorithm::EdDSA | Algorithm::ES256) {
            return Err(invalid("ALGORITHM_NOT_ALLOWED"));
        }
        let typ_ok = header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt"));
        if !typ_ok {
            return Err(invalid("WRONG_TOKEN_TYPE"));
        }
        let kid = header.kid.ok_or_else(|| invalid("MISSING_KEY_ID"))?;
        let key = self.key(&kid).await?;
        if key.alg != header.alg {
            return Err(invalid("ALGORITHM_MISMATCH"));
        }
        let mut validation = Validation::new(key.alg);
        validation.set_issuer(&[&self.cfg.issuer]);
        validation.set_audience(&[&self.cfg.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.cfg.leeway_secs;
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => invalid("TOKEN_EXPIRED"),
                ErrorKind::ImmatureSignature => invalid("TOKEN_NOT_YET_VALID"),
                ErrorKind::InvalidAudience => invalid("WRONG_AUDIENCE"),
                ErrorKind::InvalidIssuer => invalid("WRONG_ISSUER"),
                ErrorKind::InvalidSignature => invalid("BAD_SIGNATURE"),
                _ => invalid("INVALID_TOKEN"),
            }
        })?;
        let claims = data.claims;
        let tenant = uuid::Uuid::parse_str(&claims.tid).map_err(|_| invalid("INVALID_TENANT_CLAIM"))?;
        if key.tenant.is_some_and(|t| t != tenant) {
            return Err(invalid("KEY_TENANT_MISMATCH"));
        }
        let slug = claims.tenant.as_deref().map(TenantSlug::parse).transpose();
        Ok(Principal {
            tenant_id: TenantId(tenant),
            tenant: slug.map_err(|_| invalid("INVALID_TENANT_CLAIM"))?,
            subject: claims.sub,
            session_id: claims.sid,
            token_id: claims.jti,
            permissions: claims.permissions,
            roles: claims.roles,
            amr: claims.amr,
            expires_at: claims.exp,
            mfa_time: claims.mfa_time,
            enrollment_only: claims.mfa_enrollment_required,
        })
    }
}

/// What an ID token offered as a hint says ([`TokenVerifier::verify_id_token_hint`]).
#[derive(Debug, Clone, Deserialize)]
pub struct IdTokenHint {
    pub sub: String,
    /// The client it was issued to.
    pub aud: String,
    /// The session it was issued with.
    #[serde(default)]
    pub sid: String,
}

/// The bearer token of an `authorization` header value, if it is one.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testing::{TEST_AUDIENCE, TEST_ISSUER, TestPki, TestSigner};

    /// A verifier that trusts `signer`'s key as if just fetched; its JWKS source is unreachable.
    async fn verifier(pki: &TestPki, signer: &TestSigner) -> TokenVerifier {
        let (_, nowhere) = crate::testing::listener().await;
        let source = JwksClient::new(crate::testing::channel(pki, "gateway", nowhere, "auth"));
        let cfg = JwtConfig {
            issuer: TEST_ISSUER.into(),
            audience: TEST_AUDIENCE.into(),
            revocations_url: Some(crate::testing::redis_url().into()),
            ..Default::default()
        };
        let v = TokenVerifier::new(cfg, source, None).expect("verifier");
        // auth-svc marks the revocation list complete (`crate::revocation::LOADED_KEY`); none runs here.
        let client = redis::Client::open(crate::testing::redis_url()).expect("redis url");
        let mut conn = client.get_multiplexed_async_connection().await.expect("redis");
        let _: Option<String> = redis::cmd("SET")
            .arg(crate::revocation::LOADED_KEY)
            .arg("kit tests")
            .arg("NX")
            .query_async(&mut conn)
            .await
            .expect("marker");
        let jwk = proto::auth::v1::Jwk {
            kid: signer.kid.clone(),
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            alg: "EdDSA".into(),
            x: signer.public_x.clone(),
            ..Default::default()
        };
        let key = decoding_key(&jwk).expect("key");
        let by_kid = HashMap::from([(signer.kid.clone(), Arc::new(key))]);
        *v.keys.write().await = Keys { by_kid, fetched_at: Some(Instant::now()) };
        v
    }

    fn altered(token: &str, part: usize) -> String {
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut bytes = parts[part].clone().into_bytes();
        let i = bytes.len() / 2;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        parts[part] = String::from_utf8(bytes).expect("ascii");
        parts.join(".")
    }

    #[tokio::test]
    async fn a_remembered_token_does_not_let_an_altered_or_forged_one_through() {
        let (pki, signer) = (TestPki::new(), TestSigner::generate());
        let v = verifier(&pki, &signer).await;
        let claims = TestSigner::claims(uuid::Uuid::new_v4(), "alice");
        let token = signer.sign(&claims);
        for _ in 0..2 {
            assert_eq!(v.verify(&token).await.expect("valid token").subject, "alice");
        }
        assert_eq!(v.verified.read().await.len(), 1, "remembered once");

        let wrong_signature = altered(&token, 2);
        assert!(v.verify(&wrong_signature).await.is_err(), "altered signature");
        let mut escalated = claims.clone();
        escalated["permissions"] = serde_json::json!(["users.delete"]);
        let resigned_payload = signer.sign(&escalated).split('.').nth(1).map(str::to_owned).expect("payload");
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[1] = &resigned_payload;
        assert!(v.verify(&parts.join(".")).await.is_err(), "payload swapped under the old signature");

        let mut forger = TestSigner::generate();
        forger.kid = signer.kid.clone();
        assert!(v.verify(&forger.sign(&claims)).await.is_err(), "another key under the same kid");
        assert_eq!(v.verified.read().await.len(), 1, "failures are never remembered");
    }

    #[tokio::test]
    async fn a_revoked_session_is_refused_even_when_its_token_is_remembered() {
        let (pki, signer) = (TestPki::new(), TestSigner::generate());
        let v = verifier(&pki, &signer).await;
        let claims = TestSigner::claims(uuid::Uuid::new_v4(), "bob");
        let token = signer.sign(&claims);
        v.verify(&token).await.expect("valid token");
        let sid = claims["sid"].as_str().expect("sid").to_owned();
        v.revocations().expect("revocations").revoke(Revoked::Session, &[sid]).await.expect("revoke");
        // The "not revoked" answer is reused for REVOCATION_RECHECK, not longer.
        tokio::time::sleep(REVOCATION_RECHECK + Duration::from_millis(100)).await;
        let refused = v.verify(&token).await.expect_err("revoked");
        assert_eq!(refused.reason, "SESSION_REVOKED");
    }

    #[tokio::test]
    async fn an_expired_token_is_not_served_from_memory() {
        let (pki, signer) = (TestPki::new(), TestSigner::generate());
        let v = verifier(&pki, &signer).await;
        let mut claims = TestSigner::claims(uuid::Uuid::new_v4(), "carol");
        let now = chrono::Utc::now().timestamp();
        claims["exp"] = serde_json::json!(now - 120);
        claims["iat"] = serde_json::json!(now - 400);
        claims["nbf"] = serde_json::json!(now - 400);
        assert!(v.verify(&signer.sign(&claims)).await.is_err());
        assert!(v.verified.read().await.is_empty());
    }
}
