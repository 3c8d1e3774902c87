//! `strongroom.vault.v1.TransitService`: encryption for internal services, each ciphertext bound
//! to its tenant, the calling workload, its context and (for crypto-shreddable data) its subject.
//! The hot path touches no database while the keys are cached; decrypts are audited as counts.

use std::collections::HashMap;

use kit::{ApiError, Db, Tenant};
use proto::vault::v1 as pb;
use tonic::{Request, Response, Status};

use crate::domain::crypto::{Aad, Key256};
use crate::domain::envelope::{Envelope, EnvelopeError, KeyKind};
use crate::error::{KEY_NOT_FOUND, VaultError};
use crate::keyring::Keyring;
use crate::signals::Operation;
use crate::tally::Tally;

/// Largest transit plaintext.
pub const MAX_TRANSIT_BYTES: usize = 1024 * 1024;
/// Most items of a batch call.
pub const MAX_BATCH: usize = 1000;

fn envelope_error(e: EnvelopeError) -> ApiError {
    match e {
        EnvelopeError::Malformed | EnvelopeError::Unsupported => VaultError::MalformedCiphertext.into(),
        EnvelopeError::Crypto(_) => VaultError::DecryptionFailed.into(),
    }
}

/// `strongroom.vault.v1.TransitService`.
#[derive(Debug, Clone)]
pub struct Transit {
    pub db: Db,
    pub keyring: Keyring,
    /// Decrypts are audited as counts per caller, context and interval.
    pub tally: Tally,
}

/// The audit resource of transit decrypts under `context` (and `subject`): the context's names
/// only, never its values (which may name a person, and an unkeyed hash of a guessable value
/// would confirm it), so decrypts count together per kind of context.
fn decrypt_resource(context: &HashMap<String, String>, subject: &str) -> String {
    let mut names: Vec<&str> = context.keys().map(String::as_str).collect();
    names.sort_unstable();
    let subject = if subject.is_empty() { "" } else { ";subject" };
    let names: String = names.join(",").chars().take(200).collect();
    format!("transit/context:{names}{subject}")
}

fn transit_aad(tenant: &Tenant, caller: &str, subject: &str, context: &HashMap<String, String>) -> Aad {
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

fn check_context(context: &HashMap<String, String>) -> Result<(), ApiError> {
    if context.len() > 32 || context.iter().any(|(k, v)| k.len() > 128 || v.len() > 1024) {
        return Err(ApiError::invalid_field("context", "at most 32 entries, keys ≤ 128 and values ≤ 1024 bytes"));
    }
    Ok(())
}

impl Transit {
    /// A transaction only when a key is not cached: the hot path touches no database.
    async fn active_key(&self, tenant: &Tenant) -> Result<(u32, Key256), ApiError> {
        if let Some(hit) = self.keyring.active_cached(tenant.id.0) {
            return Ok(hit);
        }
        let mut tx = self.db.begin(tenant).await?;
        let key = self.keyring.active(&mut tx).await?;
        tx.commit().await?;
        Ok(key)
    }

    async fn key(&self, tenant: &Tenant, version: u32) -> Result<Key256, ApiError> {
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
        Operation::Encrypt.done();
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
        let foreign = || ApiError::from(VaultError::DecryptionFailed);
        let key = match (envelope.kind, item.subject.is_empty()) {
            // A version this tenant never had means the ciphertext is not this tenant's.
            (KeyKind::Tenant, true) => self
                .key(tenant, envelope.key_version)
                .await
                .map_err(|e| if e.reason == KEY_NOT_FOUND { foreign() } else { e })?,
            (KeyKind::Subject, false) => {
                let mut tx = self.db.begin(tenant).await?;
                let key = self.keyring.subject_key_version(&mut tx, &item.subject, envelope.key_version).await?;
                tx.commit().await?;
                key
            }
            _ => return Err(foreign()),
        };
        let plaintext =
            envelope.open(&key, &transit_aad(tenant, caller, &item.subject, &item.context)).map_err(envelope_error)?;
        Operation::Decrypt.done();
        Ok(plaintext)
    }
}

fn check_batch(items: usize) -> Result<(), ApiError> {
    if items > MAX_BATCH {
        return Err(ApiError::invalid_field("items", "at most 1000"));
    }
    Ok(())
}

/// A batch item's refusal, as the batch response carries it.
fn item_error(e: ApiError) -> pb::ItemError {
    pb::ItemError { code: e.code.as_str().to_owned(), reason: e.reason.to_string(), message: e.message }
}

#[tonic::async_trait]
impl pb::transit_service_server::TransitService for Transit {
    async fn encrypt(&self, request: Request<pb::EncryptRequest>) -> Result<Response<pb::EncryptResponse>, Status> {
        let (ctx, tenant) = super::call(&self.db, &request).await?;
        Ok(Response::new(self.encrypt_one(&tenant, ctx.caller.identity.name(), request.into_inner()).await?))
    }

    async fn decrypt(&self, request: Request<pb::DecryptRequest>) -> Result<Response<pb::DecryptResponse>, Status> {
        let (ctx, tenant) = super::call(&self.db, &request).await?;
        let req = request.get_ref();
        let plaintext = self.decrypt_one(&tenant, ctx.caller.identity.name(), req).await?;
        let resource = decrypt_resource(&req.context, &req.subject);
        self.tally.count(&tenant, "vault.transit.decrypt", &resource, ctx.caller.identity.name(), 1);
        Ok(Response::new(pb::DecryptResponse { plaintext: plaintext.to_vec() }))
    }

    async fn rewrap(&self, request: Request<pb::RewrapRequest>) -> Result<Response<pb::RewrapResponse>, Status> {
        let (ctx, tenant) = super::call(&self.db, &request).await?;
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
        let (ctx, tenant) = super::call(&self.db, &request).await?;
        let dek = Key256::generate().map_err(|e| ApiError::internal(&e))?;
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
        let (ctx, tenant) = super::call(&self.db, &request).await?;
        let items = request.into_inner().items;
        check_batch(items.len())?;
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
        let (ctx, tenant) = super::call(&self.db, &request).await?;
        let items = request.into_inner().items;
        check_batch(items.len())?;
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
