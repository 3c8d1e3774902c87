//! `OAuthClientService`: the tenant's OAuth 2 / OpenID Connect clients, registered by its admins
//! (`oauth.clients.read` / `oauth.clients.write`). Every change is audited; a confidential
//! client's secret (256 random bits, base64url) is in the answer that makes it and nowhere else:
//! only its SHA-256 is stored, and the audit records name the client, never the secret.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use kit::ApiError;
use kit::authz::Permission;
use kit::outbox::Outcome;
use kit::time::opt_to_pb;
use proto::auth::v1 as pb;
use sha2::Digest;
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use super::CreatedCursor;
use crate::core::Core;
use crate::domain::input::parse_id;
use crate::domain::oauth::{self, Kind, Settings};
use crate::store::oauth_clients::{self, ClientRow};

/// `OAuthClientService`.
#[derive(Clone, Debug)]
pub struct OAuthClients {
    pub core: Core,
}

fn not_found() -> ApiError {
    ApiError::not_found("OAUTH_CLIENT_NOT_FOUND", "no such OAuth client")
}

/// A new client secret and the SHA-256 that is stored of it.
fn new_secret() -> Result<(Zeroizing<String>, [u8; 32]), ApiError> {
    let mut raw = Zeroizing::new([0u8; 32]);
    getrandom::fill(raw.as_mut()).map_err(|e| ApiError::internal(&e))?;
    let secret = Zeroizing::new(B64URL.encode(raw.as_ref()));
    let hash: [u8; 32] = sha2::Sha256::digest(secret.as_bytes()).into();
    Ok((secret, hash))
}

fn client_pb(c: ClientRow) -> pb::OAuthClient {
    pb::OAuthClient {
        id: c.id.to_string(),
        kind: Kind::stored(&c.kind).to_pb().into(),
        settings: Some(pb::ClientSettings {
            name: c.name,
            redirect_uris: c.redirect_uris,
            post_logout_redirect_uris: c.post_logout_redirect_uris,
            allowed_scopes: c.allowed_scopes,
            grant_types: c.grant_types,
            first_party: c.first_party,
        }),
        created_by: c.created_by,
        create_time: opt_to_pb(Some(c.created_at)),
        update_time: opt_to_pb(Some(c.updated_at)),
        secret_time: opt_to_pb(c.secret_created_at),
    }
}

/// What the audit trail says of a client's settings (no secret; the URIs are configuration).
fn described(record: kit::outbox::AuditRecord, s: &Settings) -> kit::outbox::AuditRecord {
    record
        .detail("name", s.name.clone())
        .detail("redirect_uris", s.redirect_uris.clone())
        .detail("allowed_scopes", s.allowed_scopes.clone())
        .detail("grant_types", s.grant_types.clone())
        .detail("first_party", s.first_party)
}

#[tonic::async_trait]
impl pb::o_auth_client_service_server::OAuthClientService for OAuthClients {
    async fn create_client(
        &self,
        request: Request<pb::CreateClientRequest>,
    ) -> Result<Response<pb::CreateClientResponse>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::OAuthClientsWrite)?;
        let req = request.into_inner();
        let kind = Kind::from_pb(req.kind)?;
        let settings = oauth::check(kind, req.settings.as_ref())?;
        let secret = match kind {
            Kind::Confidential => Some(new_secret()?),
            Kind::Public => None,
        };
        let id = uuid::Uuid::now_v7();
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let by = me.principal.subject.clone();
        let hash = secret.as_ref().map(|(_, h)| h.as_slice());
        let row = oauth_clients::insert(&mut tx, id, kind.as_str(), &settings, hash, &by).await?;
        let record = me.audit("oauth.client.create", &format!("oauth_client/{id}"), Outcome::Success);
        tx.record(described(record, &settings).detail("kind", kind.as_str())).await?;
        tx.commit().await?;
        let client_secret = secret.map(|(s, _)| s.to_string()).unwrap_or_default();
        Ok(Response::new(pb::CreateClientResponse { client: Some(client_pb(row)), client_secret }))
    }

    async fn get_client(&self, request: Request<pb::GetClientRequest>) -> Result<Response<pb::OAuthClient>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::OAuthClientsRead)?;
        let id = parse_id("id", &request.get_ref().id)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let row = oauth_clients::get(&mut tx, id).await?.ok_or_else(not_found)?;
        tx.commit().await?;
        Ok(Response::new(client_pb(row)))
    }

    async fn list_clients(
        &self,
        request: Request<pb::ListClientsRequest>,
    ) -> Result<Response<pb::ListClientsResponse>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::OAuthClientsRead)?;
        let req = request.into_inner();
        let size = ApiError::page_size(req.page_size, 100, 500)?;
        let after = CreatedCursor::parse(&req.page_token)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let rows = oauth_clients::page(&mut tx, (after.created_at, after.id), size + 1).await?;
        tx.commit().await?;
        let (rows, next_page_token) =
            super::page(rows, size, |last| CreatedCursor { created_at: last.created_at, id: last.id }.token());
        Ok(Response::new(pb::ListClientsResponse {
            clients: rows.into_iter().map(client_pb).collect(),
            next_page_token,
        }))
    }

    async fn update_client(
        &self,
        request: Request<pb::UpdateClientRequest>,
    ) -> Result<Response<pb::OAuthClient>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::OAuthClientsWrite)?;
        let req = request.into_inner();
        let id = parse_id("id", &req.id)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let current = oauth_clients::get(&mut tx, id).await?.ok_or_else(not_found)?;
        let settings = oauth::check(Kind::stored(&current.kind), req.settings.as_ref())?;
        let row = oauth_clients::update(&mut tx, id, &settings).await?.ok_or_else(not_found)?;
        let record = me.audit("oauth.client.update", &format!("oauth_client/{id}"), Outcome::Success);
        tx.record(described(record, &settings)).await?;
        tx.commit().await?;
        Ok(Response::new(client_pb(row)))
    }

    async fn rotate_client_secret(
        &self,
        request: Request<pb::RotateClientSecretRequest>,
    ) -> Result<Response<pb::CreateClientResponse>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::OAuthClientsWrite)?;
        let id = parse_id("id", &request.get_ref().id)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let current = oauth_clients::get(&mut tx, id).await?.ok_or_else(not_found)?;
        if Kind::stored(&current.kind) != Kind::Confidential {
            return Err(ApiError::failed_precondition("PUBLIC_CLIENT", "a public client has no secret").into());
        }
        let (secret, hash) = new_secret()?;
        let row = oauth_clients::set_secret(&mut tx, id, &hash).await?.ok_or_else(not_found)?;
        tx.record(me.audit("oauth.client.rotate_secret", &format!("oauth_client/{id}"), Outcome::Success)).await?;
        tx.commit().await?;
        Ok(Response::new(pb::CreateClientResponse { client: Some(client_pb(row)), client_secret: secret.to_string() }))
    }

    async fn delete_client(
        &self,
        request: Request<pb::DeleteClientRequest>,
    ) -> Result<Response<pb::DeleteClientResponse>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::OAuthClientsWrite)?;
        let id = parse_id("id", &request.get_ref().id)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        if !oauth_clients::delete(&mut tx, id).await? {
            return Err(not_found().into());
        }
        tx.record(me.audit("oauth.client.delete", &format!("oauth_client/{id}"), Outcome::Success)).await?;
        tx.commit().await?;
        Ok(Response::new(pb::DeleteClientResponse {}))
    }
}
