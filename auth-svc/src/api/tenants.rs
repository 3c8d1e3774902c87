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

#[tonic::async_trait]
impl pb::tenant_service_server::TenantService for Tenants {
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
