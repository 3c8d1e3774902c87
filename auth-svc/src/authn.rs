//! `strongroom.auth.v1.AuthenticationService`: logins, second factors, refresh grants, logout,
//! step-up and API-key introspection.

use kit::access::RequestContext;
use kit::outbox::{Actor, AuditRecord, Outcome};
use kit::tenancy::{TenantStatus, db_error};
use kit::{ApiError, Tenant, TenantSlug, TenantTx};
use proto::auth::v1 as pb;
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use crate::core::{Core, POLICY_COLUMNS, Policy, audit, policy};
use crate::passwords::Verdict;
use crate::throttle::Attempt;
use crate::{tokens, totp};

const MFA_PREFIX: &str = "srm_";
const MFA_CHALLENGE_SECS: i64 = 300;
const MFA_MAX_ATTEMPTS: i32 = 5;

fn invalid_credentials() -> ApiError {
    ApiError::unauthenticated("INVALID_CREDENTIALS", "wrong email or password")
}

fn invalid_refresh() -> ApiError {
    ApiError::unauthenticated("INVALID_REFRESH_TOKEN", "the refresh token is not valid")
}

fn client(c: Option<pb::ClientInfo>) -> (String, String) {
    let c = c.unwrap_or_default();
    let ip: String = c.ip.chars().take(64).collect();
    let ua: String = c.user_agent.chars().take(512).collect();
    (ip, ua)
}

/// `AuthenticationService`.
#[derive(Clone, Debug)]
pub struct Authn {
    pub core: Core,
}

struct LoginUser {
    id: uuid::Uuid,
    password_hash: Option<String>,
    status: String,
    suspension_reason: Option<String>,
}

/// What opening a session needs to know about its user.
#[derive(Debug, sqlx::FromRow)]
pub struct UserAccess {
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    /// A confirmed TOTP second factor.
    pub has_totp: bool,
}

/// The [`UserAccess`] of `user`, in one statement.
pub async fn user_access(tx: &mut TenantTx, user: uuid::Uuid) -> Result<UserAccess, ApiError> {
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM mfa_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL) AS has_totp, {}",
        crate::rbac::effective_columns("$1")
    );
    sqlx::query_as(&sql).bind(user).fetch_one(tx.conn()).await.map_err(db_error)
}

/// What a new session needs.
pub struct NewSession<'a> {
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
        let locked = |wait: std::time::Duration| {
            ApiError::resource_exhausted("MFA_LOCKED", "too many wrong second-factor codes, retry later")
                .with_retry_after(wait)
        };
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
                locked(wait)
            }
            SecondFactor::Locked(wait) => {
                tx.record(failure.detail("refused", "mfa_locked")).await?;
                locked(wait)
            }
        })
    }
}

impl Authn {
    async fn active_tenant(&self, raw: &str) -> Option<Tenant> {
        let slug = TenantSlug::parse(raw).ok()?;
        self.core.db.tenant(&slug).await.ok().filter(|t| t.status == TenantStatus::Active)
    }

    /// The active tenant of a request that carries a token naming its tenant (MFA challenge,
    /// refresh): the one `given`, else the token's; `None` when they differ. A token that names
    /// none (issued before tokens did) needs `given`.
    async fn tenant_of_token(&self, given: &str, named_by_token: Option<TenantSlug>) -> Option<Tenant> {
        match (given, named_by_token) {
            ("", Some(slug)) => self.active_tenant(slug.as_str()).await,
            (given, Some(slug)) if given != slug.as_str() => None,
            (given, _) => self.active_tenant(given).await,
        }
    }

    /// The login limits under `policy`: its threshold per account+IP, the deployment's per IP,
    /// and `account_failure_factor` times the threshold per account from every address.
    fn limits(&self, policy: &Policy) -> crate::throttle::Limits {
        let threshold = policy.lockout_threshold.unsigned_abs();
        crate::throttle::Limits {
            window: std::time::Duration::from_secs(policy.lockout_window_secs.unsigned_abs().into()),
            account_ip: threshold,
            ip: self.core.settings.ip_failure_threshold,
            account: threshold.saturating_mul(self.core.settings.account_failure_factor),
        }
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
        let UserAccess { roles, permissions, has_totp } = access;
        let privileged = policy.privileged(&roles, &permissions);
        // A privileged user who already has TOTP never gets here without it (login asks).
        let enrollment_only = privileged && !s.mfa && !has_totp;
        let refresh_ttl = i64::from(policy.refresh_token_ttl_secs);
        let refresh = tokens::new_refresh_token(&tenant.slug)?;
        // The session and its first refresh token in one statement.
        let session: uuid::Uuid = sqlx::query_scalar(
            "WITH s AS (
                 INSERT INTO sessions (user_id, ip, user_agent, amr, mfa_at, enrollment_only, expires_at)
                 VALUES ($1, $2, $3, $4, CASE WHEN $5 THEN now() END, $6, now() + make_interval(secs => $7))
                 RETURNING id
             ), r AS (
                 INSERT INTO refresh_tokens (token_hash, session_id, generation, expires_at)
                 SELECT $8, id, 0, now() + make_interval(secs => $7) FROM s
             )
             SELECT id FROM s",
        )
        .bind(s.user)
        .bind(s.ip)
        .bind(s.user_agent)
        .bind(&s.amr)
        .bind(s.mfa)
        .bind(enrollment_only)
        .bind(refresh_ttl as f64)
        .bind(tokens::digest(&refresh))
        .fetch_one(tx.conn())
        .await
        .map_err(db_error)?;
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
        tx.commit().await?;
        let access = self.core.signer.mint(&self.core.db, &tenant, &claims).await?;
        Ok(pb::Tokens {
            access_token: access,
            expires_in: policy.access_token_ttl_secs.unsigned_abs(),
            refresh_token: refresh.to_string(),
            refresh_expires_in: policy.refresh_token_ttl_secs.unsigned_abs(),
            session_id: session.to_string(),
            mfa_enrollment_required: enrollment_only,
        })
    }

    async fn login(&self, req: pb::LoginRequest, request_id: Option<String>) -> Result<pb::LoginResponse, ApiError> {
        let email = req.email.trim().to_lowercase();
        let password = Zeroizing::new(req.password);
        let (ip, user_agent) = client(req.client);
        if email.is_empty() || email.len() > 254 || password.is_empty() || password.len() > crate::passwords::MAX_LENGTH
        {
            return Err(invalid_credentials());
        }
        let Some(tenant) = self.active_tenant(&req.tenant).await else {
            // An unknown (or suspended) tenant answers as a known one with an unknown email: the
            // same throttle (keyed by the name as given, with the default policy), the same
            // round trips and argon2 work, the same refusals. Otherwise the answer or its timing
            // would tell which tenants exist.
            let attempt = Attempt::new(&format!("unknown:{}", req.tenant), &email, &ip);
            let limits = self.limits(&Policy::default());
            let _ = sqlx::query("SELECT 1").execute(self.core.db.control_pool()).await;
            if let Some((lockout, wait)) = self.core.throttle.reserve(&attempt, limits).await? {
                return Err(lockout.error(wait));
            }
            let _ = self.core.hasher.verify(password, None).await?;
            let _ = sqlx::query("SELECT 1").execute(self.core.db.control_pool()).await;
            kit::metrics::Metrics::global().event("login_failed");
            return Err(invalid_credentials());
        };
        let mut tx = self.core.db.begin(&tenant).await?;
        // One round trip before the hash reads the policy, the account and what its session
        // needs (roles, TOTP): after the hash only the writes remain.
        #[derive(sqlx::FromRow)]
        struct Facts {
            #[sqlx(flatten)]
            policy: Policy,
            id: Option<uuid::Uuid>,
            password_hash: Option<String>,
            status: Option<String>,
            suspension_reason: Option<String>,
            #[sqlx(flatten)]
            access: UserAccess,
        }
        let sql = format!(
            "SELECT {POLICY_COLUMNS}, u.id, u.password_hash, u.status, u.suspension_reason,
                    EXISTS (SELECT 1 FROM mfa_totp m WHERE m.user_id = u.id AND m.confirmed_at IS NOT NULL) AS has_totp,
                    {}
               FROM tenant_policy p
               LEFT JOIN users u ON u.email = $1 AND u.status <> 'deleted'",
            crate::rbac::effective_columns("u.id"),
        );
        let facts: Facts = sqlx::query_as(&sql).bind(&email).fetch_one(tx.conn()).await.map_err(db_error)?;
        tx.commit().await?;
        let (policy, access) = (facts.policy, facts.access);
        let user = match (facts.id, facts.status) {
            (Some(id), Some(status)) => Some(LoginUser {
                id,
                password_hash: facts.password_hash,
                status,
                suspension_reason: facts.suspension_reason,
            }),
            _ => None,
        };
        let actor = user.as_ref().map(|u| Actor::User(u.id.to_string())).unwrap_or(Actor::Anonymous);
        let resource = user.as_ref().map(|u| format!("user/{}", u.id)).unwrap_or_else(|| "user/unknown".into());

        let attempt = Attempt::new(&tenant.id.0.to_string(), &email, &ip);
        if let Some((lockout, wait)) = self.core.throttle.reserve(&attempt, self.limits(&policy)).await? {
            let rec =
                audit(actor, "login.locked", &resource, Outcome::Denied, request_id).detail("scope", lockout.scope());
            self.core.record_alone(&tenant, rec).await?;
            return Err(lockout.error(wait));
        }

        let verdict =
            self.core.hasher.verify(password.clone(), user.as_ref().and_then(|u| u.password_hash.clone())).await?;
        let user = match (verdict, user) {
            (Verdict::Wrong, _) | (_, None) => {
                kit::metrics::Metrics::global().event("login_failed");
                let rec = audit(actor, "login.failure", &resource, Outcome::Denied, request_id)
                    .detail("reason", "invalid_credentials");
                self.core.record_alone(&tenant, rec).await?;
                return Err(invalid_credentials());
            }
            (v, Some(user)) => (v, user),
        };
        let (verdict, user) = user;
        self.core.throttle.succeeded(&attempt).await?;
        if user.status == "suspended" {
            let reason = user.suspension_reason.unwrap_or_default();
            let rec = audit(actor, "login.suspended", &resource, Outcome::Denied, request_id)
                .detail("suspension_reason", reason.clone());
            self.core.record_alone(&tenant, rec).await?;
            return Err(ApiError::permission_denied("USER_SUSPENDED", format!("account suspended: {reason}")));
        }
        let mut tx = self.core.db.begin(&tenant).await?;
        if verdict == Verdict::RightNeedsUpgrade {
            let upgraded = self.core.hasher.hash(password).await?;
            sqlx::query("UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1")
                .bind(user.id)
                .bind(upgraded)
                .execute(tx.conn())
                .await
                .map_err(db_error)?;
            tx.record(audit(actor.clone(), "user.password_rehash", &resource, Outcome::Success, request_id.clone()))
                .await?;
        }
        if access.has_totp {
            // The token names its tenant (`srm_<slug>.<random>`): the second step needs no more.
            let token = tokens::opaque(&format!("{MFA_PREFIX}{}.", tenant.slug))?;
            sqlx::query(
                "INSERT INTO mfa_challenges (token_hash, user_id, ip, user_agent, expires_at)
                 VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
            )
            .bind(tokens::digest(&token))
            .bind(user.id)
            .bind(&ip)
            .bind(&user_agent)
            .bind(MFA_CHALLENGE_SECS as f64)
            .execute(tx.conn())
            .await
            .map_err(db_error)?;
            tx.record(audit(actor, "login.password_ok_mfa_pending", &resource, Outcome::Success, request_id)).await?;
            tx.commit().await?;
            return Ok(pb::LoginResponse {
                result: Some(pb::login_response::Result::Mfa(pb::MfaChallenge {
                    mfa_token: token.to_string(),
                    expires_in: MFA_CHALLENGE_SECS as u32,
                    methods: vec!["totp".into(), "backup_code".into()],
                })),
            });
        }
        let cause = audit(actor, "login.success", &resource, Outcome::Success, request_id.clone());
        let tokens = self
            .open_session(
                tx,
                &policy,
                access,
                NewSession {
                    user: user.id,
                    amr: vec!["pwd".into()],
                    mfa: false,
                    ip: &ip,
                    user_agent: &user_agent,
                    request_id,
                    cause,
                },
            )
            .await?;
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
        let locked_for: i64 = sqlx::query_scalar(
            "SELECT coalesce(ceil(extract(epoch FROM mfa_locked_until - now())), 0)::bigint FROM users
              WHERE id = $1 FOR UPDATE",
        )
        .bind(user)
        .fetch_optional(tx.conn())
        .await
        .map_err(db_error)?
        .unwrap_or(0);
        if locked_for > 0 {
            return Ok(SecondFactor::Locked(std::time::Duration::from_secs(locked_for.unsigned_abs())));
        }
        if let Some(method) = self.second_factor_matches(tx, user, code).await? {
            sqlx::query("UPDATE users SET mfa_failures = 0, mfa_lockouts = 0, mfa_locked_until = NULL WHERE id = $1")
                .bind(user)
                .execute(tx.conn())
                .await
                .map_err(db_error)?;
            return Ok(SecondFactor::Passed(method));
        }
        kit::metrics::Metrics::global().event("mfa_failed");
        let (failures, locked_for): (i32, i64) = sqlx::query_as(
            "UPDATE users SET
                    mfa_failures = CASE WHEN mfa_failures + 1 >= $2 THEN 0 ELSE mfa_failures + 1 END,
                    mfa_lockouts = CASE WHEN mfa_failures + 1 >= $2 THEN mfa_lockouts + 1 ELSE mfa_lockouts END,
                    mfa_locked_until = CASE WHEN mfa_failures + 1 >= $2
                        THEN now() + make_interval(secs => $3 * power(2, least(mfa_lockouts, 6)))
                        ELSE mfa_locked_until END
              WHERE id = $1
             RETURNING mfa_failures, coalesce(ceil(extract(epoch FROM mfa_locked_until - now())), 0)::bigint",
        )
        .bind(user)
        .bind(policy.lockout_threshold)
        .bind(f64::from(policy.lockout_window_secs))
        .fetch_one(tx.conn())
        .await
        .map_err(db_error)?;
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
            let Some((sealed, last)) = totp::confirmed(tx, user).await? else { return Ok(None) };
            let seed = totp::unseal(&self.core.vault, &tenant, user, &sealed).await?;
            let Some(step) = totp::accept(&seed, code, last, totp::now())? else { return Ok(None) };
            sqlx::query("UPDATE mfa_totp SET last_step = $2 WHERE user_id = $1")
                .bind(user)
                .bind(step)
                .execute(tx.conn())
                .await
                .map_err(db_error)?;
            return Ok(Some("otp"));
        }
        Ok(totp::spend_backup_code(tx, user, code).await?.then_some("backup_code"))
    }

    async fn verify_mfa(
        &self,
        req: pb::VerifyMfaRequest,
        request_id: Option<String>,
    ) -> Result<pb::LoginResponse, ApiError> {
        let invalid = || ApiError::unauthenticated("INVALID_MFA", "the code or the challenge is not valid");
        // The tenant named in the request, else the one the challenge token names.
        let named = TenantSlug::of_mfa_token(&req.mfa_token);
        let Some(tenant) = self.tenant_of_token(&req.tenant, named).await else { return Err(invalid()) };
        let (ip, user_agent) = client(req.client);
        let mut tx = self.core.db.begin(&tenant).await?;
        let policy = policy(&mut tx).await?;
        // Only an active user finishes a login (a suspension after the password step ends it).
        let challenge: Option<(uuid::Uuid, i32)> = sqlx::query_as(
            "SELECT c.user_id, c.attempts FROM mfa_challenges c JOIN users u ON u.id = c.user_id
              WHERE c.token_hash = $1 AND c.used_at IS NULL AND c.expires_at > now() AND u.status = 'active'
                FOR UPDATE OF c",
        )
        .bind(tokens::digest(&req.mfa_token))
        .fetch_optional(tx.conn())
        .await
        .map_err(db_error)?;
        let Some((user, attempts)) = challenge else { return Err(invalid()) };
        let resource = format!("user/{user}");
        let actor = Actor::User(user.to_string());
        let method = match self.check_second_factor(&mut tx, &policy, user, &req.code).await? {
            SecondFactor::Passed(method) => method,
            refused => {
                let exhausted = attempts + 1 >= MFA_MAX_ATTEMPTS;
                sqlx::query(
                    "UPDATE mfa_challenges SET attempts = attempts + 1, used_at = CASE WHEN $2 THEN now() END WHERE token_hash = $1",
                )
                .bind(tokens::digest(&req.mfa_token))
                .bind(exhausted)
                .execute(tx.conn())
                .await
                .map_err(db_error)?;
                let failure =
                    audit(actor, "mfa.failure", &resource, Outcome::Denied, request_id).detail("attempt", attempts + 1);
                let err = refused.record(&mut tx, failure, invalid()).await?;
                tx.commit().await?;
                return Err(err);
            }
        };
        sqlx::query("UPDATE mfa_challenges SET used_at = now() WHERE token_hash = $1")
            .bind(tokens::digest(&req.mfa_token))
            .execute(tx.conn())
            .await
            .map_err(db_error)?;
        let cause =
            audit(actor, "mfa.success", &resource, Outcome::Success, request_id.clone()).detail("method", method);
        let access = user_access(&mut tx, user).await?;
        let tokens = self
            .open_session(
                tx,
                &policy,
                access,
                NewSession {
                    user,
                    amr: vec!["pwd".into(), if method == "otp" { "otp".into() } else { "mfa".into() }],
                    mfa: true,
                    ip: &ip,
                    user_agent: &user_agent,
                    request_id,
                    cause,
                },
            )
            .await?;
        Ok(pb::LoginResponse { result: Some(pb::login_response::Result::Tokens(tokens)) })
    }

    async fn refresh(&self, req: pb::RefreshRequest, request_id: Option<String>) -> Result<pb::Tokens, ApiError> {
        let presented = Zeroizing::new(req.refresh_token);
        if !presented.starts_with("srr_") || presented.len() > 100 {
            return Err(invalid_refresh());
        }
        let named = TenantSlug::of_refresh_token(&presented);
        let Some(tenant) = self.tenant_of_token(&req.tenant, named).await else { return Err(invalid_refresh()) };
        let mut tx = self.core.db.begin(&tenant).await?;
        let next = tokens::new_refresh_token(&tenant.slug)?;
        let (grant, successor) = match rotate(&mut tx, &presented, &next, request_id.clone()).await? {
            Rotation::Rotated(grant) => {
                tx.commit().await?;
                (grant, next)
            }
            Rotation::SessionEnded => return Err(session_ended()),
            Rotation::NotTaken => self.retry_or_reuse(tx, &presented, request_id.clone()).await?,
        };
        // Privilege is decided again at every grant: a role (or a policy) that made the user
        // privileged after this session opened without a second factor ends the session, rather
        // than flowing into its tokens.
        if grant.policy.privileged(&grant.roles, &grant.permissions) && grant.mfa_at.is_none() && !grant.enrollment_only
        {
            let tx = self.core.db.begin(&tenant).await?;
            let actor = Actor::User(grant.user_id.to_string());
            end_session(tx, grant.session_id, "privilege_requires_mfa", actor, request_id).await?;
            self.core.publish_revocations_soon(&tenant).await;
            return Err(ApiError::unauthenticated(
                "MFA_REQUIRED",
                "the account now needs a second factor; the session has ended, log in again",
            ));
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
        let access = self.core.signer.mint(&self.core.db, &tenant, &claims).await?;
        Ok(pb::Tokens {
            access_token: access,
            expires_in: policy.access_token_ttl_secs.unsigned_abs(),
            refresh_token: successor.to_string(),
            refresh_expires_in: policy.refresh_token_ttl_secs.unsigned_abs(),
            session_id: grant.session_id.to_string(),
            mfa_enrollment_required: grant.enrollment_only,
        })
    }

    /// A refresh token [`rotate`] did not take: the same token again within the grace window gets
    /// the successor it got the first time; a spent token after that ends the session (its family
    /// is compromised); anything else is refused. Commits what it changes.
    async fn retry_or_reuse(
        &self,
        mut tx: TenantTx,
        presented: &str,
        request_id: Option<String>,
    ) -> Result<(Grant, Zeroizing<String>), ApiError> {
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            grant: Grant,
            generation: i32,
            expired: bool,
            used: bool,
            in_grace: bool,
            successor_sealed: Option<Vec<u8>>,
            revoked: bool,
            status: String,
        }
        let sql = format!(
            "SELECT rt.session_id, rt.generation, rt.expires_at <= now() AS expired, rt.used_at IS NOT NULL AS used,
                    coalesce(rt.used_at > now() - make_interval(secs => $2), false) AS in_grace, rt.successor_sealed,
                    s.revoked_at IS NOT NULL AS revoked, s.user_id, s.amr, s.mfa_at, s.enrollment_only, u.status,
                    {POLICY_COLUMNS}, {}
               FROM refresh_tokens rt
               JOIN sessions s ON s.id = rt.session_id
               JOIN users u ON u.id = s.user_id
               CROSS JOIN tenant_policy p
              WHERE rt.token_hash = $1
              FOR UPDATE OF rt, s",
            crate::rbac::effective_columns("s.user_id"),
        );
        let row: Option<Row> = sqlx::query_as(&sql)
            .bind(tokens::digest(presented))
            .bind(self.core.settings.refresh_grace_secs as f64)
            .fetch_optional(tx.conn())
            .await
            .map_err(db_error)?;
        let Some(row) = row else { return Err(invalid_refresh()) };
        if row.revoked || row.expired || row.status != "active" {
            return Err(session_ended());
        }
        if !row.used {
            // rotate() saw it spent by a grant that then rolled back.
            return Err(ApiError::new(kit::ErrorCode::Aborted, "REFRESH_CONFLICT", "refresh again"));
        }
        match (&row.successor_sealed, row.in_grace) {
            (Some(sealed), true) => {
                let successor = tokens::open_successor(presented, sealed)?;
                tx.rollback().await?;
                Ok((row.grant, successor))
            }
            _ => {
                // Reuse of a spent token: the family is compromised. End the session.
                let session = row.grant.session_id;
                sqlx::query(
                    "UPDATE sessions SET revoked_at = now(), revoke_reason = 'refresh_token_reuse' WHERE id = $1",
                )
                .bind(session)
                .execute(tx.conn())
                .await
                .map_err(db_error)?;
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
                Err(ApiError::unauthenticated(
                    "REFRESH_TOKEN_REUSED",
                    "the refresh token was already used; the session has been ended",
                ))
            }
        }
    }
}

impl Authn {
    /// Ends the session a refresh token (spent or not) belongs to; the token names its tenant.
    async fn logout_by_refresh(&self, token: &str, request_id: Option<String>) -> Result<pb::LogoutResponse, ApiError> {
        if !token.starts_with("srr_") || token.len() > 100 {
            return Err(invalid_refresh());
        }
        let tenant = match TenantSlug::of_refresh_token(token) {
            Some(slug) => self.active_tenant(slug.as_str()).await,
            None => None,
        };
        let Some(tenant) = tenant else { return Err(invalid_refresh()) };
        let mut tx = self.core.db.begin(&tenant).await?;
        let session: Option<(uuid::Uuid, uuid::Uuid)> = sqlx::query_as(
            "SELECT s.id, s.user_id FROM refresh_tokens rt JOIN sessions s ON s.id = rt.session_id WHERE rt.token_hash = $1",
        )
        .bind(tokens::digest(token))
        .fetch_optional(tx.conn())
        .await
        .map_err(db_error)?;
        let Some((session, user)) = session else { return Err(invalid_refresh()) };
        end_session(tx, session, "logout", Actor::User(user.to_string()), request_id).await?;
        self.core.publish_revocations_soon(&tenant).await;
        Ok(pb::LogoutResponse {})
    }
}

fn session_ended() -> ApiError {
    ApiError::unauthenticated("SESSION_ENDED", "the session has ended; log in again")
}

/// What a refresh grant mints its access token from.
#[derive(sqlx::FromRow)]
struct Grant {
    #[sqlx(flatten)]
    policy: Policy,
    roles: Vec<String>,
    permissions: Vec<String>,
    session_id: uuid::Uuid,
    user_id: uuid::Uuid,
    amr: Vec<String>,
    mfa_at: Option<chrono::DateTime<chrono::Utc>>,
    enrollment_only: bool,
}

/// What [`rotate`] did with a refresh token.
enum Rotation {
    /// Spent it and made its successor.
    Rotated(Grant),
    /// Its session was revoked or its user is no longer active: the caller must roll back (the
    /// transaction holds the token as spent).
    SessionEnded,
    /// Nothing: it is not an unused, unexpired token.
    NotTaken,
}

/// The common refresh in one statement: an unused, unexpired token of a live session of an active
/// user is spent (its successor sealed to it for the grace window), the successor inserted, the
/// session extended and the audit record written; the statement also reads the policy and the
/// user's effective access. Every lookup is by primary key: a tenant's tables have no planner
/// statistics in their first minute, and a join let the planner scan every session.
async fn rotate(
    tx: &mut TenantTx,
    presented: &str,
    next: &str,
    request_id: Option<String>,
) -> Result<Rotation, ApiError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        policy: Policy,
        roles: Vec<String>,
        permissions: Vec<String>,
        session_id: uuid::Uuid,
        // NULL when the session was not extended.
        user_id: Option<uuid::Uuid>,
        amr: Option<Vec<String>>,
        mfa_at: Option<chrono::DateTime<chrono::Utc>>,
        enrollment_only: Option<bool>,
    }
    let sql = format!(
        "WITH spent AS (
             UPDATE refresh_tokens SET used_at = now(), successor_sealed = $3
              WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()
          RETURNING session_id, generation + 1 AS generation
         ), extended AS (
             -- By primary key (a join here lets a planner without statistics scan every session).
             UPDATE sessions s SET last_seen_at = now(),
                    expires_at = now() + make_interval(secs => (SELECT refresh_token_ttl_secs FROM tenant_policy))
              WHERE s.id = (SELECT session_id FROM spent) AND s.revoked_at IS NULL
                AND (SELECT u.status FROM users u WHERE u.id = s.user_id) = 'active'
          RETURNING s.id AS session_id, s.user_id, s.amr, s.mfa_at, s.enrollment_only, s.expires_at
         ), successor AS (
             INSERT INTO refresh_tokens (token_hash, session_id, generation, expires_at)
             SELECT $2, extended.session_id, spent.generation, extended.expires_at FROM extended, spent
         ), audited AS (
             INSERT INTO audit_outbox (event_id, occurred_at, service, actor, action, resource, outcome, request_id,
                                       trace_id, details)
             SELECT $4, now(), $5, 'user:' || extended.user_id, 'session.refresh', 'session/' || extended.session_id,
                    'success', $6, $7, jsonb_build_object('generation', spent.generation)
               FROM extended, spent
         )
         SELECT spent.session_id, x.user_id, x.amr, x.mfa_at, x.enrollment_only, {POLICY_COLUMNS}, {}
           FROM spent LEFT JOIN extended x ON true CROSS JOIN tenant_policy p",
        crate::rbac::effective_columns("x.user_id"),
    );
    // The statement writes the grant's audit record itself.
    tx.mark_recorded();
    let row: Option<Row> = sqlx::query_as(&sql)
        .bind(tokens::digest(presented))
        .bind(tokens::digest(next))
        .bind(tokens::seal_successor(presented, next)?)
        .bind(uuid::Uuid::now_v7())
        .bind(crate::SERVICE)
        .bind(request_id)
        .bind(kit::telemetry::current_trace_id())
        .fetch_optional(tx.conn())
        .await
        .map_err(db_error)?;
    Ok(match row {
        None => Rotation::NotTaken,
        Some(r) => match (r.user_id, r.amr, r.enrollment_only) {
            (Some(user_id), Some(amr), Some(enrollment_only)) => Rotation::Rotated(Grant {
                policy: r.policy,
                roles: r.roles,
                permissions: r.permissions,
                session_id: r.session_id,
                user_id,
                amr,
                mfa_at: r.mfa_at,
                enrollment_only,
            }),
            _ => Rotation::SessionEnded,
        },
    })
}

/// Ends a session in the database (the caller then lists the revocation in Redis).
pub async fn end_session(
    mut tx: TenantTx,
    session: uuid::Uuid,
    reason: &str,
    actor: Actor,
    request_id: Option<String>,
) -> Result<bool, ApiError> {
    let ended =
        sqlx::query("UPDATE sessions SET revoked_at = now(), revoke_reason = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(session)
            .bind(reason)
            .execute(tx.conn())
            .await
            .map_err(db_error)?
            .rows_affected()
            == 1;
    if ended {
        tx.record(
            audit(actor, "session.revoke", &format!("session/{session}"), Outcome::Success, request_id)
                .detail("reason", reason),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(ended)
}

#[tonic::async_trait]
impl pb::authentication_service_server::AuthenticationService for Authn {
    async fn login(&self, request: Request<pb::LoginRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        Ok(Response::new(Authn::login(self, request.into_inner(), ctx.request_id).await?))
    }

    async fn verify_mfa(&self, request: Request<pb::VerifyMfaRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        Ok(Response::new(Authn::verify_mfa(self, request.into_inner(), ctx.request_id).await?))
    }

    async fn refresh(&self, request: Request<pb::RefreshRequest>) -> Result<Response<pb::Tokens>, Status> {
        let ctx = RequestContext::of(&request)?;
        Ok(Response::new(Authn::refresh(self, request.into_inner(), ctx.request_id).await?))
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
            me.principal.session_id.as_deref().and_then(|s| uuid::Uuid::parse_str(s).ok())
        } else {
            sqlx::query_scalar("SELECT s.id FROM refresh_tokens rt JOIN sessions s ON s.id = rt.session_id WHERE rt.token_hash = $1 AND s.user_id::text = $2")
                .bind(tokens::digest(&req.refresh_token))
                .bind(&me.principal.subject)
                .fetch_optional(tx.conn())
                .await
                .map_err(db_error)?
        };
        let session = session.ok_or_else(|| ApiError::failed_precondition("NO_SESSION", "no session to end"))?;
        end_session(tx, session, "logout", me.actor(), me.request_id).await?;
        // Logging out asks for nothing more than the session's end, which is saved: the browser
        // must lose its cookies even if Redis does not take the revocation at once.
        self.core.publish_revocations_soon(&me.tenant).await;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn step_up(&self, request: Request<pb::StepUpRequest>) -> Result<Response<pb::Tokens>, Status> {
        let me = self.core.authed(&request).await?;
        let user = me.user_id()?;
        let session = me
            .principal
            .session_id
            .as_deref()
            .and_then(|s| uuid::Uuid::parse_str(s).ok())
            .ok_or_else(|| ApiError::failed_precondition("NO_SESSION", "step-up needs a session token"))?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let policy = policy(&mut tx).await?;
        let resource = format!("session/{session}");
        let method = match self.check_second_factor(&mut tx, &policy, user, &request.get_ref().code).await? {
            SecondFactor::Passed(method) => method,
            refused => {
                let failure = audit(me.actor(), "mfa.step_up_failure", &resource, Outcome::Denied, me.request_id);
                let err = refused
                    .record(&mut tx, failure, ApiError::unauthenticated("INVALID_MFA", "the code is not valid"))
                    .await?;
                tx.commit().await?;
                return Err(err.into());
            }
        };
        sqlx::query("UPDATE sessions SET mfa_at = now(), amr = (SELECT array_agg(DISTINCT m) FROM unnest(amr || $2::text[]) m) WHERE id = $1")
            .bind(session)
            .bind(vec![if method == "otp" { "otp" } else { "mfa" }])
            .execute(tx.conn())
            .await
            .map_err(db_error)?;
        tx.record(
            audit(me.actor(), "mfa.step_up", &resource, Outcome::Success, me.request_id.clone())
                .detail("method", method),
        )
        .await?;
        let amr: Vec<String> = sqlx::query_scalar("SELECT amr FROM sessions WHERE id = $1")
            .bind(session)
            .fetch_one(tx.conn())
            .await
            .map_err(db_error)?;
        let (roles, permissions, _) = self.core.access_of(&mut tx, user, &policy).await?;
        tx.commit().await?;
        let claims = self.core.signer.claims(
            &me.tenant,
            &me.principal.subject,
            &session.to_string(),
            i64::from(policy.access_token_ttl_secs),
            amr,
            roles,
            permissions,
            Some(chrono::Utc::now().timestamp()),
        );
        let access = self.core.signer.mint(&self.core.db, &me.tenant, &claims).await?;
        Ok(Response::new(pb::Tokens {
            access_token: access,
            expires_in: policy.access_token_ttl_secs.unsigned_abs(),
            refresh_token: String::new(),
            refresh_expires_in: 0,
            session_id: session.to_string(),
            mfa_enrollment_required: false,
        }))
    }

    async fn introspect_api_key(
        &self,
        request: Request<pb::IntrospectApiKeyRequest>,
    ) -> Result<Response<pb::IntrospectApiKeyResponse>, Status> {
        let key = &request.get_ref().api_key;
        let unknown = || ApiError::unauthenticated("UNKNOWN_API_KEY", "the API key is not valid");
        if !kit::apikey::well_formed(key) {
            return Err(unknown().into());
        }
        let hash = kit::apikey::hash(key).to_vec();
        // The key's tenant by primary key, then its status from the replica's tenant cache, as
        // every request resolves its tenant (it read every tenant at each verifier cache miss).
        let slug: Option<String> = sqlx::query_scalar(
            "SELECT t.slug FROM control.api_key_index k JOIN control.tenants t ON t.id = k.tenant_id
              WHERE k.key_hash = $1",
        )
        .bind(&hash)
        .fetch_optional(self.core.db.control_pool())
        .await
        .map_err(db_error)?;
        let slug = slug.and_then(|s| kit::TenantSlug::parse(&s).ok()).ok_or_else(unknown)?;
        let tenant = self.core.db.tenant(&slug).await?;
        if tenant.status != TenantStatus::Active {
            return Err(unknown().into());
        }
        let mut tx = self.core.db.begin(&tenant).await?;
        let row: Option<(uuid::Uuid, uuid::Uuid, Vec<String>, chrono::DateTime<chrono::Utc>, bool)> = sqlx::query_as(
            "UPDATE api_keys k SET last_used_at = now()
               FROM users u
              WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND k.expires_at > now()
                AND u.id = k.user_id AND u.status = 'active'
             RETURNING k.id, k.user_id, k.scopes, k.expires_at, k.minted_with_mfa",
        )
        .bind(&hash)
        .fetch_optional(tx.conn())
        .await
        .map_err(db_error)?;
        let (id, user, scopes, expires_at, minted_with_mfa) = row.ok_or_else(unknown)?;
        let (_, held) = crate::rbac::effective(&mut tx, user).await?;
        let policy = policy(&mut tx).await?;
        tx.commit().await?;
        // Within what the creator holds now; a sensitive scope only if the key was minted with a
        // second factor (keys minted before that was required keep their other scopes).
        let permissions = scopes
            .into_iter()
            .filter(|s| crate::rbac::covers(&held, s) && (minted_with_mfa || !policy.sensitive(s)))
            .collect();
        Ok(Response::new(pb::IntrospectApiKeyResponse {
            tenant_id: tenant.id.0.to_string(),
            key_id: id.to_string(),
            subject: user.to_string(),
            permissions,
            expires_at: expires_at.timestamp(),
            tenant_slug: tenant.slug.to_string(),
        }))
    }
}
