//! Access tokens (JWT `at+jwt`, EdDSA), the tenant's signing keys, and refresh tokens.
//!
//! Signing keys: one Ed25519 key pair per tenant at a time, generated here, its private half
//! sealed by vault-svc transit and stored in the tenant's `token_signing_keys`, its public half
//! published in `control.signing_keys` (the JWKS, bound to the tenant). A rotated-in key is
//! published `signing_key_publish_ahead_secs` before it signs; a rotated-out key stays published
//! until the last token it signed has expired.
//!
//! Refresh tokens: `srr_<tenant slug>.` + 32 random bytes (base64url), stored as SHA-256, single
//! use; the slug lets a client refresh with the token alone. The
//! successor is sealed (AES-256-GCM) under a key derived from the presented token by HKDF-SHA256,
//! so a retry within the grace window gets the same successor and nobody else can read it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kit::client::Channel;
use kit::outbox::{Actor, AuditRecord, Outcome};
use kit::{ApiError, Tenant, TenantTx};
use proto::vault::v1 as vault;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::RwLock;
use zeroize::Zeroizing;

use crate::store::signing_keys;

/// How long a replica trusts its cached view of the active signing key.
const KEY_CACHE_TTL: Duration = Duration::from_secs(30);
/// The longest an access token lives (tenant policies allow 300–900 s).
pub const MAX_ACCESS_TTL_SECS: i64 = 900;
const REFRESH_PREFIX: &str = "srr_";

/// Each tenant's active key and until when this replica may sign with it: [`KEY_CACHE_TTL`] after
/// loading it, or the moment the tenant's next key starts signing, whichever is first.
type KeyCache = HashMap<uuid::Uuid, (Arc<ActiveKey>, Instant)>;

struct ActiveKey {
    kid: String,
    key: EncodingKey,
}

/// A rotation: the new key, when it starts signing, and the keys it retires.
#[derive(Debug, Clone)]
pub struct Rotated {
    pub kid: String,
    pub activates_at: chrono::DateTime<chrono::Utc>,
    pub retiring: Vec<String>,
}

/// Rotates every active tenant's signing key once its newest key has signed for `after`: checks
/// every tenth of that (at least each second, at most every ten minutes) until `shutdown`.
pub fn spawn_rotation(db: kit::Db, signer: Signer, after: Duration, shutdown: kit::server::Shutdown) {
    let every = (after / 10).clamp(Duration::from_secs(1), Duration::from_secs(600));
    db.clone().every_active_tenant(every, shutdown, move |tenant| {
        let (db, signer) = (db.clone(), signer.clone());
        async move {
            let actor = Actor::Service(crate::SERVICE.to_owned());
            if let Err(e) = signer.rotate_if_due(&db, &tenant, after, actor, None).await {
                tracing::warn!(tenant = %tenant.slug, reason = %e.reason, "token signing key rotation failed");
            }
        }
    });
}

/// Mints access tokens; cheap to clone.
#[derive(Clone)]
pub struct Signer {
    vault: vault::transit_service_client::TransitServiceClient<Channel>,
    issuer: String,
    audience: String,
    publish_ahead: Duration,
    cache: Arc<RwLock<KeyCache>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

/// The claims of an OpenID Connect ID token (Core 1.0, section 2).
#[derive(Debug, Serialize)]
pub struct IdClaims {
    pub iss: String,
    pub sub: String,
    /// The client_id.
    pub aud: String,
    pub azp: String,
    pub exp: i64,
    pub iat: i64,
    pub auth_time: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub nonce: String,
    pub amr: Vec<String>,
    pub sid: String,
}

/// The claims of an access token.
#[derive(Debug, Serialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub tid: String,
    /// The tenant's slug: a call with the token needs no `x-strongroom-tenant` header.
    pub tenant: String,
    /// The session; none for a client's own token (client_credentials).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sid: String,
    pub jti: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub amr: Vec<String>,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    /// When the session last passed a second factor (step-up).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfa_time: Option<i64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mfa_enrollment_required: bool,
    /// The OAuth client a client_credentials token was minted for (RFC 9068).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

fn seal_context(kid: &str) -> HashMap<String, String> {
    HashMap::from([("purpose".to_owned(), "token-signing-key".to_owned()), ("kid".to_owned(), kid.to_owned())])
}

fn vault_error(s: tonic::Status) -> ApiError {
    tracing::error!(code = ?s.code(), message = %s.message(), "vault-svc call failed");
    ApiError::unavailable("VAULT_UNAVAILABLE", "key service unavailable, retry shortly")
}

impl Signer {
    pub fn new(vault: Channel, issuer: String, audience: String, publish_ahead: Duration) -> Self {
        Self {
            vault: vault::transit_service_client::TransitServiceClient::new(vault),
            issuer,
            audience,
            publish_ahead,
            cache: Arc::default(),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    async fn seal(&self, tenant: &Tenant, plaintext: &[u8], kid: &str) -> Result<String, ApiError> {
        let req =
            vault::EncryptRequest { plaintext: plaintext.to_vec(), context: seal_context(kid), ..Default::default() };
        let req = kit::client::with_context(tonic::Request::new(req), Some(tenant.slug.as_str()), None, None);
        Ok(self.vault.clone().encrypt(req).await.map_err(vault_error)?.into_inner().ciphertext)
    }

    async fn unseal(&self, tenant: &Tenant, sealed: &str, kid: &str) -> Result<Zeroizing<Vec<u8>>, ApiError> {
        let req =
            vault::DecryptRequest { ciphertext: sealed.to_owned(), context: seal_context(kid), subject: String::new() };
        let req = kit::client::with_context(tonic::Request::new(req), Some(tenant.slug.as_str()), None, None);
        Ok(Zeroizing::new(self.vault.clone().decrypt(req).await.map_err(vault_error)?.into_inner().plaintext))
    }

    /// Generates a key pair, seals and stores the private half, publishes the public half;
    /// it signs `delay` after the transaction's start. Returns the kid and that instant.
    async fn create_key(
        &self,
        tx: &mut TenantTx,
        delay: Duration,
    ) -> Result<(String, chrono::DateTime<chrono::Utc>), ApiError> {
        let tenant = tx.tenant().clone();
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| ApiError::internal(&e))?;
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let pkcs8 = signing.to_pkcs8_der().map_err(|e| ApiError::internal(&e))?;
        let public = signing.verifying_key().to_bytes();
        let kid = format!("{}-{}", &tenant.id.0.simple().to_string()[..8], uuid::Uuid::now_v7().simple());
        let sealed = self.seal(&tenant, pkcs8.as_bytes(), &kid).await?;
        let jwk = serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "x": B64.encode(public), "kid": kid, "alg": "EdDSA", "use": "sig",
        });
        let activates_at = signing_keys::insert(tx, &kid, &sealed, &jwk, delay).await?;
        Ok((kid, activates_at))
    }

    async fn active_key(&self, db: &kit::Db, tenant: &Tenant) -> Result<Arc<ActiveKey>, ApiError> {
        if let Some((key, until)) = self.cache.read().await.get(&tenant.id.0)
            && Instant::now() < *until
        {
            return Ok(key.clone());
        }
        let mut tx = db.begin(tenant).await?;
        let mut found = signing_keys::active(&mut tx).await?;
        if found.is_none() {
            // First token of this tenant: one replica creates the key, the others wait and read it.
            signing_keys::lock(&mut tx).await?;
            found = signing_keys::active(&mut tx).await?;
            if found.is_none() {
                let (kid, _) = self.create_key(&mut tx, Duration::ZERO).await?;
                let actor = Actor::Service(crate::SERVICE.to_owned());
                let resource = format!("signing_key/{kid}");
                tx.record(AuditRecord::new(
                    crate::SERVICE,
                    actor,
                    "token_signing_key.create",
                    &resource,
                    Outcome::Success,
                ))
                .await?;
                tracing::info!(tenant = %tenant.slug, kid = %kid, "token signing key created");
                found = signing_keys::active(&mut tx).await?;
            }
        }
        tx.commit().await?;
        let (kid, sealed, next_in) = found.ok_or_else(|| ApiError::internal(&"signing key vanished"))?;
        let der = self.unseal(tenant, &sealed, &kid).await?;
        let key = Arc::new(ActiveKey { kid, key: EncodingKey::from_ed_der(&der) });
        let ttl = next_in.map_or(KEY_CACHE_TTL, |s| KEY_CACHE_TTL.min(Duration::from_secs_f64(s.max(0.0))));
        self.cache.write().await.insert(tenant.id.0, (key.clone(), Instant::now() + ttl));
        Ok(key)
    }

    /// Rotates the tenant's signing key when its newest key started signing at least `after` ago
    /// (or at once with `after` zero): the new key is published now and signs after the
    /// publish-ahead delay; the current one keeps signing until then and stays published until
    /// its last token has expired. Replicas take turns per tenant. `None` when it was not due, or
    /// when the tenant has no key yet (its first token creates one). Audited and committed here.
    pub async fn rotate_if_due(
        &self,
        db: &kit::Db,
        tenant: &Tenant,
        after: Duration,
        actor: Actor,
        request_id: Option<String>,
    ) -> Result<Option<Rotated>, ApiError> {
        let mut tx = db.begin(tenant).await?;
        signing_keys::lock(&mut tx).await?;
        let due = signing_keys::newest_signed_for(&mut tx, after).await?;
        if due != Some(true) {
            return Ok(None);
        }
        let (kid, activates_at, retiring) = self.rotate(&mut tx).await?;
        tx.record(
            AuditRecord::new(
                crate::SERVICE,
                actor,
                "token_signing_key.rotate",
                &format!("signing_key/{kid}"),
                Outcome::Success,
            )
            .request_id(request_id)
            .detail("activates_at", activates_at.to_rfc3339())
            .detail("retiring", retiring.clone()),
        )
        .await?;
        tx.commit().await?;
        // This replica learns the new key's start at once; the others within KEY_CACHE_TTL.
        self.cache.write().await.remove(&tenant.id.0);
        tracing::info!(tenant = %tenant.slug, kid = %kid, %activates_at, "token signing key rotated");
        Ok(Some(Rotated { kid, activates_at, retiring }))
    }

    /// See [`Signer::rotate_if_due`]. Returns the new `kid`, when it starts signing, and the kids
    /// it retires.
    async fn rotate(
        &self,
        tx: &mut TenantTx,
    ) -> Result<(String, chrono::DateTime<chrono::Utc>, Vec<String>), ApiError> {
        let (kid, activates_at) = self.create_key(tx, self.publish_ahead).await?;
        let retire_published = activates_at + chrono::Duration::seconds(MAX_ACCESS_TTL_SECS + 60);
        let old = signing_keys::retire_all_but(tx, &kid, activates_at, retire_published).await?;
        Ok((kid, activates_at, old))
    }

    /// Makes sure the tenant has a signing key (its first token would create one).
    pub async fn ensure_key(&self, db: &kit::Db, tenant: &Tenant) -> Result<(), ApiError> {
        self.active_key(db, tenant).await.map(drop)
    }

    /// Signs `claims` with the tenant's active key.
    pub async fn mint(&self, db: &kit::Db, tenant: &Tenant, claims: &AccessClaims) -> Result<String, ApiError> {
        self.sign(db, tenant, "at+jwt", claims).await
    }

    /// Signs an OpenID Connect ID token with the tenant's active key (the same JWKS verifies it).
    pub async fn mint_id_token(&self, db: &kit::Db, tenant: &Tenant, claims: &IdClaims) -> Result<String, ApiError> {
        self.sign(db, tenant, "JWT", claims).await
    }

    async fn sign(
        &self,
        db: &kit::Db,
        tenant: &Tenant,
        typ: &str,
        claims: &impl Serialize,
    ) -> Result<String, ApiError> {
        let key = self.active_key(db, tenant).await?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(typ.into());
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.key).map_err(|e| ApiError::internal(&e))
    }

    /// The issuer of `tenant`'s OpenID Connect tokens: the token issuer, then `/t/<slug>`.
    pub fn tenant_issuer(&self, tenant: &Tenant) -> String {
        format!("{}/t/{}", self.issuer.trim_end_matches('/'), tenant.slug)
    }

    /// Fills the standard claims.
    #[allow(clippy::too_many_arguments)]
    pub fn claims(
        &self,
        tenant: &Tenant,
        subject: &str,
        session: &str,
        ttl_secs: i64,
        amr: Vec<String>,
        roles: Vec<String>,
        permissions: Vec<String>,
        mfa_time: Option<i64>,
    ) -> AccessClaims {
        let now = chrono::Utc::now().timestamp();
        AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: subject.to_owned(),
            tid: tenant.id.0.to_string(),
            tenant: tenant.slug.to_string(),
            sid: session.to_owned(),
            jti: uuid::Uuid::now_v7().to_string(),
            iat: now,
            nbf: now,
            exp: now + ttl_secs.clamp(60, MAX_ACCESS_TTL_SECS),
            amr,
            roles,
            permissions,
            mfa_time,
            mfa_enrollment_required: false,
            client_id: None,
        }
    }
}

/// A new opaque token with `prefix` (refresh tokens, MFA challenges).
pub fn opaque(prefix: &str) -> Result<Zeroizing<String>, ApiError> {
    let mut raw = Zeroizing::new([0u8; 32]);
    getrandom::fill(raw.as_mut()).map_err(|e| ApiError::internal(&e))?;
    Ok(Zeroizing::new(format!("{prefix}{}", B64.encode(raw.as_ref()))))
}

/// A refresh token of `tenant`: `srr_<slug>.<random>`.
pub fn new_refresh_token(tenant: &kit::TenantSlug) -> Result<Zeroizing<String>, ApiError> {
    opaque(&format!("{REFRESH_PREFIX}{tenant}."))
}

/// What is stored for an opaque token.
pub fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn successor_cipher(token: &str) -> Result<Aes256Gcm, ApiError> {
    let hk = hkdf::Hkdf::<Sha256>::new(Some(b"strongroom.refresh.successor.v1"), token.as_bytes());
    let mut key = Zeroizing::new([0u8; 32]);
    hk.expand(b"aes-256-gcm", key.as_mut()).map_err(|e| ApiError::internal(&e))?;
    Aes256Gcm::new_from_slice(key.as_ref()).map_err(|e| ApiError::internal(&e))
}

/// Seals `successor` under a key only the holder of `token` can derive.
pub fn seal_successor(token: &str, successor: &str) -> Result<Vec<u8>, ApiError> {
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).map_err(|e| ApiError::internal(&e))?;
    let ct = successor_cipher(token)?
        .encrypt(&Nonce::from(nonce), successor.as_bytes())
        .map_err(|_| ApiError::internal(&"seal successor"))?;
    Ok([nonce.as_slice(), &ct].concat())
}

pub fn open_successor(token: &str, sealed: &[u8]) -> Result<Zeroizing<String>, ApiError> {
    if sealed.len() < 12 {
        return Err(ApiError::internal(&"sealed successor too short"));
    }
    let (nonce, ct) = sealed.split_at(12);
    let nonce: [u8; 12] = nonce.try_into().map_err(|_| ApiError::internal(&"nonce"))?;
    let pt =
        successor_cipher(token)?.decrypt(&Nonce::from(nonce), ct).map_err(|_| ApiError::internal(&"open successor"))?;
    String::from_utf8(pt).map(Zeroizing::new).map_err(|e| ApiError::internal(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slug() -> kit::TenantSlug {
        kit::TenantSlug::parse("alpha").expect("slug")
    }

    #[test]
    fn only_the_presented_token_opens_its_successor() {
        let token = new_refresh_token(&slug()).expect("rng");
        let next = new_refresh_token(&slug()).expect("rng");
        let sealed = seal_successor(&token, &next).expect("seal");
        assert_eq!(open_successor(&token, &sealed).expect("open").as_str(), next.as_str());
        let other = new_refresh_token(&slug()).expect("rng");
        assert!(open_successor(&other, &sealed).is_err());
    }

    #[test]
    fn refresh_tokens_are_prefixed_and_random() {
        let a = new_refresh_token(&slug()).expect("rng");
        assert!(a.starts_with("srr_alpha.") && a.len() == "srr_alpha.".len() + 43);
        assert_eq!(kit::TenantSlug::of_refresh_token(&a), Some(slug()));
        assert_ne!(a.as_str(), new_refresh_token(&slug()).expect("rng").as_str());
    }
}
