//! `strongroom audit export` and `strongroom audit verify`: anyone holding an export and the
//! tenant's verifier key can check, offline, that the log was not rewritten — every leaf from its
//! canonical bytes, the hash chain, the Merkle root, and the checkpoint's Ed25519 signature. A
//! terminated tenant's export bundle verifies the same way (`verify_bundle`), with its recipient's
//! age identity, after its signed manifest and every file's digest.

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
                // The lines of a terminated tenant's bundle too (pruned entries as leaves only).
                writeln!(file, "{}", audit_svc::export::entry_line(&e))?;
                written += 1;
            }
            Some(pb::stream_item::Item::Checkpoint(c)) => checkpoint = Some(c.signed_note),
            None => {}
        }
    }
    let checkpoint = checkpoint.ok_or_else(|| anyhow!("audit: the export ended without its checkpoint"))?;
    writeln!(file, "{}", audit_svc::export::checkpoint_line(&checkpoint))?;
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
    let data = std::fs::read(export).with_context(|| export.display().to_string())?;
    Ok(verify_lines(lines_of(&data), verifier_key)?.0)
}

/// The non-blank lines of an export.
fn lines_of(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|b| *b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace))
}

/// Verifies the lines of an export (see [`verify`]); also returns the checkpoint it ends with.
fn verify_lines<'a>(
    lines: impl Iterator<Item = &'a [u8]>,
    verifier_key: &str,
) -> anyhow::Result<(Verdict, Option<String>)> {
    use ed25519_dalek::Verifier;
    let (name, id, public) = parse_verifier_key(verifier_key)?;
    let lines: Vec<&[u8]> = lines.collect();
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
            let mismatch = |reason: &str| Ok((Verdict::Mismatch { seq, reason: reason.to_owned() }, None));
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
        return Ok((Verdict::Mismatch { seq: size, reason: "checkpoint signature".into() }, None));
    }
    let lines: Vec<&str> = body.lines().collect();
    let (Some(size_line), Some(root_line)) = (lines.get(1), lines.get(2)) else { bail!("malformed checkpoint body") };
    if size_line.parse::<u64>().ok() != Some(size) {
        let reason = format!("checkpoint covers {size_line} entries, the export {size}");
        return Ok((Verdict::Mismatch { seq: size, reason }, None));
    }
    // The root over all leaves, level by level (RFC 9162: a lone right node moves up unchanged).
    let mut level = leaves;
    while level.len() > 1 {
        level = level.chunks(2).map(|p| if p.len() == 2 { merkle::node_hash(&p[0], &p[1]) } else { p[0] }).collect();
    }
    let root = level.first().copied().unwrap_or_else(merkle::empty_root);
    if B64.encode(root) != *root_line {
        return Ok((Verdict::Mismatch { seq: size.saturating_sub(1), reason: "merkle root".into() }, None));
    }
    Ok((Verdict::Valid { entries: size }, Some(note_text)))
}

/// The manifest of a terminated tenant's bundle (`DIR/manifest.json`) and its exact bytes, which
/// must be its canonical (RFC 8785) form: the bytes signed are the bytes read. Its signature is
/// not checked here ([`verify_bundle`] does).
pub fn bundle_manifest(dir: &Path) -> anyhow::Result<(Vec<u8>, kit::export::Manifest)> {
    let path = dir.join("manifest.json");
    let bytes = std::fs::read(&path).with_context(|| path.display().to_string())?;
    let manifest: kit::export::Manifest =
        serde_json::from_slice(&bytes).with_context(|| format!("{}: not a bundle manifest", path.display()))?;
    let canonical = manifest.canonical().map_err(|e| anyhow!("manifest: {e}"))?;
    if canonical != bytes {
        bail!("{}: not in canonical (RFC 8785) form", path.display());
    }
    if manifest.format != kit::export::FORMAT {
        bail!("{}: format {:?}, expected {}", path.display(), manifest.format, kit::export::FORMAT);
    }
    Ok((bytes, manifest))
}

/// Verifies a terminated tenant's export bundle offline, laid out as `DIR/manifest.json` (the
/// canonical manifest), `DIR/manifest.sig` (its Ed25519 signature, base64) and `DIR/<part>/<name>`
/// for each file of the manifest. In order: the manifest's signature with the verifier key it names
/// (which must be the tenant's audit key, `strongroom.audit/<slug>`: compare it with the one you
/// obtained earlier, since whoever could rewrite the bundle could sign with a key of their own); the
/// SHA-256 of every file; then the audit part's entries files, opened with `identity` and read in
/// order, as one export (see [`verify`]), which must end with the manifest's final checkpoint.
/// A bundle that is not what its manifest says is an error; a log that does not verify is a
/// [`Verdict::Mismatch`].
pub fn verify_bundle(dir: &Path, identity: &age::x25519::Identity) -> anyhow::Result<Verdict> {
    use ed25519_dalek::Verifier;
    let (bytes, manifest) = bundle_manifest(dir)?;
    let (name, _, public) = parse_verifier_key(&manifest.verifier_key)?;
    let origin = format!("strongroom.audit/{}", manifest.slug);
    if name != origin {
        bail!("the manifest's verifier key is {name}'s, not the tenant's ({origin})");
    }
    let sig_path = dir.join("manifest.sig");
    let sig_text = std::fs::read_to_string(&sig_path).with_context(|| sig_path.display().to_string())?;
    let sig = B64.decode(sig_text.trim()).with_context(|| format!("{}: not base64", sig_path.display()))?;
    let sig = ed25519_dalek::Signature::from_slice(&sig).context("manifest.sig: not an Ed25519 signature")?;
    if ed25519_dalek::VerifyingKey::from_bytes(&public)?.verify(&bytes, &sig).is_err() {
        bail!("the manifest's signature does not verify with its verifier key");
    }

    // Every file as the manifest lists it; the audit part's entries files kept, by sequence.
    let entries_suffix = format!("-{}.age", audit_svc::export::ENTRIES);
    let key_suffix = format!("-{}.age", audit_svc::export::VERIFIER_KEY);
    let mut entries: Vec<(i32, String, Vec<u8>)> = Vec::new();
    let mut key_file = None;
    for f in &manifest.files {
        let safe = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !safe(&f.part) || !safe(&f.name) || f.name.starts_with('.') {
            bail!("the manifest names a file outside the bundle: {}/{}", f.part, f.name);
        }
        let path = dir.join(&f.part).join(&f.name);
        let data = std::fs::read(&path).with_context(|| path.display().to_string())?;
        if kit::export::sha256_hex(&data) != f.sha256 {
            bail!("{}/{}: its SHA-256 is not the manifest's", f.part, f.name);
        }
        if f.part == audit_svc::export::PART {
            if f.name.ends_with(&entries_suffix) {
                entries.push((f.seq, format!("{}/{}", f.part, f.name), data));
            } else if f.name.ends_with(&key_suffix) {
                key_file = Some(data);
            }
        }
    }
    entries.sort_by_key(|e| e.0);
    if entries.is_empty() {
        bail!("the bundle holds no audit entries file");
    }

    if let Some(sealed) = key_file {
        #[derive(serde::Deserialize)]
        struct KeyLine {
            verifier_key: String,
        }
        let plain = kit::export::open(identity, &sealed).map_err(|e| anyhow!("audit verifier key file: {e}"))?;
        let line: KeyLine = serde_json::from_slice(plain.trim_ascii()).context("audit verifier key file")?;
        if line.verifier_key != manifest.verifier_key {
            bail!("the audit part's verifier key is not the manifest's");
        }
    }

    // Opened in memory only, and verified as one export without joining them into a copy.
    let opened = entries
        .iter()
        .map(|(_, name, sealed)| kit::export::open(identity, sealed).map_err(|e| anyhow!("{name}: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let last_line = opened.last().and_then(|plain| lines_of(plain).last()).unwrap_or_default();
    let ends_with = serde_json::from_slice::<Line<'_>>(last_line).ok().and_then(|l| l.checkpoint);
    let (verdict, checkpoint) = verify_lines(opened.iter().flat_map(|plain| lines_of(plain)), &manifest.verifier_key)?;
    let Verdict::Valid { entries } = verdict else { return Ok(verdict) };
    if ends_with.is_none() || checkpoint != ends_with {
        return Ok(Verdict::Mismatch { seq: entries, reason: "the export does not end with its checkpoint".into() });
    }
    if checkpoint.as_deref() != Some(manifest.final_checkpoint.as_str()) {
        return Ok(Verdict::Mismatch {
            seq: entries,
            reason: "the manifest's final checkpoint is not the export's".into(),
        });
    }
    Ok(Verdict::Valid { entries })
}

#[cfg(test)]
mod tests {
    use audit_svc::domain::entry::Entry;
    use ed25519_dalek::Signer;
    use kit::export::{FileEntry, Manifest};
    use proto::audit::v1 as pb;

    use super::*;

    const SLUG: &str = "acme";

    /// What to get wrong in a bundle whose manifest is nevertheless signed.
    #[derive(Default)]
    struct Faults {
        /// An entry left out of the entries files.
        skip_seq: Option<u64>,
        /// A final checkpoint in the manifest other than the export's.
        final_checkpoint: Option<String>,
    }

    /// Writes a bundle of five entries (two entries files) to `dir`, encrypted to `identity`, its
    /// manifest signed with a fixed audit key.
    fn bundle(dir: &Path, identity: &age::x25519::Identity, faults: Faults) {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let public = key.verifying_key().to_bytes();
        let origin = format!("strongroom.audit/{SLUG}");
        let mut chain = [0u8; 32];
        let mut leaves = Vec::new();
        let mut lines: Vec<String> = Vec::new();
        for seq in 0..5u64 {
            let entry = Entry {
                seq,
                event_id: uuid::Uuid::from_u128(u128::from(seq) + 1),
                occurred_at: chrono::DateTime::from_timestamp(1_700_000_000 + seq as i64, 0).expect("time"),
                service: "auth".into(),
                actor: "user:u1".into(),
                action: "auth.login".into(),
                resource: "session/s1".into(),
                outcome: "success".into(),
                request_id: None,
                trace_id: None,
                details: serde_json::json!({ "n": seq }),
            };
            let (canonical, leaf, link) = entry.seal(&chain);
            chain = link;
            leaves.push(leaf);
            let e = pb::Entry { seq, canonical, leaf_hash: leaf.to_vec(), chain_hash: link.to_vec(), pruned: false };
            if faults.skip_seq != Some(seq) {
                lines.push(audit_svc::export::entry_line(&e).to_string());
            }
        }
        let mut level = leaves;
        while level.len() > 1 {
            level =
                level.chunks(2).map(|p| if p.len() == 2 { merkle::node_hash(&p[0], &p[1]) } else { p[0] }).collect();
        }
        let body = note::body(&origin, 5, &level[0]);
        let checkpoint = note::signed_note(&body, &origin, &public, &key.sign(body.as_bytes()).to_bytes());
        let verifier_key = note::verifier_key(&origin, &public);
        let (first, second) = lines.split_at(3);
        let texts = [
            ("auth", "users.jsonl", "{\"id\":\"u1\"}\n".to_owned()),
            ("audit", "entries.jsonl", format!("{}\n", first.join("\n"))),
            (
                "audit",
                "entries.jsonl",
                format!("{}\n{}\n", second.join("\n"), audit_svc::export::checkpoint_line(&checkpoint)),
            ),
            ("audit", "verifier-key.jsonl", format!("{}\n", serde_json::json!({ "verifier_key": verifier_key }))),
        ];
        let recipient = identity.to_public();
        let mut files = Vec::new();
        for (part, name, text) in texts {
            let seq = files.iter().filter(|f: &&FileEntry| f.part == part).count() as i32 + 1;
            let name = format!("{seq:04}-{name}.age");
            let sealed = kit::export::seal(&recipient, text.as_bytes()).expect("seal");
            std::fs::create_dir_all(dir.join(part)).expect("mkdir");
            std::fs::write(dir.join(part).join(&name), &sealed).expect("write");
            let rows = text.lines().count() as i64;
            files.push(FileEntry { part: part.into(), seq, name, rows, sha256: kit::export::sha256_hex(&sealed) });
        }
        let manifest = Manifest {
            format: kit::export::FORMAT.into(),
            tenant_id: uuid::Uuid::from_u128(42),
            slug: SLUG.into(),
            created_at: chrono::DateTime::from_timestamp(1_600_000_000, 0).expect("time"),
            terminated_at: chrono::DateTime::from_timestamp(1_700_000_100, 0).expect("time"),
            terminated_by: "operator".into(),
            recipient: recipient.to_string(),
            files,
            final_checkpoint: faults.final_checkpoint.unwrap_or(checkpoint),
            verifier_key,
        };
        let canonical = manifest.canonical().expect("canonical");
        std::fs::write(dir.join("manifest.json"), &canonical).expect("write");
        std::fs::write(dir.join("manifest.sig"), B64.encode(key.sign(&canonical).to_bytes())).expect("write");
    }

    #[test]
    fn a_bundle_verifies_offline_with_the_recipients_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let identity = age::x25519::Identity::generate();
        bundle(dir.path(), &identity, Faults::default());
        assert_eq!(verify_bundle(dir.path(), &identity).expect("verify"), Verdict::Valid { entries: 5 });
        let (_, manifest) = bundle_manifest(dir.path()).expect("manifest");
        assert_eq!(manifest.files.len(), 4);
        // Without the recipient's identity nothing opens.
        assert!(verify_bundle(dir.path(), &age::x25519::Identity::generate()).is_err());
    }

    #[test]
    fn a_changed_file_or_manifest_is_refused() {
        let identity = age::x25519::Identity::generate();
        let dir = tempfile::tempdir().expect("tempdir");
        bundle(dir.path(), &identity, Faults::default());
        // Another part's file, replaced by one encrypted to the same recipient.
        let other = kit::export::seal(&identity.to_public(), b"{}\n").expect("seal");
        std::fs::write(dir.path().join("auth/0001-users.jsonl.age"), other).expect("write");
        let e = verify_bundle(dir.path(), &identity).expect_err("a replaced file");
        assert!(e.to_string().contains("SHA-256"), "{e}");

        let dir = tempfile::tempdir().expect("tempdir");
        bundle(dir.path(), &identity, Faults::default());
        let path = dir.path().join("manifest.json");
        let text = std::fs::read_to_string(&path).expect("read").replace("\"operator\"", "\"someone\"");
        std::fs::write(&path, text).expect("write");
        let e = verify_bundle(dir.path(), &identity).expect_err("an edited manifest");
        assert!(e.to_string().contains("signature"), "{e}");
    }

    #[test]
    fn a_signed_bundle_whose_log_does_not_verify_is_a_mismatch() {
        let identity = age::x25519::Identity::generate();
        let dir = tempfile::tempdir().expect("tempdir");
        bundle(dir.path(), &identity, Faults { skip_seq: Some(3), ..Faults::default() });
        assert_eq!(
            verify_bundle(dir.path(), &identity).expect("verify"),
            Verdict::Mismatch { seq: 4, reason: "sequence gap".into() }
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let other = "strongroom.audit/acme\n4\nAAAA\n\n\u{2014} strongroom.audit/acme AAAA\n".to_owned();
        bundle(dir.path(), &identity, Faults { final_checkpoint: Some(other), ..Faults::default() });
        assert_eq!(
            verify_bundle(dir.path(), &identity).expect("verify"),
            Verdict::Mismatch { seq: 5, reason: "the manifest's final checkpoint is not the export's".into() }
        );
    }
}
