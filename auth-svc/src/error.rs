//! Every refusal auth-svc gives of its own, each with its stable reason, mapped once to
//! `kit::ErrorCode` (input that fails a field's rule is `ApiError::invalid_field`, the same in every
//! service). A reason is part of the API: clients branch on it, so a variant's code, reason and
//! message never change.

use std::time::Duration;

use kit::{ApiError, ErrorCode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// NOT_FOUND `USER_NOT_FOUND`: no such user (or a deleted one).
    UserNotFound,
    /// NOT_FOUND `ROLE_NOT_FOUND`: no role with this id.
    RoleNotFound,
    /// NOT_FOUND `ROLE_NOT_FOUND`: no role with this name.
    NoRoleNamed(String),
    /// NOT_FOUND `GROUP_NOT_FOUND`.
    GroupNotFound,
    /// NOT_FOUND `GRANTEE_NOT_FOUND`: a role granted to a user or group that does not exist.
    GranteeNotFound,
    /// NOT_FOUND `NOT_FOUND`: a membership of a user or group that does not exist.
    MemberOrGroupNotFound,
    /// NOT_FOUND `SESSION_NOT_FOUND`.
    SessionNotFound,
    /// NOT_FOUND `API_KEY_NOT_FOUND`.
    ApiKeyNotFound,
    /// ALREADY_EXISTS `EMAIL_TAKEN`.
    EmailTaken,
    /// NOT_FOUND `APPEAL_NOT_FOUND`.
    AppealNotFound,
    /// FAILED_PRECONDITION `APPEAL_OPEN`: the user has an appeal waiting already.
    AppealOpen,
    /// FAILED_PRECONDITION `APPEAL_NOT_OPEN`: the appeal is not waiting for staff.
    AppealNotOpen,
    /// FAILED_PRECONDITION `NO_INFORMATION_REQUESTED`: nothing to answer.
    NoInformationRequested,
    /// NOT_FOUND `PRIVACY_REQUEST_NOT_FOUND`.
    PrivacyRequestNotFound,
    /// FAILED_PRECONDITION `REQUEST_FINAL`: the request is completed or rejected already.
    PrivacyRequestFinal,
    /// FAILED_PRECONDITION `INVALID_TRANSITION`: a request moves only forward.
    PrivacyRequestBackwards,
    /// FAILED_PRECONDITION `NOT_AN_ACCESS_REQUEST`: only an access request is exported.
    NotAnAccessRequest,
    /// FAILED_PRECONDITION `NOT_EXECUTABLE`: this kind of request (or of subject) is carried out by
    /// people, then completed with a note.
    NotExecutable(&'static str),
    /// ALREADY_EXISTS `HOLD_EXISTS`: the same scope and subject is held already.
    HoldExists,
    /// NOT_FOUND `HOLD_NOT_FOUND`.
    HoldNotFound,
    /// FAILED_PRECONDITION `HOLD_RELEASED`: the hold is released already.
    HoldReleased,
    /// FAILED_PRECONDITION `USER_RESTRICTED`: the user's erasure waits for a legal hold to end.
    UserRestricted,
    /// ALREADY_EXISTS `ROLE_EXISTS`.
    RoleExists,
    /// ALREADY_EXISTS `GROUP_EXISTS`.
    GroupExists,
    /// FAILED_PRECONDITION `BUILTIN_ROLE`: built-in roles cannot be deleted.
    BuiltinRole,
    /// FAILED_PRECONDITION `CANNOT_SUSPEND_SELF`.
    CannotSuspendSelf,
    /// FAILED_PRECONDITION `CANNOT_DELETE_SELF`.
    CannotDeleteSelf,
    /// FAILED_PRECONDITION `NOT_SUSPENDED`: reactivating a user who is not suspended.
    NotSuspended,
    /// FAILED_PRECONDITION `LAST_OWNER`: the change would leave the tenant without an active owner.
    LastOwner,
    /// FAILED_PRECONDITION `NO_SESSION`: logout found no session to end.
    NoSessionToEnd,
    /// FAILED_PRECONDITION `NO_SESSION`: step-up with a token that names no session.
    StepUpNeedsSession,
    /// FAILED_PRECONDITION `TENANT_NOT_ACTIVE`.
    TenantNotActive,
    /// FAILED_PRECONDITION `TENANT_TERMINATED`.
    TenantTerminated,
    /// FAILED_PRECONDITION `ROTATION_PENDING`: the last rotated-in key has not started signing.
    RotationPending,
    /// FAILED_PRECONDITION `TOTP_ALREADY_ENROLLED`.
    TotpAlreadyEnrolled,
    /// FAILED_PRECONDITION `NO_PENDING_TOTP`: confirming TOTP before enrolling.
    NoPendingTotp,
    /// FAILED_PRECONDITION `MFA_UNAVAILABLE`: vault-svc can no longer open the TOTP seed.
    MfaUnavailable,
    /// PERMISSION_DENIED `API_KEY_CANNOT_MINT`: an API key cannot create API keys.
    ApiKeyCannotMint,
    /// PERMISSION_DENIED `NOT_A_USER`: the call needs a user's token.
    NotAUser,
    /// PERMISSION_DENIED `USER_SUSPENDED`, with the suspension's reason.
    UserSuspended(String),
    /// PERMISSION_DENIED `PRIVILEGE_ESCALATION`: granting a permission the caller does not hold.
    GrantBeyondHeld(String),
    /// PERMISSION_DENIED `PRIVILEGE_ESCALATION`: a user the change affects holds a permission the
    /// caller does not (nobody suspends, deletes or strips a superior).
    SuperiorAffected(String),
    /// UNAUTHENTICATED `INVALID_CREDENTIALS`: wrong email or password (never says which).
    InvalidCredentials,
    /// UNAUTHENTICATED `INVALID_CREDENTIALS`: a password change with the wrong current password.
    WrongCurrentPassword,
    /// UNAUTHENTICATED `INVALID_MFA`: a wrong second-factor code (enrolment, step-up).
    InvalidMfaCode,
    /// UNAUTHENTICATED `INVALID_MFA`: a wrong code or an unusable login challenge.
    InvalidMfaChallenge,
    /// UNAUTHENTICATED `INVALID_REFRESH_TOKEN`.
    InvalidRefreshToken,
    /// UNAUTHENTICATED `SESSION_ENDED`: the refresh token's session is over.
    SessionEnded,
    /// UNAUTHENTICATED `MFA_REQUIRED`: the user became privileged; the password-only session ended.
    MfaRequired,
    /// UNAUTHENTICATED `REFRESH_TOKEN_REUSED`: a spent refresh token again; its session ended.
    RefreshTokenReused,
    /// UNAUTHENTICATED `UNKNOWN_API_KEY`.
    UnknownApiKey,
    /// ABORTED `REFRESH_CONFLICT`: a concurrent grant spent the token and rolled back; refresh again.
    RefreshConflict,
    /// RESOURCE_EXHAUSTED `MFA_LOCKED`, with the wait: too many wrong second-factor codes.
    MfaLocked(Duration),
    /// RESOURCE_EXHAUSTED `LOGIN_LOCKED`, with the wait: too many failed logins (per account and
    /// address, or per address).
    LoginLocked(Duration),
    /// RESOURCE_EXHAUSTED `ACCOUNT_UNDER_ATTACK`, with the wait: failed logins of the account
    /// from every address.
    AccountUnderAttack(Duration),
    /// RESOURCE_EXHAUSTED `TOO_MANY_LOGINS`: the password hash queue is full.
    TooManyLogins,
    /// UNAVAILABLE `THROTTLE_UNAVAILABLE`: the login throttle (Redis) does not answer.
    ThrottleUnavailable,
    /// UNAVAILABLE `VAULT_UNAVAILABLE`: vault-svc did not answer.
    VaultUnavailable,
    /// UNAVAILABLE `VAULT_UNAVAILABLE`: the user's key was not shredded, so nothing was deleted.
    ShredFailed,
    /// UNAVAILABLE `REVOCATION_PENDING`: the change is saved, the revocation list has not taken it.
    RevocationPending,
    /// UNAVAILABLE `REVOCATION_LOAD_INTERRUPTED`: the revocation list was reset while loading.
    RevocationLoadInterrupted,
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        use AuthError as E;
        match e {
            E::UserNotFound => ApiError::not_found("USER_NOT_FOUND", "no such user"),
            E::RoleNotFound => ApiError::not_found("ROLE_NOT_FOUND", "no such role"),
            E::NoRoleNamed(name) => ApiError::not_found("ROLE_NOT_FOUND", format!("no role named {name:?}")),
            E::GroupNotFound => ApiError::not_found("GROUP_NOT_FOUND", "no such group"),
            E::GranteeNotFound => ApiError::not_found("GRANTEE_NOT_FOUND", "no such user or group"),
            E::MemberOrGroupNotFound => ApiError::not_found("NOT_FOUND", "no such user or group"),
            E::SessionNotFound => ApiError::not_found("SESSION_NOT_FOUND", "no such session"),
            E::ApiKeyNotFound => ApiError::not_found("API_KEY_NOT_FOUND", "no such API key"),
            E::EmailTaken => ApiError::already_exists("EMAIL_TAKEN", "a user with this email exists"),
            E::AppealNotFound => ApiError::not_found("APPEAL_NOT_FOUND", "no such appeal"),
            E::AppealOpen => ApiError::failed_precondition("APPEAL_OPEN", "an appeal of this user is waiting already"),
            E::AppealNotOpen => {
                ApiError::failed_precondition("APPEAL_NOT_OPEN", "the appeal is not waiting for a decision")
            }
            E::NoInformationRequested => {
                ApiError::failed_precondition("NO_INFORMATION_REQUESTED", "no information was asked for")
            }
            E::PrivacyRequestNotFound => ApiError::not_found("PRIVACY_REQUEST_NOT_FOUND", "no such request"),
            E::PrivacyRequestFinal => {
                ApiError::failed_precondition("REQUEST_FINAL", "the request is completed or rejected already")
            }
            E::PrivacyRequestBackwards => ApiError::failed_precondition(
                "INVALID_TRANSITION",
                "a request moves only forward: received, in_progress, then completed or rejected",
            ),
            E::NotAnAccessRequest => {
                ApiError::failed_precondition("NOT_AN_ACCESS_REQUEST", "only an access request is exported")
            }
            E::NotExecutable(what) => ApiError::failed_precondition("NOT_EXECUTABLE", what),
            E::HoldExists => ApiError::already_exists("HOLD_EXISTS", "an active hold of this scope and subject exists"),
            E::HoldNotFound => ApiError::not_found("HOLD_NOT_FOUND", "no such legal hold"),
            E::HoldReleased => ApiError::failed_precondition("HOLD_RELEASED", "the hold is released already"),
            E::UserRestricted => ApiError::failed_precondition(
                "USER_RESTRICTED",
                "the user's erasure waits for a legal hold to end; they stay suspended until then",
            ),
            E::RoleExists => ApiError::already_exists("ROLE_EXISTS", "a role with this name exists"),
            E::GroupExists => ApiError::already_exists("GROUP_EXISTS", "a group with this name exists"),
            E::BuiltinRole => ApiError::failed_precondition("BUILTIN_ROLE", "built-in roles cannot be deleted"),
            E::CannotSuspendSelf => ApiError::failed_precondition("CANNOT_SUSPEND_SELF", "you cannot suspend yourself"),
            E::CannotDeleteSelf => ApiError::failed_precondition("CANNOT_DELETE_SELF", "you cannot delete yourself"),
            E::NotSuspended => ApiError::failed_precondition("NOT_SUSPENDED", "the user is not suspended"),
            E::LastOwner => ApiError::failed_precondition("LAST_OWNER", "the tenant's last owner cannot be removed"),
            E::NoSessionToEnd => ApiError::failed_precondition("NO_SESSION", "no session to end"),
            E::StepUpNeedsSession => ApiError::failed_precondition("NO_SESSION", "step-up needs a session token"),
            E::TenantNotActive => ApiError::failed_precondition("TENANT_NOT_ACTIVE", "the tenant is not active"),
            E::TenantTerminated => ApiError::failed_precondition("TENANT_TERMINATED", "the tenant is terminated"),
            E::RotationPending => ApiError::failed_precondition(
                "ROTATION_PENDING",
                "a rotated-in key has not started signing yet; rotate again after it has",
            ),
            E::TotpAlreadyEnrolled => ApiError::failed_precondition("TOTP_ALREADY_ENROLLED", "TOTP is already set up"),
            E::NoPendingTotp => ApiError::failed_precondition("NO_PENDING_TOTP", "start enrolment first"),
            E::MfaUnavailable => {
                ApiError::failed_precondition("MFA_UNAVAILABLE", "the second factor can no longer be read")
            }
            E::ApiKeyCannotMint => {
                ApiError::permission_denied("API_KEY_CANNOT_MINT", "an API key cannot create API keys")
            }
            E::NotAUser => ApiError::permission_denied("NOT_A_USER", "this call needs a user's token"),
            E::UserSuspended(reason) => {
                ApiError::permission_denied("USER_SUSPENDED", format!("account suspended: {reason}"))
            }
            E::GrantBeyondHeld(p) => ApiError::permission_denied(
                "PRIVILEGE_ESCALATION",
                format!("cannot grant {p}, which the caller does not hold"),
            ),
            E::SuperiorAffected(p) => ApiError::permission_denied(
                "PRIVILEGE_ESCALATION",
                format!("a user this affects holds {p}, which the caller does not"),
            ),
            E::InvalidCredentials => ApiError::unauthenticated("INVALID_CREDENTIALS", "wrong email or password"),
            E::WrongCurrentPassword => {
                ApiError::unauthenticated("INVALID_CREDENTIALS", "the current password is wrong")
            }
            E::InvalidMfaCode => ApiError::unauthenticated("INVALID_MFA", "the code is not valid"),
            E::InvalidMfaChallenge => {
                ApiError::unauthenticated("INVALID_MFA", "the code or the challenge is not valid")
            }
            E::InvalidRefreshToken => {
                ApiError::unauthenticated("INVALID_REFRESH_TOKEN", "the refresh token is not valid")
            }
            E::SessionEnded => ApiError::unauthenticated("SESSION_ENDED", "the session has ended; log in again"),
            E::MfaRequired => ApiError::unauthenticated(
                "MFA_REQUIRED",
                "the account now needs a second factor; the session has ended, log in again",
            ),
            E::RefreshTokenReused => ApiError::unauthenticated(
                "REFRESH_TOKEN_REUSED",
                "the refresh token was already used; the session has been ended",
            ),
            E::UnknownApiKey => ApiError::unauthenticated("UNKNOWN_API_KEY", "the API key is not valid"),
            E::RefreshConflict => ApiError::new(ErrorCode::Aborted, "REFRESH_CONFLICT", "refresh again"),
            E::MfaLocked(wait) => {
                ApiError::resource_exhausted("MFA_LOCKED", "too many wrong second-factor codes, retry later")
                    .with_retry_after(wait)
            }
            E::LoginLocked(wait) => ApiError::resource_exhausted("LOGIN_LOCKED", "too many failed logins, retry later")
                .with_retry_after(wait),
            E::AccountUnderAttack(wait) => ApiError::resource_exhausted(
                "ACCOUNT_UNDER_ATTACK",
                "this account is under a broad login attack and refuses logins from every address for a while",
            )
            .with_retry_after(wait),
            E::TooManyLogins => {
                ApiError::resource_exhausted("TOO_MANY_LOGINS", "too many logins in progress, retry shortly")
            }
            E::ThrottleUnavailable => {
                ApiError::unavailable("THROTTLE_UNAVAILABLE", "logins are temporarily unavailable, retry shortly")
            }
            E::VaultUnavailable => ApiError::unavailable("VAULT_UNAVAILABLE", "key service unavailable, retry shortly"),
            E::ShredFailed => {
                ApiError::unavailable("VAULT_UNAVAILABLE", "could not shred the user's key; nothing was deleted, retry")
            }
            E::RevocationPending => ApiError::unavailable(
                "REVOCATION_PENDING",
                "the change is saved, but the revocation list did not take it yet; it is listed as soon as the list answers",
            ),
            E::RevocationLoadInterrupted => ApiError::unavailable(
                "REVOCATION_LOAD_INTERRUPTED",
                "Redis restarted, or another replica began loading, while the revocation list was loaded",
            ),
        }
    }
}

impl From<AuthError> for tonic::Status {
    fn from(e: AuthError) -> Self {
        ApiError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_keeps_its_code_and_reason() {
        let wait = Duration::from_secs(7);
        let cases = [
            (AuthError::UserNotFound, ErrorCode::NotFound, "USER_NOT_FOUND"),
            (AuthError::NoRoleNamed("ops".into()), ErrorCode::NotFound, "ROLE_NOT_FOUND"),
            (AuthError::MemberOrGroupNotFound, ErrorCode::NotFound, "NOT_FOUND"),
            (AuthError::EmailTaken, ErrorCode::AlreadyExists, "EMAIL_TAKEN"),
            (AuthError::AppealOpen, ErrorCode::FailedPrecondition, "APPEAL_OPEN"),
            (AuthError::AppealNotOpen, ErrorCode::FailedPrecondition, "APPEAL_NOT_OPEN"),
            (AuthError::LastOwner, ErrorCode::FailedPrecondition, "LAST_OWNER"),
            (AuthError::PrivacyRequestNotFound, ErrorCode::NotFound, "PRIVACY_REQUEST_NOT_FOUND"),
            (AuthError::PrivacyRequestFinal, ErrorCode::FailedPrecondition, "REQUEST_FINAL"),
            (AuthError::PrivacyRequestBackwards, ErrorCode::FailedPrecondition, "INVALID_TRANSITION"),
            (AuthError::NotAnAccessRequest, ErrorCode::FailedPrecondition, "NOT_AN_ACCESS_REQUEST"),
            (AuthError::NotExecutable("x"), ErrorCode::FailedPrecondition, "NOT_EXECUTABLE"),
            (AuthError::HoldExists, ErrorCode::AlreadyExists, "HOLD_EXISTS"),
            (AuthError::HoldNotFound, ErrorCode::NotFound, "HOLD_NOT_FOUND"),
            (AuthError::HoldReleased, ErrorCode::FailedPrecondition, "HOLD_RELEASED"),
            (AuthError::UserRestricted, ErrorCode::FailedPrecondition, "USER_RESTRICTED"),
            (AuthError::StepUpNeedsSession, ErrorCode::FailedPrecondition, "NO_SESSION"),
            (AuthError::SuperiorAffected("users.delete".into()), ErrorCode::PermissionDenied, "PRIVILEGE_ESCALATION"),
            (AuthError::WrongCurrentPassword, ErrorCode::Unauthenticated, "INVALID_CREDENTIALS"),
            (AuthError::RefreshConflict, ErrorCode::Aborted, "REFRESH_CONFLICT"),
            (AuthError::MfaLocked(wait), ErrorCode::ResourceExhausted, "MFA_LOCKED"),
            (AuthError::ShredFailed, ErrorCode::Unavailable, "VAULT_UNAVAILABLE"),
        ];
        for (e, code, reason) in cases {
            let api = ApiError::from(e);
            assert_eq!((api.code, api.reason.as_ref()), (code, reason));
        }
        assert_eq!(ApiError::from(AuthError::LoginLocked(wait)).retry_after, Some(wait));
        assert_eq!(ApiError::from(AuthError::NoRoleNamed("ops".into())).message, "no role named \"ops\"");
    }
}
