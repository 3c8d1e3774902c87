//! The retention job: destroys the period keys of retention classes once their whole period is
//! past the class's retention, so every ciphertext of that period, wherever it is kept (the
//! platform's rows, its backups, an export), becomes unreadable without one row of it being
//! scanned. The sealed key is removed; the row stays as a tombstone, so those ciphertexts answer
//! `RETENTION_EXPIRED`. It also deletes the idempotency records of mutating requests
//! (`idempotency_keys`) older than [`REQUEST_RECORD_DAYS`] (diagnostic request records,
//! docs/privacy.md "Retention").
//!
//! Each tenant is one transaction, plus one more per further [`REQUEST_RECORD_BATCH`] request
//! records when a backlog is larger than that, so a first run over years of records holds no huge
//! transaction; each transaction that removed something carries one audit record per kind of it
//! (counts only: no key material, no request id, nothing of the data). Replicas may run it at the
//! same time: a key or record is removed, counted and audited once, by whichever takes its row
//! first. Time is a parameter ([`run_once`]), so tests move the clock instead of waiting. Removals
//! are counted in `strongroom_retention_rows_removed_total{service="vault",data_type="period_keys"}`
//! and `{…,data_type="request_records"}`, and a run over every tenant without failure in
//! `strongroom_retention_last_run_timestamp_seconds`.
//!
//! A tenant under a tenant-wide legal hold (auth-svc's `legal_holds`, docs/privacy.md "Legal
//! holds") loses no key and no request record: the run removes nothing there, logs the deferral
//! and counts it in `strongroom_events_total{event="retention_deferred_by_legal_hold"}`. It writes
//! no audit record, as no run that removed nothing does (auth-svc audits the hold itself, and a
//! record per run per replica while a hold lasts would say nothing more). The first run after the
//! release removes whatever is due by then.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kit::outbox::{Actor, AuditRecord, Outcome};
use kit::{ApiError, Db, Tenant};

use crate::SERVICE;
use crate::domain::retention::destroy_ended_by;
use crate::signals::Operation;
use crate::store::retention as store;

/// The audit action of a run that destroyed period keys.
pub const DESTROY_ACTION: &str = "vault.period_keys.destroy";

/// The audit action of a transaction of the job that removed request records.
pub const REMOVE_REQUEST_RECORDS_ACTION: &str = "vault.request_records.remove";

/// How long a mutating request's idempotency record is kept: a retry of a request id older than
/// this is treated as a new request (docs/vault.md "Request ids").
pub const REQUEST_RECORD_DAYS: i64 = 90;

/// Most request records one transaction deletes: a backlog goes in several short transactions.
pub const REQUEST_RECORD_BATCH: i64 = 10_000;

/// What the retention metrics call what this job removes.
const PERIOD_KEYS: &str = "period_keys";
const REQUEST_RECORDS: &str = "request_records";

/// The event counted for each tenant's run a legal hold deferred.
pub const DEFERRED_EVENT: &str = "retention_deferred_by_legal_hold";

/// What one tenant's run removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    /// Period keys destroyed, per class (only classes that lost one).
    pub period_keys: BTreeMap<String, u64>,
    /// Idempotency records older than [`REQUEST_RECORD_DAYS`] deleted.
    pub request_records: u64,
}

/// Runs the job in every tenant at `now`; returns how many period keys it destroyed (request
/// records are logged and counted, not returned). A tenant that fails is logged and left for the
/// next run; the others are done, and the last failure is returned.
pub async fn run_once(db: &Db, now: DateTime<Utc>) -> Result<u64, ApiError> {
    // Counted from the first run: the series exist before the first key or record is removed.
    kit::metrics::Metrics::global().retention_removed(SERVICE, PERIOD_KEYS, 0);
    kit::metrics::Metrics::global().retention_removed(SERVICE, REQUEST_RECORDS, 0);
    let mut destroyed = 0;
    let mut failed = None;
    for tenant in db.tenants().await? {
        match run_tenant(db, &tenant, now).await {
            Ok(removed) => {
                let n: u64 = removed.period_keys.values().sum();
                if n > 0 {
                    tracing::info!(tenant = %tenant.slug, destroyed = n, "period keys past retention destroyed");
                }
                if removed.request_records > 0 {
                    tracing::info!(
                        tenant = %tenant.slug,
                        removed = removed.request_records,
                        "request records past retention removed"
                    );
                }
                destroyed += n;
            }
            Err(e) => {
                tracing::warn!(tenant = %tenant.slug, reason = %e.reason, "retention run failed");
                failed = Some(e);
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => {
            kit::metrics::Metrics::global().retention_ran(SERVICE);
            Ok(destroyed)
        }
    }
}

/// Destroys `tenant`'s period keys due at `now` and deletes its request records older than
/// [`REQUEST_RECORD_DAYS`] at `now`; returns what it removed (nothing while the tenant is under a
/// tenant-wide legal hold). The first transaction does the keys and the first batch of records;
/// each batch that came back full is followed by another transaction, each checking the hold again.
/// An error leaves what earlier transactions committed (audited and counted) in place.
pub async fn run_tenant(db: &Db, tenant: &Tenant, now: DateTime<Utc>) -> Result<Removed, ApiError> {
    let records_before = now - chrono::Duration::days(REQUEST_RECORD_DAYS);
    let mut removed = Removed::default();
    let mut first = true;
    loop {
        let mut tx = db.begin(tenant).await?;
        let classes = if first { store::lock_all_classes(&mut tx).await? } else { Vec::new() };
        // Read after the classes' locks, in the same transaction as the removals: a hold committed
        // before this point is seen; one placed while this transaction runs is ordered after it,
        // and stops the batches that follow.
        if store::tenant_held(&mut tx).await? {
            tx.rollback().await?;
            if first {
                kit::metrics::Metrics::global().event(DEFERRED_EVENT);
                tracing::info!(tenant = %tenant.slug, "retention deferred by a legal hold");
            }
            return Ok(removed);
        }
        let mut destroyed = BTreeMap::new();
        for (class, retention_days) in classes {
            let n = store::destroy_period_keys(&mut tx, &class, destroy_ended_by(now, retention_days as u32)).await?;
            if n > 0 {
                destroyed.insert(class, n);
            }
        }
        let keys: u64 = destroyed.values().sum();
        let records = store::delete_request_records(&mut tx, records_before, REQUEST_RECORD_BATCH).await?;
        if keys == 0 && records == 0 {
            tx.rollback().await?;
            return Ok(removed);
        }
        let actor = || Actor::Service(SERVICE.to_owned());
        if keys > 0 {
            let record = AuditRecord::new(SERVICE, actor(), DESTROY_ACTION, "retention", Outcome::Success)
                .detail("destroyed", keys)
                .detail("classes", serde_json::json!(destroyed));
            tx.record(record).await?;
        }
        if records > 0 {
            let record =
                AuditRecord::new(SERVICE, actor(), REMOVE_REQUEST_RECORDS_ACTION, "retention", Outcome::Success)
                    .detail("request_records_removed", records)
                    .detail("older_than_days", REQUEST_RECORD_DAYS);
            tx.record(record).await?;
        }
        tx.commit().await?;
        for _ in 0..keys {
            Operation::PeriodKeyDestroyed.done();
        }
        if keys > 0 {
            kit::metrics::Metrics::global().retention_removed(SERVICE, PERIOD_KEYS, keys);
        }
        if records > 0 {
            kit::metrics::Metrics::global().retention_removed(SERVICE, REQUEST_RECORDS, records);
        }
        removed.period_keys.extend(destroyed);
        removed.request_records += records;
        // A short batch was the last one (or a replica running alongside took the rest).
        if records < REQUEST_RECORD_BATCH as u64 {
            return Ok(removed);
        }
        first = false;
    }
}

/// Runs [`run_once`] at start and then every `every` until `shutdown` (at start too: a replica
/// restarted more often than `every` must still run it).
pub fn spawn(db: Db, every: Duration, shutdown: kit::server::Shutdown) {
    tokio::spawn(async move {
        loop {
            // Failures are logged per tenant; the next run retries them.
            let _ = run_once(&db, Utc::now()).await;
            tokio::select! {
                () = shutdown.clone().wait() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    });
}
