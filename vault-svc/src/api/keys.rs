//! `strongroom.vault.v1.KeyManagementService`: rotation, rewrap, retirement and crypto-shredding
//! of a tenant's keys (operator only; auth-svc may shred a subject; the gateway, for a privacy
//! officer, may describe one). Every change is audited in
//! its own transaction and, where keys change, every replica is told to drop its cached keys. The
//! work that spans many rows and transactions is in `rotation.rs`.

use kit::access::RequestContext;
use kit::authz::Permission;
use kit::journal::{Erasure, Journal};
use kit::outbox::Outcome;
use kit::time::opt_to_pb;
use kit::{ApiError, Db, Identity};
use proto::vault::v1 as pb;
use tonic::{Request, Response, Status};

use super::{call, request_id, tenant_record};
use crate::domain::keys::{check_shred_confirmation, check_subject, rewrap_batch_size, subject_digest};
use crate::keyring::Keyring;
use crate::rotation;
use crate::signals::Operation;
use crate::store::{self, keys as key_store};

/// `strongroom.vault.v1.KeyManagementService`.
#[derive(Debug, Clone)]
pub struct KeyManagement {
    pub db: Db,
    pub keyring: Keyring,
    /// Where every shred is written before it commits (`service.erasure_journal`).
    pub journal: Option<Journal>,
}

impl KeyManagement {
    /// Journals `erasure` of `tenant` (when the deployment keeps a journal); call before the
    /// shred commits, and do not commit when it fails.
    async fn journal(&self, tenant: &kit::Tenant, erasure: Erasure) -> Result<(), ApiError> {
        if let Some(journal) = &self.journal {
            journal
                .append(tenant.id.0, tenant.slug.as_str(), erasure)
                .await
                .map_err(|e| kit::journal::unavailable(&e))?;
        }
        Ok(())
    }
}

/// Most secrets a subject's description lists.
const MAX_SUBJECT_SECRETS: i64 = 1_000;

/// A version of the tenant key, as the API shows it.
fn tenant_key_version(row: key_store::TenantKeyRow) -> pb::TenantKeyVersion {
    pb::TenantKeyVersion {
        version: row.version as u32,
        state: row.state,
        master_key_id: row.master_key_id,
        create_time: opt_to_pb(Some(row.created_at)),
        destroy_time: opt_to_pb(row.destroyed_at),
    }
}

#[tonic::async_trait]
impl pb::key_management_service_server::KeyManagementService for KeyManagement {
    async fn rotate_tenant_key(
        &self,
        request: Request<pb::RotateTenantKeyRequest>,
    ) -> Result<Response<pb::RotateTenantKeyResponse>, Status> {
        const OPERATION: &str = "rotate_tenant_key";
        let ctx = RequestContext::of(&request)?;
        let request_id = request_id(&request.get_ref().request_id)?;
        let tenant = super::tenant(&self.db, &ctx).await?;
        let mut tx = self.db.begin(&tenant).await?;
        // A retried rotation must not rotate twice.
        if let Some(id) = request_id
            && let Some(previous) = store::replayed(&mut tx, id, OPERATION, b"").await?
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
            store::remember(&mut tx, id, OPERATION, b"", &resp).await?;
        }
        tx.record(tenant_record(&ctx, "vault.tenant_key.rotate", &tenant).detail("version", version)).await?;
        tx.commit().await?;
        self.keyring.invalidate(tenant.id.0);
        Ok(Response::new(resp))
    }

    async fn rotate_master_key(
        &self,
        request: Request<pb::RotateMasterKeyRequest>,
    ) -> Result<Response<pb::RotateMasterKeyResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let (tenants, rewrapped) = rotation::rewrap_under_current_master(&self.db, &self.keyring, &ctx).await?;
        Ok(Response::new(pb::RotateMasterKeyResponse {
            tenants: tenants as u32,
            tenant_keys_rewrapped: rewrapped,
            master_key_id: self.keyring.provider().key_id().to_owned(),
        }))
    }

    async fn rewrap_tenant(
        &self,
        request: Request<pb::RewrapTenantRequest>,
    ) -> Result<Response<pb::RewrapTenantResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let batch = rewrap_batch_size(request.get_ref().batch_size)?;
        let tenant = super::tenant(&self.db, &ctx).await?;
        let done = rotation::rewrap_tenant(&self.db, &self.keyring, &ctx, &tenant, batch).await?;
        Ok(Response::new(pb::RewrapTenantResponse {
            active_version: done.active_version,
            secret_versions_rewrapped: done.secret_versions,
            subject_keys_rewrapped: done.keys,
            remaining: done.remaining,
        }))
    }

    async fn retire_tenant_keys(
        &self,
        request: Request<pb::RetireTenantKeysRequest>,
    ) -> Result<Response<pb::RetireTenantKeysResponse>, Status> {
        let (ctx, tenant) = call(&self.db, &request).await?;
        let mut tx = self.db.begin(&tenant).await?;
        let retired = rotation::retire_old_versions(&self.keyring, &ctx, &mut tx).await?;
        tx.commit().await?;
        self.keyring.invalidate(tenant.id.0);
        Ok(Response::new(pb::RetireTenantKeysResponse { retired }))
    }

    async fn list_tenant_keys(
        &self,
        request: Request<pb::ListTenantKeysRequest>,
    ) -> Result<Response<pb::ListTenantKeysResponse>, Status> {
        let (_, tenant) = call(&self.db, &request).await?;
        let mut tx = self.db.begin(&tenant).await?;
        let rows = key_store::tenant_keys(&mut tx).await?;
        tx.commit().await?;
        Ok(Response::new(pb::ListTenantKeysResponse { keys: rows.into_iter().map(tenant_key_version).collect() }))
    }

    async fn shred_subject(
        &self,
        request: Request<pb::ShredSubjectRequest>,
    ) -> Result<Response<pb::ShredSubjectResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let subject = &request.get_ref().subject;
        check_subject(subject)?;
        let tenant = super::tenant(&self.db, &ctx).await?;
        let mut tx = self.db.begin(&tenant).await?;
        let destroyed = key_store::destroy_subject_keys(&mut tx, subject).await? as u32;
        let shredded =
            tenant_record(&ctx, "vault.subject.shred", &tenant).detail("subject_digest", subject_digest(subject));
        tx.record(shredded.detail("destroyed_versions", destroyed)).await?;
        // Journaled (even when nothing was left to destroy) so that no restore brings it back.
        self.journal(&tenant, Erasure::SubjectShred { subject_sha256: kit::journal::subject_sha256(subject) }).await?;
        tx.commit().await?;
        Operation::Shred.done();
        Ok(Response::new(pb::ShredSubjectResponse { destroyed_versions: destroyed }))
    }

    async fn describe_subject(
        &self,
        request: Request<pb::DescribeSubjectRequest>,
    ) -> Result<Response<pb::DescribeSubjectResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let tenant = if ctx.principal.is_none() && ctx.caller.identity.name() == Identity::OPERATOR {
            super::tenant(&self.db, &ctx).await?
        } else {
            kit::authz::authorize(&self.db, &ctx, Permission::PrivacyRequestsWrite).await?.tenant
        };
        let req = request.get_ref();
        check_subject(&req.subject)?;
        let privacy_request = super::request_id(&req.privacy_request_id)
            .map_err(|_| ApiError::invalid_field("privacy_request_id", "must be a UUID"))?;
        let mut tx = self.db.begin(&tenant).await?;
        let keys = key_store::subject_key_versions(&mut tx, &req.subject).await?;
        let secrets = store::secrets::of_subject(&mut tx, &req.subject, MAX_SUBJECT_SECRETS).await?;
        let mut record = super::record(
            &ctx,
            super::actor(&ctx),
            "vault.subject.describe",
            &format!("tenant/{}", tenant.slug),
            Outcome::Success,
        )
        .detail("subject_digest", subject_digest(&req.subject))
        .detail("labelled_paths", secrets.len());
        if let Some(id) = privacy_request {
            record = record.detail("privacy_request_id", id.to_string());
        }
        tx.record(record).await?;
        tx.commit().await?;
        Ok(Response::new(pb::DescribeSubjectResponse {
            keys: keys
                .into_iter()
                .map(|k| pb::SubjectKeyVersion {
                    version: k.version as u32,
                    state: k.state,
                    create_time: opt_to_pb(Some(k.created_at)),
                    destroy_time: opt_to_pb(k.destroyed_at),
                })
                .collect(),
            secrets: secrets
                .into_iter()
                .map(|s| pb::SubjectSecret {
                    path: s.path,
                    current_version: s.current_version as u32,
                    labels: s.labels.into_iter().collect(),
                    create_time: opt_to_pb(Some(s.created_at)),
                    update_time: opt_to_pb(Some(s.updated_at)),
                    delete_time: opt_to_pb(s.deleted_at),
                })
                .collect(),
        }))
    }

    async fn shred_tenant(
        &self,
        request: Request<pb::ShredTenantRequest>,
    ) -> Result<Response<pb::ShredTenantResponse>, Status> {
        let (ctx, tenant) = call(&self.db, &request).await?;
        check_shred_confirmation(&request.get_ref().confirm_slug, tenant.slug.as_str())?;
        let mut tx = self.db.begin(&tenant).await?;
        let destroyed = key_store::destroy_tenant_keys(&mut tx).await? as u32;
        key_store::notify_key_change(&mut tx).await?;
        tx.record(tenant_record(&ctx, "vault.tenant.shred", &tenant).detail("destroyed_versions", destroyed)).await?;
        self.journal(&tenant, Erasure::TenantShred).await?;
        tx.commit().await?;
        self.keyring.invalidate(tenant.id.0);
        Operation::Shred.done();
        Ok(Response::new(pb::ShredTenantResponse { destroyed_versions: destroyed }))
    }
}
