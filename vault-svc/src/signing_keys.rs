//! Workload signing keys over the keyring (ed25519-dalek): a new version is generated and its
//! private half sealed under the active tenant key; the active version is unsealed only in this
//! process, to sign. Who may use a key and the audit of its use are the adapter's
//! (`api/signing.rs`); the rules are in `domain/signing.rs`, the SQL in `store/signing.rs`.

use ed25519_dalek::SigningKey;
use kit::{ApiError, TenantTx};

use crate::domain::crypto::Key256;
use crate::domain::signing::seal_aad;
use crate::error::VaultError;
use crate::keyring::Keyring;
use crate::store::signing as store;

/// The active version of a signing key, unsealed.
pub struct ActiveSigningKey {
    /// Which version of the key is active.
    pub version: u32,
    /// Its private half, unsealed.
    pub key: SigningKey,
}

impl ActiveSigningKey {
    /// The public half, as the API sends it.
    pub fn public_key(&self) -> Vec<u8> {
        self.key.verifying_key().to_bytes().to_vec()
    }
}

/// Creates version `version` of `name`, sealed under the active tenant key; returns whether it was
/// created (false: that version exists).
pub async fn create(keyring: &Keyring, tx: &mut TenantTx, name: &str, version: u32) -> Result<bool, ApiError> {
    let (tkv, tenant_key) = keyring.active(tx).await?;
    let seed = Key256::generate().map_err(|e| ApiError::internal(&e))?;
    let public = SigningKey::from_bytes(seed.expose()).verifying_key().to_bytes();
    let sealed = Keyring::seal_key(&tenant_key, &seal_aad(tx.tenant().id.0, name, version), &seed)?;
    let key =
        store::NewSigningKey { name, version, public_key: &public, tenant_key_version: tkv, sealed_private: &sealed };
    store::insert(tx, &key).await
}

/// The active version of `name`; `SIGNING_KEY_NOT_FOUND` when the key was never created.
pub async fn active(keyring: &Keyring, tx: &mut TenantTx, name: &str) -> Result<ActiveSigningKey, ApiError> {
    let Some(row) = store::active(tx, name).await? else {
        // Rotated away but never replaced, or never created.
        let any = store::exists(tx, name).await?;
        return Err(if any { VaultError::KeyDestroyed } else { VaultError::SigningKeyNotFound }.into());
    };
    let version = row.version as u32;
    let tenant_key = keyring.version(tx, row.tenant_key_version as u32).await?;
    let seed = Keyring::open_key(&tenant_key, &seal_aad(tx.tenant().id.0, name, version), &row.wrapped_private)?;
    Ok(ActiveSigningKey { version, key: SigningKey::from_bytes(seed.expose()) })
}

/// The active version of `name`, created as version 1 if `name` never existed; and whether it was
/// created now. A key once created and since destroyed is not created again.
pub async fn ensure(keyring: &Keyring, tx: &mut TenantTx, name: &str) -> Result<(ActiveSigningKey, bool), ApiError> {
    let any = store::exists(tx, name).await?;
    let created = !any && create(keyring, tx, name, 1).await?;
    Ok((active(keyring, tx, name).await?, created))
}

/// Retires the active version of `name` (it still verifies) and makes the next one active.
pub async fn rotate(keyring: &Keyring, tx: &mut TenantTx, name: &str) -> Result<ActiveSigningKey, ApiError> {
    let current = active(keyring, tx, name).await?;
    store::retire(tx, name, current.version).await?;
    if !create(keyring, tx, name, current.version + 1).await? {
        return Err(VaultError::ConcurrentRotation.into());
    }
    active(keyring, tx, name).await
}
