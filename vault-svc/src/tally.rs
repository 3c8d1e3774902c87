//! Counts of frequent audited operations (signatures, transit decrypts), written as one audit
//! record per tenant, action, resource and caller each interval (a minute by default) instead of
//! one per operation: every use is audited without an audit entry per checkpoint or per field.
//! A replica that crashes loses at most one interval of counts from the audit trail;
//! `strongroom_events_total` counts every operation as it happens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kit::outbox::{Actor, AuditRecord, Outcome};
use kit::{Db, Tenant};

use crate::SERVICE;

/// What is counted: (tenant id, action, resource, caller).
type Key = (uuid::Uuid, &'static str, String, String);

/// The counts of this replica since the last flush, with the tenant to write each record in.
#[derive(Debug, Clone, Default)]
pub struct Tally(Arc<Mutex<HashMap<Key, (Tenant, u64)>>>);

impl Tally {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (Tenant, u64)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts `n` operations `action` on `resource` by `caller` (a workload identity). Operations
    /// for a terminated tenant (its export: auth-svc opening personal fields, audit-svc signing the
    /// last checkpoint and the manifest) are counted in metrics only: its log ends with the
    /// checkpoint the bundle holds, and the termination record and the signed manifest say what
    /// the export did.
    pub fn count(&self, tenant: &Tenant, action: &'static str, resource: &str, caller: &str, n: u64) {
        kit::metrics::Metrics::global().event(action);
        if tenant.status == kit::tenancy::TenantStatus::Terminated {
            return;
        }
        let mut map = self.map();
        let key = (tenant.id.0, action, resource.to_owned(), caller.to_owned());
        map.entry(key).or_insert((tenant.clone(), 0)).1 += n;
    }

    /// Writes one audit record per tenant, action, resource and caller with the interval's
    /// `count`, `from` and `until`, every `every`, for as long as the process runs.
    pub fn spawn_flusher(&self, db: Db, every: Duration) -> tokio::task::JoinHandle<()> {
        let tally = self.clone();
        tokio::spawn(async move {
            let mut since = chrono::Utc::now();
            loop {
                tokio::time::sleep(every).await;
                let until = chrono::Utc::now();
                let counts = std::mem::take(&mut *tally.map());
                for ((_, action, resource, caller), (tenant, n)) in counts {
                    let record =
                        AuditRecord::new(SERVICE, Actor::Service(caller.clone()), action, &resource, Outcome::Success)
                            .detail("count", n)
                            .detail("from", since.to_rfc3339())
                            .detail("until", until.to_rfc3339());
                    let written = async {
                        let mut tx = db.begin(&tenant).await?;
                        tx.record(record).await?;
                        tx.commit().await
                    };
                    if let Err(e) = written.await {
                        // Counted again with the next interval's.
                        tracing::warn!(tenant = %tenant.slug, action, reason = %e.reason, "count not audited yet");
                        tally.map().entry((tenant.id.0, action, resource, caller)).or_insert((tenant.clone(), 0)).1 +=
                            n;
                    }
                }
                since = until;
            }
        })
    }
}
