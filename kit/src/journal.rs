//! The erasure journal: what a restore from a backup must not bring back.
//!
//! A backup taken before a data subject's key was shredded still holds that key (sealed by the
//! tenant key, sealed by the master key the HSM keeps): restored as it is, the subject's data would
//! open again; a tenant terminated or purged after the backup would serve again. So every erasure
//! (a subject key or a tenant key shredded by vault-svc), every termination (auth-svc) and every
//! purge (the operator's `strongroom tenant purge`) is also written here, outside the database, and
//! `strongroom backup restore` applies every entry to the restored cluster before any service
//! serves it (replaying is idempotent: what the restored database already holds stays as it is).
//!
//! The journal is a directory (beside the backup repository, on storage the database's backups do
//! not restore): one file per entry, written under a temporary name, flushed, then linked to its
//! final name (which never replaces a file) and the directory flushed, so a file with a final name
//! is complete. An entry is written *before* the change it records commits: a failed commit leaves
//! an entry whose replay erases what the caller asked to erase, never the reverse. Each entry is
//! signed by the certificate key of the workload that wrote it, and a restore accepts an entry only
//! when its signature verifies against the deployment's CA and its signer is the one workload that
//! makes such a change (vault-svc shreds, auth-svc terminates, the operator purges).
//!
//! A data subject is named only by the SHA-256 of its id: the journal outlives the erasure and must
//! not keep the identifier of the person it erased.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use uuid::Uuid;

use crate::tls::{CertStore, Identity, Signed, TlsError};

/// The journal entry format.
pub const FORMAT: &str = "strongroom.erasure-journal.v1";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("erasure journal {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("erasure journal: signing: {0}")]
    Sign(#[from] TlsError),
    #[error("erasure journal: {0}")]
    Json(#[from] serde_json::Error),
    #[error("erasure journal {dir}: {count} entries do not verify: {each}")]
    Invalid { dir: PathBuf, count: usize, each: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io { path: path.to_owned(), source }
}

/// What was erased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Erasure {
    /// vault-svc shredded every version of a data subject's key (a deleted user's, whose subject
    /// is their id, or another subject's).
    SubjectShred {
        /// Hex SHA-256 of the subject id ([`subject_sha256`]).
        subject_sha256: String,
    },
    /// vault-svc shredded every version of the tenant's key.
    TenantShred,
    /// auth-svc terminated the tenant.
    TenantTerminate { recipient: String, reason: String, terminated_by: String, export_until: DateTime<Utc> },
    /// The operator purged the tenant; the tombstone it kept.
    TenantPurge {
        created_at: DateTime<Utc>,
        terminated_at: DateTime<Utc>,
        terminated_by: String,
        purged_by: String,
        final_checkpoint: Option<String>,
        manifest_sha256: Option<String>,
    },
}

impl Erasure {
    /// The one workload whose signature an entry of this kind needs.
    pub fn writer(&self) -> &'static str {
        match self {
            Self::SubjectShred { .. } | Self::TenantShred => Identity::VAULT,
            Self::TenantTerminate { .. } => Identity::AUTH,
            Self::TenantPurge { .. } => Identity::OPERATOR,
        }
    }

    /// The entry kind (`subject_shred`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::SubjectShred { .. } => "subject_shred",
            Self::TenantShred => "tenant_shred",
            Self::TenantTerminate { .. } => "tenant_terminate",
            Self::TenantPurge { .. } => "tenant_purge",
        }
    }
}

/// How the journal names a data subject: the hex SHA-256 of its id.
pub fn subject_sha256(subject: &str) -> String {
    hex::encode(sha2::Sha256::digest(subject.as_bytes()))
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub format: String,
    pub id: Uuid,
    /// When it was written (just before the change committed).
    pub time: DateTime<Utc>,
    pub tenant_id: Uuid,
    pub tenant_slug: String,
    pub erasure: Erasure,
}

/// An entry file: the entry and its signature over [`message`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFile {
    entry: serde_json::Value,
    signature: SignatureJson,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureJson {
    /// The signer's certificate chain, leaf first, base64 DER.
    certificates: Vec<String>,
    /// The TLS signature scheme's IANA number.
    scheme: u16,
    value: String,
}

/// What an entry's signature covers: the format line and the entry in RFC 8785 form.
fn message(entry: &serde_json::Value) -> Result<Vec<u8>, JournalError> {
    let mut message = format!("{FORMAT}\n").into_bytes();
    message.extend(serde_jcs::to_vec(entry)?);
    Ok(message)
}

/// A journal to write to, signing with `certs`' key.
#[derive(Clone, Debug)]
pub struct Journal {
    dir: PathBuf,
    certs: CertStore,
}

impl Journal {
    /// The journal in `dir` (made if missing), written as `certs`' workload.
    pub fn open(dir: &Path, certs: CertStore) -> Result<Self, JournalError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        Ok(Self { dir: dir.to_owned(), certs })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes and flushes an entry for `erasure` of tenant `tenant_id` (`tenant_slug`); returns it.
    /// Call before committing the change it records, and do not commit when it fails.
    pub async fn append(&self, tenant_id: Uuid, tenant_slug: &str, erasure: Erasure) -> Result<Entry, JournalError> {
        let entry = Entry {
            format: FORMAT.to_owned(),
            id: Uuid::now_v7(),
            time: Utc::now(),
            tenant_id,
            tenant_slug: tenant_slug.to_owned(),
            erasure,
        };
        let value = serde_json::to_value(&entry)?;
        let signed = self.certs.sign(&message(&value)?)?;
        let file = EntryFile {
            entry: value,
            signature: SignatureJson {
                certificates: signed.chain.iter().map(|c| B64.encode(c)).collect(),
                scheme: signed.scheme,
                value: B64.encode(&signed.value),
            },
        };
        let bytes = serde_json::to_vec_pretty(&file)?;
        let name = file_name(entry.time, entry.id);
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || write_durably(&dir, &name, &bytes))
            .await
            .map_err(|e| JournalError::Io { path: self.dir.clone(), source: std::io::Error::other(e) })??;
        tracing::info!(
            entry = %entry.id,
            kind = entry.erasure.kind(),
            tenant = %entry.tenant_slug,
            "erasure journaled"
        );
        Ok(entry)
    }
}

/// The journal a service writes to, from its `service.erasure_journal` setting: none (with a
/// warning, since a restore would then bring back what was erased since its backup) when unset.
pub fn from_setting(dir: Option<&Path>, certs: &CertStore, service: &str) -> Result<Option<Journal>, JournalError> {
    match dir {
        Some(dir) => Journal::open(dir, certs.clone()).map(Some),
        None => {
            tracing::warn!(
                service,
                "service.erasure_journal is not set: a restore from a backup would bring back what was erased since"
            );
            Ok(None)
        }
    }
}

/// The error a service answers when its journal cannot be written: nothing was changed.
pub fn unavailable(e: &JournalError) -> crate::ApiError {
    tracing::error!(error = %e, "erasure journal not written; the change is refused");
    crate::ApiError::unavailable(
        "ERASURE_JOURNAL_UNAVAILABLE",
        "the erasure journal cannot be written; nothing was changed",
    )
}

/// The file name of an entry written at `time`.
fn file_name(time: DateTime<Utc>, id: Uuid) -> String {
    format!("{}-{id}.json", time.format("%Y%m%dT%H%M%S%.6fZ"))
}

/// When the entry named `name` was written, from its name.
fn written_at(name: &str) -> Option<DateTime<Utc>> {
    let (time, _) = name.split_once('-')?;
    chrono::NaiveDateTime::parse_from_str(time, "%Y%m%dT%H%M%S%.6fZ").ok().map(|t| t.and_utc())
}

/// Deletes the entries written before `before` (and flushes the directory); returns how many.
/// Call with the start of the oldest backup kept, less an allowance for the writers' clocks: every
/// backup a restore can start from already holds what those entries record, so no restore needs
/// them. Files whose name is not an entry's are left alone.
pub fn prune(dir: &Path, before: DateTime<Utc>) -> Result<usize, JournalError> {
    let mut pruned = 0;
    for entry in std::fs::read_dir(dir).map_err(io(dir))?.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && written_at(&name).is_some_and(|t| t < before) {
            std::fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
            pruned += 1;
        }
    }
    if pruned > 0 {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    }
    Ok(pruned)
}

/// Writes `bytes` as `dir/name`, complete or not at all, and flushes file and directory.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), JournalError> {
    use std::io::Write;
    let temporary = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let mut file = std::fs::File::options().write(true).create_new(true).open(&temporary).map_err(io(&temporary))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(io(&temporary))?;
    // A link never replaces an entry; the temporary name goes once the entry is there.
    std::fs::hard_link(&temporary, &path).map_err(io(&path))?;
    std::fs::remove_file(&temporary).map_err(io(&temporary))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(())
}

/// An entry whose signature verified, with its signer.
#[derive(Debug, Clone)]
pub struct Verified {
    pub entry: Entry,
    pub signer: Identity,
    pub file: String,
}

/// Every entry of the journal in `dir`, oldest first, each verified against `ca_pem`. Fails,
/// naming each, when any entry does not parse, does not verify, or was signed by a workload that
/// does not make that change: a restore must not go on with a journal it cannot trust. Temporary
/// files (an entry whose writer stopped before linking it, whose change never committed) are
/// skipped.
pub fn read(dir: &Path, ca_pem: &[u8]) -> Result<Vec<Verified>, JournalError> {
    let mut entries = Vec::new();
    let mut invalid = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        match verify_entry(&bytes, ca_pem) {
            Ok((entry, signer)) => entries.push(Verified { entry, signer, file: name }),
            Err(e) => invalid.push(format!("{name}: {e}")),
        }
    }
    if !invalid.is_empty() {
        return Err(JournalError::Invalid { dir: dir.to_owned(), count: invalid.len(), each: invalid.join("; ") });
    }
    entries.sort_by_key(|a| (a.entry.time, a.entry.id));
    Ok(entries)
}

#[derive(Debug, thiserror::Error)]
enum EntryError {
    #[error("not an entry: {0}")]
    Json(#[from] serde_json::Error),
    #[error("format {0:?}, not {FORMAT}")]
    Format(String),
    #[error("signature: {0}")]
    Signature(String),
    #[error("a {kind} entry signed by {signer}, not by {writer}")]
    Signer { kind: &'static str, signer: Identity, writer: &'static str },
}

fn verify_entry(bytes: &[u8], ca_pem: &[u8]) -> Result<(Entry, Identity), EntryError> {
    let file: EntryFile = serde_json::from_slice(bytes)?;
    let entry: Entry = serde_json::from_value(file.entry.clone())?;
    if entry.format != FORMAT {
        return Err(EntryError::Format(entry.format));
    }
    let decode = |s: &str| B64.decode(s).map_err(|e| EntryError::Signature(e.to_string()));
    let signed = Signed {
        chain: file.signature.certificates.iter().map(|c| decode(c)).collect::<Result<_, _>>()?,
        scheme: file.signature.scheme,
        value: decode(&file.signature.value)?,
    };
    let message = message(&file.entry).map_err(|e| EntryError::Signature(e.to_string()))?;
    let at = rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(entry.time.timestamp()).unwrap_or_default(),
    ));
    let signer =
        crate::tls::verify_signed(ca_pem, &message, &signed, at).map_err(|e| EntryError::Signature(e.to_string()))?;
    let writer = entry.erasure.writer();
    if signer.name() != writer {
        return Err(EntryError::Signer { kind: entry.erasure.kind(), signer, writer });
    }
    Ok((entry, signer))
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use crate::testing::TestPki;

    fn journal(pki: &TestPki, name: &str, dir: &Path) -> Journal {
        Journal::open(dir, CertStore::load(&pki.tls(name)).expect("certs")).expect("journal")
    }

    fn shred(subject: &str) -> Erasure {
        Erasure::SubjectShred { subject_sha256: subject_sha256(subject) }
    }

    #[tokio::test]
    async fn entries_verify_in_order_and_name_a_subject_only_by_its_digest() {
        crate::tls::install_crypto_provider();
        let pki = TestPki::new();
        let dir = tempfile::tempdir().expect("tmp");
        let tenant = Uuid::now_v7();
        let vault = journal(&pki, "vault", dir.path());
        let first = vault.append(tenant, "acme", shred("user-1@acme.example")).await.expect("append");
        let auth = journal(&pki, "auth", dir.path());
        let terminate = Erasure::TenantTerminate {
            recipient: "age1…".into(),
            reason: "contract ended".into(),
            terminated_by: "ops".into(),
            export_until: Utc::now(),
        };
        let second = auth.append(tenant, "acme", terminate).await.expect("append");
        let read = read(dir.path(), &std::fs::read(pki.path("ca.pem")).expect("ca")).expect("verifies");
        assert_eq!(read.iter().map(|v| v.entry.id).collect::<Vec<_>>(), [first.id, second.id]);
        assert_eq!(read[0].signer.name(), "vault");
        assert_eq!(read[1].entry, second);
        for file in std::fs::read_dir(dir.path()).expect("dir") {
            let text = std::fs::read_to_string(file.expect("entry").path()).expect("read");
            assert!(!text.contains("user-1@acme.example"), "{text}");
        }
    }

    #[tokio::test]
    async fn pruning_deletes_only_entries_written_before_the_cut() {
        crate::tls::install_crypto_provider();
        let pki = TestPki::new();
        let dir = tempfile::tempdir().expect("tmp");
        let vault = journal(&pki, "vault", dir.path());
        let old = vault.append(Uuid::now_v7(), "acme", Erasure::TenantShred).await.expect("append");
        let cut = Utc::now();
        let new = vault.append(Uuid::now_v7(), "acme", Erasure::TenantShred).await.expect("append");
        std::fs::write(dir.path().join("README"), "kept").expect("other file");
        assert_eq!(
            written_at(&file_name(old.time, old.id)).map(|t| t.timestamp_micros()),
            Some(old.time.timestamp_micros())
        );
        assert_eq!(prune(dir.path(), cut).expect("prune"), 1);
        let left = read(dir.path(), &std::fs::read(pki.path("ca.pem")).expect("ca"));
        assert!(left.is_err(), "README is not an entry and stays");
        std::fs::remove_file(dir.path().join("README")).expect("rm");
        let left = read(dir.path(), &std::fs::read(pki.path("ca.pem")).expect("ca")).expect("read");
        assert_eq!(left.iter().map(|v| v.entry.id).collect::<Vec<_>>(), [new.id]);
    }

    #[tokio::test]
    async fn a_forged_altered_or_misattributed_entry_stops_the_read() {
        crate::tls::install_crypto_provider();
        let pki = TestPki::new();
        let ca = std::fs::read(pki.path("ca.pem")).expect("ca");
        let dir = tempfile::tempdir().expect("tmp");
        let tenant = Uuid::now_v7();
        journal(&pki, "vault", dir.path()).append(tenant, "acme", shred("u")).await.expect("append");
        // Altered: another tenant named in a signed entry.
        let name = std::fs::read_dir(dir.path()).expect("dir").next().expect("one").expect("entry").path();
        let text = std::fs::read_to_string(&name).expect("read");
        std::fs::write(&name, text.replace("acme", "beta")).expect("write");
        let e = read(dir.path(), &ca).expect_err("altered");
        assert!(e.to_string().contains("bad signature"), "{e}");
        std::fs::remove_file(&name).expect("rm");
        // Signed by the gateway, which shreds nothing.
        journal(&pki, "gateway", dir.path()).append(tenant, "acme", Erasure::TenantShred).await.expect("append");
        let e = read(dir.path(), &ca).expect_err("wrong signer");
        assert!(e.to_string().contains("signed by spiffe://strongroom/gateway, not by vault"), "{e}");
        for f in std::fs::read_dir(dir.path()).expect("dir") {
            std::fs::remove_file(f.expect("entry").path()).expect("rm");
        }
        // Signed under another deployment's CA.
        let other = TestPki::new();
        journal(&other, "vault", dir.path()).append(tenant, "acme", Erasure::TenantShred).await.expect("append");
        let e = read(dir.path(), &ca).expect_err("foreign CA");
        assert!(e.to_string().contains("certificate"), "{e}");
        // A temporary file (a writer that stopped before linking) is not an entry.
        for f in std::fs::read_dir(dir.path()).expect("dir") {
            std::fs::remove_file(f.expect("entry").path()).expect("rm");
        }
        std::fs::write(dir.path().join(".x.json.tmp"), "{").expect("tmp");
        assert!(read(dir.path(), &ca).expect("empty").is_empty());
    }
}
