//! SQL of stored secrets (`secrets`) and their versions (`secret_versions`): metadata, the
//! sealed value of each version, listing by path range, deletion and destruction.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kit::{ApiError, TenantTx};

use crate::domain::path::SecretPath;
use crate::error::VaultError;

/// A secret's metadata (its values are in [`VersionRow`]s).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SecretRow {
    pub path: String,
    pub current_version: i32,
    #[sqlx(json)]
    pub labels: BTreeMap<String, String>,
    pub rotate_after: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// A version of a secret; `ciphertext` is its envelope (none once destroyed, or when listed).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VersionRow {
    pub version: i32,
    pub key_version: i32,
    pub ciphertext: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
    pub destroyed_at: Option<DateTime<Utc>>,
}

const SECRET_COLUMNS: &str =
    "path, current_version, labels, rotate_after, expires_at, created_at, updated_at, deleted_at";

/// The secret at `path`, deleted or not.
pub async fn secret(tx: &mut TenantTx, path: &SecretPath) -> Result<Option<SecretRow>, ApiError> {
    select_secret(tx, path, "").await
}

/// The secret's row, locked for this transaction (writers of one path serialize here).
pub async fn lock_secret(tx: &mut TenantTx, path: &SecretPath) -> Result<Option<SecretRow>, ApiError> {
    select_secret(tx, path, " FOR UPDATE").await
}

async fn select_secret(tx: &mut TenantTx, path: &SecretPath, lock: &str) -> Result<Option<SecretRow>, ApiError> {
    tx.optional(
        sqlx::query_as(&format!("SELECT {SECRET_COLUMNS} FROM secrets WHERE path = $1{lock}")).bind(path.as_str()),
    )
    .await
}

/// Inserts version `version` and makes it current (creating the secret for version 1).
#[allow(clippy::too_many_arguments)]
pub async fn write_version(
    tx: &mut TenantTx,
    path: &SecretPath,
    version: u32,
    key_version: u32,
    ciphertext: &[u8],
    labels: &BTreeMap<String, String>,
    rotate_after: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
) -> Result<SecretRow, ApiError> {
    let labels = serde_json::to_value(labels).map_err(|e| ApiError::internal(&e))?;
    // Two first writers race on the primary key; the loser gets a clean conflict.
    let row: SecretRow = tx.optional(sqlx::query_as(&format!(
        "INSERT INTO secrets (path, current_version, labels, rotate_after, expires_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (tenant_id, path) DO UPDATE SET current_version = EXCLUDED.current_version, labels = EXCLUDED.labels, \
         rotate_after = EXCLUDED.rotate_after, expires_at = EXCLUDED.expires_at, updated_at = now() \
         WHERE secrets.current_version = EXCLUDED.current_version - 1 \
         RETURNING {SECRET_COLUMNS}"
    ))
    .bind(path.as_str())
    .bind(version as i32)
    .bind(labels)
    .bind(rotate_after)
    .bind(expires_at)).await?
    .ok_or(VaultError::SecretChangedConcurrently)?;
    tx.execute(
        sqlx::query("INSERT INTO secret_versions (path, version, key_version, ciphertext) VALUES ($1, $2, $3, $4)")
            .bind(path.as_str())
            .bind(version as i32)
            .bind(key_version as i32)
            .bind(ciphertext),
    )
    .await?;
    Ok(row)
}

/// Live secrets whose path starts with `prefix`, after the path `after` (the previous page's
/// last), in byte order: one range of the `secrets_listing` index (vault tenant migration 0005).
pub async fn list(
    tx: &mut TenantTx,
    prefix: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<SecretRow>, ApiError> {
    let (from, below) = listing_range(prefix, after);
    tx.all(sqlx::query_as(&list_sql()).bind(from).bind(below).bind(limit)).await
}

/// Up to `limit` secrets labelled with data subject `subject` (label `subject`), deleted ones
/// too, by path.
pub async fn of_subject(tx: &mut TenantTx, subject: &str, limit: i64) -> Result<Vec<SecretRow>, ApiError> {
    tx.all(
        sqlx::query_as(&format!(
            "SELECT {SECRET_COLUMNS} FROM secrets WHERE labels ? 'subject' AND labels ->> 'subject' = $1 \
              ORDER BY path COLLATE \"C\" LIMIT $2"
        ))
        .bind(subject)
        .bind(limit),
    )
    .await
}

/// The statement of [`list`]: `$1`..`$2` the byte range of [`listing_range`], `$3` the limit.
pub fn list_sql() -> String {
    format!(
        "SELECT {SECRET_COLUMNS} FROM secrets WHERE deleted_at IS NULL \
           AND path COLLATE \"C\" >= $1 AND path COLLATE \"C\" < $2 ORDER BY path COLLATE \"C\" LIMIT $3"
    )
}

/// The byte range `[from, below)` of the paths a listing page holds. Paths are ASCII of at most
/// 'z' (`SecretPath`), so the paths after `after` start at `after` + "\u{1}" (the least string
/// greater than it that PostgreSQL text can hold), those under `prefix` end before `prefix` with
/// its last byte raised, and every path sorts before "\u{7f}".
pub fn listing_range(prefix: &str, after: Option<&str>) -> (String, String) {
    let below = match prefix.as_bytes().last() {
        Some(&b) if b < 0x7f => format!("{}{}", &prefix[..prefix.len() - 1], char::from(b + 1)),
        _ => "\u{7f}".to_owned(),
    };
    let from = match after.map(|a| format!("{a}\u{1}")) {
        Some(a) if a.as_str() > prefix => a,
        _ => prefix.to_owned(),
    };
    (from, below)
}

/// Up to `limit` versions of a secret after `after`, oldest first.
pub async fn versions(
    tx: &mut TenantTx,
    path: &SecretPath,
    after: u32,
    limit: i64,
) -> Result<Vec<VersionRow>, ApiError> {
    tx.all(
        sqlx::query_as(
            "SELECT version, key_version, NULL::bytea AS ciphertext, created_at, destroyed_at FROM secret_versions \
         WHERE path = $1 AND version > $2 ORDER BY version LIMIT $3",
        )
        .bind(path.as_str())
        .bind(i64::from(after))
        .bind(limit),
    )
    .await
}

/// Version `version` of the secret, with its ciphertext.
pub async fn version(tx: &mut TenantTx, path: &SecretPath, version: u32) -> Result<Option<VersionRow>, ApiError> {
    tx.optional(sqlx::query_as("SELECT version, key_version, ciphertext, created_at, destroyed_at FROM secret_versions WHERE path = $1 AND version = $2")
        .bind(path.as_str())
        .bind(version as i32)).await
}

/// Marks the secret deleted (kept, no longer listed nor revealed) or live again.
pub async fn set_deleted(tx: &mut TenantTx, path: &SecretPath, deleted: bool) -> Result<SecretRow, ApiError> {
    tx.one(sqlx::query_as(&format!(
        "UPDATE secrets SET deleted_at = CASE WHEN $2 THEN now() ELSE NULL END, updated_at = now() WHERE path = $1 RETURNING {SECRET_COLUMNS}"
    ))
    .bind(path.as_str())
    .bind(deleted)).await
}

/// Destroys the ciphertext (and with it the wrapped data key) of the given versions; returns
/// those destroyed by this call.
pub async fn destroy_versions(tx: &mut TenantTx, path: &SecretPath, versions: &[u32]) -> Result<Vec<u32>, ApiError> {
    let versions: Vec<i32> = versions.iter().map(|v| *v as i32).collect();
    let destroyed: Vec<i32> = tx
        .scalars(
            sqlx::query_scalar(
                "UPDATE secret_versions SET ciphertext = NULL, destroyed_at = now() \
         WHERE path = $1 AND version = ANY($2) AND destroyed_at IS NULL RETURNING version",
            )
            .bind(path.as_str())
            .bind(&versions),
        )
        .await?;
    let mut destroyed: Vec<u32> = destroyed.into_iter().map(|v| v as u32).collect();
    destroyed.sort_unstable();
    Ok(destroyed)
}

#[cfg(test)]
mod tests {
    use super::listing_range;

    #[test]
    fn a_listing_page_is_one_byte_range() {
        assert_eq!(listing_range("", None), (String::new(), "\u{7f}".to_owned()));
        assert_eq!(listing_range("brokers/", None), ("brokers/".to_owned(), "brokers0".to_owned()));
        assert_eq!(
            listing_range("brokers/", Some("brokers/ib")),
            ("brokers/ib\u{1}".to_owned(), "brokers0".to_owned())
        );
        // A page token before the prefix (or forged) cannot widen the range.
        assert_eq!(listing_range("brokers/", Some("a")), ("brokers/".to_owned(), "brokers0".to_owned()));
        // "brokers/ib" < "brokers/ib\u{1}" < "brokers/ib-x" < "brokers/ib/x": nothing after is skipped.
        let (from, _) = listing_range("", Some("brokers/ib"));
        for later in ["brokers/ib-x", "brokers/ib/x", "brokers/ib0", "brokers/ic"] {
            assert!(later > from.as_str() && "brokers/ib" < from.as_str(), "{later}");
        }
    }
}
