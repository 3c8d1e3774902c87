//! The gRPC adapters of vault-svc, one file per tonic service (`secrets`, `transit`, `keys`:
//! KeyManagementService, `retention`, `signing`): decode, authorize, call the keyring, the domain and the
//! store, encode. Here, what every adapter of the crate shares: the tenant of a call, its audit
//! records and its request id.

pub mod keys;
pub mod retention;
pub mod secrets;
pub mod signing;
pub mod transit;

use kit::access::RequestContext;
use kit::outbox::{Actor, AuditRecord, Outcome};
use kit::{ApiError, Db, Tenant};
use tonic::Request;
use uuid::Uuid;

use crate::SERVICE;

pub use keys::KeyManagement;
pub use retention::Retention;
pub use secrets::Secrets;
pub use signing::Signing;
pub use transit::Transit;

/// The tenant the call names, if the caller's credential may reach it (no permission checked:
/// for workloads, whose access is the method policy of `lib.rs`).
pub(crate) async fn tenant(db: &Db, ctx: &RequestContext) -> Result<Tenant, ApiError> {
    db.authorize_tenant(&ctx.tenant_slug()?, ctx.principal.as_ref()).await
}

/// The context of a workload's call and the tenant it names (see [`tenant`]).
pub(crate) async fn call<T>(db: &Db, request: &Request<T>) -> Result<(RequestContext, Tenant), ApiError> {
    let ctx = RequestContext::of(request)?;
    let tenant = tenant(db, &ctx).await?;
    Ok((ctx, tenant))
}

/// The tenant of a workload's call that may reach a terminated tenant while its export is under
/// way (`kit::export::is_exporting`): exactly the calls the exporting services make for their own
/// parts, workload `allowed` calling without a token (auth-svc opening users' sealed personal
/// fields, audit-svc signing the final checkpoint and the manifest). Every other call for a
/// terminated tenant stays refused (`TENANT_TERMINATED`), and so does this one once the bundle is
/// signed: termination must not leave the tenant's keys usable by anyone else, nor for long.
pub(crate) async fn tenant_for_export(db: &Db, ctx: &RequestContext, allowed: &str) -> Result<Tenant, ApiError> {
    match tenant(db, ctx).await {
        Err(refused) if refused.reason == "TENANT_TERMINATED" => {
            if ctx.principal.is_some() || ctx.caller.identity.name() != allowed {
                return Err(refused);
            }
            let terminated = db.tenant(&ctx.tenant_slug()?).await?;
            if kit::export::is_exporting(db, &terminated).await? { Ok(terminated) } else { Err(refused) }
        }
        other => other,
    }
}

/// The context of a workload's call and its tenant, terminated or not (see [`tenant_for_export`]).
pub(crate) async fn call_for_export<T>(
    db: &Db,
    request: &Request<T>,
    allowed: &str,
) -> Result<(RequestContext, Tenant), ApiError> {
    let ctx = RequestContext::of(request)?;
    let tenant = tenant_for_export(db, &ctx, allowed).await?;
    Ok((ctx, tenant))
}

/// Who acts: the principal when a token came with the call, else the calling workload.
pub(crate) fn actor(ctx: &RequestContext) -> Actor {
    match &ctx.principal {
        Some(p) => Actor::of(p),
        None => workload(ctx),
    }
}

/// The calling workload, as an actor.
pub(crate) fn workload(ctx: &RequestContext) -> Actor {
    Actor::Service(ctx.caller.identity.name().to_owned())
}

/// The audit record of `action` on `resource` by `actor`, under the call's request id.
pub(crate) fn record(
    ctx: &RequestContext,
    actor: Actor,
    action: &str,
    resource: &str,
    outcome: Outcome,
) -> AuditRecord {
    AuditRecord::new(SERVICE, actor, action, resource, outcome).request_id(ctx.request_id.clone())
}

/// The audit record of `action` on `tenant`'s keys by the calling workload.
pub(crate) fn tenant_record(ctx: &RequestContext, action: &str, tenant: &Tenant) -> AuditRecord {
    record(ctx, workload(ctx), action, &format!("tenant/{}", tenant.slug), Outcome::Success)
}

/// Commits `record` in a transaction of its own: the audit of a refusal, which writes nothing else.
pub(crate) async fn record_alone(db: &Db, tenant: &Tenant, record: AuditRecord) -> Result<(), ApiError> {
    let mut tx = db.begin(tenant).await?;
    tx.record(record).await?;
    tx.commit().await
}

/// An optional request id (a UUID) that makes a write idempotent.
pub(crate) fn request_id(raw: &str) -> Result<Option<Uuid>, ApiError> {
    if raw.is_empty() {
        return Ok(None);
    }
    Uuid::parse_str(raw).map(Some).map_err(|_| ApiError::invalid_field("request_id", "must be a UUID"))
}

/// The token of the page after `rows`, which holds one row more than `page_size` when there is
/// such a page (that row is dropped); empty on the last page.
pub(crate) fn next_page<T>(rows: &mut Vec<T>, page_size: i64, token: impl Fn(&T) -> String) -> String {
    if rows.len() > page_size as usize {
        rows.truncate(page_size as usize);
        rows.last().map(token).unwrap_or_default()
    } else {
        String::new()
    }
}
