//! The receipt chain. A receipt covers the transfers and pending resolutions of one committed
//! batch: `content = SHA-256(entries)`, `hash = SHA-256(domain ‖ seq ‖ prev_hash ‖ content)`, and
//! its Ed25519 signature (vault key `ledger`) is over `domain ‖ hash`. Only fields that never change
//! after commit are hashed, so editing any stored transfer breaks its receipt and, through the
//! chain, every later one. [`ChainCheck`] is the verification itself, the same whether the
//! receipts come from the database (`receipts::verify`) or from an export bundle
//! (`export::verify`).

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
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

/// A receipt as stored: its link of the chain and, once signed, its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub seq: i64,
    pub prev_hash: Vec<u8>,
    pub content_hash: Vec<u8>,
    pub hash: Vec<u8>,
    /// How many transfers and resolutions it covers.
    pub entries: i32,
    pub signature: Option<Vec<u8>>,
    /// The version of the signing key (vault key `ledger`) the signature verifies with.
    pub key_version: Option<i32>,
}

/// The outcome of a verification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    pub checked: u64,
    /// The first receipt that does not verify (0: none).
    pub first_bad_seq: u64,
    pub problem: String,
    /// The newest receipts not signed yet (their hashes chain to a signed one only later).
    pub unsigned: u64,
    pub head_hash: Vec<u8>,
}

/// A verification of receipts in chain order, continuing from a link verified before: each
/// receipt is recomputed from its entries, chained to the one before it, and its signature
/// checked. The caller reads the receipts, their entries and the public keys; only the first
/// problem is kept.
#[derive(Debug, Clone)]
pub struct ChainCheck {
    out: Verification,
    next: i64,
    prev: Vec<u8>,
    resume: Link,
    signatures: bool,
}

impl ChainCheck {
    /// Starts after `from`. `signatures`: whether public keys can be had; without them a signed
    /// receipt cannot be checked and every receipt is vouched for by its hash alone.
    pub fn new(from: Link, signatures: bool) -> Self {
        Self {
            out: Verification::default(),
            next: from.seq as i64 + 1,
            prev: from.hash.clone(),
            resume: from,
            signatures,
        }
    }

    /// The sequence number of the receipt expected next.
    pub fn next_seq(&self) -> i64 {
        self.next
    }

    /// Whether a problem was found (the verification says nothing more after it).
    pub fn is_broken(&self) -> bool {
        self.out.first_bad_seq != 0
    }

    fn bad(&mut self, seq: i64, problem: &str) {
        if self.out.first_bad_seq == 0 {
            self.out.first_bad_seq = seq as u64;
            self.out.problem = problem.to_owned();
        }
    }

    /// The receipt expected next is missing.
    pub fn missing(&mut self) {
        self.bad(self.next, "receipt is missing");
    }

    /// The version of the key that checks `r`'s signature, when it is to be checked.
    pub fn key_version(&self, r: &Receipt) -> Option<i32> {
        match (&r.signature, r.key_version, self.signatures) {
            (Some(_), Some(version), true) => Some(version),
            _ => None,
        }
    }

    /// Checks `r`, the receipt expected next ([`Self::next_seq`]), recomputed from `transfers`
    /// and `resolutions` (the entries stored under it, in timestamp order). `key` is the public
    /// key of version [`Self::key_version`]; without it the signature cannot be checked.
    pub fn receipt(
        &mut self,
        r: &Receipt,
        transfers: &[Transfer],
        resolutions: &[Resolution],
        key: Option<&VerifyingKey>,
    ) {
        let seq = self.next;
        if r.seq != seq {
            self.missing();
            return;
        }
        if r.prev_hash != self.prev {
            self.bad(seq, "previous hash does not match the previous receipt");
        }
        let content = content_hash(transfers, resolutions);
        if content != r.content_hash || (transfers.len() + resolutions.len()) as i32 != r.entries {
            self.bad(seq, "stored transfers do not match the receipt");
        }
        let hash = chain_hash(seq, &self.prev, &content);
        if hash != r.hash {
            self.bad(seq, "receipt hash does not match");
        }
        match (&r.signature, self.key_version(r)) {
            (Some(sig), Some(_)) => {
                let verifies = |key: &VerifyingKey| {
                    Signature::from_slice(sig).is_ok_and(|s| key.verify(&signed_message(&r.hash), &s).is_ok())
                };
                match key {
                    Some(key) if verifies(key) => {}
                    Some(_) => self.bad(seq, "signature does not verify"),
                    None => self.bad(seq, "signature cannot be checked"),
                }
                self.out.unsigned = 0;
            }
            (Some(_), None) => self.bad(seq, "signature cannot be checked"),
            (None, _) => self.out.unsigned += 1,
        }
        if !self.is_broken() && (!self.signatures || r.signature.is_some()) {
            self.resume = Link { seq: seq as u64, hash: hash.clone() };
        }
        self.prev = hash;
        self.out.checked += 1;
        self.next += 1;
    }

    /// Ends at the chain head `(head_seq, head_hash)`: the verification, and the newest link
    /// vouched for (the newest signed receipt checked before any problem, or without keys the
    /// newest receipt checked), which a later verification may continue from.
    pub fn finish(mut self, head_seq: i64, head_hash: &[u8]) -> (Verification, Link) {
        if !self.is_broken() && (self.prev != head_hash || self.next - 1 != head_seq) {
            self.bad(head_seq, "chain head does not match the newest receipt");
        }
        self.out.head_hash = self.prev;
        (self.out, self.resume)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ed25519_dalek::{Signer, SigningKey};
    use uuid::Uuid;

    use super::super::TransferState;
    use super::*;

    fn transfer(n: u128, ts: i64) -> Transfer {
        Transfer {
            id: Uuid::from_u128(n),
            debit_account_id: Uuid::from_u128(1),
            credit_account_id: Uuid::from_u128(2),
            amount: 10,
            pending_id: None,
            timeout_seconds: 0,
            ledger: "USD".into(),
            code: 1,
            flags: 0,
            metadata: BTreeMap::new(),
            ts,
            state: TransferState::Posted,
            expires_at: None,
            receipt_seq: ts,
        }
    }

    /// Receipts 1..=n, one transfer each, signed with `key` (version 1) when `signed`.
    fn chain(n: i64, key: &SigningKey, signed: bool) -> Vec<(Receipt, Transfer)> {
        let mut prev = GENESIS.to_vec();
        (1..=n)
            .map(|seq| {
                let t = transfer(seq as u128 + 100, seq);
                let content = content_hash(std::slice::from_ref(&t), &[]);
                let hash = chain_hash(seq, &prev, &content);
                let signature = signed.then(|| key.sign(&signed_message(&hash)).to_bytes().to_vec());
                let r = Receipt {
                    seq,
                    prev_hash: std::mem::replace(&mut prev, hash.clone()),
                    content_hash: content,
                    hash,
                    entries: 1,
                    key_version: signature.as_ref().map(|_| 1),
                    signature,
                };
                (r, t)
            })
            .collect()
    }

    fn run(chain: &[(Receipt, Transfer)], key: Option<&VerifyingKey>) -> (Verification, Link) {
        let mut check = ChainCheck::new(Link::genesis(), key.is_some());
        for (r, t) in chain {
            check.receipt(r, std::slice::from_ref(t), &[], key);
        }
        let head = chain.last().map_or((0, GENESIS.to_vec()), |(r, _)| (r.seq, r.hash.clone()));
        check.finish(head.0, &head.1)
    }

    #[test]
    fn a_signed_chain_verifies_and_resumes_from_its_head() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let receipts = chain(3, &key, true);
        let (v, resume) = run(&receipts, Some(&key.verifying_key()));
        assert_eq!((v.checked, v.first_bad_seq, v.unsigned), (3, 0, 0), "{}", v.problem);
        assert_eq!(resume, Link { seq: 3, hash: receipts[2].0.hash.clone() });
    }

    #[test]
    fn an_edited_transfer_a_foreign_signature_and_a_cut_head_are_found() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let mut edited = chain(3, &key, true);
        edited[1].1.amount = 11;
        let (v, resume) = run(&edited, Some(&key.verifying_key()));
        assert_eq!((v.first_bad_seq, v.problem.as_str()), (2, "stored transfers do not match the receipt"));
        assert_eq!(resume.seq, 1);

        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        let (v, _) = run(&chain(2, &key, true), Some(&other));
        assert_eq!((v.first_bad_seq, v.problem.as_str()), (1, "signature does not verify"));

        let receipts = chain(3, &key, true);
        let mut check = ChainCheck::new(Link::genesis(), true);
        for (r, t) in &receipts[..2] {
            check.receipt(r, std::slice::from_ref(t), &[], Some(&key.verifying_key()));
        }
        let (v, _) = check.finish(3, &receipts[2].0.hash);
        assert_eq!((v.first_bad_seq, v.problem.as_str()), (3, "chain head does not match the newest receipt"));
    }

    #[test]
    fn unsigned_receipts_are_counted_and_a_gap_is_missing() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let (v, resume) = run(&chain(2, &key, false), None);
        assert_eq!((v.first_bad_seq, v.unsigned), (0, 2));
        assert_eq!(resume.seq, 2, "without keys the newest receipt checked");
        let receipts = chain(3, &key, false);
        let mut check = ChainCheck::new(Link::genesis(), false);
        check.receipt(&receipts[0].0, std::slice::from_ref(&receipts[0].1), &[], None);
        check.receipt(&receipts[2].0, std::slice::from_ref(&receipts[2].1), &[], None);
        let (v, _) = check.finish(3, &receipts[2].0.hash);
        assert_eq!((v.first_bad_seq, v.problem.as_str()), (2, "receipt is missing"));
    }

    #[test]
    fn chain_depends_on_everything() {
        let a = chain_hash(1, &GENESIS, &content_hash(&[], &[]));
        assert_ne!(a, chain_hash(2, &GENESIS, &content_hash(&[], &[])));
        assert_ne!(a, chain_hash(1, &[1; 32], &content_hash(&[], &[])));
        assert_eq!(a, chain_hash(1, &GENESIS, &content_hash(&[], &[])));
    }
}
