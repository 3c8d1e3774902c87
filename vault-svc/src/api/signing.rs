//! `strongroom.vault.v1.SigningService`: per-tenant Ed25519 keys of the workloads. The private key
//! is sealed by the tenant key in the database and unsealed only in this process to sign
//! (`signing_keys.rs`); a key belongs to the workload its name starts with (`domain/signing.rs`).
//!
//! Nothing creates a key implicitly: `Sign` of a missing key is `NOT_FOUND`, and its owner (or the
//! operator) creates it with `CreateSigningKey`. Signatures are counted per tenant, key and caller,
//! and each minute's count is one audit record ([`crate::tally`]).

use ed25519_dalek::Signer;
use kit::access::RequestContext;
use kit::outbox::{AuditRecord, Outcome};
use kit::{ApiError, Db, Identity, Tenant};
use proto::vault::v1 as pb;
use tonic::{Request, Response, Status};

use super::{record, record_alone, workload};
use crate::domain::signing::{check_message, check_name, may_use};
use crate::error::VaultError;
use crate::keyring::Keyring;
use crate::signing_keys;
use crate::store::signing as store;
use crate::tally::Tally;

/// `strongroom.vault.v1.SigningService`.
#[derive(Debug, Clone)]
pub struct Signing {
    pub db: Db,
    pub keyring: Keyring,
    /// Signatures are audited as counts per key, caller and interval.
    pub tally: Tally,
}

/// The audit resource of signing key `name`.
fn resource(name: &str) -> String {
    format!("signing_key/{name}")
}

/// The audit record of `action` on signing key `name` by the calling workload.
fn key_record(ctx: &RequestContext, action: &str, name: &str, outcome: Outcome) -> AuditRecord {
    record(ctx, workload(ctx), action, &resource(name), outcome)
}

impl Signing {
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
        if may_use(caller, name, operator_too) {
            return Ok(());
        }
        let refused = key_record(ctx, action, name, Outcome::Denied).detail("refused", "key_of_another_workload");
        record_alone(&self.db, tenant, refused).await?;
        kit::metrics::Metrics::global().event("signature_refused");
        Err(VaultError::SigningKeyOfAnotherWorkload { caller: caller.to_owned(), key: name.to_owned() }.into())
    }
}

#[tonic::async_trait]
impl pb::signing_service_server::SigningService for Signing {
    async fn sign(&self, request: Request<pb::SignRequest>) -> Result<Response<pb::SignResponse>, Status> {
        const ACTION: &str = "vault.signing_key.sign";
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        check_name(&req.key_name)?;
        check_message(&req.message)?;
        // While a terminated tenant's export is under way, audit-svc signs its final checkpoint
        // and the manifest, and ledger-svc its last receipts (each only with its own keys).
        let exporter = if ctx.caller.identity.name() == Identity::LEDGER { Identity::LEDGER } else { Identity::AUDIT };
        let tenant = super::tenant_for_export(&self.db, &ctx, exporter).await?;
        self.require_owner(&ctx, &tenant, &req.key_name, ACTION, false).await?;
        let mut tx = self.db.begin(&tenant).await?;
        let active = signing_keys::active(&self.keyring, &mut tx, &req.key_name).await?;
        tx.commit().await?;
        let signature = active.key.sign(&req.message);
        self.tally.count(&tenant, ACTION, &resource(&req.key_name), ctx.caller.identity.name(), 1);
        Ok(Response::new(pb::SignResponse {
            signature: signature.to_bytes().to_vec(),
            key_version: active.version,
            public_key: active.public_key(),
        }))
    }

    async fn create_signing_key(
        &self,
        request: Request<pb::CreateSigningKeyRequest>,
    ) -> Result<Response<pb::CreateSigningKeyResponse>, Status> {
        const ACTION: &str = "vault.signing_key.create";
        let ctx = RequestContext::of(&request)?;
        let name = request.into_inner().key_name;
        check_name(&name)?;
        let tenant = super::tenant(&self.db, &ctx).await?;
        self.require_owner(&ctx, &tenant, &name, ACTION, true).await?;
        let mut tx = self.db.begin(&tenant).await?;
        let (active, created) = signing_keys::ensure(&self.keyring, &mut tx, &name).await?;
        if created {
            tx.record(key_record(&ctx, ACTION, &name, Outcome::Success).detail("version", active.version)).await?;
        }
        tx.commit().await?;
        Ok(Response::new(pb::CreateSigningKeyResponse {
            public_key: active.public_key(),
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
        // Public keys go into a terminated tenant's bundle too: ledger-svc's receipt keys.
        let exporter = if ctx.caller.identity.name() == Identity::AUDIT { Identity::AUDIT } else { Identity::LEDGER };
        let tenant = super::tenant_for_export(&self.db, &ctx, exporter).await?;
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
        let tenant = super::tenant(&self.db, &ctx).await?;
        let mut tx = self.db.begin(&tenant).await?;
        let fresh = signing_keys::rotate(&self.keyring, &mut tx, &name).await?;
        let rotated = key_record(&ctx, "vault.signing_key.rotate", &name, Outcome::Success);
        tx.record(rotated.detail("version", fresh.version)).await?;
        tx.commit().await?;
        Ok(Response::new(pb::RotateSigningKeyResponse { public_key: fresh.public_key(), key_version: fresh.version }))
    }
}
