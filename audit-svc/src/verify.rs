//! Server-side verification of a tenant's log: recomputes every entry's canonical bytes from its
//! stored fields, its leaf hash and its chain link, and the Merkle nodes above it, and reports the
//! first sequence number that does not match (a row edited behind the triggers' back). A pass
//! reads one snapshot and never writes. [`verify`] checks the whole log; [`verify_from`] only the
//! entries after a point an earlier pass verified (the continuous verification's incremental pass).

use kit::{ApiError, Db, Tenant, TenantTx};

use crate::domain::merkle::{Hash, chain_hash, leaf_hash, node_hash};
use crate::store;
use crate::store::log::Stored;

/// Entries read per query.
const PAGE: i64 = 5000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Entries `0..checked` are verified: the first mismatch, or the log's size.
    pub checked: u64,
    /// `(seq, what)` of the first mismatch.
    pub first_mismatch: Option<(u64, &'static str)>,
    /// The chain link of entry `checked - 1` (all zeroes for an empty log): where a later pass
    /// continues from.
    pub link: Hash,
}

/// Verifies the whole log of `tenant`, reading it in pages.
pub async fn verify(db: &Db, tenant: &Tenant) -> Result<Report, ApiError> {
    let mut tx = snapshot(db, tenant).await?;
    let report = whole(&mut tx).await?;
    tx.commit().await?;
    Ok(report)
}

/// Verifies the entries of `tenant` from `from` on, continuing the chain from `link` (the link of
/// entry `from - 1`, as a pass that verified the entries before `from` left it). The Merkle nodes
/// are left to the next [`verify`]: the chain links already bind every new entry to all before it.
pub async fn verify_from(db: &Db, tenant: &Tenant, from: u64, link: Hash) -> Result<Report, ApiError> {
    let mut tx = snapshot(db, tenant).await?;
    let report = chain(&mut tx, from, link, None).await?;
    tx.commit().await?;
    Ok(report)
}

/// A read-only transaction of `tenant` on one snapshot.
async fn snapshot(db: &Db, tenant: &Tenant) -> Result<TenantTx, ApiError> {
    let mut tx = db.begin(tenant).await?;
    store::log::snapshot(&mut tx).await?;
    Ok(tx)
}

async fn whole(tx: &mut TenantTx) -> Result<Report, ApiError> {
    let mut level0: Vec<Hash> = Vec::new();
    let (mut from, mut link) = (0, [0u8; 32]);
    // A log pruned beyond retention continues from the prune mark: the pruned entries' leaves are
    // the stored level-0 nodes (still covered by every checkpoint), the chain resumes from the mark.
    if let Some((below, mark)) = store::log::prune_mark(tx).await? {
        let leaves = store::log::kept_leaves(tx, 0, below, below as i64).await?;
        if leaves.len() as u64 != below {
            let missing = leaves.len() as u64;
            return Ok(Report { checked: 0, first_mismatch: Some((missing, "pruned leaf missing")), link: [0u8; 32] });
        }
        level0.extend(leaves.into_iter().map(|(_, leaf)| leaf));
        (from, link) = (below, mark);
    }
    let report = chain(tx, from, link, Some(&mut level0)).await?;
    if report.first_mismatch.is_some() {
        return Ok(report);
    }
    // The stored perfect-subtree nodes must be the hashes of the verified leaves.
    let nodes = store::log::nodes(tx).await?;
    Ok(Report { first_mismatch: merkle_mismatch(level0, &nodes).map(|seq| (seq, "merkle node")), ..report })
}

/// Checks the entries from `from` on, continuing the chain from `link`; pushes their leaves to
/// `leaves` when given.
async fn chain(
    tx: &mut TenantTx,
    from: u64,
    mut link: Hash,
    mut leaves: Option<&mut Vec<Hash>>,
) -> Result<Report, ApiError> {
    let mut expected = from;
    loop {
        let rows = store::log::stored(tx, expected, PAGE).await?;
        if rows.is_empty() {
            return Ok(Report { checked: expected, first_mismatch: None, link });
        }
        for row in rows {
            match check_entry(expected, &link, row) {
                Ok((leaf, next)) => {
                    link = next;
                    if let Some(leaves) = leaves.as_deref_mut() {
                        leaves.push(leaf);
                    }
                    expected += 1;
                }
                Err(what) => return Ok(Report { checked: expected, first_mismatch: Some((expected, what)), link }),
            }
        }
    }
}

/// Checks the stored entry `row`, expected at sequence number `seq` after chain link `previous`:
/// its leaf hash and chain link, or what does not match.
fn check_entry(seq: u64, previous: &Hash, row: Stored) -> Result<(Hash, Hash), &'static str> {
    if row.seq as u64 != seq {
        return Err("sequence gap");
    }
    let canonical = row.fields.entry(seq).canonical();
    if canonical != row.canonical {
        return Err("fields do not match the canonical bytes");
    }
    let leaf = leaf_hash(&canonical);
    if leaf.as_slice() != row.leaf_hash.as_slice() {
        return Err("leaf hash");
    }
    let link = chain_hash(previous, &leaf);
    if link.as_slice() != row.chain_hash.as_slice() {
        return Err("chain hash");
    }
    Ok((leaf, link))
}

/// The first leaf under the first stored node `(level, index, hash)` that is not the hash of the
/// verified leaves `level0` (every leaf of the log, from 0).
fn merkle_mismatch(level0: Vec<Hash>, nodes: &[(i16, i64, Vec<u8>)]) -> Option<u64> {
    let mut levels: Vec<Vec<Hash>> = vec![level0];
    while let Some(last) = levels.last().filter(|l| l.len() >= 2) {
        let next = last.chunks_exact(2).map(|p| node_hash(&p[0], &p[1])).collect();
        levels.push(next);
    }
    nodes.iter().find_map(|(level, idx, hash)| {
        let want = levels.get(*level as usize).and_then(|l| l.get(*idx as usize));
        (want.map(|w| w.as_slice()) != Some(hash.as_slice())).then_some((*idx as u64) << level)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::log::RecordFields;

    fn fields(resource: &str) -> RecordFields {
        RecordFields {
            event_id: uuid::Uuid::now_v7(),
            occurred_at: chrono::Utc::now(),
            service: "vault".into(),
            actor: "user:u1".into(),
            action: "test.event".into(),
            resource: resource.into(),
            outcome: "success".into(),
            request_id: None,
            trace_id: None,
            details: serde_json::json!({}),
        }
    }

    /// Entry `seq` as the sequencer stores it after chain link `previous`.
    fn stored(seq: u64, previous: &Hash) -> Stored {
        let entry = fields(&format!("t/{seq}")).entry(seq);
        let (canonical, leaf, link) = entry.seal(previous);
        let fields = RecordFields {
            event_id: entry.event_id,
            occurred_at: entry.occurred_at,
            service: entry.service,
            actor: entry.actor,
            action: entry.action,
            resource: entry.resource,
            outcome: entry.outcome,
            request_id: entry.request_id,
            trace_id: entry.trace_id,
            details: entry.details,
        };
        Stored { seq: seq as i64, fields, canonical, leaf_hash: leaf.to_vec(), chain_hash: link.to_vec() }
    }

    #[test]
    fn an_entry_checks_against_its_own_fields_and_the_previous_link() {
        let previous = [7u8; 32];
        let (leaf, link) = check_entry(3, &previous, stored(3, &previous)).expect("intact");
        assert_eq!(link, chain_hash(&previous, &leaf));

        let mut edited = stored(3, &previous);
        edited.fields.outcome = "failure".into();
        assert_eq!(check_entry(3, &previous, edited), Err("fields do not match the canonical bytes"));
        assert_eq!(check_entry(4, &previous, stored(3, &previous)), Err("sequence gap"));
        assert_eq!(check_entry(3, &[0u8; 32], stored(3, &previous)), Err("chain hash"));
        let mut leaf_swapped = stored(3, &previous);
        leaf_swapped.leaf_hash = vec![0u8; 32];
        assert_eq!(check_entry(3, &previous, leaf_swapped), Err("leaf hash"));
    }

    #[test]
    fn a_stored_node_that_is_not_the_hash_of_its_leaves_names_its_first_leaf() {
        let leaves: Vec<Hash> = (0..8u8).map(|i| leaf_hash(&[i])).collect();
        let pair = |a: usize, b: usize| node_hash(&leaves[a], &leaves[b]);
        let quad = node_hash(&pair(4, 5), &pair(6, 7));
        let good = vec![(1, 1, pair(2, 3).to_vec()), (2, 1, quad.to_vec())];
        assert_eq!(merkle_mismatch(leaves.clone(), &good), None);
        let bad = vec![(1, 1, pair(2, 3).to_vec()), (2, 1, pair(4, 5).to_vec())];
        assert_eq!(merkle_mismatch(leaves.clone(), &bad), Some(4));
        // A node over leaves the log does not hold is no hash of verified leaves either.
        assert_eq!(merkle_mismatch(leaves, &[(3, 1, quad.to_vec())]), Some(8));
    }
}
