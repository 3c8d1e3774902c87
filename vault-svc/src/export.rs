//! vault-svc's part (`vault`) of a terminated tenant's export bundle (`kit::export`): the
//! metadata of the tenant's keys (`keys.jsonl`), then every version of every stored secret with
//! its value opened (`secrets.jsonl`). Values are opened only here, kept in zeroized buffers, and
//! leave this process only inside the age file `kit::export` seals to the tenant's recipient. Key
//! material never leaves at all: the bundle is the tenant's data, not the platform's keys.
//!
//! No audit record is written per file: the export is one act, audited by auth-svc when it
//! terminates the tenant, and a record written here could land after audit-svc has closed the
//! tenant's log with its final checkpoint.
//!
//! Each file is read in one transaction, in pages after the last row written; where the next
//! file starts is a [`Cursor`], stored by `kit::export` with the file, so a crashed export resumes
//! after its last stored file.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use kit::export::{Chunk, Lines, PartWriter};
use kit::{ApiError, Db, Tenant, TenantTx};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::domain::envelope::Envelope;
use crate::domain::path::{SecretPath, secret_aad};
use crate::keyring::Keyring;
use crate::signals::Operation;
use crate::store::export as store;

/// The part vault-svc writes (one of `kit::export::PARTS`).
pub const PART: &str = "vault";
/// The file of key metadata.
pub const KEYS_FILE: &str = "keys.jsonl";
/// The file of secret versions.
pub const SECRETS_FILE: &str = "secrets.jsonl";
/// Key rows read per query.
const KEY_PAGE: i64 = 500;
/// Secret versions read per query: each holds up to 64 KiB of ciphertext.
const SECRET_PAGE: i64 = 64;

/// vault-svc's [`PartWriter`].
#[derive(Debug, Clone)]
pub struct VaultPart {
    pub db: Db,
    pub keyring: Keyring,
}

/// The kinds of key rows of `keys.jsonl`, in file order (each line's `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySection {
    TenantKey,
    SigningKey,
    SubjectKey,
}

impl KeySection {
    /// The line's `kind` and the cursor's name of the section.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TenantKey => "tenant_key",
            Self::SigningKey => "signing_key",
            Self::SubjectKey => "subject_key",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        [Self::TenantKey, Self::SigningKey, Self::SubjectKey].into_iter().find(|s| s.as_str() == raw)
    }

    /// The section after this one, if any.
    fn next(self) -> Option<Self> {
        match self {
            Self::TenantKey => Some(Self::SigningKey),
            Self::SigningKey => Some(Self::SubjectKey),
            Self::SubjectKey => None,
        }
    }
}

/// Where the next file starts: after the key row or the secret version named (version 0 and an
/// empty name: the start of that section). Stored as text (`control.tenant_export_parts`), so it
/// holds no NUL; the name comes last, so it may hold any other character, `:` too:
/// `key:<section>:<version>:<name>` or `secret:<version>:<path>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// After version `version` of `name` (a signing key's name, a subject; empty for tenant keys).
    Key { section: KeySection, version: u32, name: String },
    /// After version `version` of the secret at `path`.
    Secret { version: u32, path: String },
}

impl Cursor {
    /// The start of the part: the first key row.
    pub fn start() -> Self {
        Self::Key { section: KeySection::TenantKey, version: 0, name: String::new() }
    }

    /// The start of the secrets, once every key row is written.
    pub fn secrets() -> Self {
        Self::Secret { version: 0, path: String::new() }
    }

    /// The cursor `resume_after` stores (the start for `None`).
    pub fn parse(resume_after: Option<&str>) -> Result<Self, ApiError> {
        let Some(raw) = resume_after else { return Ok(Self::start()) };
        let bad = || {
            tracing::error!(resume_after = raw, "vault export cursor is not one this writer wrote");
            ApiError::internal(&"an export cursor is not one vault-svc wrote")
        };
        let (tag, rest) = raw.split_once(':').ok_or_else(bad)?;
        match tag {
            "key" => {
                let mut fields = rest.splitn(3, ':');
                let section = fields.next().and_then(KeySection::parse).ok_or_else(bad)?;
                let version = fields.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
                let name = fields.next().ok_or_else(bad)?.to_owned();
                Ok(Self::Key { section, version, name })
            }
            "secret" => {
                let (version, path) = rest.split_once(':').ok_or_else(bad)?;
                let version = version.parse().map_err(|_| bad())?;
                Ok(Self::Secret { version, path: path.to_owned() })
            }
            _ => Err(bad()),
        }
    }

    /// The text `kit::export` stores as `resume_after`.
    pub fn encode(&self) -> String {
        match self {
            Self::Key { section, version, name } => format!("key:{}:{version}:{name}", section.as_str()),
            Self::Secret { version, path } => format!("secret:{version}:{path}"),
        }
    }
}

/// A line of `keys.jsonl`: metadata only, never key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KeyLine {
    /// A version of the tenant key (`state`: active, decrypt_only, destroyed).
    TenantKey {
        version: u32,
        state: String,
        created_at: DateTime<Utc>,
        retired_at: Option<DateTime<Utc>>,
        destroyed_at: Option<DateTime<Utc>>,
    },
    /// A version of a workload signing key (`state`: active, retired) and its public half, which
    /// verifies what the tenant's services signed (audit checkpoints, ledger receipts).
    SigningKey {
        name: String,
        version: u32,
        state: String,
        algorithm: String,
        public_key_b64: String,
        created_at: DateTime<Utc>,
        retired_at: Option<DateTime<Utc>>,
    },
    /// A version of a data subject's key (`state`: active, destroyed: the subject was erased).
    SubjectKey {
        subject: String,
        version: u32,
        state: String,
        created_at: DateTime<Utc>,
        destroyed_at: Option<DateTime<Utc>>,
    },
}

impl KeyLine {
    /// The cursor after this line.
    fn cursor(&self) -> Cursor {
        let (section, version, name) = match self {
            Self::TenantKey { version, .. } => (KeySection::TenantKey, *version, ""),
            Self::SigningKey { name, version, .. } => (KeySection::SigningKey, *version, name.as_str()),
            Self::SubjectKey { subject, version, .. } => (KeySection::SubjectKey, *version, subject.as_str()),
        };
        Cursor::Key { section, version, name: name.to_owned() }
    }
}

/// A line of `secrets.jsonl`: one version of a secret, with its secret's metadata as it stands.
/// A destroyed version has no value; a live one has `value_b64`, and `value_utf8` too when the
/// value is UTF-8; one that could not be opened (its tenant key destroyed) has `error` instead.
#[derive(Debug, Serialize)]
pub struct SecretLine<'a> {
    pub path: &'a str,
    pub version: u32,
    /// Whether this is the secret's current version.
    pub current: bool,
    pub created_at: DateTime<Utc>,
    pub destroyed: bool,
    pub destroyed_at: Option<DateTime<Utc>>,
    /// The tenant key version the value is sealed under (`keys.jsonl`).
    pub key_version: u32,
    /// The secret's labels, as stored.
    pub labels: &'a serde_json::Value,
    pub rotate_after: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    /// When the secret was deleted (kept, no longer listed nor revealed).
    pub deleted_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_b64: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_utf8: Option<&'a str>,
    /// Why a live version has no value (`KEY_DESTROYED`, `KEY_NOT_FOUND`, `DECRYPTION_FAILED`,
    /// `MALFORMED_CIPHERTEXT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Cow<'static, str>>,
}

/// A stored value, opened or not.
enum Opened {
    Value(Zeroizing<Vec<u8>>),
    Unreadable(Cow<'static, str>),
}

impl SecretLine<'_> {
    /// Writes the line of `row` (its value `opened`) into `lines`; the value's encodings live in
    /// zeroized buffers only, and are borrowed by the line.
    fn push(lines: &mut Lines, row: &store::SecretVersionExport, opened: Option<Opened>) -> Result<(), ApiError> {
        let (value, error) = match opened {
            None => (None, None),
            Some(Opened::Value(v)) => (Some(v), None),
            Some(Opened::Unreadable(reason)) => (None, Some(reason)),
        };
        let value_b64 = value.as_ref().map(|v| Zeroizing::new(STANDARD.encode(v.as_slice())));
        let line = SecretLine {
            path: &row.path,
            version: row.version as u32,
            current: row.version == row.current_version,
            created_at: row.created_at,
            destroyed: row.ciphertext.is_none(),
            destroyed_at: row.destroyed_at,
            key_version: row.key_version as u32,
            labels: &row.labels,
            rotate_after: row.rotate_after,
            expires_at: row.expires_at,
            deleted_at: row.deleted_at,
            value_b64: value_b64.as_ref().map(|b| b.as_str()),
            value_utf8: value.as_ref().and_then(|v| std::str::from_utf8(v).ok()),
            error,
        };
        lines.push(&line)
    }
}

impl VaultPart {
    /// The next `keys.jsonl` file from `cursor`; once every key row is written, it points at the
    /// secrets.
    async fn keys_file(&self, tx: &mut TenantTx, mut cursor: Cursor) -> Result<Chunk, ApiError> {
        let mut lines = Lines::new();
        loop {
            let Cursor::Key { section, version, name } = &cursor else {
                return Err(ApiError::internal(&"a key cursor expected"));
            };
            let section = *section;
            let page = key_page(tx, section, *version, name).await?;
            let exhausted = (page.len() as i64) < KEY_PAGE;
            for line in page {
                // Cut only when another row follows, so no file after the first is empty.
                if lines.is_full() {
                    return Ok(lines.into_chunk(KEYS_FILE, Some(cursor.encode())));
                }
                lines.push(&line)?;
                cursor = line.cursor();
            }
            if exhausted {
                cursor = match section.next() {
                    Some(next) => Cursor::Key { section: next, version: 0, name: String::new() },
                    None => return Ok(lines.into_chunk(KEYS_FILE, Some(Cursor::secrets().encode()))),
                };
            }
        }
    }

    /// The next `secrets.jsonl` file after (`path`, `version`); the last one ends the part.
    async fn secrets_file(&self, tx: &mut TenantTx, mut path: String, mut version: u32) -> Result<Chunk, ApiError> {
        let mut lines = Lines::new();
        loop {
            let page = store::secret_versions(tx, &path, version, SECRET_PAGE).await?;
            let exhausted = (page.len() as i64) < SECRET_PAGE;
            for row in page {
                if lines.is_full() {
                    let resume = Cursor::Secret { version, path };
                    return Ok(lines.into_chunk(SECRETS_FILE, Some(resume.encode())));
                }
                let opened = match &row.ciphertext {
                    Some(ciphertext) => Some(self.open(tx, &row, ciphertext).await?),
                    None => None,
                };
                SecretLine::push(&mut lines, &row, opened)?;
                version = row.version as u32;
                path = row.path;
            }
            if exhausted {
                return Ok(lines.into_chunk(SECRETS_FILE, None));
            }
        }
    }

    /// Opens a stored version as `api::secrets` does. A value whose key is gone or that does not
    /// open is exported without it (and logged): one lost value must not hold the whole bundle
    /// back. Anything else (the KMS unreachable) fails the file, which is retried.
    async fn open(
        &self,
        tx: &mut TenantTx,
        row: &store::SecretVersionExport,
        ciphertext: &[u8],
    ) -> Result<Opened, ApiError> {
        let unreadable = |reason: &'static str| {
            tracing::error!(path = %row.path, version = row.version, reason, "secret version not exported");
            Ok(Opened::Unreadable(Cow::Borrowed(reason)))
        };
        let Ok(envelope) = Envelope::decode(ciphertext) else { return unreadable("MALFORMED_CIPHERTEXT") };
        let key = match self.keyring.version(tx, envelope.key_version).await {
            Ok(key) => key,
            Err(e) if e.reason == "KEY_DESTROYED" || e.reason == crate::error::KEY_NOT_FOUND => {
                tracing::error!(path = %row.path, version = row.version, reason = %e.reason, "secret version not exported");
                return Ok(Opened::Unreadable(e.reason));
            }
            Err(e) => return Err(e),
        };
        let path = SecretPath::parse(&row.path).map_err(|_| ApiError::internal(&"a stored secret path is invalid"))?;
        match envelope.open(&key, &secret_aad(tx.tenant(), &path, row.version as u32)) {
            Ok(plaintext) => {
                Operation::Decrypt.done();
                Ok(Opened::Value(plaintext))
            }
            Err(_) => unreadable("DECRYPTION_FAILED"),
        }
    }
}

/// Up to [`KEY_PAGE`] lines of `section` after (`name`, `version`).
async fn key_page(tx: &mut TenantTx, section: KeySection, version: u32, name: &str) -> Result<Vec<KeyLine>, ApiError> {
    Ok(match section {
        KeySection::TenantKey => store::tenant_keys(tx, version, KEY_PAGE)
            .await?
            .into_iter()
            .map(|k| KeyLine::TenantKey {
                version: k.version as u32,
                state: k.state,
                created_at: k.created_at,
                retired_at: k.retired_at,
                destroyed_at: k.destroyed_at,
            })
            .collect(),
        KeySection::SigningKey => store::signing_keys(tx, name, version, KEY_PAGE)
            .await?
            .into_iter()
            .map(|k| KeyLine::SigningKey {
                public_key_b64: STANDARD.encode(&k.public_key),
                name: k.name,
                version: k.version as u32,
                state: k.state,
                algorithm: k.algorithm,
                created_at: k.created_at,
                retired_at: k.retired_at,
            })
            .collect(),
        KeySection::SubjectKey => store::subject_keys(tx, name, version, KEY_PAGE)
            .await?
            .into_iter()
            .map(|k| KeyLine::SubjectKey {
                subject: k.subject,
                version: k.version as u32,
                state: k.state,
                created_at: k.created_at,
                destroyed_at: k.destroyed_at,
            })
            .collect(),
    })
}

#[tonic::async_trait]
impl PartWriter for VaultPart {
    fn part(&self) -> &'static str {
        PART
    }

    async fn next(&self, tenant: &Tenant, resume_after: Option<&str>) -> Result<Chunk, ApiError> {
        let cursor = Cursor::parse(resume_after)?;
        // A terminated tenant's transactions open as any other's (`begin` checks no status).
        let mut tx = self.db.begin(tenant).await?;
        let chunk = match cursor {
            Cursor::Key { .. } => self.keys_file(&mut tx, cursor).await?,
            Cursor::Secret { version, path } => self.secrets_file(&mut tx, path, version).await?,
        };
        // Read only: nothing to keep.
        tx.rollback().await?;
        Ok(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i32) -> DateTime<Utc> {
        use chrono::TimeZone;
        Utc.with_ymd_and_hms(y, 1, 2, 3, 4, 5).single().expect("date")
    }

    #[test]
    fn a_cursor_round_trips_through_its_stored_text() {
        let cursors = [
            Cursor::start(),
            Cursor::secrets(),
            Cursor::Key { section: KeySection::TenantKey, version: 3, name: String::new() },
            Cursor::Key { section: KeySection::SigningKey, version: 2, name: "audit-checkpoint".into() },
            // A subject may hold the separator.
            Cursor::Key { section: KeySection::SubjectKey, version: 1, name: "user:42:x".into() },
            Cursor::Secret { version: 7, path: "brokers/ib/api-key".into() },
        ];
        for cursor in cursors {
            let text = cursor.encode();
            assert!(!text.contains('\0'), "{text}");
            assert_eq!(Cursor::parse(Some(&text)).expect("parse"), cursor, "{text}");
        }
        assert_eq!(Cursor::parse(None).expect("start"), Cursor::start());
        assert_eq!(Cursor::start().encode(), "key:tenant_key:0:");
        assert_eq!(Cursor::secrets().encode(), "secret:0:");
    }

    #[test]
    fn a_cursor_another_writer_stored_is_refused() {
        for bad in ["", "key", "key:tenant_key:x:", "key:period_key:1:", "secret:1", "secret:-1:a", "users:1:a"] {
            assert!(Cursor::parse(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_key_sections_follow_each_other_once() {
        assert_eq!(KeySection::TenantKey.next(), Some(KeySection::SigningKey));
        assert_eq!(KeySection::SigningKey.next(), Some(KeySection::SubjectKey));
        assert_eq!(KeySection::SubjectKey.next(), None);
    }

    fn version(ciphertext: Option<Vec<u8>>) -> store::SecretVersionExport {
        store::SecretVersionExport {
            path: "db/password".into(),
            version: 2,
            key_version: 1,
            destroyed_at: ciphertext.is_none().then(|| at(2025)),
            ciphertext,
            created_at: at(2024),
            current_version: 2,
            labels: serde_json::json!({"env": "prod"}),
            rotate_after: None,
            expires_at: None,
            deleted_at: None,
        }
    }

    fn line(row: &store::SecretVersionExport, opened: Option<Opened>) -> serde_json::Value {
        let mut lines = Lines::new();
        SecretLine::push(&mut lines, row, opened).expect("push");
        let chunk = lines.into_chunk(SECRETS_FILE, None);
        assert_eq!(chunk.rows, 1);
        assert!(chunk.body.ends_with(b"\n"));
        serde_json::from_slice(&chunk.body).expect("json")
    }

    #[test]
    fn a_secret_version_line_carries_its_value_in_base64_and_utf8() {
        let row = version(Some(vec![1]));
        let value = line(&row, Some(Opened::Value(Zeroizing::new(b"hunter2".to_vec()))));
        assert_eq!(
            value,
            serde_json::json!({
                "path": "db/password", "version": 2, "current": true,
                "created_at": "2024-01-02T03:04:05Z", "destroyed": false, "destroyed_at": null,
                "key_version": 1, "labels": {"env": "prod"},
                "rotate_after": null, "expires_at": null, "deleted_at": null,
                "value_b64": "aHVudGVyMg==", "value_utf8": "hunter2",
            })
        );
        let binary = line(&row, Some(Opened::Value(Zeroizing::new(vec![0xff, 0x00]))));
        assert_eq!(binary["value_b64"], "/wA=");
        assert!(binary.get("value_utf8").is_none());
    }

    #[test]
    fn a_destroyed_or_unreadable_version_has_no_value() {
        let destroyed = line(&version(None), None);
        assert_eq!(destroyed["destroyed"], true);
        assert_eq!(destroyed["destroyed_at"], "2025-01-02T03:04:05Z");
        assert!(destroyed.get("value_b64").is_none() && destroyed.get("value_utf8").is_none());
        assert!(destroyed.get("error").is_none());
        let lost = line(&version(Some(vec![1])), Some(Opened::Unreadable(Cow::Borrowed("KEY_DESTROYED"))));
        assert_eq!(lost["destroyed"], false);
        assert_eq!(lost["error"], "KEY_DESTROYED");
        assert!(lost.get("value_b64").is_none());
    }

    #[test]
    fn key_lines_hold_metadata_and_public_keys_only() {
        let signing = KeyLine::SigningKey {
            name: "audit".into(),
            version: 1,
            state: "active".into(),
            algorithm: "Ed25519".into(),
            public_key_b64: STANDARD.encode([7u8; 32]),
            created_at: at(2024),
            retired_at: None,
        };
        assert_eq!(
            serde_json::to_value(&signing).expect("json"),
            serde_json::json!({
                "kind": "signing_key", "name": "audit", "version": 1, "state": "active",
                "algorithm": "Ed25519", "public_key_b64": STANDARD.encode([7u8; 32]),
                "created_at": "2024-01-02T03:04:05Z", "retired_at": null,
            })
        );
        assert_eq!(signing.cursor(), Cursor::Key { section: KeySection::SigningKey, version: 1, name: "audit".into() });
        let subject = KeyLine::SubjectKey {
            subject: "u-1".into(),
            version: 2,
            state: "destroyed".into(),
            created_at: at(2024),
            destroyed_at: Some(at(2025)),
        };
        let json = serde_json::to_value(&subject).expect("json");
        assert_eq!(json["kind"], "subject_key");
        assert_eq!(json["subject"], "u-1");
        let tenant = KeyLine::TenantKey {
            version: 1,
            state: "active".into(),
            created_at: at(2024),
            retired_at: None,
            destroyed_at: None,
        };
        assert_eq!(serde_json::to_value(&tenant).expect("json")["kind"], "tenant_key");
        assert_eq!(tenant.cursor().encode(), "key:tenant_key:1:");
    }
}
