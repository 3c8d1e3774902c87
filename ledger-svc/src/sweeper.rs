//! Voids pending transfers whose timeout passed, handing them to the batcher, which voids them in a
//! batch of their own (audit record and receipt included). Posting or voiding an expired one is
//! refused with PENDING_TRANSFER_EXPIRED even before the sweeper got to it.
//!
//! The batcher notes the timeouts it commits ([`Expiries`]), so this replica's pending transfers
//! are voided when they expire without a look at every tenant every second. Every tenant is still
//! swept once per [`SWEEP`] (spread over it) for the expiries this replica does not know of: those
//! of another replica that stopped, or of this one before a restart. Each sweep also notes the
//! tenant's next expiry, so from then on that one is voided on time too. An idle tenant costs one
//! short transaction per [`SWEEP`].

use std::time::Duration;

use kit::server::Shutdown;
use kit::tenancy::Sweep;
use kit::{Db, Tenant};

use crate::batcher::{Batcher, Expiries, MAX_BATCH, now_ns};
use crate::store;
use crate::tenants::{Listing, TenantList};

/// Longest time between two sweeps of a tenant.
pub const SWEEP: Duration = Duration::from_secs(30);
/// Before a tenant whose expiry failed is tried again.
const RETRY: Duration = Duration::from_secs(1);

pub fn spawn(db: Db, batcher: Batcher, expiries: Expiries, shutdown: Shutdown) {
    tokio::spawn(async move {
        let mut sweep = Sweep::new(SWEEP);
        let mut tenants = TenantList::default();
        loop {
            // Until the next noted expiry or the next sweep (with no tenant yet, the next listing);
            // at once before the first listing.
            let mut wait = tenants.wait_until(sweep.next_due());
            if let Some(at) = expiries.earliest() {
                wait = wait.min(Duration::from_nanos(at.saturating_sub(now_ns()).max(0) as u64));
            }
            tokio::select! {
                () = shutdown.clone().wait() => return,
                () = expiries.notify.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
            match tenants.refresh(&db).await {
                Listing::Unknown => continue,
                Listing::Read => sweep.retain(&tenants.ids()),
                Listing::Kept => {}
            }
            let now = tokio::time::Instant::now();
            let mut visit = expiries.take_due(now_ns());
            let noted: std::collections::HashSet<_> = visit.iter().map(|t| t.id).collect();
            visit.extend(tenants.list.iter().filter(|t| sweep.due(t.id.0, now) && !noted.contains(&t.id)).cloned());
            for tenant in visit {
                sweep.visited(tenant.id.0, now);
                expire(&db, &batcher, &expiries, &tenant).await;
            }
        }
    });
}

/// Voids `tenant`'s expired pending transfers (up to a batch) and notes when its next one expires.
async fn expire(db: &Db, batcher: &Batcher, expiries: &Expiries, tenant: &Tenant) {
    kit::metrics::Metrics::global().event("ledger_expiry_scan");
    let now = now_ns();
    let scan = async {
        let mut tx = db.begin(tenant).await?;
        if !store::has_tables(&mut tx).await? {
            return Ok((Vec::new(), None));
        }
        let ids = store::expired_pending(&mut tx, now, MAX_BATCH as i64).await?;
        let next = if ids.is_empty() { store::next_expiry(&mut tx).await? } else { None };
        tx.commit().await?;
        Ok::<_, kit::ApiError>((ids, next))
    };
    match scan.await {
        Ok((ids, next)) => {
            if let Some(at) = next {
                expiries.note(tenant, at);
            }
            if ids.is_empty() {
                return;
            }
            let n = ids.len();
            match batcher.expire(tenant, ids).await {
                Ok(()) => {
                    tracing::info!(tenant = %tenant.slug, expired = n, "pending transfers expired");
                    // Look again at once: more may be due, and the next expiry is not known yet.
                    expiries.note(tenant, now_ns());
                }
                Err(e) => {
                    tracing::warn!(tenant = %tenant.slug, reason = %e.reason, "expiry failed");
                    expiries.note(tenant, now_ns() + RETRY.as_nanos() as i64);
                }
            }
        }
        // A tenant not provisioned for the ledger yet has no tables: nothing to expire.
        Err(e) => tracing::debug!(tenant = %tenant.slug, reason = %e.reason, "expiry scan skipped"),
    }
}
