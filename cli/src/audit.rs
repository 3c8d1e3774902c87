//! `strongroom audit export` and `strongroom audit verify`: anyone holding an export and the
//! tenant's verifier key can check, offline, that the log was not rewritten — every leaf from its
//! canonical bytes, the hash chain, the Merkle root, and the checkpoint's Ed25519 signature.

use std::io::Write;
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

/// One export line, parsed without building a JSON tree (base64 strings borrow from the file).
#[derive(serde::Deserialize)]
struct Line<'a> {
    seq: Option<u64>,
    #[serde(borrow)]
    canonical: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    leaf_hash: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    chain_hash: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    pruned: bool,
    checkpoint: Option<String>,
}

/// Only the `seq` of an entry's canonical bytes (the rest is skipped, not built).
#[derive(serde::Deserialize)]
struct CanonicalSeq {
    seq: u64,
}

/// What one line says, checked as far as it can be without its predecessors.
struct Checked {
    seq: u64,
    leaf: Hash,
    chain: Option<Hash>,
    pruned: bool,
    error: Option<&'static str>,
}

fn hash_of(v: &Option<std::borrow::Cow<'_, str>>) -> Option<Hash> {
    let mut out = [0u8; 32];
    match B64.decode_slice(v.as_deref()?.as_bytes(), &mut out) {
        Ok(32) => Some(out),
        _ => None,
    }
}

/// Parses and checks one entry line: canonical bytes carry its seq, leaf hash recomputed.
fn check_line(line: &[u8]) -> anyhow::Result<Result<Checked, String>> {
    let l: Line<'_> = serde_json::from_slice(line)?;
    if let Some(note) = l.checkpoint {
        return Ok(Err(note));
    }
    let seq = l.seq.ok_or_else(|| anyhow!("no seq"))?;
    let claimed_chain = hash_of(&l.chain_hash);
    let mut c = Checked { seq, leaf: [0u8; 32], chain: claimed_chain, pruned: l.pruned, error: None };
    if l.pruned {
        // Pruned beyond retention: its leaf still counts towards the root the checkpoint signs.
        match hash_of(&l.leaf_hash) {
            Some(leaf) => c.leaf = leaf,
            None => c.error = Some("leaf hash"),
        }
        if l.chain_hash.is_some() && claimed_chain.is_none() {
            c.error = Some("chain hash");
        }
        return Ok(Ok(c));
    }
    let canonical = B64.decode(l.canonical.as_deref().unwrap_or_default()).unwrap_or_default();
    if serde_json::from_slice::<CanonicalSeq>(&canonical).ok().map(|f| f.seq) != Some(seq) {
        c.error = Some("canonical bytes do not carry this sequence number");
        return Ok(Ok(c));
    }
    c.leaf = merkle::leaf_hash(&canonical);
    if hash_of(&l.leaf_hash) != Some(c.leaf) {
        c.error = Some("leaf hash");
    } else if claimed_chain.is_none() {
        c.error = Some("chain hash");
    }
    Ok(Ok(c))
}

/// Verifies an export against a verifier key. Lines are parsed, base64-decoded and hashed on every
/// core; the chain, sequence numbers and the Merkle root are then checked in order.
pub fn verify(export: &Path, verifier_key: &str) -> anyhow::Result<Verdict> {
    use ed25519_dalek::Verifier;
    let (name, id, public) = parse_verifier_key(verifier_key)?;
    let data = std::fs::read(export).with_context(|| export.display().to_string())?;
    let lines: Vec<&[u8]> = data.split(|b| *b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 16);
    let chunk = lines.len().div_ceil(threads).max(1);
    type Part = anyhow::Result<(Vec<Checked>, Option<String>)>;
    let parts: Vec<Part> = std::thread::scope(|scope| {
        let handles: Vec<_> = lines
            .chunks(chunk)
            .enumerate()
            .map(|(part, lines)| {
                scope.spawn(move || {
                    let mut out = Vec::with_capacity(lines.len());
                    let mut note = None;
                    for (i, line) in lines.iter().enumerate() {
                        match check_line(line).with_context(|| format!("line {}", part * chunk + i + 1))? {
                            Ok(c) => out.push(c),
                            Err(n) => note = Some(n),
                        }
                    }
                    Ok((out, note))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("verifier thread failed")))).collect()
    });
    let mut chain: Hash = [0u8; 32];
    let mut leaves: Vec<Hash> = Vec::with_capacity(lines.len());
    let mut checkpoint = None;
    let mut pruned_done = false;
    for part in parts {
        let (checked, note) = part?;
        if note.is_some() {
            checkpoint = note;
        }
        for c in checked {
            let seq = c.seq;
            let mismatch = |reason: &str| Ok(Verdict::Mismatch { seq, reason: reason.to_owned() });
            if seq != leaves.len() as u64 {
                return mismatch("sequence gap");
            }
            if let Some(e) = c.error {
                return mismatch(e);
            }
            if c.pruned {
                // The chain continues from the link the last pruned entry carries.
                if pruned_done {
                    return mismatch("a pruned entry after a stored one");
                }
                if let Some(link) = c.chain {
                    chain = link;
                }
                leaves.push(c.leaf);
                continue;
            }
            pruned_done = true;
            chain = merkle::chain_hash(&chain, &c.leaf);
            if c.chain != Some(chain) {
                return mismatch("chain hash");
            }
            leaves.push(c.leaf);
        }
    }
    drop(lines);
    drop(data);
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
