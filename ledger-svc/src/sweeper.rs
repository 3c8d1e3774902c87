//! Voids pending transfers whose timeout passed: every second it looks for them in each tenant and
//! hands them to the batcher, which voids them in a batch of their own (audit record and receipt
//! included). Posting or voiding an expired one is refused with PENDING_TRANSFER_EXPIRED even
//! before the sweeper got to it.

use std::time::Duration;

use kit::Db;
use kit::server::Shutdown;
use kit::tenancy::TenantStatus;

use crate::batcher::{Batcher, MAX_BATCH};
use crate::store;

pub fn spawn(db: Db, batcher: Batcher, shutdown: Shutdown) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.clone().wait() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let Ok(tenants) = db.tenants().await else { continue };
            for tenant in tenants.into_iter().filter(|t| t.status == TenantStatus::Active) {
                let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
                let due = async {
                    let mut tx = db.begin(&tenant).await?;
                    if !store::has_tables(&mut tx).await? {
                        return Ok(Vec::new());
                    }
                    let ids = store::expired_pending(&mut tx, now, MAX_BATCH as i64).await?;
                    tx.commit().await?;
                    Ok::<_, kit::ApiError>(ids)
                };
                match due.await {
                    Ok(ids) if !ids.is_empty() => {
                        let n = ids.len();
                        match batcher.expire(&tenant, ids).await {
                            Ok(()) => tracing::info!(tenant = %tenant.slug, expired = n, "pending transfers expired"),
                            Err(e) => tracing::warn!(tenant = %tenant.slug, reason = %e.reason, "expiry failed"),
                        }
                    }
                    Ok(_) => {}
                    // A tenant not provisioned for the ledger yet has no tables: nothing to expire.
                    Err(e) => tracing::debug!(tenant = %tenant.slug, reason = %e.reason, "expiry scan skipped"),
                }
            }
        }
    });
}
