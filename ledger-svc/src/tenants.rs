//! The list of active tenants the background jobs (expiry sweep, integrity verification) visit,
//! read again when it is a few seconds old. It only reads the control schema's registry.

use std::time::Duration;

use kit::tenancy::TenantStatus;
use kit::{Db, Tenant};
use tokio::time::Instant;

/// How long the list of tenants is used before it is read again.
const FRESH: Duration = Duration::from_secs(5);
/// Before a first listing that failed is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// What [`TenantList::refresh`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// There is no list yet (the first listing failed): nothing to visit.
    Unknown,
    /// The list was fresh enough, or could not be read again: the one before is kept.
    Kept,
    /// The list was read just now.
    Read,
}

/// The active tenants, as last listed.
#[derive(Debug, Default)]
pub struct TenantList {
    pub list: Vec<Tenant>,
    listed_at: Option<Instant>,
}

impl TenantList {
    /// How long a job waits for `next` (its next visit; with none, the next listing): not at all
    /// before the first listing.
    pub fn wait_until(&self, next: Option<Instant>) -> Duration {
        if self.listed_at.is_none() {
            return Duration::ZERO;
        }
        next.map_or(FRESH, |t| t.saturating_duration_since(Instant::now()))
    }

    /// Reads the list again when it is stale. A failed first listing waits a moment first, so
    /// that a job retrying at once does not spin.
    pub async fn refresh(&mut self, db: &Db) -> Listing {
        if self.listed_at.is_some_and(|t| t.elapsed() < FRESH) {
            return Listing::Kept;
        }
        match db.tenants().await {
            Ok(t) => {
                self.list = t.into_iter().filter(|t| t.status == TenantStatus::Active).collect();
                self.listed_at = Some(Instant::now());
                Listing::Read
            }
            Err(_) if self.listed_at.is_none() => {
                tokio::time::sleep(RETRY).await;
                Listing::Unknown
            }
            Err(_) => Listing::Kept,
        }
    }

    /// The ids of the listed tenants.
    pub fn ids(&self) -> std::collections::HashSet<uuid::Uuid> {
        self.list.iter().map(|t| t.id.0).collect()
    }
}
