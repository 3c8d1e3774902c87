//! A terminated tenant's export bundle (`strongroom tenant terminate`).
//!
//! auth-svc records the termination with one part per service (`control.tenant_export_parts`).
//! Each service writes its own part, file by file, with [`spawn`]: its [`PartWriter`] reads the
//! tenant's data and hands over JSON Lines, which are encrypted with age to the recipient's X25519
//! key before they leave the service's memory and stored in `control.tenant_export_files`. Nothing
//! stored there opens without the recipient's identity, and values that are secret in the
//! service (vault-svc's secrets, auth-svc's sealed personal fields) are opened only inside it.
//!
//! A part is claimed with a lease that each written file renews, so one replica writes it at a time
//! and another takes over when the writer stops; the file and the part's progress commit together,
//! so a part resumes after a crash from its last file (`resume_after`, in the writer's format).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::tenancy::{TenantId, TenantStatus, db_error};
use crate::{ApiError, Db, Tenant, TenantSlug};

/// Each service's part, in the order of the manifest.
pub const PARTS: [&str; 4] = ["auth", "vault", "audit", "ledger"];
/// The bundle format the manifest names.
pub const FORMAT: &str = "strongroom.tenant-export.v1";
/// A file is cut once its JSON Lines reach this size (before encryption).
pub const FILE_BYTES: usize = 1 << 20;
/// How long a claim on a part lasts without a file written.
const LEASE_SECS: i32 = 60;
/// How often each service looks for parts to write.
const POLL: Duration = Duration::from_secs(2);

/// Parses an age X25519 recipient (`age1…`).
pub fn parse_recipient(text: &str) -> Result<age::x25519::Recipient, ApiError> {
    text.trim().parse().map_err(|_| ApiError::invalid_field("recipient", "an age X25519 public key (age1…)"))
}

/// Encrypts `plaintext` to `recipient` as one age file.
pub fn seal(recipient: &age::x25519::Recipient, plaintext: &[u8]) -> Result<Vec<u8>, ApiError> {
    use std::io::Write;
    let encryptor = age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
        .map_err(|e| ApiError::internal(&e))?;
    let mut out = Vec::with_capacity(plaintext.len() + 256);
    let mut writer = encryptor.wrap_output(&mut out).map_err(|e| ApiError::internal(&e))?;
    writer.write_all(plaintext).map_err(|e| ApiError::internal(&e))?;
    writer.finish().map_err(|e| ApiError::internal(&e))?;
    Ok(out)
}

/// Opens one age file of a bundle with the recipient's identity (`AGE-SECRET-KEY-1…`).
pub fn open(identity: &age::x25519::Identity, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    use std::io::Read;
    let decryptor = age::Decryptor::new(ciphertext).map_err(|e| e.to_string())?;
    let mut reader = decryptor.decrypt(std::iter::once(identity as &dyn age::Identity)).map_err(|e| e.to_string())?;
    let mut out = Zeroizing::new(Vec::new());
    reader.read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Parses an age identity file's text (comment lines allowed).
pub fn parse_identity(text: &str) -> Result<age::x25519::Identity, String> {
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .ok_or_else(|| "no AGE-SECRET-KEY-1… line".to_owned())?
        .parse()
        .map_err(|e: &str| e.to_owned())
}

/// SHA-256 in lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// JSON Lines being collected into one file; the buffer is wiped when dropped.
#[derive(Default)]
pub struct Lines {
    buf: Zeroizing<Vec<u8>>,
    rows: u64,
}

impl Lines {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `row` as one line. The buffer never reallocates in place: it grows by moving into a
    /// larger one, so no unwiped copy of a line is left in freed memory.
    pub fn push(&mut self, row: &impl Serialize) -> Result<(), ApiError> {
        let line = Zeroizing::new(serde_json::to_vec(row).map_err(|e| ApiError::internal(&e))?);
        let needed = self.buf.len() + line.len() + 1;
        if needed > self.buf.capacity() {
            let mut grown = Zeroizing::new(Vec::with_capacity(needed.max(FILE_BYTES + FILE_BYTES / 4)));
            grown.extend_from_slice(&self.buf);
            self.buf = grown;
        }
        self.buf.extend_from_slice(&line);
        self.buf.push(b'\n');
        self.rows += 1;
        Ok(())
    }

    /// Whether the file should be cut here.
    pub fn is_full(&self) -> bool {
        self.buf.len() >= FILE_BYTES
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The file this makes, named `name` (e.g. `users.jsonl`), and where to resume after it.
    pub fn into_chunk(self, name: &str, resume_after: Option<String>) -> Chunk {
        Chunk { name: name.to_owned(), body: self.buf, rows: self.rows, resume_after }
    }
}

/// One file of a part.
pub struct Chunk {
    /// What the file holds, e.g. `users.jsonl`; stored as `<seq>-<name>.age`.
    pub name: String,
    pub body: Zeroizing<Vec<u8>>,
    pub rows: u64,
    /// Where the next file starts; `None` completes the part.
    pub resume_after: Option<String>,
}

/// What a service contributes to a terminated tenant's bundle.
#[tonic::async_trait]
pub trait PartWriter: Send + Sync + 'static {
    /// One of [`PARTS`].
    fn part(&self) -> &'static str;

    /// Whether the part can be written now (audit-svc waits until the tenant's outbox is drained).
    async fn ready(&self, _tenant: &Tenant) -> Result<bool, ApiError> {
        Ok(true)
    }

    /// How many rows the part will hold, if the writer can tell cheaply (shown as progress).
    async fn estimate(&self, _tenant: &Tenant) -> Result<Option<u64>, ApiError> {
        Ok(None)
    }

    /// The file after `resume_after` (the first for `None`).
    async fn next(&self, tenant: &Tenant, resume_after: Option<&str>) -> Result<Chunk, ApiError>;
}

/// A terminated tenant whose export is under way.
#[derive(Debug, Clone)]
pub struct Termination {
    pub tenant: Tenant,
    pub recipient: String,
    pub terminated_at: chrono::DateTime<chrono::Utc>,
    pub terminated_by: String,
    pub export_until: chrono::DateTime<chrono::Utc>,
}

/// The termination of `tenant_id`, if it is terminated and not yet purged.
pub async fn termination(db: &Db, tenant_id: Uuid) -> Result<Option<Termination>, ApiError> {
    let row = sqlx::query(
        "SELECT t.slug, t.created_at, x.recipient, x.terminated_at, x.terminated_by, x.export_until
         FROM control.tenant_terminations x JOIN control.tenants t ON t.id = x.tenant_id
         WHERE x.tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_optional(db.pool())
    .await
    .map_err(db_error)?;
    let Some(row) = row else { return Ok(None) };
    let slug: String = row.get("slug");
    Ok(Some(Termination {
        tenant: Tenant {
            id: TenantId(tenant_id),
            slug: TenantSlug::parse(&slug)?,
            status: TenantStatus::Terminated,
            created_at: row.get("created_at"),
        },
        recipient: row.get("recipient"),
        terminated_at: row.get("terminated_at"),
        terminated_by: row.get("terminated_by"),
        export_until: row.get("export_until"),
    }))
}

/// Whether `tenant` is terminated and its bundle not yet signed: the only time vault-svc answers
/// the exporting services (auth-svc opening personal fields, audit-svc signing the last
/// checkpoint and the manifest) for a terminated tenant.
pub async fn is_exporting(db: &Db, tenant: &Tenant) -> Result<bool, ApiError> {
    if tenant.status != TenantStatus::Terminated {
        return Ok(false);
    }
    let signed: Option<bool> =
        sqlx::query_scalar("SELECT manifest IS NOT NULL FROM control.tenant_terminations WHERE tenant_id = $1")
            .bind(tenant.id.0)
            .fetch_optional(db.pool())
            .await
            .map_err(db_error)?;
    Ok(signed == Some(false))
}

/// Writes this service's parts of every terminated tenant, every [`POLL`], until `shutdown`.
pub fn spawn(db: Db, writer: Arc<dyn PartWriter>, shutdown: crate::server::Shutdown) {
    let replica = Uuid::new_v4();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.clone().wait() => return,
                () = tokio::time::sleep(POLL) => {}
            }
            if let Err(e) = run_once(&db, writer.as_ref(), replica).await {
                crate::metrics::Metrics::global().event("tenant_export_failed");
                tracing::error!(part = writer.part(), error = %e, "tenant export failed; retrying");
            }
        }
    });
}

/// Writes every part of `writer`'s kind that is due and unclaimed; returns the files written.
pub async fn run_once(db: &Db, writer: &dyn PartWriter, replica: Uuid) -> Result<usize, ApiError> {
    let due: Vec<Uuid> = sqlx::query_scalar(
        "SELECT tenant_id FROM control.tenant_export_parts
         WHERE part = $1 AND completed_at IS NULL AND (claimed_until IS NULL OR claimed_until < now())
         ORDER BY tenant_id",
    )
    .bind(writer.part())
    .fetch_all(db.pool())
    .await
    .map_err(db_error)?;
    let mut written = 0;
    for tenant_id in due {
        let Some(termination) = termination(db, tenant_id).await? else { continue };
        if !writer.ready(&termination.tenant).await? {
            continue;
        }
        // One tenant's failure (retried at the next poll) holds no other tenant's part back.
        match write_part(db, writer, &termination, replica).await {
            Ok(n) => written += n,
            Err(e) => {
                crate::metrics::Metrics::global().event("tenant_export_failed");
                tracing::error!(tenant = %termination.tenant.slug, part = writer.part(), error = %e, "tenant export failed; retrying");
            }
        }
    }
    Ok(written)
}

async fn write_part(
    db: &Db,
    writer: &dyn PartWriter,
    termination: &Termination,
    replica: Uuid,
) -> Result<usize, ApiError> {
    let part = writer.part();
    let tenant = &termination.tenant;
    let claimed = sqlx::query(
        "UPDATE control.tenant_export_parts
         SET claimed_by = $3, claimed_until = now() + make_interval(secs => $4), started_at = coalesce(started_at, now())
         WHERE tenant_id = $1 AND part = $2 AND completed_at IS NULL
           AND (claimed_until IS NULL OR claimed_until < now())
         RETURNING files, resume_after",
    )
    .bind(tenant.id.0)
    .bind(part)
    .bind(replica)
    .bind(f64::from(LEASE_SECS))
    .fetch_optional(db.pool())
    .await
    .map_err(db_error)?;
    let Some(claimed) = claimed else { return Ok(0) };
    if let Some(total) = writer.estimate(tenant).await? {
        sqlx::query("UPDATE control.tenant_export_parts SET rows_total = $3 WHERE tenant_id = $1 AND part = $2")
            .bind(tenant.id.0)
            .bind(part)
            .bind(i64::try_from(total).unwrap_or(i64::MAX))
            .execute(db.pool())
            .await
            .map_err(db_error)?;
    }
    let mut files: i32 = claimed.get("files");
    let mut resume_after: Option<String> = claimed.get("resume_after");
    let recipient = parse_recipient(&termination.recipient)?;
    tracing::info!(tenant = %tenant.slug, part, files, "writing the tenant's export part");
    let mut written = 0;
    loop {
        let chunk = writer.next(tenant, resume_after.as_deref()).await?;
        let sealed = seal(&recipient, &chunk.body)?;
        let digest = sha256_hex(&sealed);
        let seq = files + 1;
        let name = format!("{seq:04}-{}.age", chunk.name);
        let done = chunk.resume_after.is_none();
        let rows = i64::try_from(chunk.rows).unwrap_or(i64::MAX);
        let mut tx = db.pool().begin().await.map_err(db_error)?;
        let renewed = sqlx::query(
            "UPDATE control.tenant_export_parts
             SET rows_done = rows_done + $5, files = $4, resume_after = $6,
                 claimed_until = CASE WHEN $7 THEN NULL ELSE now() + make_interval(secs => $8) END,
                 claimed_by = CASE WHEN $7 THEN NULL ELSE claimed_by END,
                 completed_at = CASE WHEN $7 THEN now() END
             WHERE tenant_id = $1 AND part = $2 AND claimed_by = $3 AND files = $4 - 1 AND completed_at IS NULL",
        )
        .bind(tenant.id.0)
        .bind(part)
        .bind(replica)
        .bind(seq)
        .bind(rows)
        .bind(&chunk.resume_after)
        .bind(done)
        .bind(f64::from(LEASE_SECS))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if renewed.rows_affected() == 0 {
            // Another replica took the part over after our lease ran out: it goes on from its state.
            tracing::warn!(tenant = %tenant.slug, part, "export part claimed by another replica; leaving it");
            return Ok(written);
        }
        sqlx::query(
            "INSERT INTO control.tenant_export_files (tenant_id, part, seq, name, rows, sha256, data)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(tenant.id.0)
        .bind(part)
        .bind(seq)
        .bind(&name)
        .bind(rows)
        .bind(&digest)
        .bind(&sealed)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        written += 1;
        files = seq;
        crate::metrics::Metrics::global().export_rows(part, chunk.rows);
        if done {
            tracing::info!(tenant = %tenant.slug, part, files, "tenant export part complete");
            crate::metrics::Metrics::global().event("tenant_export_part_completed");
            return Ok(written);
        }
        resume_after = chunk.resume_after;
    }
}

/// A file of a bundle as stored.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    pub part: String,
    pub seq: i32,
    pub name: String,
    pub rows: i64,
    pub sha256: String,
}

/// The bundle's table of contents (`manifest.json`), signed with the tenant's audit key: its
/// Ed25519 signature is over [`Manifest::canonical`] and verifies with `verifier_key` (the C2SP
/// verifier key the tenant's checkpoints verify with).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    pub tenant_id: Uuid,
    pub slug: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub terminated_at: chrono::DateTime<chrono::Utc>,
    pub terminated_by: String,
    /// The age recipient every file is encrypted to.
    pub recipient: String,
    /// Every file, by part ([`PARTS`] order) and sequence; `sha256` is of the age file.
    pub files: Vec<FileEntry>,
    /// The tenant log's last signed checkpoint (C2SP signed note), covering every entry.
    pub final_checkpoint: String,
    /// The tenant's audit verifier key (`<name>+<hash>+<base64>`).
    pub verifier_key: String,
}

impl Manifest {
    /// The bytes that are signed and digested: RFC 8785 (JCS) JSON.
    pub fn canonical(&self) -> Result<Vec<u8>, ApiError> {
        serde_jcs::to_vec(self).map_err(|e| ApiError::internal(&e))
    }
}

/// Every file of `tenant_id`'s bundle (without their data), by part and sequence.
pub async fn files(db: &Db, tenant_id: Uuid) -> Result<Vec<FileEntry>, ApiError> {
    let rows = sqlx::query(
        "SELECT part, seq, name, rows, sha256 FROM control.tenant_export_files WHERE tenant_id = $1
         ORDER BY array_position(ARRAY['auth', 'vault', 'audit', 'ledger'], part), seq",
    )
    .bind(tenant_id)
    .fetch_all(db.pool())
    .await
    .map_err(db_error)?;
    Ok(rows
        .iter()
        .map(|r| FileEntry {
            part: r.get("part"),
            seq: r.get("seq"),
            name: r.get("name"),
            rows: r.get("rows"),
            sha256: r.get("sha256"),
        })
        .collect())
}

/// Whether every part of `tenant_id`'s bundle is written.
pub async fn parts_complete(db: &Db, tenant_id: Uuid) -> Result<bool, ApiError> {
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM control.tenant_export_parts WHERE tenant_id = $1 AND completed_at IS NULL",
    )
    .bind(tenant_id)
    .fetch_one(db.pool())
    .await
    .map_err(db_error)?;
    let parts: i64 = sqlx::query_scalar("SELECT count(*) FROM control.tenant_export_parts WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_one(db.pool())
        .await
        .map_err(db_error)?;
    Ok(open == 0 && parts == PARTS.len() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_file_opens_only_with_the_recipients_identity() {
        let identity = age::x25519::Identity::generate();
        let other = age::x25519::Identity::generate();
        let recipient = parse_recipient(&identity.to_public().to_string()).expect("recipient");
        let sealed = seal(&recipient, b"{\"a\":1}\n").expect("seal");
        assert_eq!(open(&identity, &sealed).expect("open").as_slice(), b"{\"a\":1}\n");
        assert!(open(&other, &sealed).is_err());
        assert!(parse_recipient("age1notakey").is_err());
        assert!(parse_recipient("ssh-ed25519 AAAA").is_err());
    }

    #[test]
    fn lines_count_rows_and_cut_at_the_file_size() {
        let mut lines = Lines::new();
        lines.push(&serde_json::json!({"n": 1})).expect("push");
        lines.push(&serde_json::json!({"n": 2})).expect("push");
        assert_eq!(lines.rows(), 2);
        assert!(!lines.is_full());
        let chunk = lines.into_chunk("rows.jsonl", None);
        assert_eq!(chunk.body.as_slice(), b"{\"n\":1}\n{\"n\":2}\n");
        assert!(chunk.resume_after.is_none());
    }
}
