//! The master key, behind [`KeyProvider`]. It wraps and unwraps tenant keys and never hands out
//! its own key material: with PKCS#11 the master key is a non-extractable key inside the token
//! and vault-svc only asks the token to encrypt and decrypt.

use std::path::Path;
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::{AuthPin, Ulong};
use secrecy::ExposeSecret;

use crate::config::KmsConfig;
use crate::domain::crypto::{Aad, CryptoError, Key256, NONCE_LEN};

#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    #[error("master key: {0}")]
    Setup(String),
    /// The wrapped key does not authenticate under the master key (tampered or foreign).
    #[error("wrapped key does not authenticate")]
    Unauthentic,
    #[error("key provider failed: {0}")]
    Provider(String),
}

/// Wraps and unwraps 256-bit keys under a master key it never reveals.
pub trait KeyProvider: Send + Sync + 'static {
    /// Names the master key; stored next to what it wrapped.
    fn key_id(&self) -> &str;
    /// `aad` must not be empty (SoftHSM mishandles empty GCM associated data).
    fn wrap(&self, aad: &[u8], key: &Key256) -> Result<Vec<u8>, KmsError>;
    fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<Key256, KmsError>;
}

/// Opens the configured provider. Blocking (it may talk to a token).
pub fn open(cfg: &KmsConfig) -> Result<Box<dyn KeyProvider>, KmsError> {
    match cfg {
        KmsConfig::Local { key_file, create } => Ok(Box::new(LocalKeyFile::open(key_file, *create)?)),
        KmsConfig::Pkcs11 { module, token_label, pin, key_label, create_key } => {
            Ok(Box::new(Pkcs11Provider::open(module, token_label, pin.expose_secret(), key_label, *create_key)?))
        }
    }
}

/// A master key in a local file: for development only.
pub struct LocalKeyFile {
    key: Key256,
    id: String,
}

impl LocalKeyFile {
    pub fn open(path: &Path, create: bool) -> Result<Self, KmsError> {
        if !path.exists() && create {
            let key = Key256::generate().map_err(|e| KmsError::Setup(e.to_string()))?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| KmsError::Setup(e.to_string()))?;
            }
            kit::pki::write_private(path, &hex::encode(key.expose())).map_err(|e| KmsError::Setup(e.to_string()))?;
        }
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| KmsError::Setup(format!("{}: {e}", path.display())))?,
        );
        let raw = zeroize::Zeroizing::new(
            hex::decode(text.trim()).map_err(|_| KmsError::Setup("key file is not hex".into()))?,
        );
        let key = Key256::from_slice(&raw).map_err(|_| KmsError::Setup("key file must hold 32 bytes".into()))?;
        tracing::warn!(file = %path.display(), "master key read from a local file: development only, never in production");
        // The id names the key by a short fingerprint, so two local keys are told apart.
        let fingerprint = {
            use sha2::Digest;
            hex::encode(
                &sha2::Sha256::digest(Aad::new("strongroom.vault.master-id").with("key", key.expose()).bytes())[..6],
            )
        };
        Ok(Self { key, id: format!("local:{fingerprint}") })
    }
}

impl KeyProvider for LocalKeyFile {
    fn key_id(&self) -> &str {
        &self.id
    }

    fn wrap(&self, aad: &[u8], key: &Key256) -> Result<Vec<u8>, KmsError> {
        let aad = Aad::new("strongroom.vault.master").with("aad", aad);
        let (nonce, ct) = self.key.seal(aad.bytes(), key.expose()).map_err(|e| KmsError::Provider(e.to_string()))?;
        Ok([nonce.as_slice(), &ct].concat())
    }

    fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<Key256, KmsError> {
        let aad = Aad::new("strongroom.vault.master").with("aad", aad);
        let (nonce, ct) = split_nonce(wrapped)?;
        let raw = self.key.open(&nonce, aad.bytes(), ct).map_err(|_| KmsError::Unauthentic)?;
        Key256::from_slice(&raw).map_err(|_| KmsError::Unauthentic)
    }
}

fn split_nonce(wrapped: &[u8]) -> Result<([u8; NONCE_LEN], &[u8]), KmsError> {
    if wrapped.len() < NONCE_LEN + 16 {
        return Err(KmsError::Unauthentic);
    }
    let (nonce, ct) = wrapped.split_at(NONCE_LEN);
    Ok((nonce.try_into().map_err(|_| KmsError::Unauthentic)?, ct))
}

/// The master key inside a PKCS#11 token, used through AES-256-GCM `C_Encrypt`/`C_Decrypt`.
pub struct Pkcs11Provider {
    _context: Pkcs11,
    /// A PKCS#11 session may not be used by two threads at once.
    session: Mutex<Session>,
    key: ObjectHandle,
    id: String,
}

fn p11(e: P11Error) -> KmsError {
    KmsError::Provider(e.to_string())
}

impl Pkcs11Provider {
    pub fn open(
        module: &Path,
        token_label: &str,
        pin: &str,
        key_label: &str,
        create_key: bool,
    ) -> Result<Self, KmsError> {
        let context = Pkcs11::new(module).map_err(|e| KmsError::Setup(format!("{}: {e}", module.display())))?;
        match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, Function::Initialize)) => {}
            Err(e) => return Err(KmsError::Setup(e.to_string())),
        }
        let mut slot = None;
        for s in context.get_slots_with_token().map_err(p11)? {
            // A token that cannot describe itself (another tenant's token being created or
            // removed in a shared store) is not ours; skip it rather than fail.
            match context.get_token_info(s) {
                Ok(info) if info.label() == token_label => {
                    slot = Some(s);
                    break;
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "skipping a PKCS#11 slot that does not answer"),
            }
        }
        let slot = slot.ok_or_else(|| KmsError::Setup(format!("no PKCS#11 token labelled {token_label:?}")))?;
        let session = context.open_rw_session(slot).map_err(p11)?;
        match session.login(UserType::User, Some(&AuthPin::new(pin.into()))) {
            Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, Function::Login)) => {}
            Err(e) => return Err(KmsError::Setup(format!("token login: {e}"))),
        }
        let template = [Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Label(key_label.as_bytes().to_vec())];
        let key = match session.find_objects(&template).map_err(p11)?.as_slice() {
            [key] => *key,
            [] if create_key => {
                let key = session
                    .generate_key(
                        &Mechanism::AesKeyGen,
                        &[
                            Attribute::Class(ObjectClass::SECRET_KEY),
                            Attribute::KeyType(KeyType::AES),
                            Attribute::ValueLen(Ulong::new(32)),
                            Attribute::Token(true),
                            Attribute::Private(true),
                            Attribute::Sensitive(true),
                            Attribute::Extractable(false),
                            Attribute::Encrypt(true),
                            Attribute::Decrypt(true),
                            Attribute::Label(key_label.as_bytes().to_vec()),
                        ],
                    )
                    .map_err(p11)?;
                tracing::info!(token = token_label, key = key_label, "master key generated inside the token");
                key
            }
            [] => return Err(KmsError::Setup(format!("no key labelled {key_label:?} in token {token_label:?}"))),
            _ => return Err(KmsError::Setup(format!("several keys labelled {key_label:?}"))),
        };
        let provider = Self {
            _context: context,
            session: Mutex::new(session),
            key,
            id: format!("pkcs11:{token_label}/{key_label}"),
        };
        provider.check_not_extractable()?;
        Ok(provider)
    }

    /// Refuses a master key that could leave the token.
    fn check_not_extractable(&self) -> Result<(), KmsError> {
        let session = self.session.lock().map_err(|_| KmsError::Provider("session lock poisoned".into()))?;
        let attrs =
            session.get_attributes(self.key, &[AttributeType::Extractable, AttributeType::Sensitive]).map_err(p11)?;
        let extractable = attrs.iter().any(|a| matches!(a, Attribute::Extractable(true)));
        let sensitive = attrs.iter().any(|a| matches!(a, Attribute::Sensitive(true)));
        let value_hidden = matches!(
            session.get_attribute_info(self.key, &[AttributeType::Value]).map_err(p11)?.first(),
            Some(AttributeInfo::Sensitive | AttributeInfo::Unavailable)
        );
        if extractable || !sensitive || !value_hidden {
            return Err(KmsError::Setup("the master key is extractable; refusing to use it".into()));
        }
        Ok(())
    }

    /// Whether the token reports the master key as extractable (tests use this).
    pub fn is_extractable(&self) -> Result<bool, KmsError> {
        Ok(self.check_not_extractable().is_err())
    }
}

impl KeyProvider for Pkcs11Provider {
    fn key_id(&self) -> &str {
        &self.id
    }

    fn wrap(&self, aad: &[u8], key: &Key256) -> Result<Vec<u8>, KmsError> {
        assert_aad(aad)?;
        let mut iv = [0u8; NONCE_LEN];
        getrandom::fill(&mut iv).map_err(|_| KmsError::Provider(CryptoError::Rng.to_string()))?;
        let session = self.session.lock().map_err(|_| KmsError::Provider("session lock poisoned".into()))?;
        let mut iv_param = iv;
        let params = GcmParams::new(&mut iv_param, aad, Ulong::new(128)).map_err(p11)?;
        let ct = session.encrypt(&Mechanism::AesGcm(params), self.key, key.expose()).map_err(p11)?;
        Ok([iv.as_slice(), &ct].concat())
    }

    fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<Key256, KmsError> {
        assert_aad(aad)?;
        let (mut iv, ct) = split_nonce(wrapped)?;
        let session = self.session.lock().map_err(|_| KmsError::Provider("session lock poisoned".into()))?;
        let params = GcmParams::new(&mut iv, aad, Ulong::new(128)).map_err(p11)?;
        // SoftHSM reports a failed GCM tag as CKR_GENERAL_ERROR; any failure here is unauthentic.
        let raw = zeroize::Zeroizing::new(
            session.decrypt(&Mechanism::AesGcm(params), self.key, ct).map_err(|_| KmsError::Unauthentic)?,
        );
        Key256::from_slice(&raw).map_err(|_| KmsError::Unauthentic)
    }
}

fn assert_aad(aad: &[u8]) -> Result<(), KmsError> {
    if aad.is_empty() { Err(KmsError::Provider("empty associated data".into())) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_provider_round_trips_and_binds_context() {
        let dir = tempfile::tempdir().expect("tmp");
        let provider = LocalKeyFile::open(&dir.path().join("master.key"), true).expect("open");
        let tenant_key = Key256::generate().expect("key");
        let wrapped = provider.wrap(b"tenant-a/v1", &tenant_key).expect("wrap");
        assert_eq!(provider.unwrap(b"tenant-a/v1", &wrapped).expect("unwrap").expose(), tenant_key.expose());
        assert!(matches!(provider.unwrap(b"tenant-b/v1", &wrapped), Err(KmsError::Unauthentic)));
        let again = LocalKeyFile::open(&dir.path().join("master.key"), false).expect("reopen");
        assert_eq!(again.unwrap(b"tenant-a/v1", &wrapped).expect("unwrap").expose(), tenant_key.expose());
    }
}
