//! The keyed blind index of an email address: how a login finds its user, and how two users of a
//! tenant are kept from sharing an address, without the address being stored anywhere but sealed;
//! and, under the same key, the login throttle's identifiers of an account and of an address.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Binds the index to its use: the same key cannot give this index's values for another purpose.
const LABEL: &[u8] = b"strongroom.auth.email-index.v1\0";

/// Binds the login throttle's identifiers to their use: they are never an email's blind index.
const THROTTLE_LABEL: &[u8] = b"strongroom.login-throttle.v1\0";

/// What a login throttle identifier counts attempts of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttled {
    /// An account: the normalized email.
    Account,
    /// A client address (an IPv6 client by its /64).
    Address,
}

impl Throttled {
    fn label(self) -> &'static [u8] {
        match self {
            Self::Account => b"account\0",
            Self::Address => b"address\0",
        }
    }
}

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

/// The login throttle's identifier of `value` (an account's normalized email, or an address),
/// as it appears in Redis: HMAC-SHA-256 under `key`, the first 16 bytes in hex. Keyed, so that
/// whoever reads Redis cannot confirm a guessed email or run through the IPv4 space.
pub fn throttle_id(key: &[u8], kind: Throttled, value: &str) -> Result<String, hmac::digest::InvalidLength> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)?;
    mac.update(THROTTLE_LABEL);
    mac.update(kind.label());
    mac.update(value.as_bytes());
    Ok(hex::encode(&mac.finalize().into_bytes()[..16]))
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

    #[test]
    fn a_throttle_id_is_keyed_stable_per_kind_and_blind_to_its_input() {
        let id = |key: &[u8], kind, value: &str| throttle_id(key, kind, value).expect("any key length");
        let key = [7u8; 32];
        let email = "ada@example.com";
        let a = id(&key, Throttled::Account, email);
        assert_eq!(a.len(), 32);
        assert_eq!(a, id(&key, Throttled::Account, email));
        assert_ne!(a, id(&[8u8; 32], Throttled::Account, email));
        assert_ne!(a, id(&key, Throttled::Address, email));
        assert_ne!(a, id(&key, Throttled::Account, "ada@example.org"));
        let index = blind_index(&key, email).expect("any key length");
        assert!(!a.contains(&hex::encode(&index[..16])), "not the email's blind index");
        for (kind, value) in [(Throttled::Account, email), (Throttled::Address, "192.0.2.7")] {
            let i = id(&key, kind, value);
            assert!(!i.contains(value) && !i.contains(&hex::encode(value)), "{kind:?} id holds its input");
            let unkeyed = hex::encode(&<Sha256 as sha2::Digest>::digest(value.as_bytes())[..16]);
            assert_ne!(i, unkeyed);
        }
    }
}
