//! The state of each tenant's audit pipeline, as gauges on `/metrics` (issue 33): records waiting
//! in its outbox, the age of the oldest of them, and the age of the oldest log entry no signed
//! checkpoint covers (see `kit::metrics`). A job of its own measures every tenant once per
//! `signals_interval_ms`, apart from the sequencer and on a database connection of its own (a
//! pool of one), so a sequencer stuck on a tenant, holding connections while it waits, still shows
//! in the numbers instead of starving their measurement. It only reads; every replica may run it
//! (each exports the same values).

use std::collections::HashSet;
use std::time::Duration;

use kit::metrics::Metrics;
use kit::{ApiError, Db, Tenant};

use crate::store;

/// Most outbox records counted: a backlog beyond it reads as this many, and the count stays an
/// index walk of bounded length however far the sequencer has fallen behind.
pub const BACKLOG_CAP: i64 = 100_000;

/// A tenant's audit pipeline as measured.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pipeline {
    backlog: u64,
    oldest_age: f64,
    unsigned_age: f64,
}

/// Measures `tenant`'s pipeline; `None` while its log is not provisioned.
async fn measure(db: &Db, tenant: &Tenant) -> Result<Option<Pipeline>, ApiError> {
    let mut tx = db.begin(tenant).await?;
    if !store::log::provisioned(&mut tx).await? {
        tx.rollback().await?;
        return Ok(None);
    }
    let (backlog, oldest_age) = store::outbox::backlog(&mut tx, BACKLOG_CAP).await?;
    let unsigned_age = store::checkpoints::unsigned_age(&mut tx).await?;
    tx.rollback().await?;
    Ok(Some(Pipeline { backlog, oldest_age, unsigned_age }))
}

/// Runs the measurements on `db` (a pool of its own) until `shutdown`: every tenant once per
/// `every`, one after another. A
/// tenant no longer listed (deleted, terminated) or not provisioned drops its series; one whose
/// measurement failed keeps its last values until the next round.
pub fn spawn(db: Db, shutdown: kit::server::Shutdown, every: Duration) {
    let task = tokio::spawn(async move {
        let mut exported: HashSet<String> = HashSet::new();
        loop {
            // Not terminated tenants: their log is signed no more once the export is, so its
            // staleness would only grow (the export's progress is kit's `tenant_export` metrics).
            match db.tenants().await {
                Ok(tenants) => exported = measure_all(&db, &tenants, exported).await,
                Err(e) => tracing::debug!(reason = %e.reason, "audit pipeline signals cannot list tenants"),
            }
            tokio::time::sleep(every).await;
        }
    });
    let abort = task.abort_handle();
    tokio::spawn(async move {
        shutdown.wait().await;
        abort.abort();
    });
}

/// Measures every tenant of `tenants`, and drops the series of the tenants of `exported` (the
/// slugs exported last round) that are no longer exported. Returns the slugs exported now.
async fn measure_all(db: &Db, tenants: &[Tenant], exported: HashSet<String>) -> HashSet<String> {
    let metrics = Metrics::global();
    let mut now = HashSet::new();
    for tenant in tenants {
        let slug = tenant.slug.as_str();
        match measure(db, tenant).await {
            Ok(Some(p)) => {
                metrics.audit_pipeline(slug, p.backlog, p.oldest_age, p.unsigned_age);
                now.insert(slug.to_owned());
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(tenant = %tenant.slug, reason = %e.reason, "audit pipeline not measured");
                if exported.contains(slug) {
                    now.insert(slug.to_owned());
                }
            }
        }
    }
    for gone in exported.difference(&now) {
        metrics.forget_audit_pipeline(gone);
    }
    now
}
