//! The API key format for machine agents: `srk_` + 32 base62 characters of randomness + a
//! 6-character base62 CRC-32 of those 32 characters. The prefix lets secret scanners spot a
//! leaked key, and the checksum lets them (and every verifier) reject a mistyped or invented one
//! without a lookup. Keys are stored only as SHA-256 (they carry 190 bits of randomness, so a
//! slow hash adds nothing).

use sha2::{Digest, Sha256};

pub const PREFIX: &str = "srk_";
const RANDOM_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn checksum(random: &str) -> String {
    let mut n = crc32fast::hash(random.as_bytes());
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    out.iter().map(|&b| b as char).collect()
}

/// A new key, from the operating system's CSPRNG.
pub fn generate() -> Result<String, getrandom::Error> {
    let mut random = String::with_capacity(RANDOM_LEN);
    let mut buf = [0u8; 64];
    while random.len() < RANDOM_LEN {
        getrandom::fill(&mut buf)?;
        // Rejection sampling: 248 = 4 × 62 keeps the characters uniform.
        for b in buf.iter().filter(|&&b| b < 248) {
            if random.len() == RANDOM_LEN {
                break;
            }
            random.push(ALPHABET[(*b % 62) as usize] as char);
        }
    }
    let sum = checksum(&random);
    Ok(format!("{PREFIX}{random}{sum}"))
}

/// Whether `key` has the format and a matching checksum.
pub fn well_formed(key: &str) -> bool {
    let Some(body) = key.strip_prefix(PREFIX) else { return false };
    if body.len() != RANDOM_LEN + CHECKSUM_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (random, sum) = body.split_at(RANDOM_LEN);
    checksum(random) == sum
}

/// What is stored and looked up.
pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The first characters, to recognise a key in a list.
pub fn display(key: &str) -> String {
    format!("{}…", &key[..key.len().min(PREFIX.len() + 6)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let a = generate().expect("rng");
        let b = generate().expect("rng");
        assert!(well_formed(&a) && well_formed(&b));
        assert_ne!(a, b);
        assert_eq!(a.len(), PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN);
    }

    #[test]
    fn a_changed_character_breaks_the_checksum() {
        let key = generate().expect("rng");
        let mut bytes = key.into_bytes();
        bytes[10] = if bytes[10] == b'a' { b'b' } else { b'a' };
        let changed = String::from_utf8(bytes).expect("ascii");
        assert!(!well_formed(&changed));
        assert!(!well_formed("srk_short"));
        assert!(!well_formed("ghp_0123456789abcdefghijklmnopqrstuvwxyzAB"));
    }
}
