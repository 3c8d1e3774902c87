//! The keyed blind index of an email address: how a login finds its user, and how two users of a
//! tenant are kept from sharing an address, without the address being stored anywhere but sealed.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Binds the index to its use: the same key cannot give this index's values for another purpose.
const LABEL: &[u8] = b"strongroom.auth.email-index.v1\0";

/// The email as logins and creation compare it: trimmed and lower-cased (what
/// [`super::input::normalize_email`] accepts, without judging whether it is an address).
pub fn normalized(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// HMAC-SHA-256 of the normalized `email` under the tenant's index `key` (HMAC takes a key of
/// any length: the error is never seen).
pub fn blind_index(key: &[u8], email: &str) -> Result<[u8; 32], hmac::digest::InvalidLength> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)?;
    mac.update(LABEL);
    mac.update(normalized(email).as_bytes());
    Ok(mac.finalize().into_bytes().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_is_keyed_stable_and_blind_to_case_and_spaces() {
        let index = |key: &[u8], email: &str| blind_index(key, email).expect("any key length");
        let key = [7u8; 32];
        let a = index(&key, "ada@example.com");
        assert_eq!(a, index(&key, "  Ada@Example.COM "));
        assert_ne!(a, index(&[8u8; 32], "ada@example.com"));
        assert_ne!(a, index(&key, "ada@example.org"));
        assert!(!a.windows(3).any(|w| w == b"ada"));
    }
}
