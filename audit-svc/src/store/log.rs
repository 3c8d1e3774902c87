//! SQL of the log itself: its entries (`audit_log`), the Merkle levels kept of them
//! (`merkle_nodes`), the prune marks retention leaves behind, the time marks that bound a time
//! window by sequence numbers, and the sequencer's lock and wake-up. Nothing here updates or
//! deletes an entry (the database refuses it; pruning is `store::retention`).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use kit::tenancy::db_error;
use kit::{ApiError, TenantTx};
use proto::audit::v1 as pb;
use uuid::Uuid;

use super::{bigint, hash};
use crate::domain::entry::Entry;
use crate::domain::merkle::{self, Hash, ProofError};

/// The recorded fields of an audit event, as the outbox and the log both store them.
#[derive(Debug, sqlx::FromRow)]
pub struct RecordFields {
    pub event_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub service: String,
    pub actor: String,
    pub action: String,
    pub resource: String,
    pub outcome: String,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    pub details: serde_json::Value,
}

impl RecordFields {
    /// The entry these fields make at sequence number `seq`.
    pub fn entry(self, seq: u64) -> Entry {
        Entry {
            seq,
            event_id: self.event_id,
            occurred_at: self.occurred_at,
            service: self.service,
            actor: self.actor,
            action: self.action,
            resource: self.resource,
            outcome: self.outcome,
            request_id: self.request_id,
            trace_id: self.trace_id,
            details: self.details,
        }
    }
}

/// Whether the tenant's schema holds the log yet (a tenant registered but not yet provisioned for
/// audit-svc does not).
pub async fn provisioned(tx: &mut TenantTx) -> Result<bool, ApiError> {
    tx.scalar(sqlx::query_scalar("SELECT to_regclass('audit_log') IS NOT NULL")).await
}

/// One sequencer per tenant at a time, across replicas: a transaction-scoped advisory lock.
pub async fn lock_sequencer(tx: &mut TenantTx) -> Result<(), ApiError> {
    let lock = sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtext('strongroom.audit.sequencer'), hashtext(current_setting('strongroom.tenant_id')))",
    );
    tx.execute(lock).await.map(drop)
}

/// Live streams of the tenant's log wake when `tx` commits (entries or a checkpoint).
pub async fn notify_readers(tx: &mut TenantTx) -> Result<(), ApiError> {
    let notify =
        sqlx::query("SELECT pg_notify($1, current_setting('strongroom.tenant_id'))").bind(crate::stream::CHANNEL);
    tx.execute(notify).await.map(drop)
}

/// Those of `ids` already in the log.
pub async fn logged(tx: &mut TenantTx, ids: &[Uuid]) -> Result<Vec<Uuid>, ApiError> {
    // One index probe per id (`unnest` + `LATERAL … LIMIT 1`), never `= ANY($1)` or a plain join:
    // those become a scan of the whole log or outbox (times every id) when the planner has no or
    // stale statistics — a new tenant's first minute, or a backlog that grew since the last ANALYZE.
    tx.scalars(
        sqlx::query_scalar(
            "SELECT l.event_id FROM unnest($1::uuid[]) AS w(want) \
         CROSS JOIN LATERAL (SELECT event_id FROM audit_log WHERE event_id = w.want LIMIT 1) AS l",
        )
        .bind(ids)
        // Planned afresh each time: a plan cached while the log was a few pages long (a new tenant)
        // would otherwise stay in use long after the log grew.
        .persistent(false),
    )
    .await
}

/// The newest entry's sequence number and chain link.
pub async fn head(tx: &mut TenantTx) -> Result<Option<(u64, Hash)>, ApiError> {
    newest_link(tx, "SELECT seq, chain_hash FROM audit_log ORDER BY seq DESC LIMIT 1").await
}

/// The one `(number, chain link)` row of `sql`, if any.
async fn newest_link(tx: &mut TenantTx, sql: &'static str) -> Result<Option<(u64, Hash)>, ApiError> {
    let row: Option<(i64, Vec<u8>)> = tx.optional(sqlx::query_as(sql)).await?;
    row.map(|(n, link)| Ok((n as u64, hash(link)?))).transpose()
}

/// The number of entries in the log.
pub async fn size(tx: &mut TenantTx) -> Result<u64, ApiError> {
    // The newest entry by the primary key, as the sequencer finds it. `max(seq)` took 10–12 ms per
    // checkpoint under a ledger batch load (a new tenant's log, no statistics yet); this takes 0.02 ms.
    let last: Option<i64> =
        tx.optional_scalar(sqlx::query_scalar("SELECT seq FROM audit_log ORDER BY seq DESC LIMIT 1")).await?;
    Ok(last.map_or(0, |m| m as u64 + 1))
}

/// Inserts `entries` (each with its canonical bytes, leaf hash and chain link) with one
/// statement, one array per column; the entries are moved into the arrays, not copied.
pub async fn insert_entries(tx: &mut TenantTx, entries: Vec<(Entry, Vec<u8>, Hash, Hash)>) -> Result<(), ApiError> {
    if entries.is_empty() {
        return Ok(());
    }
    let n = entries.len();
    let mut seq: Vec<i64> = Vec::with_capacity(n);
    let mut event_id: Vec<Uuid> = Vec::with_capacity(n);
    let mut occurred_at: Vec<DateTime<Utc>> = Vec::with_capacity(n);
    let mut service: Vec<String> = Vec::with_capacity(n);
    let mut actor: Vec<String> = Vec::with_capacity(n);
    let mut action: Vec<String> = Vec::with_capacity(n);
    let mut resource: Vec<String> = Vec::with_capacity(n);
    let mut outcome: Vec<String> = Vec::with_capacity(n);
    let mut request_id: Vec<Option<String>> = Vec::with_capacity(n);
    let mut trace_id: Vec<Option<String>> = Vec::with_capacity(n);
    let mut details: Vec<serde_json::Value> = Vec::with_capacity(n);
    let mut canonical: Vec<Vec<u8>> = Vec::with_capacity(n);
    let mut leaf: Vec<Vec<u8>> = Vec::with_capacity(n);
    let mut chain: Vec<Vec<u8>> = Vec::with_capacity(n);
    for (e, bytes, leaf_hash, chain_hash) in entries {
        seq.push(e.seq as i64);
        event_id.push(e.event_id);
        occurred_at.push(e.occurred_at);
        service.push(e.service);
        actor.push(e.actor);
        action.push(e.action);
        resource.push(e.resource);
        outcome.push(e.outcome);
        request_id.push(e.request_id);
        trace_id.push(e.trace_id);
        details.push(e.details);
        canonical.push(bytes);
        leaf.push(leaf_hash.to_vec());
        chain.push(chain_hash.to_vec());
    }
    let insert = sqlx::query(
        "INSERT INTO audit_log (seq, event_id, occurred_at, service, actor, action, resource, outcome, request_id, trace_id, details, canonical, leaf_hash, chain_hash) \
         SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], \
                              $9::text[], $10::text[], $11::jsonb[], $12::bytea[], $13::bytea[], $14::bytea[])",
    )
    .bind(seq)
    .bind(event_id)
    .bind(occurred_at)
    .bind(service)
    .bind(actor)
    .bind(action)
    .bind(resource)
    .bind(outcome)
    .bind(request_id)
    .bind(trace_id)
    .bind(details)
    .bind(canonical)
    .bind(leaf)
    .bind(chain);
    tx.execute(insert).await.map(drop)
}

/// Inserts the stored Merkle nodes `(level, index, hash)`.
pub async fn insert_nodes(tx: &mut TenantTx, nodes: &[(u8, u64, Hash)]) -> Result<(), ApiError> {
    let level: Vec<i16> = nodes.iter().map(|n| n.0 as i16).collect();
    let idx: Vec<i64> = nodes.iter().map(|n| n.1 as i64).collect();
    let hash: Vec<Vec<u8>> = nodes.iter().map(|n| n.2.to_vec()).collect();
    let insert = sqlx::query(
        "INSERT INTO merkle_nodes (level, idx, hash) SELECT * FROM unnest($1::smallint[], $2::bigint[], $3::bytea[])",
    );
    tx.execute(insert.bind(level).bind(idx).bind(hash)).await.map(drop)
}

/// Least entries between two time marks (tenant migration 0009): a time-filtered query reads at
/// most about this much of the log, plus a batch, beyond its window at either end. Marks are at
/// most a thousandth of the log's rows.
const MARK_EVERY_ENTRIES: i64 = 1000;

/// Gives the batch starting at `first` its batch time (the database clock, never earlier than the
/// previous batch's), widens the tenant's bounds on how far `occurred_at` runs ahead of or behind
/// it, and marks where the batch starts when the last mark is far enough behind. Together they
/// let `ListEntries` bound a time window by sequence numbers.
pub async fn keep_time(
    tx: &mut TenantTx,
    first: u64,
    earliest: DateTime<Utc>,
    latest: DateTime<Utc>,
) -> Result<(), ApiError> {
    let keep = sqlx::query(
        "WITH now AS ( \
             SELECT greatest(clock_timestamp(), coalesce((SELECT last_at FROM audit_clock), '-infinity')) AS at), \
         clock AS ( \
             INSERT INTO audit_clock (last_at, max_lead, max_lag) \
             SELECT at, greatest($1 - at, interval '0'), greatest(at - $2, interval '0') FROM now \
             ON CONFLICT (tenant_id) DO UPDATE SET last_at = EXCLUDED.last_at, \
                 max_lead = greatest(audit_clock.max_lead, EXCLUDED.max_lead), \
                 max_lag = greatest(audit_clock.max_lag, EXCLUDED.max_lag) \
             RETURNING last_at) \
         INSERT INTO audit_time_marks (at, seq) \
         SELECT clock.last_at, $3 FROM clock \
         WHERE coalesce($3 - (SELECT seq FROM audit_time_marks ORDER BY at DESC LIMIT 1) >= $4, true) \
         ON CONFLICT DO NOTHING",
    );
    tx.execute(keep.bind(latest).bind(earliest).bind(first as i64).bind(MARK_EVERY_ENTRIES)).await.map(drop)
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
    let rows: Vec<(i16, i64, Vec<u8>)> = tx
        .all(
            sqlx::query_as(
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
            .persistent(false),
        )
        .await?;
    let mut map = HashMap::new();
    let mut leaves = BTreeMap::new();
    for (l, i, h) in rows {
        let h = hash(h)?;
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

/// Runs `compute` (a root or a proof of [`merkle`]) over the stored tree: the nodes it reads are
/// loaded first, with one query.
pub async fn compute<T>(
    tx: &mut TenantTx,
    compute: impl Fn(&dyn Fn(u8, u64) -> Option<Hash>) -> Result<T, ProofError>,
) -> Result<T, ApiError> {
    let keys = merkle::required_nodes(&compute);
    let nodes = load_nodes(tx, &keys).await?;
    compute(&|l, i| nodes.get(&(l, i)).copied()).map_err(|e| ApiError::internal(&e))
}

/// An entry as the log serves it: its canonical bytes and hashes.
#[derive(sqlx::FromRow)]
struct Served {
    seq: i64,
    canonical: Vec<u8>,
    leaf_hash: Vec<u8>,
    chain_hash: Vec<u8>,
}

impl From<Served> for pb::Entry {
    fn from(r: Served) -> Self {
        pb::Entry {
            seq: r.seq as u64,
            canonical: r.canonical,
            leaf_hash: r.leaf_hash,
            chain_hash: r.chain_hash,
            pruned: false,
        }
    }
}

/// Entry `seq`, unless it was pruned.
pub async fn entry(tx: &mut TenantTx, seq: u64) -> Result<Option<pb::Entry>, ApiError> {
    let row: Option<Served> = tx
        .optional(
            sqlx::query_as("SELECT seq, canonical, leaf_hash, chain_hash FROM audit_log WHERE seq = $1")
                .bind(seq as i64),
        )
        .await?;
    Ok(row.map(pb::Entry::from))
}

/// Entries `[from, to)` still in the log, at most `limit`, in order.
pub async fn entries(tx: &mut TenantTx, from: u64, to: u64, limit: i64) -> Result<Vec<pb::Entry>, ApiError> {
    let sql = "SELECT seq, canonical, leaf_hash, chain_hash FROM audit_log WHERE seq >= $1 AND seq < $2 ORDER BY seq LIMIT $3";
    let rows: Vec<Served> = range(tx, sql, from, to, limit).await?;
    Ok(rows.into_iter().map(pb::Entry::from).collect())
}

/// The rows of `sql`, a query of the rows in a range `[$1, $2)`, at most `$3` of them.
async fn range<R>(tx: &mut TenantTx, sql: &'static str, from: u64, to: u64, limit: i64) -> Result<Vec<R>, ApiError>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    tx.all(sqlx::query_as(sql).bind(bigint(from)).bind(bigint(to)).bind(limit)).await
}

/// `(lo, hi)` for a time window `[$1, $2)` (either may be NULL): the last time mark before
/// `$1 - max_lead` and the first from `$2 + max_lag` on (tenant migration 0009). No row before the
/// tenant's first append since that migration; NULLs where no mark qualifies.
pub const SEQUENCE_RANGE_SQL: &str = "\
    SELECT (SELECT m.seq FROM audit_time_marks m WHERE m.at < $1 - c.max_lead ORDER BY m.at DESC LIMIT 1), \
           (SELECT m.seq FROM audit_time_marks m WHERE m.at >= $2 + c.max_lag ORDER BY m.at LIMIT 1) \
    FROM audit_clock c";

/// The optional filters of a listing: the text ones each served by an index in sequence order,
/// the time window by a sequence range (see [`EntryFilter::sequence_range`]).
#[derive(Debug, Default)]
pub struct EntryFilter {
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    /// `(column, value)`: the column one of `actor`, `action`, `resource`, `outcome`, `request_id`.
    pub text: Vec<(&'static str, String)>,
}

impl EntryFilter {
    /// The sequence range `[lo, hi)` (`hi` open when `None`) that holds every entry whose
    /// `occurred_at` is in the time window, from two time marks (tenant migration 0009): a page
    /// walks the log from there, not from its start, and stops at `hi`, not at the log's end.
    async fn sequence_range(&self, tx: &mut TenantTx) -> Result<(i64, Option<i64>), ApiError> {
        if self.start.is_none() && self.end.is_none() {
            return Ok((0, None));
        }
        let range: Option<(Option<i64>, Option<i64>)> =
            tx.optional(sqlx::query_as(SEQUENCE_RANGE_SQL).bind(self.start).bind(self.end)).await?;
        // No clock yet: nothing was appended since migration 0009 on an empty log.
        let (lo, hi) = range.unwrap_or_default();
        Ok((lo.unwrap_or(0), hi))
    }

    fn push(&self, q: &mut sqlx::QueryBuilder<'_, sqlx::Postgres>) {
        if let Some(t) = self.start {
            q.push(" AND occurred_at >= ").push_bind(t);
        }
        if let Some(t) = self.end {
            q.push(" AND occurred_at < ").push_bind(t);
        }
        for (column, value) in &self.text {
            // `column` is one of five fixed names, never caller input.
            q.push(format!(" AND {column} = ")).push_bind(value.clone());
        }
    }
}

/// Up to `limit` entries from `from` on that pass `filter`, in order, and whether more follow.
pub async fn list(
    tx: &mut TenantTx,
    from: u64,
    filter: &EntryFilter,
    limit: i64,
) -> Result<(Vec<pb::Entry>, bool), ApiError> {
    let (lo, hi) = filter.sequence_range(tx).await?;
    let mut q = sqlx::QueryBuilder::new("SELECT seq, canonical, leaf_hash, chain_hash FROM audit_log WHERE seq >= ");
    q.push_bind(bigint(from).max(lo));
    if let Some(hi) = hi {
        q.push(" AND seq < ").push_bind(hi);
    }
    filter.push(&mut q);
    q.push(" ORDER BY seq LIMIT ").push_bind(limit + 1);
    // Planned for the values at hand: whether the time index or the sequence range serves a
    // page best depends on them.
    let mut rows: Vec<Served> = q.build_query_as().persistent(false).fetch_all(tx.conn()).await.map_err(db_error)?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    Ok((rows.into_iter().map(pb::Entry::from).collect(), more))
}

/// Up to `limit` entries from `from` on whose actor is one of `actors` or whose resource is one
/// of `resources`, in order, and whether more follow.
pub async fn of_subject(
    tx: &mut TenantTx,
    from: u64,
    actors: &[String],
    resources: &[String],
    limit: i64,
) -> Result<(Vec<pb::Entry>, bool), ApiError> {
    let mut rows: Vec<Served> = tx
        .all(
            sqlx::query_as(
                "SELECT seq, canonical, leaf_hash, chain_hash FROM audit_log
                  WHERE seq >= $1 AND (actor = ANY($2) OR resource = ANY($3)) ORDER BY seq LIMIT $4",
            )
            .bind(bigint(from))
            .bind(actors)
            .bind(resources)
            .bind(limit + 1),
        )
        .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    Ok((rows.into_iter().map(pb::Entry::from).collect(), more))
}

/// Makes `tx` read one snapshot (`REPEATABLE READ`, read only) so that a verification sees the
/// entries, prune marks and Merkle nodes of the same commits: read committed, a batch committed
/// between two of its reads showed as nodes without their leaves, a mismatch that is not one.
/// Must come before `tx`'s first query.
pub async fn snapshot(tx: &mut TenantTx) -> Result<(), ApiError> {
    tx.execute(sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")).await.map(drop)
}

/// The newest prune mark: entries below `.0` were pruned beyond retention, and the remaining ones
/// continue the chain from link `.1`.
pub async fn prune_mark(tx: &mut TenantTx) -> Result<Option<(u64, Hash)>, ApiError> {
    newest_link(tx, "SELECT pruned_below, chain_hash FROM prune_marks ORDER BY pruned_below DESC LIMIT 1").await
}

/// The leaf hashes `[from, to)` kept as level-0 nodes (every one of a pruned entry), at most
/// `limit`, by index.
pub async fn kept_leaves(tx: &mut TenantTx, from: u64, to: u64, limit: i64) -> Result<Vec<(u64, Hash)>, ApiError> {
    let sql = "SELECT idx, hash FROM merkle_nodes WHERE level = 0 AND idx >= $1 AND idx < $2 ORDER BY idx LIMIT $3";
    let rows: Vec<(i64, Vec<u8>)> = range(tx, sql, from, to, limit).await?;
    rows.into_iter().map(|(idx, leaf)| Ok((idx as u64, hash(leaf)?))).collect()
}

/// An entry with every column the log stores, for verification.
#[derive(sqlx::FromRow)]
pub struct Stored {
    pub seq: i64,
    #[sqlx(flatten)]
    pub fields: RecordFields,
    pub canonical: Vec<u8>,
    pub leaf_hash: Vec<u8>,
    pub chain_hash: Vec<u8>,
}

/// Up to `limit` entries from `from` on, in order, with every stored column.
pub async fn stored(tx: &mut TenantTx, from: u64, limit: i64) -> Result<Vec<Stored>, ApiError> {
    tx.all(sqlx::query_as(
        "SELECT seq, event_id, occurred_at, service, actor, action, resource, outcome, request_id, trace_id, details, \
         canonical, leaf_hash, chain_hash FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2",
    )
    .bind(bigint(from))
    .bind(limit)).await
}

/// Every stored Merkle node `(level, index, hash)`, by level and index.
pub async fn nodes(tx: &mut TenantTx) -> Result<Vec<(i16, i64, Vec<u8>)>, ApiError> {
    tx.all(sqlx::query_as("SELECT level, idx, hash FROM merkle_nodes ORDER BY level, idx")).await
}
