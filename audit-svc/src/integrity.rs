//! Continuous verification of every tenant's log (issue 33): a job visits each tenant once per
//! `integrity_interval_ms` (spread over it) and verifies only what was appended since the point
//! it verified last; once per `integrity_full_interval_ms` it verifies the whole log again, Merkle
//! nodes included. A mismatch is counted (`strongroom_integrity_failures_total{chain="audit_log"}`),
//! logged, and recorded in the tenant's log once. The job only reads the log (its one write is
//! that record), so serving goes on, and every replica may run it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use kit::metrics::Metrics;
use kit::outbox::{Actor, AuditRecord, Outcome};
use kit::tenancy::Sweep;
use kit::{ApiError, Db, Tenant};
use uuid::Uuid;

use crate::domain::merkle::Hash;
use crate::store;
use crate::verify::{Report, verify, verify_from};

/// The chain this job verifies, as the metrics name it.
pub const CHAIN: &str = "audit_log";
/// The action of the record a newly found mismatch leaves in the log.
pub const MISMATCH_ACTION: &str = "integrity.mismatch";
/// How long the list of tenants is used before it is read again.
const TENANTS_FRESH: Duration = Duration::from_secs(10);
/// Least time before a failed listing of the tenants is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// A verification pass over one tenant's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// The entries after the last verified point.
    Incremental,
    /// The whole log and its Merkle nodes.
    Full,
}

impl Pass {
    fn label(self) -> &'static str {
        match self {
            Pass::Incremental => "incremental",
            Pass::Full => "full",
        }
    }
}

/// What this replica knows of a tenant's log: entries `0..next` verified, `link` the chain link of
/// entry `next - 1`, and the first bad sequence numbers it has already reported. Kept in memory
/// only: a replica that starts knows nothing and begins with a full pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Verified {
    next: u64,
    link: Hash,
    reported: BTreeSet<u64>,
}

impl Verified {
    /// Takes in `report` of a `pass`; returns the mismatch it found that was not reported before.
    /// The next incremental pass starts where this one stopped: at a mismatch, that entry again,
    /// which finds the same mismatch and does not report it twice. A full pass that finds none
    /// forgets what was reported (a log restored from a backup may be whole again).
    fn take(&mut self, pass: Pass, report: &Report) -> Option<(u64, &'static str)> {
        self.next = report.checked;
        self.link = report.link;
        match report.first_mismatch {
            None if pass == Pass::Full => {
                self.reported.clear();
                None
            }
            None => None,
            Some((seq, what)) => self.reported.insert(seq).then_some((seq, what)),
        }
    }
}

/// The tenants a pass over every tenant has still to visit.
#[derive(Debug, Default)]
struct Round {
    left: Option<HashSet<Uuid>>,
}

impl Round {
    /// Notes a visit of `tenant`; true when it completes a pass over every tenant of `listed`
    /// (tenants no longer listed are not waited for).
    fn visited(&mut self, tenant: Uuid, listed: &HashSet<Uuid>) -> bool {
        let left = self.left.get_or_insert_with(|| listed.clone());
        left.remove(&tenant);
        left.retain(|t| listed.contains(t));
        if left.is_empty() {
            self.left = None;
            return true;
        }
        false
    }
}

/// Verifies `tenant` by `pass` from `state` (which a full pass does not need), counts what it
/// checked, and reports a mismatch not reported before. `None` while the tenant's log is not
/// provisioned.
async fn visit(db: &Db, tenant: &Tenant, pass: Pass, state: Option<Verified>) -> Result<Option<Verified>, ApiError> {
    let (from, report) = match &state {
        Some(state) if pass == Pass::Incremental => {
            (state.next, verify_from(db, tenant, state.next, state.link).await?)
        }
        _ if state.is_none() && !provisioned(db, tenant).await? => return Ok(None),
        _ => (0, verify(db, tenant).await?),
    };
    Metrics::global().integrity_checked(CHAIN, pass.label(), report.checked.saturating_sub(from));
    let mut state = state.unwrap_or_default();
    if let Some((seq, what)) = state.take(pass, &report) {
        Metrics::global().integrity_failure(CHAIN);
        tracing::error!(tenant = %tenant.slug, seq, mismatch = what, pass = pass.label(), "audit log integrity mismatch");
        record_mismatch(db, tenant, seq, what).await?;
    }
    Ok(Some(state))
}

/// Whether `tenant`'s log is provisioned yet.
async fn provisioned(db: &Db, tenant: &Tenant) -> Result<bool, ApiError> {
    let mut tx = db.begin(tenant).await?;
    let provisioned = store::log::provisioned(&mut tx).await?;
    tx.rollback().await?;
    Ok(provisioned)
}

/// Records a newly found mismatch in the tenant's log (through its outbox, as a prune is
/// recorded). Once per replica: each replica keeps its own state, so two replicas (or one that
/// restarted) that both find a mismatch record it once each, which is acceptable; sharing the
/// state would cost a write per visit.
async fn record_mismatch(db: &Db, tenant: &Tenant, seq: u64, what: &str) -> Result<(), ApiError> {
    let resource = format!("{CHAIN}/{seq}");
    let actor = Actor::Service(crate::SERVICE.into());
    let record = AuditRecord::new(crate::SERVICE, actor, MISMATCH_ACTION, &resource, Outcome::Failure)
        .detail("chain", CHAIN)
        .detail("first_bad_seq", seq)
        .detail("mismatch", what);
    let mut tx = db.begin(tenant).await?;
    tx.record(record).await?;
    tx.commit().await
}

/// Runs the continuous verification until `shutdown`: each tenant incrementally once per
/// `every`, fully once per `full_every` (and first, for every tenant this replica has not
/// verified yet), one tenant at a time. A pass in progress at shutdown only read.
pub fn spawn(db: Db, shutdown: kit::server::Shutdown, every: Duration, full_every: Duration) {
    let task = tokio::spawn(async move {
        let (mut incremental, mut full) = (Sweep::new(every), Sweep::new(full_every));
        let (mut incremental_round, mut full_round) = (Round::default(), Round::default());
        let mut states: HashMap<Uuid, Verified> = HashMap::new();
        let mut tenants: Vec<Tenant> = Vec::new();
        let mut listed: HashSet<Uuid> = HashSet::new();
        let mut listed_at: Option<tokio::time::Instant> = None;
        loop {
            if listed_at.is_none_or(|t| t.elapsed() >= TENANTS_FRESH) {
                // Not terminated tenants: the recipient verifies their exported log offline
                // (`strongroom audit verify --bundle`), and a mismatch record logged now would
                // grow the log past the checkpoint the export ends with.
                match db.tenants().await {
                    Ok(t) => {
                        tenants = t;
                        listed = tenants.iter().map(|t| t.id.0).collect();
                        listed_at = Some(tokio::time::Instant::now());
                        states.retain(|id, _| listed.contains(id));
                        incremental.retain(&listed);
                        full.retain(&listed);
                    }
                    Err(e) => tracing::debug!(reason = %e.reason, "integrity verification cannot list tenants"),
                }
            }
            let now = tokio::time::Instant::now();
            for tenant in &tenants {
                let id = tenant.id.0;
                let full_due = full.due(id, now);
                if !full_due && !incremental.due(id, now) {
                    continue;
                }
                // A tenant this replica has not verified yet (or whose last visit failed) gets a
                // full pass: there is no verified point to continue from.
                let state = states.remove(&id);
                let pass = if full_due || state.is_none() { Pass::Full } else { Pass::Incremental };
                match visit(&db, tenant, pass, state).await {
                    Ok(Some(state)) => {
                        states.insert(id, state);
                    }
                    // Not provisioned yet: nothing to verify until it is.
                    Ok(None) => {}
                    Err(e) => tracing::warn!(tenant = %tenant.slug, reason = %e.reason, "audit log not verified"),
                }
                // A full pass stands for an incremental one too.
                incremental.visited(id, now);
                if incremental_round.visited(id, &listed) {
                    Metrics::global().integrity_pass_completed(CHAIN, Pass::Incremental.label());
                }
                if pass == Pass::Full {
                    full.visited(id, now);
                    if full_round.visited(id, &listed) {
                        Metrics::global().integrity_pass_completed(CHAIN, Pass::Full.label());
                    }
                }
            }
            let until = match (incremental.next_due(), full.next_due()) {
                (Some(a), Some(b)) => a.min(b),
                (due, None) | (None, due) => due.unwrap_or_else(|| tokio::time::Instant::now() + RETRY),
            };
            let refresh = listed_at.map_or(now + RETRY, |t| t + TENANTS_FRESH);
            tokio::time::sleep_until(until.min(refresh).max(tokio::time::Instant::now() + Duration::from_millis(10)))
                .await;
        }
    });
    let abort = task.abort_handle();
    tokio::spawn(async move {
        shutdown.wait().await;
        abort.abort();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(checked: u64, first_mismatch: Option<(u64, &'static str)>) -> Report {
        Report { checked, first_mismatch, link: [checked as u8; 32] }
    }

    #[test]
    fn a_mismatch_is_reported_once_while_it_stays() {
        let mut state = Verified::default();
        assert_eq!(state.take(Pass::Full, &report(10, None)), None);
        assert_eq!((state.next, state.link), (10, [10; 32]), "the next pass continues from here");
        assert_eq!(state.take(Pass::Incremental, &report(12, Some((12, "chain hash")))), Some((12, "chain hash")));
        assert_eq!(state.next, 12, "the next incremental pass starts at the bad entry again");
        assert_eq!(state.take(Pass::Incremental, &report(12, Some((12, "chain hash")))), None);
        assert_eq!(state.take(Pass::Full, &report(12, Some((12, "chain hash")))), None);
        // An earlier mismatch the full pass finds (a Merkle node) is new; then neither repeats.
        assert_eq!(state.take(Pass::Full, &report(20, Some((4, "merkle node")))), Some((4, "merkle node")));
        assert_eq!(state.take(Pass::Incremental, &report(12, Some((12, "chain hash")))), None);
        assert_eq!(state.take(Pass::Full, &report(20, Some((4, "merkle node")))), None);
    }

    #[test]
    fn an_incremental_pass_forgets_no_mismatch_and_a_clean_full_pass_forgets_them_all() {
        let mut state = Verified::default();
        state.take(Pass::Full, &report(20, Some((4, "merkle node"))));
        assert_eq!(state.take(Pass::Incremental, &report(25, None)), None);
        assert_eq!(state.take(Pass::Full, &report(25, Some((4, "merkle node")))), None, "still the same one");
        assert_eq!(state.take(Pass::Full, &report(25, None)), None);
        assert!(state.reported.is_empty());
        assert_eq!(state.take(Pass::Full, &report(25, Some((4, "merkle node")))), Some((4, "merkle node")));
    }

    #[test]
    fn a_round_completes_once_every_listed_tenant_was_visited() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let listed: HashSet<Uuid> = [a, b, c].into();
        let mut round = Round::default();
        assert!(!round.visited(a, &listed));
        assert!(!round.visited(a, &listed), "a second visit of one tenant completes nothing");
        assert!(!round.visited(b, &listed));
        assert!(round.visited(c, &listed));
        // The next round starts afresh; a tenant no longer listed is not waited for.
        assert!(!round.visited(a, &listed));
        let fewer: HashSet<Uuid> = [a, b].into();
        assert!(round.visited(b, &fewer));
    }
}
