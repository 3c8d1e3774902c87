//! The rules of logging in that need no I/O: what a credential must look like before anything is
//! read, the login limits, when a session may only enrol a second factor, when a refresh grant
//! must end its session instead, and what a refresh token that was not rotated is. Unit-tested
//! here; `api::authn` runs the flows.

use proto::auth::v1 as pb;

use crate::domain::policy::Policy;
use crate::throttle::Limits;

/// Login challenge tokens start with this and name their tenant (`srm_<slug>.<random>`).
pub const MFA_PREFIX: &str = "srm_";
/// How long a login challenge waits for its second factor.
pub const MFA_CHALLENGE_SECS: i64 = 300;
/// Wrong codes after which a login challenge is spent.
pub const MFA_MAX_ATTEMPTS: i32 = 5;

/// The client's address and user agent as stored: cut to 64 and 512 characters.
pub fn client(c: Option<pb::ClientInfo>) -> (String, String) {
    let c = c.unwrap_or_default();
    let ip: String = c.ip.chars().take(64).collect();
    let ua: String = c.user_agent.chars().take(512).collect();
    (ip, ua)
}

/// Whether an (already trimmed and lowercased) email and a password could be a credential at all;
/// one that cannot is refused as a wrong one, before anything is read.
pub fn plausible_credentials(email: &str, password: &str) -> bool {
    !(email.is_empty() || email.len() > 254 || password.is_empty() || password.len() > crate::passwords::MAX_LENGTH)
}

/// The login limits under `policy`: its threshold per account+IP, the deployment's `ip_threshold`
/// per IP, and `account_factor` times the threshold per account from every address.
pub fn limits(policy: &Policy, ip_threshold: u32, account_factor: u32) -> Limits {
    let threshold = policy.lockout_threshold.unsigned_abs();
    Limits {
        window: std::time::Duration::from_secs(policy.lockout_window_secs.unsigned_abs().into()),
        account_ip: threshold,
        ip: ip_threshold,
        account: threshold.saturating_mul(account_factor),
    }
}

/// Whether a new session may only enrol a second factor: its user is privileged, and it opened
/// without a second factor because the user has none yet (a user who has TOTP is always asked).
pub fn enrollment_only(privileged: bool, mfa: bool, has_totp: bool) -> bool {
    privileged && !mfa && !has_totp
}

/// The `amr` a passed second factor adds to a session: `otp` for a TOTP code, `mfa` for a backup
/// code.
pub fn amr_of(method: &str) -> &'static str {
    if method == "otp" { "otp" } else { "mfa" }
}

/// Whether a login challenge that has seen `attempts` wrong codes is spent by one more.
pub fn challenge_exhausted(attempts: i32) -> bool {
    attempts + 1 >= MFA_MAX_ATTEMPTS
}

/// Whether a refresh grant must end its session rather than mint: privilege is decided again at
/// every grant, and a role (or a policy) that made the user privileged after the session opened
/// without a second factor ends the session, rather than flowing into its tokens.
pub fn grant_needs_mfa(
    policy: &Policy,
    roles: &[String],
    permissions: &[String],
    passed_mfa: bool,
    enrollment_only: bool,
) -> bool {
    policy.privileged(roles, permissions) && !passed_mfa && !enrollment_only
}

/// How a refresh token the grant did not take stands, with its session.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenStanding {
    pub expired: bool,
    pub used: bool,
    /// Used within the grace window.
    pub in_grace: bool,
    /// Its session is revoked.
    pub revoked: bool,
    /// Its user's status.
    pub status: String,
}

/// What to do with a refresh token the grant did not take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Its session is over (revoked, expired, or its user no longer active).
    SessionEnded,
    /// Not spent: a grant that spent it rolled back; refresh again.
    Conflict,
    /// The same token again within the grace window: it gets the successor it got the first time.
    SameSuccessor,
    /// A spent token after that: its family is compromised, and its session ends.
    Reused,
}

impl TokenStanding {
    /// What this token is, given whether its successor is sealed to it.
    pub fn retry(&self, has_successor: bool) -> Retry {
        if self.revoked || self.expired || self.status != "active" {
            Retry::SessionEnded
        } else if !self.used {
            Retry::Conflict
        } else if has_successor && self.in_grace {
            Retry::SameSuccessor
        } else {
            Retry::Reused
        }
    }
}

/// How a login ended, for `strongroom_auth_logins_total{outcome}`: `success` (tokens issued),
/// `mfa_required` (the password was right and a second factor is asked for), `failure` (wrong or
/// implausible credentials, a suspended user) or `locked` (the login throttle refused it). Other
/// errors (a store or the throttle unavailable, too many logins in progress) are no outcome.
pub fn outcome(result: &Result<pb::LoginResponse, kit::ApiError>) -> Option<&'static str> {
    use pb::login_response::Result as Step;
    match result {
        Ok(pb::LoginResponse { result: Some(Step::Tokens(_)) }) => Some("success"),
        Ok(pb::LoginResponse { result: Some(Step::Mfa(_)) }) => Some("mfa_required"),
        Ok(pb::LoginResponse { result: None }) => None,
        Err(e) => match e.reason.as_ref() {
            "INVALID_CREDENTIALS" | "USER_SUSPENDED" => Some("failure"),
            "LOGIN_LOCKED" | "ACCOUNT_UNDER_ATTACK" => Some("locked"),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_details_are_cut_to_their_columns() {
        let c = pb::ClientInfo { ip: "1".repeat(100), user_agent: "é".repeat(600) };
        let (ip, ua) = client(Some(c));
        assert_eq!((ip.chars().count(), ua.chars().count()), (64, 512));
        assert_eq!(client(None), (String::new(), String::new()));
    }

    #[test]
    fn implausible_credentials_are_refused_before_any_read() {
        assert!(plausible_credentials("ada@example.com", "hunter22"));
        assert!(!plausible_credentials("", "hunter22"));
        assert!(!plausible_credentials("ada@example.com", ""));
        assert!(!plausible_credentials(&"a".repeat(255), "hunter22"));
        assert!(!plausible_credentials("ada@example.com", &"p".repeat(crate::passwords::MAX_LENGTH + 1)));
    }

    #[test]
    fn limits_follow_the_policy_and_the_deployment() {
        let l = limits(&Policy::default(), 100, 10);
        assert_eq!((l.account_ip, l.ip, l.account, l.window.as_secs()), (5, 100, 50, 900));
        assert_eq!(limits(&Policy::default(), 1, u32::MAX).account, u32::MAX);
    }

    #[test]
    fn only_a_privileged_user_without_a_second_factor_gets_an_enrolment_session() {
        assert!(enrollment_only(true, false, false));
        assert!(!enrollment_only(true, true, false));
        assert!(!enrollment_only(true, false, true));
        assert!(!enrollment_only(false, false, false));
        assert_eq!((amr_of("otp"), amr_of("backup_code")), ("otp", "mfa"));
        assert!(!challenge_exhausted(MFA_MAX_ATTEMPTS - 2));
        assert!(challenge_exhausted(MFA_MAX_ATTEMPTS - 1));
    }

    #[test]
    fn a_grant_of_a_newly_privileged_password_only_session_ends_it() {
        let policy = Policy::default();
        let owner = ["owner".to_owned()];
        assert!(grant_needs_mfa(&policy, &owner, &[], false, false));
        assert!(!grant_needs_mfa(&policy, &owner, &[], true, false));
        assert!(!grant_needs_mfa(&policy, &owner, &[], false, true));
        assert!(!grant_needs_mfa(&policy, &["viewer".to_owned()], &[], false, false));
    }

    #[test]
    fn a_spent_refresh_token_past_its_grace_is_reuse() {
        let live =
            TokenStanding { expired: false, used: true, in_grace: true, revoked: false, status: "active".into() };
        assert_eq!(live.retry(true), Retry::SameSuccessor);
        assert_eq!(live.retry(false), Retry::Reused);
        assert_eq!(TokenStanding { in_grace: false, ..live.clone() }.retry(true), Retry::Reused);
        assert_eq!(TokenStanding { used: false, ..live.clone() }.retry(true), Retry::Conflict);
        assert_eq!(TokenStanding { revoked: true, ..live.clone() }.retry(true), Retry::SessionEnded);
        assert_eq!(TokenStanding { status: "suspended".into(), ..live }.retry(true), Retry::SessionEnded);
    }

    #[test]
    fn a_login_ends_in_one_of_four_outcomes() {
        use crate::error::AuthError;
        use pb::login_response::Result as Step;
        let wait = std::time::Duration::from_secs(60);
        let ended = |step| outcome(&Ok(pb::LoginResponse { result: Some(step) }));
        let refused = |e: AuthError| outcome(&Err(e.into()));
        assert_eq!(ended(Step::Tokens(pb::Tokens::default())), Some("success"));
        assert_eq!(ended(Step::Mfa(pb::MfaChallenge::default())), Some("mfa_required"));
        assert_eq!(refused(AuthError::InvalidCredentials), Some("failure"));
        assert_eq!(refused(AuthError::UserSuspended("fraud".into())), Some("failure"));
        assert_eq!(refused(AuthError::LoginLocked(wait)), Some("locked"));
        assert_eq!(refused(AuthError::AccountUnderAttack(wait)), Some("locked"));
        assert_eq!(refused(AuthError::TooManyLogins), None);
        assert_eq!(refused(AuthError::ThrottleUnavailable), None);
        assert_eq!(outcome(&Err(kit::ApiError::internal(&"database down"))), None);
    }
}
