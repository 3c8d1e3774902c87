//! gRPC adapters of vault-svc: decode, authorize, call the domain and the store, map errors.

use std::collections::BTreeMap;

use kit::access::RequestContext;
use kit::authz::Permission;
use kit::outbox::{Actor, AuditRecord, Outcome};
use kit::time::{opt_from_pb, opt_to_pb};
use kit::{ApiError, Db, ErrorCode, Tenant, TenantTx};
use prost::Message;
use proto::vault::v1 as pb;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use crate::SERVICE;
use crate::domain::crypto::Aad;
use crate::domain::envelope::{Envelope, EnvelopeError, KeyKind};
use crate::domain::path::{SecretPath, parse_prefix};
use crate::keyring::Keyring;
use crate::store::{self, SecretRow};

/// Largest secret value.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;
/// Largest transit plaintext.
pub const MAX_TRANSIT_BYTES: usize = 1024 * 1024;
/// Most items of a batch call.
pub const MAX_BATCH: usize = 1000;

fn actor(ctx: &RequestContext) -> Actor {
    match &ctx.principal {
        Some(p) => Actor::of(p),
        None => Actor::Service(ctx.caller.identity.name().to_owned()),
    }
}

fn envelope_error(e: EnvelopeError) -> ApiError {
    match e {
        EnvelopeError::Malformed | EnvelopeError::Unsupported => {
            ApiError::new(ErrorCode::InvalidArgument, "MALFORMED_CIPHERTEXT", "ciphertext is malformed")
        }
        EnvelopeError::Crypto(_) => ApiError::new(
            ErrorCode::InvalidArgument,
            "DECRYPTION_FAILED",
            "ciphertext does not decrypt in this tenant, path and context",
        ),
    }
}

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

/// Associated data of a stored secret version: tenant, path and version.
pub(crate) fn secret_aad(tenant: &Tenant, path: &SecretPath, version: u32) -> Aad {
    Aad::new("strongroom.vault.secret")
        .with("tenant", tenant.id.0.as_bytes())
        .with("path", path.as_str().as_bytes())
        .with("version", &version.to_be_bytes())
}

fn request_id(raw: &str) -> Result<Option<uuid::Uuid>, ApiError> {
    if raw.is_empty() {
        return Ok(None);
    }
    uuid::Uuid::parse_str(raw).map(Some).map_err(|_| ApiError::invalid_field("request_id", "must be a UUID"))
}

/// `strongroom.vault.v1.SecretsService`.
#[derive(Debug, Clone)]
pub struct Secrets {
    pub db: Db,
    pub keyring: Keyring,
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
                let tenant = self.db.authorize_tenant(&ctx.tenant_slug()?, ctx.principal.as_ref()).await?;
                let mut tx = self.db.begin(&tenant).await?;
                tx.record(
                    AuditRecord::new(SERVICE, actor(ctx), action, resource, Outcome::Denied)
                        .request_id(ctx.request_id.clone())
                        .detail("missing_permission", permission.as_str()),
                )
                .await?;
                tx.commit().await?;
                Err(e)
            }
            other => other,
        }
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
        if req.value.is_empty() || req.value.len() > MAX_SECRET_BYTES {
            return Err(ApiError::invalid_field("value", "1 byte to 64 KiB").into());
        }
        if req.labels.len() > 64 || req.labels.iter().any(|(k, v)| k.is_empty() || k.len() > 64 || v.len() > 256) {
            return Err(
                ApiError::invalid_field("labels", "at most 64 labels, keys 1–64 and values ≤ 256 characters").into()
            );
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

        let mut tx = self.db.begin(&tenant).await?;
        if let Some(id) = request_id
            && let Some(previous) = store::idempotent_response(&mut tx, id, "put_secret", &digest).await?
        {
            let resp = pb::PutSecretResponse::decode(previous.as_slice()).map_err(|e| ApiError::internal(&e))?;
            return Ok(Response::new(resp));
        }
        let current = store::lock_secret(&mut tx, &path).await?;
        let current_version = current.as_ref().map_or(0, |s| s.current_version as u32);
        if let Some(expected) = req.expected_version
            && expected != current_version
        {
            return Err(ApiError::new(
                ErrorCode::Aborted,
                "VERSION_CONFLICT",
                format!("current version is {current_version}, expected {expected}"),
            )
            .into());
        }
        let version = current_version + 1;
        let (key_version, key) = self.keyring.active(&mut tx).await?;
        let envelope =
            Envelope::seal(KeyKind::Tenant, key_version, &key, &secret_aad(&tenant, &path, version), &req.value)
                .map_err(|e| ApiError::internal(&e))?;
        let row = store::write_version(
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
            store::remember_response(&mut tx, id, "put_secret", &digest, &resp.encode_to_vec()).await?;
        }
        tx.record(
            AuditRecord::new(
                SERVICE,
                actor(&ctx),
                "vault.secret.put",
                &format!("secret/{}", path.as_str()),
                Outcome::Success,
            )
            .request_id(ctx.request_id.clone().or(request_id.map(|u| u.to_string())))
            .detail("version", version)
            .detail("key_version", key_version),
        )
        .await?;
        tx.commit().await?;
        Ok(Response::new(resp))
    }

    async fn get_secret(
        &self,
        request: Request<pb::GetSecretRequest>,
    ) -> Result<Response<pb::GetSecretResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let path = SecretPath::parse(&request.get_ref().path)?;
        let tenant = self.authorize(&ctx, Permission::VaultSecretsRead).await?;
        let mut tx = self.db.begin(&tenant).await?;
        let row = store::secret(&mut tx, &path).await?.ok_or_else(not_found)?;
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
        let mut rows = store::list(&mut tx, &prefix, after.as_deref(), page_size + 1).await?;
        tx.commit().await?;
        let next_page_token = if rows.len() > page_size as usize {
            rows.truncate(page_size as usize);
            rows.last().map(|r| encode_page_token(&r.path)).unwrap_or_default()
        } else {
            String::new()
        };
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
            t => t
                .parse::<u32>()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| ApiError::invalid_field("page_token", "not a token from a previous page"))?,
        };
        let tenant = self.authorize(&ctx, Permission::VaultSecretsRead).await?;
        let mut tx = self.db.begin(&tenant).await?;
        store::secret(&mut tx, &path).await?.ok_or_else(not_found)?;
        let mut versions = store::versions(&mut tx, &path, after, page_size + 1).await?;
        tx.commit().await?;
        let next_page_token = if versions.len() > page_size as usize {
            versions.truncate(page_size as usize);
            versions.last().map(|v| v.version.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListSecretVersionsResponse {
            versions: versions
                .into_iter()
                .map(|v| pb::SecretVersion {
                    version: v.version as u32,
                    create_time: opt_to_pb(Some(v.created_at)),
                    destroy_time: opt_to_pb(v.destroyed_at),
                    key_version: v.key_version as u32,
                })
                .collect(),
            next_page_token,
        }))
    }

    async fn reveal_secret(
        &self,
        request: Request<pb::RevealSecretRequest>,
    ) -> Result<Response<pb::RevealSecretResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        let path = SecretPath::parse(&req.path)?;
        let resource = format!("secret/{}", path.as_str());
        let reason = req.reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(ApiError::invalid_field("reason", "required, at most 500 characters").into());
        }
        let tenant =
            self.authorize_audited(&ctx, Permission::VaultSecretsReveal, "vault.secret.reveal", &resource).await?;
        if let Err(e) = ctx.require_principal()?.require_recent_mfa() {
            let mut tx = self.db.begin(&tenant).await?;
            tx.record(
                AuditRecord::new(SERVICE, actor(&ctx), "vault.secret.reveal", &resource, Outcome::Denied)
                    .request_id(ctx.request_id.clone())
                    .detail("refused", "step_up_required"),
            )
            .await?;
            tx.commit().await?;
            return Err(e.into());
        }
        let mut tx = self.db.begin(&tenant).await?;
        let secret = store::secret(&mut tx, &path).await?.filter(|s| s.deleted_at.is_none()).ok_or_else(not_found)?;
        // An expired secret is kept (for audit and undelete) but no longer served.
        if secret.expires_at.is_some_and(|t| t <= chrono::Utc::now()) {
            return Err(ApiError::new(ErrorCode::FailedPrecondition, "SECRET_EXPIRED", "the secret has expired").into());
        }
        let version = if req.version == 0 { secret.current_version as u32 } else { req.version };
        let stored = store::version(&mut tx, &path, version).await?.ok_or_else(|| {
            ApiError::not_found(
                "SECRET_VERSION_NOT_FOUND",
                format!("version {version} of {} does not exist", path.as_str()),
            )
        })?;
        let ciphertext = stored.ciphertext.ok_or_else(|| {
            ApiError::new(
                ErrorCode::FailedPrecondition,
                "SECRET_VERSION_DESTROYED",
                format!("version {version} was destroyed"),
            )
        })?;
        let envelope = Envelope::decode(&ciphertext).map_err(|e| ApiError::internal(&e))?;
        let key = self.keyring.version(&mut tx, envelope.key_version).await?;
        let plaintext = envelope.open(&key, &secret_aad(&tenant, &path, version)).map_err(|e| {
            tracing::error!(path = %path.as_str(), version, error = %e, "stored secret does not decrypt");
            ApiError::internal(&"stored secret does not decrypt")
        })?;
        // The plaintext leaves only once its audit record is committed.
        tx.record(
            AuditRecord::new(SERVICE, actor(&ctx), "vault.secret.reveal", &resource, Outcome::Success)
                .request_id(ctx.request_id.clone())
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
        let req = request.into_inner();
        let path = SecretPath::parse(&req.path)?;
        request_id(&req.request_id)?;
        let row = self.set_deleted(&ctx, &path, true).await?;
        Ok(Response::new(pb::DeleteSecretResponse { secret: Some(metadata(&row)) }))
    }

    async fn undelete_secret(
        &self,
        request: Request<pb::UndeleteSecretRequest>,
    ) -> Result<Response<pb::UndeleteSecretResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        let path = SecretPath::parse(&req.path)?;
        request_id(&req.request_id)?;
        let row = self.set_deleted(&ctx, &path, false).await?;
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
        store::lock_secret(&mut tx, &path).await?.ok_or_else(not_found)?;
        let destroyed = store::destroy_versions(&mut tx, &path, &req.versions).await?;
        if !destroyed.is_empty() {
            tx.record(
                AuditRecord::new(
                    SERVICE,
                    actor(&ctx),
                    "vault.secret.destroy",
                    &format!("secret/{}", path.as_str()),
                    Outcome::Success,
                )
                .request_id(ctx.request_id.clone())
                .detail("versions", destroyed.clone()),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Response::new(pb::DestroySecretVersionsResponse { destroyed }))
    }
}

impl Secrets {
    async fn set_deleted(&self, ctx: &RequestContext, path: &SecretPath, deleted: bool) -> Result<SecretRow, ApiError> {
        let tenant = self.authorize(ctx, Permission::VaultSecretsWrite).await?;
        let mut tx = self.db.begin(&tenant).await?;
        let current = store::lock_secret(&mut tx, path).await?.ok_or_else(not_found)?;
        if current.deleted_at.is_some() == deleted {
            tx.commit().await?;
            return Ok(current);
        }
        let row = store::set_deleted(&mut tx, path, deleted).await?;
        let action = if deleted { "vault.secret.delete" } else { "vault.secret.undelete" };
        tx.record(
            AuditRecord::new(SERVICE, actor(ctx), action, &format!("secret/{}", path.as_str()), Outcome::Success)
                .request_id(ctx.request_id.clone()),
        )
        .await?;
        tx.commit().await?;
        Ok(row)
    }
}

fn not_found() -> ApiError {
    ApiError::not_found("SECRET_NOT_FOUND", "no such secret")
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
    let bad = || ApiError::invalid_field("page_token", "not a token from a previous page");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let path = String::from_utf8(bytes).map_err(|_| bad())?;
    SecretPath::parse(&path).map_err(|_| bad())?;
    Ok(Some(path))
}

/// `strongroom.vault.v1.TransitService`: encryption for internal services, bound to tenant,
/// calling identity and context.
#[derive(Debug, Clone)]
pub struct Transit {
    pub db: Db,
    pub keyring: Keyring,
    /// Decrypts are audited as counts per caller, context and interval.
    pub tally: crate::tally::Tally,
}

/// The audit resource of transit decrypts under `context` (and `subject`): the context's names
/// only, never its values (which may name a person, and an unkeyed hash of a guessable value
/// would confirm it), so decrypts count together per kind of context.
fn decrypt_resource(context: &std::collections::HashMap<String, String>, subject: &str) -> String {
    let mut names: Vec<&str> = context.keys().map(String::as_str).collect();
    names.sort_unstable();
    let subject = if subject.is_empty() { "" } else { ";subject" };
    let names: String = names.join(",").chars().take(200).collect();
    format!("transit/context:{names}{subject}")
}

fn transit_aad(
    tenant: &Tenant,
    caller: &str,
    subject: &str,
    context: &std::collections::HashMap<String, String>,
) -> Aad {
    Aad::new("strongroom.vault.transit")
        .with("tenant", tenant.id.0.as_bytes())
        .with("caller", caller.as_bytes())
        .with("subject", subject.as_bytes())
        .with_context(context)
}

fn check_subject(subject: &str) -> Result<(), ApiError> {
    if subject.chars().count() > 128 || subject.chars().any(char::is_control) {
        return Err(ApiError::invalid_field("subject", "at most 128 characters, no control characters"));
    }
    Ok(())
}

fn check_context(context: &std::collections::HashMap<String, String>) -> Result<(), ApiError> {
    if context.len() > 32 || context.iter().any(|(k, v)| k.len() > 128 || v.len() > 1024) {
        return Err(ApiError::invalid_field("context", "at most 32 entries, keys ≤ 128 and values ≤ 1024 bytes"));
    }
    Ok(())
}

impl Transit {
    async fn tenant(&self, ctx: &RequestContext) -> Result<Tenant, ApiError> {
        self.db.authorize_tenant(&ctx.tenant_slug()?, ctx.principal.as_ref()).await
    }

    /// A transaction only when a key is not cached: the hot path touches no database.
    async fn active_key(&self, tenant: &Tenant) -> Result<(u32, crate::domain::crypto::Key256), ApiError> {
        if let Some(hit) = self.keyring.active_cached(tenant.id.0) {
            return Ok(hit);
        }
        let mut tx: TenantTx = self.db.begin(tenant).await?;
        let key = self.keyring.active(&mut tx).await?;
        tx.commit().await?;
        Ok(key)
    }

    async fn key(&self, tenant: &Tenant, version: u32) -> Result<crate::domain::crypto::Key256, ApiError> {
        if let Some(key) = self.keyring.cached_version(tenant.id.0, version) {
            return Ok(key);
        }
        let mut tx = self.db.begin(tenant).await?;
        let key = self.keyring.version(&mut tx, version).await?;
        tx.commit().await?;
        Ok(key)
    }

    async fn encrypt_one(
        &self,
        tenant: &Tenant,
        caller: &str,
        item: pb::EncryptRequest,
    ) -> Result<pb::EncryptResponse, ApiError> {
        if item.plaintext.len() > MAX_TRANSIT_BYTES {
            return Err(ApiError::invalid_field("plaintext", "at most 1 MiB"));
        }
        check_context(&item.context)?;
        check_subject(&item.subject)?;
        let (kind, version, key) = if item.subject.is_empty() {
            let (version, key) = self.active_key(tenant).await?;
            (KeyKind::Tenant, version, key)
        } else {
            let mut tx = self.db.begin(tenant).await?;
            let (version, key) = self.keyring.subject_key(&mut tx, &item.subject, true).await?;
            tx.commit().await?;
            (KeyKind::Subject, version, key)
        };
        let aad = transit_aad(tenant, caller, &item.subject, &item.context);
        let envelope =
            Envelope::seal(kind, version, &key, &aad, &item.plaintext).map_err(|e| ApiError::internal(&e))?;
        Ok(pb::EncryptResponse { ciphertext: envelope.to_text(), key_version: version })
    }

    async fn decrypt_one(
        &self,
        tenant: &Tenant,
        caller: &str,
        item: &pb::DecryptRequest,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, ApiError> {
        check_context(&item.context)?;
        check_subject(&item.subject)?;
        let envelope = Envelope::from_text(&item.ciphertext).map_err(envelope_error)?;
        let foreign = || envelope_error(EnvelopeError::Crypto(crate::domain::crypto::CryptoError::Unauthentic));
        let key = match (envelope.kind, item.subject.is_empty()) {
            // A version this tenant never had means the ciphertext is not this tenant's.
            (KeyKind::Tenant, true) => self
                .key(tenant, envelope.key_version)
                .await
                .map_err(|e| if e.reason == "KEY_NOT_FOUND" { foreign() } else { e })?,
            (KeyKind::Subject, false) => {
                let mut tx = self.db.begin(tenant).await?;
                let key = self.keyring.subject_key_version(&mut tx, &item.subject, envelope.key_version).await?;
                tx.commit().await?;
                key
            }
            _ => return Err(foreign()),
        };
        envelope.open(&key, &transit_aad(tenant, caller, &item.subject, &item.context)).map_err(envelope_error)
    }
}

fn item_error(e: ApiError) -> pb::ItemError {
    pb::ItemError { code: e.code.as_str().to_owned(), reason: e.reason.to_string(), message: e.message }
}

#[tonic::async_trait]
impl pb::transit_service_server::TransitService for Transit {
    async fn encrypt(&self, request: Request<pb::EncryptRequest>) -> Result<Response<pb::EncryptResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let tenant = self.tenant(&ctx).await?;
        Ok(Response::new(self.encrypt_one(&tenant, ctx.caller.identity.name(), request.into_inner()).await?))
    }

    async fn decrypt(&self, request: Request<pb::DecryptRequest>) -> Result<Response<pb::DecryptResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let tenant = self.tenant(&ctx).await?;
        let req = request.get_ref();
        let plaintext = self.decrypt_one(&tenant, ctx.caller.identity.name(), req).await?;
        let resource = decrypt_resource(&req.context, &req.subject);
        self.tally.count(&tenant, "vault.transit.decrypt", &resource, ctx.caller.identity.name(), 1);
        Ok(Response::new(pb::DecryptResponse { plaintext: plaintext.to_vec() }))
    }

    async fn rewrap(&self, request: Request<pb::RewrapRequest>) -> Result<Response<pb::RewrapResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let tenant = self.tenant(&ctx).await?;
        let caller = ctx.caller.identity.name();
        let req = request.into_inner();
        let plaintext = self
            .decrypt_one(
                &tenant,
                caller,
                &pb::DecryptRequest {
                    ciphertext: req.ciphertext,
                    context: req.context.clone(),
                    subject: req.subject.clone(),
                },
            )
            .await?;
        let out = self
            .encrypt_one(
                &tenant,
                caller,
                pb::EncryptRequest { plaintext: plaintext.to_vec(), context: req.context, subject: req.subject },
            )
            .await?;
        Ok(Response::new(pb::RewrapResponse { ciphertext: out.ciphertext, key_version: out.key_version }))
    }

    async fn generate_data_key(
        &self,
        request: Request<pb::GenerateDataKeyRequest>,
    ) -> Result<Response<pb::GenerateDataKeyResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let tenant = self.tenant(&ctx).await?;
        let dek = crate::domain::crypto::Key256::generate().map_err(|e| ApiError::internal(&e))?;
        let req = request.into_inner();
        let wrapped = self
            .encrypt_one(
                &tenant,
                ctx.caller.identity.name(),
                pb::EncryptRequest { plaintext: dek.expose().to_vec(), context: req.context, subject: req.subject },
            )
            .await?;
        Ok(Response::new(pb::GenerateDataKeyResponse {
            plaintext_key: dek.expose().to_vec(),
            wrapped_key: wrapped.ciphertext,
        }))
    }

    async fn encrypt_batch(
        &self,
        request: Request<pb::EncryptBatchRequest>,
    ) -> Result<Response<pb::EncryptBatchResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let tenant = self.tenant(&ctx).await?;
        let items = request.into_inner().items;
        if items.len() > MAX_BATCH {
            return Err(ApiError::invalid_field("items", "at most 1000").into());
        }
        let mut results = Vec::with_capacity(items.len());
        for item in items {
            let result = match self.encrypt_one(&tenant, ctx.caller.identity.name(), item).await {
                Ok(ok) => pb::encrypt_batch_result::Result::Ok(ok),
                Err(e) => pb::encrypt_batch_result::Result::Error(item_error(e)),
            };
            results.push(pb::EncryptBatchResult { result: Some(result) });
        }
        Ok(Response::new(pb::EncryptBatchResponse { results }))
    }

    async fn decrypt_batch(
        &self,
        request: Request<pb::DecryptBatchRequest>,
    ) -> Result<Response<pb::DecryptBatchResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let tenant = self.tenant(&ctx).await?;
        let items = request.into_inner().items;
        if items.len() > MAX_BATCH {
            return Err(ApiError::invalid_field("items", "at most 1000").into());
        }
        let mut results = Vec::with_capacity(items.len());
        for item in &items {
            let result = match self.decrypt_one(&tenant, ctx.caller.identity.name(), item).await {
                Ok(p) => {
                    let resource = decrypt_resource(&item.context, &item.subject);
                    self.tally.count(&tenant, "vault.transit.decrypt", &resource, ctx.caller.identity.name(), 1);
                    pb::decrypt_batch_result::Result::Ok(pb::DecryptResponse { plaintext: p.to_vec() })
                }
                Err(e) => pb::decrypt_batch_result::Result::Error(item_error(e)),
            };
            results.push(pb::DecryptBatchResult { result: Some(result) });
        }
        Ok(Response::new(pb::DecryptBatchResponse { results }))
    }
}
