//! `strongroom.vault.v1.RetentionService`: a tenant's retention classes (crypto-deletion by time).
//! Defining a class decides when data becomes unreadable, so it is a tenant policy: the operator
//! may (its workload identity, like every key management call), and the gateway on behalf of a user
//! holding `tenant.policy.write`. Every change is audited in its own transaction. The keys
//! themselves are in the keyring; their destruction is the retention job's (`retention.rs`).

use kit::access::RequestContext;
use kit::authz::Permission;
use kit::outbox::Outcome;
use kit::time::opt_to_pb;
use kit::{ApiError, Db, Identity, Tenant};
use proto::vault::v1 as pb;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use super::{actor, next_page, record, request_id};
use crate::domain::retention::{ClassName, Period, check_retention_days};
use crate::error::VaultError;
use crate::store::{self, retention as retention_store, retention::ClassRow};

/// `strongroom.vault.v1.RetentionService`.
#[derive(Debug, Clone)]
pub struct Retention {
    pub db: Db,
}

fn period_to_pb(stored: &str) -> i32 {
    match Period::from_stored(stored) {
        Some(Period::Day) => pb::RetentionPeriod::Day as i32,
        Some(Period::Month) => pb::RetentionPeriod::Month as i32,
        None => pb::RetentionPeriod::Unspecified as i32,
    }
}

fn period_from_pb(raw: i32) -> Result<Option<Period>, ApiError> {
    match pb::RetentionPeriod::try_from(raw) {
        Ok(pb::RetentionPeriod::Unspecified) => Ok(None),
        Ok(pb::RetentionPeriod::Day) => Ok(Some(Period::Day)),
        Ok(pb::RetentionPeriod::Month) => Ok(Some(Period::Month)),
        Err(_) => Err(ApiError::invalid_field("period", "RETENTION_PERIOD_DAY or RETENTION_PERIOD_MONTH")),
    }
}

/// A class, as the API shows it.
fn class_to_pb(row: ClassRow) -> pb::RetentionClass {
    pb::RetentionClass {
        period: period_to_pb(&row.period),
        name: row.name,
        retention_days: row.retention_days as u32,
        create_time: opt_to_pb(Some(row.created_at)),
        update_time: opt_to_pb(Some(row.updated_at)),
        live_period_keys: row.live_keys as u32,
        destroyed_period_keys: row.destroyed_keys as u32,
    }
}

/// The page size of a listing: 1–1000, 100 for 0.
fn page_size(requested: i32) -> Result<i64, ApiError> {
    match requested {
        0 => Ok(100),
        n @ 1..=1000 => Ok(n.into()),
        _ => Err(ApiError::invalid_field("page_size", "1–1000")),
    }
}

impl Retention {
    /// The tenant of the call, if its caller may manage retention there.
    async fn authorize(&self, ctx: &RequestContext) -> Result<Tenant, ApiError> {
        if ctx.principal.is_none() && ctx.caller.identity.name() == Identity::OPERATOR {
            return super::tenant(&self.db, ctx).await;
        }
        // The gateway acts for a user, who must hold the tenant policy permission.
        Ok(kit::authz::authorize(&self.db, ctx, Permission::TenantPolicyWrite).await?.tenant)
    }

    /// Creates or changes a class with its audit record; a retried request with the same id gets
    /// the first response.
    async fn put(
        &self,
        ctx: &RequestContext,
        tenant: &Tenant,
        req: pb::PutRetentionClassRequest,
    ) -> Result<pb::PutRetentionClassResponse, ApiError> {
        const OPERATION: &str = "put_retention_class";
        let name = ClassName::parse(&req.name)?;
        let days = check_retention_days(req.retention_days)?;
        let period = period_from_pb(req.period)?;
        let request_id = request_id(&req.request_id)?;
        let digest = Sha256::digest(format!("{}\n{days}\n{}", name.as_str(), req.period)).to_vec();
        let mut tx = self.db.begin(tenant).await?;
        if let Some(id) = request_id
            && let Some(previous) = store::replayed(&mut tx, id, OPERATION, &digest).await?
        {
            return Ok(previous);
        }
        let resource = format!("retention_class/{}", name.as_str());
        let mut audit = record(ctx, actor(ctx), "vault.retention_class.put", &resource, Outcome::Success)
            .detail("retention_days", days);
        let existing = match retention_store::lock_class(&mut tx, &name).await? {
            Some(existing) => Some(existing),
            None => {
                let period = period.ok_or_else(|| {
                    ApiError::invalid_field("period", "required for a new class: RETENTION_PERIOD_DAY or _MONTH")
                })?;
                if retention_store::insert_class(&mut tx, &name, days, period.as_str()).await? {
                    audit = audit.detail("period", period.as_str()).detail("created", true);
                    None
                } else {
                    // Created by a concurrent put that committed first: changed like any class.
                    retention_store::lock_class(&mut tx, &name).await?
                }
            }
        };
        if let Some((previous_days, stored)) = existing {
            if period.is_some_and(|p| p.as_str() != stored) {
                return Err(VaultError::RetentionPeriodFixed.into());
            }
            retention_store::set_retention(&mut tx, &name, days).await?;
            audit = audit.detail("period", stored).detail("previous_retention_days", previous_days);
        }
        let row = retention_store::class(&mut tx, &name)
            .await?
            .ok_or_else(|| ApiError::internal(&"a class just written is missing"))?;
        let resp = pb::PutRetentionClassResponse { retention_class: Some(class_to_pb(row)) };
        if let Some(id) = request_id {
            store::remember(&mut tx, id, OPERATION, &digest, &resp).await?;
        }
        tx.record(audit).await?;
        tx.commit().await?;
        Ok(resp)
    }
}

#[tonic::async_trait]
impl pb::retention_service_server::RetentionService for Retention {
    async fn put_retention_class(
        &self,
        request: Request<pb::PutRetentionClassRequest>,
    ) -> Result<Response<pb::PutRetentionClassResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let tenant = self.authorize(&ctx).await?;
        Ok(Response::new(self.put(&ctx, &tenant, request.into_inner()).await?))
    }

    async fn list_retention_classes(
        &self,
        request: Request<pb::ListRetentionClassesRequest>,
    ) -> Result<Response<pb::ListRetentionClassesResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let tenant = self.authorize(&ctx).await?;
        let req = request.into_inner();
        let size = page_size(req.page_size)?;
        let mut tx = self.db.begin(&tenant).await?;
        let mut rows = retention_store::classes_after(&mut tx, &req.page_token, size + 1).await?;
        tx.commit().await?;
        let next_page_token = next_page(&mut rows, size, |r| r.name.clone());
        Ok(Response::new(pb::ListRetentionClassesResponse {
            retention_classes: rows.into_iter().map(class_to_pb).collect(),
            next_page_token,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_map_both_ways_and_unknown_numbers_are_refused() {
        assert_eq!(period_from_pb(pb::RetentionPeriod::Day as i32).expect("day"), Some(Period::Day));
        assert_eq!(period_from_pb(pb::RetentionPeriod::Month as i32).expect("month"), Some(Period::Month));
        assert_eq!(period_from_pb(0).expect("unspecified"), None);
        assert!(period_from_pb(7).is_err());
        assert_eq!(period_to_pb("month"), pb::RetentionPeriod::Month as i32);
        assert_eq!(period_to_pb("day"), pb::RetentionPeriod::Day as i32);
    }

    #[test]
    fn pages_hold_1_to_1000_classes() {
        assert_eq!(page_size(0).expect("default"), 100);
        assert_eq!(page_size(1000).expect("most"), 1000);
        assert!(page_size(1001).is_err());
        assert!(page_size(-1).is_err());
    }
}
