//! Drains each tenant's `audit_outbox` into its log: at-least-once, de-duplicated by event id,
//! contiguous sequence numbers from 0, in batches, woken by LISTEN/NOTIFY and a poll. One
//! sequencer per tenant at a time (a transaction-scoped advisory lock), so replicas share tenants.
//! A batch — entries, Merkle nodes and the outbox rows it consumed — commits as one transaction:
//! a crash loses and duplicates nothing.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use kit::tenancy::TenantStatus;
use kit::{ApiError, Db, Tenant, TenantTx};
use uuid::Uuid;

use crate::domain::merkle::{self, Hash, node_hash};
use crate::error::AuditError;
use crate::store;
use crate::store::log::RecordFields;

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

/// Moves up to [`BATCH`] records of `tenant`'s outbox into its log. Returns how many outbox rows
/// it consumed and how many entries it appended.
pub async fn drain_once(db: &Db, tenant: &Tenant) -> Result<(usize, usize), ApiError> {
    // What idle tenants cost shows here: one per tenant per sweep interval.
    kit::metrics::Metrics::global().event("audit_outbox_drain");
    // A tenant registered but not yet provisioned for audit-svc has nothing to drain into yet.
    let Some(mut tx) = sequencing(db, tenant).await? else { return Ok((0, 0)) };
    let rows = store::outbox::take(&mut tx, BATCH).await?;
    if rows.is_empty() {
        tx.rollback().await?;
        return Ok((0, 0));
    }
    let consumed = rows.len();
    let appended = append_rows(&mut tx, rows).await?.len();
    tx.commit().await?;
    Ok((consumed, appended))
}

/// Appends `rows` straight to the tenant's log, without the outbox round trip (events of callers
/// that hold no transaction of their own), waiting for the tenant's sequencer lock. Returns the
/// event ids that were new; once it returns, they are committed.
pub async fn append_direct(db: &Db, tenant: &Tenant, rows: Vec<RecordFields>) -> Result<Vec<Uuid>, ApiError> {
    let mut tx = sequencing(db, tenant).await?.ok_or(AuditError::NotProvisioned)?;
    let appended = append_rows(&mut tx, rows).await?;
    tx.commit().await?;
    Ok(appended)
}

/// A transaction of `tenant` holding its sequencer lock, or `None` (rolled back) while the
/// tenant's log is not provisioned. Waits for the replica or direct append holding the lock; rows
/// it consumed are gone by then.
async fn sequencing(db: &Db, tenant: &Tenant) -> Result<Option<TenantTx>, ApiError> {
    let mut tx = db.begin(tenant).await?;
    if !store::log::provisioned(&mut tx).await? {
        tx.rollback().await?;
        return Ok(None);
    }
    store::log::lock_sequencer(&mut tx).await?;
    Ok(Some(tx))
}

/// Appends `rows` to the log in `tx`, which holds the tenant's sequencer lock: skips event ids
/// already logged or repeated, then writes the entries and the Merkle nodes they complete, and
/// wakes the live streams at commit if it appended any. Returns the event ids it appended, in log
/// order.
async fn append_rows(tx: &mut TenantTx, rows: Vec<RecordFields>) -> Result<Vec<Uuid>, ApiError> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.event_id).collect();
    let already = store::log::logged(tx, &ids).await?;
    let (mut next, mut chain) = match store::log::head(tx).await? {
        Some((seq, chain)) => (seq + 1, chain),
        None => (0, [0u8; 32]),
    };
    let first = next;

    let mut seen: HashSet<Uuid> = already.into_iter().collect();
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
        if needed.is_empty() { HashMap::new() } else { store::log::load_nodes(tx, &needed).await? };
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
            let child = |index| {
                nodes.get(&(level - 1, index)).copied().ok_or_else(|| ApiError::internal(&"merkle node missing"))
            };
            let h = node_hash(&child(idx * 2)?, &child(idx * 2 + 1)?);
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
    store::log::insert_entries(tx, entries).await?;
    if let (Some(earliest), Some(latest)) = (earliest, latest) {
        store::log::keep_time(tx, first, earliest, latest).await?;
    }
    if !new_nodes.is_empty() {
        store::log::insert_nodes(tx, &new_nodes).await?;
    }
    store::log::notify_readers(tx).await?;
    Ok(appended)
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
    if tenant.status == TenantStatus::Terminated {
        // A terminated tenant's log is checkpointed for its export bundle only: once the manifest
        // is signed, vault-svc refuses its signatures, and what is logged later stays unsigned.
        match kit::export::is_exporting(db, tenant).await {
            Ok(true) => {}
            // Nothing more to sign: the tenant owes no checkpoint.
            Ok(false) => return Checkpointed::Signed,
            Err(e) => {
                tracing::warn!(tenant = %tenant.slug, reason = %e.reason, "checkpoint not signed");
                return Checkpointed::Failed;
            }
        }
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
                // Terminated tenants too, until they are purged: their outbox (the termination
                // record) is drained and their log checkpointed for the export bundle.
                match db.registered_tenants().await {
                    Ok(t) => {
                        tenants = t;
                        listed = tenants.iter().map(|t| t.id.0).collect();
                        listed_at = Some(tokio::time::Instant::now());
                        // Tenants no longer listed (purged) owe nothing here.
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
