//! Retention: each tenant keeps its log for `retention_days` (seven years unless configured).
//! Pruning deletes only from the front of the log, only entries recorded before the retention
//! window, and always keeps the last entry; it runs in the database function `audit_prune`
//! (migration 0005), the only way past the append-only triggers. Merkle nodes and checkpoints stay,
//! so every checkpoint, every inclusion proof of a remaining entry and every consistency proof
//! stays valid; a prune mark keeps the chain link the remaining entries continue from. Each prune is
//! itself recorded in the log (`audit.log.prune`). Pruned entries are counted in
//! `strongroom_retention_rows_removed_total{service="audit",data_type="audit_entries"}`, and each
//! tenant's prune that completed in `strongroom_retention_last_run_timestamp_seconds`.
//!
//! A tenant under a tenant-wide legal hold (auth-svc's `legal_holds`, docs/privacy.md "Legal
//! holds") is not pruned: `PruneLog` answers `FAILED_PRECONDITION` `LEGAL_HOLD` and writes nothing,
//! the hourly job skips the tenant (logged, counted in
//! `strongroom_events_total{event="retention_deferred_by_legal_hold"}`), and the first prune after
//! the release removes what is beyond retention by then.

use std::time::Duration;

use kit::access::RequestContext;
use kit::outbox::{Actor, AuditRecord, Outcome};
use kit::{ApiError, Db, Tenant};
use proto::audit::v1 as pb;
use tonic::{Request, Response, Status};

use crate::error::AuditError;
use crate::store;

/// Most entries one prune transaction deletes.
const PRUNE_BATCH: i64 = 100_000;
const EVERY: Duration = Duration::from_secs(3600);

/// Retention of a tenant that configured none: seven years.
const DEFAULT_DAYS: u32 = 2557;

/// `(retention_days, pruned_below)` of a tenant.
pub async fn policy(db: &Db, tenant: &Tenant) -> Result<(u32, u64), ApiError> {
    let mut tx = db.begin(tenant).await?;
    let (days, below) = store::retention::policy(&mut tx).await?;
    tx.commit().await?;
    Ok((days.unwrap_or(DEFAULT_DAYS), below))
}

/// The event counted for each tenant's prune a legal hold deferred.
pub const DEFERRED_EVENT: &str = "retention_deferred_by_legal_hold";

/// Prunes what is beyond retention; returns `(pruned_below before, after)`. Refused with
/// [`AuditError::LegalHold`] while the tenant is under a tenant-wide legal hold.
pub async fn prune(db: &Db, tenant: &Tenant, actor: Actor, request_id: Option<String>) -> Result<(u64, u64), ApiError> {
    let metrics = kit::metrics::Metrics::global();
    let (_, first) = policy(db, tenant).await?;
    let mut below = first;
    loop {
        let mut tx = db.begin(tenant).await?;
        // Checked in each batch's transaction: a hold committed before it is seen; one placed
        // while it runs is ordered after it, and stops the batches that follow.
        if store::retention::tenant_held(&mut tx).await? {
            tx.rollback().await?;
            if below == first {
                return Err(AuditError::LegalHold.into());
            }
            return Ok((first, below));
        }
        let after = store::retention::prune(&mut tx, PRUNE_BATCH).await?;
        if after <= below {
            tx.rollback().await?;
            // Counted from the first prune: the series exists before the first entry goes.
            metrics.retention_removed(crate::SERVICE, "audit_entries", 0);
            metrics.retention_ran(crate::SERVICE);
            return Ok((first, below));
        }
        let record = AuditRecord::new(crate::SERVICE, actor.clone(), "audit.log.prune", "audit_log", Outcome::Success)
            .request_id(request_id.clone())
            .detail("pruned_from", below)
            .detail("pruned_below", after);
        tx.record(record).await?;
        tx.commit().await?;
        metrics.retention_removed(crate::SERVICE, "audit_entries", after - below);
        tracing::info!(tenant = %tenant.slug, from = below, below = after, "audit log pruned beyond retention");
        below = after;
    }
}

/// Prunes every tenant once an hour until `shutdown`.
pub fn spawn(db: Db, shutdown: kit::server::Shutdown) {
    let task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(EVERY).await;
            // Not terminated tenants: their log is exported whole, and kept until the purge.
            let Ok(tenants) = db.tenants().await else { continue };
            for tenant in tenants {
                let provisioned = async {
                    let mut tx = db.begin(&tenant).await?;
                    let ok = store::retention::prunable(&mut tx).await?;
                    tx.rollback().await?;
                    Ok::<_, ApiError>(ok)
                };
                if !matches!(provisioned.await, Ok(true)) {
                    continue;
                }
                match prune(&db, &tenant, Actor::Service(crate::SERVICE.into()), None).await {
                    Ok(_) => {}
                    Err(e) if e == ApiError::from(AuditError::LegalHold) => {
                        kit::metrics::Metrics::global().event(DEFERRED_EVENT);
                        tracing::info!(tenant = %tenant.slug, "audit log pruning deferred by a legal hold");
                    }
                    Err(e) => {
                        kit::metrics::Metrics::global().event("audit_prune_failed");
                        tracing::warn!(tenant = %tenant.slug, reason = %e.reason, "audit pruning failed");
                    }
                }
            }
        }
    });
    let abort = task.abort_handle();
    tokio::spawn(async move {
        shutdown.wait().await;
        abort.abort();
    });
}

#[derive(Clone, Debug)]
pub struct AuditRetention {
    pub db: Db,
}

impl AuditRetention {
    async fn tenant(&self, ctx: &RequestContext) -> Result<Tenant, ApiError> {
        self.db.authorize_tenant(&ctx.tenant_slug()?, None).await
    }
}

fn operator(ctx: &RequestContext) -> Actor {
    Actor::Service(ctx.caller.identity.name().to_owned())
}

#[tonic::async_trait]
impl pb::audit_retention_service_server::AuditRetentionService for AuditRetention {
    async fn get_retention_policy(
        &self,
        request: Request<pb::GetRetentionPolicyRequest>,
    ) -> Result<Response<pb::RetentionPolicy>, Status> {
        let tenant = self.tenant(&RequestContext::of(&request)?).await?;
        let (retention_days, below) = policy(&self.db, &tenant).await?;
        Ok(Response::new(pb::RetentionPolicy { retention_days, pruned_below: below }))
    }

    async fn set_retention_policy(
        &self,
        request: Request<pb::SetRetentionPolicyRequest>,
    ) -> Result<Response<pb::RetentionPolicy>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        if !(1..=36_500).contains(&req.retention_days) {
            return Err(ApiError::invalid_field("retention_days", "1–36500").into());
        }
        let request_id = ctx.request_id_or(req.request_id)?;
        let tenant = self.tenant(&ctx).await?;
        let mut tx = self.db.begin(&tenant).await?;
        // The deployment's floor (audit control migration 0001): the database refuses less too.
        let floor = store::retention::floor(&mut tx).await?;
        if (req.retention_days as i64) < i64::from(floor) {
            return Err(AuditError::RetentionBelowFloor { floor }.into());
        }
        let previous = store::retention::set(&mut tx, req.retention_days as i32).await?;
        tx.record(
            AuditRecord::new(
                crate::SERVICE,
                operator(&ctx),
                "audit.retention.set",
                "retention_policy",
                Outcome::Success,
            )
            .request_id(request_id)
            .detail("retention_days", req.retention_days)
            .detail("previous_days", previous),
        )
        .await?;
        tx.commit().await?;
        let (retention_days, below) = policy(&self.db, &tenant).await?;
        Ok(Response::new(pb::RetentionPolicy { retention_days, pruned_below: below }))
    }

    async fn prune_log(&self, request: Request<pb::PruneLogRequest>) -> Result<Response<pb::PruneLogResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let tenant = self.tenant(&ctx).await?;
        let request_id = ctx.request_id_or(request.into_inner().request_id)?;
        let (from, below) = prune(&self.db, &tenant, operator(&ctx), request_id).await?;
        Ok(Response::new(pb::PruneLogResponse { pruned_below: below, pruned: below - from }))
    }
}
