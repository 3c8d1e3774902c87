//! The one error vocabulary shared by every service and the gateway.
//!
//! Policy: handlers classify failures into an [`ApiError`] (a stable [`ErrorCode`], an
//! UPPER_SNAKE_CASE reason and a message that is safe to show a client). Internals are logged where
//! they are classified and never reach the client. [`ErrorCode`] maps to both a gRPC code and an
//! HTTP status here and nowhere else, so services and the gateway agree.

use std::borrow::Cow;
use std::sync::OnceLock;

use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

/// Stable, client-visible error classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    Aborted,
    ResourceExhausted,
    PayloadTooLarge,
    Unavailable,
    DeadlineExceeded,
    Unimplemented,
    Internal,
}

impl ErrorCode {
    /// The gRPC status code.
    pub fn grpc(self) -> Code {
        match self {
            Self::InvalidArgument => Code::InvalidArgument,
            Self::Unauthenticated => Code::Unauthenticated,
            Self::PermissionDenied => Code::PermissionDenied,
            Self::NotFound => Code::NotFound,
            Self::AlreadyExists => Code::AlreadyExists,
            Self::FailedPrecondition => Code::FailedPrecondition,
            Self::Aborted => Code::Aborted,
            Self::ResourceExhausted => Code::ResourceExhausted,
            Self::PayloadTooLarge => Code::OutOfRange,
            Self::Unavailable => Code::Unavailable,
            Self::DeadlineExceeded => Code::DeadlineExceeded,
            Self::Unimplemented => Code::Unimplemented,
            Self::Internal => Code::Internal,
        }
    }

    /// The HTTP status the gateway answers with.
    pub fn http(self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Self::InvalidArgument => S::BAD_REQUEST,
            Self::Unauthenticated => S::UNAUTHORIZED,
            Self::PermissionDenied => S::FORBIDDEN,
            Self::NotFound => S::NOT_FOUND,
            Self::AlreadyExists | Self::Aborted => S::CONFLICT,
            Self::FailedPrecondition => S::PRECONDITION_FAILED,
            Self::ResourceExhausted => S::TOO_MANY_REQUESTS,
            Self::PayloadTooLarge => S::PAYLOAD_TOO_LARGE,
            Self::Unavailable => S::SERVICE_UNAVAILABLE,
            Self::DeadlineExceeded => S::GATEWAY_TIMEOUT,
            Self::Unimplemented => S::NOT_IMPLEMENTED,
            Self::Internal => S::INTERNAL_SERVER_ERROR,
        }
    }

    /// The name used in JSON bodies (`"code"`), the gRPC code's canonical name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::NotFound => "NOT_FOUND",
            Self::AlreadyExists => "ALREADY_EXISTS",
            Self::FailedPrecondition => "FAILED_PRECONDITION",
            Self::Aborted => "ABORTED",
            Self::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Self::PayloadTooLarge => "OUT_OF_RANGE",
            Self::Unavailable => "UNAVAILABLE",
            Self::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Self::Unimplemented => "UNIMPLEMENTED",
            Self::Internal => "INTERNAL",
        }
    }

    /// Classifies a gRPC code received from an upstream.
    pub fn from_grpc(code: Code) -> Self {
        match code {
            Code::InvalidArgument => Self::InvalidArgument,
            Code::Unauthenticated => Self::Unauthenticated,
            Code::PermissionDenied => Self::PermissionDenied,
            Code::NotFound => Self::NotFound,
            Code::AlreadyExists => Self::AlreadyExists,
            Code::FailedPrecondition => Self::FailedPrecondition,
            Code::Aborted => Self::Aborted,
            Code::ResourceExhausted => Self::ResourceExhausted,
            Code::OutOfRange => Self::PayloadTooLarge,
            Code::Unavailable => Self::Unavailable,
            Code::DeadlineExceeded | Code::Cancelled => Self::DeadlineExceeded,
            Code::Unimplemented => Self::Unimplemented,
            Code::Ok | Code::Unknown | Code::Internal | Code::DataLoss => Self::Internal,
        }
    }
}

/// One wrong input field (`google.rpc.BadRequest.FieldViolation`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

/// A classified, client-safe error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    /// UPPER_SNAKE_CASE, stable, e.g. `TENANT_MISMATCH`.
    pub reason: Cow<'static, str>,
    /// Safe to show a client: no secrets, no SQL, no internals.
    pub message: String,
    pub violations: Vec<FieldViolation>,
    /// When to retry (gRPC `RetryInfo`, HTTP `Retry-After`), for throttling and lockouts.
    pub retry_after: Option<std::time::Duration>,
}

static DOMAIN: OnceLock<String> = OnceLock::new();

/// Sets the `ErrorInfo.domain` of this process (`<service>.strongroom`); first call wins.
pub fn set_domain(service: &str) {
    let _ = DOMAIN.set(format!("{service}.strongroom"));
}

fn domain() -> &'static str {
    DOMAIN.get().map(String::as_str).unwrap_or("strongroom")
}

impl ApiError {
    pub fn new(code: ErrorCode, reason: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self { code, reason: reason.into(), message: message.into(), violations: Vec::new(), retry_after: None }
    }

    /// A bad input field: `INVALID_ARGUMENT` with one `BadRequest` violation.
    pub fn invalid_field(field: &str, description: impl Into<String>) -> Self {
        let description = description.into();
        Self {
            code: ErrorCode::InvalidArgument,
            reason: Cow::Borrowed("INVALID_FIELD"),
            message: format!("{field}: {description}"),
            violations: vec![FieldViolation { field: field.to_owned(), description }],
            retry_after: None,
        }
    }

    /// A listing's `page_size`: `0` means `default`, `1..=max` is taken as given, anything else is
    /// refused (`INVALID_FIELD` on `page_size`).
    pub fn page_size(given: impl Into<i64>, default: i64, max: i64) -> Result<i64, Self> {
        match given.into() {
            0 => Ok(default),
            n if (1..=max).contains(&n) => Ok(n),
            _ => Err(Self::invalid_field("page_size", format!("1–{max}"))),
        }
    }

    pub fn unauthenticated(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, reason, message)
    }

    pub fn permission_denied(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PermissionDenied, reason, message)
    }

    pub fn not_found(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, reason, message)
    }

    /// An internal failure. The cause is logged here; the client only learns that it happened.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::Internal, "INTERNAL", "internal error")
    }

    pub fn unavailable(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, reason, message)
    }

    pub fn resource_exhausted(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ResourceExhausted, reason, message)
    }

    pub fn failed_precondition(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::FailedPrecondition, reason, message)
    }

    pub fn already_exists(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::AlreadyExists, reason, message)
    }

    /// Tells the client when to retry.
    pub fn with_retry_after(mut self, after: std::time::Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// The gRPC status with `ErrorInfo` (and `BadRequest` when fields were wrong).
    pub fn to_status(&self) -> tonic::Status {
        let mut details = ErrorDetails::with_error_info(self.reason.as_ref(), domain(), []);
        for v in &self.violations {
            details.add_bad_request_violation(v.field.clone(), v.description.clone());
        }
        if let Some(after) = self.retry_after {
            details.set_retry_info(Some(after));
        }
        tonic::Status::with_error_details(self.code.grpc(), self.message.clone(), details)
    }

    /// Reads a status received from an upstream back into an `ApiError`.
    pub fn from_status(status: &tonic::Status) -> Self {
        let details = status.get_error_details();
        let reason =
            details.error_info().map(|info| Cow::Owned(info.reason.clone())).unwrap_or(Cow::Borrowed("UPSTREAM_ERROR"));
        let violations = details
            .bad_request()
            .map(|br| {
                br.field_violations
                    .iter()
                    .map(|v| FieldViolation { field: v.field.clone(), description: v.description.clone() })
                    .collect()
            })
            .unwrap_or_default();
        let code = ErrorCode::from_grpc(status.code());
        // Only our services' classified errors are shown to clients; a transport error
        // ("connection refused", certificate details) stays in the logs.
        let ours = details
            .error_info()
            .is_some_and(|info| info.domain.ends_with(".strongroom") || info.domain == "strongroom");
        if code == ErrorCode::Internal || !ours {
            tracing::warn!(code = ?status.code(), message = %status.message(), "upstream error");
            let (code, reason, message) = match code {
                ErrorCode::Internal => (ErrorCode::Internal, "INTERNAL", "internal error"),
                ErrorCode::DeadlineExceeded => (ErrorCode::DeadlineExceeded, "UPSTREAM_TIMEOUT", "service timed out"),
                _ => (ErrorCode::Unavailable, "UPSTREAM_UNAVAILABLE", "service temporarily unavailable"),
            };
            return Self::new(code, reason, message);
        }
        let message = status.message().to_owned();
        let retry_after = details.retry_info().and_then(|r| r.retry_delay);
        Self { code, reason, message, violations, retry_after }
    }

    /// The gateway's uniform JSON error body.
    pub fn to_json(&self, request_id: &str) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "code": self.code.as_str(),
                "reason": self.reason,
                "message": self.message,
                "request_id": request_id,
            }
        })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code.as_str(), self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        e.to_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_reason_and_violations() {
        let err = ApiError::invalid_field("tenant_slug", "must match ^[a-z][a-z0-9_]{2,39}$");
        let status = err.to_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        let back = ApiError::from_status(&status);
        assert_eq!(back.reason, "INVALID_FIELD");
        assert_eq!(back.violations, err.violations);
        assert_eq!(back.code.http(), http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn transport_errors_are_not_forwarded() {
        let status = tonic::Status::unavailable("tcp connect error: Connection refused (os error 111)");
        let back = ApiError::from_status(&status);
        assert_eq!(back.reason, "UPSTREAM_UNAVAILABLE");
        assert!(!back.message.contains("111"));
    }

    #[test]
    fn internal_messages_are_not_forwarded() {
        let status = tonic::Status::internal("relation t_x.secret does not exist");
        let back = ApiError::from_status(&status);
        assert_eq!(back.message, "internal error");
        assert_eq!(back.code.http(), http::StatusCode::INTERNAL_SERVER_ERROR);
    }
}
