//! `strongroom audit export` and `strongroom audit verify`: anyone holding an export and the
//! tenant's verifier key can check, offline, that the log was not rewritten — every leaf from its
//! canonical bytes, the hash chain, the Merkle root, and the checkpoint's Ed25519 signature.

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use audit_svc::domain::merkle::{self, Hash};
use audit_svc::domain::note;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kit::Identity;
use kit::tls::CertStore;
use proto::audit::v1 as pb;
use serde_json::json;

use crate::ops::Endpoints;

fn req<T>(tenant: &str, msg: T) -> tonic::Request<T> {
    kit::client::with_context(tonic::Request::new(msg), Some(tenant), None, None)
}

/// Writes the tenant's log up to its latest checkpoint as JSON Lines: one line per entry
/// (`seq`, `canonical`, `leaf_hash`, `chain_hash`, base64), then `{"checkpoint": <signed note>}`.
pub async fn export(endpoints: &Endpoints, tenant: &str, out: &Path) -> anyhow::Result<u64> {
    let certs = CertStore::load(&endpoints.tls).context("operator certificate")?;
    let channel = kit::client::channel(&certs, &endpoints.audit, &Identity::new("audit")?, Duration::from_secs(30))?;
    let mut client = pb::audit_log_service_client::AuditLogServiceClient::new(channel);
    // One server stream: the entries up to the latest checkpoint, then that checkpoint.
    let mut items = client
        .export_entries(req(tenant, pb::ExportEntriesRequest { from_seq: 0, to_seq: 0 }))
        .await
        .map_err(|s| anyhow!("audit: {} ({:?}: {})", kit::ApiError::from_status(&s), s.code(), s.message()))?
        .into_inner();
    let mut file = std::io::BufWriter::new(std::fs::File::create(out).with_context(|| out.display().to_string())?);
    let mut written = 0;
    let mut checkpoint = None;
    while let Some(item) = items
        .message()
        .await
        .map_err(|s| anyhow!("audit: {} ({:?}: {})", kit::ApiError::from_status(&s), s.code(), s.message()))?
    {
        match item.item {
            Some(pb::stream_item::Item::Entry(e)) => {
                let line = if e.pruned {
                    // Pruned beyond retention: the leaf (and, on the last one, the chain link) only.
                    let mut l = json!({ "seq": e.seq, "pruned": true, "leaf_hash": B64.encode(&e.leaf_hash) });
                    if !e.chain_hash.is_empty() {
                        l["chain_hash"] = json!(B64.encode(&e.chain_hash));
                    }
                    l
                } else {
                    json!({
                        "seq": e.seq,
                        "canonical": B64.encode(&e.canonical),
                        "leaf_hash": B64.encode(&e.leaf_hash),
                        "chain_hash": B64.encode(&e.chain_hash),
                    })
                };
                writeln!(file, "{line}")?;
                written += 1;
            }
            Some(pb::stream_item::Item::Checkpoint(c)) => checkpoint = Some(c.signed_note),
            None => {}
        }
    }
    let checkpoint = checkpoint.ok_or_else(|| anyhow!("audit: the export ended without its checkpoint"))?;
    writeln!(file, "{}", json!({ "checkpoint": checkpoint }))?;
    file.flush()?;
    Ok(written)
}

/// The outcome of an offline verification.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Valid {
        entries: u64,
    },
    /// The first sequence number that does not match, and why.
    Mismatch {
        seq: u64,
        reason: String,
    },
}

fn parse_verifier_key(key: &str) -> anyhow::Result<(String, [u8; 4], [u8; 32])> {
    let mut parts = key.splitn(3, '+');
    let (name, id, blob) = (parts.next(), parts.next(), parts.next());
    let (Some(name), Some(id), Some(blob)) = (name, id, blob) else { bail!("verifier key must be <name>+<id>+<key>") };
    let id: [u8; 4] = hex::decode(id)?.try_into().map_err(|_| anyhow!("key id must be 4 bytes"))?;
    let blob = B64.decode(blob)?;
    if blob.len() != 33 || blob[0] != 0x01 {
        bail!("only Ed25519 verifier keys are supported");
    }
    let public: [u8; 32] = blob[1..].try_into().map_err(|_| anyhow!("bad key"))?;
    if note::key_id(name, &public) != id {
        bail!("the verifier key's id does not match its key");
    }
    Ok((name.to_owned(), id, public))
}

fn b64_hash(v: &serde_json::Value) -> Option<Hash> {
    B64.decode(v.as_str()?).ok()?.try_into().ok()
}

/// Verifies an export against a verifier key, reading it once.
pub fn verify(export: &Path, verifier_key: &str) -> anyhow::Result<Verdict> {
    use ed25519_dalek::Verifier;
    let (name, id, public) = parse_verifier_key(verifier_key)?;
    let file = std::io::BufReader::new(std::fs::File::open(export).with_context(|| export.display().to_string())?);
    let mut chain: Hash = [0u8; 32];
    let mut leaves: Vec<Hash> = Vec::new();
    let mut checkpoint = None;
    let mut pruned_done = false;
    for (n, line) in file.lines().enumerate() {
        let line = line?;
        let v: serde_json::Value = serde_json::from_str(&line).with_context(|| format!("line {}", n + 1))?;
        if let Some(note) = v.get("checkpoint").and_then(|c| c.as_str()) {
            checkpoint = Some(note.to_owned());
            continue;
        }
        let seq = v["seq"].as_u64().ok_or_else(|| anyhow!("line {}: no seq", n + 1))?;
        let mismatch = |reason: &str| Ok(Verdict::Mismatch { seq, reason: reason.to_owned() });
        if seq != leaves.len() as u64 {
            return mismatch("sequence gap");
        }
        if v["pruned"].as_bool() == Some(true) {
            // Pruned beyond retention: its leaf still counts towards the root the checkpoint signs;
            // the chain continues from the link the last pruned entry carries.
            if pruned_done {
                return mismatch("a pruned entry after a stored one");
            }
            let Some(leaf) = b64_hash(&v["leaf_hash"]) else { return mismatch("leaf hash") };
            if !v["chain_hash"].is_null() {
                let Some(link) = b64_hash(&v["chain_hash"]) else { return mismatch("chain hash") };
                chain = link;
            }
            leaves.push(leaf);
            continue;
        }
        pruned_done = true;
        let canonical = B64.decode(v["canonical"].as_str().unwrap_or_default()).unwrap_or_default();
        let fields: Option<serde_json::Value> = serde_json::from_slice(&canonical).ok();
        if fields.as_ref().and_then(|f| f["seq"].as_u64()) != Some(seq) {
            return mismatch("canonical bytes do not carry this sequence number");
        }
        let leaf = merkle::leaf_hash(&canonical);
        if b64_hash(&v["leaf_hash"]) != Some(leaf) {
            return mismatch("leaf hash");
        }
        chain = merkle::chain_hash(&chain, &leaf);
        if b64_hash(&v["chain_hash"]) != Some(chain) {
            return mismatch("chain hash");
        }
        leaves.push(leaf);
    }
    let note_text = checkpoint.ok_or_else(|| anyhow!("the export has no checkpoint"))?;
    let size = leaves.len() as u64;
    let (body, sigs) = note::parse(&note_text).ok_or_else(|| anyhow!("malformed checkpoint note"))?;
    let signature = sigs
        .iter()
        .find(|(n, i, _)| *n == name && *i == id)
        .ok_or_else(|| anyhow!("the checkpoint is not signed by {name}"))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&public)?;
    let sig = ed25519_dalek::Signature::from_slice(&signature.2)?;
    if key.verify(body.as_bytes(), &sig).is_err() {
        return Ok(Verdict::Mismatch { seq: size, reason: "checkpoint signature".into() });
    }
    let lines: Vec<&str> = body.lines().collect();
    let (Some(size_line), Some(root_line)) = (lines.get(1), lines.get(2)) else { bail!("malformed checkpoint body") };
    if size_line.parse::<u64>().ok() != Some(size) {
        return Ok(Verdict::Mismatch {
            seq: size,
            reason: format!("checkpoint covers {size_line} entries, the export {size}"),
        });
    }
    // The root over all leaves, level by level (RFC 9162: a lone right node moves up unchanged).
    let mut level = leaves;
    while level.len() > 1 {
        level = level.chunks(2).map(|p| if p.len() == 2 { merkle::node_hash(&p[0], &p[1]) } else { p[0] }).collect();
    }
    let root = level.first().copied().unwrap_or_else(merkle::empty_root);
    if B64.encode(root) != *root_line {
        return Ok(Verdict::Mismatch { seq: size.saturating_sub(1), reason: "merkle root".into() });
    }
    Ok(Verdict::Valid { entries: size })
}
