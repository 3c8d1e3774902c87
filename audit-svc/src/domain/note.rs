//! C2SP signed notes for transparency-log checkpoints (`tlog-checkpoint`, `signed-note`):
//!
//! ```text
//! <origin>\n<tree size>\n<base64 root hash>\n
//! \n
//! — <key name> <base64(key id (4 bytes) ‖ Ed25519 signature (64 bytes))>\n
//! ```
//!
//! The signature covers the body (the first three lines with their newlines). The key id is the
//! first four bytes of SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ public key); the verifier key string is
//! `<name>+<hex key id>+<base64(0x01 ‖ public key)>`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

use super::merkle::Hash;

/// Ed25519's algorithm byte in C2SP key encodings.
const ALG_ED25519: u8 = 0x01;

/// The checkpoint body that gets signed.
pub fn body(origin: &str, size: u64, root: &Hash) -> String {
    format!("{origin}\n{size}\n{}\n", B64.encode(root))
}

pub fn key_id(name: &str, public_key: &[u8]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([0x0A, ALG_ED25519]);
    h.update(public_key);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// The complete signed note.
pub fn signed_note(body: &str, name: &str, public_key: &[u8], signature: &[u8]) -> String {
    let mut blob = key_id(name, public_key).to_vec();
    blob.extend_from_slice(signature);
    format!("{body}\n\u{2014} {name} {}\n", B64.encode(blob))
}

pub fn verifier_key(name: &str, public_key: &[u8]) -> String {
    let mut key = vec![ALG_ED25519];
    key.extend_from_slice(public_key);
    format!("{name}+{}+{}", hex::encode(key_id(name, public_key)), B64.encode(key))
}

/// One signature line of a note: key name, key id, signature.
pub type NoteSignature = (String, [u8; 4], Vec<u8>);

/// Splits a signed note into its body and its signature lines.
pub fn parse(note: &str) -> Option<(&str, Vec<NoteSignature>)> {
    let split = note.find("\n\n")? + 1;
    let (body, rest) = note.split_at(split);
    let mut sigs = Vec::new();
    for line in rest[1..].lines() {
        let line = line.strip_prefix("\u{2014} ")?;
        let (name, blob) = line.split_once(' ')?;
        let blob = B64.decode(blob).ok()?;
        if blob.len() < 5 {
            return None;
        }
        let id: [u8; 4] = blob[..4].try_into().ok()?;
        sigs.push((name.to_owned(), id, blob[4..].to_vec()));
    }
    Some((body, sigs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_round_trip_and_key_ids_match() {
        let root = [7u8; 32];
        let b = body("strongroom.audit/demo", 42, &root);
        assert_eq!(b, format!("strongroom.audit/demo\n42\n{}\n", B64.encode(root)));
        let public = [9u8; 32];
        let note = signed_note(&b, "strongroom.audit/demo", &public, &[1u8; 64]);
        let (parsed_body, sigs) = parse(&note).expect("parse");
        assert_eq!(parsed_body, b);
        assert_eq!(sigs.len(), 1);
        assert_eq!(sigs[0].1, key_id("strongroom.audit/demo", &public));
        let vkey = verifier_key("strongroom.audit/demo", &public);
        assert!(vkey.starts_with(&format!("strongroom.audit/demo+{}+", hex::encode(sigs[0].1))));
    }
}
