//! Operator calls over mTLS with the `operator` certificate.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Args;
use kit::Identity;
use kit::config::TlsConfig;
use kit::tls::CertStore;
use secrecy::SecretString;

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
    /// The administrative database URL, for `migrate` and `tenant create` only (no running
    /// service holds it). Without it, `--dev-dir`'s `database-admin-url`.
    #[arg(long, global = true, env = "STRONGROOM_DATABASE__ADMIN_URL", hide_env_values = true)]
    pub admin_url: Option<String>,
}

/// Resolved connection settings.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub tls: TlsConfig,
    /// The administrative database URL, when known (`tenant create` needs it).
    pub admin_url: Option<SecretString>,
    pub auth: String,
    pub vault: String,
    pub audit: String,
    pub ledger: String,
}

impl ConnectArgs {
    /// `--admin-url` (or its variable), else the one `strongroom dev up` keeps in `--dev-dir`.
    pub fn admin_url(&self) -> anyhow::Result<SecretString> {
        match &self.admin_url {
            Some(url) if !url.is_empty() => Ok(SecretString::from(url.clone())),
            _ => crate::migrate::dev_admin_url(&self.dev_dir).map(SecretString::from).map_err(|e| {
                anyhow!(
                    "the administrative database URL is needed: --admin-url or STRONGROOM_DATABASE__ADMIN_URL ({e:#})"
                )
            }),
        }
    }

    /// A value a running `strongroom dev up` keeps in `--dev-dir`'s `endpoints.json`, if any.
    pub fn dev_value(&self, key: &str) -> Option<String> {
        let dev: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(self.dev_dir.join("endpoints.json")).ok()?).ok()?;
        dev[key].as_str().map(str::to_owned)
    }

    /// The Redis URL of a running `strongroom dev up`, if any.
    pub fn dev_redis_url(&self) -> Option<String> {
        self.dev_value("redis")
    }

    /// The operator's certificate, key and CA: the flags, else `--dev-dir`'s.
    pub fn tls(&self) -> TlsConfig {
        let pki = self.dev_dir.join("pki");
        let ca =
            self.ca.clone().or_else(|| self.dev_value("ca").map(PathBuf::from)).unwrap_or_else(|| pki.join("ca.pem"));
        TlsConfig {
            ca,
            cert: self.cert.clone().unwrap_or_else(|| pki.join("operator.pem")),
            key: self.key.clone().unwrap_or_else(|| pki.join("operator-key.pem")),
            reload_interval_ms: 60_000,
        }
    }

    pub fn resolve(&self) -> anyhow::Result<Endpoints> {
        let pick = |flag: &Option<String>, key: &str| {
            flag.clone()
                .or_else(|| self.dev_value(key))
                .ok_or_else(|| anyhow!("--{key} is required (no {}/endpoints.json)", self.dev_dir.display()))
        };
        Ok(Endpoints {
            admin_url: self.admin_url().ok(),
            tls: self.tls(),
            auth: pick(&self.auth, "auth")?,
            vault: pick(&self.vault, "vault")?,
            audit: pick(&self.audit, "audit")?,
            ledger: pick(&self.ledger, "ledger")?,
        })
    }
}

pub(crate) fn channel(certs: &CertStore, url: &str, name: &str) -> anyhow::Result<kit::client::Channel> {
    kit::client::channel(certs, url, &Identity::new(name)?, Duration::from_secs(30))
        .with_context(|| format!("{name} at {url}"))
}

/// Registers `slug` and creates its schema for every service with the administrative URL (one
/// transaction), then, with `owner_email`, has auth-svc create the tenant's first owner when it
/// has no user yet.
pub async fn create_tenant(
    endpoints: &Endpoints,
    slug: &str,
    owner_email: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    let admin_url = endpoints.admin_url.as_ref().ok_or_else(|| {
        anyhow!("tenant create needs the administrative database URL: --admin-url or STRONGROOM_DATABASE__ADMIN_URL")
    })?;
    // Checked before anything is registered, so a bad address leaves no tenant behind.
    if let Some(email) = owner_email {
        auth_svc::domain::input::normalize_email(email)
            .map_err(|_| anyhow!("--owner-email must be an email address"))?;
    }
    let (tenant, created) = crate::migrate::register_tenant(admin_url, slug).await?;
    let mut owner = None;
    if let Some(email) = owner_email {
        let certs = CertStore::load(&endpoints.tls).context("operator certificate")?;
        let mut tenants =
            proto::auth::v1::tenant_service_client::TenantServiceClient::new(channel(&certs, &endpoints.auth, "auth")?);
        let response = tenants
            .create_tenant(proto::auth::v1::CreateTenantRequest {
                slug: slug.to_owned(),
                request_id: uuid::Uuid::new_v4().to_string(),
                owner_email: email.to_owned(),
            })
            .await
            .map_err(|s| anyhow!("auth: {}", kit::ApiError::from_status(&s)))?
            .into_inner();
        owner = Some(response);
    }
    let mut out =
        serde_json::json!({ "id": tenant.id.to_string(), "slug": tenant.slug.to_string(), "created": created });
    if let Some(owner) = owner.filter(|o| !o.owner_password.is_empty()) {
        out["owner"] = serde_json::json!({
            "id": owner.owner_id,
            "email": owner_email.unwrap_or_default(),
            "password": owner.owner_password,
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

/// Rotates a tenant's email blind-index key (`TenantService/RotateEmailIndexKey`): prints the key
/// version now in use and how many users were indexed under it.
pub async fn rotate_email_index_key(endpoints: &Endpoints, slug: &str) -> anyhow::Result<serde_json::Value> {
    let certs = CertStore::load(&endpoints.tls).context("operator certificate")?;
    let mut tenants =
        proto::auth::v1::tenant_service_client::TenantServiceClient::new(channel(&certs, &endpoints.auth, "auth")?);
    let rotated = tenants
        .rotate_email_index_key(proto::auth::v1::RotateEmailIndexKeyRequest {
            slug: slug.to_owned(),
            request_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .map_err(|s| anyhow!("auth: {}", kit::ApiError::from_status(&s)))?
        .into_inner();
    Ok(serde_json::json!({ "key_version": rotated.key_version, "users_indexed": rotated.users_indexed }))
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
