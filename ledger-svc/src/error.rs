//! Every refusal ledger-svc gives of its own, each with its stable reason, mapped once to
//! `kit::ErrorCode` (input that fails a field's rule is `ApiError::invalid_field`, the same in every
//! service; a transfer's business outcome is an `engine::Outcome`, turned into an error here when a
//! single-transfer RPC must fail with it).

use kit::{ApiError, ErrorCode};
use uuid::Uuid;

use crate::domain::engine::Outcome;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerError {
    /// NOT_FOUND `ACCOUNT_NOT_FOUND` (also for an account outside an owner-scoped caller's reach).
    AccountNotFound,
    /// NOT_FOUND `TRANSFER_NOT_FOUND`.
    TransferNotFound,
    /// ALREADY_EXISTS `EXISTS_WITH_DIFFERENT_<FIELD>`: the id exists with other content.
    ExistsWithDifferent { what: &'static str, id: String, field: &'static str },
    /// FAILED_PRECONDITION `HISTORY_NOT_KEPT`: balances at a time of an account without history.
    HistoryNotKept,
    /// PERMISSION_DENIED `SUBJECT_NOT_SCOPABLE`: an owner-scoped caller whose subject cannot name
    /// an owner.
    SubjectNotScopable,
    /// UNAVAILABLE `LEDGER_SHUTTING_DOWN`: retry on another replica.
    ShuttingDown,
    /// A single transfer that did not apply, with the engine's outcome.
    Transfer { id: Uuid, outcome: Outcome },
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::AccountNotFound => ApiError::not_found("ACCOUNT_NOT_FOUND", "account does not exist"),
            LedgerError::TransferNotFound => ApiError::not_found("TRANSFER_NOT_FOUND", "transfer does not exist"),
            LedgerError::ExistsWithDifferent { what, id, field } => ApiError::new(
                ErrorCode::AlreadyExists,
                format!("EXISTS_WITH_DIFFERENT_{}", field.to_ascii_uppercase()),
                format!("{what} {id} already exists with a different {field}"),
            ),
            LedgerError::HistoryNotKept => {
                ApiError::new(ErrorCode::FailedPrecondition, "HISTORY_NOT_KEPT", "the account does not keep history")
            }
            LedgerError::SubjectNotScopable => {
                ApiError::permission_denied("SUBJECT_NOT_SCOPABLE", "subject cannot be used as an owner")
            }
            LedgerError::ShuttingDown => {
                ApiError::unavailable("LEDGER_SHUTTING_DOWN", "ledger is shutting down, retry")
            }
            LedgerError::Transfer { id, outcome } => match outcome {
                Outcome::Failed(r) | Outcome::ReplayedFailure(r) => {
                    ApiError::new(ErrorCode::FailedPrecondition, r.clone(), format!("transfer {id} failed: {r}"))
                }
                Outcome::Conflict(field) => {
                    LedgerError::ExistsWithDifferent { what: "transfer", id: id.to_string(), field }.into()
                }
                Outcome::Refused(r) => ApiError::permission_denied(r, "the caller may not do this with these accounts"),
                Outcome::Created(_) | Outcome::Replayed(_) => ApiError::internal(&"not an error"),
            },
        }
    }
}

impl From<LedgerError> for tonic::Status {
    fn from(e: LedgerError) -> Self {
        ApiError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_keeps_its_code_and_reason() {
        let cases = [
            (LedgerError::AccountNotFound, ErrorCode::NotFound, "ACCOUNT_NOT_FOUND"),
            (LedgerError::TransferNotFound, ErrorCode::NotFound, "TRANSFER_NOT_FOUND"),
            (
                LedgerError::ExistsWithDifferent { what: "ledger", id: "USD".into(), field: "scale" },
                ErrorCode::AlreadyExists,
                "EXISTS_WITH_DIFFERENT_SCALE",
            ),
            (LedgerError::HistoryNotKept, ErrorCode::FailedPrecondition, "HISTORY_NOT_KEPT"),
            (LedgerError::SubjectNotScopable, ErrorCode::PermissionDenied, "SUBJECT_NOT_SCOPABLE"),
            (LedgerError::ShuttingDown, ErrorCode::Unavailable, "LEDGER_SHUTTING_DOWN"),
            (
                LedgerError::Transfer { id: Uuid::nil(), outcome: Outcome::Failed("EXCEEDS_CREDITS".into()) },
                ErrorCode::FailedPrecondition,
                "EXCEEDS_CREDITS",
            ),
            (
                LedgerError::Transfer { id: Uuid::nil(), outcome: Outcome::Conflict("amount") },
                ErrorCode::AlreadyExists,
                "EXISTS_WITH_DIFFERENT_AMOUNT",
            ),
        ];
        for (e, code, reason) in cases {
            let api = ApiError::from(e);
            assert_eq!((api.code, api.reason.as_ref()), (code, reason));
        }
    }
}
