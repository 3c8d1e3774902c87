//! `strongroom.auth.v1.AuthenticationService`: logins, second factors, refresh grants, logout,
//! step-up and API-key introspection. The flows run here; their rules are `domain::login`'s and
//! their SQL `store::login`'s (and the modules of the tables they touch).

use kit::access::RequestContext;
use kit::outbox::{Actor, AuditRecord, Outcome};
use kit::tenancy::TenantStatus;
use kit::{ApiError, Tenant, TenantSlug, TenantTx};
use proto::auth::v1 as pb;
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use crate::core::{Core, audit, end_session};
use crate::domain::login::{self, MFA_CHALLENGE_SECS, MFA_PREFIX, Retry};
use crate::domain::policy::Policy;
use crate::error::AuthError;
use crate::passwords::Verdict;
use crate::personal::{Item, SESSION_IP, SESSION_USER_AGENT};
use crate::store::login::{Grant, NewSessionRow, Rotation, UserAccess};
use crate::store::{api_keys, mfa, roles, sessions, users};
use crate::throttle::Attempt;
use crate::{tokens, totp};

/// `AuthenticationService`.
#[derive(Clone, Debug)]
pub struct Authn {
    pub core: Core,
}

/// The client an OAuth session is opened for and the scopes the user granted it.
pub struct OAuthGrant {
    pub client: uuid::Uuid,
    pub scopes: Vec<String>,
}

/// What a new session needs.
pub struct NewSession<'a> {
    /// The session's id (chosen by the caller, e.g. to record it with what opened it).
    pub id: uuid::Uuid,
    /// The OAuth client it is opened for (the code flow), which alone refreshes it, and the
    /// scopes the user granted it.
    pub oauth: Option<OAuthGrant>,
    pub user: uuid::Uuid,
    pub amr: Vec<String>,
    pub mfa: bool,
    pub ip: &'a str,
    pub user_agent: &'a str,
    pub request_id: Option<String>,
    /// The event that opened the session (`login.success`, `mfa.success`), recorded with
    /// `session.create` in one statement.
    pub cause: AuditRecord,
}

/// A right password of a known account ([`Authn::check_password`]).
pub struct PasswordOk {
    pub tenant: Tenant,
    pub policy: Policy,
    pub access: UserAccess,
    pub user: crate::store::login::LoginUser,
    pub verdict: Verdict,
    pub actor: Actor,
    pub resource: String,
}

/// What [`Authn::check_second_factor`] found.
pub enum SecondFactor {
    /// The code was right: `otp` or `backup_code`.
    Passed(&'static str),
    /// The code was wrong; the account has now failed this many times in a row.
    Failed { failures: i32 },
    /// The code was wrong and locked the second factor for this long.
    LockedNow(std::time::Duration),
    /// The second factor was locked already (the code was not looked at) for this much longer.
    Locked(std::time::Duration),
}

impl SecondFactor {
    /// Writes the audit records of a refusal (`failure`, plus `mfa.locked` when this attempt
    /// locked the second factor) in `tx`, and returns the error to answer: `wrong` for a wrong
    /// code, `MFA_LOCKED` with the wait while locked.
    pub async fn record(self, tx: &mut TenantTx, failure: AuditRecord, wrong: ApiError) -> Result<ApiError, ApiError> {
        Ok(match self {
            SecondFactor::Passed(_) => ApiError::internal(&"a passed second factor recorded as refused"),
            SecondFactor::Failed { failures } => {
                tx.record(failure.detail("account_failures", failures)).await?;
                wrong
            }
            SecondFactor::LockedNow(wait) => {
                let lock = AuditRecord::new(
                    crate::SERVICE,
                    failure.actor.clone(),
                    "mfa.locked",
                    &failure.resource,
                    Outcome::Denied,
                )
                .request_id(failure.request_id.clone())
                .detail("locked_secs", wait.as_secs());
                tx.record_all(vec![failure, lock]).await?;
                AuthError::MfaLocked(wait).into()
            }
            SecondFactor::Locked(wait) => {
                tx.record(failure.detail("refused", "mfa_locked")).await?;
                AuthError::MfaLocked(wait).into()
            }
        })
    }
}

/// The second factors a password login may finish with (an MFA challenge's `methods`).
fn second_factor_methods(access: &UserAccess) -> Vec<String> {
    let mut methods = Vec::new();
    if access.has_totp {
        methods.extend(["totp".to_owned(), "backup_code".to_owned()]);
    }
    if access.has_passkey {
        methods.push("passkey".to_owned());
    }
    methods
}

/// The tokens of a session: a new access token under `policy`, and `refresh` (empty: none).
fn session_tokens(
    access: String,
    policy: &Policy,
    refresh: String,
    session: uuid::Uuid,
    enrolling: bool,
) -> pb::Tokens {
    pb::Tokens {
        access_token: access,
        expires_in: policy.access_token_ttl_secs.unsigned_abs(),
        refresh_expires_in: if refresh.is_empty() { 0 } else { policy.refresh_token_ttl_secs.unsigned_abs() },
        refresh_token: refresh,
        session_id: session.to_string(),
        mfa_enrollment_required: enrolling,
    }
}

impl Authn {
    pub(crate) async fn active_tenant(&self, raw: &str) -> Option<Tenant> {
        let slug = TenantSlug::parse(raw).ok()?;
        self.core.db.tenant(&slug).await.ok().filter(|t| t.status == TenantStatus::Active)
    }

    /// The active tenant of a request that carries a token naming its tenant (MFA challenge,
    /// refresh): the one `given`, else the token's; `None` when they differ. A token that names
    /// none (issued before tokens did) needs `given`.
    pub(crate) async fn tenant_of_token(&self, given: &str, named_by_token: Option<TenantSlug>) -> Option<Tenant> {
        match (given, named_by_token) {
            ("", Some(slug)) => self.active_tenant(slug.as_str()).await,
            (given, Some(slug)) if given != slug.as_str() => None,
            (given, _) => self.active_tenant(given).await,
        }
    }

    /// Finishes a step-up of the caller's `session` that passed a second factor (`amr` its RFC
    /// 8176 value, `method` as audited): notes it on the session, audits it and answers the
    /// session's new access token, with `mfa_time` now.
    pub(crate) async fn stepped_up(
        &self,
        me: &crate::core::Authed,
        mut tx: TenantTx,
        policy: &Policy,
        session: uuid::Uuid,
        amr: &str,
        method: &str,
    ) -> Result<pb::Tokens, ApiError> {
        let user = me.user_id()?;
        let resource = format!("session/{session}");
        let jti = uuid::Uuid::now_v7();
        let amr = sessions::stepped_up(&mut tx, session, amr, jti).await?;
        tx.record(me.audit("mfa.step_up", &resource, Outcome::Success).detail("method", method.to_owned())).await?;
        let (roles, permissions, _) = self.core.access_of(&mut tx, user, policy).await?;
        tx.commit().await?;
        let mut claims = self.core.signer.claims(
            &me.tenant,
            &me.principal.subject,
            &session.to_string(),
            i64::from(policy.access_token_ttl_secs),
            amr,
            roles,
            permissions,
            Some(chrono::Utc::now().timestamp()),
        );
        claims.jti = jti.to_string();
        let access = self.core.signer.mint(&self.core.db, &me.tenant, &claims).await?;
        Ok(session_tokens(access, policy, String::new(), session, false))
    }

    /// The login limits under `policy`.
    fn limits(&self, policy: &Policy) -> crate::throttle::Limits {
        login::limits(policy, self.core.settings.ip_failure_threshold, self.core.settings.account_failure_factor)
    }

    /// Opens a session and issues its first tokens, in `tx` (committed here).
    pub async fn open_session(
        &self,
        mut tx: TenantTx,
        policy: &Policy,
        access: UserAccess,
        s: NewSession<'_>,
    ) -> Result<pb::Tokens, ApiError> {
        let tenant = tx.tenant().clone();
        let second_factor = access.has_second_factor();
        let UserAccess { roles, permissions, .. } = access;
        let enrollment_only = login::enrollment_only(policy.privileged(&roles, &permissions), s.mfa, second_factor);
        let refresh = tokens::new_refresh_token(&tenant.slug)?;
        let (session, jti) = (s.id, uuid::Uuid::now_v7());
        let client = [
            Item { field: SESSION_IP, row: session, subject: s.user, value: s.ip },
            Item { field: SESSION_USER_AGENT, row: session, subject: s.user, value: s.user_agent },
        ];
        let mut sealed = self.core.personal.seal(&tenant, &client).await?.into_iter();
        let (ip_sealed, user_agent_sealed) = (sealed.next().flatten(), sealed.next().flatten());
        let row = NewSessionRow {
            id: session,
            user: s.user,
            ip_sealed: ip_sealed.as_deref(),
            user_agent_sealed: user_agent_sealed.as_deref(),
            access_jti: jti,
            amr: &s.amr,
            mfa: s.mfa,
            enrollment_only,
            ttl_secs: f64::from(policy.refresh_token_ttl_secs),
            refresh_hash: &tokens::digest(&refresh),
            oauth_client: s.oauth.as_ref().map(|o| o.client),
            oauth_scopes: s.oauth.as_ref().map(|o| o.scopes.as_slice()),
        };
        crate::store::login::open_session(&mut tx, &row).await?;
        let created = audit(
            Actor::User(s.user.to_string()),
            "session.create",
            &format!("session/{session}"),
            Outcome::Success,
            s.request_id,
        )
        .detail("amr", s.amr.clone())
        .detail("enrollment_only", enrollment_only);
        tx.record_all(vec![s.cause, created]).await?;
        let mfa_time = s.mfa.then(|| chrono::Utc::now().timestamp());
        let mut claims = self.core.signer.claims(
            &tenant,
            &s.user.to_string(),
            &session.to_string(),
            i64::from(policy.access_token_ttl_secs),
            s.amr,
            if enrollment_only { Vec::new() } else { roles },
            if enrollment_only { Vec::new() } else { permissions },
            mfa_time,
        );
        claims.mfa_enrollment_required = enrollment_only;
        claims.jti = jti.to_string();
        tx.commit().await?;
        let access = self.core.signer.mint(&self.core.db, &tenant, &claims).await?;
        Ok(session_tokens(access, policy, refresh.to_string(), session, enrollment_only))
    }

    /// The password step every sign-in starts with (a login, an appeal): the tenant, the account
    /// of `email` and its password, throttled per address and account (`login.locked`), each
    /// failure audited (`login.failure`). An unknown or suspended tenant answers exactly as an
    /// unknown email does.
    pub async fn check_password(
        &self,
        tenant_raw: &str,
        email: &str,
        password: Zeroizing<String>,
        ip: &str,
        request_id: Option<String>,
    ) -> Result<PasswordOk, ApiError> {
        if !login::plausible_credentials(email, &password) {
            return Err(AuthError::InvalidCredentials.into());
        }
        // A terminated tenant's users are told so (until the purge, after which it is unknown).
        if let Ok(slug) = TenantSlug::parse(tenant_raw)
            && let Ok(t) = self.core.db.tenant(&slug).await
            && t.status == TenantStatus::Terminated
        {
            return Err(AuthError::TenantTerminated.into());
        }
        let Some(tenant) = self.active_tenant(tenant_raw).await else {
            // An unknown (or suspended) tenant answers as a known one with an unknown email: the
            // same throttle (keyed by the name as given, under this replica's own key, with the
            // default policy), the same round trips and argon2 work, the same refusals. Otherwise
            // the answer or its timing would tell which tenants exist.
            let (account, address) = crate::throttle::unknown_tenant_ids(tenant_raw, email, ip)?;
            let attempt = Attempt::new(&account, &address);
            let limits = self.limits(&Policy::default());
            crate::store::control::round_trip(&self.core.db).await;
            if let Some((lockout, wait)) = self.core.throttle.reserve(&attempt, limits).await? {
                return Err(lockout.error(wait));
            }
            let _ = self.core.hasher.verify(password, None).await?;
            crate::store::control::round_trip(&self.core.db).await;
            kit::metrics::Metrics::global().event("login_failed");
            return Err(AuthError::InvalidCredentials.into());
        };
        let index = self.core.email_index.blinds(&tenant, email).await?;
        let mut tx = self.core.db.begin(&tenant).await?;
        let facts = crate::store::login::login_facts(&mut tx, &index, email).await?;
        tx.commit().await?;
        let (policy, access, user) = (facts.policy, facts.access, facts.user);
        let actor = user.as_ref().map(|u| Actor::User(u.id.to_string())).unwrap_or(Actor::Anonymous);
        let resource = user.as_ref().map(|u| format!("user/{}", u.id)).unwrap_or_else(|| "user/unknown".into());

        let (account, address) = self.core.email_index.throttle_ids(&tenant, email, ip).await?;
        let attempt = Attempt::new(&account, &address);
        if let Some((lockout, wait)) = self.core.throttle.reserve(&attempt, self.limits(&policy)).await? {
            let rec =
                audit(actor, "login.locked", &resource, Outcome::Denied, request_id).detail("scope", lockout.scope());
            self.core.record_alone(&tenant, rec).await?;
            return Err(lockout.error(wait));
        }

        let verdict = self.core.hasher.verify(password, user.as_ref().and_then(|u| u.password_hash.clone())).await?;
        let (verdict, user) = match (verdict, user) {
            (Verdict::Wrong, _) | (_, None) => {
                kit::metrics::Metrics::global().event("login_failed");
                let rec = audit(actor, "login.failure", &resource, Outcome::Denied, request_id)
                    .detail("reason", "invalid_credentials");
                self.core.record_alone(&tenant, rec).await?;
                return Err(AuthError::InvalidCredentials.into());
            }
            (v, Some(user)) => (v, user),
        };
        self.core.throttle.succeeded(&attempt).await?;
        Ok(PasswordOk { tenant, policy, access, user, verdict, actor, resource })
    }

    async fn login(&self, req: pb::LoginRequest, request_id: Option<String>) -> Result<pb::LoginResponse, ApiError> {
        let email = crate::domain::email::normalized(&req.email);
        let password = Zeroizing::new(req.password);
        let (ip, user_agent) = login::client(req.client);
        let checked = self.check_password(&req.tenant, &email, password.clone(), &ip, request_id.clone()).await?;
        let PasswordOk { tenant, policy, access, user, verdict, actor, resource } = checked;
        if user.status == "suspended" {
            // Shown to the user who proved their password; in the trail only by the suspension's
            // own (sealed) record.
            let item = crate::personal::Item {
                field: crate::personal::USER_SUSPENSION_REASON,
                row: user.id,
                subject: user.id,
                value: user.suspension_reason.clone(),
            };
            let reason = self.core.personal.open(&tenant, vec![item]).await?.pop().unwrap_or_default();
            let rec = audit(actor, "login.suspended", &resource, Outcome::Denied, request_id);
            self.core.record_alone(&tenant, rec).await?;
            return Err(AuthError::UserSuspended(reason).into());
        }
        let mut tx = self.core.db.begin(&tenant).await?;
        if verdict == Verdict::RightNeedsUpgrade {
            let upgraded = self.core.hasher.hash(password).await?;
            users::set_password_hash(&mut tx, user.id, &upgraded, false).await?;
            tx.record(audit(actor.clone(), "user.password_rehash", &resource, Outcome::Success, request_id.clone()))
                .await?;
        }
        if access.has_second_factor() {
            // The token names its tenant (`srm_<slug>.<random>`): the second step needs no more.
            let token = tokens::opaque(&format!("{MFA_PREFIX}{}.", tenant.slug))?;
            let secs = MFA_CHALLENGE_SECS as f64;
            mfa::insert_challenge(&mut tx, &tokens::digest(&token), user.id, secs).await?;
            tx.record(audit(actor, "login.password_ok_mfa_pending", &resource, Outcome::Success, request_id)).await?;
            tx.commit().await?;
            return Ok(pb::LoginResponse {
                result: Some(pb::login_response::Result::Mfa(pb::MfaChallenge {
                    mfa_token: token.to_string(),
                    expires_in: MFA_CHALLENGE_SECS as u32,
                    methods: second_factor_methods(&access),
                })),
            });
        }
        let cause = audit(actor, "login.success", &resource, Outcome::Success, request_id.clone());
        let amr = vec!["pwd".into()];
        let s = NewSession {
            id: uuid::Uuid::new_v4(),
            oauth: None,
            user: user.id,
            amr,
            mfa: false,
            ip: &ip,
            user_agent: &user_agent,
            request_id,
            cause,
        };
        let tokens = self.open_session(tx, &policy, access, s).await?;
        Ok(pb::LoginResponse { result: Some(pb::login_response::Result::Tokens(tokens)) })
    }

    /// Checks a second factor for `user` in `tx`: a TOTP code (newer than the last accepted
    /// step) or an unused backup code, unless the account's second factor is locked. Failures
    /// are counted on the account, across login challenges and step-ups (a correct password
    /// resets nothing here), and lock the second factor at the policy's threshold for its window,
    /// doubled at each further lockout. The user's row is locked first, so parallel guesses are
    /// counted one after another. The caller commits `tx` whatever the answer: a failure must be
    /// counted.
    pub async fn check_second_factor(
        &self,
        tx: &mut TenantTx,
        policy: &Policy,
        user: uuid::Uuid,
        code: &str,
    ) -> Result<SecondFactor, ApiError> {
        let locked_for = mfa::locked_for(tx, user).await?;
        if locked_for > 0 {
            return Ok(SecondFactor::Locked(std::time::Duration::from_secs(locked_for.unsigned_abs())));
        }
        if let Some(method) = self.second_factor_matches(tx, user, code).await? {
            mfa::clear_failures(tx, user).await?;
            return Ok(SecondFactor::Passed(method));
        }
        kit::metrics::Metrics::global().event("mfa_failed");
        let window = f64::from(policy.lockout_window_secs);
        let (failures, locked_for) = mfa::count_failure(tx, user, policy.lockout_threshold, window).await?;
        if locked_for > 0 {
            kit::metrics::Metrics::global().event("mfa_locked");
            return Ok(SecondFactor::LockedNow(std::time::Duration::from_secs(locked_for.unsigned_abs())));
        }
        Ok(SecondFactor::Failed { failures })
    }

    /// Whether `code` is a fresh TOTP code or an unused backup code of `user` (spending it).
    async fn second_factor_matches(
        &self,
        tx: &mut TenantTx,
        user: uuid::Uuid,
        code: &str,
    ) -> Result<Option<&'static str>, ApiError> {
        let code = code.trim();
        let tenant = tx.tenant().clone();
        if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
            let Some((sealed, last)) = mfa::totp_seed(tx, user, true).await? else { return Ok(None) };
            let seed = totp::unseal(&self.core.vault, &tenant, user, &sealed).await?;
            let Some(step) = totp::accept(&seed, code, last, totp::now())? else { return Ok(None) };
            mfa::accept_totp_step(tx, user, step, false).await?;
            return Ok(Some("otp"));
        }
        Ok(totp::spend_backup_code(tx, user, code).await?.then_some("backup_code"))
    }

    async fn verify_mfa(
        &self,
        req: pb::VerifyMfaRequest,
        request_id: Option<String>,
    ) -> Result<pb::LoginResponse, ApiError> {
        let invalid = || ApiError::from(AuthError::InvalidMfaChallenge);
        // The tenant named in the request, else the one the challenge token names.
        let named = TenantSlug::of_mfa_token(&req.mfa_token);
        let Some(tenant) = self.tenant_of_token(&req.tenant, named).await else { return Err(invalid()) };
        let (ip, user_agent) = login::client(req.client);
        let mut tx = self.core.db.begin(&tenant).await?;
        let policy = crate::store::policy::get(&mut tx).await?;
        let challenge = tokens::digest(&req.mfa_token);
        // Only an active user finishes a login (a suspension after the password step ends it).
        let Some((user, attempts)) = mfa::challenge(&mut tx, &challenge).await? else { return Err(invalid()) };
        let resource = format!("user/{user}");
        let actor = Actor::User(user.to_string());
        let method = match self.check_second_factor(&mut tx, &policy, user, &req.code).await? {
            SecondFactor::Passed(method) => method,
            refused => {
                mfa::fail_challenge(&mut tx, &challenge, login::challenge_exhausted(attempts)).await?;
                let failure =
                    audit(actor, "mfa.failure", &resource, Outcome::Denied, request_id).detail("attempt", attempts + 1);
                let err = refused.record(&mut tx, failure, invalid()).await?;
                tx.commit().await?;
                return Err(err);
            }
        };
        mfa::use_challenge(&mut tx, &challenge).await?;
        let cause =
            audit(actor, "mfa.success", &resource, Outcome::Success, request_id.clone()).detail("method", method);
        let access = crate::store::login::user_access(&mut tx, user).await?;
        let amr = vec!["pwd".into(), login::amr_of(method).into()];
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
        let tokens = self.open_session(tx, &policy, access, s).await?;
        Ok(pb::LoginResponse { result: Some(pb::login_response::Result::Tokens(tokens)) })
    }

    /// Rotates a refresh token of a first-party session (`client` none) or of OAuth client
    /// `client`'s session; a token of another's session is refused unrotated.
    pub async fn refresh(
        &self,
        req: pb::RefreshRequest,
        request_id: Option<String>,
        client: Option<uuid::Uuid>,
    ) -> Result<pb::Tokens, ApiError> {
        let presented = Zeroizing::new(req.refresh_token);
        if !presented.starts_with("srr_") || presented.len() > 100 {
            return Err(AuthError::InvalidRefreshToken.into());
        }
        let named = TenantSlug::of_refresh_token(&presented);
        let Some(tenant) = self.tenant_of_token(&req.tenant, named).await else {
            return Err(AuthError::InvalidRefreshToken.into());
        };
        let mut tx = self.core.db.begin(&tenant).await?;
        let owner = crate::store::sessions::oauth_client_of_refresh_token(&mut tx, &tokens::digest(&presented)).await?;
        if owner.is_some_and(|owner| owner != client) {
            return Err(AuthError::InvalidRefreshToken.into());
        }
        let next = tokens::new_refresh_token(&tenant.slug)?;
        let jti = uuid::Uuid::now_v7();
        let (grant, successor) =
            match crate::store::login::rotate(&mut tx, &presented, &next, jti, request_id.clone()).await? {
                Rotation::Rotated(grant) => {
                    tx.commit().await?;
                    (grant, next)
                }
                Rotation::SessionEnded => return Err(AuthError::SessionEnded.into()),
                Rotation::NotTaken => self.retry_or_reuse(tx, &presented, jti, request_id.clone()).await?,
            };
        let passed_mfa = grant.mfa_at.is_some();
        if login::grant_needs_mfa(&grant.policy, &grant.roles, &grant.permissions, passed_mfa, grant.enrollment_only) {
            let tx = self.core.db.begin(&tenant).await?;
            let actor = Actor::User(grant.user_id.to_string());
            end_session(tx, grant.session_id, "privilege_requires_mfa", actor, request_id).await?;
            self.core.publish_revocations_soon(&tenant).await;
            return Err(AuthError::MfaRequired.into());
        }
        let policy = grant.policy;
        let mut claims = self.core.signer.claims(
            &tenant,
            &grant.user_id.to_string(),
            &grant.session_id.to_string(),
            i64::from(policy.access_token_ttl_secs),
            grant.amr,
            if grant.enrollment_only { Vec::new() } else { grant.roles },
            if grant.enrollment_only { Vec::new() } else { grant.permissions },
            grant.mfa_at.map(|t| t.timestamp()),
        );
        claims.mfa_enrollment_required = grant.enrollment_only;
        claims.jti = jti.to_string();
        let access = self.core.signer.mint(&self.core.db, &tenant, &claims).await?;
        Ok(session_tokens(access, &policy, successor.to_string(), grant.session_id, grant.enrollment_only))
    }

    /// A refresh token the rotation did not take: the same token again within the grace window
    /// gets the successor it got the first time (and a new access token, `access_jti`); a spent
    /// token after that ends the session (its family is compromised); anything else is refused.
    /// Commits what it changes.
    async fn retry_or_reuse(
        &self,
        mut tx: TenantTx,
        presented: &str,
        access_jti: uuid::Uuid,
        request_id: Option<String>,
    ) -> Result<(Grant, Zeroizing<String>), ApiError> {
        let grace = self.core.settings.refresh_grace_secs as f64;
        let Some(row) = crate::store::login::refresh_state(&mut tx, presented, grace).await? else {
            return Err(AuthError::InvalidRefreshToken.into());
        };
        match (row.standing.retry(row.successor_sealed.is_some()), &row.successor_sealed) {
            (Retry::SessionEnded, _) => Err(AuthError::SessionEnded.into()),
            // The rotation saw it spent by a grant that then rolled back.
            (Retry::Conflict, _) => Err(AuthError::RefreshConflict.into()),
            (Retry::SameSuccessor, Some(sealed)) => {
                let successor = tokens::open_successor(presented, sealed)?;
                sessions::set_access_jti(&mut tx, row.grant.session_id, access_jti).await?;
                tx.commit().await?;
                Ok((row.grant, successor))
            }
            (Retry::SameSuccessor | Retry::Reused, _) => {
                // Reuse of a spent token: the family is compromised. End the session.
                let session = row.grant.session_id;
                sessions::end_for_reuse(&mut tx, session).await?;
                tx.record(
                    audit(
                        Actor::User(row.grant.user_id.to_string()),
                        "session.refresh_reuse",
                        &format!("session/{session}"),
                        Outcome::Denied,
                        request_id,
                    )
                    .detail("generation", row.generation),
                )
                .await?;
                let tenant = tx.tenant().clone();
                tx.commit().await?;
                kit::metrics::Metrics::global().event("refresh_token_reuse");
                // The presenter learns of the reuse either way.
                self.core.publish_revocations_soon(&tenant).await;
                Err(AuthError::RefreshTokenReused.into())
            }
        }
    }

    /// Ends the session a refresh token (spent or not) belongs to; the token names its tenant.
    async fn logout_by_refresh(&self, token: &str, request_id: Option<String>) -> Result<pb::LogoutResponse, ApiError> {
        if !token.starts_with("srr_") || token.len() > 100 {
            return Err(AuthError::InvalidRefreshToken.into());
        }
        let tenant = match TenantSlug::of_refresh_token(token) {
            Some(slug) => self.active_tenant(slug.as_str()).await,
            None => None,
        };
        let Some(tenant) = tenant else { return Err(AuthError::InvalidRefreshToken.into()) };
        let mut tx = self.core.db.begin(&tenant).await?;
        let session = sessions::of_refresh_token(&mut tx, &tokens::digest(token), None).await?;
        let Some((session, user)) = session else { return Err(AuthError::InvalidRefreshToken.into()) };
        end_session(tx, session, "logout", Actor::User(user.to_string()), request_id).await?;
        self.core.publish_revocations_soon(&tenant).await;
        Ok(pb::LogoutResponse {})
    }
}

#[tonic::async_trait]
impl pb::authentication_service_server::AuthenticationService for Authn {
    async fn login(&self, request: Request<pb::LoginRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let result = Authn::login(self, request.into_inner(), ctx.request_id).await;
        if let Some(outcome) = login::outcome(&result) {
            kit::metrics::Metrics::global().login(outcome);
        }
        Ok(Response::new(result?))
    }

    async fn verify_mfa(&self, request: Request<pb::VerifyMfaRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        Ok(Response::new(Authn::verify_mfa(self, request.into_inner(), ctx.request_id).await?))
    }

    async fn refresh(&self, request: Request<pb::RefreshRequest>) -> Result<Response<pb::Tokens>, Status> {
        let ctx = RequestContext::of(&request)?;
        Ok(Response::new(Authn::refresh(self, request.into_inner(), ctx.request_id, None).await?))
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Result<Response<pb::LogoutResponse>, Status> {
        if RequestContext::of(&request)?.principal.is_none() {
            // An access token that expired (a browser idle past its access cookie): the refresh
            // token alone ends its session, or the refresh token stayed usable for 30 days.
            let ctx = RequestContext::of(&request)?;
            return Ok(Response::new(
                self.logout_by_refresh(&request.into_inner().refresh_token, ctx.request_id).await?,
            ));
        }
        let me = self.core.authed(&request).await?;
        let req = request.into_inner();
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let session = if req.refresh_token.is_empty() {
            me.session_id()
        } else {
            let token = tokens::digest(&req.refresh_token);
            sessions::of_refresh_token(&mut tx, &token, Some(&me.principal.subject)).await?.map(|(id, _)| id)
        };
        let session = session.ok_or(AuthError::NoSessionToEnd)?;
        end_session(tx, session, "logout", me.actor(), me.request_id).await?;
        // Logging out asks for nothing more than the session's end, which is saved: the browser
        // must lose its cookies even if Redis does not take the revocation at once.
        self.core.publish_revocations_soon(&me.tenant).await;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn step_up(&self, request: Request<pb::StepUpRequest>) -> Result<Response<pb::Tokens>, Status> {
        let me = self.core.authed(&request).await?;
        let user = me.user_id()?;
        let session = me.session_id().ok_or(AuthError::StepUpNeedsSession)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let policy = crate::store::policy::get(&mut tx).await?;
        let resource = format!("session/{session}");
        let method = match self.check_second_factor(&mut tx, &policy, user, &request.get_ref().code).await? {
            SecondFactor::Passed(method) => method,
            refused => {
                let failure = me.audit("mfa.step_up_failure", &resource, Outcome::Denied);
                let err = refused.record(&mut tx, failure, AuthError::InvalidMfaCode.into()).await?;
                tx.commit().await?;
                return Err(err.into());
            }
        };
        self.stepped_up(&me, tx, &policy, session, login::amr_of(method), method)
            .await
            .map(Response::new)
            .map_err(Into::into)
    }

    async fn introspect_api_key(
        &self,
        request: Request<pb::IntrospectApiKeyRequest>,
    ) -> Result<Response<pb::IntrospectApiKeyResponse>, Status> {
        let key = &request.get_ref().api_key;
        let unknown = || ApiError::from(AuthError::UnknownApiKey);
        if !kit::apikey::well_formed(key) {
            return Err(unknown().into());
        }
        let hash = kit::apikey::hash(key).to_vec();
        // The key's tenant by primary key, then its status from the replica's tenant cache, as
        // every request resolves its tenant (it read every tenant at each verifier cache miss).
        let slug = api_keys::tenant_of(&self.core.db, &hash).await?;
        let slug = slug.and_then(|s| kit::TenantSlug::parse(&s).ok()).ok_or_else(unknown)?;
        let tenant = self.core.db.tenant(&slug).await?;
        if tenant.status != TenantStatus::Active {
            return Err(unknown().into());
        }
        let mut tx = self.core.db.begin(&tenant).await?;
        let key = api_keys::use_key(&mut tx, &hash).await?.ok_or_else(unknown)?;
        let (_, held) = roles::effective(&mut tx, key.user_id).await?;
        let policy = crate::store::policy::get(&mut tx).await?;
        tx.commit().await?;
        // Within what the creator holds now; a sensitive scope only if the key was minted with a
        // second factor (keys minted before that was required keep their other scopes).
        let permissions = key
            .scopes
            .into_iter()
            .filter(|s| crate::rbac::covers(&held, s) && (key.minted_with_mfa || !policy.sensitive(s)))
            .collect();
        Ok(Response::new(pb::IntrospectApiKeyResponse {
            tenant_id: tenant.id.0.to_string(),
            key_id: key.id.to_string(),
            subject: key.user_id.to_string(),
            permissions,
            expires_at: key.expires_at.timestamp(),
            tenant_slug: tenant.slug.to_string(),
        }))
    }
}
