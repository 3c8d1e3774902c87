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
//!
//! Each look at a tenant also counts its pending transfers expiring within
//! [`PENDING_EXPIRING_WINDOW`]; the sum over tenants is `strongroom_ledger_pending_expiring`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use kit::metrics::{Metrics, PENDING_EXPIRING_WINDOW};
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
        let mut expiring = Expiring::default();
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
                Listing::Read => {
                    let listed = tenants.ids();
                    sweep.retain(&listed);
                    expiring.retain(&listed);
                }
                Listing::Kept => {}
            }
            let now = tokio::time::Instant::now();
            let mut visit = expiries.take_due(now_ns());
            let noted: HashSet<_> = visit.iter().map(|t| t.id).collect();
            visit.extend(tenants.list.iter().filter(|t| sweep.due(t.id.0, now) && !noted.contains(&t.id)).cloned());
            for tenant in visit {
                sweep.visited(tenant.id.0, now);
                if let Some(n) = expire(&db, &batcher, &expiries, &tenant).await {
                    expiring.note(tenant.id.0, n);
                }
            }
            Metrics::global().ledger_pending_expiring(expiring.total());
        }
    });
}

/// Each tenant's pending transfers expiring within [`PENDING_EXPIRING_WINDOW`], as last counted.
#[derive(Debug, Default)]
struct Expiring(HashMap<uuid::Uuid, u64>);

impl Expiring {
    fn note(&mut self, tenant: uuid::Uuid, n: u64) {
        self.0.insert(tenant, n);
    }

    /// Forgets the tenants no longer listed (deleted, or no longer active).
    fn retain(&mut self, listed: &HashSet<uuid::Uuid>) {
        self.0.retain(|id, _| listed.contains(id));
    }

    fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

/// Voids `tenant`'s expired pending transfers (up to a batch), notes when its next one expires,
/// and returns how many of its pending transfers expire within [`PENDING_EXPIRING_WINDOW`] (none
/// when the scan failed).
async fn expire(db: &Db, batcher: &Batcher, expiries: &Expiries, tenant: &Tenant) -> Option<u64> {
    Metrics::global().event("ledger_expiry_scan");
    let now = now_ns();
    let soon = now.saturating_add(PENDING_EXPIRING_WINDOW.as_nanos() as i64);
    let scan = async {
        let mut tx = db.begin(tenant).await?;
        if !store::has_tables(&mut tx).await? {
            return Ok((Vec::new(), None, 0));
        }
        let ids = store::expired_pending(&mut tx, now, MAX_BATCH as i64).await?;
        let next = if ids.is_empty() { store::next_expiry(&mut tx).await? } else { None };
        let expiring = store::pending_expiring(&mut tx, now, soon).await?;
        tx.commit().await?;
        Ok::<_, kit::ApiError>((ids, next, expiring))
    };
    match scan.await {
        Ok((ids, next, expiring)) => {
            let expiring = Some(expiring.unsigned_abs());
            if let Some(at) = next {
                expiries.note(tenant, at);
            }
            if ids.is_empty() {
                return expiring;
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
            expiring
        }
        // A tenant not provisioned for the ledger yet has no tables: nothing to expire.
        Err(e) => {
            tracing::debug!(tenant = %tenant.slug, reason = %e.reason, "expiry scan skipped");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expiring_count_sums_the_listed_tenants_latest_counts() {
        let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        let mut expiring = Expiring::default();
        expiring.note(a, 3);
        expiring.note(b, 4);
        expiring.note(a, 1);
        assert_eq!(expiring.total(), 5);
        expiring.retain(&HashSet::from([b]));
        assert_eq!(expiring.total(), 4);
    }
}
