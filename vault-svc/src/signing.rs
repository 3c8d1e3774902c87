//! `strongroom.vault.v1.SigningService`: per-tenant Ed25519 keys (ed25519-dalek). The private key
//! is sealed by the tenant key in the database and unsealed only in this process to sign.
//!
//! A key belongs to the workload its name starts with (`audit`, `audit-…` to audit-svc): only that
//! workload signs with it or creates it, so ledger-svc cannot forge audit checkpoints nor audit-svc
//! ledger receipts. Nothing creates a key implicitly: `Sign` of a missing key is `NOT_FOUND`, and
//! its owner (or the operator) creates it with `CreateSigningKey`. Signatures are counted per
//! tenant, key and caller, and each minute's count is one audit record ([`crate::tally`]).

use ed25519_dalek::{Signer, SigningKey};
use kit::access::RequestContext;
use kit::outbox::{AuditRecord, Outcome};
use kit::{ApiError, Db, Tenant, TenantTx};
use proto::vault::v1 as pb;
use tonic::{Request, Response, Status};

use crate::api::{self, workload};
use crate::domain::crypto::{Aad, Key256};
use crate::error::VaultError;
use crate::keyring::Keyring;
use crate::store::signing as store;
use crate::tally::Tally;

pub const MAX_MESSAGE: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Signing {
    pub db: Db,
    pub keyring: Keyring,
    pub tally: Tally,
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let mut b = name.bytes();
    let ok = matches!(b.next(), Some(c) if c.is_ascii_lowercase())
        && name.len() <= 32
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    if ok { Ok(()) } else { Err(ApiError::invalid_field("key_name", "[a-z][a-z0-9-]{0,31}")) }
}

/// The workload a key belongs to: its name up to the first `-`.
pub fn owner(key_name: &str) -> &str {
    key_name.split('-').next().unwrap_or(key_name)
}

/// The audit record of `action` on signing key `name` by the calling workload.
fn key_record(ctx: &RequestContext, action: &str, name: &str, outcome: Outcome) -> AuditRecord {
    api::record(ctx, workload(ctx), action, &format!("signing_key/{name}"), outcome)
}

pub(crate) fn seal_aad(tenant: uuid::Uuid, name: &str, version: u32) -> Aad {
    Aad::new("strongroom.vault.signing-key")
        .with("tenant", tenant.as_bytes())
        .with("name", name.as_bytes())
        .with("version", &version.to_be_bytes())
}

struct Active {
    version: u32,
    key: SigningKey,
}

impl Signing {
    /// Creates version `version` of `name`, sealed under the active tenant key.
    async fn create(&self, tx: &mut TenantTx, name: &str, version: u32) -> Result<bool, ApiError> {
        let (tkv, tenant_key) = self.keyring.active(tx).await?;
        let seed = Key256::generate().map_err(|e| ApiError::internal(&e))?;
        let public = SigningKey::from_bytes(seed.expose()).verifying_key().to_bytes();
        let sealed = Keyring::seal_key(&tenant_key, &seal_aad(tx.tenant().id.0, name, version), &seed)?;
        let key = store::NewSigningKey {
            name,
            version,
            public_key: &public,
            tenant_key_version: tkv,
            sealed_private: &sealed,
        };
        store::insert(tx, &key).await
    }

    /// The active version of `name`; `SIGNING_KEY_NOT_FOUND` when the key was never created.
    async fn active(&self, tx: &mut TenantTx, name: &str) -> Result<Active, ApiError> {
        let Some(row) = store::active(tx, name).await? else {
            // Rotated away but never replaced, or never created.
            let any = store::exists(tx, name).await?;
            return Err(if any { VaultError::KeyDestroyed } else { VaultError::SigningKeyNotFound }.into());
        };
        let version = row.version as u32;
        let tenant_key = self.keyring.version(tx, row.tenant_key_version as u32).await?;
        let seed = Keyring::open_key(&tenant_key, &seal_aad(tx.tenant().id.0, name, version), &row.wrapped_private)?;
        Ok(Active { version, key: SigningKey::from_bytes(seed.expose()) })
    }

    /// Refuses a caller that is not the workload `name` belongs to (nor, where `operator_too`, the
    /// operator), with an audit record: a refused signature is an attack on the audit trail.
    async fn require_owner(
        &self,
        ctx: &RequestContext,
        tenant: &Tenant,
        name: &str,
        action: &str,
        operator_too: bool,
    ) -> Result<(), ApiError> {
        let caller = ctx.caller.identity.name();
        if caller == owner(name) || (operator_too && caller == kit::tls::Identity::OPERATOR) {
            return Ok(());
        }
        let refused = key_record(ctx, action, name, Outcome::Denied).detail("refused", "key_of_another_workload");
        api::record_alone(&self.db, tenant, refused).await?;
        kit::metrics::Metrics::global().event("signature_refused");
        Err(VaultError::SigningKeyOfAnotherWorkload { caller: caller.to_owned(), key: name.to_owned() }.into())
    }
}

#[tonic::async_trait]
impl pb::signing_service_server::SigningService for Signing {
    async fn sign(&self, request: Request<pb::SignRequest>) -> Result<Response<pb::SignResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        check_name(&req.key_name)?;
        if req.message.len() > MAX_MESSAGE {
            return Err(ApiError::invalid_field("message", "at most 1 MiB").into());
        }
        let tenant = api::tenant(&self.db, &ctx).await?;
        self.require_owner(&ctx, &tenant, &req.key_name, "vault.signing_key.sign", false).await?;
        let mut tx = self.db.begin(&tenant).await?;
        let active = self.active(&mut tx, &req.key_name).await?;
        tx.commit().await?;
        let signature = active.key.sign(&req.message);
        let resource = format!("signing_key/{}", req.key_name);
        self.tally.count(&tenant, "vault.signing_key.sign", &resource, ctx.caller.identity.name(), 1);
        Ok(Response::new(pb::SignResponse {
            signature: signature.to_bytes().to_vec(),
            key_version: active.version,
            public_key: active.key.verifying_key().to_bytes().to_vec(),
        }))
    }

    async fn create_signing_key(
        &self,
        request: Request<pb::CreateSigningKeyRequest>,
    ) -> Result<Response<pb::CreateSigningKeyResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let name = request.into_inner().key_name;
        check_name(&name)?;
        let tenant = api::tenant(&self.db, &ctx).await?;
        self.require_owner(&ctx, &tenant, &name, "vault.signing_key.create", true).await?;
        let mut tx = self.db.begin(&tenant).await?;
        let any = store::exists(&mut tx, &name).await?;
        let created = !any && self.create(&mut tx, &name, 1).await?;
        let active = self.active(&mut tx, &name).await?;
        if created {
            tx.record(
                key_record(&ctx, "vault.signing_key.create", &name, Outcome::Success).detail("version", active.version),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Response::new(pb::CreateSigningKeyResponse {
            public_key: active.key.verifying_key().to_bytes().to_vec(),
            key_version: active.version,
            created,
        }))
    }

    async fn get_public_key(
        &self,
        request: Request<pb::GetPublicKeyRequest>,
    ) -> Result<Response<pb::GetPublicKeyResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        check_name(&req.key_name)?;
        let tenant = api::tenant(&self.db, &ctx).await?;
        let mut tx = self.db.begin(&tenant).await?;
        let version = (req.version != 0).then_some(req.version);
        let row = store::public_key(&mut tx, &req.key_name, version).await?;
        tx.commit().await?;
        let (version, public_key) = row.ok_or(VaultError::SigningKeyVersionNotFound)?;
        Ok(Response::new(pb::GetPublicKeyResponse {
            public_key,
            key_version: version as u32,
            algorithm: "Ed25519".into(),
        }))
    }

    async fn rotate_signing_key(
        &self,
        request: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::RotateSigningKeyResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let name = request.into_inner().key_name;
        check_name(&name)?;
        let tenant = api::tenant(&self.db, &ctx).await?;
        let mut tx = self.db.begin(&tenant).await?;
        let current = self.active(&mut tx, &name).await?;
        store::retire(&mut tx, &name, current.version).await?;
        let next = current.version + 1;
        if !self.create(&mut tx, &name, next).await? {
            return Err(VaultError::ConcurrentRotation.into());
        }
        let fresh = self.active(&mut tx, &name).await?;
        tx.record(key_record(&ctx, "vault.signing_key.rotate", &name, Outcome::Success).detail("version", next))
            .await?;
        tx.commit().await?;
        Ok(Response::new(pb::RotateSigningKeyResponse {
            public_key: fresh.key.verifying_key().to_bytes().to_vec(),
            key_version: fresh.version,
        }))
    }
}
