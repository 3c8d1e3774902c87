//! gRPC adapters: decode, authorize, call the store, map errors.

use std::time::Duration;

use kit::access::RequestContext;
use kit::outbox::{Actor, AuditRecord, Outcome};
use kit::tenancy::TenantStatus;
use kit::{ApiError, Db, Tenant, TenantSlug};
use proto::auth::v1 as pb;
use tonic::{Request, Response, Status};

use crate::error::AuthError;
use crate::{SERVICE, store};

fn tenant_pb(t: &Tenant) -> pb::Tenant {
    pb::Tenant {
        id: t.id.to_string(),
        slug: t.slug.to_string(),
        status: match t.status {
            TenantStatus::Active => pb::TenantStatus::Active,
            TenantStatus::Suspended => pb::TenantStatus::Suspended,
            TenantStatus::Terminated => pb::TenantStatus::Terminated,
        } as i32,
        create_time: Some(kit::time::to_pb(t.created_at)),
    }
}

fn parse_slug(raw: &str) -> Result<TenantSlug, ApiError> {
    TenantSlug::parse(raw).map_err(|_| ApiError::invalid_field("slug", "must match ^[a-z][a-z0-9_]{2,39}$"))
}

/// `strongroom.auth.v1.TenantService` (operator only).
#[derive(Debug, Clone)]
pub struct Tenants {
    pub db: Db,
    pub core: crate::core::Core,
}

fn termination_pb(
    tenant: &Tenant,
    t: store::terminations::Termination,
    parts: Vec<store::terminations::Part>,
) -> pb::Termination {
    pb::Termination {
        tenant: Some(tenant_pb(tenant)),
        recipient: t.recipient,
        reason: t.reason,
        terminated_by: t.terminated_by,
        terminate_time: Some(kit::time::to_pb(t.terminated_at)),
        export_until: Some(kit::time::to_pb(t.export_until)),
        parts: parts
            .into_iter()
            .map(|p| pb::ExportPartProgress {
                part: p.part,
                rows_done: u64::try_from(p.rows_done).unwrap_or_default(),
                rows_total: p.rows_total.and_then(|n| u64::try_from(n).ok()).unwrap_or_default(),
                files: u32::try_from(p.files).unwrap_or_default(),
                complete: p.completed_at.is_some(),
                start_time: p.started_at.map(kit::time::to_pb),
                complete_time: p.completed_at.map(kit::time::to_pb),
            })
            .collect(),
        manifest_sha256: t.manifest_sha256.unwrap_or_default(),
        export_time: t.exported_at.map(kit::time::to_pb),
        fetch_time: t.fetched_at.map(kit::time::to_pb),
    }
}

/// Files of a bundle are streamed one at a time.
pub type ExportItems = tokio_stream::wrappers::ReceiverStream<Result<pb::ExportItem, Status>>;

#[tonic::async_trait]
impl pb::tenant_service_server::TenantService for Tenants {
    type FetchExportStream = ExportItems;

    async fn terminate_tenant(
        &self,
        request: Request<pb::TerminateTenantRequest>,
    ) -> Result<Response<pb::Termination>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        let slug = parse_slug(&req.slug)?;
        let request_id = ctx.request_id_or(req.request_id)?;
        let recipient = kit::export::parse_recipient(&req.recipient)?.to_string();
        let reason = req.reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(ApiError::invalid_field("reason", "1 to 500 characters").into());
        }
        let operator = req.operator.trim();
        if operator.chars().count() > 100 || operator.chars().any(char::is_control) {
            return Err(ApiError::invalid_field("operator", "at most 100 printable characters").into());
        }
        let by = if operator.is_empty() { ctx.caller.identity.name().to_owned() } else { operator.to_owned() };
        let tenant = self.db.tenant(&slug).await?;
        if tenant.status != TenantStatus::Terminated {
            let mut tx = self.db.begin(&tenant).await?;
            let window = self.core.settings.export_window_days;
            if let Some(export_until) = store::terminations::terminate(&mut tx, &recipient, reason, &by, window).await?
            {
                // The last entry of the tenant's log: audit-svc still sequences it, then exports.
                let record = AuditRecord::new(
                    SERVICE,
                    Actor::Service(by.clone()),
                    "tenant.terminate",
                    &format!("tenant/{slug}"),
                    Outcome::Success,
                )
                .request_id(request_id)
                .detail("reason", reason)
                .detail("recipient", recipient.clone())
                .detail("export_window_days", window);
                tx.record(record).await?;
                if let Some(journal) = &self.core.journal {
                    let erasure = kit::journal::Erasure::TenantTerminate {
                        recipient: recipient.clone(),
                        reason: reason.to_owned(),
                        terminated_by: by.clone(),
                        export_until,
                    };
                    journal
                        .append(tenant.id.0, slug.as_str(), erasure)
                        .await
                        .map_err(|e| kit::journal::unavailable(&e))?;
                }
                tx.commit().await?;
                tracing::info!(tenant = %slug, "tenant terminated; its export begins");
            } else {
                tx.rollback().await?;
            }
            self.db.forget_tenant(&slug).await;
        }
        let tenant = self.db.tenant(&slug).await?;
        let (termination, parts) =
            store::terminations::get(&self.db, tenant.id.0).await?.ok_or(AuthError::TenantTerminated)?;
        if termination.recipient != recipient {
            return Err(AuthError::TenantTerminated.into());
        }
        Ok(Response::new(termination_pb(&tenant, termination, parts)))
    }

    async fn get_termination(
        &self,
        request: Request<pb::GetTenantRequest>,
    ) -> Result<Response<pb::Termination>, Status> {
        let slug = parse_slug(&request.get_ref().slug)?;
        let tenant = self.db.tenant(&slug).await?;
        let (termination, parts) = store::terminations::get(&self.db, tenant.id.0)
            .await?
            .ok_or_else(|| ApiError::not_found("TERMINATION_NOT_FOUND", format!("tenant {slug} is not terminated")))?;
        Ok(Response::new(termination_pb(&tenant, termination, parts)))
    }

    async fn fetch_export(
        &self,
        request: Request<pb::GetTenantRequest>,
    ) -> Result<Response<Self::FetchExportStream>, Status> {
        let slug = parse_slug(&request.get_ref().slug)?;
        let tenant = self.db.tenant(&slug).await?;
        let Some((canonical, signature, sha256)) = store::terminations::manifest(&self.db, tenant.id.0).await? else {
            return Err(ApiError::failed_precondition(
                "EXPORT_NOT_READY",
                "the export bundle is not complete yet (see GetTermination)",
            )
            .into());
        };
        let files = kit::export::files(&self.db, tenant.id.0).await?;
        let (send, receive) = tokio::sync::mpsc::channel(2);
        let db = self.db.clone();
        tokio::spawn(async move {
            let manifest = pb::ExportManifest { canonical: canonical.into_bytes(), signature, sha256 };
            if send.send(Ok(pb::ExportItem { item: Some(pb::export_item::Item::Manifest(manifest)) })).await.is_err() {
                return;
            }
            for f in files {
                let item = match store::terminations::file_data(&db, tenant.id.0, &f.part, f.seq).await {
                    Ok(data) => Ok(pb::ExportItem {
                        item: Some(pb::export_item::Item::File(pb::ExportFile {
                            part: f.part,
                            seq: f.seq,
                            name: f.name,
                            rows: f.rows,
                            sha256: f.sha256,
                            data,
                        })),
                    }),
                    Err(e) => Err(Status::from(e)),
                };
                let failed = item.is_err();
                if send.send(item).await.is_err() || failed {
                    return;
                }
            }
            if let Err(e) = store::terminations::mark_fetched(&db, tenant.id.0).await {
                tracing::error!(error = %e, "could not record the export's fetch");
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(receive)))
    }
    async fn create_tenant(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::CreateTenantResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        let slug = parse_slug(&req.slug)?;
        ctx.request_id_or(req.request_id)?;
        if !req.owner_email.is_empty() {
            crate::domain::input::normalize_email(&req.owner_email)
                .map_err(|_| ApiError::invalid_field("owner_email", "must be an email address"))?;
        }
        // Registered, with its schema, by the operator's `strongroom tenant create`: auth-svc
        // holds no credential that could create either.
        let tenant = self.db.tenant(&slug).await?;
        let (mut owner_id, mut owner_password) = (String::new(), String::new());
        if !req.owner_email.is_empty() {
            let mut tx = self.db.begin(&tenant).await?;
            if let Some((id, password)) = crate::api::users::create_owner(&self.core, &mut tx, &req.owner_email).await?
            {
                owner_id = id.to_string();
                owner_password = password.to_string();
            }
            tx.commit().await?;
        }
        Ok(Response::new(pb::CreateTenantResponse {
            tenant: Some(tenant_pb(&tenant)),
            created: !owner_id.is_empty(),
            owner_password,
            owner_id,
        }))
    }

    async fn get_tenant(
        &self,
        request: Request<pb::GetTenantRequest>,
    ) -> Result<Response<pb::GetTenantResponse>, Status> {
        let slug = parse_slug(&request.get_ref().slug)?;
        let tenant = self.db.tenant(&slug).await?;
        Ok(Response::new(pb::GetTenantResponse { tenant: Some(tenant_pb(&tenant)) }))
    }

    async fn suspend_tenant(
        &self,
        request: Request<pb::SuspendTenantRequest>,
    ) -> Result<Response<pb::GetTenantResponse>, Status> {
        let reason = request.get_ref().reason.trim().to_owned();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(ApiError::invalid_field("reason", "1 to 500 characters").into());
        }
        Ok(Response::new(self.set_status(request, "suspended", "tenant.suspend", Some(reason)).await?))
    }

    async fn reactivate_tenant(
        &self,
        request: Request<pb::GetTenantRequest>,
    ) -> Result<Response<pb::GetTenantResponse>, Status> {
        Ok(Response::new(self.set_status(request, "active", "tenant.reactivate", None).await?))
    }

    async fn rotate_signing_key(
        &self,
        request: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::RotateSigningKeyResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        let slug = parse_slug(&req.slug)?;
        let request_id = ctx.request_id_or(req.request_id)?;
        let tenant = self.db.tenant(&slug).await?;
        if tenant.status != TenantStatus::Active {
            return Err(AuthError::TenantNotActive.into());
        }
        let signer = &self.core.signer;
        // A tenant that has not issued a token yet gets its first key, which is then rotated.
        signer.ensure_key(&self.db, &tenant).await?;
        let actor = Actor::Service(ctx.caller.identity.name().to_owned());
        let Some(rotated) = signer.rotate_if_due(&self.db, &tenant, Duration::ZERO, actor, request_id).await? else {
            return Err(AuthError::RotationPending.into());
        };
        Ok(Response::new(pb::RotateSigningKeyResponse {
            kid: rotated.kid,
            activate_time: Some(kit::time::to_pb(rotated.activates_at)),
            retiring_kids: rotated.retiring,
        }))
    }

    async fn rotate_email_index_key(
        &self,
        request: Request<pb::RotateEmailIndexKeyRequest>,
    ) -> Result<Response<pb::RotateEmailIndexKeyResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        let slug = parse_slug(&req.slug)?;
        let request_id = ctx.request_id_or(req.request_id)?;
        let tenant = self.db.tenant(&slug).await?;
        if tenant.status != TenantStatus::Active {
            return Err(AuthError::TenantNotActive.into());
        }
        let actor = Actor::Service(ctx.caller.identity.name().to_owned());
        let core = &self.core;
        let rotated = core.email_index.rotate(&self.db, &core.personal, &tenant, actor, request_id).await?;
        Ok(Response::new(pb::RotateEmailIndexKeyResponse {
            key_version: rotated.version,
            users_indexed: rotated.users,
        }))
    }
}

impl Tenants {
    async fn set_status<T: SlugOf>(
        &self,
        request: Request<T>,
        status: &str,
        action: &str,
        reason: Option<String>,
    ) -> Result<pb::GetTenantResponse, ApiError> {
        let ctx = RequestContext::of(&request)?;
        let slug = parse_slug(request.get_ref().slug())?;
        let tenant = self.db.tenant(&slug).await?;
        if tenant.status == TenantStatus::Terminated {
            return Err(AuthError::TenantTerminated.into());
        }
        let mut tx = self.db.begin(&tenant).await?;
        store::control::set_tenant_status(&mut tx, status).await?;
        let mut record = AuditRecord::new(
            SERVICE,
            Actor::Service(ctx.caller.identity.name().to_owned()),
            action,
            &format!("tenant/{slug}"),
            Outcome::Success,
        )
        .request_id(ctx.request_id);
        if let Some(reason) = reason {
            record = record.detail("reason", reason);
        }
        tx.record(record).await?;
        tx.commit().await?;
        self.db.forget_tenant(&slug).await;
        let tenant = self.db.tenant(&slug).await?;
        tracing::info!(tenant = %slug, status, "tenant status changed");
        Ok(pb::GetTenantResponse { tenant: Some(tenant_pb(&tenant)) })
    }
}

/// Requests that name a tenant by slug.
trait SlugOf {
    fn slug(&self) -> &str;
}

impl SlugOf for pb::SuspendTenantRequest {
    fn slug(&self) -> &str {
        &self.slug
    }
}

impl SlugOf for pb::GetTenantRequest {
    fn slug(&self) -> &str {
        &self.slug
    }
}

/// `strongroom.auth.v1.KeysService`: the JWKS.
#[derive(Debug, Clone)]
pub struct Keys {
    pub db: Db,
}

#[tonic::async_trait]
impl pb::keys_service_server::KeysService for Keys {
    async fn get_jwks(&self, _request: Request<pb::GetJwksRequest>) -> Result<Response<pb::GetJwksResponse>, Status> {
        let text = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_owned();
        let keys = store::control::jwks(&self.db)
            .await?
            .iter()
            .map(|(jwk, tenant)| pb::Jwk {
                kid: text(jwk, "kid"),
                kty: text(jwk, "kty"),
                crv: text(jwk, "crv"),
                alg: text(jwk, "alg"),
                x: text(jwk, "x"),
                y: text(jwk, "y"),
                tenant_id: tenant.map(|t| t.to_string()).unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::GetJwksResponse { keys }))
    }
}

/// `strongroom.auth.v1.IdentityService`.
#[derive(Debug, Clone)]
pub struct IdentityApi {
    pub db: Db,
}

#[tonic::async_trait]
impl pb::identity_service_server::IdentityService for IdentityApi {
    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let principal = ctx.require_principal()?;
        let tenant = self.db.authorize_tenant(&ctx.tenant_slug()?, Some(principal)).await?;
        Ok(Response::new(pb::WhoAmIResponse {
            tenant_id: tenant.id.to_string(),
            subject: principal.subject.clone(),
            session_id: principal.session_id.clone().unwrap_or_default(),
            permissions: principal.permissions.clone(),
            amr: principal.amr.clone(),
        }))
    }
}
