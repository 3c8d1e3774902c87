//! Counts the data-subject requests still open past their due date, over every active tenant, into
//! `strongroom_privacy_requests_overdue` (every `purge_every_secs`, alongside housekeeping). Reads
//! only: it never moves a request on.

use std::time::Duration;

use kit::metrics::Metrics;
use kit::{ApiError, Db};

/// Counts the overdue requests of every active tenant once and sets the gauge; returns the sum.
pub async fn count_overdue(db: &Db) -> Result<u64, ApiError> {
    let mut overdue = 0u64;
    for tenant in db.tenants().await?.into_iter().filter(|t| t.status == kit::tenancy::TenantStatus::Active) {
        let mut tx = db.begin(&tenant).await?;
        let n = crate::store::privacy_requests::count_overdue(&mut tx).await?;
        tx.rollback().await?;
        overdue += u64::try_from(n).unwrap_or_default();
    }
    Metrics::global().privacy_requests_overdue(overdue);
    Ok(overdue)
}

/// Counts every `every` until `shutdown`.
pub fn spawn(db: Db, every: Duration, shutdown: kit::server::Shutdown) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.clone().wait() => return,
                () = tokio::time::sleep(every) => {}
            }
            if let Err(e) = count_overdue(&db).await {
                tracing::warn!(reason = %e.reason, "counting overdue data-subject requests failed");
            }
        }
    });
}
