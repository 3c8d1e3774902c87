//! Every refusal audit-svc gives of its own, each with its stable reason, mapped once to
//! `kit::ErrorCode` (input that fails a field's rule is `ApiError::invalid_field`, the same in every
//! service; an internal failure is `ApiError::internal`, logged where it happens).

use kit::{ApiError, ErrorCode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditError {
    /// UNAUTHENTICATED `TOKEN_REQUIRED`: a reader other than the operator presented no token.
    TokenRequired,
    /// FAILED_PRECONDITION `NO_CHECKPOINT`: the log has no signed checkpoint to read against yet.
    NoCheckpoint,
    /// NOT_FOUND `ENTRY_NOT_FOUND`: the entry is beyond the latest checkpoint of `size` entries.
    EntryNotInCheckpoint { seq: u64, size: u64 },
    /// NOT_FOUND `ENTRY_NOT_FOUND`: the entry is covered by a checkpoint but no longer in the log.
    EntryNotFound,
    /// UNAVAILABLE `NO_SIGNER`: no vault-svc is configured to hold the verifier key.
    NoSigner,
    /// UNAVAILABLE `AUDIT_NOT_PROVISIONED`: the tenant's log is not provisioned yet; retry.
    NotProvisioned,
    /// UNAVAILABLE `AUDIT_SHUTTING_DOWN`: retry on another replica.
    ShuttingDown,
    /// FAILED_PRECONDITION `TENANT_TERMINATED`: a terminated tenant's log is closed.
    TenantTerminated,
    /// FAILED_PRECONDITION `RETENTION_BELOW_FLOOR`: less than the deployment's floor of `floor` days.
    RetentionBelowFloor { floor: i32 },
    /// FAILED_PRECONDITION `LEGAL_HOLD`: a tenant-wide legal hold defers pruning until it is released.
    LegalHold,
}

impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::TokenRequired => ApiError::unauthenticated("TOKEN_REQUIRED", "an access token is required"),
            AuditError::NoCheckpoint => {
                ApiError::new(ErrorCode::FailedPrecondition, "NO_CHECKPOINT", "the log has no signed checkpoint yet")
            }
            AuditError::EntryNotInCheckpoint { seq, size } => {
                ApiError::not_found("ENTRY_NOT_FOUND", format!("no entry {seq} in the latest checkpoint (size {size})"))
            }
            AuditError::EntryNotFound => ApiError::not_found("ENTRY_NOT_FOUND", "no such entry"),
            AuditError::NoSigner => ApiError::unavailable("NO_SIGNER", "no vault configured"),
            AuditError::NotProvisioned => {
                ApiError::unavailable("AUDIT_NOT_PROVISIONED", "the tenant's audit log is being provisioned, retry")
            }
            AuditError::ShuttingDown => {
                ApiError::unavailable("AUDIT_SHUTTING_DOWN", "audit-svc is shutting down, retry")
            }
            AuditError::TenantTerminated => {
                ApiError::new(ErrorCode::FailedPrecondition, "TENANT_TERMINATED", "tenant is terminated")
            }
            AuditError::RetentionBelowFloor { floor } => ApiError::failed_precondition(
                "RETENTION_BELOW_FLOOR",
                format!("retention_days must be at least the deployment's floor of {floor} days"),
            ),
            AuditError::LegalHold => ApiError::failed_precondition(
                "LEGAL_HOLD",
                "a legal hold on the tenant defers pruning until it is released",
            ),
        }
    }
}

impl From<AuditError> for tonic::Status {
    fn from(e: AuditError) -> Self {
        ApiError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_keeps_its_code_reason_and_message() {
        let cases = [
            (AuditError::TokenRequired, ErrorCode::Unauthenticated, "TOKEN_REQUIRED", "an access token is required"),
            (
                AuditError::NoCheckpoint,
                ErrorCode::FailedPrecondition,
                "NO_CHECKPOINT",
                "the log has no signed checkpoint yet",
            ),
            (
                AuditError::EntryNotInCheckpoint { seq: 7, size: 5 },
                ErrorCode::NotFound,
                "ENTRY_NOT_FOUND",
                "no entry 7 in the latest checkpoint (size 5)",
            ),
            (AuditError::EntryNotFound, ErrorCode::NotFound, "ENTRY_NOT_FOUND", "no such entry"),
            (AuditError::NoSigner, ErrorCode::Unavailable, "NO_SIGNER", "no vault configured"),
            (
                AuditError::NotProvisioned,
                ErrorCode::Unavailable,
                "AUDIT_NOT_PROVISIONED",
                "the tenant's audit log is being provisioned, retry",
            ),
            (
                AuditError::ShuttingDown,
                ErrorCode::Unavailable,
                "AUDIT_SHUTTING_DOWN",
                "audit-svc is shutting down, retry",
            ),
            (AuditError::TenantTerminated, ErrorCode::FailedPrecondition, "TENANT_TERMINATED", "tenant is terminated"),
            (
                AuditError::RetentionBelowFloor { floor: 365 },
                ErrorCode::FailedPrecondition,
                "RETENTION_BELOW_FLOOR",
                "retention_days must be at least the deployment's floor of 365 days",
            ),
            (
                AuditError::LegalHold,
                ErrorCode::FailedPrecondition,
                "LEGAL_HOLD",
                "a legal hold on the tenant defers pruning until it is released",
            ),
        ];
        for (e, code, reason, message) in cases {
            let api = ApiError::from(e);
            assert_eq!((api.code, api.reason.as_ref(), api.message.as_str()), (code, reason, message));
        }
    }
}
