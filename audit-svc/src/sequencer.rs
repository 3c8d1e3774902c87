//! Drains each tenant's `audit_outbox` into its log: at-least-once, de-duplicated by event id,
//! contiguous sequence numbers from 0, in batches, woken by LISTEN/NOTIFY and a poll. One
//! sequencer per tenant at a time (a transaction-scoped advisory lock), so replicas share tenants.
//! A batch — entries, Merkle nodes and the outbox rows it consumed — commits as one transaction:
//! a crash loses and duplicates nothing.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kit::tenancy::db_error;
use kit::{ApiError, Db, Tenant, TenantTx};
use uuid::Uuid;

use crate::domain::entry::Entry;
use crate::domain::merkle::{self, Hash, node_hash};

/// Most outbox rows one transaction takes.
pub const BATCH: i64 = 1000;
/// The channel the services' outbox wakers notify after their commits.
pub const CHANNEL: &str = kit::outbox::WAKE_CHANNEL;
/// Least time before a failed checkpoint signature is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// How long the list of tenants is used before it is read again (sooner when a wake-up names a
/// tenant not on it).
const TENANTS_FRESH: Duration = Duration::from_secs(1);
/// Least time between the starts of two rounds. Under a trickle of records (logins one at a time)
/// a round per record cost a batch and a signed checkpoint each, more CPU than the records'
/// own work; waiting gathers them. Under load a round takes longer than this anyway.
const GATHER: Duration = Duration::from_millis(100);

/// The recorded fields of an audit event, as the outbox and the log both store them.
#[derive(sqlx::FromRow)]
pub struct RecordFields {
    pub(crate) event_id: Uuid,
    occurred_at: DateTime<Utc>,
    service: String,
    actor: String,
    action: String,
    resource: String,
    outcome: String,
    request_id: Option<String>,
    trace_id: Option<String>,
    details: serde_json::Value,
}

impl RecordFields {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        event_id: Uuid,
        occurred_at: DateTime<Utc>,
        service: String,
        actor: String,
        action: String,
        resource: String,
        outcome: String,
        request_id: Option<String>,
        trace_id: Option<String>,
        details: serde_json::Value,
    ) -> Self {
        Self { event_id, occurred_at, service, actor, action, resource, outcome, request_id, trace_id, details }
    }

    /// The entry these fields make at sequence number `seq`.
    pub(crate) fn entry(self, seq: u64) -> Entry {
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

#[derive(sqlx::FromRow)]
struct Positioned {
    position: i64,
    #[sqlx(flatten)]
    fields: RecordFields,
}

fn hash32(bytes: &[u8]) -> Result<Hash, ApiError> {
    bytes.try_into().map_err(|_| ApiError::internal(&"stored hash is not 32 bytes"))
}

/// Moves up to [`BATCH`] records of `tenant`'s outbox into its log. Returns how many outbox rows
/// it consumed and how many entries it appended.
pub async fn drain_once(db: &Db, tenant: &Tenant) -> Result<(usize, usize), ApiError> {
    // What idle tenants cost shows here: one per tenant per sweep interval.
    kit::metrics::Metrics::global().event("audit_outbox_drain");
    let mut tx = db.begin(tenant).await?;
    // A tenant registered but not yet provisioned for audit-svc has nothing to drain into yet.
    let (provisioned,): (bool,) =
        sqlx::query_as("SELECT to_regclass('audit_log') IS NOT NULL").fetch_one(tx.conn()).await.map_err(db_error)?;
    if !provisioned {
        tx.rollback().await?;
        return Ok((0, 0));
    }
    // Waits for the replica or direct append holding the tenant; rows it consumed are gone by then.
    lock_tenant(&mut tx).await?;
    // Only index and TID scans make sense below, whatever the statistics say. A new tenant's
    // outbox has none (or was analyzed while nearly empty): planned as a table of a few pages,
    // the DELETE became a scan of the whole queue comparing every row with each of up to BATCH
    // tuple ids — quadratic in the backlog, seconds per drain under a batch load, and the plan
    // stayed cached until the next ANALYZE.
    sqlx::query("SET LOCAL enable_seqscan = off").execute(tx.conn()).await.map_err(db_error)?;
    // Taken and deleted in one statement: the rows are found once, by position, and removed by
    // their tuple ids (a TID scan).
    let mut taken: Vec<(i64, RecordFields)> = sqlx::query_as(
        "DELETE FROM audit_outbox WHERE ctid = ANY(ARRAY(SELECT ctid FROM audit_outbox ORDER BY position LIMIT $1)) \
         RETURNING position, event_id, occurred_at, service, actor, action, resource, outcome, request_id, trace_id, details",
    )
    .bind(BATCH)
    .fetch_all(tx.conn())
    .await
    .map_err(db_error)?
    .into_iter()
    .map(|row: Positioned| (row.position, row.fields))
    .collect();
    if taken.is_empty() {
        tx.rollback().await?;
        return Ok((0, 0));
    }
    taken.sort_by_key(|(position, _)| *position);
    let consumed = taken.len();
    let rows: Vec<RecordFields> = taken.into_iter().map(|(_, fields)| fields).collect();
    let appended = append_rows(&mut tx, rows).await?.len();
    if appended > 0 {
        notify_readers(&mut tx).await?;
    }
    tx.commit().await?;
    Ok((consumed, appended))
}

/// Appends `rows` straight to the tenant's log, without the outbox round trip (events of callers
/// that hold no transaction of their own), waiting for the tenant's sequencer lock. Returns the
/// event ids that were new; once it returns, they are committed.
pub async fn append_direct(db: &Db, tenant: &Tenant, rows: Vec<RecordFields>) -> Result<Vec<Uuid>, ApiError> {
    let mut tx = db.begin(tenant).await?;
    let (provisioned,): (bool,) =
        sqlx::query_as("SELECT to_regclass('audit_log') IS NOT NULL").fetch_one(tx.conn()).await.map_err(db_error)?;
    if !provisioned {
        return Err(ApiError::unavailable(
            "AUDIT_NOT_PROVISIONED",
            "the tenant's audit log is being provisioned, retry",
        ));
    }
    lock_tenant(&mut tx).await?;
    let appended = append_rows(&mut tx, rows).await?;
    if !appended.is_empty() {
        notify_readers(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(appended)
}

/// One sequencer per tenant at a time, across replicas: a transaction-scoped advisory lock.
async fn lock_tenant(tx: &mut TenantTx) -> Result<(), ApiError> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtext('strongroom.audit.sequencer'), hashtext(current_setting('strongroom.tenant_id')))",
    )
    .execute(tx.conn())
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Live streams wake when the transaction commits.
async fn notify_readers(tx: &mut TenantTx) -> Result<(), ApiError> {
    sqlx::query("SELECT pg_notify($1, current_setting('strongroom.tenant_id'))")
        .bind(crate::stream::CHANNEL)
        .execute(tx.conn())
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Appends `rows` to the log in `tx`, which holds the tenant's sequencer lock: skips event ids
/// already logged or repeated, then writes the entries and the Merkle nodes they complete.
/// Returns the event ids it appended, in log order.
async fn append_rows(tx: &mut TenantTx, rows: Vec<RecordFields>) -> Result<Vec<Uuid>, ApiError> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.event_id).collect();
    // One index probe per id (`unnest` + `LATERAL … LIMIT 1`), never `= ANY($1)` or a plain join:
    // those become a scan of the whole log or outbox (times every id) when the planner has no or
    // stale statistics — a new tenant's first minute, or a backlog that grew since the last ANALYZE.
    let already: Vec<Uuid> = sqlx::query_scalar(
        "SELECT l.event_id FROM unnest($1::uuid[]) AS w(want) \
         CROSS JOIN LATERAL (SELECT event_id FROM audit_log WHERE event_id = w.want LIMIT 1) AS l",
    )
    .bind(&ids)
    // Planned afresh each time: a plan cached while the log was a few pages long (a new tenant)
    // would otherwise stay in use long after the log grew.
    .persistent(false)
    .fetch_all(tx.conn())
    .await
    .map_err(db_error)?;
    let last: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT seq, chain_hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(tx.conn())
            .await
            .map_err(db_error)?;
    let (mut next, mut chain) = match last {
        Some((seq, chain)) => (seq as u64 + 1, hash32(&chain)?),
        None => (0, [0u8; 32]),
    };
    let first = next;

    let mut seen: std::collections::HashSet<Uuid> = already.into_iter().collect();
    let mut entries = Vec::with_capacity(rows.len());
    for row in rows {
        // At-least-once in, exactly once in the log.
        if !seen.insert(row.event_id) {
            continue;
        }
        let entry = row.entry(next);
        let (canonical, leaf, link) = entry.seal(&chain);
        chain = link;
        next += 1;
        entries.push((entry, canonical, leaf, link));
    }

    if entries.is_empty() {
        return Ok(Vec::new());
    }

    // Merkle nodes completed by the new leaves. Those below `STORED_FROM` are not stored: the
    // block the new leaves start in is recomputed from its earlier leaves, and left siblings from
    // `STORED_FROM` up come from the store.
    let block_start = first - first % merkle::BLOCK;
    let mut needed = Vec::new();
    if block_start < first {
        needed.push((0, block_start));
    }
    for i in first..next {
        let mut level = merkle::STORED_FROM + 1;
        while level < 64 && (i + 1) % (1u64 << level) == 0 {
            let left = (level - 1, ((i + 1) >> level) * 2 - 2);
            if left.1 << (level - 1) < first {
                needed.push(left);
            }
            level += 1;
        }
    }
    let mut nodes: HashMap<(u8, u64), Hash> =
        if needed.is_empty() { HashMap::new() } else { crate::checkpoint::load_nodes(tx, &needed).await? };
    if block_start < first && !nodes.contains_key(&(0, first - 1)) {
        return Err(ApiError::internal(&"a leaf of the current block is missing"));
    }
    let mut new_nodes: Vec<(u8, u64, Hash)> = Vec::new();
    for (entry, _, leaf, _) in &entries {
        let i = entry.seq;
        nodes.insert((0, i), *leaf);
        let mut level = 1u8;
        while level < 64 && (i + 1) % (1u64 << level) == 0 {
            let idx = ((i + 1) >> level) - 1;
            let left =
                nodes.get(&(level - 1, idx * 2)).copied().ok_or_else(|| ApiError::internal(&"merkle node missing"))?;
            let right = nodes
                .get(&(level - 1, idx * 2 + 1))
                .copied()
                .ok_or_else(|| ApiError::internal(&"merkle node missing"))?;
            let h = node_hash(&left, &right);
            nodes.insert((level, idx), h);
            if level >= merkle::STORED_FROM {
                new_nodes.push((level, idx, h));
            }
            level += 1;
        }
    }

    let appended = entries.iter().map(|e| e.0.event_id).collect();
    let occurred = entries.iter().map(|e| e.0.occurred_at);
    let (earliest, latest) = (occurred.clone().min(), occurred.max());
    insert_entries(tx, entries).await?;
    if let (Some(earliest), Some(latest)) = (earliest, latest) {
        keep_time(tx, first, earliest, latest).await?;
    }
    if !new_nodes.is_empty() {
        insert_nodes(tx, &new_nodes).await?;
    }
    Ok(appended)
}

/// Least entries between two time marks (tenant migration 0009): a time-filtered query reads at
/// most about this much of the log, plus a batch, beyond its window at either end. Marks are at
/// most a thousandth of the log's rows.
const MARK_EVERY_ENTRIES: i64 = 1000;

/// Gives the batch starting at `first` its batch time (the database clock, never earlier than the
/// previous batch's), widens the tenant's bounds on how far `occurred_at` runs ahead of or behind
/// it, and marks where the batch starts when the last mark is far enough behind. Together they
/// let `ListEntries` bound a time window by sequence numbers.
async fn keep_time(
    tx: &mut TenantTx,
    first: u64,
    earliest: DateTime<Utc>,
    latest: DateTime<Utc>,
) -> Result<(), ApiError> {
    sqlx::query(
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
    )
    .bind(latest)
    .bind(earliest)
    .bind(first as i64)
    .bind(MARK_EVERY_ENTRIES)
    .execute(tx.conn())
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Inserts `entries` with one statement, one array per column; the entries are moved into the
/// arrays, not copied.
async fn insert_entries(tx: &mut TenantTx, entries: Vec<(Entry, Vec<u8>, Hash, Hash)>) -> Result<(), ApiError> {
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
    sqlx::query(
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
    .bind(chain)
    .execute(tx.conn())
    .await
    .map_err(db_error)?;
    Ok(())
}

async fn insert_nodes(tx: &mut TenantTx, nodes: &[(u8, u64, Hash)]) -> Result<(), ApiError> {
    let level: Vec<i16> = nodes.iter().map(|n| n.0 as i16).collect();
    let idx: Vec<i64> = nodes.iter().map(|n| n.1 as i64).collect();
    let hash: Vec<Vec<u8>> = nodes.iter().map(|n| n.2.to_vec()).collect();
    sqlx::query(
        "INSERT INTO merkle_nodes (level, idx, hash) SELECT * FROM unnest($1::smallint[], $2::bigint[], $3::bytea[])",
    )
    .bind(level)
    .bind(idx)
    .bind(hash)
    .execute(tx.conn())
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Drains `tenant` until a batch comes back short of [`BATCH`]: the outbox was empty at that
/// moment. Records committed since then sent their own notification and wait for the next round,
/// so that a steady trickle gathers into a batch per round instead of a batch per few records.
pub async fn drain(db: &Db, tenant: &Tenant) -> Result<usize, ApiError> {
    let mut appended = 0;
    loop {
        let (consumed, n) = drain_once(db, tenant).await?;
        appended += n;
        if (consumed as i64) < BATCH {
            return Ok(appended);
        }
    }
}

/// The tenants to drain in the next round, from notifications and direct appends. A set, not a
/// bounded queue: however many wake-ups arrive between two rounds, none is dropped.
#[derive(Default)]
pub(crate) struct Wakes {
    tenants: std::sync::Mutex<HashSet<Uuid>>,
    everyone: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Wakes {
    fn tenant(&self, id: Uuid) {
        self.tenants.lock().unwrap_or_else(|e| e.into_inner()).insert(id);
        self.notify.notify_one();
    }

    /// Wake-ups may have been lost (the listener was disconnected): every tenant is due.
    fn everyone(&self) {
        self.everyone.store(true, std::sync::atomic::Ordering::Relaxed);
        self.notify.notify_one();
    }

    fn take(&self) -> (HashSet<Uuid>, bool) {
        let tenants = std::mem::take(&mut *self.tenants.lock().unwrap_or_else(|e| e.into_inner()));
        (tenants, self.everyone.swap(false, std::sync::atomic::Ordering::Relaxed))
    }
}

/// Asks the sequencer to look at a tenant now (a direct append wants its checkpoint).
#[derive(Clone, Default)]
pub struct Nudge(pub(crate) std::sync::Arc<Wakes>);

impl Nudge {
    pub fn tenant(&self, tenant: &Tenant) {
        self.0.tenant(tenant.id.0);
    }
}

/// Tenants drained at the same time (each holds one database connection while it drains).
const PARALLEL_TENANTS: usize = 4;

/// What a round did for a tenant's checkpoint.
enum Checkpointed {
    /// Nothing new to sign since the last checkpoint (or signing is not configured).
    Nothing,
    /// Signed and stored (or the log had not grown after all).
    Signed,
    /// The log may have grown; its checkpoint waits for the tenant's interval.
    Waiting,
    /// Signing failed (vault-svc unreachable, say); retried once the interval has passed again.
    Failed,
}

/// Drains `tenant`; signs a checkpoint if the log may have grown (`owes`, or this drain appended)
/// and `may_sign` (the tenant's checkpoint interval has passed).
async fn tend(
    db: &Db,
    signer: Option<&crate::checkpoint::Signer>,
    tenant: &Tenant,
    owes: bool,
    may_sign: bool,
) -> Checkpointed {
    let appended = match drain(db, tenant).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(tenant = %tenant.slug, reason = %e.reason, "audit sequencing failed");
            0
        }
    };
    let Some(signer) = signer.filter(|_| appended > 0 || owes) else {
        return Checkpointed::Nothing;
    };
    if !may_sign {
        return Checkpointed::Waiting;
    }
    match crate::checkpoint::make(db, signer, tenant).await {
        Ok(Some(size)) => {
            tracing::debug!(tenant = %tenant.slug, size, "checkpoint signed");
            Checkpointed::Signed
        }
        Ok(None) => Checkpointed::Signed,
        Err(e) => {
            // The log itself is already durable.
            tracing::warn!(tenant = %tenant.slug, reason = %e.reason, "checkpoint not signed");
            Checkpointed::Failed
        }
    }
}

/// When each tenant may next be checkpointed, and which tenants' logs may have grown since their
/// last checkpoint.
struct Checkpoints {
    interval: Duration,
    not_before: HashMap<Uuid, tokio::time::Instant>,
    owed: HashSet<Uuid>,
}

impl Checkpoints {
    fn new(interval: Duration) -> Self {
        Self { interval, not_before: HashMap::new(), owed: HashSet::new() }
    }

    fn may_sign(&self, tenant: Uuid) -> bool {
        self.not_before.get(&tenant).is_none_or(|t| *t <= tokio::time::Instant::now())
    }

    /// Whether `tenant`'s log may have grown since its last checkpoint, as far as this replica
    /// knows. One not checkpointed since start-up may have: it grew while no replica ran.
    fn owes(&self, tenant: Uuid) -> bool {
        self.owed.contains(&tenant) || !self.not_before.contains_key(&tenant)
    }

    /// The earliest moment an owed checkpoint may be signed.
    fn next_due(&self) -> Option<tokio::time::Instant> {
        self.owed.iter().map(|t| self.not_before.get(t).copied().unwrap_or_else(tokio::time::Instant::now)).min()
    }

    fn note(&mut self, tenant: Uuid, outcome: Checkpointed) {
        let next = tokio::time::Instant::now() + self.interval;
        match outcome {
            Checkpointed::Nothing => {}
            Checkpointed::Signed => {
                self.not_before.insert(tenant, next);
                self.owed.remove(&tenant);
            }
            Checkpointed::Waiting => {
                self.owed.insert(tenant);
            }
            Checkpointed::Failed => {
                self.not_before.insert(tenant, next.max(tokio::time::Instant::now() + RETRY));
                self.owed.insert(tenant);
            }
        }
    }
}

/// Runs the sequencer until `shutdown`: woken by notifications (outbox inserts, direct appends),
/// and sweeping every tenant at least once per `sweep_interval` for records whose wake-up was
/// lost (each idle tenant costs one drain per interval, spread over it); several tenants drain at
/// once. A batch in progress at shutdown either commits or rolls back whole. A tenant whose log
/// grew is checkpointed at most once per `checkpoint_interval`: under a steady trickle, a
/// checkpoint (two transactions and a vault-svc signature) per round cost more than the round's
/// records, and stored a checkpoint row every tenth of a second, for good.
pub fn spawn(
    db: Db,
    shutdown: kit::server::Shutdown,
    signer: Option<crate::checkpoint::Signer>,
    checkpoint_interval: Duration,
    sweep_interval: Duration,
) -> Nudge {
    use futures::StreamExt;
    let wakes = std::sync::Arc::new(Wakes::default());
    let nudge = Nudge(wakes.clone());
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let listener_db = db.clone();
        let heard = wakes.clone();
        let listener = tokio::spawn(async move {
            let mut connected_before = false;
            loop {
                let listen = async {
                    let mut listener = sqlx::postgres::PgListener::connect_with(listener_db.control_pool()).await?;
                    listener.listen(CHANNEL).await?;
                    // Notifications sent while it was disconnected are lost: sweep everyone now.
                    if connected_before {
                        heard.everyone();
                    }
                    connected_before = true;
                    // `try_recv`, not `recv`: `recv` reconnects by itself and the notifications lost
                    // meanwhile would go unnoticed; `None` says the connection was lost, and the
                    // reconnection here sweeps everyone.
                    while let Some(n) = listener.try_recv().await? {
                        match Uuid::parse_str(n.payload()) {
                            Ok(id) => heard.tenant(id),
                            Err(_) => heard.everyone(),
                        }
                    }
                    Ok::<(), sqlx::Error>(())
                };
                match listen.await {
                    Ok(()) => tracing::debug!("audit outbox listener lost its connection, reconnecting"),
                    Err(e) => tracing::debug!(error = %e, "audit outbox listener reconnecting"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let mut checkpoints = Checkpoints::new(checkpoint_interval);
        let mut sweep = kit::tenancy::Sweep::new(sweep_interval);
        let mut tenants: Vec<Tenant> = Vec::new();
        let mut listed: HashSet<Uuid> = HashSet::new();
        let mut listed_at: Option<tokio::time::Instant> = None;
        let mut last_round = tokio::time::Instant::now();
        loop {
            if stop.fired() {
                listener.abort();
                return;
            }
            // Until a wake-up, the next tenant due for a sweep (with no tenant yet, the next
            // listing), or the first owed checkpoint that may be signed; at once at start-up.
            let mut until = match listed_at {
                None => tokio::time::Instant::now(),
                Some(at) => sweep.next_due().unwrap_or(at + TENANTS_FRESH),
            };
            if let Some(due) = checkpoints.next_due() {
                until = until.min(due);
            }
            tokio::select! {
                () = wakes.notify.notified() => {}
                () = tokio::time::sleep_until(until) => {}
            }
            tokio::time::sleep(GATHER.saturating_sub(last_round.elapsed())).await;
            last_round = tokio::time::Instant::now();
            // Every wake-up so far is served by this round.
            let (woken, everyone) = wakes.take();
            if everyone {
                sweep.all_due();
            }
            let stale = listed_at.is_none_or(|t| t.elapsed() >= TENANTS_FRESH);
            if stale || woken.iter().any(|id| !listed.contains(id)) {
                match db.tenants().await {
                    Ok(t) => {
                        tenants = t;
                        listed = tenants.iter().map(|t| t.id.0).collect();
                        listed_at = Some(tokio::time::Instant::now());
                        // Tenants no longer listed (suspended, removed) owe nothing here.
                        checkpoints.owed.retain(|id| listed.contains(id));
                        sweep.retain(&listed);
                    }
                    Err(e) => {
                        tracing::debug!(reason = %e.reason, "sequencer cannot list tenants");
                        if tenants.is_empty() {
                            // Nothing to sweep yet: try again after a while, not in a tight loop.
                            tokio::time::sleep(RETRY).await;
                            continue;
                        }
                    }
                }
            }
            let now = tokio::time::Instant::now();
            let due: Vec<(Tenant, bool, bool)> = tenants
                .iter()
                .filter(|t| {
                    let id = t.id.0;
                    woken.contains(&id)
                        || sweep.due(id, now)
                        || (checkpoints.owed.contains(&id) && checkpoints.may_sign(id))
                })
                .map(|t| {
                    let id = t.id.0;
                    let owes = woken.contains(&id) || checkpoints.owes(id);
                    (t.clone(), owes, checkpoints.may_sign(id))
                })
                .collect();
            let results: Vec<(Uuid, Checkpointed)> = futures::stream::iter(due)
                .map(|(tenant, owes, may_sign)| {
                    let (db, signer) = (&db, signer.as_ref());
                    async move { (tenant.id.0, tend(db, signer, &tenant, owes, may_sign).await) }
                })
                .buffer_unordered(PARALLEL_TENANTS)
                .collect()
                .await;
            for (id, outcome) in results {
                checkpoints.note(id, outcome);
                // A drain for any reason finds what a sweep would.
                sweep.visited(id, now);
            }
        }
    });
    let abort = task.abort_handle();
    tokio::spawn(async move {
        shutdown.wait().await;
        // Dropping a batch mid-way rolls its transaction back: nothing is lost or doubled.
        tokio::time::sleep(Duration::from_secs(2)).await;
        abort.abort();
    });
    nudge
}
