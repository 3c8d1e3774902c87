//! `OAuthClientService`: the tenant's OAuth 2 / OpenID Connect clients, registered by its admins
//! (`oauth.clients.read` / `oauth.clients.write`). Every change is audited; a confidential
//! client's secret (256 random bits, base64url) is in the answer that makes it and nowhere else:
//! only its SHA-256 is stored, and the audit records name the client, never the secret.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use kit::ApiError;
use kit::authz::Permission;
use kit::outbox::Outcome;
use kit::time::opt_to_pb;
use proto::auth::v1 as pb;
use sha2::Digest;
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use super::CreatedCursor;
use crate::core::{Authed, Core};
use crate::domain::input::parse_id;
use crate::domain::oauth::{self, Kind, Settings};
use crate::store::oauth_clients::{self, ClientRow};

/// `OAuthClientService`.
#[derive(Clone, Debug)]
pub struct OAuthClients {
    pub core: Core,
}

fn not_found() -> ApiError {
    ApiError::not_found("OAUTH_CLIENT_NOT_FOUND", "no such OAuth client")
}

/// A new client secret and the SHA-256 that is stored of it.
fn new_secret() -> Result<(Zeroizing<String>, [u8; 32]), ApiError> {
    let mut raw = Zeroizing::new([0u8; 32]);
    getrandom::fill(raw.as_mut()).map_err(|e| ApiError::internal(&e))?;
    let secret = Zeroizing::new(B64URL.encode(raw.as_ref()));
    let hash: [u8; 32] = sha2::Sha256::digest(secret.as_bytes()).into();
    Ok((secret, hash))
}

fn client_pb(c: ClientRow) -> pb::OAuthClient {
    pb::OAuthClient {
        id: c.id.to_string(),
        kind: Kind::stored(&c.kind).to_pb().into(),
        settings: Some(pb::ClientSettings {
            name: c.name,
            redirect_uris: c.redirect_uris,
            post_logout_redirect_uris: c.post_logout_redirect_uris,
            allowed_scopes: c.allowed_scopes,
            grant_types: c.grant_types,
            first_party: c.first_party,
            permissions: c.permissions,
        }),
        created_by: c.created_by,
        create_time: opt_to_pb(Some(c.created_at)),
        update_time: opt_to_pb(Some(c.updated_at)),
        secret_time: opt_to_pb(c.secret_created_at),
    }
}

/// What the audit trail says of a client's settings (no secret; the URIs are configuration).
fn described(record: kit::outbox::AuditRecord, s: &Settings) -> kit::outbox::AuditRecord {
    record
        .detail("name", s.name.clone())
        .detail("redirect_uris", s.redirect_uris.clone())
        .detail("allowed_scopes", s.allowed_scopes.clone())
        .detail("grant_types", s.grant_types.clone())
        .detail("first_party", s.first_party)
        .detail("permissions", s.permissions.clone())
}

/// Whether the caller may give a client `settings.permissions`: known ones, each held by the
/// caller, a sensitive one (privileged or step-up) only with a recent second factor: registering
/// a client must not launder a permission the caller could not use directly.
async fn check_permissions(me: &Authed, tx: &mut kit::TenantTx, settings: &Settings) -> Result<(), ApiError> {
    crate::rbac::check_known(&settings.permissions)?;
    crate::rbac::check_subset(&settings.permissions, &me.principal.permissions)?;
    let policy = crate::store::policy::get(tx).await?;
    if settings.permissions.iter().any(|p| policy.sensitive(p)) {
        me.principal.require_recent_mfa()?;
    }
    Ok(())
}

#[tonic::async_trait]
impl pb::o_auth_client_service_server::OAuthClientService for OAuthClients {
    async fn create_client(
        &self,
        request: Request<pb::CreateClientRequest>,
    ) -> Result<Response<pb::CreateClientResponse>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::OAuthClientsWrite)?;
        let req = request.into_inner();
        let kind = Kind::from_pb(req.kind)?;
        let settings = oauth::check(kind, req.settings.as_ref())?;
        let secret = match kind {
            Kind::Confidential => Some(new_secret()?),
            Kind::Public => None,
        };
        let id = uuid::Uuid::now_v7();
        let mut tx = self.core.db.begin(&me.tenant).await?;
        check_permissions(&me, &mut tx, &settings).await?;
        let by = me.principal.subject.clone();
        let hash = secret.as_ref().map(|(_, h)| h.as_slice());
        let row = oauth_clients::insert(&mut tx, id, kind.as_str(), &settings, hash, &by).await?;
        let record = me.audit("oauth.client.create", &format!("oauth_client/{id}"), Outcome::Success);
        tx.record(described(record, &settings).detail("kind", kind.as_str())).await?;
        tx.commit().await?;
        let client_secret = secret.map(|(s, _)| s.to_string()).unwrap_or_default();
        Ok(Response::new(pb::CreateClientResponse { client: Some(client_pb(row)), client_secret }))
    }

    async fn get_client(&self, request: Request<pb::GetClientRequest>) -> Result<Response<pb::OAuthClient>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::OAuthClientsRead)?;
        let id = parse_id("id", &request.get_ref().id)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let row = oauth_clients::get(&mut tx, id).await?.ok_or_else(not_found)?;
        tx.commit().await?;
        Ok(Response::new(client_pb(row)))
    }

    async fn list_clients(
        &self,
        request: Request<pb::ListClientsRequest>,
    ) -> Result<Response<pb::ListClientsResponse>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::OAuthClientsRead)?;
        let req = request.into_inner();
        let size = ApiError::page_size(req.page_size, 100, 500)?;
        let after = CreatedCursor::parse(&req.page_token)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let rows = oauth_clients::page(&mut tx, (after.created_at, after.id), size + 1).await?;
        tx.commit().await?;
        let (rows, next_page_token) =
            super::page(rows, size, |last| CreatedCursor { created_at: last.created_at, id: last.id }.token());
        Ok(Response::new(pb::ListClientsResponse {
            clients: rows.into_iter().map(client_pb).collect(),
            next_page_token,
        }))
    }

    async fn update_client(
        &self,
        request: Request<pb::UpdateClientRequest>,
    ) -> Result<Response<pb::OAuthClient>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::OAuthClientsWrite)?;
        let req = request.into_inner();
        let id = parse_id("id", &req.id)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let current = oauth_clients::get(&mut tx, id).await?.ok_or_else(not_found)?;
        let settings = oauth::check(Kind::stored(&current.kind), req.settings.as_ref())?;
        check_permissions(&me, &mut tx, &settings).await?;
        let row = oauth_clients::update(&mut tx, id, &settings).await?.ok_or_else(not_found)?;
        let record = me.audit("oauth.client.update", &format!("oauth_client/{id}"), Outcome::Success);
        tx.record(described(record, &settings)).await?;
        tx.commit().await?;
        Ok(Response::new(client_pb(row)))
    }

    async fn rotate_client_secret(
        &self,
        request: Request<pb::RotateClientSecretRequest>,
    ) -> Result<Response<pb::CreateClientResponse>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::OAuthClientsWrite)?;
        let id = parse_id("id", &request.get_ref().id)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let current = oauth_clients::get(&mut tx, id).await?.ok_or_else(not_found)?;
        if Kind::stored(&current.kind) != Kind::Confidential {
            return Err(ApiError::failed_precondition("PUBLIC_CLIENT", "a public client has no secret").into());
        }
        let (secret, hash) = new_secret()?;
        let row = oauth_clients::set_secret(&mut tx, id, &hash).await?.ok_or_else(not_found)?;
        tx.record(me.audit("oauth.client.rotate_secret", &format!("oauth_client/{id}"), Outcome::Success)).await?;
        tx.commit().await?;
        Ok(Response::new(pb::CreateClientResponse { client: Some(client_pb(row)), client_secret: secret.to_string() }))
    }

    async fn delete_client(
        &self,
        request: Request<pb::DeleteClientRequest>,
    ) -> Result<Response<pb::DeleteClientResponse>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::OAuthClientsWrite)?;
        let id = parse_id("id", &request.get_ref().id)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        if !oauth_clients::delete(&mut tx, id).await? {
            return Err(not_found().into());
        }
        // What the client was given ends with it.
        let ended = crate::store::sessions::end_of_oauth_client(&mut tx, id).await?;
        let record = me.audit("oauth.client.delete", &format!("oauth_client/{id}"), Outcome::Success);
        tx.record(record.detail("sessions_ended", ended)).await?;
        tx.commit().await?;
        if ended > 0 {
            self.core.publish_revocations_soon(&me.tenant).await;
        }
        Ok(Response::new(pb::DeleteClientResponse {}))
    }
}

/// `OAuthService`: the authorization-code flow with PKCE, server side.
#[derive(Clone, Debug)]
pub struct OAuthFlow {
    pub core: Core,
    pub authn: super::authn::Authn,
    /// Verifies access tokens presented for introspection or revocation.
    pub verifier: kit::principal::TokenVerifier,
}

impl OAuthFlow {
    /// The active tenant the request names, a transaction of it, and the client `client_id` that
    /// authenticated with `secret`. Anything else is `INVALID_CLIENT` (which tenants and clients
    /// exist is not told); a wrong secret of a known client is audited (`action`, denied).
    async fn client_of(
        &self,
        ctx: &kit::access::RequestContext,
        client_id: &str,
        secret: &str,
        action: &str,
    ) -> Result<(kit::Tenant, kit::TenantTx, ClientRow), ApiError> {
        let invalid_client = || oauth::oauth_error("INVALID_CLIENT", "client authentication failed");
        let tenant = match self.core.db.tenant(&ctx.tenant_slug()?).await {
            Ok(t) if t.status == kit::tenancy::TenantStatus::Active => t,
            _ => return Err(invalid_client()),
        };
        let id = uuid::Uuid::parse_str(client_id).map_err(|_| invalid_client())?;
        let mut tx = self.core.db.begin(&tenant).await?;
        let Some(client) = oauth_clients::get(&mut tx, id).await? else { return Err(invalid_client()) };
        if !client_authenticated(&mut tx, &client, secret).await? {
            let resource = format!("oauth_client/{id}");
            let actor = kit::outbox::Actor::Service(resource.clone());
            let refused = crate::core::audit(actor, action, &resource, Outcome::Denied, ctx.request_id.clone());
            tx.record(refused.detail("refused", "INVALID_CLIENT")).await?;
            tx.commit().await?;
            return Err(invalid_client());
        }
        Ok((tenant, tx, client))
    }

    /// What `token` (a refresh token, or an access token of `tenant`) is, if the client was given
    /// it and it is live: a token of a session the code flow opened, or the client's own access
    /// token (client_credentials, no session).
    async fn token_of(
        &self,
        tx: &mut kit::TenantTx,
        tenant: &kit::Tenant,
        client: uuid::Uuid,
        token: &str,
    ) -> Result<Option<Given>, ApiError> {
        if token.starts_with("srr_") {
            let hash = crate::tokens::digest(token);
            let found = crate::store::sessions::live_of_oauth_client(tx, client, None, Some(&hash)).await?;
            return Ok(found.map(|(s, u, exp)| Given {
                session: Some(s),
                sub: u.to_string(),
                exp,
                kind: "refresh_token",
            }));
        }
        let Ok(principal) = self.verifier.verify(token).await else { return Ok(None) };
        if principal.tenant_id != tenant.id {
            return Ok(None);
        }
        let exp = chrono::DateTime::from_timestamp(principal.expires_at, 0).unwrap_or_default();
        if principal.session_id.is_none() && principal.subject == format!("oauth_client/{client}") {
            return Ok(Some(Given { session: None, sub: principal.subject, exp, kind: "access_token" }));
        }
        let Some(session) = principal.session_id.as_deref().and_then(|s| uuid::Uuid::parse_str(s).ok()) else {
            return Ok(None);
        };
        let found = crate::store::sessions::live_of_oauth_client(tx, client, Some(session), None).await?;
        Ok(found.map(|(s, u, _)| Given { session: Some(s), sub: u.to_string(), exp, kind: "access_token" }))
    }
}

/// A live token a client was given ([`OAuthFlow::token_of`]).
struct Given {
    /// None for the client's own token.
    session: Option<uuid::Uuid>,
    /// The user, or `oauth_client/<id>`.
    sub: String,
    exp: chrono::DateTime<chrono::Utc>,
    kind: &'static str,
}

/// A random code (256 bits, base64url) and the SHA-256 that is stored of it.
fn new_code() -> Result<(Zeroizing<String>, Vec<u8>), ApiError> {
    let (code, hash) = new_secret()?;
    Ok((code, hash.to_vec()))
}

fn sha256(value: &str) -> Vec<u8> {
    sha2::Sha256::digest(value.as_bytes()).to_vec()
}

/// Whether `secret` authenticates `client`: a confidential client's matches its stored hash, a
/// public client sends none.
async fn client_authenticated(tx: &mut kit::TenantTx, client: &ClientRow, secret: &str) -> Result<bool, ApiError> {
    Ok(match Kind::stored(&client.kind) {
        Kind::Confidential => {
            !secret.is_empty()
                && oauth_clients::secret_hash(tx, client.id).await?.as_deref() == Some(sha256(secret).as_slice())
        }
        Kind::Public => secret.is_empty(),
    })
}

/// Whether the request's redirect URI is one the client registered (exactly): a request that fails
/// this is answered to the user, never sent to the URI.
fn check_redirect(req: &pb::AuthorizeRequest, client: &ClientRow) -> Result<(), ApiError> {
    if client.redirect_uris.contains(&req.redirect_uri) {
        Ok(())
    } else {
        Err(oauth::oauth_error("INVALID_REDIRECT_URI", "redirect_uri is not registered for this client"))
    }
}

/// Checks the rest of a request for a code (its redirect URI checked); the scopes it grants.
fn check_request(req: &pb::AuthorizeRequest, client: &ClientRow) -> Result<Vec<String>, ApiError> {
    if req.response_type != "code" {
        return Err(oauth::oauth_error("UNSUPPORTED_RESPONSE_TYPE", "response_type must be code"));
    }
    if !client.grant_types.iter().any(|g| g == "authorization_code") {
        return Err(oauth::oauth_error("UNAUTHORIZED_CLIENT", "this client may not use the authorization code flow"));
    }
    oauth::check_challenge(&req.code_challenge_method, &req.code_challenge)?;
    let scopes = oauth::requested_scopes(&req.scope, &client.allowed_scopes)?;
    if req.state.chars().count() > 500 || req.nonce.chars().count() > 255 {
        return Err(oauth::oauth_error("INVALID_REQUEST", "state is at most 500 characters, nonce at most 255"));
    }
    Ok(scopes)
}

/// Checks a request for a code against the client, with the user's consent; the scopes it grants.
fn check_authorization(req: &pb::AuthorizeRequest, client: &ClientRow) -> Result<Vec<String>, ApiError> {
    check_redirect(req, client)?;
    let scopes = check_request(req, client)?;
    if !client.first_party && !req.consent_given {
        return Err(oauth::oauth_error("CONSENT_REQUIRED", "the user has not agreed to share these scopes"));
    }
    Ok(scopes)
}

/// `uri` with `pairs` added to its query.
fn with_query(uri: &str, pairs: &[(&str, &str)]) -> Result<String, ApiError> {
    let mut url = url::Url::parse(uri).map_err(|e| ApiError::internal(&e))?;
    {
        let mut query = url.query_pairs_mut();
        for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
            query.append_pair(k, v);
        }
    }
    Ok(url.into())
}

#[tonic::async_trait]
impl pb::o_auth_service_server::OAuthService for OAuthFlow {
    async fn authorize(
        &self,
        request: Request<pb::AuthorizeRequest>,
    ) -> Result<Response<pb::AuthorizeResponse>, Status> {
        let me = self.core.authed(&request).await?;
        if me.principal.amr.iter().any(|m| m == "api_key") {
            return Err(
                ApiError::permission_denied("USER_REQUIRED", "only a signed-in user authorizes a client").into()
            );
        }
        let user = me.user_id()?;
        let req = request.into_inner();
        let client_id = parse_id("client_id", &req.client_id)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let client = oauth_clients::get(&mut tx, client_id)
            .await?
            .ok_or_else(|| oauth::oauth_error("INVALID_CLIENT", "no such client"))?;
        let resource = format!("oauth_client/{client_id}");
        let scopes = match check_authorization(&req, &client) {
            Ok(scopes) => scopes,
            Err(e) => {
                let refused =
                    me.audit("oauth.authorize", &resource, Outcome::Denied).detail("refused", e.reason.to_string());
                tx.record(refused.detail("redirect_uri", req.redirect_uri.clone())).await?;
                tx.commit().await?;
                return Err(e.into());
            }
        };
        let (code, hash) = new_code()?;
        let new = oauth_clients::NewCode {
            hash: &hash,
            client: client_id,
            user,
            redirect_uri: &req.redirect_uri,
            scopes: &scopes,
            nonce: &req.nonce,
            code_challenge: &req.code_challenge,
            amr: &me.principal.amr,
            mfa: me.principal.mfa_time.is_some(),
            auth_time: chrono::Utc::now(),
        };
        oauth_clients::insert_code(&mut tx, &new).await?;
        tx.record(me.audit("oauth.authorize", &resource, Outcome::Success).detail("scopes", scopes)).await?;
        tx.commit().await?;
        let issuer = self.core.signer.tenant_issuer(&me.tenant);
        let redirect_to = with_query(&req.redirect_uri, &[("code", &code), ("state", &req.state), ("iss", &issuer)])?;
        Ok(Response::new(pb::AuthorizeResponse { code: code.to_string(), redirect_to }))
    }

    async fn exchange_code(
        &self,
        request: Request<pb::ExchangeCodeRequest>,
    ) -> Result<Response<pb::OAuthTokens>, Status> {
        let ctx = kit::access::RequestContext::of(&request)?;
        let req = request.into_inner();
        let (tenant, mut tx, client) = self.client_of(&ctx, &req.client_id, &req.client_secret, "oauth.token").await?;
        let client_id = client.id;
        let resource = format!("oauth_client/{client_id}");
        let actor = kit::outbox::Actor::Service(resource.clone());
        let request_id = ctx.request_id.clone();
        let record =
            |outcome, action: &str| crate::core::audit(actor.clone(), action, &resource, outcome, request_id.clone());
        let hash = sha256(&req.code);
        let invalid_grant = |why: &str| oauth::oauth_error("INVALID_GRANT", format!("the code is {why}"));
        let Some(code) = oauth_clients::code_for_update(&mut tx, &hash).await? else {
            tx.record(record(Outcome::Denied, "oauth.token").detail("refused", "unknown code")).await?;
            tx.commit().await?;
            return Err(invalid_grant("unknown, expired or used").into());
        };
        if code.used {
            // A code used twice was stolen from one of the two: what the first use opened ends.
            let ended = match code.issued_session {
                Some(session) => crate::store::sessions::end(&mut tx, session, "oauth_code_replay").await?,
                None => false,
            };
            let replay = record(Outcome::Denied, "oauth.code.replay")
                .detail("user_id", code.user_id.to_string())
                .detail("session_ended", ended);
            tx.record(replay).await?;
            tx.commit().await?;
            self.core.publish_revocations_soon(&tenant).await;
            return Err(invalid_grant("unknown, expired or used").into());
        }
        let refused = if code.expired {
            Some("expired code")
        } else if code.client_id != client_id {
            Some("code of another client")
        } else if code.redirect_uri != req.redirect_uri {
            Some("redirect_uri mismatch")
        } else if !oauth::verifier_matches(&req.code_verifier, &code.code_challenge) {
            Some("PKCE verifier mismatch")
        } else {
            None
        };
        if let Some(why) = refused {
            tx.record(record(Outcome::Denied, "oauth.token").detail("refused", why)).await?;
            tx.commit().await?;
            return Err(invalid_grant("unknown, expired or used, or not this client's, redirect or verifier").into());
        }
        let status: Option<String> =
            tx.optional_scalar(sqlx::query_scalar("SELECT status FROM users WHERE id = $1").bind(code.user_id)).await?;
        if status.as_deref() != Some("active") {
            tx.record(record(Outcome::Denied, "oauth.token").detail("refused", "user not active")).await?;
            tx.commit().await?;
            return Err(invalid_grant("not usable: the user is not active").into());
        }
        let session = uuid::Uuid::new_v4();
        oauth_clients::use_code(&mut tx, &hash, session).await?;
        let policy = crate::store::policy::get(&mut tx).await?;
        let access = crate::store::login::user_access(&mut tx, code.user_id).await?;
        let cause = record(Outcome::Success, "oauth.token")
            .detail("scopes", code.scopes.clone())
            .detail("session_id", session.to_string());
        let s = super::authn::NewSession {
            id: session,
            oauth: Some(super::authn::OAuthGrant { client: client_id, scopes: code.scopes.clone() }),
            user: code.user_id,
            amr: code.amr.clone(),
            mfa: code.mfa,
            ip: "",
            user_agent: "",
            request_id: ctx.request_id.clone(),
            cause,
        };
        let tokens = self.authn.open_session(tx, &policy, access, s).await?;
        let has = |scope: &str| code.scopes.iter().any(|s| s == scope);
        let id_token = if has("openid") {
            let now = chrono::Utc::now().timestamp();
            let claims = crate::tokens::IdClaims {
                iss: self.core.signer.tenant_issuer(&tenant),
                sub: code.user_id.to_string(),
                aud: client_id.to_string(),
                azp: client_id.to_string(),
                exp: now + i64::from(policy.access_token_ttl_secs),
                iat: now,
                auth_time: code.auth_time.timestamp(),
                nonce: code.nonce.clone(),
                amr: code.amr.clone(),
                sid: session.to_string(),
            };
            self.core.signer.mint_id_token(&self.core.db, &tenant, &claims).await?
        } else {
            String::new()
        };
        let refresh = has("offline_access") && client.grant_types.iter().any(|g| g == "refresh_token");
        Ok(Response::new(pb::OAuthTokens {
            access_token: tokens.access_token,
            token_type: "Bearer".into(),
            expires_in: tokens.expires_in,
            refresh_token: if refresh { tokens.refresh_token } else { String::new() },
            id_token,
            scope: code.scopes.join(" "),
        }))
    }

    async fn refresh_token(
        &self,
        request: Request<pb::RefreshTokenRequest>,
    ) -> Result<Response<pb::OAuthTokens>, Status> {
        let ctx = kit::access::RequestContext::of(&request)?;
        let req = request.into_inner();
        let (tenant, tx, client) = self.client_of(&ctx, &req.client_id, &req.client_secret, "oauth.refresh").await?;
        let client_id = client.id;
        tx.commit().await?;
        if !client.grant_types.iter().any(|g| g == "refresh_token") {
            return Err(oauth::oauth_error("UNAUTHORIZED_CLIENT", "this client may not refresh").into());
        }
        let msg =
            pb::RefreshRequest { tenant: tenant.slug.to_string(), refresh_token: req.refresh_token, client: None };
        let tokens = self.authn.refresh(msg, ctx.request_id.clone(), Some(client_id)).await.map_err(|e| {
            if matches!(e.code, kit::ErrorCode::Unavailable | kit::ErrorCode::Internal) {
                e
            } else {
                oauth::oauth_error("INVALID_GRANT", "the refresh token is unknown, used, expired or not this client's")
            }
        })?;
        Ok(Response::new(pb::OAuthTokens {
            access_token: tokens.access_token,
            token_type: "Bearer".into(),
            expires_in: tokens.expires_in,
            refresh_token: tokens.refresh_token,
            id_token: String::new(),
            scope: String::new(),
        }))
    }

    async fn client_credentials(
        &self,
        request: Request<pb::ClientCredentialsRequest>,
    ) -> Result<Response<pb::OAuthTokens>, Status> {
        let ctx = kit::access::RequestContext::of(&request)?;
        let req = request.into_inner();
        let (tenant, mut tx, client) = self.client_of(&ctx, &req.client_id, &req.client_secret, "oauth.token").await?;
        let resource = format!("oauth_client/{}", client.id);
        let actor = kit::outbox::Actor::Service(resource.clone());
        let record = |outcome| {
            crate::core::audit(actor.clone(), "oauth.token", &resource, outcome, ctx.request_id.clone())
                .detail("grant_type", "client_credentials")
        };
        let refusal = if !client.grant_types.iter().any(|g| g == "client_credentials") {
            Some(oauth::oauth_error("UNAUTHORIZED_CLIENT", "this client may not use client_credentials"))
        } else {
            req.scope
                .split(' ')
                .find(|s| !s.is_empty() && !client.permissions.iter().any(|p| p == s))
                .map(|s| oauth::oauth_error("INVALID_SCOPE", format!("{s:?} is not one of the client's permissions")))
        };
        if let Some(e) = refusal {
            tx.record(record(Outcome::Denied).detail("refused", e.reason.to_string())).await?;
            tx.commit().await?;
            return Err(e.into());
        }
        // What the client's registrant still holds (nothing once they are gone or suspended).
        let registrant = uuid::Uuid::parse_str(&client.created_by).ok();
        let active: Option<String> = match registrant {
            Some(id) => {
                tx.optional_scalar(sqlx::query_scalar("SELECT status FROM users WHERE id = $1").bind(id)).await?
            }
            None => None,
        };
        let held = match (registrant, active.as_deref()) {
            (Some(id), Some("active")) => crate::store::login::user_access(&mut tx, id).await?.permissions,
            _ => Vec::new(),
        };
        let asked: Vec<&str> = req.scope.split(' ').filter(|s| !s.is_empty()).collect();
        let granted: Vec<String> = client
            .permissions
            .iter()
            .filter(|p| (asked.is_empty() || asked.contains(&p.as_str())) && crate::rbac::covers(&held, p))
            .cloned()
            .collect();
        let policy = crate::store::policy::get(&mut tx).await?;
        let ttl = i64::from(policy.access_token_ttl_secs);
        let mut claims =
            self.core.signer.claims(&tenant, &resource, "", ttl, Vec::new(), Vec::new(), granted.clone(), None);
        claims.client_id = Some(client.id.to_string());
        let access_token = self.core.signer.mint(&self.core.db, &tenant, &claims).await?;
        tx.record(record(Outcome::Success).detail("permissions", granted.clone())).await?;
        tx.commit().await?;
        Ok(Response::new(pb::OAuthTokens {
            access_token,
            token_type: "Bearer".into(),
            expires_in: u32::try_from(claims.exp - claims.iat).unwrap_or_default(),
            refresh_token: String::new(),
            id_token: String::new(),
            scope: granted.join(" "),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::ClientTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let ctx = kit::access::RequestContext::of(&request)?;
        let req = request.into_inner();
        let (tenant, mut tx, client) = self.client_of(&ctx, &req.client_id, &req.client_secret, "oauth.revoke").await?;
        // A client's own token has no session to end: it expires within the access-token lifetime.
        let given = self.token_of(&mut tx, &tenant, client.id, &req.token).await?;
        let Some(Given { session: Some(session), sub: user, kind, .. }) = given else {
            tx.commit().await?;
            return Ok(Response::new(pb::RevokeTokenResponse { revoked: false }));
        };
        let ended = crate::store::sessions::end(&mut tx, session, "oauth_revoked").await?;
        let resource = format!("session/{session}");
        let actor = kit::outbox::Actor::Service(format!("oauth_client/{}", client.id));
        let record = crate::core::audit(actor, "oauth.revoke", &resource, Outcome::Success, ctx.request_id.clone())
            .detail("user_id", user)
            .detail("presented", kind);
        tx.record(record).await?;
        tx.commit().await?;
        self.core.publish_revocations_soon(&tenant).await;
        Ok(Response::new(pb::RevokeTokenResponse { revoked: ended }))
    }

    async fn introspect_token(
        &self,
        request: Request<pb::ClientTokenRequest>,
    ) -> Result<Response<pb::IntrospectTokenResponse>, Status> {
        let ctx = kit::access::RequestContext::of(&request)?;
        let req = request.into_inner();
        let (tenant, mut tx, client) =
            self.client_of(&ctx, &req.client_id, &req.client_secret, "oauth.introspect").await?;
        let found = self.token_of(&mut tx, &tenant, client.id, &req.token).await?;
        tx.commit().await?;
        Ok(Response::new(match found {
            Some(given) => pb::IntrospectTokenResponse {
                active: true,
                sub: given.sub,
                client_id: client.id.to_string(),
                token_type: given.kind.into(),
                exp: given.exp.timestamp(),
                sid: given.session.map(|s| s.to_string()).unwrap_or_default(),
            },
            None => pb::IntrospectTokenResponse::default(),
        }))
    }

    async fn check_authorization(
        &self,
        request: Request<pb::AuthorizeRequest>,
    ) -> Result<Response<pb::AuthorizationCheck>, Status> {
        let ctx = kit::access::RequestContext::of(&request)?;
        let req = request.into_inner();
        let unknown = || oauth::oauth_error("INVALID_CLIENT", "no such client");
        let tenant = match self.core.db.tenant(&ctx.tenant_slug()?).await {
            Ok(t) if t.status == kit::tenancy::TenantStatus::Active => t,
            _ => return Err(unknown().into()),
        };
        let id = uuid::Uuid::parse_str(&req.client_id).map_err(|_| unknown())?;
        let mut tx = self.core.db.begin(&tenant).await?;
        let client = oauth_clients::get(&mut tx, id).await?.ok_or_else(unknown)?;
        tx.commit().await?;
        check_redirect(&req, &client)?;
        let mut answer = pb::AuthorizationCheck {
            client_name: client.name.clone(),
            consent_required: !client.first_party,
            ..Default::default()
        };
        match check_request(&req, &client) {
            Ok(scopes) => answer.scopes = scopes,
            Err(e) => {
                answer.error = e.reason.to_ascii_lowercase();
                answer.error_description = e.message;
            }
        }
        Ok(Response::new(answer))
    }

    async fn user_info(&self, request: Request<pb::UserInfoRequest>) -> Result<Response<pb::UserInfoResponse>, Status> {
        let me = self.core.authed(&request).await?;
        let user = me.user_id()?;
        let session = me.principal.session_id.as_deref().and_then(|s| uuid::Uuid::parse_str(s).ok());
        let not_oauth =
            || ApiError::unauthenticated("INVALID_TOKEN", "not an access token of an OAuth client's session");
        let session = session.ok_or_else(not_oauth)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let scopes: Option<Option<Vec<String>>> = tx
            .optional_scalar(
                sqlx::query_scalar("SELECT oauth_scopes FROM sessions WHERE id = $1 AND revoked_at IS NULL")
                    .bind(session),
            )
            .await?;
        tx.commit().await?;
        let scopes = scopes.flatten().ok_or_else(not_oauth)?;
        let has = |scope: &str| scopes.iter().any(|s| s == scope);
        if !has("openid") {
            return Err(ApiError::permission_denied("INSUFFICIENT_SCOPE", "the openid scope was not granted").into());
        }
        let profile = self.core.profile(&me.tenant, user).await?;
        Ok(Response::new(pb::UserInfoResponse {
            sub: user.to_string(),
            email: if has("email") { profile.email } else { String::new() },
            name: if has("profile") { profile.display_name } else { String::new() },
        }))
    }

    async fn end_session(
        &self,
        request: Request<pb::EndSessionRequest>,
    ) -> Result<Response<pb::EndSessionResponse>, Status> {
        let ctx = kit::access::RequestContext::of(&request)?;
        let req = request.into_inner();
        let refused = |why: &str| oauth::oauth_error("INVALID_REQUEST", format!("logout refused: {why}"));
        let tenant = match self.core.db.tenant(&ctx.tenant_slug()?).await {
            Ok(t) if t.status == kit::tenancy::TenantStatus::Active => t,
            _ => return Err(refused("no such tenant").into()),
        };
        let issuer = self.core.signer.tenant_issuer(&tenant);
        let hint = self
            .verifier
            .verify_id_token_hint(&req.id_token_hint, &issuer, tenant.id)
            .await
            .map_err(|_| refused("id_token_hint is not an ID token of this tenant"))?;
        if !req.client_id.is_empty() && req.client_id != hint.aud {
            return Err(refused("id_token_hint was issued to another client").into());
        }
        if req.state.chars().count() > 500 {
            return Err(refused("state is at most 500 characters").into());
        }
        let client = uuid::Uuid::parse_str(&hint.aud).map_err(|_| refused("unknown client"))?;
        let session = uuid::Uuid::parse_str(&hint.sid).map_err(|_| refused("id_token_hint names no session"))?;
        let mut tx = self.core.db.begin(&tenant).await?;
        let registered = oauth_clients::get(&mut tx, client).await?.map(|c| c.post_logout_redirect_uris);
        let Some(registered) = registered else { return Err(refused("unknown client").into()) };
        if !req.post_logout_redirect_uri.is_empty() && !registered.contains(&req.post_logout_redirect_uri) {
            return Err(refused("post_logout_redirect_uri is not registered for this client").into());
        }
        // Only a session that client was given: an ID token names nothing else.
        let live = crate::store::sessions::live_of_oauth_client(&mut tx, client, Some(session), None).await?;
        let ended = match live {
            Some(_) => crate::store::sessions::end(&mut tx, session, "oauth_logout").await?,
            None => false,
        };
        if ended {
            let actor = kit::outbox::Actor::User(hint.sub.clone());
            let record = crate::core::audit(
                actor,
                "oauth.logout",
                &format!("session/{session}"),
                Outcome::Success,
                ctx.request_id.clone(),
            );
            tx.record(record.detail("client_id", client.to_string())).await?;
        }
        tx.commit().await?;
        if ended {
            self.core.publish_revocations_soon(&tenant).await;
        }
        let redirect_to = match req.post_logout_redirect_uri.as_str() {
            "" => String::new(),
            uri => with_query(uri, &[("state", &req.state)])?,
        };
        Ok(Response::new(pb::EndSessionResponse { redirect_to, ended }))
    }
}
