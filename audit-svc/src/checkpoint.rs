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

/// Loads the perfect-subtree nodes `keys` with one query. Those from [`merkle::STORED_FROM`] up
/// are stored (one primary-key probe each). Those below are recomputed from the leaves of their
/// block of [`merkle::BLOCK`] entries (one index range scan per block), so the map also holds every
/// other node of those blocks, as far as their leaves are contiguous.
pub async fn load_nodes(tx: &mut TenantTx, keys: &[(u8, u64)]) -> Result<HashMap<(u8, u64), Hash>, ApiError> {
    let (upper, lower): (Vec<_>, Vec<_>) = keys.iter().copied().partition(|k| k.0 >= merkle::STORED_FROM);
    let levels: Vec<i16> = upper.iter().map(|k| k.0 as i16).collect();
    let idxs: Vec<i64> = upper.iter().map(|k| k.1 as i64).collect();
    let mut blocks: Vec<i64> = lower.iter().map(|&(l, i)| ((i << l) - ((i << l) % merkle::BLOCK)) as i64).collect();
    blocks.sort_unstable();
    blocks.dedup();
    // A block's leaves come from the log or, for entries pruned beyond retention, from the level-0
    // nodes kept in their place; entries sequenced while every level was stored have both. The
    // `ORDER BY … LIMIT` keeps each block's read a range scan of the primary key: without it the
    // planner took the lower bound alone as the index condition and read to the end of the log.
    let rows: Vec<(i16, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT n.level, n.idx, n.hash FROM unnest($1::smallint[], $2::bigint[]) AS w(level, idx) \
         CROSS JOIN LATERAL (SELECT * FROM merkle_nodes m WHERE m.level = w.level AND m.idx = w.idx LIMIT 1) AS n \
         UNION ALL SELECT 0::smallint, l.seq, l.leaf_hash FROM unnest($3::bigint[], $4::bigint[]) AS b(first, last) \
         CROSS JOIN LATERAL (SELECT seq, leaf_hash FROM audit_log WHERE seq >= b.first AND seq < b.last \
                             ORDER BY seq LIMIT $5) AS l \
         UNION ALL SELECT 0::smallint, p.idx, p.hash FROM unnest($3::bigint[], $4::bigint[]) AS b(first, last) \
         CROSS JOIN LATERAL (SELECT idx, hash FROM merkle_nodes WHERE level = 0 AND idx >= b.first AND idx < b.last \
                             ORDER BY idx LIMIT $5) AS p",
    )
    .bind(levels)
    .bind(idxs)
    .bind(&blocks)
    .bind(blocks.iter().map(|b| b + merkle::BLOCK as i64).collect::<Vec<i64>>())
    .bind(merkle::BLOCK as i64)
    // Unprepared: a generic plan made while a new tenant's tree was a few nodes could scan the
    // tables for every key, and stay cached until they are analyzed.
    .persistent(false)
    .fetch_all(tx.conn())
    .await
    .map_err(db_error)?;
    let mut map = HashMap::new();
    let mut leaves = std::collections::BTreeMap::new();
    for (l, i, h) in rows {
        let h: Hash = h.try_into().map_err(|_| ApiError::internal(&"stored node is not 32 bytes"))?;
        if l == 0 {
            leaves.insert(i as u64, h);
        } else {
            map.insert((l as u8, i as u64), h);
        }
    }
    for first in blocks {
        let first = first as u64;
        let contiguous: Vec<Hash> = leaves
            .range(first..first + merkle::BLOCK)
            .enumerate()
            .take_while(|(n, (i, _))| **i == first + *n as u64)
            .map(|(_, (_, h))| *h)
            .collect();
        for (l, i, h) in merkle::block_nodes(first, &contiguous) {
            map.entry((l, i)).or_insert(h);
        }
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
    let signed = kit::signing::sign(signer, tenant.slug.as_str(), KEY_NAME, body.clone().into_bytes())
        .await
        .map_err(|s| ApiError::from_status(&s))?;
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
