//! Passkeys (WebAuthn) over HTTP (docs/identity.md): the caller's own (`/v1/me/passkeys`), a
//! passwordless login and a login's second step (`/v1/auth/passkey…`), and step-up. Each
//! ceremony is two calls: `…/options` answers the `publicKey` options for
//! `navigator.credentials.create()` / `.get()` and a `ceremony_id`; the second call carries the
//! browser's `PublicKeyCredential` (as JSON, binary fields base64url) with it. auth-svc verifies
//! with webauthn-rs.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::{Extension, Json};
use kit::ApiError;
use proto::auth::v1 as pb;
use proto::auth::v1::passkey_service_client::PasskeyServiceClient;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::Refusals;
use super::login::{
    SessionAnswer, SignInRefusals, SteppedUp, anonymous, client_info, session_response, tenant_or_token,
};
use crate::AppState;
use crate::http_layer::{HttpError, RequestId};
use crate::input::{JsonBody, PathParams};
use crate::openapi::ErrorBody;
use crate::upstream::{Call, upstream};

pub(super) fn client(state: &AppState) -> PasskeyServiceClient<kit::client::Channel> {
    PasskeyServiceClient::new(state.upstreams.auth.clone())
}

/// The first half of a ceremony.
#[derive(Debug, Serialize, ToSchema)]
pub struct CeremonyOptions {
    /// Send it back with the browser's answer; used once, five minutes to live.
    ceremony_id: String,
    /// `{"publicKey": …}` for `navigator.credentials.create()` or `.get()` (binary fields
    /// base64url: decode them before calling the browser).
    #[schema(value_type = Object)]
    options: Value,
}

impl TryFrom<pb::Ceremony> for CeremonyOptions {
    type Error = ApiError;

    fn try_from(c: pb::Ceremony) -> Result<Self, ApiError> {
        let options = serde_json::from_str(&c.options_json).map_err(|e| ApiError::internal(&e))?;
        Ok(Self { ceremony_id: c.ceremony_id, options })
    }
}

/// A passkey of the caller's.
#[derive(Debug, Serialize, ToSchema)]
pub struct Passkey {
    id: String,
    name: String,
    #[schema(format = DateTime)]
    created_at: Option<String>,
    #[schema(format = DateTime)]
    last_used_at: Option<String>,
    /// The authenticator may sync it to the user's other devices.
    backup_eligible: bool,
    /// It is synced (backed up).
    backed_up: bool,
}

impl From<pb::Passkey> for Passkey {
    fn from(p: pb::Passkey) -> Self {
        Self {
            id: p.id,
            name: p.name,
            created_at: kit::time::rfc3339(&p.create_time),
            last_used_at: kit::time::rfc3339(&p.last_used_time),
            backup_eligible: p.backup_eligible,
            backed_up: p.backed_up,
        }
    }
}

/// The caller's passkeys.
#[derive(Debug, Serialize, ToSchema)]
pub struct Passkeys {
    passkeys: Vec<Passkey>,
}

/// The browser's answer to a registration.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPasskeyBody {
    ceremony_id: String,
    /// The `PublicKeyCredential` from `navigator.credentials.create()`, as JSON.
    #[schema(value_type = Object)]
    credential: Value,
    /// 1–100 characters, to tell the user's passkeys apart.
    name: String,
}

/// The caller's passkeys
#[utoipa::path(get, path = "/v1/me/passkeys", operation_id = "listMyPasskeys", responses(
    (status = 200, description = "the passkeys", body = Passkeys), Refusals,
))]
pub async fn list(State(state): State<AppState>, call: Call) -> Result<Json<Passkeys>, HttpError> {
    let r = client(&state).list_passkeys(call.request(pb::ListPasskeysRequest {})).await.map_err(upstream)?;
    Ok(Json(Passkeys { passkeys: r.into_inner().passkeys.into_iter().map(Passkey::from).collect() }))
}

/// Starts registering a passkey: the options for `navigator.credentials.create()`
#[utoipa::path(post, path = "/v1/me/passkeys/options", operation_id = "startPasskeyRegistration", responses(
    (status = 200, description = "the ceremony", body = CeremonyOptions),
    (status = 412, description = "PASSKEYS_UNAVAILABLE (not configured)", body = ErrorBody),
    Refusals,
))]
pub async fn start_registration(State(state): State<AppState>, call: Call) -> Result<Json<CeremonyOptions>, HttpError> {
    let r = client(&state).start_registration(call.request(pb::StartRegistrationRequest {})).await;
    Ok(Json(r.map_err(upstream)?.into_inner().try_into()?))
}

/// Finishes registering a passkey
#[utoipa::path(post, path = "/v1/me/passkeys", operation_id = "registerPasskey", request_body = NewPasskeyBody,
    responses(
        (status = 200, description = "the new passkey", body = Passkey),
        (status = 400, description = "the credential does not verify, or a bad name", body = ErrorBody),
        (status = 412, description = "CEREMONY_NOT_FOUND (unknown, used, expired or another's)", body = ErrorBody),
        Refusals,
    ))]
pub async fn register(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody<NewPasskeyBody>,
) -> Result<Json<Passkey>, HttpError> {
    let msg = pb::FinishRegistrationRequest {
        ceremony_id: body.ceremony_id,
        credential_json: body.credential.to_string(),
        name: body.name,
    };
    let r = client(&state).finish_registration(call.request(msg)).await.map_err(upstream)?;
    Ok(Json(r.into_inner().into()))
}

/// Removes one of the caller's passkeys
#[utoipa::path(delete, path = "/v1/me/passkeys/{id}", operation_id = "deleteMyPasskey",
    params(("id" = String, Path, description = "the passkey")),
    responses((status = 204, description = "removed"), Refusals))]
pub async fn delete(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, HttpError> {
    client(&state).delete_passkey(call.request(pb::DeletePasskeyRequest { id })).await.map_err(upstream)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The tenant of a passwordless login.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeyLoginStart {
    /// tenant slug
    tenant: String,
}

/// A passwordless login's answer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeyLoginBody {
    tenant: String,
    ceremony_id: String,
    /// The `PublicKeyCredential` from `navigator.credentials.get()`, as JSON.
    #[schema(value_type = Object)]
    credential: Value,
    /// Answer a cookie session instead of tokens (browsers).
    #[serde(default)]
    cookie: bool,
}

/// Starts a passwordless login: options for `navigator.credentials.get()` (any of this site's
/// passkeys)
#[utoipa::path(post, path = "/v1/auth/passkey/options", operation_id = "startPasskeyLogin",
    request_body = PasskeyLoginStart, responses(
        (status = 200, description = "the ceremony", body = CeremonyOptions),
        (status = 412, description = "PASSKEYS_UNAVAILABLE, or CEREMONY_NOT_FOUND (no such active tenant)", body = ErrorBody),
    ))]
pub async fn start_login(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    JsonBody(body): JsonBody<PasskeyLoginStart>,
) -> Result<Json<CeremonyOptions>, HttpError> {
    let tenant = super::login::check_tenant(&body.tenant)?;
    let msg = pb::StartPasskeyLoginRequest { tenant: tenant.clone() };
    let r = client(&state).start_login(anonymous(&tenant, &id, msg)).await.map_err(upstream)?;
    Ok(Json(r.into_inner().try_into()?))
}

/// Finishes a passwordless login: tokens, or (with `cookie: true`) a cookie session
#[utoipa::path(post, path = "/v1/auth/passkey", operation_id = "passkeyLogin", request_body = PasskeyLoginBody,
    responses(
        (status = 200, description = "tokens or cookie session", body = SessionAnswer),
        (status = 401, description = "PASSKEY_REJECTED: an unknown passkey, or an answer that does not verify", body = ErrorBody),
        (status = 412, description = "CEREMONY_NOT_FOUND", body = ErrorBody),
        SignInRefusals,
    ))]
pub async fn login(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<PasskeyLoginBody>,
) -> Response {
    let tenant = super::login::check_tenant(&body.tenant);
    let named = tenant.clone().ok();
    let result = async {
        let tenant = tenant?;
        let msg = pb::FinishPasskeyLoginRequest {
            tenant: tenant.clone(),
            ceremony_id: body.ceremony_id,
            credential_json: body.credential.to_string(),
            client: Some(client_info(&state, &addr, &headers)),
        };
        Ok::<_, ApiError>(
            client(&state).finish_login(anonymous(&tenant, &id, msg)).await.map_err(upstream)?.into_inner(),
        )
    }
    .await;
    session_response(&state, result, body.cookie, id, named)
}

/// The second step of a password login by passkey: its MFA token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeyFactorStart {
    /// optional: the MFA token names its tenant
    tenant: Option<String>,
    mfa_token: String,
}

/// The second step's answer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeyFactorBody {
    tenant: Option<String>,
    mfa_token: String,
    ceremony_id: String,
    #[schema(value_type = Object)]
    credential: Value,
    #[serde(default)]
    cookie: bool,
}

/// Starts the second step of a password login by passkey (the user's passkeys allowed)
#[utoipa::path(post, path = "/v1/auth/mfa/passkey/options", operation_id = "startPasskeySecondFactor",
    request_body = PasskeyFactorStart, responses(
        (status = 200, description = "the ceremony", body = CeremonyOptions),
        (status = 401, description = "INVALID_MFA: the MFA token is unknown, used or expired", body = ErrorBody),
        (status = 412, description = "NO_PASSKEY or PASSKEYS_UNAVAILABLE", body = ErrorBody),
    ))]
pub async fn start_second_factor(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    JsonBody(body): JsonBody<PasskeyFactorStart>,
) -> Result<Json<CeremonyOptions>, HttpError> {
    let tenant = tenant_or_token(body.tenant.as_deref(), kit::TenantSlug::of_mfa_token(&body.mfa_token))?;
    let msg = pb::StartPasskeySecondFactorRequest { tenant: tenant.clone(), mfa_token: body.mfa_token };
    let r = client(&state).start_second_factor(anonymous(&tenant, &id, msg)).await.map_err(upstream)?;
    Ok(Json(r.into_inner().try_into()?))
}

/// Finishes the second step of a password login by passkey
#[utoipa::path(post, path = "/v1/auth/mfa/passkey", operation_id = "passkeySecondFactor",
    request_body = PasskeyFactorBody, responses(
        (status = 200, description = "tokens or cookie session", body = SessionAnswer),
        (status = 401, description = "PASSKEY_REJECTED or INVALID_MFA", body = ErrorBody),
        (status = 412, description = "CEREMONY_NOT_FOUND", body = ErrorBody),
        SignInRefusals,
    ))]
pub async fn second_factor(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<PasskeyFactorBody>,
) -> Response {
    let tenant = tenant_or_token(body.tenant.as_deref(), kit::TenantSlug::of_mfa_token(&body.mfa_token));
    let named = tenant.clone().ok();
    let result = async {
        let tenant = tenant?;
        let msg = pb::FinishPasskeySecondFactorRequest {
            tenant: tenant.clone(),
            mfa_token: body.mfa_token,
            ceremony_id: body.ceremony_id,
            credential_json: body.credential.to_string(),
            client: Some(client_info(&state, &addr, &headers)),
        };
        let r = client(&state).finish_second_factor(anonymous(&tenant, &id, msg)).await.map_err(upstream)?;
        Ok::<_, ApiError>(r.into_inner())
    }
    .await;
    session_response(&state, result, body.cookie, id, named)
}

/// A step-up's answer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeyStepUpBody {
    ceremony_id: String,
    #[schema(value_type = Object)]
    credential: Value,
}

/// Starts a step-up by passkey for the current session
#[utoipa::path(post, path = "/v1/auth/step-up/passkey/options", operation_id = "startPasskeyStepUp", responses(
    (status = 200, description = "the ceremony", body = CeremonyOptions),
    (status = 412, description = "NO_PASSKEY, NO_SESSION or PASSKEYS_UNAVAILABLE", body = ErrorBody),
    Refusals,
))]
pub async fn start_step_up(State(state): State<AppState>, call: Call) -> Result<Json<CeremonyOptions>, HttpError> {
    let r = client(&state).start_step_up(call.request(pb::StartStepUpRequest {})).await.map_err(upstream)?;
    Ok(Json(r.into_inner().try_into()?))
}

/// A fresh second factor for the current session, by passkey
#[utoipa::path(post, path = "/v1/auth/step-up/passkey", operation_id = "passkeyStepUp",
    request_body = PasskeyStepUpBody, responses(
        (status = 200, description = "a new access token", body = SteppedUp),
        (status = 412, description = "CEREMONY_NOT_FOUND", body = ErrorBody),
        Refusals,
    ))]
pub async fn step_up(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody<PasskeyStepUpBody>,
) -> Result<Json<SteppedUp>, HttpError> {
    let msg = pb::FinishStepUpRequest { ceremony_id: body.ceremony_id, credential_json: body.credential.to_string() };
    let t = client(&state).finish_step_up(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(SteppedUp::from(&t)))
}
