//! All of vault-svc's SQL, over a `TenantTx` (row-level security confines every statement to the
//! tenant): `secrets` (stored secrets and their versions), `keys` (the tenant keys of the keyring
//! and data-subject keys), `signing` (workload signing keys), `retention` (retention classes and
//! their period keys), `export` (the reads of a terminated tenant's export); here, what they share:
//! the replay of idempotent requests and the walk over every table sealed under a tenant key (the
//! rewrap).
//! Nothing here unwraps, seals or decides: rows in, rows out.

pub mod export;
pub mod keys;
pub mod retention;
pub mod secrets;
pub mod signing;

use kit::{ApiError, TenantTx};
use uuid::Uuid;

use crate::error::VaultError;

// The listing statement and its range, which e2e's query-plan test reads.
pub use secrets::{list_sql, listing_range};

/// The stored response of an earlier call with this request id, if its request was the same;
/// a different request under the same id is refused.
pub async fn replayed<M: prost::Message + Default>(
    tx: &mut TenantTx,
    id: Uuid,
    operation: &str,
    digest: &[u8],
) -> Result<Option<M>, ApiError> {
    let row: Option<(String, Vec<u8>, Vec<u8>)> = tx
        .optional(
            sqlx::query_as("SELECT operation, digest, response FROM idempotency_keys WHERE request_id = $1").bind(id),
        )
        .await?;
    match row {
        None => Ok(None),
        Some((op, d, response)) if op == operation && d == digest => {
            Ok(Some(M::decode(response.as_slice()).map_err(|e| ApiError::internal(&e))?))
        }
        Some(_) => Err(VaultError::RequestIdReused.into()),
    }
}

/// Keeps `response` for [`replayed`] calls with the same request id.
pub async fn remember<M: prost::Message>(
    tx: &mut TenantTx,
    id: Uuid,
    operation: &str,
    digest: &[u8],
    response: &M,
) -> Result<(), ApiError> {
    tx.execute(
        sqlx::query("INSERT INTO idempotency_keys (request_id, operation, digest, response) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(operation)
            .bind(digest)
            .bind(response.encode_to_vec()),
    )
    .await?;
    Ok(())
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
    /// Period keys of retention classes (`class`, numbered by `id`; destroyed ones hold none).
    PeriodKeys,
}

/// Where a [`Sealed`] table keeps what a rewrap reads and writes.
struct Columns {
    table: &'static str,
    name: &'static str,
    version: &'static str,
    key_version: &'static str,
    sealed: &'static str,
}

impl Sealed {
    pub const ALL: [Sealed; 4] = [Sealed::SecretVersions, Sealed::SubjectKeys, Sealed::SigningKeys, Sealed::PeriodKeys];

    const fn columns(self) -> Columns {
        let (table, name, version, key_version, sealed) = match self {
            Self::SecretVersions => ("secret_versions", "path", "version", "key_version", "ciphertext"),
            Self::SubjectKeys => ("subject_keys", "subject", "version", "tenant_key_version", "wrapped"),
            Self::SigningKeys => ("signing_keys", "name", "version", "tenant_key_version", "wrapped_private"),
            Self::PeriodKeys => ("period_keys", "class", "id", "tenant_key_version", "wrapped"),
        };
        Columns { table, name, version, key_version, sealed }
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
    let Columns { table, name, version, key_version, sealed } = what.columns();
    let sql = format!(
        "SELECT {name} AS name, {version} AS version, {key_version} AS key_version, {sealed} AS sealed FROM {table} \
         WHERE {key_version} < $1 AND {sealed} IS NOT NULL LIMIT $2 FOR UPDATE SKIP LOCKED"
    );
    tx.all(sqlx::query_as(&sql).bind(active as i32).bind(limit)).await
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
    let Columns { table, name: name_column, version: version_column, key_version, sealed: sealed_column } =
        what.columns();
    let sql = format!(
        "UPDATE {table} SET {sealed_column} = $3, {key_version} = $4 \
         WHERE {name_column} = $1 AND {version_column} = $2"
    );
    tx.execute(sqlx::query(&sql).bind(name).bind(version).bind(sealed).bind(active as i32)).await?;
    Ok(())
}

/// How many rows of every [`Sealed`] table are still sealed under a key version below `active`.
pub async fn left_under(tx: &mut TenantTx, active: u32) -> Result<u64, ApiError> {
    let counts: Vec<String> = Sealed::ALL
        .iter()
        .map(|what| {
            let Columns { table, key_version, sealed, .. } = what.columns();
            format!("(SELECT count(*) FROM {table} WHERE {key_version} < $1 AND {sealed} IS NOT NULL)")
        })
        .collect();
    let (n,): (i64,) = tx.one(sqlx::query_as(&format!("SELECT {}", counts.join(" + "))).bind(active as i32)).await?;
    Ok(n as u64)
}
