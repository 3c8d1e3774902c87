//! SQL of vault-svc's tenant tables. Every function runs inside a `TenantTx`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kit::tenancy::db_error;
use kit::{ApiError, TenantTx};
use uuid::Uuid;

use crate::domain::path::SecretPath;

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

pub async fn secret(tx: &mut TenantTx, path: &SecretPath) -> Result<Option<SecretRow>, ApiError> {
    sqlx::query_as(&format!("SELECT {SECRET_COLUMNS} FROM secrets WHERE path = $1"))
        .bind(path.as_str())
        .fetch_optional(tx.conn())
        .await
        .map_err(db_error)
}

/// The secret's row, locked for this transaction (writers of one path serialize here).
pub async fn lock_secret(tx: &mut TenantTx, path: &SecretPath) -> Result<Option<SecretRow>, ApiError> {
    sqlx::query_as(&format!("SELECT {SECRET_COLUMNS} FROM secrets WHERE path = $1 FOR UPDATE"))
        .bind(path.as_str())
        .fetch_optional(tx.conn())
        .await
        .map_err(db_error)
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
    let row: SecretRow = sqlx::query_as(&format!(
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
    .bind(expires_at)
    .fetch_optional(tx.conn())
    .await
    .map_err(db_error)?
    .ok_or_else(|| ApiError::new(kit::ErrorCode::Aborted, "VERSION_CONFLICT", "the secret changed concurrently; retry"))?;
    sqlx::query("INSERT INTO secret_versions (path, version, key_version, ciphertext) VALUES ($1, $2, $3, $4)")
        .bind(path.as_str())
        .bind(version as i32)
        .bind(key_version as i32)
        .bind(ciphertext)
        .execute(tx.conn())
        .await
        .map_err(db_error)?;
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
    sqlx::query_as(&list_sql()).bind(from).bind(below).bind(limit).fetch_all(tx.conn()).await.map_err(db_error)
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
    sqlx::query_as(
        "SELECT version, key_version, NULL::bytea AS ciphertext, created_at, destroyed_at FROM secret_versions \
         WHERE path = $1 AND version > $2 ORDER BY version LIMIT $3",
    )
    .bind(path.as_str())
    .bind(i64::from(after))
    .bind(limit)
    .fetch_all(tx.conn())
    .await
    .map_err(db_error)
}

pub async fn version(tx: &mut TenantTx, path: &SecretPath, version: u32) -> Result<Option<VersionRow>, ApiError> {
    sqlx::query_as("SELECT version, key_version, ciphertext, created_at, destroyed_at FROM secret_versions WHERE path = $1 AND version = $2")
        .bind(path.as_str())
        .bind(version as i32)
        .fetch_optional(tx.conn())
        .await
        .map_err(db_error)
}

pub async fn set_deleted(tx: &mut TenantTx, path: &SecretPath, deleted: bool) -> Result<SecretRow, ApiError> {
    sqlx::query_as(&format!(
        "UPDATE secrets SET deleted_at = CASE WHEN $2 THEN now() ELSE NULL END, updated_at = now() WHERE path = $1 RETURNING {SECRET_COLUMNS}"
    ))
    .bind(path.as_str())
    .bind(deleted)
    .fetch_one(tx.conn())
    .await
    .map_err(db_error)
}

/// Destroys the ciphertext (and with it the wrapped data key) of the given versions; returns
/// those destroyed by this call.
pub async fn destroy_versions(tx: &mut TenantTx, path: &SecretPath, versions: &[u32]) -> Result<Vec<u32>, ApiError> {
    let versions: Vec<i32> = versions.iter().map(|v| *v as i32).collect();
    let destroyed: Vec<i32> = sqlx::query_scalar(
        "UPDATE secret_versions SET ciphertext = NULL, destroyed_at = now() \
         WHERE path = $1 AND version = ANY($2) AND destroyed_at IS NULL RETURNING version",
    )
    .bind(path.as_str())
    .bind(&versions)
    .fetch_all(tx.conn())
    .await
    .map_err(db_error)?;
    let mut destroyed: Vec<u32> = destroyed.into_iter().map(|v| v as u32).collect();
    destroyed.sort_unstable();
    Ok(destroyed)
}

/// The stored response of an earlier call with this request id, if its request was the same;
/// a different request under the same id is refused.
pub async fn idempotent_response(
    tx: &mut TenantTx,
    id: Uuid,
    operation: &str,
    digest: &[u8],
) -> Result<Option<Vec<u8>>, ApiError> {
    let row: Option<(String, Vec<u8>, Vec<u8>)> =
        sqlx::query_as("SELECT operation, digest, response FROM idempotency_keys WHERE request_id = $1")
            .bind(id)
            .fetch_optional(tx.conn())
            .await
            .map_err(db_error)?;
    match row {
        None => Ok(None),
        Some((op, d, response)) if op == operation && d == digest => Ok(Some(response)),
        Some(_) => Err(ApiError::new(
            kit::ErrorCode::AlreadyExists,
            "REQUEST_ID_REUSED",
            "this request_id was used for a different request",
        )),
    }
}

pub async fn remember_response(
    tx: &mut TenantTx,
    id: Uuid,
    operation: &str,
    digest: &[u8],
    response: &[u8],
) -> Result<(), ApiError> {
    sqlx::query("INSERT INTO idempotency_keys (request_id, operation, digest, response) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(operation)
        .bind(digest)
        .bind(response)
        .execute(tx.conn())
        .await
        .map_err(db_error)?;
    Ok(())
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

/// The tables whose rows are sealed under a tenant key version, in the order a rewrap moves them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealed {
    /// Secret values (`path`, the envelope in `ciphertext`; destroyed versions hold none).
    SecretVersions,
    /// Data-subject keys (`subject`; shredded ones hold none).
    SubjectKeys,
    /// Workload signing keys (`name`, the sealed private half).
    SigningKeys,
}

impl Sealed {
    pub const ALL: [Sealed; 3] = [Sealed::SecretVersions, Sealed::SubjectKeys, Sealed::SigningKeys];

    /// `(table, name column, key-version column, sealed column)`.
    const fn columns(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Self::SecretVersions => ("secret_versions", "path", "key_version", "ciphertext"),
            Self::SubjectKeys => ("subject_keys", "subject", "tenant_key_version", "wrapped"),
            Self::SigningKeys => ("signing_keys", "name", "tenant_key_version", "wrapped_private"),
        }
    }
}

/// A row sealed under tenant key `key_version`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SealedRow {
    pub name: String,
    pub version: i32,
    pub key_version: i32,
    pub sealed: Vec<u8>,
}

/// Up to `limit` rows of `what` still sealed under a key version below `active`, locked (rows
/// other rewraps hold are skipped). Found by the key version (vault tenant migration 0004), in no
/// particular order: an order by primary key made each batch step over every row moved before.
pub async fn sealed_under(
    tx: &mut TenantTx,
    what: Sealed,
    active: u32,
    limit: i64,
) -> Result<Vec<SealedRow>, ApiError> {
    let (table, name, key_version, sealed) = what.columns();
    let sql = format!(
        "SELECT {name} AS name, version, {key_version} AS key_version, {sealed} AS sealed FROM {table} \
         WHERE {key_version} < $1 AND {sealed} IS NOT NULL LIMIT $2 FOR UPDATE SKIP LOCKED"
    );
    sqlx::query_as(&sql).bind(active as i32).bind(limit).fetch_all(tx.conn()).await.map_err(db_error)
}

/// Stores a row of `what` sealed again under tenant key `active`.
pub async fn reseal(
    tx: &mut TenantTx,
    what: Sealed,
    name: &str,
    version: i32,
    sealed: &[u8],
    active: u32,
) -> Result<(), ApiError> {
    let (table, name_column, key_version, sealed_column) = what.columns();
    let sql = format!(
        "UPDATE {table} SET {sealed_column} = $3, {key_version} = $4 WHERE {name_column} = $1 AND version = $2"
    );
    sqlx::query(&sql)
        .bind(name)
        .bind(version)
        .bind(sealed)
        .bind(active as i32)
        .execute(tx.conn())
        .await
        .map_err(db_error)?;
    Ok(())
}

/// How many rows of every [`Sealed`] table are still sealed under a key version below `active`.
pub async fn left_under(tx: &mut TenantTx, active: u32) -> Result<u64, ApiError> {
    let counts: Vec<String> = Sealed::ALL
        .iter()
        .map(|what| {
            let (table, _, key_version, sealed) = what.columns();
            format!("(SELECT count(*) FROM {table} WHERE {key_version} < $1 AND {sealed} IS NOT NULL)")
        })
        .collect();
    let (n,): (i64,) = sqlx::query_as(&format!("SELECT {}", counts.join(" + ")))
        .bind(active as i32)
        .fetch_one(tx.conn())
        .await
        .map_err(db_error)?;
    Ok(n as u64)
}

/// A version of the tenant key, as listed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantKeyRow {
    pub version: i32,
    pub state: String,
    pub master_key_id: String,
    pub created_at: DateTime<Utc>,
    pub destroyed_at: Option<DateTime<Utc>>,
}

pub async fn tenant_keys(tx: &mut TenantTx) -> Result<Vec<TenantKeyRow>, ApiError> {
    sqlx::query_as("SELECT version, state, master_key_id, created_at, destroyed_at FROM tenant_keys ORDER BY version")
        .fetch_all(tx.conn())
        .await
        .map_err(db_error)
}

/// Destroys the decrypt-only tenant key versions below `active`; returns their versions.
pub async fn retire_tenant_keys_below(tx: &mut TenantTx, active: u32) -> Result<Vec<i32>, ApiError> {
    sqlx::query_scalar(
        "UPDATE tenant_keys SET state = 'destroyed', wrapped = NULL, destroyed_at = now() \
         WHERE state = 'decrypt_only' AND version < $1 RETURNING version",
    )
    .bind(active as i32)
    .fetch_all(tx.conn())
    .await
    .map_err(db_error)
}

/// Crypto-shreds every version of a data subject's key; returns how many were live.
pub async fn destroy_subject_keys(tx: &mut TenantTx, subject: &str) -> Result<u64, ApiError> {
    Ok(sqlx::query(
        "UPDATE subject_keys SET state = 'destroyed', wrapped = NULL, destroyed_at = now() \
         WHERE subject = $1 AND state <> 'destroyed'",
    )
    .bind(subject)
    .execute(tx.conn())
    .await
    .map_err(db_error)?
    .rows_affected())
}

/// Crypto-shreds every version of the tenant key; returns how many were live.
pub async fn destroy_tenant_keys(tx: &mut TenantTx) -> Result<u64, ApiError> {
    Ok(sqlx::query(
        "UPDATE tenant_keys SET state = 'destroyed', wrapped = NULL, destroyed_at = now() WHERE state <> 'destroyed'",
    )
    .execute(tx.conn())
    .await
    .map_err(db_error)?
    .rows_affected())
}
