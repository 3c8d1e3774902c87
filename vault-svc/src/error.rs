//! Every refusal vault-svc gives of its own, each with its stable reason, mapped once to
//! `kit::ErrorCode` (input that fails a field's rule is `ApiError::invalid_field`, the same in every
//! service; an internal failure is `ApiError::internal`, logged where it is classified).

use kit::{ApiError, ErrorCode};

/// The reason of [`VaultError::KeyNotFound`], which transit tells apart from other key failures.
pub const KEY_NOT_FOUND: &str = "KEY_NOT_FOUND";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultError {
    /// NOT_FOUND `SECRET_NOT_FOUND` (also for a deleted secret asked to reveal).
    SecretNotFound,
    /// NOT_FOUND `SECRET_VERSION_NOT_FOUND`: the secret exists, this version of it does not.
    SecretVersionNotFound { path: String, version: u32 },
    /// FAILED_PRECONDITION `SECRET_VERSION_DESTROYED`: the version's ciphertext was destroyed.
    SecretVersionDestroyed { version: u32 },
    /// FAILED_PRECONDITION `SECRET_EXPIRED`: kept for audit and undelete, no longer served.
    SecretExpired,
    /// ABORTED `VERSION_CONFLICT`: the caller's `expected_version` is not the current one.
    VersionConflict { current: u32, expected: u32 },
    /// ABORTED `VERSION_CONFLICT`: another writer made the same version first; retry.
    SecretChangedConcurrently,
    /// ALREADY_EXISTS `REQUEST_ID_REUSED`: a request id replayed with a different request.
    RequestIdReused,
    /// INVALID_ARGUMENT `MALFORMED_CIPHERTEXT`: not a vault envelope (or an unsupported one).
    MalformedCiphertext,
    /// INVALID_ARGUMENT `DECRYPTION_FAILED`: the ciphertext is not of this tenant, caller, subject
    /// and context.
    DecryptionFailed,
    /// INVALID_ARGUMENT `DECRYPTION_FAILED`: the subject has no key (never created here).
    NoSubjectKey,
    /// FAILED_PRECONDITION `KEY_DESTROYED`: the key protecting the data was crypto-shredded.
    KeyDestroyed,
    /// FAILED_PRECONDITION `KEY_NOT_FOUND`: the tenant never had this key version.
    KeyNotFound,
    /// UNAVAILABLE `KMS_UNAVAILABLE`: the master key provider failed.
    KmsUnavailable,
    /// UNAVAILABLE `MASTER_KEY_UNAVAILABLE`: the master key wrapping the data is not configured.
    MasterKeyUnavailable,
    /// FAILED_PRECONDITION `REWRAP_INCOMPLETE`: key versions cannot retire while data uses them.
    RewrapIncomplete { remaining: u64 },
    /// NOT_FOUND `SIGNING_KEY_NOT_FOUND`: never created (its owner creates it).
    SigningKeyNotFound,
    /// NOT_FOUND `SIGNING_KEY_NOT_FOUND`: no such version of the signing key.
    SigningKeyVersionNotFound,
    /// PERMISSION_DENIED `SIGNING_KEY_OF_ANOTHER_WORKLOAD`: a workload uses another one's key.
    SigningKeyOfAnotherWorkload { caller: String, key: String },
    /// ABORTED `CONCURRENT_ROTATION`: the signing key was rotated concurrently; retry.
    ConcurrentRotation,
    /// FAILED_PRECONDITION `RETENTION_EXPIRED`: the period key of a retention class was destroyed
    /// because the whole period is past the class's retention.
    RetentionExpired,
    /// NOT_FOUND `RETENTION_CLASS_NOT_FOUND`: the tenant has no such retention class.
    RetentionClassNotFound,
    /// FAILED_PRECONDITION `RETENTION_PERIOD_FIXED`: a class's period cannot change (its keys
    /// already cover periods of that length).
    RetentionPeriodFixed,
}

impl From<VaultError> for ApiError {
    fn from(e: VaultError) -> Self {
        use VaultError as E;
        match e {
            E::SecretNotFound => ApiError::not_found("SECRET_NOT_FOUND", "no such secret"),
            E::SecretVersionNotFound { path, version } => {
                ApiError::not_found("SECRET_VERSION_NOT_FOUND", format!("version {version} of {path} does not exist"))
            }
            E::SecretVersionDestroyed { version } => {
                ApiError::failed_precondition("SECRET_VERSION_DESTROYED", format!("version {version} was destroyed"))
            }
            E::SecretExpired => ApiError::failed_precondition("SECRET_EXPIRED", "the secret has expired"),
            E::VersionConflict { current, expected } => ApiError::new(
                ErrorCode::Aborted,
                "VERSION_CONFLICT",
                format!("current version is {current}, expected {expected}"),
            ),
            E::SecretChangedConcurrently => {
                ApiError::new(ErrorCode::Aborted, "VERSION_CONFLICT", "the secret changed concurrently; retry")
            }
            E::RequestIdReused => {
                ApiError::already_exists("REQUEST_ID_REUSED", "this request_id was used for a different request")
            }
            E::MalformedCiphertext => {
                ApiError::new(ErrorCode::InvalidArgument, "MALFORMED_CIPHERTEXT", "ciphertext is malformed")
            }
            E::DecryptionFailed => ApiError::new(
                ErrorCode::InvalidArgument,
                "DECRYPTION_FAILED",
                "ciphertext does not decrypt in this tenant, path and context",
            ),
            E::NoSubjectKey => {
                ApiError::new(ErrorCode::InvalidArgument, "DECRYPTION_FAILED", "no key for this subject")
            }
            E::KeyDestroyed => {
                ApiError::failed_precondition("KEY_DESTROYED", "the key protecting this data was destroyed")
            }
            E::KeyNotFound => ApiError::failed_precondition(KEY_NOT_FOUND, "no such key version"),
            E::KmsUnavailable => ApiError::unavailable("KMS_UNAVAILABLE", "the key management service is unavailable"),
            E::MasterKeyUnavailable => {
                ApiError::unavailable("MASTER_KEY_UNAVAILABLE", "the master key of this data is not available")
            }
            E::RewrapIncomplete { remaining } => ApiError::failed_precondition(
                "REWRAP_INCOMPLETE",
                format!("{remaining} stored items still use older key versions; run RewrapTenant first"),
            ),
            E::SigningKeyNotFound => ApiError::not_found(
                "SIGNING_KEY_NOT_FOUND",
                "no such signing key; its owner creates it with CreateSigningKey",
            ),
            E::SigningKeyVersionNotFound => ApiError::not_found("SIGNING_KEY_NOT_FOUND", "no such signing key version"),
            E::SigningKeyOfAnotherWorkload { caller, key } => ApiError::permission_denied(
                "SIGNING_KEY_OF_ANOTHER_WORKLOAD",
                format!("{caller} may not use the signing key {key}"),
            ),
            E::ConcurrentRotation => {
                ApiError::new(ErrorCode::Aborted, "CONCURRENT_ROTATION", "the key was rotated concurrently; retry")
            }
            E::RetentionExpired => ApiError::failed_precondition(
                "RETENTION_EXPIRED",
                "the retention of this data has ended and its key was destroyed",
            ),
            E::RetentionClassNotFound => ApiError::not_found("RETENTION_CLASS_NOT_FOUND", "no such retention class"),
            E::RetentionPeriodFixed => ApiError::failed_precondition(
                "RETENTION_PERIOD_FIXED",
                "a retention class keeps the period it was created with",
            ),
        }
    }
}

impl From<VaultError> for tonic::Status {
    fn from(e: VaultError) -> Self {
        ApiError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_keeps_its_code_reason_and_message() {
        let cases = [
            (VaultError::SecretNotFound, ErrorCode::NotFound, "SECRET_NOT_FOUND", "no such secret"),
            (
                VaultError::SecretVersionNotFound { path: "db/main".into(), version: 3 },
                ErrorCode::NotFound,
                "SECRET_VERSION_NOT_FOUND",
                "version 3 of db/main does not exist",
            ),
            (
                VaultError::SecretVersionDestroyed { version: 2 },
                ErrorCode::FailedPrecondition,
                "SECRET_VERSION_DESTROYED",
                "version 2 was destroyed",
            ),
            (VaultError::SecretExpired, ErrorCode::FailedPrecondition, "SECRET_EXPIRED", "the secret has expired"),
            (
                VaultError::VersionConflict { current: 1, expected: 4 },
                ErrorCode::Aborted,
                "VERSION_CONFLICT",
                "current version is 1, expected 4",
            ),
            (
                VaultError::SecretChangedConcurrently,
                ErrorCode::Aborted,
                "VERSION_CONFLICT",
                "the secret changed concurrently; retry",
            ),
            (
                VaultError::RequestIdReused,
                ErrorCode::AlreadyExists,
                "REQUEST_ID_REUSED",
                "this request_id was used for a different request",
            ),
            (
                VaultError::MalformedCiphertext,
                ErrorCode::InvalidArgument,
                "MALFORMED_CIPHERTEXT",
                "ciphertext is malformed",
            ),
            (
                VaultError::DecryptionFailed,
                ErrorCode::InvalidArgument,
                "DECRYPTION_FAILED",
                "ciphertext does not decrypt in this tenant, path and context",
            ),
            (VaultError::NoSubjectKey, ErrorCode::InvalidArgument, "DECRYPTION_FAILED", "no key for this subject"),
            (
                VaultError::KeyDestroyed,
                ErrorCode::FailedPrecondition,
                "KEY_DESTROYED",
                "the key protecting this data was destroyed",
            ),
            (VaultError::KeyNotFound, ErrorCode::FailedPrecondition, "KEY_NOT_FOUND", "no such key version"),
            (
                VaultError::KmsUnavailable,
                ErrorCode::Unavailable,
                "KMS_UNAVAILABLE",
                "the key management service is unavailable",
            ),
            (
                VaultError::MasterKeyUnavailable,
                ErrorCode::Unavailable,
                "MASTER_KEY_UNAVAILABLE",
                "the master key of this data is not available",
            ),
            (
                VaultError::RewrapIncomplete { remaining: 7 },
                ErrorCode::FailedPrecondition,
                "REWRAP_INCOMPLETE",
                "7 stored items still use older key versions; run RewrapTenant first",
            ),
            (
                VaultError::SigningKeyNotFound,
                ErrorCode::NotFound,
                "SIGNING_KEY_NOT_FOUND",
                "no such signing key; its owner creates it with CreateSigningKey",
            ),
            (
                VaultError::SigningKeyVersionNotFound,
                ErrorCode::NotFound,
                "SIGNING_KEY_NOT_FOUND",
                "no such signing key version",
            ),
            (
                VaultError::SigningKeyOfAnotherWorkload { caller: "ledger".into(), key: "audit".into() },
                ErrorCode::PermissionDenied,
                "SIGNING_KEY_OF_ANOTHER_WORKLOAD",
                "ledger may not use the signing key audit",
            ),
            (
                VaultError::ConcurrentRotation,
                ErrorCode::Aborted,
                "CONCURRENT_ROTATION",
                "the key was rotated concurrently; retry",
            ),
            (
                VaultError::RetentionExpired,
                ErrorCode::FailedPrecondition,
                "RETENTION_EXPIRED",
                "the retention of this data has ended and its key was destroyed",
            ),
            (
                VaultError::RetentionClassNotFound,
                ErrorCode::NotFound,
                "RETENTION_CLASS_NOT_FOUND",
                "no such retention class",
            ),
            (
                VaultError::RetentionPeriodFixed,
                ErrorCode::FailedPrecondition,
                "RETENTION_PERIOD_FIXED",
                "a retention class keeps the period it was created with",
            ),
        ];
        for (e, code, reason, message) in cases {
            let api = ApiError::from(e);
            assert_eq!((api.code, api.reason.as_ref(), api.message.as_str()), (code, reason, message));
        }
    }
}
