//! `PasskeyService`: passkeys (WebAuthn) verified by webauthn-rs. Registration by the signed-in
//! user (a discoverable credential with user verification), passwordless login, the second step
//! of a password login, and step-up. A ceremony's state waits in `webauthn_ceremonies` between
//! its two calls and is taken (deleted) by the second, so each challenge is answered once.
//! Every outcome is audited; a refused assertion changes nothing but the audit trail (and, as a
//! second factor, the account's failure count).

use kit::ApiError;
use kit::outbox::{Actor, Outcome};
use kit::time::opt_to_pb;
use proto::auth::v1 as pb;
use tonic::{Request, Response, Status};
use webauthn_rs::prelude::{
    Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
};

use super::authn::{Authn, NewSession};
use crate::core::{Core, audit};
use crate::domain::input::parse_id;
use crate::store::passkeys::{self, NewCeremony, NewPasskey, PasskeyRow};
use crate::store::{mfa, users};

/// `PasskeyService`.
#[derive(Clone, Debug)]
pub struct Passkeys {
    pub core: Core,
    pub authn: Authn,
}

fn unavailable() -> ApiError {
    ApiError::failed_precondition("PASSKEYS_UNAVAILABLE", "passkeys are not configured (service.webauthn)")
}

fn no_ceremony() -> ApiError {
    ApiError::failed_precondition("CEREMONY_NOT_FOUND", "the ceremony is unknown, used, expired or another's")
}

fn rejected() -> ApiError {
    ApiError::unauthenticated("PASSKEY_REJECTED", "the passkey's answer does not verify")
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(&e.to_string())
}

/// The browser's answer, as JSON.
fn credential<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, ApiError> {
    serde_json::from_str(json).map_err(|_| ApiError::invalid_field("credential_json", "a PublicKeyCredential as JSON"))
}

fn passkey_pb(p: PasskeyRow) -> pb::Passkey {
    pb::Passkey {
        id: p.id.to_string(),
        name: p.name,
        create_time: opt_to_pb(Some(p.created_at)),
        last_used_time: opt_to_pb(p.last_used_at),
        backup_eligible: p.backup_eligible,
        backed_up: p.backed_up,
    }
}

/// The backup flags of a stored credential (webauthn-rs keeps them in its `cred`).
fn backup_flags(stored: &serde_json::Value) -> (bool, bool) {
    let flag = |name: &str| stored.pointer(&format!("/cred/{name}")).and_then(serde_json::Value::as_bool);
    (flag("backup_eligible").unwrap_or(false), flag("backup_state").unwrap_or(false))
}

fn stored(passkey: &Passkey) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(passkey).map_err(internal)
}

fn parsed(stored: serde_json::Value) -> Result<Passkey, ApiError> {
    serde_json::from_value(stored).map_err(internal)
}

/// `user`'s passkeys as webauthn-rs takes them.
async fn passkeys_of(tx: &mut kit::TenantTx, user: uuid::Uuid) -> Result<Vec<Passkey>, ApiError> {
    passkeys::credentials(tx, user).await?.into_iter().map(parsed).collect()
}

fn options_json(options: &impl serde::Serialize) -> Result<String, ApiError> {
    serde_json::to_string(options).map_err(internal)
}

impl Passkeys {
    fn webauthn(&self) -> Result<&webauthn_rs::Webauthn, ApiError> {
        self.core.webauthn.as_deref().ok_or_else(unavailable)
    }

    /// Starts an assertion by one of `user`'s passkeys (`purpose` `second_factor` or `step_up`).
    async fn start_assertion(
        &self,
        tx: &mut kit::TenantTx,
        user: uuid::Uuid,
        session: Option<uuid::Uuid>,
        purpose: &str,
    ) -> Result<pb::Ceremony, ApiError> {
        let webauthn = self.webauthn()?;
        let mine = passkeys_of(tx, user).await?;
        if mine.is_empty() {
            return Err(ApiError::failed_precondition("NO_PASSKEY", "the user has no passkey"));
        }
        let (options, state) = webauthn.start_passkey_authentication(&mine).map_err(internal)?;
        let id = uuid::Uuid::new_v4();
        let state = serde_json::to_value(&state).map_err(internal)?;
        passkeys::begin(tx, NewCeremony { id, purpose, user: Some(user), session, state }).await?;
        Ok(pb::Ceremony { ceremony_id: id.to_string(), options_json: options_json(&options)? })
    }

    /// Opens the session of a sign-in that passed a passkey (a second factor), recorded with `cause`.
    async fn signed_in(
        &self,
        mut tx: kit::TenantTx,
        user: uuid::Uuid,
        amr: Vec<String>,
        cause: kit::outbox::AuditRecord,
        client: Option<pb::ClientInfo>,
        request_id: Option<String>,
    ) -> Result<pb::LoginResponse, ApiError> {
        let policy = crate::store::policy::get(&mut tx).await?;
        let access = crate::store::login::user_access(&mut tx, user).await?;
        let (ip, user_agent) = crate::domain::login::client(client);
        let s = NewSession {
            id: uuid::Uuid::new_v4(),
            oauth: None,
            user,
            amr,
            mfa: true,
            ip: &ip,
            user_agent: &user_agent,
            request_id,
            cause,
        };
        let tokens = self.authn.open_session(tx, &policy, access, s).await?;
        Ok(pb::LoginResponse { result: Some(pb::login_response::Result::Tokens(tokens)) })
    }

    /// Checks an assertion of a ceremony `purpose` of `user`'s; notes the passkey's use. `Ok(false)`
    /// when it does not verify (nothing noted).
    async fn finish_assertion(
        &self,
        tx: &mut kit::TenantTx,
        user: uuid::Uuid,
        session: Option<uuid::Uuid>,
        ceremony: &str,
        purpose: &str,
        credential_json: &str,
    ) -> Result<bool, ApiError> {
        let webauthn = self.webauthn()?;
        let answer: PublicKeyCredential = credential(credential_json)?;
        let id = parse_id("ceremony_id", ceremony)?;
        let Some((Some(owner), started_in, state)) = passkeys::take(tx, id, purpose).await? else {
            return Err(no_ceremony());
        };
        if owner != user || started_in != session {
            return Err(no_ceremony());
        }
        let state: PasskeyAuthentication = serde_json::from_value(state).map_err(internal)?;
        let Ok(result) = webauthn.finish_passkey_authentication(&answer, &state) else { return Ok(false) };
        let Some((_, stored_key)) = passkeys::by_credential(tx, user, result.cred_id().as_ref()).await? else {
            return Ok(false);
        };
        let mut key = parsed(stored_key)?;
        key.update_credential(&result);
        passkeys::used(tx, result.cred_id().as_ref(), stored(&key)?, result.backup_state()).await?;
        Ok(true)
    }
}

#[tonic::async_trait]
impl pb::passkey_service_server::PasskeyService for Passkeys {
    async fn start_registration(
        &self,
        request: Request<pb::StartRegistrationRequest>,
    ) -> Result<Response<pb::Ceremony>, Status> {
        let me = self.core.authed(&request).await?;
        let user = me.user_id()?;
        let webauthn = self.webauthn()?;
        let profile = self.core.profile(&me.tenant, user).await?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let mine = passkeys_of(&mut tx, user).await?;
        let exclude = mine.iter().map(|p| p.cred_id().clone()).collect();
        let display = if profile.display_name.is_empty() { &profile.email } else { &profile.display_name };
        let (mut options, state) =
            webauthn.start_passkey_registration(user, &profile.email, display, Some(exclude)).map_err(internal)?;
        // A passkey signs in without a password: the credential must be discoverable (resident).
        if let Some(selection) = options.public_key.authenticator_selection.as_mut() {
            selection.require_resident_key = true;
            selection.resident_key = Some(webauthn_rs_proto::ResidentKeyRequirement::Required);
        }
        let id = uuid::Uuid::new_v4();
        let state = serde_json::to_value(&state).map_err(internal)?;
        passkeys::begin(&mut tx, NewCeremony { id, purpose: "register", user: Some(user), session: None, state })
            .await?;
        tx.commit().await?;
        Ok(Response::new(pb::Ceremony { ceremony_id: id.to_string(), options_json: options_json(&options)? }))
    }

    async fn finish_registration(
        &self,
        request: Request<pb::FinishRegistrationRequest>,
    ) -> Result<Response<pb::Passkey>, Status> {
        let me = self.core.authed(&request).await?;
        let user = me.user_id()?;
        let webauthn = self.webauthn()?;
        let req = request.into_inner();
        let name = req.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(ApiError::invalid_field("name", "1 to 100 printable characters").into());
        }
        let answer: RegisterPublicKeyCredential = credential(&req.credential_json)?;
        let id = parse_id("ceremony_id", &req.ceremony_id)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let Some((Some(owner), _, state)) = passkeys::take(&mut tx, id, "register").await? else {
            return Err(no_ceremony().into());
        };
        if owner != user {
            return Err(no_ceremony().into());
        }
        let state: PasskeyRegistration = serde_json::from_value(state).map_err(internal)?;
        let resource = format!("user/{user}");
        let key = match webauthn.finish_passkey_registration(&answer, &state) {
            Ok(key) => key,
            Err(e) => {
                let refused = me.audit("passkey.register", &resource, Outcome::Denied).detail("refused", e.to_string());
                tx.record(refused).await?;
                tx.commit().await?;
                return Err(ApiError::invalid_field("credential_json", "the new passkey does not verify").into());
            }
        };
        let stored_key = stored(&key)?;
        let (backup_eligible, backed_up) = backup_flags(&stored_key);
        let new = NewPasskey {
            id: uuid::Uuid::now_v7(),
            user,
            name: &name,
            credential_id: key.cred_id().as_ref(),
            passkey: stored_key,
            backup_eligible,
            backed_up,
        };
        let row = passkeys::insert(&mut tx, new).await?;
        let record = me.audit("passkey.register", &resource, Outcome::Success).detail("passkey_id", row.id.to_string());
        tx.record(record.detail("backup_eligible", backup_eligible)).await?;
        tx.commit().await?;
        self.core.profiles.forget(&me.tenant);
        Ok(Response::new(passkey_pb(row)))
    }

    async fn list_passkeys(
        &self,
        request: Request<pb::ListPasskeysRequest>,
    ) -> Result<Response<pb::ListPasskeysResponse>, Status> {
        let me = self.core.authed(&request).await?;
        let user = me.user_id()?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let rows = passkeys::list(&mut tx, user).await?;
        tx.commit().await?;
        Ok(Response::new(pb::ListPasskeysResponse { passkeys: rows.into_iter().map(passkey_pb).collect() }))
    }

    async fn delete_passkey(
        &self,
        request: Request<pb::DeletePasskeyRequest>,
    ) -> Result<Response<pb::DeletePasskeyResponse>, Status> {
        let me = self.core.authed(&request).await?;
        let user = me.user_id()?;
        let id = parse_id("id", &request.get_ref().id)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        if !passkeys::delete(&mut tx, user, id).await? {
            return Err(ApiError::not_found("PASSKEY_NOT_FOUND", "no such passkey of yours").into());
        }
        let record = me.audit("passkey.delete", &format!("user/{user}"), Outcome::Success);
        tx.record(record.detail("passkey_id", id.to_string())).await?;
        tx.commit().await?;
        Ok(Response::new(pb::DeletePasskeyResponse {}))
    }

    async fn start_login(
        &self,
        request: Request<pb::StartPasskeyLoginRequest>,
    ) -> Result<Response<pb::Ceremony>, Status> {
        let webauthn = self.webauthn()?;
        let tenant = self.authn.active_tenant(&request.get_ref().tenant).await.ok_or_else(no_ceremony)?;
        let (mut options, state) = webauthn.start_discoverable_authentication().map_err(internal)?;
        // Asked for with a button, not offered in an input's autofill.
        options.mediation = None;
        let id = uuid::Uuid::new_v4();
        let state = serde_json::to_value(&state).map_err(internal)?;
        let mut tx = self.core.db.begin(&tenant).await?;
        passkeys::begin(&mut tx, NewCeremony { id, purpose: "login", user: None, session: None, state }).await?;
        tx.commit().await?;
        Ok(Response::new(pb::Ceremony { ceremony_id: id.to_string(), options_json: options_json(&options)? }))
    }

    async fn finish_login(
        &self,
        request: Request<pb::FinishPasskeyLoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let ctx = kit::access::RequestContext::of(&request)?;
        let webauthn = self.webauthn()?;
        let req = request.into_inner();
        let tenant = self.authn.active_tenant(&req.tenant).await.ok_or_else(rejected)?;
        let answer: PublicKeyCredential = credential(&req.credential_json)?;
        let id = parse_id("ceremony_id", &req.ceremony_id)?;
        let mut tx = self.core.db.begin(&tenant).await?;
        let Some((_, _, state)) = passkeys::take(&mut tx, id, "login").await? else { return Err(no_ceremony().into()) };
        let state: webauthn_rs::prelude::DiscoverableAuthentication =
            serde_json::from_value(state).map_err(internal)?;
        // The user handle names the user; their passkey with that credential id must verify.
        let user = webauthn.identify_discoverable_authentication(&answer).ok().map(|(u, _)| u);
        let found = match user {
            Some(user) => passkeys::by_credential(&mut tx, user, answer.get_credential_id()).await?.map(|f| (user, f)),
            None => None,
        };
        let refuse = |user: Option<uuid::Uuid>, why: &'static str| {
            let actor = user.map(|u| Actor::User(u.to_string())).unwrap_or(Actor::Anonymous);
            let resource = user.map(|u| format!("user/{u}")).unwrap_or_else(|| "user/unknown".into());
            audit(actor, "login.failure", &resource, Outcome::Denied, ctx.request_id.clone())
                .detail("reason", why)
                .detail("method", "passkey")
        };
        let Some((user, (_, stored_key))) = found else {
            tx.record(refuse(user, "passkey_unknown")).await?;
            tx.commit().await?;
            return Err(rejected().into());
        };
        let mut key = parsed(stored_key)?;
        let verified = webauthn.finish_discoverable_authentication_v2(&answer, state, &key);
        let result = match verified {
            Ok(result) if result.user_verified() => result,
            _ => {
                tx.record(refuse(Some(user), "passkey_rejected")).await?;
                tx.commit().await?;
                return Err(rejected().into());
            }
        };
        key.update_credential(&result);
        passkeys::used(&mut tx, result.cred_id().as_ref(), stored(&key)?, result.backup_state()).await?;
        let actor = Actor::User(user.to_string());
        let resource = format!("user/{user}");
        let status: Option<String> =
            tx.optional_scalar(sqlx::query_scalar("SELECT status FROM users WHERE id = $1").bind(user)).await?;
        match status.as_deref() {
            Some("active") => {}
            Some("suspended") => {
                let reason = users::load_user(&mut tx, user).await?.suspension_reason;
                tx.record(audit(actor, "login.suspended", &resource, Outcome::Denied, ctx.request_id.clone())).await?;
                tx.commit().await?;
                let item = crate::personal::Item {
                    field: crate::personal::USER_SUSPENSION_REASON,
                    row: user,
                    subject: user,
                    value: reason,
                };
                let reason = self.core.personal.open(&tenant, vec![item]).await?.pop().unwrap_or_default();
                return Err(ApiError::from(crate::error::AuthError::UserSuspended(reason)).into());
            }
            _ => {
                tx.record(refuse(Some(user), "user_not_active")).await?;
                tx.commit().await?;
                return Err(rejected().into());
            }
        }
        let cause = audit(actor, "login.success", &resource, Outcome::Success, ctx.request_id.clone())
            .detail("method", "passkey");
        let amr = vec!["hwk".into(), "user".into()];
        self.signed_in(tx, user, amr, cause, req.client, ctx.request_id).await.map(Response::new).map_err(Into::into)
    }

    async fn start_second_factor(
        &self,
        request: Request<pb::StartPasskeySecondFactorRequest>,
    ) -> Result<Response<pb::Ceremony>, Status> {
        let req = request.into_inner();
        let named = kit::TenantSlug::of_mfa_token(&req.mfa_token);
        let invalid = || ApiError::from(crate::error::AuthError::InvalidMfaChallenge);
        let tenant = self.authn.tenant_of_token(&req.tenant, named).await.ok_or_else(invalid)?;
        let mut tx = self.core.db.begin(&tenant).await?;
        let challenge = crate::tokens::digest(&req.mfa_token);
        let Some((user, _)) = mfa::challenge(&mut tx, &challenge).await? else { return Err(invalid().into()) };
        let ceremony = self.start_assertion(&mut tx, user, None, "second_factor").await?;
        tx.commit().await?;
        Ok(Response::new(ceremony))
    }

    async fn finish_second_factor(
        &self,
        request: Request<pb::FinishPasskeySecondFactorRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let ctx = kit::access::RequestContext::of(&request)?;
        let req = request.into_inner();
        let named = kit::TenantSlug::of_mfa_token(&req.mfa_token);
        let invalid = || ApiError::from(crate::error::AuthError::InvalidMfaChallenge);
        let tenant = self.authn.tenant_of_token(&req.tenant, named).await.ok_or_else(invalid)?;
        let mut tx = self.core.db.begin(&tenant).await?;
        let challenge = crate::tokens::digest(&req.mfa_token);
        let Some((user, attempts)) = mfa::challenge(&mut tx, &challenge).await? else { return Err(invalid().into()) };
        let actor = Actor::User(user.to_string());
        let resource = format!("user/{user}");
        let passed =
            self.finish_assertion(&mut tx, user, None, &req.ceremony_id, "second_factor", &req.credential_json).await?;
        if !passed {
            mfa::fail_challenge(&mut tx, &challenge, crate::domain::login::challenge_exhausted(attempts)).await?;
            let failure = audit(actor, "mfa.failure", &resource, Outcome::Denied, ctx.request_id.clone())
                .detail("attempt", attempts + 1)
                .detail("method", "passkey");
            tx.record(failure).await?;
            tx.commit().await?;
            return Err(rejected().into());
        }
        mfa::use_challenge(&mut tx, &challenge).await?;
        let cause = audit(actor, "mfa.success", &resource, Outcome::Success, ctx.request_id.clone())
            .detail("method", "passkey");
        let amr = vec!["pwd".into(), "hwk".into()];
        self.signed_in(tx, user, amr, cause, req.client, ctx.request_id).await.map(Response::new).map_err(Into::into)
    }

    async fn start_step_up(&self, request: Request<pb::StartStepUpRequest>) -> Result<Response<pb::Ceremony>, Status> {
        let me = self.core.authed(&request).await?;
        let user = me.user_id()?;
        let session = me.session_id().ok_or(crate::error::AuthError::StepUpNeedsSession)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let ceremony = self.start_assertion(&mut tx, user, Some(session), "step_up").await?;
        tx.commit().await?;
        Ok(Response::new(ceremony))
    }

    async fn finish_step_up(&self, request: Request<pb::FinishStepUpRequest>) -> Result<Response<pb::Tokens>, Status> {
        let me = self.core.authed(&request).await?;
        let user = me.user_id()?;
        let session = me.session_id().ok_or(crate::error::AuthError::StepUpNeedsSession)?;
        let req = request.into_inner();
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let passed = self
            .finish_assertion(&mut tx, user, Some(session), &req.ceremony_id, "step_up", &req.credential_json)
            .await?;
        if !passed {
            let failure = me.audit("mfa.step_up_failure", &format!("session/{session}"), Outcome::Denied);
            tx.record(failure.detail("method", "passkey")).await?;
            tx.commit().await?;
            return Err(rejected().into());
        }
        let policy = crate::store::policy::get(&mut tx).await?;
        let tokens = self.authn.stepped_up(&me, tx, &policy, session, "hwk", "passkey").await?;
        Ok(Response::new(tokens))
    }
}
