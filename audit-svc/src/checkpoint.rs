//! Signed checkpoints: after a batch, the tree's new root is signed by the tenant's `audit` key in
//! vault-svc (the private key never leaves it) and stored as a C2SP signed note.

use std::collections::HashMap;

use kit::tenancy::db_error;
use kit::{ApiError, Db, Tenant, TenantTx};
use proto::vault::v1::signing_service_client::SigningServiceClient;

use crate::domain::merkle::{self, Hash};
use crate::domain::note;

/// Name of the tenant's signing key in vault-svc.
pub const KEY_NAME: &str = "audit";

pub type Signer = SigningServiceClient<kit::client::Channel>;

/// The checkpoint origin (and key name) of a tenant.
pub fn origin(tenant: &Tenant) -> String {
    format!("strongroom.audit/{}", tenant.slug)
}

/// Loads the perfect-subtree nodes `keys` in one query (one primary-key probe per key).
pub async fn load_nodes(tx: &mut TenantTx, keys: &[(u8, u64)]) -> Result<HashMap<(u8, u64), Hash>, ApiError> {
    let levels: Vec<i16> = keys.iter().map(|k| k.0 as i16).collect();
    let idxs: Vec<i64> = keys.iter().map(|k| k.1 as i64).collect();
    let rows: Vec<(i16, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT n.level, n.idx, n.hash FROM unnest($1::smallint[], $2::bigint[]) AS w(level, idx) \
         CROSS JOIN LATERAL (SELECT * FROM merkle_nodes m WHERE m.level = w.level AND m.idx = w.idx LIMIT 1) AS n",
    )
    .bind(levels)
    .bind(idxs)
    // Unprepared: a generic plan made while a new tenant's tree was a few nodes could scan the
    // table for every key, and stay cached until the table is analyzed.
    .persistent(false)
    .fetch_all(tx.conn())
    .await
    .map_err(db_error)?;
    let mut map = HashMap::new();
    for (l, i, h) in rows {
        map.insert((l as u8, i as u64), h.try_into().map_err(|_| ApiError::internal(&"stored node is not 32 bytes"))?);
    }
    Ok(map)
}

/// The number of entries in the log.
pub async fn log_size(tx: &mut TenantTx) -> Result<u64, ApiError> {
    // The newest entry by the primary key, as the sequencer finds it. `max(seq)` took 10–12 ms per
    // checkpoint under a ledger batch load (a new tenant's log, no statistics yet); this takes 0.02 ms.
    let last: Option<i64> = sqlx::query_scalar("SELECT seq FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(tx.conn())
        .await
        .map_err(db_error)?;
    Ok(last.map_or(0, |m| m as u64 + 1))
}

/// The root of the first `size` entries, from O(log n) stored nodes.
pub async fn root(tx: &mut TenantTx, size: u64) -> Result<Hash, ApiError> {
    let keys = merkle::required_nodes(|n| merkle::root(size, &n));
    let nodes = load_nodes(tx, &keys).await?;
    merkle::root(size, &|l, i| nodes.get(&(l, i)).copied()).map_err(|e| ApiError::internal(&e))
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Stored {
    pub tree_size: i64,
    pub root_hash: Vec<u8>,
    pub signed_note: String,
}

pub async fn latest(tx: &mut TenantTx) -> Result<Option<Stored>, ApiError> {
    sqlx::query_as("SELECT tree_size, root_hash, signed_note FROM checkpoints ORDER BY tree_size DESC LIMIT 1")
        .fetch_optional(tx.conn())
        .await
        .map_err(db_error)
}

/// Signs and stores a checkpoint of the current log if it grew since the latest one.
pub async fn make(db: &Db, signer: &Signer, tenant: &Tenant) -> Result<Option<u64>, ApiError> {
    let mut tx = db.begin(tenant).await?;
    let size = log_size(&mut tx).await?;
    let latest = latest(&mut tx).await?.map_or(0, |c| c.tree_size as u64);
    if size == 0 || size <= latest {
        tx.rollback().await?;
        return Ok(None);
    }
    let root = root(&mut tx, size).await?;
    tx.commit().await?;
    let name = origin(tenant);
    let body = note::body(&name, size, &root);
    let mut client = signer.clone();
    let request = kit::client::with_context(
        tonic::Request::new(proto::vault::v1::SignRequest {
            key_name: KEY_NAME.into(),
            message: body.clone().into_bytes(),
        }),
        Some(tenant.slug.as_str()),
        None,
        None,
    );
    let signed = client.sign(request).await.map_err(|s| ApiError::from_status(&s))?.into_inner();
    let signed_note = note::signed_note(&body, &name, &signed.public_key, &signed.signature);
    let mut tx = db.begin(tenant).await?;
    sqlx::query(
        "INSERT INTO checkpoints (tree_size, root_hash, signed_note, key_version) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(size as i64)
    .bind(root.as_slice())
    .bind(&signed_note)
    .bind(signed.key_version as i32)
    .execute(tx.conn())
    .await
    .map_err(db_error)?;
    sqlx::query("SELECT pg_notify($1, current_setting('strongroom.tenant_id'))")
        .bind(crate::stream::CHANNEL)
        .execute(tx.conn())
        .await
        .map_err(db_error)?;
    tx.commit().await?;
    Ok(Some(size))
}
