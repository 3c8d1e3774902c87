//! RFC 9162 (Certificate Transparency v2) Merkle tree hashing, inclusion and consistency proofs,
//! and their verification. Leaf hash = SHA-256(0x00 ‖ bytes); node = SHA-256(0x01 ‖ left ‖ right).
//!
//! Proof generation works on *perfect subtrees*: node `(level, index)` is the hash of leaves
//! `[index·2^level, (index+1)·2^level)`. The store keeps exactly those nodes, so any proof or root
//! needs O(log n) of them. [`required_nodes`] tells which ones a computation will read, so a store
//! can fetch them in one query before computing.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofError {
    #[error("index {index} is not below tree size {size}")]
    OutOfRange { index: u64, size: u64 },
    #[error("sizes {from} and {to} are not a valid consistency pair")]
    BadSizes { from: u64, to: u64 },
    #[error("proof has the wrong length")]
    WrongLength,
    #[error("proof does not lead to the expected root")]
    Mismatch,
    #[error("a required node is missing from the store")]
    MissingNode,
}

pub fn leaf_hash(bytes: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(bytes);
    h.finalize().into()
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The hash chain link: SHA-256(previous chain ‖ leaf hash); the chain starts from 32 zero bytes.
pub fn chain_hash(previous: &Hash, leaf: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(previous);
    h.update(leaf);
    h.finalize().into()
}

/// The lowest level stored for entries still in the log. A node below it is recomputed from the
/// leaves of its block of [`BLOCK`] entries (one index range scan). Storing every level was about
/// two node rows per entry, beside the entry's own row; from level 4 up it is one per eight
/// entries, and a proof reads at most a few blocks of 16 leaves. (Level 8 was measured too:
/// no faster to append, and a proof then read 256 leaves per block, ~1.5 ms of CPU more.)
pub const STORED_FROM: u8 = 4;

/// Leaves under one node of level [`STORED_FROM`].
pub const BLOCK: u64 = 1 << STORED_FROM;

/// Every perfect-subtree node of levels `0..=STORED_FROM` made only of the consecutive `leaves`,
/// the first of which is leaf `first` (a multiple of [`BLOCK`]), as `(level, index, hash)`.
pub fn block_nodes(first: u64, leaves: &[Hash]) -> Vec<(u8, u64, Hash)> {
    debug_assert!(first.is_multiple_of(BLOCK));
    let mut out = Vec::with_capacity(leaves.len() * 2);
    let mut level: Vec<Hash> = leaves.to_vec();
    for l in 0..=STORED_FROM {
        let base = first >> l;
        out.extend(level.iter().enumerate().map(|(j, h)| (l, base + j as u64, *h)));
        if level.len() < 2 {
            break;
        }
        level = level.chunks_exact(2).map(|p| node_hash(&p[0], &p[1])).collect();
    }
    out
}

/// Largest power of two strictly below `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Reads perfect-subtree nodes.
pub trait Nodes {
    fn node(&self, level: u8, index: u64) -> Option<Hash>;
}

impl<F: Fn(u8, u64) -> Option<Hash>> Nodes for F {
    fn node(&self, level: u8, index: u64) -> Option<Hash> {
        self(level, index)
    }
}

/// MTH of leaves `[start, end)`; `start` must be a multiple of the largest power of two below
/// `end - start` (true for every range RFC 9162's recursion produces).
pub fn range_hash(start: u64, end: u64, nodes: &impl Nodes) -> Result<Hash, ProofError> {
    let n = end - start;
    if n == 0 {
        return Ok(empty_root());
    }
    if n.is_power_of_two() && start.is_multiple_of(n) {
        let level = n.trailing_zeros() as u8;
        return nodes.node(level, start >> level).ok_or(ProofError::MissingNode);
    }
    let k = split(n);
    Ok(node_hash(&range_hash(start, start + k, nodes)?, &range_hash(start + k, end, nodes)?))
}

/// The root of the first `size` leaves.
pub fn root(size: u64, nodes: &impl Nodes) -> Result<Hash, ProofError> {
    range_hash(0, size, nodes)
}

/// Audit path of leaf `index` in the tree of `size` leaves (RFC 9162 §2.1.3.1), leaf to root.
pub fn inclusion_proof(index: u64, size: u64, nodes: &impl Nodes) -> Result<Vec<Hash>, ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange { index, size });
    }
    fn path(m: u64, start: u64, end: u64, nodes: &impl Nodes, out: &mut Vec<Hash>) -> Result<(), ProofError> {
        let n = end - start;
        if n <= 1 {
            return Ok(());
        }
        let k = split(n);
        if m < k {
            path(m, start, start + k, nodes, out)?;
            out.push(range_hash(start + k, end, nodes)?);
        } else {
            path(m - k, start + k, end, nodes, out)?;
            out.push(range_hash(start, start + k, nodes)?);
        }
        Ok(())
    }
    let mut out = Vec::new();
    path(index, 0, size, nodes, &mut out)?;
    Ok(out)
}

/// Consistency proof between the trees of `from` and `to` leaves (RFC 9162 §2.1.4.1).
pub fn consistency_proof(from: u64, to: u64, nodes: &impl Nodes) -> Result<Vec<Hash>, ProofError> {
    if from == 0 || from > to {
        return Err(ProofError::BadSizes { from, to });
    }
    fn sub(
        m: u64,
        start: u64,
        end: u64,
        complete: bool,
        nodes: &impl Nodes,
        out: &mut Vec<Hash>,
    ) -> Result<(), ProofError> {
        let n = end - start;
        if m == n {
            if !complete {
                out.push(range_hash(start, end, nodes)?);
            }
            return Ok(());
        }
        let k = split(n);
        if m <= k {
            sub(m, start, start + k, complete, nodes, out)?;
            out.push(range_hash(start + k, end, nodes)?);
        } else {
            sub(m - k, start + k, end, false, nodes, out)?;
            out.push(range_hash(start, start + k, nodes)?);
        }
        Ok(())
    }
    let mut out = Vec::new();
    sub(from, 0, to, true, nodes, &mut out)?;
    Ok(out)
}

/// The perfect-subtree nodes `compute` will read: run it once against a recorder.
pub fn required_nodes<T>(
    compute: impl Fn(&dyn Fn(u8, u64) -> Option<Hash>) -> Result<T, ProofError>,
) -> Vec<(u8, u64)> {
    let seen = std::cell::RefCell::new(Vec::new());
    let recorder = |level: u8, index: u64| {
        seen.borrow_mut().push((level, index));
        Some([0u8; 32])
    };
    let _ = compute(&recorder);
    let mut v = seen.into_inner();
    v.sort_unstable();
    v.dedup();
    v
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange { index, size });
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    if &r == root { Ok(()) } else { Err(ProofError::Mismatch) }
}

/// Verifies a consistency proof (RFC 9162 §2.1.4.2).
pub fn verify_consistency(from: u64, to: u64, root1: &Hash, root2: &Hash, proof: &[Hash]) -> Result<(), ProofError> {
    // A consistency check against the empty tree proves nothing and is refused.
    if from > to || from == 0 {
        return Err(ProofError::BadSizes { from, to });
    }
    if from == to {
        return if proof.is_empty() && root1 == root2 {
            Ok(())
        } else if !proof.is_empty() {
            Err(ProofError::WrongLength)
        } else {
            Err(ProofError::Mismatch)
        };
    }
    if proof.is_empty() {
        return Err(ProofError::WrongLength);
    }
    let mut path: Vec<Hash> = proof.to_vec();
    if from.is_power_of_two() {
        path.insert(0, *root1);
    }
    let (mut fnode, mut snode) = (from - 1, to - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    if &fr == root1 && &sr == root2 { Ok(()) } else { Err(ProofError::Mismatch) }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;

    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;

    use super::*;

    /// The RFC 6962 reference leaves behind the transparency-dev vectors.
    fn leaves() -> Vec<Vec<u8>> {
        ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
            .iter()
            .map(|h| hex::decode(h).expect("hex"))
            .collect()
    }

    /// Every perfect-subtree node of a tree of these leaves.
    fn nodes_of(leaves: &[Vec<u8>]) -> HashMap<(u8, u64), Hash> {
        let mut nodes = HashMap::new();
        let mut level: Vec<Hash> = leaves.iter().map(|l| leaf_hash(l)).collect();
        let mut l = 0u8;
        loop {
            for (i, h) in level.iter().enumerate() {
                nodes.insert((l, i as u64), *h);
            }
            if level.len() < 2 {
                break;
            }
            level = level.chunks_exact(2).map(|p| node_hash(&p[0], &p[1])).collect();
            l += 1;
        }
        nodes
    }

    fn naive_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&naive_root(&leaves[..k]), &naive_root(&leaves[k..]))
            }
        }
    }

    fn vectors(kind: &str) -> Vec<serde_json::Value> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/transparency-dev-merkle").join(kind);
        let mut out = Vec::new();
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("testdata/transparency-dev-merkle").flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "json") {
                    out.push(serde_json::from_str(&std::fs::read_to_string(&p).expect("read")).expect("json"));
                }
            }
        }
        assert!(!out.is_empty(), "no {kind} vectors found");
        out
    }

    /// A hash from the vectors; an empty value is no hash, and a value of another length ("don't
    /// care" roots) is mapped to a 32-byte stand-in that keeps equality.
    fn hash(v: &serde_json::Value) -> Option<Hash> {
        let bytes = B64.decode(v.as_str()?).ok().filter(|b| !b.is_empty())?;
        Some(bytes.clone().try_into().unwrap_or_else(|_| Sha256::digest(&bytes).into()))
    }

    fn proof(v: &serde_json::Value) -> Option<Vec<Hash>> {
        match v {
            serde_json::Value::Null => Some(Vec::new()),
            serde_json::Value::Array(a) => a.iter().map(hash).collect(),
            _ => None,
        }
    }

    #[test]
    fn transparency_dev_inclusion_vectors() {
        let cases = vectors("inclusion");
        for case in &cases {
            let want_err = case["wantErr"].as_bool().unwrap_or(false);
            let result = (|| {
                let index = case["leafIdx"].as_i64().filter(|i| *i >= 0)? as u64;
                let size = case["treeSize"].as_i64().filter(|i| *i >= 0)? as u64;
                Some(verify_inclusion(
                    index,
                    size,
                    &hash(&case["leafHash"])?,
                    &proof(&case["proof"])?,
                    &hash(&case["root"])?,
                ))
            })();
            let ok = matches!(result, Some(Ok(())));
            assert_eq!(ok, !want_err, "{}", case["desc"]);
        }
    }

    #[test]
    fn transparency_dev_consistency_vectors() {
        let cases = vectors("consistency");
        for case in &cases {
            let want_err = case["wantErr"].as_bool().unwrap_or(false);
            let result = (|| {
                let from = case["size1"].as_i64().filter(|i| *i >= 0)? as u64;
                let to = case["size2"].as_i64().filter(|i| *i >= 0)? as u64;
                Some(verify_consistency(
                    from,
                    to,
                    &hash(&case["root1"])?,
                    &hash(&case["root2"])?,
                    &proof(&case["proof"])?,
                ))
            })();
            let ok = matches!(result, Some(Ok(())));
            assert_eq!(ok, !want_err, "{}", case["desc"]);
        }
    }

    #[test]
    fn generated_proofs_match_the_reference_and_verify() {
        let leaves = leaves();
        let hashes: Vec<Hash> = leaves.iter().map(|l| leaf_hash(l)).collect();
        let nodes = nodes_of(&leaves);
        let get = |l: u8, i: u64| nodes.get(&(l, i)).copied();
        for size in 1..=8u64 {
            let r = root(size, &get).expect("root");
            assert_eq!(r, naive_root(&hashes[..size as usize]));
            for index in 0..size {
                let p = inclusion_proof(index, size, &get).expect("proof");
                verify_inclusion(index, size, &hashes[index as usize], &p, &r).expect("verifies");
            }
            for from in 1..=size {
                let r1 = root(from, &get).expect("root");
                let p = consistency_proof(from, size, &get).expect("proof");
                verify_consistency(from, size, &r1, &r, &p).expect("consistent");
            }
        }
        // The reference root of all eight leaves.
        assert_eq!(B64.encode(root(8, &get).expect("root")), "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=");
    }

    #[test]
    fn a_block_gives_the_nodes_below_the_stored_levels() {
        let leaves: Vec<Vec<u8>> = (0..1000u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let hashes: Vec<Hash> = leaves.iter().map(|l| leaf_hash(l)).collect();
        let all = nodes_of(&leaves);
        // One block, several, a partial last block, a single leaf.
        let b = BLOCK as usize;
        for (first, len) in [(0u64, b), (BLOCK, b), (3 * BLOCK, 5 * b + 3), (5 * BLOCK, 1), (BLOCK * 60, 1000 - 60 * b)]
        {
            let mut got = block_nodes(first, &hashes[first as usize..first as usize + len]);
            let mut want: Vec<(u8, u64, Hash)> = all
                .iter()
                .filter(|((l, i), _)| *l <= STORED_FROM && i << l >= first && (i + 1) << l <= first + len as u64)
                .map(|(&(l, i), &h)| (l, i, h))
                .collect();
            want.sort_unstable();
            got.sort_unstable();
            assert_eq!(got, want, "block at {first}, {len} leaves");
        }
        assert_eq!(block_nodes(0, &hashes[..b]).iter().filter(|n| n.0 == STORED_FROM).count(), 1);
    }

    #[test]
    fn larger_trees_and_logarithmic_reads() {
        let leaves: Vec<Vec<u8>> = (0..1000u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let hashes: Vec<Hash> = leaves.iter().map(|l| leaf_hash(l)).collect();
        let nodes = nodes_of(&leaves);
        let get = |l: u8, i: u64| nodes.get(&(l, i)).copied();
        for size in [1u64, 2, 3, 5, 64, 100, 513, 999, 1000] {
            let r = root(size, &get).expect("root");
            assert_eq!(r, naive_root(&hashes[..size as usize]));
            let index = size / 3;
            let needed = required_nodes(|n| inclusion_proof(index, size, &n));
            assert!(needed.len() <= 2 * 64, "{} nodes for size {size}", needed.len());
            verify_inclusion(index, size, &hashes[index as usize], &inclusion_proof(index, size, &get).expect("p"), &r)
                .expect("ok");
            let half = size.div_ceil(2);
            let p = consistency_proof(half, size, &get).expect("c");
            verify_consistency(half, size, &root(half, &get).expect("r1"), &r, &p).expect("consistent");
        }
        let mut tampered = inclusion_proof(5, 1000, &get).expect("p");
        tampered[0][0] ^= 1;
        assert_eq!(
            verify_inclusion(5, 1000, &hashes[5], &tampered, &root(1000, &get).expect("r")),
            Err(ProofError::Mismatch)
        );
    }
}
