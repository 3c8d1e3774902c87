//! SQL of the login flows: what a login reads before the password hash, opening a session with
//! its first refresh token, and the refresh grant (rotation, and the state of a token it did not
//! take). Statements that read several tables in one round trip live here; the rest of a flow's
//! statements are in the module of their table.

use kit::{ApiError, TenantTx};

use crate::domain::login::TokenStanding;
use crate::domain::policy::Policy;
use crate::email_index::Blinds;
use crate::store::policy::POLICY_COLUMNS;
use crate::tokens;

/// What opening a session needs to know about its user.
#[derive(Debug, sqlx::FromRow)]
pub struct UserAccess {
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    /// A confirmed TOTP second factor.
    pub has_totp: bool,
    /// A passkey (a second factor too).
    pub has_passkey: bool,
}

impl UserAccess {
    /// Whether the user has a second factor of either kind.
    pub fn has_second_factor(&self) -> bool {
        self.has_totp || self.has_passkey
    }
}

/// The [`UserAccess`] of `user`, in one statement.
pub async fn user_access(tx: &mut TenantTx, user: uuid::Uuid) -> Result<UserAccess, ApiError> {
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM mfa_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL) AS has_totp,
                EXISTS (SELECT 1 FROM passkeys WHERE user_id = $1) AS has_passkey, {}",
        super::roles::effective_columns("$1")
    );
    tx.one(sqlx::query_as(&sql).bind(user)).await
}

/// The account a login names (not deleted).
#[derive(Debug)]
pub struct LoginUser {
    pub id: uuid::Uuid,
    pub password_hash: Option<String>,
    pub status: String,
    /// Sealed under the user's key (plain in rows from before sealing, and for the reasons
    /// auth-svc itself writes).
    pub suspension_reason: crate::personal::Stored,
}

/// What a login reads before the password hash.
#[derive(Debug)]
pub struct LoginFacts {
    pub policy: Policy,
    /// `None` when no user has the email.
    pub user: Option<LoginUser>,
    pub access: UserAccess,
}

/// The policy, the account whose email has blind index `blinds` (in a row from before sealing:
/// whose email is `plain`) and what its session needs (roles, TOTP), in one round trip: after the
/// hash only the writes remain.
pub async fn login_facts(tx: &mut TenantTx, blinds: &Blinds, plain: &str) -> Result<LoginFacts, ApiError> {
    #[derive(sqlx::FromRow)]
    struct Facts {
        #[sqlx(flatten)]
        policy: Policy,
        id: Option<uuid::Uuid>,
        password_hash: Option<String>,
        status: Option<String>,
        suspension_reason: Option<String>,
        suspension_reason_sealed: Option<String>,
        #[sqlx(flatten)]
        access: UserAccess,
    }
    let sql = format!(
        "SELECT {POLICY_COLUMNS}, u.id, u.password_hash, u.status, u.suspension_reason, u.suspension_reason_sealed,
                EXISTS (SELECT 1 FROM mfa_totp m WHERE m.user_id = u.id AND m.confirmed_at IS NOT NULL) AS has_totp,
                EXISTS (SELECT 1 FROM passkeys k WHERE k.user_id = u.id) AS has_passkey,
                {}
           FROM tenant_policy p
           LEFT JOIN users u ON u.id = coalesce(
                    (SELECT user_id FROM user_email_index
                      WHERE (key_version, blind) IN (SELECT * FROM unnest($1::int[], $2::bytea[])) LIMIT 1),
                    (SELECT id FROM users WHERE email = $3))
                AND u.status <> 'deleted'",
        super::roles::effective_columns("u.id"),
    );
    let (versions, blinds) = super::users::split(blinds);
    let facts: Facts = tx.one(sqlx::query_as(&sql).bind(versions).bind(blinds).bind(plain)).await?;
    let user = match (facts.id, facts.status) {
        (Some(id), Some(status)) => Some(LoginUser {
            id,
            password_hash: facts.password_hash,
            status,
            suspension_reason: crate::personal::Stored::of(facts.suspension_reason_sealed, facts.suspension_reason),
        }),
        _ => None,
    };
    Ok(LoginFacts { policy: facts.policy, user, access: facts.access })
}

/// A session being opened.
#[derive(Debug)]
pub struct NewSessionRow<'a> {
    /// Chosen before sealing: the sealed fields name their row.
    pub id: uuid::Uuid,
    pub user: uuid::Uuid,
    pub ip_sealed: Option<&'a str>,
    pub user_agent_sealed: Option<&'a str>,
    /// The `jti` of its first access token.
    pub access_jti: uuid::Uuid,
    pub amr: &'a [String],
    /// Opened with a second factor.
    pub mfa: bool,
    pub enrollment_only: bool,
    pub ttl_secs: f64,
    /// The digest of its first refresh token.
    pub refresh_hash: &'a [u8],
    /// The OAuth client it was opened for (the code flow), which alone refreshes it.
    pub oauth_client: Option<uuid::Uuid>,
    /// The scopes the user granted that client.
    pub oauth_scopes: Option<&'a [String]>,
}

/// Inserts the session and its first refresh token, and notes the user's login, in one statement.
pub async fn open_session(tx: &mut TenantTx, s: &NewSessionRow<'_>) -> Result<(), ApiError> {
    tx.execute(
        sqlx::query(
            "WITH s AS (
             INSERT INTO sessions (id, user_id, ip_sealed, user_agent_sealed, access_jti, amr, mfa_at, enrollment_only,
                                   expires_at, oauth_client_id, oauth_scopes)
             VALUES ($9, $1, $2, $3, $10, $4, CASE WHEN $5 THEN now() END, $6, now() + make_interval(secs => $7), $11,
                     $12)
             RETURNING id
         ), r AS (
             INSERT INTO refresh_tokens (token_hash, session_id, generation, expires_at)
             SELECT $8, id, 0, now() + make_interval(secs => $7) FROM s
         )
         UPDATE users SET last_login_at = now() WHERE id = $1",
        )
        .bind(s.user)
        .bind(s.ip_sealed)
        .bind(s.user_agent_sealed)
        .bind(s.amr)
        .bind(s.mfa)
        .bind(s.enrollment_only)
        .bind(s.ttl_secs)
        .bind(s.refresh_hash)
        .bind(s.id)
        .bind(s.access_jti)
        .bind(s.oauth_client)
        .bind(s.oauth_scopes),
    )
    .await
    .map(drop)
}

/// What a refresh grant mints its access token from.
#[derive(Debug, sqlx::FromRow)]
pub struct Grant {
    #[sqlx(flatten)]
    pub policy: Policy,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    pub session_id: uuid::Uuid,
    pub user_id: uuid::Uuid,
    pub amr: Vec<String>,
    pub mfa_at: Option<chrono::DateTime<chrono::Utc>>,
    pub enrollment_only: bool,
}

/// What [`rotate`] did with a refresh token.
#[derive(Debug)]
pub enum Rotation {
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
pub async fn rotate(
    tx: &mut TenantTx,
    presented: &str,
    next: &str,
    access_jti: uuid::Uuid,
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
             UPDATE sessions s SET last_seen_at = now(), access_jti = $8,
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
        super::roles::effective_columns("x.user_id"),
    );
    // The statement writes the grant's audit record itself.
    tx.mark_recorded();
    let row: Option<Row> = tx
        .optional(
            sqlx::query_as(&sql)
                .bind(tokens::digest(presented))
                .bind(tokens::digest(next))
                .bind(tokens::seal_successor(presented, next)?)
                .bind(uuid::Uuid::now_v7())
                .bind(crate::SERVICE)
                .bind(request_id)
                .bind(kit::telemetry::current_trace_id())
                .bind(access_jti),
        )
        .await?;
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

/// A refresh token that [`rotate`] did not take, with its session, locked until the transaction
/// ends.
#[derive(Debug, sqlx::FromRow)]
pub struct RefreshState {
    #[sqlx(flatten)]
    pub grant: Grant,
    pub generation: i32,
    pub successor_sealed: Option<Vec<u8>>,
    #[sqlx(flatten)]
    pub standing: TokenStanding,
}

/// The [`RefreshState`] of the token `presented`; `grace_secs` is how long after its use it may
/// be presented again for the same successor.
pub async fn refresh_state(
    tx: &mut TenantTx,
    presented: &str,
    grace_secs: f64,
) -> Result<Option<RefreshState>, ApiError> {
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
        super::roles::effective_columns("s.user_id"),
    );
    tx.optional(sqlx::query_as(&sql).bind(tokens::digest(presented)).bind(grace_secs)).await
}
