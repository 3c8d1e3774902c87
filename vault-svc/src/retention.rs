//! The retention job: destroys the period keys of retention classes once their whole period is
//! past the class's retention, so every ciphertext of that period, wherever it is kept (the
//! platform's rows, its backups, an export), becomes unreadable without one row of it being
//! scanned. The sealed key is removed; the row stays as a tombstone, so those ciphertexts answer
//! `RETENTION_EXPIRED`.
//!
//! Each tenant is one transaction; one that destroyed something carries one audit record of it
//! (counts per class, no key material, nothing of the data). Replicas may run it at the same
//! time: a key is destroyed, counted and audited once, by whichever takes its row first. Time is
//! a parameter ([`run_once`]), so tests move the clock instead of waiting. Destroyed keys are
//! counted in `strongroom_retention_rows_removed_total{service="vault",data_type="period_keys"}`,
//! and a run over every tenant without failure in `strongroom_retention_last_run_timestamp_seconds`.
//!
//! A tenant under a tenant-wide legal hold (auth-svc's `legal_holds`, docs/privacy.md "Legal
//! holds") loses no key: the run destroys nothing there, logs the deferral and counts it in
//! `strongroom_events_total{event="retention_deferred_by_legal_hold"}`. It writes no audit record,
//! as no run that destroyed nothing does (auth-svc audits the hold itself, and a record per run
//! per replica while a hold lasts would say nothing more). The first run after the release
//! destroys whatever is due by then.

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

/// What the retention metrics call what this job removes.
const PERIOD_KEYS: &str = "period_keys";

/// The event counted for each tenant's run a legal hold deferred.
pub const DEFERRED_EVENT: &str = "retention_deferred_by_legal_hold";

/// Destroys, in every tenant, the period keys due at `now`; returns how many it destroyed. A
/// tenant that fails is logged and left for the next run; the others are done, and the last
/// failure is returned.
pub async fn run_once(db: &Db, now: DateTime<Utc>) -> Result<u64, ApiError> {
    // Counted from the first run: the series exists before the first key is destroyed.
    kit::metrics::Metrics::global().retention_removed(SERVICE, PERIOD_KEYS, 0);
    let mut destroyed = 0;
    let mut failed = None;
    for tenant in db.tenants().await? {
        match run_tenant(db, &tenant, now).await {
            Ok(per_class) => {
                let n: u64 = per_class.values().sum();
                if n > 0 {
                    tracing::info!(tenant = %tenant.slug, destroyed = n, "period keys past retention destroyed");
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

/// Destroys `tenant`'s period keys due at `now`; returns how many per class (none while the tenant
/// is under a tenant-wide legal hold).
pub async fn run_tenant(db: &Db, tenant: &Tenant, now: DateTime<Utc>) -> Result<BTreeMap<String, u64>, ApiError> {
    let mut tx = db.begin(tenant).await?;
    let mut destroyed = BTreeMap::new();
    let classes = store::lock_all_classes(&mut tx).await?;
    if classes.is_empty() {
        tx.rollback().await?;
        return Ok(destroyed);
    }
    // Read after the classes' locks, in the same transaction as the destruction: a hold committed
    // before this point is seen; one placed while this transaction runs is ordered after it.
    if store::tenant_held(&mut tx).await? {
        tx.rollback().await?;
        kit::metrics::Metrics::global().event(DEFERRED_EVENT);
        tracing::info!(tenant = %tenant.slug, "period key destruction deferred by a legal hold");
        return Ok(destroyed);
    }
    for (class, retention_days) in classes {
        let n = store::destroy_period_keys(&mut tx, &class, destroy_ended_by(now, retention_days as u32)).await?;
        if n > 0 {
            destroyed.insert(class, n);
        }
    }
    let total: u64 = destroyed.values().sum();
    if total == 0 {
        tx.rollback().await?;
        return Ok(destroyed);
    }
    let record =
        AuditRecord::new(SERVICE, Actor::Service(SERVICE.to_owned()), DESTROY_ACTION, "retention", Outcome::Success)
            .detail("destroyed", total)
            .detail("classes", serde_json::json!(destroyed));
    tx.record(record).await?;
    tx.commit().await?;
    for _ in 0..total {
        Operation::PeriodKeyDestroyed.done();
    }
    kit::metrics::Metrics::global().retention_removed(SERVICE, PERIOD_KEYS, total);
    Ok(destroyed)
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
