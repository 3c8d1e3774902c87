//! `strongroom.vault.v1.SecretsService`: stored secrets, each version sealed under the tenant key
//! and bound to its tenant, path and version. A value leaves only once the audit record of its
//! reveal is committed; a refused reveal is audited too.

use std::collections::BTreeMap;

use kit::access::RequestContext;
use kit::authz::Permission;
use kit::outbox::Outcome;
use kit::time::{opt_from_pb, opt_to_pb};
use kit::{ApiError, Db, Tenant, TenantTx};
use proto::vault::v1 as pb;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use super::{actor, next_page, record, record_alone, request_id};
use crate::domain::envelope::{Envelope, KeyKind};
use crate::domain::path::{SecretPath, parse_prefix, secret_aad};
use crate::error::VaultError;
use crate::keyring::Keyring;
use crate::signals::Operation;
use crate::store::{self, secrets::SecretRow};

/// Largest secret value.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// `strongroom.vault.v1.SecretsService`.
#[derive(Debug, Clone)]
pub struct Secrets {
    pub db: Db,
    pub keyring: Keyring,
}

/// A secret's metadata, as the API shows it.
pub fn metadata(row: &SecretRow) -> pb::SecretMetadata {
    pb::SecretMetadata {
        path: row.path.clone(),
        current_version: row.current_version as u32,
        labels: row.labels.clone().into_iter().collect(),
        rotate_after: opt_to_pb(row.rotate_after),
        expires_at: opt_to_pb(row.expires_at),
        create_time: opt_to_pb(Some(row.created_at)),
        update_time: opt_to_pb(Some(row.updated_at)),
        delete_time: opt_to_pb(row.deleted_at),
    }
}

/// The audit resource of a secret.
fn resource(path: &SecretPath) -> String {
    format!("secret/{}", path.as_str())
}

/// A `PutSecret` request, checked.
struct Put {
    path: SecretPath,
    value: Vec<u8>,
    labels: BTreeMap<String, String>,
    rotate_after: Option<chrono::DateTime<chrono::Utc>>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    expected_version: Option<u32>,
    request_id: Option<uuid::Uuid>,
    /// What a replay under the same request id must match.
    digest: Vec<u8>,
}

impl Put {
    fn decode(path: SecretPath, req: pb::PutSecretRequest) -> Result<Self, ApiError> {
        if req.value.is_empty() || req.value.len() > MAX_SECRET_BYTES {
            return Err(ApiError::invalid_field("value", "1 byte to 64 KiB"));
        }
        if req.labels.len() > 64 || req.labels.iter().any(|(k, v)| k.is_empty() || k.len() > 64 || v.len() > 256) {
            return Err(ApiError::invalid_field("labels", "at most 64 labels, keys 1–64 and values ≤ 256 characters"));
        }
        let rotate_after = opt_from_pb("rotate_after", req.rotate_after.as_ref())?;
        let expires_at = opt_from_pb("expires_at", req.expires_at.as_ref())?;
        let request_id = request_id(&req.request_id)?;
        let labels: BTreeMap<String, String> = req.labels.into_iter().collect();
        let digest = {
            let mut h = Sha256::new();
            h.update(path.as_str().as_bytes());
            h.update(Sha256::digest(&req.value));
            h.update(serde_json::to_vec(&labels).unwrap_or_default());
            h.update(format!("{rotate_after:?}{expires_at:?}{:?}", req.expected_version).as_bytes());
            h.finalize().to_vec()
        };
        let expected_version = req.expected_version;
        Ok(Self { path, value: req.value, labels, rotate_after, expires_at, expected_version, request_id, digest })
    }
}

impl Secrets {
    /// Resolves the tenant and checks the principal's permission.
    async fn authorize(&self, ctx: &RequestContext, permission: Permission) -> Result<Tenant, ApiError> {
        Ok(kit::authz::authorize(&self.db, ctx, permission).await?.tenant)
    }

    /// Like `authorize`, but a refusal inside a known tenant leaves an audit record.
    async fn authorize_audited(
        &self,
        ctx: &RequestContext,
        permission: Permission,
        action: &str,
        resource: &str,
    ) -> Result<Tenant, ApiError> {
        match self.authorize(ctx, permission).await {
            Err(e) if e.reason == "MISSING_PERMISSION" => {
                let tenant = super::tenant(&self.db, ctx).await?;
                let denied = record(ctx, actor(ctx), action, resource, Outcome::Denied)
                    .detail("missing_permission", permission.as_str());
                record_alone(&self.db, &tenant, denied).await?;
                Err(e)
            }
            other => other,
        }
    }

    /// Writes the next version of a secret (the first creates it), sealed under the active tenant
    /// key, with its audit record; a retried request with the same id gets the first response.
    async fn put(&self, ctx: &RequestContext, tenant: &Tenant, put: Put) -> Result<pb::PutSecretResponse, ApiError> {
        let Put { path, value, labels, rotate_after, expires_at, expected_version, request_id, digest } = put;
        let mut tx = self.db.begin(tenant).await?;
        if let Some(id) = request_id
            && let Some(previous) = store::replayed(&mut tx, id, "put_secret", &digest).await?
        {
            return Ok(previous);
        }
        let current = store::secrets::lock_secret(&mut tx, &path).await?;
        let current_version = current.as_ref().map_or(0, |s| s.current_version as u32);
        if let Some(expected) = expected_version
            && expected != current_version
        {
            return Err(VaultError::VersionConflict { current: current_version, expected }.into());
        }
        let version = current_version + 1;
        let (key_version, key) = self.keyring.active(&mut tx).await?;
        let envelope = Envelope::seal(KeyKind::Tenant, key_version, &key, &secret_aad(tenant, &path, version), &value)
            .map_err(|e| ApiError::internal(&e))?;
        let row = store::secrets::write_version(
            &mut tx,
            &path,
            version,
            key_version,
            &envelope.encode(),
            &labels,
            rotate_after,
            expires_at,
        )
        .await?;
        let resp = pb::PutSecretResponse { secret: Some(metadata(&row)), version };
        if let Some(id) = request_id {
            store::remember(&mut tx, id, "put_secret", &digest, &resp).await?;
        }
        tx.record(
            record(ctx, actor(ctx), "vault.secret.put", &resource(&path), Outcome::Success)
                .request_id(ctx.request_id.clone().or(request_id.map(|u| u.to_string())))
                .detail("version", version)
                .detail("key_version", key_version),
        )
        .await?;
        tx.commit().await?;
        Operation::Encrypt.done();
        Ok(resp)
    }

    /// The plaintext of version `version` (0: the current one) of a live, unexpired secret, and
    /// the version it is.
    async fn open(
        &self,
        tx: &mut TenantTx,
        path: &SecretPath,
        version: u32,
    ) -> Result<(u32, zeroize::Zeroizing<Vec<u8>>), ApiError> {
        let secret = store::secrets::secret(tx, path)
            .await?
            .filter(|s| s.deleted_at.is_none())
            .ok_or(VaultError::SecretNotFound)?;
        // An expired secret is kept (for audit and undelete) but no longer served.
        if secret.expires_at.is_some_and(|t| t <= chrono::Utc::now()) {
            return Err(VaultError::SecretExpired.into());
        }
        let version = if version == 0 { secret.current_version as u32 } else { version };
        let stored = store::secrets::version(tx, path, version)
            .await?
            .ok_or_else(|| VaultError::SecretVersionNotFound { path: path.as_str().to_owned(), version })?;
        let ciphertext = stored.ciphertext.ok_or(VaultError::SecretVersionDestroyed { version })?;
        let envelope = Envelope::decode(&ciphertext).map_err(|e| ApiError::internal(&e))?;
        let key = self.keyring.version(tx, envelope.key_version).await?;
        let plaintext = envelope.open(&key, &secret_aad(tx.tenant(), path, version)).map_err(|e| {
            tracing::error!(path = %path.as_str(), version, error = %e, "stored secret does not decrypt");
            ApiError::internal(&"stored secret does not decrypt")
        })?;
        Operation::Decrypt.done();
        Ok((version, plaintext))
    }

    /// Deletes (`deleted`) or undeletes the secret at `path`; a secret already so is returned as is.
    async fn set_deleted(
        &self,
        ctx: &RequestContext,
        path: &str,
        raw_request_id: &str,
        deleted: bool,
    ) -> Result<SecretRow, ApiError> {
        let path = SecretPath::parse(path)?;
        request_id(raw_request_id)?;
        let tenant = self.authorize(ctx, Permission::VaultSecretsWrite).await?;
        let mut tx = self.db.begin(&tenant).await?;
        let current = store::secrets::lock_secret(&mut tx, &path).await?.ok_or(VaultError::SecretNotFound)?;
        if current.deleted_at.is_some() == deleted {
            tx.commit().await?;
            return Ok(current);
        }
        let row = store::secrets::set_deleted(&mut tx, &path, deleted).await?;
        let action = if deleted { "vault.secret.delete" } else { "vault.secret.undelete" };
        tx.record(record(ctx, actor(ctx), action, &resource(&path), Outcome::Success)).await?;
        tx.commit().await?;
        Ok(row)
    }
}

#[tonic::async_trait]
impl pb::secrets_service_server::SecretsService for Secrets {
    async fn put_secret(
        &self,
        request: Request<pb::PutSecretRequest>,
    ) -> Result<Response<pb::PutSecretResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        let path = SecretPath::parse(&req.path)?;
        let tenant = self.authorize(&ctx, Permission::VaultSecretsWrite).await?;
        let put = Put::decode(path, req)?;
        Ok(Response::new(self.put(&ctx, &tenant, put).await?))
    }

    async fn get_secret(
        &self,
        request: Request<pb::GetSecretRequest>,
    ) -> Result<Response<pb::GetSecretResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let path = SecretPath::parse(&request.get_ref().path)?;
        let tenant = self.authorize(&ctx, Permission::VaultSecretsRead).await?;
        let mut tx = self.db.begin(&tenant).await?;
        let row = store::secrets::secret(&mut tx, &path).await?.ok_or(VaultError::SecretNotFound)?;
        tx.commit().await?;
        Ok(Response::new(pb::GetSecretResponse { secret: Some(metadata(&row)) }))
    }

    async fn list_secrets(
        &self,
        request: Request<pb::ListSecretsRequest>,
    ) -> Result<Response<pb::ListSecretsResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        let prefix = parse_prefix(&req.prefix)?;
        let page_size = ApiError::page_size(req.page_size, 100, 1000)?;
        let after = decode_page_token(&req.page_token)?;
        let tenant = self.authorize(&ctx, Permission::VaultSecretsRead).await?;
        let mut tx = self.db.begin(&tenant).await?;
        let mut rows = store::secrets::list(&mut tx, &prefix, after.as_deref(), page_size + 1).await?;
        tx.commit().await?;
        let next_page_token = next_page(&mut rows, page_size, |r| encode_page_token(&r.path));
        Ok(Response::new(pb::ListSecretsResponse { secrets: rows.iter().map(metadata).collect(), next_page_token }))
    }

    async fn list_secret_versions(
        &self,
        request: Request<pb::ListSecretVersionsRequest>,
    ) -> Result<Response<pb::ListSecretVersionsResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        let path = SecretPath::parse(&req.path)?;
        let page_size = ApiError::page_size(req.page_size, 100, 1000)?;
        // The token is the last version of the previous page.
        let after = match req.page_token.as_str() {
            "" => 0,
            t => t.parse::<u32>().ok().filter(|v| *v > 0).ok_or_else(bad_page_token)?,
        };
        let tenant = self.authorize(&ctx, Permission::VaultSecretsRead).await?;
        let mut tx = self.db.begin(&tenant).await?;
        store::secrets::secret(&mut tx, &path).await?.ok_or(VaultError::SecretNotFound)?;
        let mut versions = store::secrets::versions(&mut tx, &path, after, page_size + 1).await?;
        tx.commit().await?;
        let next_page_token = next_page(&mut versions, page_size, |v| v.version.to_string());
        let versions = versions
            .into_iter()
            .map(|v| pb::SecretVersion {
                version: v.version as u32,
                create_time: opt_to_pb(Some(v.created_at)),
                destroy_time: opt_to_pb(v.destroyed_at),
                key_version: v.key_version as u32,
            })
            .collect();
        Ok(Response::new(pb::ListSecretVersionsResponse { versions, next_page_token }))
    }

    async fn reveal_secret(
        &self,
        request: Request<pb::RevealSecretRequest>,
    ) -> Result<Response<pb::RevealSecretResponse>, Status> {
        const ACTION: &str = "vault.secret.reveal";
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        let path = SecretPath::parse(&req.path)?;
        let resource = resource(&path);
        let reason = req.reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(ApiError::invalid_field("reason", "required, at most 500 characters").into());
        }
        let tenant = self.authorize_audited(&ctx, Permission::VaultSecretsReveal, ACTION, &resource).await?;
        if let Err(e) = ctx.require_principal()?.require_recent_mfa() {
            let denied =
                record(&ctx, actor(&ctx), ACTION, &resource, Outcome::Denied).detail("refused", "step_up_required");
            record_alone(&self.db, &tenant, denied).await?;
            return Err(e.into());
        }
        let mut tx = self.db.begin(&tenant).await?;
        let (version, plaintext) = self.open(&mut tx, &path, req.version).await?;
        // The plaintext leaves only once its audit record is committed.
        tx.record(
            record(&ctx, actor(&ctx), ACTION, &resource, Outcome::Success)
                .detail("version", version)
                .detail("reason", reason),
        )
        .await?;
        tx.commit().await?;
        Ok(Response::new(pb::RevealSecretResponse {
            path: path.as_str().to_owned(),
            version,
            value: plaintext.to_vec(),
        }))
    }

    async fn delete_secret(
        &self,
        request: Request<pb::DeleteSecretRequest>,
    ) -> Result<Response<pb::DeleteSecretResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.get_ref();
        let row = self.set_deleted(&ctx, &req.path, &req.request_id, true).await?;
        Ok(Response::new(pb::DeleteSecretResponse { secret: Some(metadata(&row)) }))
    }

    async fn undelete_secret(
        &self,
        request: Request<pb::UndeleteSecretRequest>,
    ) -> Result<Response<pb::UndeleteSecretResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.get_ref();
        let row = self.set_deleted(&ctx, &req.path, &req.request_id, false).await?;
        Ok(Response::new(pb::UndeleteSecretResponse { secret: Some(metadata(&row)) }))
    }

    async fn destroy_secret_versions(
        &self,
        request: Request<pb::DestroySecretVersionsRequest>,
    ) -> Result<Response<pb::DestroySecretVersionsResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        let path = SecretPath::parse(&req.path)?;
        request_id(&req.request_id)?;
        if req.versions.is_empty() || req.versions.len() > 1000 || req.versions.contains(&0) {
            return Err(ApiError::invalid_field("versions", "1–1000 version numbers, each ≥ 1").into());
        }
        let tenant = self.authorize(&ctx, Permission::VaultSecretsDestroy).await?;
        let mut tx = self.db.begin(&tenant).await?;
        store::secrets::lock_secret(&mut tx, &path).await?.ok_or(VaultError::SecretNotFound)?;
        let destroyed = store::secrets::destroy_versions(&mut tx, &path, &req.versions).await?;
        if !destroyed.is_empty() {
            let destroy = record(&ctx, actor(&ctx), "vault.secret.destroy", &resource(&path), Outcome::Success);
            tx.record(destroy.detail("versions", destroyed.clone())).await?;
        }
        tx.commit().await?;
        Ok(Response::new(pb::DestroySecretVersionsResponse { destroyed }))
    }
}

fn bad_page_token() -> ApiError {
    ApiError::invalid_field("page_token", "not a token from a previous page")
}

fn encode_page_token(path: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(path)
}

fn decode_page_token(token: &str) -> Result<Option<String>, ApiError> {
    use base64::Engine;
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| bad_page_token())?;
    let path = String::from_utf8(bytes).map_err(|_| bad_page_token())?;
    SecretPath::parse(&path).map_err(|_| bad_page_token())?;
    Ok(Some(path))
}
