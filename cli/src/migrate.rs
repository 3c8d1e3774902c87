//! The operator's database steps, the only code that holds the administrative URL: `strongroom
//! migrate` (roles, the `control` schema, every tenant's schema, for all four services at once) and
//! tenant registration. Running services hold only their own login role; they wait, NOT_SERVING,
//! until this step has brought the schema up to their build.

use std::path::Path;

use anyhow::{Context, anyhow};
use kit::migrate::{MigrationSet, Migrator};
use kit::{Tenant, TenantSlug};
use secrecy::{ExposeSecret, SecretString};

/// Every service's migrations, in the order they are applied (after kit's own).
pub const SETS: [MigrationSet; 4] =
    [auth_svc::MIGRATIONS, vault_svc::MIGRATIONS, audit_svc::MIGRATIONS, ledger_svc::MIGRATIONS];

/// Where `strongroom dev up` keeps the administrative URL for the operator steps and benchmarks
/// (mode 0600; no service configuration holds it).
pub fn dev_admin_url_file(dev_dir: &Path) -> std::path::PathBuf {
    dev_dir.join("database-admin-url")
}

/// The administrative URL of a running `strongroom dev up`.
pub fn dev_admin_url(dev_dir: &Path) -> anyhow::Result<String> {
    let path = dev_admin_url_file(dev_dir);
    let url = std::fs::read_to_string(&path)
        .with_context(|| format!("{} (is `strongroom dev up` running?)", path.display()))?;
    Ok(url.trim().to_owned())
}

pub(crate) fn migrator(admin_url: &SecretString) -> anyhow::Result<Migrator> {
    let parsed =
        url::Url::parse(admin_url.expose_secret()).map_err(|_| anyhow!("the administrative URL is not a URL"))?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Err(anyhow!("the administrative URL must be a postgres:// URL"));
    }
    Migrator::connect_lazy(admin_url, &SETS).context("administrative database connection")
}

/// `strongroom migrate`: roles (each of `login_urls` sets its role's password), the `control`
/// schema, then every registered tenant. Fails when any tenant could not be migrated, after trying
/// all of them.
pub async fn run(admin_url: &SecretString, login_urls: &[SecretString]) -> anyhow::Result<serde_json::Value> {
    let (control, current) = migrator(admin_url)?.migrate(login_urls).await?;
    Ok(serde_json::json!({ "control_applied": control, "tenants_current": current }))
}

/// Registers `slug` and creates its schema for every service, in one transaction (idempotent).
/// Returns the tenant and whether this call registered it.
pub async fn register_tenant(admin_url: &SecretString, slug: &str) -> anyhow::Result<(Tenant, bool)> {
    let slug = TenantSlug::parse(slug).map_err(|e| anyhow!("{e}"))?;
    let migrator = migrator(admin_url)?;
    let (tenant, created, _) = migrator
        .register(&slug, Some(kit::migrate::tenant_created(&slug)))
        .await
        .with_context(|| format!("tenant {slug}"))?;
    Ok((tenant, created))
}
