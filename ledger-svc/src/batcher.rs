//! Group commit. Concurrent submissions of one tenant queue here; one task per tenant takes what
//! has queued (up to 8,190 transfers, waiting at most a short window for more) and commits it as
//! one database transaction: chain head locked (receipts are a chain, so a tenant's batches are
//! serial, also across replicas), touched accounts locked in id order, rules applied in memory by
//! the engine, rows written set-based, one audit record per transfer in the outbox and one receipt,
//! all in the same transaction. Every submission gets its own results. It never commits a transfer
//! without its audit record and receipt.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kit::outbox::{Actor, AuditRecord, Outcome as AuditOutcome};
use kit::{ApiError, Db, Tenant, TenantId};
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

use crate::SERVICE;
use crate::domain::engine::{Effects, Engine, Outcome, ResolutionKind, Submission};
use crate::domain::receipt;
use crate::domain::transfer_flags::{PENDING, POST_PENDING, VOID_PENDING};
use crate::store;

/// Most transfers in one batch (TigerBeetle's batch size).
pub const MAX_BATCH: usize = 8190;

struct Job {
    submission: Submission,
    expire: Vec<Uuid>,
    actor: Actor,
    request_id: Option<String>,
    reply: oneshot::Sender<Result<Vec<Outcome>, ApiError>>,
}

impl Job {
    fn len(&self) -> usize {
        self.submission.transfers.len().max(1)
    }

    /// The transfers it submits and the pending ones it voids.
    fn transfers(&self) -> usize {
        self.submission.transfers.len() + self.expire.len()
    }
}

/// Tenants with receipts waiting for a signature.
#[derive(Clone, Default)]
pub struct Unsigned {
    pub tenants: Arc<Mutex<HashMap<TenantId, Tenant>>>,
    pub notify: Arc<Notify>,
}

impl Unsigned {
    pub fn mark(&self, tenant: &Tenant) {
        self.tenants.lock().unwrap_or_else(|e| e.into_inner()).insert(tenant.id, tenant.clone());
        self.notify.notify_one();
    }

    pub fn take(&self) -> Vec<Tenant> {
        self.tenants.lock().unwrap_or_else(|e| e.into_inner()).drain().map(|(_, t)| t).collect()
    }
}

/// When each tenant's earliest pending transfer expires, as far as this replica knows: the
/// batcher notes the timeouts it commits, so the sweeper voids them on time without looking at
/// every tenant every second.
#[derive(Clone, Default)]
pub struct Expiries {
    due: Arc<Mutex<HashMap<TenantId, (Tenant, i64)>>>,
    pub notify: Arc<Notify>,
}

impl Expiries {
    /// `tenant` has a pending transfer expiring at `at` (nanoseconds since the epoch).
    pub fn note(&self, tenant: &Tenant, at: i64) {
        let mut due = self.due.lock().unwrap_or_else(|e| e.into_inner());
        let sooner = match due.get_mut(&tenant.id) {
            Some((_, known)) if *known <= at => false,
            Some((_, known)) => {
                *known = at;
                true
            }
            None => {
                due.insert(tenant.id, (tenant.clone(), at));
                true
            }
        };
        drop(due);
        if sooner {
            self.notify.notify_one();
        }
    }

    /// The earliest expiry noted.
    pub fn earliest(&self) -> Option<i64> {
        self.due.lock().unwrap_or_else(|e| e.into_inner()).values().map(|(_, at)| *at).min()
    }

    /// Takes the tenants whose noted expiry is at or before `now`.
    pub fn take_due(&self, now: i64) -> Vec<Tenant> {
        let mut due = self.due.lock().unwrap_or_else(|e| e.into_inner());
        let ids: Vec<TenantId> = due.iter().filter(|(_, (_, at))| *at <= now).map(|(id, _)| *id).collect();
        ids.iter().filter_map(|id| due.remove(id)).map(|(t, _)| t).collect()
    }
}

#[derive(Clone)]
pub struct Batcher {
    db: Db,
    queues: Arc<Mutex<HashMap<TenantId, mpsc::Sender<Job>>>>,
    window: Duration,
    unsigned: Unsigned,
    expiries: Expiries,
}

/// Nanoseconds since the epoch, the ledger's timestamps.
pub(crate) fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX / 2)
}

impl Batcher {
    pub fn new(db: Db, window: Duration, unsigned: Unsigned, expiries: Expiries) -> Self {
        Self { db, queues: Arc::default(), window, unsigned, expiries }
    }

    /// Applies `submission` (at most [`MAX_BATCH`] transfers, unique ids) in the next batch.
    pub async fn submit(
        &self,
        tenant: &Tenant,
        submission: Submission,
        actor: Actor,
        request_id: Option<String>,
    ) -> Result<Vec<Outcome>, ApiError> {
        self.send(tenant, Job { submission, expire: Vec::new(), actor, request_id, reply: oneshot::channel().0 }).await
    }

    /// Voids the expired pending transfers `ids` in the next batch.
    pub async fn expire(&self, tenant: &Tenant, ids: Vec<Uuid>) -> Result<(), ApiError> {
        let submission = Submission { transfers: Vec::new(), owner_scope: None };
        let job = Job {
            submission,
            expire: ids,
            actor: Actor::Service(SERVICE.into()),
            request_id: None,
            reply: oneshot::channel().0,
        };
        self.send(tenant, job).await.map(|_| ())
    }

    async fn send(&self, tenant: &Tenant, mut job: Job) -> Result<Vec<Outcome>, ApiError> {
        let (reply, rx) = oneshot::channel();
        job.reply = reply;
        let queue = self.queue(tenant);
        let gone = || ApiError::from(crate::error::LedgerError::ShuttingDown);
        queue.send(job).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    fn queue(&self, tenant: &Tenant) -> mpsc::Sender<Job> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = queues.get(&tenant.id)
            && !q.is_closed()
        {
            return q.clone();
        }
        let (tx, rx) = mpsc::channel(16_384);
        tokio::spawn(self.clone().run_queue(tenant.clone(), rx));
        queues.insert(tenant.id, tx.clone());
        tx
    }

    async fn run_queue(self, tenant: Tenant, mut rx: mpsc::Receiver<Job>) {
        let mut carry: Option<Job> = None;
        loop {
            let first = match carry.take() {
                Some(j) => j,
                None => match rx.recv().await {
                    Some(j) => j,
                    None => return,
                },
            };
            let mut ids: HashSet<Uuid> = first.submission.transfers.iter().map(|t| t.id).collect();
            let mut count = first.len();
            let mut jobs = vec![first];
            let deadline = tokio::time::Instant::now() + self.window;
            while count < MAX_BATCH {
                let next = match rx.try_recv() {
                    Ok(j) => j,
                    Err(mpsc::error::TryRecvError::Empty) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(j)) => j,
                        _ => break,
                    },
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                };
                // One id appears once per batch; a repeat waits for the next batch.
                if count + next.len() > MAX_BATCH || next.submission.transfers.iter().any(|t| ids.contains(&t.id)) {
                    carry = Some(next);
                    break;
                }
                ids.extend(next.submission.transfers.iter().map(|t| t.id));
                count += next.len();
                jobs.push(next);
            }
            let started = std::time::Instant::now();
            let result = self.commit(&tenant, &jobs).await;
            let elapsed = started.elapsed();
            match result {
                Ok(outcomes) => {
                    kit::metrics::Metrics::global()
                        .ledger_batch_committed(jobs.iter().map(Job::transfers).sum(), elapsed);
                    tracing::debug!(tenant = %tenant.slug, jobs = jobs.len(), transfers = count, ?elapsed, "batch committed");
                    for (job, outcome) in jobs.into_iter().zip(outcomes) {
                        let _ = job.reply.send(Ok(outcome));
                    }
                }
                Err(e) => {
                    tracing::warn!(tenant = %tenant.slug, jobs = jobs.len(), reason = %e.reason, "batch failed");
                    for job in jobs {
                        let _ = job.reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    async fn commit(&self, tenant: &Tenant, jobs: &[Job]) -> Result<Vec<Vec<Outcome>>, ApiError> {
        let mut tx = self.db.begin(tenant).await?;
        let (seq, prev_hash, last_ts) = store::lock_head(&mut tx).await?;
        let inputs = jobs.iter().flat_map(|j| j.submission.transfers.iter());
        let ids: Vec<Uuid> = inputs.clone().map(|t| t.id).collect();
        let prior = store::prior(&mut tx, &ids).await?;
        let mut pending_ids: Vec<Uuid> = inputs.clone().filter_map(|t| t.pending_id).collect();
        pending_ids.extend(jobs.iter().flat_map(|j| j.expire.iter().copied()));
        pending_ids.sort();
        pending_ids.dedup();
        let pendings = store::transfers(&mut tx, &pending_ids).await?;
        let mut account_ids: BTreeSet<Uuid> = BTreeSet::new();
        for t in inputs.clone() {
            account_ids.insert(t.debit_account_id);
            account_ids.insert(t.credit_account_id);
        }
        for p in &pendings {
            account_ids.insert(p.debit_account_id);
            account_ids.insert(p.credit_account_id);
        }
        account_ids.remove(&Uuid::nil());
        let account_ids: Vec<Uuid> = account_ids.into_iter().collect();
        let accounts = store::lock_accounts(&mut tx, &account_ids).await?;
        let owners: HashMap<Uuid, String> = accounts.values().map(|a| (a.id, a.owner.clone())).collect();
        let now = now_ns().max(last_ts + 1);
        let submissions: Vec<&Submission> = jobs.iter().map(|j| &j.submission).collect();
        let (mut outcomes, fx) = Engine::new(accounts, pendings, prior, now).run(submissions);

        let has_entries = !fx.created.is_empty() || !fx.resolutions.is_empty();
        let new_seq = if has_entries { seq + 1 } else { seq };
        let hashes: HashMap<Uuid, Vec<u8>> = jobs
            .iter()
            .zip(&outcomes)
            .flat_map(|(j, o)| j.submission.transfers.iter().zip(o))
            .filter(|(_, o)| matches!(o, Outcome::Created(_)))
            .map(|(t, _)| (t.id, t.content_hash()))
            .collect();
        let created_audit = created_audit(jobs, &outcomes, &fx);
        store::write_effects(&mut tx, &fx, &hashes, &owners, new_seq, &created_audit).await?;
        tx.record_all(audit_records(jobs, &outcomes, &fx, new_seq)).await?;
        let head_hash = if has_entries {
            let content = receipt::content_hash(&fx.created, &fx.resolutions);
            let hash = receipt::chain_hash(new_seq, &prev_hash, &content);
            let entries = (fx.created.len() + fx.resolutions.len()) as i32;
            let first_ts =
                fx.created.iter().map(|t| t.ts).chain(fx.resolutions.iter().map(|r| r.ts)).min().unwrap_or(now);
            store::append_receipt(&mut tx, new_seq, &prev_hash, &content, &hash, entries, first_ts, fx.last_ts).await?;
            hash
        } else {
            prev_hash
        };
        store::move_head(&mut tx, new_seq, &head_hash, fx.last_ts.max(last_ts)).await?;
        tx.commit().await?;
        if has_entries {
            self.unsigned.mark(tenant);
        }
        if let Some(at) = fx.created.iter().filter_map(|t| t.expires_at).min() {
            self.expiries.note(tenant, at);
        }
        for o in outcomes.iter_mut().flatten() {
            if let Outcome::Created(t) = o {
                t.receipt_seq = new_seq;
            }
        }
        Ok(outcomes)
    }
}

fn action(flags: i32) -> &'static str {
    if flags & POST_PENDING != 0 {
        "ledger.transfer.post"
    } else if flags & VOID_PENDING != 0 {
        "ledger.transfer.void"
    } else if flags & PENDING != 0 {
        "ledger.transfer.reserve"
    } else {
        "ledger.transfer.create"
    }
}

/// The audit records of the transfers created, in the order of `fx.created` (written with them by
/// `store::write_effects`).
fn created_audit<'a>(jobs: &'a [Job], outcomes: &[Vec<Outcome>], fx: &Effects) -> store::CreatedAudit<'a> {
    let mut submission_of: HashMap<Uuid, i32> = HashMap::with_capacity(fx.created.len());
    for (k, outs) in outcomes.iter().enumerate() {
        for o in outs {
            if let Outcome::Created(t) = o {
                submission_of.insert(t.id, k as i32 + 1);
            }
        }
    }
    store::CreatedAudit {
        event_ids: fx.created.iter().map(|_| Uuid::now_v7()).collect(),
        submissions: fx.created.iter().map(|t| submission_of.get(&t.id).copied().unwrap_or_default()).collect(),
        actions: fx.created.iter().map(|t| action(t.flags)).collect(),
        actors: jobs.iter().map(|j| j.actor.as_string()).collect(),
        request_ids: jobs.iter().map(|j| j.request_id.as_deref()).collect(),
        occurred_at: chrono::Utc::now(),
        trace_id: kit::telemetry::current_trace_id(),
    }
}

/// One record per transfer that failed or was refused (replays changed nothing), and one per
/// expiry; those of created transfers are written with them (see [`created_audit`]).
fn audit_records(jobs: &[Job], outcomes: &[Vec<Outcome>], fx: &Effects, receipt_seq: i64) -> Vec<AuditRecord> {
    let mut records = Vec::new();
    for (job, outs) in jobs.iter().zip(outcomes) {
        for (input, outcome) in job.submission.transfers.iter().zip(outs) {
            let (result, reason) = match outcome {
                Outcome::Failed(r) => (AuditOutcome::Failure, r.as_str()),
                Outcome::Refused(r) => (AuditOutcome::Denied, *r),
                _ => continue,
            };
            records.push(
                AuditRecord::new(
                    SERVICE,
                    job.actor.clone(),
                    action(input.flags),
                    &format!("transfer/{}", input.id),
                    result,
                )
                .request_id(job.request_id.clone())
                .detail("reason", reason),
            );
        }
    }
    for r in fx.resolutions.iter().filter(|r| r.kind == ResolutionKind::Expired) {
        records.push(
            AuditRecord::new(
                SERVICE,
                Actor::Service(SERVICE.into()),
                "ledger.transfer.expire",
                &format!("transfer/{}", r.pending_id),
                AuditOutcome::Success,
            )
            .detail("amount", r.amount.to_string())
            .detail("receipt_seq", receipt_seq),
        );
    }
    records
}
