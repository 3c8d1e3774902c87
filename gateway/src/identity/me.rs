//! The caller's own account (`/v1/me*`): who they are, the export of their data, their password
//! and email, TOTP enrolment and their sessions.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use kit::ApiError;
use kit::time::rfc3339;
use proto::auth::v1 as pb;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::directory::User;
use super::{CodeBody, Refusals, RevocationPending, Revoked, sessions, users};
use crate::AppState;
use crate::http_layer::HttpError;
use crate::input::{JsonBody, PathParams};
use crate::openapi::ErrorBody;
use crate::upstream::{Call, upstream};

/// The caller's account, permissions and session.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    user: Option<User>,
    permissions: Vec<String>,
    session_id: String,
    amr: Vec<String>,
    tenant: String,
}

/// A TOTP enrolment, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotpEnrollment {
    otpauth_uri: String,
    /// Base32, for manual entry.
    secret: String,
}

/// The backup codes of a confirmed TOTP, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackupCodes {
    backup_codes: Vec<String>,
    /// Always true: refresh for a full session.
    refresh_required: bool,
}

/// A session of the caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct Session {
    id: String,
    ip: String,
    user_agent: String,
    current: bool,
    #[schema(format = DateTime)]
    created_at: Option<String>,
    #[schema(format = DateTime)]
    last_seen_at: Option<String>,
    #[schema(format = DateTime)]
    revoked_at: Option<String>,
}

impl From<&pb::Session> for Session {
    fn from(s: &pb::Session) -> Self {
        Self {
            id: s.id.clone(),
            ip: s.ip.clone(),
            user_agent: s.user_agent.clone(),
            current: s.current,
            created_at: rfc3339(&s.create_time),
            last_seen_at: rfc3339(&s.last_seen_time),
            revoked_at: rfc3339(&s.revoke_time),
        }
    }
}

/// The caller's sessions.
#[derive(Debug, Serialize, ToSchema)]
pub struct Sessions {
    sessions: Vec<Session>,
}

/// The caller's account, permissions and session
#[utoipa::path(get, path = "/v1/me", operation_id = "me", responses(
    (status = 200, description = "me", body = Me), Refusals,
))]
pub async fn me(State(state): State<AppState>, call: Call) -> Result<Json<Me>, HttpError> {
    let me = users(&state).get_me(call.request(pb::GetMeRequest {})).await.map_err(upstream)?.into_inner();
    Ok(Json(Me {
        user: me.user.as_ref().map(User::from),
        permissions: me.permissions,
        session_id: me.session_id,
        amr: me.amr,
        tenant: call.caller.tenant,
    }))
}

/// Everything held about the caller (JSON download)
#[utoipa::path(get, path = "/v1/me/export", operation_id = "exportMe", responses(
    (status = 200, description = "export: auth-svc's document of the caller's data", body = Object), Refusals,
))]
pub async fn export(State(state): State<AppState>, call: Call) -> Result<Response, HttpError> {
    let doc = users(&state).export_me(call.request(pb::ExportMeRequest {})).await.map_err(upstream)?.into_inner();
    let doc = serde_json::from_str::<Value>(&doc.json).map_err(|e| ApiError::internal(&e))?;
    let mut resp = Json(doc).into_response();
    resp.headers_mut().insert(
        http::header::CONTENT_DISPOSITION,
        http::HeaderValue::from_static("attachment; filename=\"strongroom-export.json\""),
    );
    Ok(resp)
}

/// Starts TOTP enrolment: the otpauth:// URI and secret, once
#[utoipa::path(post, path = "/v1/me/mfa/totp", operation_id = "enrollTotp", responses(
    (status = 200, description = "enrolment", body = TotpEnrollment),
    (status = 412, description = "TOTP_ALREADY_ENROLLED", body = ErrorBody),
    Refusals,
))]
pub async fn totp_enroll(State(state): State<AppState>, call: Call) -> Result<Json<TotpEnrollment>, HttpError> {
    let r = sessions(&state).enroll_totp(call.request(pb::EnrollTotpRequest {})).await.map_err(upstream)?.into_inner();
    Ok(Json(TotpEnrollment { otpauth_uri: r.otpauth_uri, secret: r.secret }))
}

/// Confirms TOTP with a first code; answers ten single-use backup codes once; refresh afterwards
/// for a full session
#[utoipa::path(post, path = "/v1/me/mfa/totp/confirm", operation_id = "confirmTotp", request_body = CodeBody,
    responses(
        (status = 200, description = "backup codes", body = BackupCodes),
        (status = 412, description = "NO_PENDING_TOTP (start enrolment first)", body = ErrorBody),
        Refusals,
    ))]
pub async fn totp_confirm(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody<CodeBody>,
) -> Result<Json<BackupCodes>, HttpError> {
    let r = sessions(&state)
        .confirm_totp(call.request(pb::ConfirmTotpRequest { code: body.code }))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(Json(BackupCodes { backup_codes: r.backup_codes, refresh_required: true }))
}

/// The caller's sessions
#[utoipa::path(get, path = "/v1/me/sessions", operation_id = "listMySessions", responses(
    (status = 200, description = "sessions", body = Sessions), Refusals,
))]
pub async fn my_sessions(State(state): State<AppState>, call: Call) -> Result<Json<Sessions>, HttpError> {
    let r = sessions(&state)
        .list_sessions(call.request(pb::ListSessionsRequest::default()))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(Json(Sessions { sessions: r.sessions.iter().map(Session::from).collect() }))
}

/// Revokes one of the caller's sessions (another's with sessions.revoke)
#[utoipa::path(delete, path = "/v1/me/sessions/{id}", operation_id = "revokeMySession",
    params(("id" = String, Path, description = "the session")),
    responses((status = 200, description = "revoked", body = Revoked), Refusals, RevocationPending))]
pub async fn revoke_my_session(
    State(state): State<AppState>,
    call: Call,
    PathParams(session): PathParams<String>,
) -> Result<Json<Revoked>, HttpError> {
    sessions(&state).revoke_session(call.request(pb::RevokeSessionRequest { id: session })).await.map_err(upstream)?;
    Ok(Json(Revoked { revoked: true }))
}

/// A password change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    current_password: String,
    /// At least 12 characters.
    new_password: String,
}

/// A password was changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasswordChanged {
    /// Always true: every other session of the account has ended.
    changed: bool,
}

/// Changes the caller's password; every other session of theirs ends
#[utoipa::path(post, path = "/v1/me/password", operation_id = "changeMyPassword", request_body = PasswordChange,
    responses(
        (status = 200, description = "changed", body = PasswordChanged),
        (status = 400, description = "INVALID_FIELD: the new password breaks the policy", body = ErrorBody),
        (status = 401, description = "INVALID_CREDENTIALS: the current password is wrong", body = ErrorBody),
        Refusals,
    ))]
pub async fn change_password(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody<PasswordChange>,
) -> Result<Json<PasswordChanged>, HttpError> {
    let msg = pb::ChangePasswordRequest { current_password: body.current_password, new_password: body.new_password };
    users(&state).change_password(call.request(msg)).await.map_err(upstream)?;
    Ok(Json(PasswordChanged { changed: true }))
}

/// An email change, confirmed with the password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailChange {
    new_email: String,
    current_password: String,
}

/// Changes the caller's email (confirmed with their password); every other session of theirs ends
#[utoipa::path(post, path = "/v1/me/email", operation_id = "changeMyEmail", request_body = EmailChange,
    responses(
        (status = 200, description = "the account with its new email", body = User),
        (status = 400, description = "INVALID_FIELD: not an email address", body = ErrorBody),
        (status = 401, description = "INVALID_CREDENTIALS: the current password is wrong", body = ErrorBody),
        (status = 409, description = "EMAIL_TAKEN: another user of the tenant has it", body = ErrorBody),
        Refusals,
    ))]
pub async fn change_email(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody<EmailChange>,
) -> Result<Json<User>, HttpError> {
    let msg = pb::ChangeEmailRequest { new_email: body.new_email, current_password: body.current_password };
    let user = users(&state).change_email(call.request(msg)).await.map_err(upstream)?;
    Ok(Json(user.get_ref().into()))
}
