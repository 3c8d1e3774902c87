//! Continuous verification of every tenant's receipt chain, besides the `VerifyReceipts` RPC. Each
//! tenant is visited once per `integrity_interval_ms` (the visits spread over it by
//! [`kit::tenancy::Sweep`]) and only what was appended since the last verified link is recomputed,
//! from that link on; once per `integrity_full_interval_ms` the whole chain is, so an edit of an
//! old transfer is found too. What a replica verified is kept in memory: a replica that starts
//! begins each tenant with a full pass.
//!
//! A mismatch is counted (`strongroom_integrity_failures_total{chain="ledger_receipts"}`), logged
//! once with the tenant and the first bad sequence number, and recorded once as an audit record
//! (`integrity.mismatch`); visits that find the same mismatch again stay quiet. Each replica
//! verifies on its own (it only reads), so each replica that finds a mismatch records it: the
//! same mismatch may be recorded once per replica, never twice by one. This job never writes to
//! the chain and never holds up the serving of reads and writes.

use std::collections::HashMap;
use std::time::Duration;

use kit::client::Channel;
use kit::metrics::Metrics;
use kit::outbox::{Actor, AuditRecord, Outcome};
use kit::server::Shutdown;
use kit::tenancy::Sweep;
use kit::{ApiError, Db, Tenant, TenantId};
use proto::vault::v1::signing_service_client::SigningServiceClient;

use crate::SERVICE;
use crate::domain::integrity::{ChainState, Pass, Round};
use crate::receipts::{self, Continued};
use crate::tenants::{Listing, TenantList};

/// The `chain` label of the integrity metrics.
pub const CHAIN: &str = "ledger_receipts";
/// The action of the audit record of a mismatch.
pub const MISMATCH: &str = "integrity.mismatch";

/// The schedule of the verification (`[service]` settings).
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Longest time between two incremental passes over a tenant's chain.
    pub incremental: Duration,
    /// Longest time between two full passes over a tenant's chain.
    pub full: Duration,
}

/// Spawns the verification of every active tenant's chain until `shutdown`; `signer` reaches the
/// public keys that check the receipts' signatures.
pub fn spawn(db: Db, signer: Option<SigningServiceClient<Channel>>, schedule: Schedule, shutdown: Shutdown) {
    tokio::spawn(async move {
        let (mut incremental, mut full) = (Sweep::new(schedule.incremental), Sweep::new(schedule.full));
        let (mut incremental_round, mut full_round) = (Round::default(), Round::default());
        let mut chains: HashMap<TenantId, ChainState> = HashMap::new();
        let mut tenants = TenantList::default();
        loop {
            let next = [incremental.next_due(), full.next_due()].into_iter().flatten().min();
            tokio::select! {
                () = shutdown.clone().wait() => return,
                () = tokio::time::sleep(tenants.wait_until(next)) => {}
            }
            if tenants.refresh(&db).await == Listing::Unknown {
                continue;
            }
            let listed = tenants.ids();
            incremental.retain(&listed);
            full.retain(&listed);
            chains.retain(|id, _| listed.contains(&id.0));
            let now = tokio::time::Instant::now();
            for tenant in &tenants.list {
                let id = tenant.id.0;
                let pass = match (full.due(id, now), incremental.due(id, now)) {
                    // A tenant this replica has not verified yet gets the whole chain checked.
                    (true, _) => Pass::Full,
                    (false, true) if !chains.contains_key(&tenant.id) => Pass::Full,
                    (false, true) => Pass::Incremental,
                    (false, false) => continue,
                };
                incremental.visited(id, now);
                incremental_round.visited(id);
                if pass == Pass::Full {
                    full.visited(id, now);
                    full_round.visited(id);
                }
                let known = chains.contains_key(&tenant.id);
                let chain = chains.entry(tenant.id).or_default();
                if !visit(&db, signer.as_ref(), tenant, pass, chain).await && !known {
                    // Still nothing verified: the next visit is a full pass again.
                    chains.remove(&tenant.id);
                }
            }
            for (round, pass) in [(&mut incremental_round, Pass::Incremental), (&mut full_round, Pass::Full)] {
                if round.complete(&listed) {
                    Metrics::global().integrity_pass_completed(CHAIN, pass.as_str());
                }
            }
        }
    });
}

/// Verifies `tenant`'s chain (`pass`) and reports a new mismatch; whether the chain was verified.
async fn visit(
    db: &Db,
    signer: Option<&SigningServiceClient<Channel>>,
    tenant: &Tenant,
    pass: Pass,
    chain: &mut ChainState,
) -> bool {
    if pass == Pass::Full {
        *chain = ChainState { reported: chain.reported, ..ChainState::default() };
    }
    let Continued { verification: v, resume } = match receipts::verify_after(db, signer, tenant, &chain.verified).await
    {
        Ok(Some(continued)) => continued,
        // A tenant not provisioned for the ledger yet has no chain.
        Ok(None) => return false,
        Err(e) => {
            tracing::warn!(tenant = %tenant.slug, pass = pass.as_str(), reason = %e.reason, "receipt chain not verified");
            return false;
        }
    };
    Metrics::global().integrity_checked(CHAIN, pass.as_str(), v.checked);
    let Some(first_bad_seq) = chain.settle(resume, v.first_bad_seq) else { return true };
    match record_mismatch(db, tenant, pass, first_bad_seq, &v.problem).await {
        Ok(()) => {
            chain.reported(first_bad_seq);
            Metrics::global().integrity_failure(CHAIN);
            tracing::error!(
                tenant = %tenant.slug,
                first_bad_seq,
                problem = %v.problem,
                pass = pass.as_str(),
                "receipt chain mismatch"
            );
        }
        // Not noted as reported: the next visit finds it again and tries again.
        Err(e) => tracing::error!(
            tenant = %tenant.slug,
            first_bad_seq,
            problem = %v.problem,
            reason = %e.reason,
            "receipt chain mismatch; its audit record is not written yet"
        ),
    }
    true
}

/// Writes the audit record of a mismatch at `first_bad_seq` (the resource names the chain and it).
async fn record_mismatch(
    db: &Db,
    tenant: &Tenant,
    pass: Pass,
    first_bad_seq: u64,
    problem: &str,
) -> Result<(), ApiError> {
    let record = AuditRecord::new(
        SERVICE,
        Actor::Service(SERVICE.into()),
        MISMATCH,
        &mismatch_resource(first_bad_seq),
        Outcome::Failure,
    )
    .detail("chain", CHAIN)
    .detail("first_bad_seq", first_bad_seq)
    .detail("problem", problem)
    .detail("pass", pass.as_str());
    let mut tx = db.begin(tenant).await?;
    tx.record(record).await?;
    tx.commit().await
}

/// The resource of the audit record of a mismatch: the chain and its first bad sequence number.
pub fn mismatch_resource(first_bad_seq: u64) -> String {
    format!("{CHAIN}/{first_bad_seq}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_mismatch_record_names_the_chain_and_the_first_bad_receipt() {
        assert_eq!(super::mismatch_resource(7), "ledger_receipts/7");
    }
}
