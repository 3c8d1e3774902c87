//! Operator calls over mTLS with the `operator` certificate.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Args;
use kit::Identity;
use kit::config::TlsConfig;
use kit::tls::CertStore;

/// Where the services are and which certificate to present. Without flags, the files written by
/// `strongroom dev up` in `--dev-dir` are used.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// CA certificate (PEM).
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,
    /// Operator certificate (PEM).
    #[arg(long, global = true)]
    pub cert: Option<PathBuf>,
    /// Operator private key (PEM).
    #[arg(long, global = true)]
    pub key: Option<PathBuf>,
    #[arg(long, global = true)]
    pub auth: Option<String>,
    #[arg(long, global = true)]
    pub vault: Option<String>,
    #[arg(long, global = true)]
    pub audit: Option<String>,
    #[arg(long, global = true)]
    pub ledger: Option<String>,
    /// The directory of a running `strongroom dev up`.
    #[arg(long, global = true, default_value = ".strongroom/dev")]
    pub dev_dir: PathBuf,
}

/// Resolved connection settings.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub tls: TlsConfig,
    pub auth: String,
    pub vault: String,
    pub audit: String,
    pub ledger: String,
}

impl ConnectArgs {
    pub fn resolve(&self) -> anyhow::Result<Endpoints> {
        let dev: Option<serde_json::Value> = std::fs::read_to_string(self.dev_dir.join("endpoints.json"))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok());
        let from_dev = |key: &str| dev.as_ref().and_then(|d| d[key].as_str()).map(str::to_owned);
        let pick = |flag: &Option<String>, key: &str| {
            flag.clone()
                .or_else(|| from_dev(key))
                .ok_or_else(|| anyhow!("--{key} is required (no {}/endpoints.json)", self.dev_dir.display()))
        };
        let pki = self.dev_dir.join("pki");
        let ca = self.ca.clone().or_else(|| from_dev("ca").map(PathBuf::from)).unwrap_or_else(|| pki.join("ca.pem"));
        Ok(Endpoints {
            tls: TlsConfig {
                ca,
                cert: self.cert.clone().unwrap_or_else(|| pki.join("operator.pem")),
                key: self.key.clone().unwrap_or_else(|| pki.join("operator-key.pem")),
                reload_interval_ms: 60_000,
            },
            auth: pick(&self.auth, "auth")?,
            vault: pick(&self.vault, "vault")?,
            audit: pick(&self.audit, "audit")?,
            ledger: pick(&self.ledger, "ledger")?,
        })
    }
}

fn channel(certs: &CertStore, url: &str, name: &str) -> anyhow::Result<kit::client::Channel> {
    kit::client::channel(certs, url, &Identity::new(name)?, Duration::from_secs(30))
        .with_context(|| format!("{name} at {url}"))
}

/// Registers `slug` with auth-svc (with a first owner when `owner_email` is given and the tenant
/// has no user yet), then provisions vault, audit and ledger for it.
pub async fn create_tenant(
    endpoints: &Endpoints,
    slug: &str,
    owner_email: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    let certs = CertStore::load(&endpoints.tls).context("operator certificate")?;
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut tenants =
        proto::auth::v1::tenant_service_client::TenantServiceClient::new(channel(&certs, &endpoints.auth, "auth")?);
    let created = tenants
        .create_tenant(proto::auth::v1::CreateTenantRequest {
            slug: slug.to_owned(),
            request_id: request_id.clone(),
            owner_email: owner_email.unwrap_or_default().to_owned(),
        })
        .await
        .map_err(|s| anyhow!("auth: {}", kit::ApiError::from_status(&s)))?
        .into_inner();
    let tenant = created.tenant.ok_or_else(|| anyhow!("auth returned no tenant"))?;
    for (name, url) in [("vault", &endpoints.vault), ("audit", &endpoints.audit), ("ledger", &endpoints.ledger)] {
        let mut client = proto::common::v1::tenant_provisioning_service_client::TenantProvisioningServiceClient::new(
            channel(&certs, url, name)?,
        );
        client
            .provision_tenant(proto::common::v1::ProvisionTenantRequest {
                tenant_slug: slug.to_owned(),
                request_id: request_id.clone(),
            })
            .await
            .map_err(|s| anyhow!("{name}: {}", kit::ApiError::from_status(&s)))?;
    }
    let mut out = serde_json::json!({ "id": tenant.id, "slug": tenant.slug, "created": created.created });
    if !created.owner_password.is_empty() {
        out["owner"] = serde_json::json!({
            "id": created.owner_id,
            "email": owner_email.unwrap_or_default(),
            "password": created.owner_password,
        });
    }
    Ok(out)
}

/// Rotates a tenant's access-token signing key (`TenantService/RotateSigningKey`): prints the new
/// kid, when it starts signing, and the kids it retires.
pub async fn rotate_signing_key(endpoints: &Endpoints, slug: &str) -> anyhow::Result<serde_json::Value> {
    let certs = CertStore::load(&endpoints.tls).context("operator certificate")?;
    let mut tenants =
        proto::auth::v1::tenant_service_client::TenantServiceClient::new(channel(&certs, &endpoints.auth, "auth")?);
    let rotated = tenants
        .rotate_signing_key(proto::auth::v1::RotateSigningKeyRequest {
            slug: slug.to_owned(),
            request_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .map_err(|s| anyhow!("auth: {}", kit::ApiError::from_status(&s)))?
        .into_inner();
    let activates_at = rotated
        .activate_time
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
        .map(|t| t.to_rfc3339());
    Ok(serde_json::json!({ "kid": rotated.kid, "activates_at": activates_at, "retiring": rotated.retiring_kids }))
}

/// Suspends a tenant (with `reason`) or reactivates it (`None`); prints its id, slug and status.
pub async fn set_tenant_status(
    endpoints: &Endpoints,
    slug: &str,
    reason: Option<String>,
) -> anyhow::Result<serde_json::Value> {
    let certs = CertStore::load(&endpoints.tls).context("operator certificate")?;
    let mut tenants =
        proto::auth::v1::tenant_service_client::TenantServiceClient::new(channel(&certs, &endpoints.auth, "auth")?);
    let answer = match reason {
        Some(reason) => {
            tenants.suspend_tenant(proto::auth::v1::SuspendTenantRequest { slug: slug.to_owned(), reason }).await
        }
        None => tenants.reactivate_tenant(proto::auth::v1::GetTenantRequest { slug: slug.to_owned() }).await,
    };
    let tenant = answer
        .map_err(|s| anyhow!("auth: {}", kit::ApiError::from_status(&s)))?
        .into_inner()
        .tenant
        .ok_or_else(|| anyhow!("auth returned no tenant"))?;
    let status = proto::auth::v1::TenantStatus::try_from(tenant.status)
        .map(|s| s.as_str_name().trim_start_matches("TENANT_STATUS_").to_lowercase())
        .unwrap_or_else(|_| "unknown".into());
    Ok(serde_json::json!({ "id": tenant.id, "slug": tenant.slug, "status": status }))
}
