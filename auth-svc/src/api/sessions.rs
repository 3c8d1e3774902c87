//! `SessionService`: the caller's sessions, TOTP enrolment and API keys.

use kit::ApiError;
use kit::authz::Permission;
use kit::outbox::Outcome;
use kit::time::to_pb;
use proto::auth::v1 as pb;
use tonic::{Request, Response, Status};

use crate::core::{Core, end_session};
use crate::domain::input::parse_id;
use crate::error::AuthError;
use crate::personal::{Item, USER_EMAIL};
use crate::store::api_keys::{self, KeyRow};
use crate::{rbac, store, totp};

/// `SessionService`.
#[derive(Clone, Debug)]
pub struct Sessions {
    pub core: Core,
}

fn key_pb(k: KeyRow) -> pb::ApiKey {
    pb::ApiKey {
        id: k.id.to_string(),
        name: k.name,
        display: k.display,
        scopes: k.scopes,
        create_time: Some(to_pb(k.created_at)),
        expire_time: Some(to_pb(k.expires_at)),
        last_used_time: k.last_used_at.map(to_pb),
        revoke_time: k.revoked_at.map(to_pb),
    }
}

#[tonic::async_trait]
impl pb::session_service_server::SessionService for Sessions {
    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let me = self.core.authed(&request).await?;
        let own = me.user_id()?;
        let raw = &request.get_ref().user_id;
        let user = if raw.is_empty() { own } else { parse_id("user_id", raw)? };
        if user != own {
            me.require(Permission::SessionsRead)?;
        }
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let rows = store::sessions::recent(&mut tx, user).await?;
        tx.commit().await?;
        let current = me.principal.session_id.clone().unwrap_or_default();
        let items = rows.iter().flat_map(|s| s.personal()).collect();
        let mut opened = self.core.personal.open(&me.tenant, items).await?.into_iter();
        let sessions = rows
            .into_iter()
            .map(|s| pb::Session {
                current: s.id.to_string() == current,
                id: s.id.to_string(),
                ip: opened.next().unwrap_or_default(),
                user_agent: opened.next().unwrap_or_default(),
                create_time: Some(to_pb(s.created_at)),
                last_seen_time: Some(to_pb(s.last_seen_at)),
                revoke_time: s.revoked_at.map(to_pb),
            })
            .collect();
        Ok(Response::new(pb::ListSessionsResponse { sessions }))
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let me = self.core.authed(&request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let owner = store::sessions::owner(&mut tx, id).await?.ok_or(AuthError::SessionNotFound)?;
        if me.user_id().ok() != Some(owner) {
            me.require(Permission::SessionsRevoke)?;
        }
        end_session(tx, id, "revoked", me.actor(), me.request_id.clone()).await?;
        self.core.publish_revocations(&me.tenant).await?;
        Ok(Response::new(pb::RevokeSessionResponse {}))
    }

    async fn enroll_totp(
        &self,
        request: Request<pb::EnrollTotpRequest>,
    ) -> Result<Response<pb::EnrollTotpResponse>, Status> {
        let me = self.core.authed(&request).await?;
        let user = me.user_id()?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let (email, confirmed) = store::mfa::email_and_totp_confirmed(&mut tx, user).await?;
        if confirmed {
            return Err(AuthError::TotpAlreadyEnrolled.into());
        }
        // The authenticator app labels the account with its email.
        let email = Item { field: USER_EMAIL, row: user, subject: user, value: email };
        let email = self.core.personal.open(&me.tenant, vec![email]).await?.pop().unwrap_or_default();
        let seed = totp::new_seed()?;
        let sealed = totp::seal(&self.core.vault, &me.tenant, user, &seed).await?;
        store::mfa::start_totp(&mut tx, user, &sealed).await?;
        tx.record(me.audit("mfa.totp_enroll_start", &format!("user/{user}"), Outcome::Success)).await?;
        tx.commit().await?;
        let (otpauth_uri, secret) =
            totp::provisioning(&seed, &self.core.settings.totp_issuer, if email.is_empty() { "user" } else { &email })?;
        Ok(Response::new(pb::EnrollTotpResponse { otpauth_uri, secret }))
    }

    async fn confirm_totp(
        &self,
        request: Request<pb::ConfirmTotpRequest>,
    ) -> Result<Response<pb::ConfirmTotpResponse>, Status> {
        let me = self.core.authed(&request).await?;
        let user = me.user_id()?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let (sealed, last) = store::mfa::totp_seed(&mut tx, user, false).await?.ok_or(AuthError::NoPendingTotp)?;
        let seed = totp::unseal(&self.core.vault, &me.tenant, user, &sealed).await?;
        let Some(step) = totp::accept(&seed, &request.get_ref().code, last, totp::now())? else {
            tx.record(me.audit("mfa.totp_confirm", &format!("user/{user}"), Outcome::Denied)).await?;
            tx.commit().await?;
            return Err(AuthError::InvalidMfaCode.into());
        };
        store::mfa::accept_totp_step(&mut tx, user, step, true).await?;
        let codes = totp::new_backup_codes(user)?;
        let hashes: Vec<&[u8]> = codes.iter().map(|(_, hash)| hash.as_slice()).collect();
        store::mfa::replace_backup_codes(&mut tx, user, &hashes).await?;
        // The enrolling session has now passed a second factor: its next refresh is complete.
        if let Some(sid) = me.session_id() {
            store::sessions::passed_second_factor(&mut tx, sid, user).await?;
        }
        tx.record(me.audit("mfa.totp_enabled", &format!("user/{user}"), Outcome::Success)).await?;
        tx.commit().await?;
        self.core.profiles.forget(&me.tenant);
        Ok(Response::new(pb::ConfirmTotpResponse { backup_codes: codes.into_iter().map(|(c, _)| c).collect() }))
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::ApiKeysCreate)?;
        let user = me.user_id()?;
        if me.principal.amr.iter().any(|m| m == "api_key") {
            return Err(AuthError::ApiKeyCannotMint.into());
        }
        let req = request.into_inner();
        let name = req.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(ApiError::invalid_field("name", "1 to 100 characters").into());
        }
        if req.scopes.is_empty() {
            return Err(ApiError::invalid_field("scopes", "at least one").into());
        }
        rbac::check_known(&req.scopes)?;
        rbac::check_subset(&req.scopes, &me.principal.permissions)?;
        let days = if req.ttl_days == 0 { 90 } else { req.ttl_days };
        if days > 365 {
            return Err(ApiError::invalid_field("ttl_days", "1 to 365").into());
        }
        let mut scopes = req.scopes.clone();
        scopes.sort();
        scopes.dedup();
        let mut tx = self.core.db.begin(&me.tenant).await?;
        // Minting a credential is as sensitive as what it carries: a key with a privileged or
        // step-up permission needs a recent second factor, or a password-only session (or a
        // stolen access token) could launder the step-up away through the key.
        let policy = store::policy::get(&mut tx).await?;
        let sensitive: Vec<&String> = scopes.iter().filter(|s| policy.sensitive(s)).collect();
        if let (false, Err(e)) = (sensitive.is_empty(), me.principal.require_recent_mfa()) {
            tx.record(
                me.audit("api_key.create", "api_key/new", Outcome::Denied)
                    .detail("refused", "step_up_required")
                    .detail("sensitive_scopes", sensitive.into_iter().cloned().collect::<Vec<_>>()),
            )
            .await?;
            tx.commit().await?;
            return Err(e.into());
        }
        let minted_with_mfa = me.principal.require_recent_mfa().is_ok();
        let key = zeroize::Zeroizing::new(kit::apikey::generate().map_err(|e| ApiError::internal(&e))?);
        let hash = kit::apikey::hash(&key).to_vec();
        let new_key = api_keys::NewKey {
            user,
            name: &name,
            display: &kit::apikey::display(&key),
            hash: &hash,
            scopes: &scopes,
            days: days as i32,
            minted_with_mfa,
        };
        let row = api_keys::insert(&mut tx, &new_key).await?;
        tx.record(
            me.audit("api_key.create", &format!("api_key/{}", row.id), Outcome::Success)
                .detail("scopes", scopes)
                .detail("ttl_days", days),
        )
        .await?;
        tx.commit().await?;
        Ok(Response::new(pb::CreateApiKeyResponse { key: Some(key_pb(row)), api_key: key.to_string() }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let me = self.core.authed(&request).await?;
        let all = me.principal.holds(Permission::ApiKeysRead);
        let user = me.user_id()?;
        let req = request.into_inner();
        let size = ApiError::page_size(req.page_size, 100, 500)?;
        let after = super::CreatedCursor::parse(&req.page_token)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let holder = if all { None } else { Some(user) };
        let rows = api_keys::page(&mut tx, holder, (after.created_at, after.id), size + 1).await?;
        tx.commit().await?;
        let (rows, next_page_token) =
            super::page(rows, size, |last| super::CreatedCursor { created_at: last.created_at, id: last.id }.token());
        Ok(Response::new(pb::ListApiKeysResponse { keys: rows.into_iter().map(key_pb).collect(), next_page_token }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        let me = self.core.authed(&request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let owner = api_keys::owner(&mut tx, id).await?.ok_or(AuthError::ApiKeyNotFound)?;
        if me.user_id().ok() != Some(owner) {
            me.require(Permission::ApiKeysRevoke)?;
        }
        api_keys::revoke(&mut tx, id).await?;
        tx.record(me.audit("api_key.revoke", &format!("api_key/{id}"), Outcome::Success)).await?;
        tx.commit().await?;
        self.core.publish_revocations(&me.tenant).await?;
        Ok(Response::new(pb::RevokeApiKeyResponse {}))
    }
}
