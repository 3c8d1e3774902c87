//! SQL of the signed checkpoints (`checkpoints`): each a tree size, its root and the C2SP signed
//! note over them. Rows are only ever added.

use kit::{ApiError, TenantTx};
use proto::audit::v1 as pb;

use super::bigint;
use crate::domain::merkle::Hash;

#[derive(sqlx::FromRow)]
struct Row {
    tree_size: i64,
    root_hash: Vec<u8>,
    signed_note: String,
}

impl From<Row> for pb::Checkpoint {
    fn from(r: Row) -> Self {
        pb::Checkpoint { tree_size: r.tree_size as u64, root_hash: r.root_hash, signed_note: r.signed_note }
    }
}

/// The checkpoint of the largest tree.
pub async fn latest(tx: &mut TenantTx) -> Result<Option<pb::Checkpoint>, ApiError> {
    let row: Option<Row> = tx
        .optional(sqlx::query_as(
            "SELECT tree_size, root_hash, signed_note FROM checkpoints ORDER BY tree_size DESC LIMIT 1",
        ))
        .await?;
    Ok(row.map(pb::Checkpoint::from))
}

/// The newest checkpoint with `after < tree_size <= upto`.
pub async fn newest_between(tx: &mut TenantTx, after: u64, upto: u64) -> Result<Option<pb::Checkpoint>, ApiError> {
    let row: Option<Row> = tx
        .optional(
            sqlx::query_as(
                "SELECT tree_size, root_hash, signed_note FROM checkpoints WHERE tree_size > $1 AND tree_size <= $2 \
         ORDER BY tree_size DESC LIMIT 1",
            )
            .bind(bigint(after))
            .bind(bigint(upto)),
        )
        .await?;
    Ok(row.map(pb::Checkpoint::from))
}

/// Stores the checkpoint of the first `size` entries, unless one of that size is stored already
/// (a replica signed it first).
pub async fn insert(
    tx: &mut TenantTx,
    size: u64,
    root: &Hash,
    signed_note: &str,
    key_version: i32,
) -> Result<(), ApiError> {
    let insert = sqlx::query(
        "INSERT INTO checkpoints (tree_size, root_hash, signed_note, key_version) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    );
    tx.execute(insert.bind(size as i64).bind(root.as_slice()).bind(signed_note).bind(key_version)).await.map(drop)
}

/// How many seconds ago the oldest log entry that no checkpoint covers (the first beyond the
/// latest checkpoint's tree) was logged; 0 when the latest checkpoint covers the whole log. Two
/// primary-key reads: the largest tree size, then the entry from that sequence number on.
pub async fn unsigned_age(tx: &mut TenantTx) -> Result<f64, ApiError> {
    tx.scalar(sqlx::query_scalar(
        "SELECT coalesce((SELECT greatest(extract(epoch FROM now() - recorded_at), 0)::float8 FROM audit_log \
         WHERE seq >= coalesce((SELECT max(tree_size) FROM checkpoints), 0) ORDER BY seq LIMIT 1), 0)",
    ))
    .await
}

/// A stored checkpoint as a tenant's export bundle lists it.
#[derive(Debug, sqlx::FromRow)]
pub struct Stored {
    pub tree_size: i64,
    pub root_hash: Vec<u8>,
    pub signed_note: String,
    pub key_version: i32,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Up to `limit` checkpoints with `tree_size > after`, by tree size.
pub async fn after(tx: &mut TenantTx, after: u64, limit: i64) -> Result<Vec<Stored>, ApiError> {
    tx.all(
        sqlx::query_as(
            "SELECT tree_size, root_hash, signed_note, key_version, created_at FROM checkpoints \
             WHERE tree_size > $1 ORDER BY tree_size LIMIT $2",
        )
        .bind(bigint(after))
        .bind(limit),
    )
    .await
}
