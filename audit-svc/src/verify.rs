//! Server-side verification of a tenant's log: recomputes every entry's canonical bytes from its
//! stored fields, its leaf hash and its chain link, and the Merkle nodes above it, and reports the
//! first sequence number that does not match (a row edited behind the triggers' back).

use kit::{ApiError, Db, Tenant};

use crate::domain::merkle::{Hash, leaf_hash, node_hash};
use crate::store;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub checked: u64,
    /// `(seq, what)` of the first mismatch.
    pub first_mismatch: Option<(u64, &'static str)>,
}

/// Verifies the whole log of `tenant`, reading it in pages.
pub async fn verify(db: &Db, tenant: &Tenant) -> Result<Report, ApiError> {
    const PAGE: i64 = 5000;
    let mut tx = db.begin(tenant).await?;
    let mut chain: Hash = [0u8; 32];
    let mut level0: Vec<Hash> = Vec::new();
    let mut expected_seq = 0u64;
    // A log pruned beyond retention continues from the prune mark: the pruned entries' leaves are
    // the stored level-0 nodes (still covered by every checkpoint), the chain resumes from the mark.
    if let Some((below, link)) = store::log::prune_mark(&mut tx).await? {
        let leaves = store::log::kept_leaves(&mut tx, 0, below, below as i64).await?;
        if leaves.len() as u64 != below {
            return Ok(Report { checked: 0, first_mismatch: Some((leaves.len() as u64, "pruned leaf missing")) });
        }
        level0.extend(leaves.into_iter().map(|(_, leaf)| leaf));
        chain = link;
        expected_seq = below;
    }
    loop {
        let rows = store::log::stored(&mut tx, expected_seq, PAGE).await?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let seq = row.seq as u64;
            if seq != expected_seq {
                return Ok(Report { checked: expected_seq, first_mismatch: Some((expected_seq, "sequence gap")) });
            }
            let entry = row.fields.entry(seq);
            let canonical = entry.canonical();
            if canonical != row.canonical {
                return Ok(Report {
                    checked: seq,
                    first_mismatch: Some((seq, "fields do not match the canonical bytes")),
                });
            }
            let leaf = leaf_hash(&canonical);
            if leaf.as_slice() != row.leaf_hash.as_slice() {
                return Ok(Report { checked: seq, first_mismatch: Some((seq, "leaf hash")) });
            }
            chain = crate::domain::merkle::chain_hash(&chain, &leaf);
            if chain.as_slice() != row.chain_hash.as_slice() {
                return Ok(Report { checked: seq, first_mismatch: Some((seq, "chain hash")) });
            }
            level0.push(leaf);
            expected_seq += 1;
        }
    }
    // The stored perfect-subtree nodes must be the hashes of the verified leaves.
    let nodes = store::log::nodes(&mut tx).await?;
    tx.commit().await?;
    let mut levels: Vec<Vec<Hash>> = vec![level0];
    while levels.last().is_some_and(|l| l.len() >= 2) {
        let next: Vec<Hash> =
            levels.last().map(|l| l.chunks_exact(2).map(|p| node_hash(&p[0], &p[1])).collect()).unwrap_or_default();
        levels.push(next);
    }
    for (level, idx, hash) in nodes {
        let want = levels.get(level as usize).and_then(|l| l.get(idx as usize));
        if want.map(|w| w.as_slice()) != Some(hash.as_slice()) {
            let first_leaf = (idx as u64) << level;
            return Ok(Report { checked: expected_seq, first_mismatch: Some((first_leaf, "merkle node")) });
        }
    }
    Ok(Report { checked: expected_seq, first_mismatch: None })
}
