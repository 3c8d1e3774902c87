//! Schema bootstrap and per-tenant migrations.
//!
//! Owns the `control` schema, the database roles and the migration bookkeeping
//! (`control.schema_migrations`, one row per schema × service × version). Tables are owned by the
//! NOLOGIN role `strongroom_owner`; each service logs in as `strongroom_<service>`, which owns
//! nothing and holds only the grants its migrations give it, so it cannot bypass row-level
//! security or touch another service's tables. Migrations run under a transaction-scoped advisory
//! lock per schema, so replicas provisioning the same tenant at once apply each migration once.
//! A shipped migration is never edited: a changed checksum stops provisioning.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, PgPool};

use crate::outbox::{Actor, AuditRecord, Outcome};
use crate::tenancy::{Tenant, TenantSlug, connect_options};

/// The role that owns every Strongroom table.
pub const OWNER_ROLE: &str = "strongroom_owner";
/// Every service that has tables, in the order their roles are created.
pub const SERVICES: [&str; 4] = ["auth", "vault", "audit", "ledger"];

/// `strongroom_<service>`.
pub fn service_role(service: &str) -> String {
    format!("strongroom_{service}")
}

/// One migration file, `migrations/<NNNN>_<verb_noun>.sql`.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    /// The `NNNN` prefix.
    pub fn version(&self) -> i32 {
        self.name.split('_').next().and_then(|v| v.parse().ok()).unwrap_or(-1)
    }

    fn checksum(&self) -> Vec<u8> {
        Sha256::digest(self.sql.as_bytes()).to_vec()
    }
}

/// Embeds `<crate>/migrations/<dir>/<name>.sql`.
#[macro_export]
macro_rules! migration {
    ($dir:literal, $name:literal) => {
        $crate::migrate::Migration {
            name: $name,
            sql: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/", $dir, "/", $name, ".sql")),
        }
    };
}

/// A service's migrations: those of the `control` schema and those of every tenant schema.
#[derive(Debug, Clone, Copy)]
pub struct MigrationSet {
    pub service: &'static str,
    pub control: &'static [Migration],
    pub tenant: &'static [Migration],
}

/// kit's own tables: the tenant registry and each tenant's audit outbox.
pub const KIT: MigrationSet = MigrationSet {
    service: "kit",
    control: &[migration!("control", "0001_create_tenants"), migration!("control", "0002_create_outbox_notify")],
    tenant: &[
        migration!("tenant", "0001_create_audit_outbox"),
        migration!("tenant", "0002_notify_audit_outbox"),
        migration!("tenant", "0003_vacuum_audit_outbox"),
        migration!("tenant", "0004_wake_after_commit"),
        migration!("tenant", "0005_bound_audit_outbox"),
    ],
};

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration {service}/{name} in {schema} was edited after it was applied")]
    Edited { service: &'static str, name: &'static str, schema: String },
    #[error("migration {0} has no NNNN_ version prefix")]
    BadName(&'static str),
    #[error("tables without tenant_id and forced row-level security in {schema}: {tables}")]
    RlsMissing { schema: String, tables: String },
    #[error("tenant {0} is not registered")]
    UnknownTenant(String),
    #[error("audit record: {0}")]
    Audit(String),
    #[error("runtime database url has no user")]
    NoUser,
}

/// Runs bootstrap and migrations with the administrative connection.
#[derive(Clone)]
pub struct Migrator {
    admin: PgPool,
    set: MigrationSet,
}

impl std::fmt::Debug for Migrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migrator").field("service", &self.set.service).finish()
    }
}

fn lock_key(scope: &str) -> String {
    format!("SELECT pg_advisory_xact_lock(hashtext('strongroom.migrate'), hashtext('{scope}'))")
}

/// The advisory lock a provisioning of `slug` holds (tests hold it to stall a provisioning).
pub fn tenant_lock_sql(slug: &TenantSlug, session: bool) -> String {
    let f = if session { "pg_advisory_lock" } else { "pg_advisory_xact_lock" };
    format!("SELECT {f}(hashtext('strongroom.migrate'), hashtext('{}'))", slug.schema())
}

impl Migrator {
    pub fn connect_lazy(admin_url: &SecretString, set: MigrationSet) -> Result<Self, sqlx::Error> {
        let admin = PgPoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(10))
            .idle_timeout(Duration::from_secs(30))
            .connect_lazy_with(
                connect_options(admin_url)?
                    .application_name("strongroom-migrate")
                    .options([("client_min_messages", "warning")]),
            );
        Ok(Self { admin, set })
    }

    /// Roles, the `control` schema and its migrations. `runtime_url` names this service's login
    /// role; its password (if any) is set on the role.
    pub async fn bootstrap(&self, runtime_url: &SecretString) -> Result<(), MigrateError> {
        let url = url::Url::parse(runtime_url.expose_secret()).map_err(|_| MigrateError::NoUser)?;
        let user = url.username().to_owned();
        if user.is_empty() {
            return Err(MigrateError::NoUser);
        }
        let password = url.password().map(percent_decode);
        // Roles are cluster-wide; several databases (or replicas) may race on them.
        for attempt in 0..5 {
            match self.ensure_roles(&user, password.as_deref()).await {
                Ok(()) => break,
                Err(e) if attempt < 4 && is_concurrent_update(&e) => {
                    tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut tx = self.admin.begin().await?;
        exec(&mut tx, &lock_key("control")).await?;
        let roles = SERVICES.map(service_role).join(", ");
        let ddl = format!(
            "DO $$ BEGIN EXECUTE format('GRANT CREATE, CONNECT ON DATABASE %I TO {OWNER_ROLE}', current_database()); END $$;
             CREATE SCHEMA IF NOT EXISTS control AUTHORIZATION {OWNER_ROLE};
             GRANT USAGE ON SCHEMA control TO {roles};
             SET LOCAL ROLE {OWNER_ROLE};
             CREATE TABLE IF NOT EXISTS control.schema_migrations (
                 schema_name text NOT NULL,
                 service     text NOT NULL,
                 version     integer NOT NULL,
                 name        text NOT NULL,
                 checksum    bytea NOT NULL,
                 applied_at  timestamptz NOT NULL DEFAULT now(),
                 PRIMARY KEY (schema_name, service, version)
             );
             SET LOCAL search_path TO control;"
        );
        exec(&mut tx, &ddl).await?;
        for set in [&KIT, &self.set] {
            apply(&mut tx, "control", set.service, set.control).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn ensure_roles(&self, login: &str, password: Option<&str>) -> Result<(), sqlx::Error> {
        let mut conn = self.admin.acquire().await?;
        let mut wanted = vec![OWNER_ROLE.to_owned()];
        wanted.extend(SERVICES.map(service_role));
        for role in &wanted {
            let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
                .bind(role)
                .fetch_one(&mut *conn)
                .await?;
            if !exists {
                let create = format!(
                    "DO $$ BEGIN CREATE ROLE {role} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS; \
                     EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
                );
                exec(&mut conn, &create).await?;
            }
        }
        // The administrative user must be able to act as the owner (a superuser already can).
        exec(
            &mut conn,
            &format!(
                "DO $$ BEGIN IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) \
             AND NOT pg_has_role(current_user, '{OWNER_ROLE}', 'MEMBER') THEN \
             EXECUTE format('GRANT {OWNER_ROLE} TO %I', current_user); END IF; END $$"
            ),
        )
        .await?;
        if !wanted.iter().any(|r| r == login) {
            return Ok(());
        }
        let can_login: bool = sqlx::query_scalar("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1")
            .bind(login)
            .fetch_one(&mut *conn)
            .await?;
        if !can_login {
            exec(&mut conn, &format!("ALTER ROLE {login} LOGIN")).await?;
        }
        if let Some(password) = password {
            // format(%L) quotes the password server-side; it never becomes part of our SQL text.
            let stmt: String = sqlx::query_scalar("SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)")
                .bind(login)
                .bind(password)
                .fetch_one(&mut *conn)
                .await?;
            exec(&mut conn, &stmt).await?;
        }
        Ok(())
    }

    /// Creates the tenant's schema if needed and applies kit's and this service's pending tenant
    /// migrations. Returns the names of the migrations this call applied.
    /// `audit` is written to the tenant's outbox in the same transaction when anything was applied.
    pub async fn provision(&self, tenant: &Tenant, audit: Option<AuditRecord>) -> Result<Vec<String>, MigrateError> {
        let schema = tenant.slug.schema();
        let mut tx = self.admin.begin().await?;
        exec(&mut tx, &lock_key(&schema)).await?;
        let roles = SERVICES.map(service_role).join(", ");
        let scope = format!(
            "SET LOCAL ROLE {OWNER_ROLE};
             CREATE SCHEMA IF NOT EXISTS {schema};
             GRANT USAGE ON SCHEMA {schema} TO {roles};
             SET LOCAL search_path TO {schema};
             SET LOCAL strongroom.tenant_id TO '{}';",
            tenant.id.0.hyphenated()
        );
        exec(&mut tx, &scope).await?;
        let mut applied = apply(&mut tx, &schema, KIT.service, KIT.tenant).await?;
        applied.extend(apply(&mut tx, &schema, self.set.service, self.set.tenant).await?);
        verify_rls(&mut tx, &schema).await?;
        let recorded = !applied.is_empty() && audit.is_some();
        if let (false, Some(record)) = (applied.is_empty(), audit) {
            let record = record.detail("migrations", applied.clone());
            crate::outbox::insert(&mut tx, record).await.map_err(|e| MigrateError::Audit(e.to_string()))?;
        }
        tx.commit().await?;
        if recorded {
            // After the commit, as TenantTx::commit does.
            crate::outbox::send_wake(&self.admin, &[tenant.id.0]).await;
        }
        Ok(applied)
    }

    /// Looks a tenant up with the administrative connection.
    pub async fn registered_tenant(&self, slug: &TenantSlug) -> Result<Tenant, MigrateError> {
        let row: Option<(uuid::Uuid, String, chrono::DateTime<chrono::Utc>)> =
            sqlx::query_as("SELECT id, status, created_at FROM control.tenants WHERE slug = $1")
                .bind(slug.as_str())
                .fetch_optional(&self.admin)
                .await?;
        let (id, status, created_at) = row.ok_or_else(|| MigrateError::UnknownTenant(slug.to_string()))?;
        let status = match status.as_str() {
            "active" => crate::tenancy::TenantStatus::Active,
            "suspended" => crate::tenancy::TenantStatus::Suspended,
            _ => crate::tenancy::TenantStatus::Terminated,
        };
        Ok(Tenant { id: crate::TenantId(id), slug: slug.clone(), status, created_at })
    }

    /// Brings every registered tenant up to date (run at every start, so upgrades roll through).
    /// A tenant that fails is logged and counted and does not hold the others back. Returns
    /// `(tenants current, tenants failed)`.
    pub async fn provision_all(&self) -> Result<(usize, usize), MigrateError> {
        let slugs: Vec<String> =
            sqlx::query_scalar("SELECT slug FROM control.tenants WHERE status <> 'terminated' ORDER BY slug")
                .fetch_all(&self.admin)
                .await?;
        let (mut current, mut failed) = (0, 0);
        for slug in &slugs {
            let Ok(slug) = TenantSlug::parse(slug) else { continue };
            let result = async {
                let tenant = self.registered_tenant(&slug).await?;
                let audit = AuditRecord::new(
                    self.set.service,
                    Actor::Service(self.set.service.to_owned()),
                    "tenant.migrate",
                    &format!("tenant/{slug}"),
                    Outcome::Success,
                );
                self.provision(&tenant, Some(audit)).await
            };
            match result.await {
                Ok(applied) => {
                    current += 1;
                    if !applied.is_empty() {
                        tracing::info!(tenant = %slug, ?applied, "tenant migrated");
                    }
                }
                Err(e) => {
                    failed += 1;
                    crate::metrics::Metrics::global().event("tenant_migration_failed");
                    tracing::error!(tenant = %slug, error = %e, "tenant migration failed");
                }
            }
        }
        Ok((current, failed))
    }
}

async fn apply(
    conn: &mut PgConnection,
    schema: &str,
    service: &'static str,
    migrations: &'static [Migration],
) -> Result<Vec<String>, MigrateError> {
    let done: Vec<(i32, Vec<u8>)> = sqlx::query_as(
        "SELECT version, checksum FROM control.schema_migrations WHERE schema_name = $1 AND service = $2",
    )
    .bind(schema)
    .bind(service)
    .fetch_all(&mut *conn)
    .await?;
    let mut applied = Vec::new();
    for m in migrations {
        let version = m.version();
        if version < 0 {
            return Err(MigrateError::BadName(m.name));
        }
        if let Some((_, checksum)) = done.iter().find(|(v, _)| *v == version) {
            if *checksum != m.checksum() {
                return Err(MigrateError::Edited { service, name: m.name, schema: schema.to_owned() });
            }
            continue;
        }
        exec(&mut *conn, m.sql).await?;
        sqlx::query("INSERT INTO control.schema_migrations (schema_name, service, version, name, checksum) VALUES ($1, $2, $3, $4, $5)")
            .bind(schema)
            .bind(service)
            .bind(version)
            .bind(m.name)
            .bind(m.checksum())
            .execute(&mut *conn)
            .await?;
        applied.push(m.name.to_owned());
    }
    Ok(applied)
}

/// Every table of a tenant schema must carry `tenant_id` and enabled, forced row-level security
/// with at least one policy; a migration that forgets them fails provisioning instead of leaking rows.
/// (Whether the policy itself is right is for review and the tenancy tests, not for this check.)
async fn verify_rls(conn: &mut PgConnection, schema: &str) -> Result<(), MigrateError> {
    let bad: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
           AND (NOT c.relrowsecurity OR NOT c.relforcerowsecurity
                OR NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
                OR NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid))
         ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(&mut *conn)
    .await?;
    if bad.is_empty() {
        Ok(())
    } else {
        Err(MigrateError::RlsMissing { schema: schema.to_owned(), tables: bad.join(", ") })
    }
}

fn is_concurrent_update(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            matches!(db.code().as_deref(), Some("XX000" | "40001" | "40P01" | "23505"))
        }
        _ => false,
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Runs SQL text (possibly several statements) with the simple query protocol.
pub(crate) async fn exec(conn: &mut PgConnection, sql: &str) -> Result<(), sqlx::Error> {
    sqlx::Executor::execute(conn, sql).await.map(|_| ())
}

/// Test helper: every `.sql` file under `<crate>/migrations/{control,tenant}` must be embedded in
/// `set` (a file that is not embedded would silently never run).
///
/// # Panics
/// When a file is missing from `set` or an embedded one has no version prefix.
#[allow(clippy::panic)]
pub fn assert_all_embedded(crate_dir: &str, set: &MigrationSet) {
    for (dir, embedded) in [("control", set.control), ("tenant", set.tenant)] {
        let path = std::path::Path::new(crate_dir).join("migrations").join(dir);
        let mut files: Vec<String> = std::fs::read_dir(&path)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".sql")).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        let names: Vec<String> = embedded.iter().map(|m| m.name.to_owned()).collect();
        assert_eq!(files, names, "migrations/{dir} and the embedded list differ");
        for m in embedded {
            assert!(m.version() > 0, "{} has no NNNN_ prefix", m.name);
        }
    }
}
