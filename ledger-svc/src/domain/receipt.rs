//! The receipt chain. A receipt covers the transfers and pending resolutions of one committed
//! batch: `content = SHA-256(entries)`, `hash = SHA-256(domain ‖ seq ‖ prev_hash ‖ content)`, and
//! its Ed25519 signature (vault key `ledger`) is over `domain ‖ hash`. Only fields that never change
//! after commit are hashed, so editing any stored transfer breaks its receipt and, through the
//! chain, every later one.

use sha2::{Digest, Sha256};

use super::Transfer;
use super::engine::Resolution;

pub const DOMAIN: &[u8] = b"strongroom.ledger.receipt.v1";
/// `prev_hash` of the first receipt.
pub const GENESIS: [u8; 32] = [0; 32];

/// A link of the chain: receipt `seq` and its hash (`seq` 0 stands for the genesis hash), the
/// point a verification continues from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub seq: u64,
    pub hash: Vec<u8>,
}

impl Link {
    /// Before the first receipt: a verification from here is a full one.
    pub fn genesis() -> Self {
        Self { seq: 0, hash: GENESIS.to_vec() }
    }
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u32).to_be_bytes());
    h.update(bytes);
}

/// Hashes the entries of one receipt: transfers then resolutions, each in timestamp order.
pub fn content_hash(transfers: &[Transfer], resolutions: &[Resolution]) -> Vec<u8> {
    let mut h = Sha256::new();
    for t in transfers {
        field(&mut h, b"T");
        field(&mut h, t.id.as_bytes());
        field(&mut h, t.debit_account_id.as_bytes());
        field(&mut h, t.credit_account_id.as_bytes());
        field(&mut h, &t.amount.to_be_bytes());
        field(&mut h, t.pending_id.map(|p| *p.as_bytes()).unwrap_or_default().as_slice());
        field(&mut h, &t.timeout_seconds.to_be_bytes());
        field(&mut h, t.ledger.as_bytes());
        field(&mut h, &t.code.to_be_bytes());
        field(&mut h, &t.flags.to_be_bytes());
        field(&mut h, serde_json::to_string(&t.metadata).unwrap_or_default().as_bytes());
        field(&mut h, &t.ts.to_be_bytes());
        field(&mut h, &t.expires_at.unwrap_or(0).to_be_bytes());
    }
    for r in resolutions {
        field(&mut h, b"R");
        field(&mut h, r.pending_id.as_bytes());
        field(&mut h, r.kind.as_str().as_bytes());
        field(&mut h, r.transfer_id.map(|p| *p.as_bytes()).unwrap_or_default().as_slice());
        field(&mut h, &r.amount.to_be_bytes());
        field(&mut h, &r.ts.to_be_bytes());
    }
    h.finalize().to_vec()
}

/// The chained hash of receipt `seq`.
pub fn chain_hash(seq: i64, prev_hash: &[u8], content_hash: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(seq.to_be_bytes());
    field(&mut h, prev_hash);
    field(&mut h, content_hash);
    h.finalize().to_vec()
}

/// What is signed for a receipt.
pub fn signed_message(hash: &[u8]) -> Vec<u8> {
    [DOMAIN, b"\n", hash].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_depends_on_everything() {
        let a = chain_hash(1, &GENESIS, &content_hash(&[], &[]));
        assert_ne!(a, chain_hash(2, &GENESIS, &content_hash(&[], &[])));
        assert_ne!(a, chain_hash(1, &[1; 32], &content_hash(&[], &[])));
        assert_eq!(a, chain_hash(1, &GENESIS, &content_hash(&[], &[])));
    }
}
