//! `/v1/oauth/clients`: the tenant's OAuth 2 / OpenID Connect clients, registered by its admins
//! (`oauth.clients.read` / `oauth.clients.write`; auth-svc checks again and audits every change).
//! A confidential client's secret is in the answer that makes it and in no other.

use axum::Json;
use axum::extract::State;
use kit::authz::Permission;
use kit::time::rfc3339;
use proto::auth::v1 as pb;
use proto::auth::v1::o_auth_client_service_client::OAuthClientServiceClient;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Refusals;
use super::directory::PageQuery;
use crate::AppState;
use crate::http_layer::HttpError;
use crate::input::{JsonBody, PathParams, QueryParams};
use crate::upstream::{Call, upstream};

fn clients(state: &AppState) -> OAuthClientServiceClient<kit::client::Channel> {
    OAuthClientServiceClient::new(state.upstreams.auth.clone())
}

/// Who a client is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    /// A browser or native app: no secret; PKCE (S256) is required.
    Public,
    /// A server: authenticates with its secret (client_secret_basic or client_secret_post).
    Confidential,
}

impl From<ClientKind> for pb::ClientKind {
    fn from(k: ClientKind) -> Self {
        match k {
            ClientKind::Public => Self::Public,
            ClientKind::Confidential => Self::Confidential,
        }
    }
}

/// A client's settings (the body of a registration or a change).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    /// 1–100 characters, shown to users on the consent screen.
    name: String,
    /// 1–10 exact redirect URIs: https, http on 127.0.0.1 or [::1] (native apps, any port), or a
    /// private-use scheme with a dot (com.example.app:/cb); no fragment, user info or wildcard.
    redirect_uris: Vec<String>,
    /// 0–10 URIs RP-initiated logout may return to, the same rules.
    #[serde(default)]
    post_logout_redirect_uris: Vec<String>,
    /// Of openid, profile, email, offline_access.
    allowed_scopes: Vec<String>,
    /// Of authorization_code, refresh_token (with authorization_code), client_credentials
    /// (confidential clients only).
    grant_types: Vec<String>,
    /// A first-party client's users are not asked for consent.
    #[serde(default)]
    first_party: bool,
}

impl From<ClientSettings> for pb::ClientSettings {
    fn from(s: ClientSettings) -> Self {
        Self {
            name: s.name,
            redirect_uris: s.redirect_uris,
            post_logout_redirect_uris: s.post_logout_redirect_uris,
            allowed_scopes: s.allowed_scopes,
            grant_types: s.grant_types,
            first_party: s.first_party,
        }
    }
}

/// A registered client (never its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthClient {
    /// The client_id.
    id: String,
    kind: Option<ClientKind>,
    name: String,
    redirect_uris: Vec<String>,
    post_logout_redirect_uris: Vec<String>,
    allowed_scopes: Vec<String>,
    grant_types: Vec<String>,
    first_party: bool,
    created_by: String,
    #[schema(format = DateTime)]
    created_at: Option<String>,
    #[schema(format = DateTime)]
    updated_at: Option<String>,
    /// When the current secret was made (confidential clients).
    #[schema(format = DateTime)]
    secret_created_at: Option<String>,
}

impl From<pb::OAuthClient> for OAuthClient {
    fn from(c: pb::OAuthClient) -> Self {
        let s = c.settings.unwrap_or_default();
        Self {
            kind: match pb::ClientKind::try_from(c.kind) {
                Ok(pb::ClientKind::Public) => Some(ClientKind::Public),
                Ok(pb::ClientKind::Confidential) => Some(ClientKind::Confidential),
                _ => None,
            },
            id: c.id,
            name: s.name,
            redirect_uris: s.redirect_uris,
            post_logout_redirect_uris: s.post_logout_redirect_uris,
            allowed_scopes: s.allowed_scopes,
            grant_types: s.grant_types,
            first_party: s.first_party,
            created_by: c.created_by,
            created_at: rfc3339(&c.create_time),
            updated_at: rfc3339(&c.update_time),
            secret_created_at: rfc3339(&c.secret_time),
        }
    }
}

/// A page of clients, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthClientPage {
    clients: Vec<OAuthClient>,
    /// Empty on the last page.
    next_page_token: String,
}

/// A client with its secret, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthClientWithSecret {
    client: Option<OAuthClient>,
    /// The client_secret of a confidential client (43 base64url characters); null for a public one.
    client_secret: Option<String>,
}

impl From<pb::CreateClientResponse> for OAuthClientWithSecret {
    fn from(r: pb::CreateClientResponse) -> Self {
        Self { client: r.client.map(OAuthClient::from), client_secret: Some(r.client_secret).filter(|s| !s.is_empty()) }
    }
}

/// A new client: its kind and its settings (as [`ClientSettings`]).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewClientBody {
    kind: ClientKind,
    /// 1–100 characters, shown to users on the consent screen.
    name: String,
    /// 1–10 exact redirect URIs (see ClientSettings).
    redirect_uris: Vec<String>,
    #[serde(default)]
    post_logout_redirect_uris: Vec<String>,
    allowed_scopes: Vec<String>,
    grant_types: Vec<String>,
    #[serde(default)]
    first_party: bool,
}

impl NewClientBody {
    fn into_pb(self) -> pb::CreateClientRequest {
        let kind: pb::ClientKind = self.kind.into();
        let settings = ClientSettings {
            name: self.name,
            redirect_uris: self.redirect_uris,
            post_logout_redirect_uris: self.post_logout_redirect_uris,
            allowed_scopes: self.allowed_scopes,
            grant_types: self.grant_types,
            first_party: self.first_party,
        };
        pb::CreateClientRequest { kind: kind.into(), settings: Some(settings.into()) }
    }
}

/// A deletion was done.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    /// Always true.
    deleted: bool,
}

/// The tenant's OAuth clients, newest first; requires oauth.clients.read
#[utoipa::path(get, path = "/v1/oauth/clients", operation_id = "listOAuthClients", params(PageQuery), responses(
    (status = 200, description = "a page of clients", body = OAuthClientPage), Refusals,
))]
pub async fn list_clients(
    State(state): State<AppState>,
    call: Call,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<OAuthClientPage>, HttpError> {
    call.require(Permission::OAuthClientsRead)?;
    let msg = pb::ListClientsRequest { page_size: q.page_size, page_token: q.page_token };
    let r = clients(&state).list_clients(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(OAuthClientPage {
        clients: r.clients.into_iter().map(OAuthClient::from).collect(),
        next_page_token: r.next_page_token,
    }))
}

/// Registers a client; a confidential client's secret is in this answer only; requires
/// oauth.clients.write
#[utoipa::path(post, path = "/v1/oauth/clients", operation_id = "createOAuthClient", request_body = NewClientBody,
    responses((status = 200, description = "the client (and its secret)", body = OAuthClientWithSecret), Refusals))]
pub async fn create_client(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody<NewClientBody>,
) -> Result<Json<OAuthClientWithSecret>, HttpError> {
    call.require(Permission::OAuthClientsWrite)?;
    let r = clients(&state).create_client(call.request(body.into_pb())).await.map_err(upstream)?.into_inner();
    Ok(Json(r.into()))
}

/// One client; requires oauth.clients.read
#[utoipa::path(get, path = "/v1/oauth/clients/{id}", operation_id = "getOAuthClient", params(("id" = String, Path)),
    responses((status = 200, description = "the client", body = OAuthClient), Refusals))]
pub async fn get_client(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
) -> Result<Json<OAuthClient>, HttpError> {
    call.require(Permission::OAuthClientsRead)?;
    let r = clients(&state).get_client(call.request(pb::GetClientRequest { id })).await.map_err(upstream)?;
    Ok(Json(r.into_inner().into()))
}

/// Replaces a client's settings (not its kind or secret); requires oauth.clients.write
#[utoipa::path(put, path = "/v1/oauth/clients/{id}", operation_id = "putOAuthClient", params(("id" = String, Path)),
    request_body = ClientSettings,
    responses((status = 200, description = "the client", body = OAuthClient), Refusals))]
pub async fn put_client(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<ClientSettings>,
) -> Result<Json<OAuthClient>, HttpError> {
    call.require(Permission::OAuthClientsWrite)?;
    let msg = pb::UpdateClientRequest { id, settings: Some(body.into()) };
    let r = clients(&state).update_client(call.request(msg)).await.map_err(upstream)?;
    Ok(Json(r.into_inner().into()))
}

/// Deletes a client: its tokens are refused from then on; requires oauth.clients.write
#[utoipa::path(delete, path = "/v1/oauth/clients/{id}", operation_id = "deleteOAuthClient",
    params(("id" = String, Path)), responses((status = 200, description = "deleted", body = Deleted), Refusals))]
pub async fn delete_client(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
) -> Result<Json<Deleted>, HttpError> {
    call.require(Permission::OAuthClientsWrite)?;
    clients(&state).delete_client(call.request(pb::DeleteClientRequest { id })).await.map_err(upstream)?;
    Ok(Json(Deleted { deleted: true }))
}

/// A new secret for a confidential client, in this answer only; the old one stops working at
/// once; requires oauth.clients.write
#[utoipa::path(post, path = "/v1/oauth/clients/{id}/secret", operation_id = "rotateOAuthClientSecret",
    params(("id" = String, Path)), responses(
        (status = 200, description = "the client and its new secret", body = OAuthClientWithSecret),
        (status = 412, description = "PUBLIC_CLIENT: a public client has no secret", body = crate::openapi::ErrorBody),
        Refusals,
    ))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
) -> Result<Json<OAuthClientWithSecret>, HttpError> {
    call.require(Permission::OAuthClientsWrite)?;
    let msg = pb::RotateClientSecretRequest { id };
    let r = clients(&state).rotate_client_secret(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(r.into()))
}
