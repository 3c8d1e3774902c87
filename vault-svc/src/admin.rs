//! `strongroom.vault.v1.KeyManagementService`: rotation, rewrap, retirement and crypto-shredding
//! of a tenant's keys (operator only). Every change is audited in its own transaction and, where
//! keys change, every replica is told to drop its cached keys.

use kit::access::RequestContext;
use kit::outbox::{Actor, AuditRecord, Outcome};
use kit::tenancy::db_error;
use kit::time::opt_to_pb;
use kit::{ApiError, Db, ErrorCode, Tenant, TenantTx};
use proto::vault::v1 as pb;
use tonic::{Request, Response, Status};

use crate::SERVICE;
use crate::domain::envelope::Envelope;
use crate::keyring::{Keyring, notify, subject_aad};

#[derive(Debug, Clone)]
pub struct KeyManagement {
    pub db: Db,
    pub keyring: Keyring,
}

fn audit(ctx: &RequestContext, action: &str, tenant: &Tenant) -> AuditRecord {
    AuditRecord::new(
        SERVICE,
        Actor::Service(ctx.caller.identity.name().to_owned()),
        action,
        &format!("tenant/{}", tenant.slug),
        Outcome::Success,
    )
    .request_id(ctx.request_id.clone())
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    version: i32,
    state: String,
    master_key_id: String,
    created_at: chrono::DateTime<chrono::Utc>,
    destroyed_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl KeyManagement {
    async fn tenant(&self, ctx: &RequestContext) -> Result<Tenant, ApiError> {
        self.db.authorize_tenant(&ctx.tenant_slug()?, ctx.principal.as_ref()).await
    }

    /// One batch of rewrap: secret versions and subject keys under older tenant keys move to the
    /// active one. Returns (secret versions, subject keys) moved. Rows are found by the key
    /// version they are sealed under (vault tenant migration 0004), in no particular order: an
    /// order by primary key made each batch step over every row the earlier ones had moved.
    async fn rewrap_batch(&self, tx: &mut TenantTx, batch: i64) -> Result<(u64, u64), ApiError> {
        let (active, active_key) = self.keyring.active(tx).await?;
        let rows: Vec<(String, i32, Vec<u8>)> = sqlx::query_as(
            "SELECT path, version, ciphertext FROM secret_versions WHERE key_version < $1 AND ciphertext IS NOT NULL \
             LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(active as i32)
        .bind(batch)
        .fetch_all(tx.conn())
        .await
        .map_err(db_error)?;
        let tenant = tx.tenant().clone();
        let mut secrets = 0;
        for (path, version, ciphertext) in rows {
            let path = crate::domain::path::SecretPath::parse(&path)?;
            let envelope = Envelope::decode(&ciphertext).map_err(|e| ApiError::internal(&e))?;
            let old_key = self.keyring.version(tx, envelope.key_version).await?;
            let aad = crate::api::secret_aad(&tenant, &path, version as u32);
            let moved = envelope.rewrap(&old_key, &active_key, active, &aad).map_err(|e| ApiError::internal(&e))?;
            sqlx::query(
                "UPDATE secret_versions SET ciphertext = $3, key_version = $4 WHERE path = $1 AND version = $2",
            )
            .bind(path.as_str())
            .bind(version)
            .bind(moved.encode())
            .bind(active as i32)
            .execute(tx.conn())
            .await
            .map_err(db_error)?;
            secrets += 1;
        }
        let subjects: Vec<(String, i32, i32, Vec<u8>)> = sqlx::query_as(
            "SELECT subject, version, tenant_key_version, wrapped FROM subject_keys \
             WHERE tenant_key_version < $1 AND wrapped IS NOT NULL LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(active as i32)
        .bind(batch)
        .fetch_all(tx.conn())
        .await
        .map_err(db_error)?;
        let mut moved_subjects = 0;
        for (subject, version, tkv, wrapped) in subjects {
            let old_key = self.keyring.version(tx, tkv as u32).await?;
            let aad = subject_aad(tenant.id.0, &subject, version as u32);
            let key = Keyring::open_key(&old_key, &aad, &wrapped)?;
            let resealed = Keyring::seal_key(&active_key, &aad, &key)?;
            sqlx::query(
                "UPDATE subject_keys SET wrapped = $3, tenant_key_version = $4 WHERE subject = $1 AND version = $2",
            )
            .bind(&subject)
            .bind(version)
            .bind(resealed)
            .bind(active as i32)
            .execute(tx.conn())
            .await
            .map_err(db_error)?;
            moved_subjects += 1;
        }
        // Signing keys, sealed by the tenant key like subject keys.
        let signing: Vec<(String, i32, i32, Vec<u8>)> = sqlx::query_as(
            "SELECT name, version, tenant_key_version, wrapped_private FROM signing_keys \
             WHERE tenant_key_version < $1 LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(active as i32)
        .bind(batch)
        .fetch_all(tx.conn())
        .await
        .map_err(db_error)?;
        for (name, version, tkv, sealed) in signing {
            let old_key = self.keyring.version(tx, tkv as u32).await?;
            let aad = crate::signing::seal_aad(tenant.id.0, &name, version as u32);
            let seed = Keyring::open_key(&old_key, &aad, &sealed)?;
            let resealed = Keyring::seal_key(&active_key, &aad, &seed)?;
            sqlx::query("UPDATE signing_keys SET wrapped_private = $3, tenant_key_version = $4 WHERE name = $1 AND version = $2")
                .bind(&name)
                .bind(version)
                .bind(resealed)
                .bind(active as i32)
                .execute(tx.conn())
                .await
                .map_err(db_error)?;
            moved_subjects += 1;
        }
        Ok((secrets, moved_subjects))
    }

    async fn remaining(&self, tx: &mut TenantTx, active: u32) -> Result<u64, ApiError> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM secret_versions WHERE key_version < $1 AND ciphertext IS NOT NULL) \
                  + (SELECT count(*) FROM subject_keys WHERE tenant_key_version < $1 AND wrapped IS NOT NULL) \
                  + (SELECT count(*) FROM signing_keys WHERE tenant_key_version < $1)",
        )
        .bind(active as i32)
        .fetch_one(tx.conn())
        .await
        .map_err(db_error)?;
        Ok(n as u64)
    }
}

#[tonic::async_trait]
impl pb::key_management_service_server::KeyManagementService for KeyManagement {
    async fn rotate_tenant_key(
        &self,
        request: Request<pb::RotateTenantKeyRequest>,
    ) -> Result<Response<pb::RotateTenantKeyResponse>, Status> {
        use prost::Message;
        let ctx = RequestContext::of(&request)?;
        let request_id = match request.get_ref().request_id.as_str() {
            "" => None,
            raw => {
                Some(uuid::Uuid::parse_str(raw).map_err(|_| ApiError::invalid_field("request_id", "must be a UUID"))?)
            }
        };
        let tenant = self.tenant(&ctx).await?;
        let mut tx = self.db.begin(&tenant).await?;
        // A retried rotation must not rotate twice.
        if let Some(id) = request_id
            && let Some(previous) = crate::store::idempotent_response(&mut tx, id, "rotate_tenant_key", b"").await?
        {
            return Ok(Response::new(
                pb::RotateTenantKeyResponse::decode(previous.as_slice()).map_err(|e| ApiError::internal(&e))?,
            ));
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
            crate::store::remember_response(&mut tx, id, "rotate_tenant_key", b"", &resp.encode_to_vec()).await?;
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
        let tenant = self.tenant(&ctx).await?;
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
        let remaining = self.remaining(&mut tx, active).await?;
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
        let tenant = self.tenant(&ctx).await?;
        let mut tx = self.db.begin(&tenant).await?;
        let (active, _) = self.keyring.active(&mut tx).await?;
        let remaining = self.remaining(&mut tx, active).await?;
        if remaining > 0 {
            return Err(ApiError::new(
                ErrorCode::FailedPrecondition,
                "REWRAP_INCOMPLETE",
                format!("{} stored items still use older key versions; run RewrapTenant first", remaining),
            )
            .into());
        }
        let retired: Vec<i32> = sqlx::query_scalar(
            "UPDATE tenant_keys SET state = 'destroyed', wrapped = NULL, destroyed_at = now() \
             WHERE state = 'decrypt_only' AND version < $1 RETURNING version",
        )
        .bind(active as i32)
        .fetch_all(tx.conn())
        .await
        .map_err(db_error)?;
        let mut retired: Vec<u32> = retired.into_iter().map(|v| v as u32).collect();
        retired.sort_unstable();
        if !retired.is_empty() {
            notify(&mut tx).await?;
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
        let tenant = self.tenant(&ctx).await?;
        let mut tx = self.db.begin(&tenant).await?;
        let rows: Vec<KeyRow> = sqlx::query_as(
            "SELECT version, state, master_key_id, created_at, destroyed_at FROM tenant_keys ORDER BY version",
        )
        .fetch_all(tx.conn())
        .await
        .map_err(db_error)?;
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
        let tenant = self.tenant(&ctx).await?;
        let mut tx = self.db.begin(&tenant).await?;
        let destroyed = sqlx::query(
            "UPDATE subject_keys SET state = 'destroyed', wrapped = NULL, destroyed_at = now() WHERE subject = $1 AND state <> 'destroyed'",
        )
        .bind(&subject)
        .execute(tx.conn())
        .await
        .map_err(db_error)?
        .rows_affected() as u32;
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
        let tenant = self.tenant(&ctx).await?;
        if request.get_ref().confirm_slug != tenant.slug.as_str() {
            return Err(ApiError::invalid_field("confirm_slug", "must equal the tenant's slug").into());
        }
        let mut tx = self.db.begin(&tenant).await?;
        let destroyed = sqlx::query(
            "UPDATE tenant_keys SET state = 'destroyed', wrapped = NULL, destroyed_at = now() WHERE state <> 'destroyed'",
        )
        .execute(tx.conn())
        .await
        .map_err(db_error)?
        .rows_affected() as u32;
        notify(&mut tx).await?;
        tx.record(audit(&ctx, "vault.tenant.shred", &tenant).detail("destroyed_versions", destroyed)).await?;
        tx.commit().await?;
        self.keyring.invalidate(tenant.id.0);
        Ok(Response::new(pb::ShredTenantResponse { destroyed_versions: destroyed }))
    }
}
