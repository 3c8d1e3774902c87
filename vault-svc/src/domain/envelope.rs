//! The self-describing ciphertext envelope (documented in `docs/vault.md`):
//!
//! ```text
//! byte 0      format version (1)
//! byte 1      algorithm (1 = AES-256-GCM)
//! byte 2      key kind (1 = tenant key, 2 = subject key, 3 = period key of a retention class)
//! bytes 3..7  key version (a period key's number), u32 big-endian
//! bytes 7..19 nonce of the data encryption (12 bytes)
//! bytes 19..21 length L of the wrapped data key, u16 big-endian
//! next L      wrapped data key: nonce (12) ‖ AES-256-GCM(key, data key) (48)
//! rest        AES-256-GCM(data key, plaintext) ‖ tag
//! ```
//!
//! Both encryptions use the same associated data, which binds tenant, purpose, path or caller,
//! version and context, so an envelope moved to another row, path, tenant or context fails.

use super::crypto::{Aad, CryptoError, Key256, NONCE_LEN};

pub const FORMAT_V1: u8 = 1;
pub const ALG_AES256GCM: u8 = 1;
/// Text prefix of transit ciphertexts.
pub const TEXT_PREFIX: &str = "srv1:";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Tenant = 1,
    Subject = 2,
    /// A retention class's key of one period; `key_version` is the key's number in the tenant.
    Period = 3,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("malformed ciphertext")]
    Malformed,
    #[error("unsupported ciphertext format or algorithm")]
    Unsupported,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// A parsed envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub kind: KeyKind,
    pub key_version: u32,
    pub nonce: [u8; NONCE_LEN],
    pub wrapped_dek: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl Envelope {
    /// Encrypts `plaintext` under a fresh data key wrapped by `key` (version `key_version`).
    pub fn seal(
        kind: KeyKind,
        key_version: u32,
        key: &Key256,
        aad: &Aad,
        plaintext: &[u8],
    ) -> Result<Self, EnvelopeError> {
        let dek = Key256::generate()?;
        let (nonce, ciphertext) = dek.seal(aad.bytes(), plaintext)?;
        let (dek_nonce, dek_ct) = key.seal(aad.bytes(), dek.expose())?;
        let mut wrapped_dek = Vec::with_capacity(NONCE_LEN + dek_ct.len());
        wrapped_dek.extend_from_slice(&dek_nonce);
        wrapped_dek.extend_from_slice(&dek_ct);
        Ok(Self { kind, key_version, nonce, wrapped_dek, ciphertext })
    }

    /// Decrypts with `key`, which must be the key of `self.kind`/`self.key_version`.
    pub fn open(&self, key: &Key256, aad: &Aad) -> Result<zeroize::Zeroizing<Vec<u8>>, EnvelopeError> {
        let dek = self.unwrap_dek(key, aad)?;
        Ok(dek.open(&self.nonce, aad.bytes(), &self.ciphertext)?)
    }

    /// The same data under another key: only the data key is re-wrapped, the data ciphertext
    /// stays as it is.
    pub fn rewrap(&self, old: &Key256, new: &Key256, new_version: u32, aad: &Aad) -> Result<Self, EnvelopeError> {
        let dek = self.unwrap_dek(old, aad)?;
        let (dek_nonce, dek_ct) = new.seal(aad.bytes(), dek.expose())?;
        let mut wrapped_dek = Vec::with_capacity(NONCE_LEN + dek_ct.len());
        wrapped_dek.extend_from_slice(&dek_nonce);
        wrapped_dek.extend_from_slice(&dek_ct);
        Ok(Self {
            kind: self.kind,
            key_version: new_version,
            nonce: self.nonce,
            wrapped_dek,
            ciphertext: self.ciphertext.clone(),
        })
    }

    fn unwrap_dek(&self, key: &Key256, aad: &Aad) -> Result<Key256, EnvelopeError> {
        if self.wrapped_dek.len() < NONCE_LEN {
            return Err(EnvelopeError::Malformed);
        }
        let (nonce, ct) = self.wrapped_dek.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| EnvelopeError::Malformed)?;
        let raw = key.open(&nonce, aad.bytes(), ct)?;
        Ok(Key256::from_slice(&raw)?)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(21 + self.wrapped_dek.len() + self.ciphertext.len());
        out.push(FORMAT_V1);
        out.push(ALG_AES256GCM);
        out.push(self.kind as u8);
        out.extend_from_slice(&self.key_version.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&(self.wrapped_dek.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.wrapped_dek);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        if bytes.len() < 21 {
            return Err(EnvelopeError::Malformed);
        }
        if bytes[0] != FORMAT_V1 || bytes[1] != ALG_AES256GCM {
            return Err(EnvelopeError::Unsupported);
        }
        let kind = match bytes[2] {
            1 => KeyKind::Tenant,
            2 => KeyKind::Subject,
            3 => KeyKind::Period,
            _ => return Err(EnvelopeError::Unsupported),
        };
        let key_version = u32::from_be_bytes(bytes[3..7].try_into().map_err(|_| EnvelopeError::Malformed)?);
        let nonce: [u8; NONCE_LEN] = bytes[7..19].try_into().map_err(|_| EnvelopeError::Malformed)?;
        let len = u16::from_be_bytes(bytes[19..21].try_into().map_err(|_| EnvelopeError::Malformed)?) as usize;
        let rest = &bytes[21..];
        if rest.len() < len + 16 || len < NONCE_LEN + 16 {
            return Err(EnvelopeError::Malformed);
        }
        let (wrapped_dek, ciphertext) = rest.split_at(len);
        Ok(Self { kind, key_version, nonce, wrapped_dek: wrapped_dek.to_vec(), ciphertext: ciphertext.to_vec() })
    }

    /// `srv1:<base64url>`, the transit text form.
    pub fn to_text(&self) -> String {
        use base64::Engine;
        format!("{TEXT_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.encode()))
    }

    pub fn from_text(text: &str) -> Result<Self, EnvelopeError> {
        use base64::Engine;
        let body = text.strip_prefix(TEXT_PREFIX).ok_or(EnvelopeError::Malformed)?;
        let bytes =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).map_err(|_| EnvelopeError::Malformed)?;
        Self::decode(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_encode_decode_open() {
        let key = Key256::generate().expect("key");
        let aad = Aad::new("secret").with("path", b"brokers/ib");
        let env = Envelope::seal(KeyKind::Tenant, 3, &key, &aad, b"s3cr3t").expect("seal");
        let text = env.to_text();
        assert!(text.starts_with("srv1:"));
        let back = Envelope::from_text(&text).expect("parse");
        assert_eq!(back, env);
        assert_eq!(back.key_version, 3);
        assert_eq!(back.open(&key, &aad).expect("open").as_slice(), b"s3cr3t");
        assert!(back.open(&key, &Aad::new("secret").with("path", b"brokers/other")).is_err());
    }

    #[test]
    fn rewrap_moves_to_the_new_key_without_touching_the_data() {
        let (old, new) = (Key256::generate().expect("key"), Key256::generate().expect("key"));
        let aad = Aad::new("secret").with("path", b"p");
        let env = Envelope::seal(KeyKind::Tenant, 1, &old, &aad, b"payload").expect("seal");
        let moved = env.rewrap(&old, &new, 2, &aad).expect("rewrap");
        assert_eq!(moved.key_version, 2);
        assert_eq!(moved.ciphertext, env.ciphertext);
        assert_eq!(moved.open(&new, &aad).expect("open").as_slice(), b"payload");
        assert!(moved.open(&old, &aad).is_err());
    }

    #[test]
    fn a_period_key_envelope_names_its_kind_and_number() {
        let key = Key256::generate().expect("key");
        let aad = Aad::new("transit");
        let env = Envelope::seal(KeyKind::Period, 41, &key, &aad, b"hello").expect("seal");
        let back = Envelope::from_text(&env.to_text()).expect("parse");
        assert_eq!((back.kind, back.key_version), (KeyKind::Period, 41));
        assert_eq!(back.open(&key, &aad).expect("open").as_slice(), b"hello");
    }

    #[test]
    fn garbage_is_refused_without_panics() {
        for bad in [&b""[..], &[1u8; 20], &[2u8; 100], &[1, 1, 9, 0, 0, 0, 1]] {
            assert!(Envelope::decode(bad).is_err());
        }
        assert!(Envelope::from_text("srv1:!!!").is_err());
        assert!(Envelope::from_text("v2:abc").is_err());
        let key = Key256::generate().expect("key");
        let aad = Aad::new("x");
        let mut bytes = Envelope::seal(KeyKind::Tenant, 1, &key, &aad, b"hello").expect("seal").encode();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x80;
        assert!(Envelope::decode(&bytes).expect("parses").open(&key, &aad).is_err());
    }
}
