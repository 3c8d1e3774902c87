//! TOTP (RFC 6238: SHA-1, 6 digits, 30 s steps, ±1 step) with replay protection, and backup
//! codes. Seeds are sealed by vault-svc transit under the user's subject key, so deleting the
//! user (shredding that key) makes the seed unreadable. The last accepted step is stored; that
//! step and older ones are refused.

use std::collections::HashMap;

use kit::ApiError;
use kit::client::Channel;
use kit::{Tenant, TenantTx};
use proto::vault::v1 as vault;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};
use zeroize::Zeroizing;

use crate::error::AuthError;

pub const STEP_SECS: u64 = 30;
pub const BACKUP_CODES: usize = 10;
const BACKUP_ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";

fn context() -> HashMap<String, String> {
    HashMap::from([("purpose".to_owned(), "totp-seed".to_owned())])
}

fn vault_error(s: tonic::Status) -> ApiError {
    tracing::error!(code = ?s.code(), message = %s.message(), "vault-svc call failed");
    match s.code() {
        tonic::Code::FailedPrecondition | tonic::Code::NotFound => AuthError::MfaUnavailable.into(),
        _ => AuthError::VaultUnavailable.into(),
    }
}

/// Seals a new seed under the user's subject key.
pub async fn seal(vault: &Channel, tenant: &Tenant, user: uuid::Uuid, seed: &[u8]) -> Result<String, ApiError> {
    let req = vault::EncryptRequest {
        plaintext: seed.to_vec(),
        context: context(),
        subject: user.to_string(),
        ..Default::default()
    };
    let req = kit::client::with_context(tonic::Request::new(req), Some(tenant.slug.as_str()), None, None);
    let mut client = vault::transit_service_client::TransitServiceClient::new(vault.clone());
    Ok(client.encrypt(req).await.map_err(vault_error)?.into_inner().ciphertext)
}

pub async fn unseal(
    vault: &Channel,
    tenant: &Tenant,
    user: uuid::Uuid,
    sealed: &str,
) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let req = vault::DecryptRequest { ciphertext: sealed.to_owned(), context: context(), subject: user.to_string() };
    let req = kit::client::with_context(tonic::Request::new(req), Some(tenant.slug.as_str()), None, None);
    let mut client = vault::transit_service_client::TransitServiceClient::new(vault.clone());
    Ok(Zeroizing::new(client.decrypt(req).await.map_err(vault_error)?.into_inner().plaintext))
}

fn totp(seed: &[u8], issuer: &str, account: &str) -> Result<TOTP, ApiError> {
    TOTP::new(Algorithm::SHA1, 6, 1, STEP_SECS, seed.to_vec(), Some(issuer.to_owned()), account.to_owned())
        .map_err(|e| ApiError::internal(&e))
}

/// A new 160-bit seed.
pub fn new_seed() -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let mut seed = Zeroizing::new(vec![0u8; 20]);
    getrandom::fill(seed.as_mut_slice()).map_err(|e| ApiError::internal(&e))?;
    Ok(seed)
}

/// The `otpauth://` URI and the base32 secret for an authenticator app.
pub fn provisioning(seed: &[u8], issuer: &str, account: &str) -> Result<(String, String), ApiError> {
    let t = totp(seed, issuer, account)?;
    Ok((t.get_url(), t.get_secret_base32()))
}

/// The step `code` matches among the previous, current and next step, if it is newer than
/// `last_step`.
pub fn accept(seed: &[u8], code: &str, last_step: i64, now: u64) -> Result<Option<i64>, ApiError> {
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let t = totp(seed, "strongroom", "user")?;
    let current = now / STEP_SECS;
    let mut found = None;
    for step in [current.saturating_sub(1), current, current + 1] {
        let expected = t.generate(step * STEP_SECS);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            found = Some(step as i64);
        }
    }
    Ok(found.filter(|s| *s > last_step))
}

/// Ten new backup codes (`xxxxx-xxxxx`, 50 bits each) and their stored hashes.
pub fn new_backup_codes(user: uuid::Uuid) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
    let mut out = Vec::with_capacity(BACKUP_CODES);
    for _ in 0..BACKUP_CODES {
        let mut raw = [0u8; 10];
        getrandom::fill(&mut raw).map_err(|e| ApiError::internal(&e))?;
        let chars: String = raw.iter().map(|b| BACKUP_ALPHABET[(b & 31) as usize] as char).collect();
        let code = format!("{}-{}", &chars[..5], &chars[5..]);
        let hash = backup_hash(user, &code);
        out.push((code, hash));
    }
    Ok(out)
}

pub fn backup_hash(user: uuid::Uuid, code: &str) -> Vec<u8> {
    let normalized: String = code.trim().to_ascii_lowercase().chars().filter(|c| *c != '-' && *c != ' ').collect();
    let mut h = Sha256::new();
    h.update(b"strongroom.backup-code.v1\0");
    h.update(user.as_bytes());
    h.update(normalized.as_bytes());
    h.finalize().to_vec()
}

/// Spends a backup code; true when it was valid and unused.
pub async fn spend_backup_code(tx: &mut TenantTx, user: uuid::Uuid, code: &str) -> Result<bool, ApiError> {
    crate::store::mfa::spend_backup_code(tx, user, &backup_hash(user, code)).await
}

/// The current Unix time.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vector() {
        // RFC 6238 appendix B, SHA-1, T = 59 s: 94287082 (8 digits); the 6-digit code is 287082.
        let seed = b"12345678901234567890";
        assert_eq!(accept(seed, "287082", -1, 59).expect("totp"), Some(1));
    }

    #[test]
    fn a_step_once_accepted_is_refused_again() {
        let seed = b"12345678901234567890";
        let step = accept(seed, "287082", -1, 59).expect("totp").expect("accepted");
        assert_eq!(accept(seed, "287082", step, 59).expect("totp"), None);
        assert_eq!(accept(seed, "000000", -1, 59).expect("totp"), None);
        assert_eq!(accept(seed, "28708", -1, 59).expect("totp"), None);
    }

    #[test]
    fn backup_codes_hash_normalized() {
        let user = uuid::Uuid::now_v7();
        let codes = new_backup_codes(user).expect("codes");
        assert_eq!(codes.len(), 10);
        let (code, hash) = &codes[0];
        assert_eq!(&backup_hash(user, &code.to_uppercase()), hash);
        assert_ne!(&backup_hash(uuid::Uuid::now_v7(), code), hash);
    }
}
