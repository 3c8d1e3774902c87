//! Identity routes: logins and sessions (`/v1/auth/*`, [`login`]), the caller's own account
//! (`/v1/me*`, [`me`]), and administration of users, roles, groups, API keys and the tenant's
//! policy ([`directory`]). The gateway authenticates and checks each route's permission; auth-svc
//! checks again (and decides the "own or with permission" cases). Every answer is a typed DTO, so
//! the OpenAPI document (`#[utoipa::path]` on each handler) describes what is sent. This module
//! holds what the three share: the auth-svc clients, the refusals and the shared bodies.

pub mod appeals;
pub mod directory;
pub mod hosted;
pub mod login;
pub mod me;
pub mod oauth;
pub mod oidc;
pub mod passkeys;
pub mod privacy;
pub mod strings;

use proto::auth::v1::access_service_client::AccessServiceClient;
use proto::auth::v1::authentication_service_client::AuthenticationServiceClient;
use proto::auth::v1::session_service_client::SessionServiceClient;
use proto::auth::v1::user_service_client::UserServiceClient;
use serde::{Deserialize, Serialize};
use utoipa::{IntoResponses, ToSchema};

use crate::AppState;
use crate::openapi::ErrorBody;

/// The auth-svc clients, all over the one auth channel.
fn authn(state: &AppState) -> AuthenticationServiceClient<kit::client::Channel> {
    AuthenticationServiceClient::new(state.upstreams.auth.clone())
}
fn users(state: &AppState) -> UserServiceClient<kit::client::Channel> {
    UserServiceClient::new(state.upstreams.auth.clone())
}
fn access(state: &AppState) -> AccessServiceClient<kit::client::Channel> {
    AccessServiceClient::new(state.upstreams.auth.clone())
}
fn sessions(state: &AppState) -> SessionServiceClient<kit::client::Channel> {
    SessionServiceClient::new(state.upstreams.auth.clone())
}
fn oauth_flow(state: &AppState) -> proto::auth::v1::o_auth_service_client::OAuthServiceClient<kit::client::Channel> {
    proto::auth::v1::o_auth_service_client::OAuthServiceClient::new(state.upstreams.auth.clone())
}

/// A revocation was saved.
#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    /// Always true.
    revoked: bool,
}

/// The refusals every authenticated identity operation may answer.
#[derive(IntoResponses)]
#[allow(dead_code)] // describes the answers of `kit::ApiError`s from auth-svc
pub enum Refusals {
    #[response(status = 401, description = "not authenticated, or the session or key was revoked")]
    Unauthenticated(ErrorBody),
    #[response(status = 403, description = "missing permission, another tenant, or PRIVILEGE_ESCALATION")]
    Forbidden(ErrorBody),
    #[response(status = 404, description = "not found")]
    NotFound(ErrorBody),
}

/// Calls whose purpose is a revocation say when it is saved but not yet in force everywhere.
#[derive(IntoResponses)]
#[allow(dead_code)] // describes an answer of auth-svc
pub enum RevocationPending {
    #[response(
        status = 503,
        description = "REVOCATION_PENDING: saved, but the revocation list (Redis) did not take it yet; it is in force within a second of Redis answering, and repeating the call is safe"
    )]
    RevocationPending(ErrorBody),
}

/// A second-factor code.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeBody {
    code: String,
}
