//! A terminated tenant's audit part of its export bundle, and the bundle's signed manifest.
//!
//! The part ([`AuditPart`], written through `kit::export`) is the whole log as the files
//! `NNNN-entries.jsonl` (the lines of `strongroom audit export`, cut at `kit::export::FILE_BYTES`;
//! the last one ends with the checkpoint line of the checkpoint covering them, so the entries
//! files opened and joined in order verify with `strongroom audit verify`), then
//! `checkpoints.jsonl` (every stored checkpoint) and `verifier-key.jsonl` (the tenant's C2SP
//! verifier key). It is written only once the tenant's outbox is drained and a checkpoint covers
//! the whole log. Once all four parts are written, the manifest is signed with the tenant's audit
//! key in vault-svc and stored with `control.tenant_terminations`; vault-svc signs for a terminated
//! tenant only until then. Nothing here changes the log.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kit::export::{Chunk, FileEntry, Lines, Manifest, PartWriter};
use kit::{ApiError, Db, Tenant};
use proto::audit::v1 as pb;
use serde_json::json;
use uuid::Uuid;

use crate::checkpoint::{self, Signer};
use crate::domain::note;
use crate::error::AuditError;
use crate::store;

/// This service's part of the bundle.
pub const PART: &str = "audit";
/// The entries files (`NNNN-entries.jsonl.age` once stored).
pub const ENTRIES: &str = "entries.jsonl";
/// The file of every stored checkpoint.
pub const CHECKPOINTS: &str = "checkpoints.jsonl";
/// The file of the tenant's verifier key.
pub const VERIFIER_KEY: &str = "verifier-key.jsonl";
/// Entries (or checkpoints) read per query while a file fills.
const PAGE: i64 = 500;
/// How often terminations are looked at for a manifest to sign.
const MANIFEST_POLL: Duration = Duration::from_secs(2);

/// The export line of an entry, exactly as `strongroom audit export` writes it: `seq`,
/// `canonical`, `leaf_hash`, `chain_hash` (base64); an entry pruned beyond retention as `seq`,
/// `pruned: true`, `leaf_hash`, and on the last pruned one the `chain_hash` the log continues from.
pub fn entry_line(e: &pb::Entry) -> serde_json::Value {
    if e.pruned {
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
    }
}

/// The last line of an export: `{"checkpoint": <signed note>}`.
pub fn checkpoint_line(signed_note: &str) -> serde_json::Value {
    json!({ "checkpoint": signed_note })
}

/// One line of `checkpoints.jsonl`.
#[derive(Debug, serde::Serialize)]
struct CheckpointRow<'a> {
    tree_size: i64,
    /// Base64.
    root_hash: String,
    signed_note: &'a str,
    key_version: i32,
    created_at: chrono::DateTime<chrono::Utc>,
}

/// Where the part resumes (`control.tenant_export_parts.resume_after`): after entry `n` (`"n"`),
/// after the checkpoint of tree size `n` (`"checkpoints:n"`), or at the verifier key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    /// Entries after this sequence number (from 0 for `None`).
    Entries(Option<u64>),
    /// Checkpoints of a larger tree than this.
    Checkpoints(u64),
    VerifierKey,
}

impl Cursor {
    fn parse(text: Option<&str>) -> Result<Self, ApiError> {
        let bad = || ApiError::internal(&format!("unreadable audit export cursor {text:?}"));
        Ok(match text {
            None => Cursor::Entries(None),
            Some("verifier-key") => Cursor::VerifierKey,
            Some(t) => match t.strip_prefix("checkpoints:") {
                Some(n) => Cursor::Checkpoints(n.parse().map_err(|_| bad())?),
                None => Cursor::Entries(Some(t.parse().map_err(|_| bad())?)),
            },
        })
    }

    fn text(self) -> Option<String> {
        match self {
            Cursor::Entries(None) => None,
            Cursor::Entries(Some(seq)) => Some(seq.to_string()),
            Cursor::Checkpoints(size) => Some(format!("checkpoints:{size}")),
            Cursor::VerifierKey => Some("verifier-key".to_owned()),
        }
    }
}

/// Writes a terminated tenant's audit part (see the module documentation).
pub struct AuditPart {
    db: Db,
    signer: Option<Signer>,
}

impl AuditPart {
    pub fn new(db: Db, signer: Option<Signer>) -> Self {
        Self { db, signer }
    }

    fn signer(&self) -> Result<&Signer, ApiError> {
        self.signer.as_ref().ok_or_else(|| AuditError::NoSigner.into())
    }

    /// The next entries file from `next`: up to the latest checkpoint, ending with its line when
    /// it gets there.
    async fn entries(&self, tenant: &Tenant, next: u64) -> Result<Chunk, ApiError> {
        let mut tx = self.db.begin(tenant).await?;
        // One snapshot: the prune mark, the kept leaves and the entries of the same commits.
        store::log::snapshot(&mut tx).await?;
        let latest = store::checkpoints::latest(&mut tx).await?.ok_or(AuditError::NoCheckpoint)?;
        let size = latest.tree_size;
        let (below, link) = store::log::prune_mark(&mut tx).await?.unwrap_or((0, [0u8; 32]));
        let mut lines = Lines::new();
        let mut next = next;
        while next < size && !lines.is_full() {
            let page: Vec<pb::Entry> = if next < below {
                let leaves = store::log::kept_leaves(&mut tx, next, size.min(below), PAGE).await?;
                leaves
                    .into_iter()
                    .map(|(seq, leaf)| pb::Entry {
                        seq,
                        canonical: Vec::new(),
                        leaf_hash: leaf.to_vec(),
                        chain_hash: if seq + 1 == below { link.to_vec() } else { Vec::new() },
                        pruned: true,
                    })
                    .collect()
            } else {
                store::log::entries(&mut tx, next, size, PAGE).await?
            };
            if page.is_empty() {
                // Missing rows are exported as missing, as `ExportEntries` does: verification
                // shows the gap to the recipient, where refusing would withhold the whole log.
                tracing::error!(tenant = %tenant.slug, from = next, "audit log rows missing from the export");
                next = if next < below { below } else { size };
                continue;
            }
            for e in &page {
                lines.push(&entry_line(e))?;
                next = e.seq + 1;
                if lines.is_full() {
                    break;
                }
            }
        }
        tx.rollback().await?;
        if next >= size {
            lines.push(&checkpoint_line(&latest.signed_note))?;
            return Ok(lines.into_chunk(ENTRIES, Cursor::Checkpoints(0).text()));
        }
        // Not `None`, which would complete the part: a file that is full holds an entry.
        let last = next.checked_sub(1).ok_or_else(|| ApiError::internal(&"an entries file without entries"))?;
        Ok(lines.into_chunk(ENTRIES, Cursor::Entries(Some(last)).text()))
    }

    /// The next checkpoints file, of checkpoints of a larger tree than `after`.
    async fn checkpoints(&self, tenant: &Tenant, after: u64) -> Result<Chunk, ApiError> {
        let mut tx = self.db.begin(tenant).await?;
        let mut lines = Lines::new();
        let mut after = after;
        let done = loop {
            let page = store::checkpoints::after(&mut tx, after, PAGE).await?;
            let short = (page.len() as i64) < PAGE;
            let mut cut = false;
            for (i, c) in page.iter().enumerate() {
                lines.push(&CheckpointRow {
                    tree_size: c.tree_size,
                    root_hash: B64.encode(&c.root_hash),
                    signed_note: &c.signed_note,
                    key_version: c.key_version,
                    created_at: c.created_at,
                })?;
                after = c.tree_size.max(0) as u64;
                if lines.is_full() && i + 1 < page.len() {
                    cut = true;
                    break;
                }
            }
            if cut {
                break false;
            }
            if short {
                break true;
            }
            if lines.is_full() {
                break false;
            }
        };
        tx.rollback().await?;
        let resume = if done { Cursor::VerifierKey } else { Cursor::Checkpoints(after) };
        Ok(lines.into_chunk(CHECKPOINTS, resume.text()))
    }

    /// The last file: the verifier key of the key that signed the latest checkpoint.
    async fn verifier_key(&self, tenant: &Tenant) -> Result<Chunk, ApiError> {
        let mut tx = self.db.begin(tenant).await?;
        let latest = store::checkpoints::latest(&mut tx).await?.ok_or(AuditError::NoCheckpoint)?;
        tx.rollback().await?;
        let key = verifier_key(self.signer()?, tenant, &latest.signed_note).await?;
        let mut lines = Lines::new();
        lines.push(&json!({ "verifier_key": key }))?;
        Ok(lines.into_chunk(VERIFIER_KEY, None))
    }
}

#[tonic::async_trait]
impl PartWriter for AuditPart {
    fn part(&self) -> &'static str {
        PART
    }

    /// Ready once the outbox is drained (the `tenant.terminate` record included) and a checkpoint
    /// covers the whole log; signs that checkpoint itself when the log grew past the latest one.
    async fn ready(&self, tenant: &Tenant) -> Result<bool, ApiError> {
        let signer = self.signer()?;
        let mut tx = self.db.begin(tenant).await?;
        if !store::log::provisioned(&mut tx).await? {
            tx.rollback().await?;
            return Err(AuditError::NotProvisioned.into());
        }
        let (waiting, _) = store::outbox::backlog(&mut tx, 1).await?;
        let size = store::log::size(&mut tx).await?;
        let covered = store::checkpoints::latest(&mut tx).await?.map_or(0, |c| c.tree_size);
        tx.rollback().await?;
        if waiting > 0 || size == 0 {
            // The sequencer drains it (a terminated tenant's log always holds its termination).
            return Ok(false);
        }
        if covered >= size {
            return Ok(true);
        }
        Ok(checkpoint::make(&self.db, signer, tenant).await?.is_some_and(|signed| signed >= size))
    }

    async fn next(&self, tenant: &Tenant, resume_after: Option<&str>) -> Result<Chunk, ApiError> {
        match Cursor::parse(resume_after)? {
            Cursor::Entries(after) => self.entries(tenant, after.map_or(0, |seq| seq + 1)).await,
            Cursor::Checkpoints(after) => self.checkpoints(tenant, after).await,
            Cursor::VerifierKey => self.verifier_key(tenant).await,
        }
    }
}

/// The C2SP verifier key of the key that signed `signed_note`, a checkpoint of `tenant`: vault-svc
/// signs the note's body again (already signed, so no new statement is made with the audit key)
/// and its answer names the public key, which must carry the note's key id.
async fn verifier_key(signer: &Signer, tenant: &Tenant, signed_note: &str) -> Result<String, ApiError> {
    let name = checkpoint::origin(tenant);
    let (body, signatures) =
        note::parse(signed_note).ok_or_else(|| ApiError::internal(&"a stored checkpoint is not a signed note"))?;
    let signed = kit::signing::sign(signer, tenant.slug.as_str(), checkpoint::KEY_NAME, body.as_bytes().to_vec())
        .await
        .map_err(|s| ApiError::from_status(&s))?;
    let id = note::key_id(&name, &signed.public_key);
    if !signatures.iter().any(|(n, i, _)| *n == name && *i == id) {
        return Err(ApiError::internal(&"the tenant's audit key changed since its latest checkpoint"));
    }
    Ok(note::verifier_key(&name, &signed.public_key))
}

/// How many entries the audit part exported: the rows of its entries files, less the checkpoint
/// line that ends the last one.
fn exported_entries(files: &[FileEntry]) -> Result<u64, ApiError> {
    let suffix = format!("-{ENTRIES}.age");
    let rows: i64 = files.iter().filter(|f| f.part == PART && f.name.ends_with(&suffix)).map(|f| f.rows).sum();
    u64::try_from(rows - 1)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::internal(&"the audit part holds no entries file"))
}

/// Signs and stores the manifest of `tenant_id`'s bundle if every part is written and none is
/// stored yet. Returns whether this call stored it.
pub async fn sign_manifest(db: &Db, signer: &Signer, tenant_id: Uuid) -> Result<bool, ApiError> {
    let Some(termination) = kit::export::termination(db, tenant_id).await? else { return Ok(false) };
    if !kit::export::parts_complete(db, tenant_id).await? {
        return Ok(false);
    }
    let tenant = &termination.tenant;
    let files = kit::export::files(db, tenant_id).await?;
    // The checkpoint the entries files end with, not the latest: vault-svc's signature counts
    // may have been logged since the part was written.
    let size = exported_entries(&files)?;
    let mut tx = db.begin(tenant).await?;
    let last = store::checkpoints::newest_between(&mut tx, size - 1, size).await?;
    tx.rollback().await?;
    let last = last.ok_or_else(|| ApiError::internal(&"no checkpoint of the exported entries"))?;
    let verifier_key = verifier_key(signer, tenant, &last.signed_note).await?;
    let manifest = Manifest {
        format: kit::export::FORMAT.to_owned(),
        tenant_id,
        slug: tenant.slug.as_str().to_owned(),
        created_at: tenant.created_at,
        terminated_at: termination.terminated_at,
        terminated_by: termination.terminated_by,
        recipient: termination.recipient,
        files,
        final_checkpoint: last.signed_note,
        verifier_key,
    };
    let canonical = manifest.canonical()?;
    let signed = kit::signing::sign(signer, tenant.slug.as_str(), checkpoint::KEY_NAME, canonical.clone())
        .await
        .map_err(|s| ApiError::from_status(&s))?;
    if note::verifier_key(&checkpoint::origin(tenant), &signed.public_key) != manifest.verifier_key {
        return Err(ApiError::internal(&"the tenant's audit key changed while the manifest was signed"));
    }
    let digest = kit::export::sha256_hex(&canonical);
    let text = String::from_utf8(canonical).map_err(|e| ApiError::internal(&e))?;
    let stored = sqlx::query(
        "UPDATE control.tenant_terminations
         SET manifest = $2, manifest_sha256 = $3, manifest_signature = $4, exported_at = now()
         WHERE tenant_id = $1 AND manifest IS NULL",
    )
    .bind(tenant_id)
    .bind(&text)
    .bind(&digest)
    .bind(B64.encode(&signed.signature))
    .execute(db.control_pool())
    .await
    .map_err(kit::tenancy::db_error)?;
    if stored.rows_affected() == 0 {
        // Another replica stored it first (the same bytes: the manifest is deterministic).
        return Ok(false);
    }
    kit::metrics::Metrics::global().event("tenant_export_manifest_signed");
    tracing::info!(tenant = %tenant.slug, manifest_sha256 = %digest, size, "tenant export manifest signed");
    Ok(true)
}

/// Signs the manifest of every termination whose parts are all written; returns how many.
pub async fn sign_manifests(db: &Db, signer: &Signer) -> Result<usize, ApiError> {
    let pending: Vec<Uuid> = sqlx::query_scalar(
        "SELECT tenant_id FROM control.tenant_terminations WHERE manifest IS NULL ORDER BY terminated_at",
    )
    .fetch_all(db.control_pool())
    .await
    .map_err(kit::tenancy::db_error)?;
    let mut signed = 0;
    for tenant_id in pending {
        match sign_manifest(db, signer, tenant_id).await {
            Ok(true) => signed += 1,
            Ok(false) => {}
            Err(e) => {
                kit::metrics::Metrics::global().event("tenant_export_manifest_failed");
                tracing::error!(tenant_id = %tenant_id, reason = %e.reason, "tenant export manifest not signed");
            }
        }
    }
    Ok(signed)
}

/// Writes the audit part of every terminated tenant (`kit::export::spawn`) and signs each
/// bundle's manifest once its parts are written, until `shutdown`. Without `signer` neither can
/// finish: the failures are logged and counted until vault-svc is configured.
pub fn spawn(db: Db, signer: Option<Signer>, shutdown: kit::server::Shutdown) {
    kit::export::spawn(db.clone(), Arc::new(AuditPart::new(db.clone(), signer.clone())), shutdown.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.clone().wait() => return,
                () = tokio::time::sleep(MANIFEST_POLL) => {}
            }
            let Some(signer) = signer.as_ref() else { continue };
            if let Err(e) = sign_manifests(&db, signer).await {
                tracing::warn!(reason = %e.reason, "terminations not listed for their manifests");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_reads_back_what_it_wrote() {
        for cursor in [
            Cursor::Entries(None),
            Cursor::Entries(Some(0)),
            Cursor::Entries(Some(41)),
            Cursor::Checkpoints(0),
            Cursor::Checkpoints(1000),
            Cursor::VerifierKey,
        ] {
            assert_eq!(Cursor::parse(cursor.text().as_deref()).expect("parse"), cursor);
        }
        assert!(Cursor::parse(Some("checkpoints:x")).is_err());
        assert!(Cursor::parse(Some("-1")).is_err());
    }

    #[test]
    fn entry_lines_are_those_of_the_cli_export() {
        let stored = pb::Entry {
            seq: 3,
            canonical: b"{}".to_vec(),
            leaf_hash: vec![1; 32],
            chain_hash: vec![2; 32],
            pruned: false,
        };
        let line = serde_json::to_string(&entry_line(&stored)).expect("json");
        assert!(line.contains(r#""seq":3"#) && line.contains(r#""canonical":"e30=""#));
        let pruned = pb::Entry { pruned: true, canonical: Vec::new(), chain_hash: Vec::new(), ..stored.clone() };
        let line = entry_line(&pruned);
        assert_eq!(line["pruned"], json!(true));
        assert!(line.get("chain_hash").is_none() && line.get("canonical").is_none());
        assert_eq!(checkpoint_line("note\n")["checkpoint"], json!("note\n"));
    }

    #[test]
    fn the_exported_entries_are_the_entries_files_rows_less_the_checkpoint_line() {
        let file = |part: &str, seq, name: &str, rows| FileEntry {
            part: part.into(),
            seq,
            name: name.into(),
            rows,
            sha256: String::new(),
        };
        let files = vec![
            file("auth", 1, "0001-users.jsonl.age", 7),
            file("audit", 1, "0001-entries.jsonl.age", 1000),
            file("audit", 2, "0002-entries.jsonl.age", 11),
            file("audit", 3, "0003-checkpoints.jsonl.age", 40),
            file("audit", 4, "0004-verifier-key.jsonl.age", 1),
        ];
        assert_eq!(exported_entries(&files).expect("entries"), 1010);
        assert!(exported_entries(&files[..1]).is_err());
    }
}
