//! `strongroom.vault.v1.TransitService`: encryption for internal services, each ciphertext bound
//! to its tenant, the calling workload, its context and (for crypto-shreddable data) its subject
//! or (for data deleted by time) its retention class and period. The hot path touches no database
//! while the tenant key is cached; a call that needs subject or period keys looks each up once, all
//! in one transaction; decrypts are audited as counts.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use kit::{ApiError, Db, Identity, Tenant, TenantTx};
use proto::vault::v1 as pb;
use tonic::{Request, Response, Status};

use crate::domain::crypto::{Aad, Key256};
use crate::domain::envelope::{Envelope, EnvelopeError, KeyKind};
use crate::domain::retention::ClassName;
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

/// Associated data of a transit ciphertext. A period key's ciphertext is bound to its class and
/// key number too (the fields are appended, so the other kinds' ciphertexts keep theirs).
fn transit_aad(tenant: &Tenant, caller: &str, subject: &str, context: &HashMap<String, String>, key: &ItemKey) -> Aad {
    let aad = Aad::new("strongroom.vault.transit")
        .with("tenant", tenant.id.0.as_bytes())
        .with("caller", caller.as_bytes())
        .with("subject", subject.as_bytes())
        .with_context(context);
    match &key.class {
        Some(class) => aad.with("retention_class", class.as_bytes()).with("period_key", &key.version.to_be_bytes()),
        None => aad,
    }
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

/// A key one transit item is sealed or opened with.
#[derive(Debug, Clone)]
struct ItemKey {
    kind: KeyKind,
    /// The tenant or subject key's version, or the period key's number.
    version: u32,
    key: Key256,
    /// A period key's retention class.
    class: Option<String>,
}

/// Which key an item needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Want {
    ActiveTenant,
    Tenant(u32),
    ActiveSubject(String),
    Subject(String, u32),
    CurrentPeriod(ClassName),
    Period(u32),
}

/// The keys of one call, each looked up once: from the keyring's cache when it holds them, else
/// in one transaction of the call, opened on first need and committed by [`CallKeys::finish`]
/// before any result leaves. A batch of 500 users' fields under 500 subject keys costs one
/// transaction, not one per item; a key's refusal (a shredded subject) is remembered and given
/// to each item that needs that key.
struct CallKeys<'a> {
    transit: &'a Transit,
    tenant: &'a Tenant,
    now: DateTime<Utc>,
    tx: Option<TenantTx>,
    found: HashMap<Want, Result<ItemKey, ApiError>>,
}

impl<'a> CallKeys<'a> {
    fn new(transit: &'a Transit, tenant: &'a Tenant) -> Self {
        Self { transit, tenant, now: Utc::now(), tx: None, found: HashMap::new() }
    }

    async fn tx(&mut self) -> Result<&mut TenantTx, ApiError> {
        if self.tx.is_none() {
            self.tx = Some(self.transit.db.begin(self.tenant).await?);
        }
        self.tx.as_mut().ok_or_else(|| ApiError::internal(&"no transaction"))
    }

    async fn get(&mut self, want: Want) -> Result<ItemKey, ApiError> {
        if let Some(found) = self.found.get(&want) {
            return found.clone();
        }
        let found = self.look_up(&want).await;
        self.found.insert(want, found.clone());
        found
    }

    async fn look_up(&mut self, want: &Want) -> Result<ItemKey, ApiError> {
        let keyring = self.transit.keyring.clone();
        let tenant = self.tenant.id.0;
        let (kind, version, key) = match want {
            // The hot path: a cached tenant key needs no transaction.
            Want::ActiveTenant => match keyring.active_cached(tenant) {
                Some((version, key)) => (KeyKind::Tenant, version, key),
                None => {
                    let (version, key) = keyring.active(self.tx().await?).await?;
                    (KeyKind::Tenant, version, key)
                }
            },
            Want::Tenant(version) => match keyring.cached_version(tenant, *version) {
                Some(key) => (KeyKind::Tenant, *version, key),
                None => (KeyKind::Tenant, *version, keyring.version(self.tx().await?, *version).await?),
            },
            Want::ActiveSubject(subject) => {
                let (version, key) = keyring.subject_key(self.tx().await?, subject, true).await?;
                (KeyKind::Subject, version, key)
            }
            Want::Subject(subject, version) => {
                (KeyKind::Subject, *version, keyring.subject_key_version(self.tx().await?, subject, *version).await?)
            }
            Want::CurrentPeriod(class) => {
                let now = self.now;
                let p = keyring.current_period_key(self.tx().await?, class, now).await?;
                return Ok(ItemKey { kind: KeyKind::Period, version: p.number, key: p.key, class: Some(p.class) });
            }
            Want::Period(number) => {
                let p = keyring.period_key(self.tx().await?, *number).await?;
                return Ok(ItemKey { kind: KeyKind::Period, version: p.number, key: p.key, class: Some(p.class) });
            }
        };
        Ok(ItemKey { kind, version, key, class: None })
    }

    /// Commits what the call's transaction created (a first tenant, subject or period key): no
    /// ciphertext under a key that was never stored may leave.
    async fn finish(self) -> Result<(), ApiError> {
        match self.tx {
            Some(tx) => tx.commit().await,
            None => Ok(()),
        }
    }
}

impl Transit {
    async fn encrypt_item(
        &self,
        keys: &mut CallKeys<'_>,
        caller: &str,
        item: pb::EncryptRequest,
    ) -> Result<pb::EncryptResponse, ApiError> {
        if item.plaintext.len() > MAX_TRANSIT_BYTES {
            return Err(ApiError::invalid_field("plaintext", "at most 1 MiB"));
        }
        check_context(&item.context)?;
        check_subject(&item.subject)?;
        let want = match (item.subject.is_empty(), item.retention_class.is_empty()) {
            (true, true) => Want::ActiveTenant,
            (false, true) => Want::ActiveSubject(item.subject.clone()),
            (true, false) => Want::CurrentPeriod(ClassName::parse_field("retention_class", &item.retention_class)?),
            (false, false) => {
                return Err(ApiError::invalid_field("retention_class", "not together with subject"));
            }
        };
        let key = keys.get(want).await?;
        self.seal(keys.tenant, caller, &item, &key)
    }

    fn seal(
        &self,
        tenant: &Tenant,
        caller: &str,
        item: &pb::EncryptRequest,
        key: &ItemKey,
    ) -> Result<pb::EncryptResponse, ApiError> {
        let aad = transit_aad(tenant, caller, &item.subject, &item.context, key);
        let envelope = Envelope::seal(key.kind, key.version, &key.key, &aad, &item.plaintext)
            .map_err(|e| ApiError::internal(&e))?;
        Operation::Encrypt.done();
        Ok(pb::EncryptResponse { ciphertext: envelope.to_text(), key_version: key.version })
    }

    /// Opens one item; returns the plaintext and the key that opened it.
    async fn decrypt_item(
        &self,
        keys: &mut CallKeys<'_>,
        caller: &str,
        item: &pb::DecryptRequest,
    ) -> Result<(zeroize::Zeroizing<Vec<u8>>, ItemKey), ApiError> {
        check_context(&item.context)?;
        check_subject(&item.subject)?;
        let envelope = Envelope::from_text(&item.ciphertext).map_err(envelope_error)?;
        let foreign = || ApiError::from(VaultError::DecryptionFailed);
        let want = match (envelope.kind, item.subject.is_empty()) {
            (KeyKind::Tenant, true) => Want::Tenant(envelope.key_version),
            (KeyKind::Subject, false) => Want::Subject(item.subject.clone(), envelope.key_version),
            (KeyKind::Period, true) => Want::Period(envelope.key_version),
            _ => return Err(foreign()),
        };
        let key = keys.get(want).await.map_err(|e| {
            // A version this tenant never had means the ciphertext is not this tenant's.
            if envelope.kind == KeyKind::Tenant && e.reason == KEY_NOT_FOUND { foreign() } else { e }
        })?;
        let aad = transit_aad(keys.tenant, caller, &item.subject, &item.context, &key);
        let plaintext = envelope.open(&key.key, &aad).map_err(envelope_error)?;
        Operation::Decrypt.done();
        Ok((plaintext, key))
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
        let mut keys = CallKeys::new(self, &tenant);
        let sealed = self.encrypt_item(&mut keys, ctx.caller.identity.name(), request.into_inner()).await?;
        keys.finish().await?;
        Ok(Response::new(sealed))
    }

    async fn decrypt(&self, request: Request<pb::DecryptRequest>) -> Result<Response<pb::DecryptResponse>, Status> {
        // auth-svc opens a terminated tenant's personal fields for its part of the export.
        let (ctx, tenant) = super::call_for_export(&self.db, &request, Identity::AUTH).await?;
        let req = request.get_ref();
        let mut keys = CallKeys::new(self, &tenant);
        let (plaintext, _) = self.decrypt_item(&mut keys, ctx.caller.identity.name(), req).await?;
        keys.finish().await?;
        let resource = decrypt_resource(&req.context, &req.subject);
        self.tally.count(&tenant, "vault.transit.decrypt", &resource, ctx.caller.identity.name(), 1);
        Ok(Response::new(pb::DecryptResponse { plaintext: plaintext.to_vec() }))
    }

    async fn rewrap(&self, request: Request<pb::RewrapRequest>) -> Result<Response<pb::RewrapResponse>, Status> {
        let (ctx, tenant) = super::call(&self.db, &request).await?;
        let caller = ctx.caller.identity.name();
        let req = request.into_inner();
        let mut keys = CallKeys::new(self, &tenant);
        let opened = pb::DecryptRequest { ciphertext: req.ciphertext, context: req.context, subject: req.subject };
        let (plaintext, key) = self.decrypt_item(&mut keys, caller, &opened).await?;
        let item = pb::EncryptRequest {
            plaintext: plaintext.to_vec(),
            context: opened.context,
            subject: opened.subject,
            ..Default::default()
        };
        let out = match key.kind {
            // A retention class's data stays under its period's key: a rewrap must not extend
            // its retention (the period key itself moves with `RewrapTenant`).
            KeyKind::Period => self.seal(&tenant, caller, &item, &key)?,
            KeyKind::Tenant | KeyKind::Subject => self.encrypt_item(&mut keys, caller, item).await?,
        };
        keys.finish().await?;
        Ok(Response::new(pb::RewrapResponse { ciphertext: out.ciphertext, key_version: out.key_version }))
    }

    async fn generate_data_key(
        &self,
        request: Request<pb::GenerateDataKeyRequest>,
    ) -> Result<Response<pb::GenerateDataKeyResponse>, Status> {
        let (ctx, tenant) = super::call(&self.db, &request).await?;
        let dek = Key256::generate().map_err(|e| ApiError::internal(&e))?;
        let req = request.into_inner();
        let mut keys = CallKeys::new(self, &tenant);
        let item = pb::EncryptRequest {
            plaintext: dek.expose().to_vec(),
            context: req.context,
            subject: req.subject,
            ..Default::default()
        };
        let wrapped = self.encrypt_item(&mut keys, ctx.caller.identity.name(), item).await?;
        keys.finish().await?;
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
        let mut keys = CallKeys::new(self, &tenant);
        let mut results = Vec::with_capacity(items.len());
        for item in items {
            let result = match self.encrypt_item(&mut keys, ctx.caller.identity.name(), item).await {
                Ok(ok) => pb::encrypt_batch_result::Result::Ok(ok),
                Err(e) => pb::encrypt_batch_result::Result::Error(item_error(e)),
            };
            results.push(pb::EncryptBatchResult { result: Some(result) });
        }
        keys.finish().await?;
        Ok(Response::new(pb::EncryptBatchResponse { results }))
    }

    async fn decrypt_batch(
        &self,
        request: Request<pb::DecryptBatchRequest>,
    ) -> Result<Response<pb::DecryptBatchResponse>, Status> {
        // auth-svc opens a terminated tenant's personal fields for its part of the export.
        let (ctx, tenant) = super::call_for_export(&self.db, &request, Identity::AUTH).await?;
        let items = request.into_inner().items;
        check_batch(items.len())?;
        let mut keys = CallKeys::new(self, &tenant);
        let mut results = Vec::with_capacity(items.len());
        for item in &items {
            let result = match self.decrypt_item(&mut keys, ctx.caller.identity.name(), item).await {
                Ok((p, _)) => {
                    let resource = decrypt_resource(&item.context, &item.subject);
                    self.tally.count(&tenant, "vault.transit.decrypt", &resource, ctx.caller.identity.name(), 1);
                    pb::decrypt_batch_result::Result::Ok(pb::DecryptResponse { plaintext: p.to_vec() })
                }
                Err(e) => pb::decrypt_batch_result::Result::Error(item_error(e)),
            };
            results.push(pb::DecryptBatchResult { result: Some(result) });
        }
        keys.finish().await?;
        Ok(Response::new(pb::DecryptBatchResponse { results }))
    }
}
