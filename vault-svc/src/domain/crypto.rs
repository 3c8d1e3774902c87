//! AES-256-GCM through the RustCrypto `aes-gcm` crate and the OS RNG; no hand-written crypto.
//! Key material lives in [`Key256`], zeroized on drop and never printed.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

pub const KEY_LEN: usize = 32;
pub const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// Authentication failed: wrong key, wrong associated data, or tampered bytes.
    #[error("ciphertext does not authenticate")]
    Unauthentic,
    #[error("key material has the wrong length")]
    BadKey,
    #[error("the operating system's random generator failed")]
    Rng,
}

/// A 256-bit key. Zeroized on drop; `Debug` shows nothing of it.
#[derive(Clone)]
pub struct Key256(Zeroizing<[u8; KEY_LEN]>);

impl std::fmt::Debug for Key256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key256(..)")
    }
}

impl Key256 {
    /// A fresh key from the OS RNG.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(k.as_mut()).map_err(|_| CryptoError::Rng)?;
        Ok(Self(k))
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; KEY_LEN] = bytes.try_into().map_err(|_| CryptoError::BadKey)?;
        Ok(Self(Zeroizing::new(arr)))
    }

    /// The raw bytes, for wrapping by a key provider only.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.0.as_ref().into())
    }

    /// Encrypts with a fresh random nonce; returns `(nonce, ciphertext‖tag)`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<([u8; NONCE_LEN], Vec<u8>), CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| CryptoError::Rng)?;
        let ct = self
            .cipher()
            .encrypt(&Nonce::from(nonce), Payload { msg: plaintext, aad })
            .map_err(|_| CryptoError::Unauthentic)?;
        Ok((nonce, ct))
    }

    /// Decrypts and authenticates.
    pub fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        self.cipher()
            .decrypt(&Nonce::from(*nonce), Payload { msg: ciphertext, aad })
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Unauthentic)
    }
}

/// Associated data: a domain tag then length-prefixed fields, so no two field lists encode alike.
#[derive(Debug, Clone, Default)]
pub struct Aad(Vec<u8>);

impl Aad {
    pub fn new(domain: &str) -> Self {
        let mut a = Self(Vec::with_capacity(128));
        a.field(domain.as_bytes());
        a
    }

    fn field(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        self.0.extend_from_slice(bytes);
    }

    pub fn with(mut self, name: &str, value: &[u8]) -> Self {
        self.field(name.as_bytes());
        self.field(value);
        self
    }

    /// Adds a caller context map in sorted order.
    pub fn with_context<'a>(mut self, context: impl IntoIterator<Item = (&'a String, &'a String)>) -> Self {
        let mut pairs: Vec<_> = context.into_iter().collect();
        pairs.sort();
        self.field(b"context");
        self.0.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
        for (k, v) in pairs {
            self.field(k.as_bytes());
            self.field(v.as_bytes());
        }
        self
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let key = Key256::generate().expect("key");
        let aad = Aad::new("t").with("path", b"a/b");
        let (nonce, mut ct) = key.seal(aad.bytes(), b"broker api key").expect("seal");
        assert_eq!(key.open(&nonce, aad.bytes(), &ct).expect("open").as_slice(), b"broker api key");
        let other = Aad::new("t").with("path", b"a/c");
        assert_eq!(key.open(&nonce, other.bytes(), &ct), Err(CryptoError::Unauthentic));
        ct[0] ^= 1;
        assert_eq!(key.open(&nonce, aad.bytes(), &ct), Err(CryptoError::Unauthentic));
        let wrong = Key256::generate().expect("key");
        ct[0] ^= 1;
        assert_eq!(wrong.open(&nonce, aad.bytes(), &ct), Err(CryptoError::Unauthentic));
    }

    #[test]
    fn aad_fields_are_unambiguous() {
        assert_ne!(Aad::new("x").with("ab", b"c").bytes(), Aad::new("x").with("a", b"bc").bytes());
        let mut m1 = std::collections::HashMap::new();
        m1.insert("a".to_owned(), "1".to_owned());
        m1.insert("b".to_owned(), "2".to_owned());
        let mut m2 = std::collections::BTreeMap::new();
        m2.insert("b".to_owned(), "2".to_owned());
        m2.insert("a".to_owned(), "1".to_owned());
        assert_eq!(Aad::new("x").with_context(&m1).bytes(), Aad::new("x").with_context(&m2).bytes());
    }

    #[test]
    fn keys_do_not_print() {
        let key = Key256::from_slice(&[7u8; 32]).expect("key");
        assert_eq!(format!("{key:?}"), "Key256(..)");
    }
}
