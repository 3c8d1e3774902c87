//! `strongroom.vault.v1.KeyManagementService`: rotation, rewrap, retirement and crypto-shredding
//! of a tenant's keys (operator only). Every change is audited in its own transaction and, where
//! keys change, every replica is told to drop its cached keys.

use kit::access::RequestContext;
use kit::outbox::{AuditRecord, Outcome};
use kit::time::opt_to_pb;
use kit::{ApiError, Db, Tenant, TenantTx};
use proto::vault::v1 as pb;
use tonic::{Request, Response, Status};

use crate::api::{self, request_id, workload};
use crate::domain::envelope::Envelope;
use crate::error::VaultError;
use crate::keyring::{Keyring, subject_aad};
use crate::store::keys::{self as key_store, notify_key_change};
use crate::store::{self, Sealed};

#[derive(Debug, Clone)]
pub struct KeyManagement {
    pub db: Db,
    pub keyring: Keyring,
}

/// The audit record of `action`, done on `tenant`'s keys.
fn audit(ctx: &RequestContext, action: &str, tenant: &Tenant) -> AuditRecord {
    api::record(ctx, workload(ctx), action, &format!("tenant/{}", tenant.slug), Outcome::Success)
}

impl KeyManagement {
    /// One batch of rewrap: secret versions, subject keys and signing keys under older tenant keys
    /// move to the active one. Returns (secret versions, keys) moved.
    async fn rewrap_batch(&self, tx: &mut TenantTx, batch: i64) -> Result<(u64, u64), ApiError> {
        let (active, active_key) = self.keyring.active(tx).await?;
        let tenant = tx.tenant().clone();
        let (mut secrets, mut keys) = (0, 0);
        for what in Sealed::ALL {
            for row in store::sealed_under(tx, what, active, batch).await? {
                let resealed = match what {
                    Sealed::SecretVersions => {
                        let path = crate::domain::path::SecretPath::parse(&row.name)?;
                        let envelope = Envelope::decode(&row.sealed).map_err(|e| ApiError::internal(&e))?;
                        let old_key = self.keyring.version(tx, envelope.key_version).await?;
                        let aad = api::secrets::secret_aad(&tenant, &path, row.version as u32);
                        let moved =
                            envelope.rewrap(&old_key, &active_key, active, &aad).map_err(|e| ApiError::internal(&e))?;
                        secrets += 1;
                        moved.encode()
                    }
                    Sealed::SubjectKeys | Sealed::SigningKeys => {
                        let aad = if what == Sealed::SubjectKeys {
                            subject_aad(tenant.id.0, &row.name, row.version as u32)
                        } else {
                            crate::signing::seal_aad(tenant.id.0, &row.name, row.version as u32)
                        };
                        let old_key = self.keyring.version(tx, row.key_version as u32).await?;
                        let key = Keyring::open_key(&old_key, &aad, &row.sealed)?;
                        keys += 1;
                        Keyring::seal_key(&active_key, &aad, &key)?
                    }
                };
                store::reseal(tx, what, &row.name, row.version, &resealed, active).await?;
            }
        }
        Ok((secrets, keys))
    }
}

#[tonic::async_trait]
impl pb::key_management_service_server::KeyManagementService for KeyManagement {
    async fn rotate_tenant_key(
        &self,
        request: Request<pb::RotateTenantKeyRequest>,
    ) -> Result<Response<pb::RotateTenantKeyResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let request_id = request_id(&request.get_ref().request_id)?;
        let tenant = api::tenant(&self.db, &ctx).await?;
        let mut tx = self.db.begin(&tenant).await?;
        // A retried rotation must not rotate twice.
        if let Some(id) = request_id
            && let Some(previous) = store::replayed(&mut tx, id, "rotate_tenant_key", b"").await?
        {
            return Ok(Response::new(previous));
        }
        let version = self.keyring.rotate(&mut tx).await?;
        let resp = pb::RotateTenantKeyResponse {
            key: Some(pb::TenantKeyVersion {
                version,
                state: "active".into(),
                master_key_id: self.keyring.provider().key_id().to_owned(),
                create_time: opt_to_pb(Some(chrono::Utc::now())),
                destroy_time: None,
            }),
        };
        if let Some(id) = request_id {
            store::remember(&mut tx, id, "rotate_tenant_key", b"", &resp).await?;
        }
        tx.record(audit(&ctx, "vault.tenant_key.rotate", &tenant).detail("version", version)).await?;
        tx.commit().await?;
        self.keyring.invalidate(tenant.id.0);
        Ok(Response::new(resp))
    }

    async fn rotate_master_key(
        &self,
        request: Request<pb::RotateMasterKeyRequest>,
    ) -> Result<Response<pb::RotateMasterKeyResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let tenants = self.db.tenants().await?;
        let mut rewrapped = 0;
        for tenant in &tenants {
            let mut tx = self.db.begin(tenant).await?;
            let n = self.keyring.rewrap_under_current_master(&mut tx).await?;
            if n > 0 {
                tx.record(
                    audit(&ctx, "vault.master_key.rewrap", tenant)
                        .detail("tenant_keys", n)
                        .detail("master_key_id", self.keyring.provider().key_id()),
                )
                .await?;
            }
            tx.commit().await?;
            rewrapped += n;
        }
        tracing::info!(
            tenants = tenants.len(),
            rewrapped,
            master_key = self.keyring.provider().key_id(),
            "master key rotation done"
        );
        Ok(Response::new(pb::RotateMasterKeyResponse {
            tenants: tenants.len() as u32,
            tenant_keys_rewrapped: rewrapped,
            master_key_id: self.keyring.provider().key_id().to_owned(),
        }))
    }

    async fn rewrap_tenant(
        &self,
        request: Request<pb::RewrapTenantRequest>,
    ) -> Result<Response<pb::RewrapTenantResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let batch = match request.get_ref().batch_size {
            0 => 500,
            n @ 1..=10_000 => n,
            _ => return Err(ApiError::invalid_field("batch_size", "1–10000").into()),
        } as i64;
        let tenant = api::tenant(&self.db, &ctx).await?;
        let (mut secrets, mut subjects) = (0u64, 0u64);
        // Each batch commits on its own: a run killed in the middle keeps its progress, and the
        // next run continues with what is left.
        loop {
            let mut tx = self.db.begin(&tenant).await?;
            let (s, k) = self.rewrap_batch(&mut tx, batch).await?;
            if s + k > 0 {
                tx.record(
                    audit(&ctx, "vault.tenant.rewrap_batch", &tenant)
                        .detail("stored_versions_moved", s)
                        .detail("subject_keys_moved", k),
                )
                .await?;
            }
            tx.commit().await?;
            secrets += s;
            subjects += k;
            if s + k == 0 {
                break;
            }
        }
        let mut tx = self.db.begin(&tenant).await?;
        let (active, _) = self.keyring.active(&mut tx).await?;
        let remaining = store::left_under(&mut tx, active).await?;
        tx.commit().await?;
        Ok(Response::new(pb::RewrapTenantResponse {
            active_version: active,
            secret_versions_rewrapped: secrets,
            subject_keys_rewrapped: subjects,
            remaining,
        }))
    }

    async fn retire_tenant_keys(
        &self,
        request: Request<pb::RetireTenantKeysRequest>,
    ) -> Result<Response<pb::RetireTenantKeysResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let tenant = api::tenant(&self.db, &ctx).await?;
        let mut tx = self.db.begin(&tenant).await?;
        let (active, _) = self.keyring.active(&mut tx).await?;
        let remaining = store::left_under(&mut tx, active).await?;
        if remaining > 0 {
            return Err(VaultError::RewrapIncomplete { remaining }.into());
        }
        let retired = key_store::retire_tenant_keys_below(&mut tx, active).await?;
        let mut retired: Vec<u32> = retired.into_iter().map(|v| v as u32).collect();
        retired.sort_unstable();
        if !retired.is_empty() {
            notify_key_change(&mut tx).await?;
            tx.record(audit(&ctx, "vault.tenant_key.retire", &tenant).detail("versions", retired.clone())).await?;
        }
        tx.commit().await?;
        self.keyring.invalidate(tenant.id.0);
        Ok(Response::new(pb::RetireTenantKeysResponse { retired }))
    }

    async fn list_tenant_keys(
        &self,
        request: Request<pb::ListTenantKeysRequest>,
    ) -> Result<Response<pb::ListTenantKeysResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let tenant = api::tenant(&self.db, &ctx).await?;
        let mut tx = self.db.begin(&tenant).await?;
        let rows = key_store::tenant_keys(&mut tx).await?;
        tx.commit().await?;
        Ok(Response::new(pb::ListTenantKeysResponse {
            keys: rows
                .into_iter()
                .map(|r| pb::TenantKeyVersion {
                    version: r.version as u32,
                    state: r.state,
                    master_key_id: r.master_key_id,
                    create_time: opt_to_pb(Some(r.created_at)),
                    destroy_time: opt_to_pb(r.destroyed_at),
                })
                .collect(),
        }))
    }

    async fn shred_subject(
        &self,
        request: Request<pb::ShredSubjectRequest>,
    ) -> Result<Response<pb::ShredSubjectResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let subject = request.get_ref().subject.clone();
        if subject.is_empty() || subject.chars().count() > 128 {
            return Err(ApiError::invalid_field("subject", "1–128 characters").into());
        }
        let tenant = api::tenant(&self.db, &ctx).await?;
        let mut tx = self.db.begin(&tenant).await?;
        let destroyed = key_store::destroy_subject_keys(&mut tx, &subject).await? as u32;
        // The subject id may be personal data: the audit trail keeps only a digest of it.
        let digest = {
            use sha2::Digest;
            hex::encode(&sha2::Sha256::digest(subject.as_bytes())[..8])
        };
        tx.record(
            audit(&ctx, "vault.subject.shred", &tenant)
                .detail("subject_digest", digest)
                .detail("destroyed_versions", destroyed),
        )
        .await?;
        tx.commit().await?;
        Ok(Response::new(pb::ShredSubjectResponse { destroyed_versions: destroyed }))
    }

    async fn shred_tenant(
        &self,
        request: Request<pb::ShredTenantRequest>,
    ) -> Result<Response<pb::ShredTenantResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let tenant = api::tenant(&self.db, &ctx).await?;
        if request.get_ref().confirm_slug != tenant.slug.as_str() {
            return Err(ApiError::invalid_field("confirm_slug", "must equal the tenant's slug").into());
        }
        let mut tx = self.db.begin(&tenant).await?;
        let destroyed = key_store::destroy_tenant_keys(&mut tx).await? as u32;
        notify_key_change(&mut tx).await?;
        tx.record(audit(&ctx, "vault.tenant.shred", &tenant).detail("destroyed_versions", destroyed)).await?;
        tx.commit().await?;
        self.keyring.invalidate(tenant.id.0);
        Ok(Response::new(pb::ShredTenantResponse { destroyed_versions: destroyed }))
    }
}
