//! Schema bootstrap and per-tenant migrations.
//!
//! Owns the `control` schema, the database roles and the migration bookkeeping
//! (`control.schema_migrations`, one row per schema × service × version). Tables are owned by the
//! NOLOGIN role `strongroom_owner`; each service logs in as `strongroom_<service>`, which owns
//! nothing and holds only the grants its migrations give it, so it cannot bypass row-level
//! security or touch another service's tables.
//!
//! [`Migrator`] holds the administrative URL and runs only in the short-lived operator steps
//! (`strongroom migrate`, `strongroom tenant create`); a running service never holds it and only
//! checks, with [`pending`], that the schema is as current as its build. Migrations run under a
//! transaction-scoped advisory lock per schema, so two operator steps at once apply each migration
//! once. A shipped migration is never edited: a changed checksum stops provisioning.

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
    control: &[
        migration!("control", "0001_create_tenants"),
        migration!("control", "0002_create_outbox_notify"),
        migration!("control", "0003_register_tenants_by_operator_only"),
        migration!("control", "0004_notify_tenant_status"),
        migration!("control", "0005_create_tenant_terminations"),
    ],
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
    #[error("a login url is not a postgres:// url with a user")]
    NoUser,
    #[error("{0} is not a service's login role (strongroom_<service>)")]
    NotAServiceRole(String),
    #[error("tenant {0} is terminated")]
    Terminated(String),
    #[error("tenant {0} was purged; its slug is not used again")]
    Purged(String),
    #[error("tenant {slug} cannot be purged yet: {why}")]
    NotPurgeable { slug: String, why: String },
    #[error("{0}")]
    Journal(String),
    #[error("{failed} tenant(s) could not be migrated ({current} current): {each}")]
    TenantsFailed { failed: usize, current: usize, each: String },
}

/// The name the operator's migration step writes its audit records under.
pub const MIGRATE_SERVICE: &str = "migrate";

/// The audit record of the operator's registration of tenant `slug` (`strongroom tenant create`).
pub fn tenant_created(slug: &TenantSlug) -> AuditRecord {
    AuditRecord::new(
        MIGRATE_SERVICE,
        Actor::Service("operator".into()),
        "tenant.create",
        &format!("tenant/{slug}"),
        Outcome::Success,
    )
}

/// Runs bootstrap, migrations and tenant registration with the administrative connection, for
/// every service's [`MigrationSet`] at once (kit's own set is always applied first).
#[derive(Clone)]
pub struct Migrator {
    admin: PgPool,
    sets: Vec<MigrationSet>,
}

impl std::fmt::Debug for Migrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migrator").field("services", &self.sets.iter().map(|s| s.service).collect::<Vec<_>>()).finish()
    }
}

fn lock_key(scope: &str) -> String {
    format!("SELECT pg_advisory_xact_lock(hashtext('strongroom.migrate'), hashtext('{scope}'))")
}

impl Migrator {
    pub fn connect_lazy(admin_url: &SecretString, sets: &[MigrationSet]) -> Result<Self, sqlx::Error> {
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
        Ok(Self { admin, sets: sets.to_vec() })
    }

    /// Kit's set, then the services' in the order given.
    fn all_sets(&self) -> impl Iterator<Item = &MigrationSet> {
        std::iter::once(&KIT).chain(self.sets.iter())
    }

    /// Roles, the `control` schema and its migrations. Every service role may log in; each of
    /// `login_urls` (a service's runtime URL) sets its role's password when it carries one.
    /// Returns the control migrations this call applied.
    pub async fn bootstrap(&self, login_urls: &[SecretString]) -> Result<Vec<String>, MigrateError> {
        let mut logins = Vec::new();
        for runtime_url in login_urls {
            let url = url::Url::parse(runtime_url.expose_secret()).map_err(|_| MigrateError::NoUser)?;
            let user = url.username().to_owned();
            if !SERVICES.iter().any(|s| service_role(s) == user) {
                return Err(MigrateError::NotAServiceRole(user));
            }
            logins.push((user, url.password().map(percent_decode)));
        }
        // Roles are cluster-wide; several databases (or operator steps) may race on them.
        for attempt in 0..5 {
            match self.ensure_roles(&logins).await {
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
             -- Services read it to refuse serving a schema older than their build.
             GRANT SELECT ON control.schema_migrations TO {roles};
             SET LOCAL search_path TO control;"
        );
        exec(&mut tx, &ddl).await?;
        let mut applied = Vec::new();
        for set in self.all_sets() {
            applied.extend(apply(&mut tx, "control", set.service, set.control).await?);
        }
        tx.commit().await?;
        Ok(applied)
    }

    async fn ensure_roles(&self, logins: &[(String, Option<String>)]) -> Result<(), sqlx::Error> {
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
        for login in SERVICES.map(service_role) {
            let can_login: bool = sqlx::query_scalar("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1")
                .bind(&login)
                .fetch_one(&mut *conn)
                .await?;
            if !can_login {
                exec(&mut conn, &format!("ALTER ROLE {login} LOGIN")).await?;
            }
        }
        for (login, password) in logins {
            let Some(password) = password else { continue };
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

    /// Creates the tenant's schema if needed and applies every set's pending tenant migrations.
    /// Returns the names of the migrations this call applied. `audit` is written to the tenant's
    /// outbox in the same transaction when anything was applied.
    pub async fn provision(&self, tenant: &Tenant, audit: Option<AuditRecord>) -> Result<Vec<String>, MigrateError> {
        let mut tx = self.admin.begin().await?;
        exec(&mut tx, &lock_key(&tenant.slug.schema())).await?;
        let applied = self.provision_in(&mut tx, tenant).await?;
        self.commit_with_audit(tx, tenant, &applied, audit).await?;
        Ok(applied)
    }

    /// Registers `slug` in `control.tenants` and creates its schema with every set's tables, in
    /// one transaction: a tenant is never visible to the services half provisioned. Idempotent:
    /// for a tenant already registered it brings the schema up to date. Returns the tenant,
    /// whether this call registered it, and the migrations it applied. `audit` (e.g.
    /// `tenant.create`) is written in the same transaction when anything changed.
    pub async fn register(
        &self,
        slug: &TenantSlug,
        audit: Option<AuditRecord>,
    ) -> Result<(Tenant, bool, Vec<String>), MigrateError> {
        let mut tx = self.admin.begin().await?;
        exec(&mut tx, &lock_key(&slug.schema())).await?;
        let purged: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM control.tenant_tombstones WHERE slug = $1)")
                .bind(slug.as_str())
                .fetch_one(&mut *tx)
                .await?;
        if purged {
            return Err(MigrateError::Purged(slug.to_string()));
        }
        let inserted: Option<(uuid::Uuid,)> =
            sqlx::query_as("INSERT INTO control.tenants (slug) VALUES ($1) ON CONFLICT (slug) DO NOTHING RETURNING id")
                .bind(slug.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let tenant = registered(&mut tx, slug).await?;
        if tenant.status == crate::tenancy::TenantStatus::Terminated {
            return Err(MigrateError::Terminated(slug.to_string()));
        }
        let applied = self.provision_in(&mut tx, &tenant).await?;
        let audit = audit.filter(|_| inserted.is_some() || !applied.is_empty());
        self.commit_with_audit(tx, &tenant, &applied, audit).await?;
        Ok((tenant, inserted.is_some(), applied))
    }

    async fn provision_in(&self, tx: &mut PgConnection, tenant: &Tenant) -> Result<Vec<String>, MigrateError> {
        let schema = tenant.slug.schema();
        let roles = SERVICES.map(service_role).join(", ");
        let scope = format!(
            "SET LOCAL ROLE {OWNER_ROLE};
             CREATE SCHEMA IF NOT EXISTS {schema};
             GRANT USAGE ON SCHEMA {schema} TO {roles};
             SET LOCAL search_path TO {schema};
             SET LOCAL strongroom.tenant_id TO '{}';",
            tenant.id.0.hyphenated()
        );
        exec(&mut *tx, &scope).await?;
        let mut applied = Vec::new();
        for set in self.all_sets() {
            applied.extend(apply(&mut *tx, &schema, set.service, set.tenant).await?);
        }
        verify_rls(&mut *tx, &schema).await?;
        Ok(applied)
    }

    async fn commit_with_audit(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
        tenant: &Tenant,
        applied: &[String],
        audit: Option<AuditRecord>,
    ) -> Result<(), MigrateError> {
        let recorded = audit.is_some();
        if let Some(record) = audit {
            let record = if applied.is_empty() { record } else { record.detail("migrations", applied.to_vec()) };
            exec(&mut tx, &format!("SET LOCAL search_path TO {}", tenant.slug.schema())).await?;
            crate::outbox::insert(&mut tx, record).await.map_err(|e| MigrateError::Audit(e.to_string()))?;
        }
        tx.commit().await?;
        if recorded {
            // After the commit, as TenantTx::commit does.
            crate::outbox::send_wake(&self.admin, &[tenant.id.0]).await;
        }
        Ok(())
    }

    /// Deletes a terminated tenant whose export bundle is signed, once its export window has ended
    /// (or at once with `early`, when the bundle was fetched): in one transaction, keeps a
    /// tombstone (slug, id, created and terminated times, the final checkpoint, the manifest's
    /// digest, who terminated and who purged it), deletes every row of `control` that names the
    /// tenant (its termination and bundle included) and drops the tenant's schema with all it held
    /// (the wrapped tenant, subject and period keys with it). Returns the tombstone.
    /// With `journal`, the purge (its tombstone) is journaled before it commits, and nothing is
    /// deleted when that fails.
    pub async fn purge(
        &self,
        slug: &TenantSlug,
        purged_by: &str,
        early: bool,
        journal: Option<&crate::journal::Journal>,
    ) -> Result<Tombstone, MigrateError> {
        let not_yet = |why: &str| MigrateError::NotPurgeable { slug: slug.to_string(), why: why.to_owned() };
        let mut tx = self.admin.begin().await?;
        exec(&mut tx, &lock_key(&slug.schema())).await?;
        let tenant = registered(&mut tx, slug).await?;
        if tenant.status != crate::tenancy::TenantStatus::Terminated {
            return Err(not_yet("it is not terminated (strongroom tenant terminate)"));
        }
        let row: Option<PurgeState> = sqlx::query_as(
            "SELECT terminated_by, manifest, manifest_sha256, export_until <= now() AS window_over,
                        fetched_at IS NOT NULL AS fetched, terminated_at
                 FROM control.tenant_terminations WHERE tenant_id = $1 FOR UPDATE",
        )
        .bind(tenant.id.0)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(PurgeState { terminated_by, manifest, manifest_sha256, window_over, fetched, terminated_at }) = row
        else {
            return Err(not_yet("it has no termination record"));
        };
        let Some(manifest) = manifest else { return Err(not_yet("its export bundle is not complete")) };
        let allowed = window_over || (early && fetched);
        if !allowed {
            return Err(not_yet(if early {
                "the export bundle has not been fetched (strongroom tenant export)"
            } else {
                "its export window has not ended (--purge-now after fetching the export)"
            }));
        }
        let final_checkpoint = serde_json::from_str::<serde_json::Value>(&manifest)
            .ok()
            .and_then(|m| m["final_checkpoint"].as_str().map(str::to_owned));
        let tombstone: Tombstone = sqlx::query_as(
            "INSERT INTO control.tenant_tombstones
                 (tenant_id, slug, created_at, terminated_at, terminated_by, purged_by, final_checkpoint, manifest_sha256)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             RETURNING tenant_id, slug, created_at, terminated_at, terminated_by, purged_at, purged_by,
                       final_checkpoint, manifest_sha256",
        )
        .bind(tenant.id.0)
        .bind(slug.as_str())
        .bind(tenant.created_at)
        .bind(terminated_at)
        .bind(&terminated_by)
        .bind(purged_by)
        .bind(final_checkpoint)
        .bind(manifest_sha256)
        .fetch_one(&mut *tx)
        .await?;
        erase_tenant(&mut tx, &tenant).await?;
        if let Some(journal) = journal {
            journal
                .append(tenant.id.0, slug.as_str(), tombstone.erasure())
                .await
                .map_err(|e| MigrateError::Journal(e.to_string()))?;
        }
        tx.commit().await?;
        Ok(tombstone)
    }

    /// A transaction of the administrative connection scoped to tenant `id` (as a service's
    /// would be), if it is registered: for work on a database no service serves yet, such as
    /// replaying the erasure journal on a restored one.
    pub async fn begin_tenant(&self, id: uuid::Uuid) -> Result<Option<crate::TenantTx>, MigrateError> {
        let slug: Option<String> = sqlx::query_scalar("SELECT slug FROM control.tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.admin)
            .await?;
        let Some(slug) = slug.and_then(|s| TenantSlug::parse(&s).ok()) else { return Ok(None) };
        let tenant = self.registered_tenant(&slug).await?;
        let begin = format!(
            "BEGIN; SET LOCAL search_path TO {}; SET LOCAL strongroom.tenant_id TO '{}'",
            slug.schema(),
            id.hyphenated()
        );
        let tx = self.admin.begin_with(begin).await?;
        Ok(Some(crate::TenantTx::from_parts(tx, tenant, crate::outbox::Waker::new(self.admin.clone()))))
    }

    /// Replays a termination from the erasure journal: a tenant the restored database still has
    /// live is terminated again as it was (recipient, reason, who, window), its export parts
    /// pending so the services export what the restored database holds, and its log gets
    /// `tenant.terminate.replay`. False when it is terminated already or not registered.
    pub async fn replay_termination(&self, entry: &crate::journal::Entry, by: &str) -> Result<bool, MigrateError> {
        let crate::journal::Erasure::TenantTerminate { recipient, reason, terminated_by, export_until } =
            &entry.erasure
        else {
            return Ok(false);
        };
        let Some(mut tx) = self.begin_tenant(entry.tenant_id).await? else { return Ok(false) };
        let flipped = tx
            .execute(
                sqlx::query(
                    "UPDATE control.tenants SET status = 'terminated', terminated_at = $2 WHERE id = $1 AND status <> 'terminated'",
                )
                .bind(entry.tenant_id)
                .bind(entry.time),
            )
            .await
            .map_err(|e| MigrateError::Journal(e.to_string()))?;
        if flipped == 0 {
            return Ok(false);
        }
        let statements = [
            sqlx::query(
                "INSERT INTO control.tenant_terminations
                     (tenant_id, slug, recipient, reason, terminated_by, terminated_at, export_until)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            )
            .bind(entry.tenant_id)
            .bind(&entry.tenant_slug)
            .bind(recipient)
            .bind(reason)
            .bind(terminated_by)
            .bind(entry.time)
            .bind(export_until),
            sqlx::query(
                "INSERT INTO control.tenant_export_parts (tenant_id, part) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
            )
            .bind(entry.tenant_id)
            .bind(crate::export::PARTS.map(str::to_owned).to_vec()),
        ];
        for statement in statements {
            tx.execute(statement).await.map_err(|e| MigrateError::Journal(e.to_string()))?;
        }
        let record = AuditRecord::new(
            MIGRATE_SERVICE,
            Actor::Service(by.to_owned()),
            "tenant.terminate.replay",
            &format!("tenant/{}", entry.tenant_slug),
            Outcome::Success,
        )
        .detail("journal_entry", entry.id.to_string())
        .detail("terminated_at", entry.time.to_rfc3339())
        .detail("terminated_by", terminated_by.clone())
        .detail("recipient", recipient.clone());
        tx.record(record).await.map_err(|e| MigrateError::Journal(e.to_string()))?;
        tx.commit().await.map_err(|e| MigrateError::Journal(e.to_string()))?;
        Ok(true)
    }

    /// Replays a purge from the erasure journal: the tenant (if the restored database has it) is
    /// deleted as the purge deleted it, whatever its export's state, and the tombstone it kept is
    /// written again. False when the tombstone is there already.
    pub async fn replay_purge(&self, entry: &crate::journal::Entry) -> Result<bool, MigrateError> {
        let crate::journal::Erasure::TenantPurge {
            created_at,
            terminated_at,
            terminated_by,
            purged_by,
            final_checkpoint,
            manifest_sha256,
        } = &entry.erasure
        else {
            return Ok(false);
        };
        let slug = TenantSlug::parse(&entry.tenant_slug).map_err(|e| MigrateError::Journal(e.to_string()))?;
        let mut tx = self.admin.begin().await?;
        exec(&mut tx, &lock_key(&slug.schema())).await?;
        let inserted = sqlx::query(
            "INSERT INTO control.tenant_tombstones
                 (tenant_id, slug, created_at, terminated_at, terminated_by, purged_at, purged_by, final_checkpoint, manifest_sha256)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
        )
        .bind(entry.tenant_id)
        .bind(slug.as_str())
        .bind(created_at)
        .bind(terminated_at)
        .bind(terminated_by)
        .bind(entry.time)
        .bind(purged_by)
        .bind(final_checkpoint)
        .bind(manifest_sha256)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if let Ok(tenant) = registered(&mut tx, &slug).await
            && tenant.id.0 == entry.tenant_id
        {
            erase_tenant(&mut tx, &tenant).await?;
        }
        tx.commit().await?;
        Ok(inserted == 1)
    }

    /// The ids of a registered tenant's sessions and API keys (their revocation markers in Redis
    /// are removed at the purge).
    pub async fn credential_ids(&self, slug: &TenantSlug) -> Result<Vec<uuid::Uuid>, MigrateError> {
        let schema = slug.schema();
        Ok(sqlx::query_scalar(&format!("SELECT id FROM {schema}.sessions UNION ALL SELECT id FROM {schema}.api_keys"))
            .fetch_all(&self.admin)
            .await?)
    }

    /// Writes the record `record` makes for each tenant that is not terminated into that tenant's
    /// outbox (one transaction each), e.g. `backup.restore` after a restore; audit-svc logs them
    /// when it starts. Returns how many tenants got one.
    pub async fn record_in_every_tenant(&self, record: impl Fn(&Tenant) -> AuditRecord) -> Result<usize, MigrateError> {
        let slugs: Vec<String> =
            sqlx::query_scalar("SELECT slug FROM control.tenants WHERE status <> 'terminated' ORDER BY slug")
                .fetch_all(&self.admin)
                .await?;
        let mut recorded = 0;
        for slug in slugs.iter().filter_map(|s| TenantSlug::parse(s).ok()) {
            let tenant = self.registered_tenant(&slug).await?;
            let mut tx = self.admin.begin().await?;
            let scope = format!(
                "SET LOCAL search_path TO {}; SET LOCAL strongroom.tenant_id TO '{}'",
                slug.schema(),
                tenant.id.0.hyphenated()
            );
            exec(&mut tx, &scope).await?;
            crate::outbox::insert(&mut tx, record(&tenant)).await.map_err(|e| MigrateError::Audit(e.to_string()))?;
            tx.commit().await?;
            recorded += 1;
        }
        Ok(recorded)
    }

    /// The terminated tenants whose export window has ended and whose bundle is signed
    /// (`strongroom tenant purge --due`).
    pub async fn purge_due(&self) -> Result<Vec<TenantSlug>, MigrateError> {
        let slugs: Vec<String> = sqlx::query_scalar(
            "SELECT slug FROM control.tenant_terminations WHERE export_until <= now() AND manifest IS NOT NULL ORDER BY slug",
        )
        .fetch_all(&self.admin)
        .await?;
        Ok(slugs.iter().filter_map(|s| TenantSlug::parse(s).ok()).collect())
    }

    /// The tombstone of a purged tenant.
    pub async fn tombstone(&self, slug: &TenantSlug) -> Result<Option<Tombstone>, MigrateError> {
        Ok(sqlx::query_as(
            "SELECT tenant_id, slug, created_at, terminated_at, terminated_by, purged_at, purged_by,
                    final_checkpoint, manifest_sha256
             FROM control.tenant_tombstones WHERE slug = $1",
        )
        .bind(slug.as_str())
        .fetch_optional(&self.admin)
        .await?)
    }

    /// Looks a tenant up with the administrative connection.
    pub async fn registered_tenant(&self, slug: &TenantSlug) -> Result<Tenant, MigrateError> {
        let mut conn = self.admin.acquire().await?;
        registered(&mut conn, slug).await
    }

    /// The whole operator step (`strongroom migrate`): [`Self::bootstrap`], then
    /// [`Self::provision_all`]. Refuses when any tenant failed (after trying all), naming each.
    /// Returns the control migrations applied and how many tenants are current.
    pub async fn migrate(&self, login_urls: &[SecretString]) -> Result<(Vec<String>, usize), MigrateError> {
        let control = self.bootstrap(login_urls).await?;
        let (current, failed) = self.provision_all().await?;
        if failed.is_empty() {
            return Ok((control, current));
        }
        let each: Vec<String> = failed.iter().map(|(slug, e)| format!("{slug}: {e}")).collect();
        Err(MigrateError::TenantsFailed { failed: failed.len(), current, each: each.join("; ") })
    }

    /// Brings every registered tenant up to date (run by `strongroom migrate` at every upgrade).
    /// A tenant that fails is logged and counted and does not hold the others back. Returns
    /// the number of tenants now current and, for each that failed, its slug and the error.
    pub async fn provision_all(&self) -> Result<(usize, Vec<(String, String)>), MigrateError> {
        let slugs: Vec<String> =
            sqlx::query_scalar("SELECT slug FROM control.tenants WHERE status <> 'terminated' ORDER BY slug")
                .fetch_all(&self.admin)
                .await?;
        let (mut current, mut failed) = (0, Vec::new());
        for slug in &slugs {
            let Ok(slug) = TenantSlug::parse(slug) else { continue };
            let result = async {
                let tenant = self.registered_tenant(&slug).await?;
                let audit = AuditRecord::new(
                    MIGRATE_SERVICE,
                    Actor::Service(MIGRATE_SERVICE.to_owned()),
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
                    failed.push((slug.to_string(), e.to_string()));
                    crate::metrics::Metrics::global().event("tenant_migration_failed");
                    tracing::error!(tenant = %slug, error = %e, "tenant migration failed");
                }
            }
        }
        Ok((current, failed))
    }
}

/// A termination as the purge checks it.
#[derive(sqlx::FromRow)]
struct PurgeState {
    terminated_by: String,
    manifest: Option<String>,
    manifest_sha256: Option<String>,
    window_over: bool,
    fetched: bool,
    terminated_at: chrono::DateTime<chrono::Utc>,
}

/// What stays of a purged tenant (`control.tenant_tombstones`).
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct Tombstone {
    pub tenant_id: uuid::Uuid,
    pub slug: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub terminated_at: chrono::DateTime<chrono::Utc>,
    pub terminated_by: String,
    pub purged_at: chrono::DateTime<chrono::Utc>,
    pub purged_by: String,
    pub final_checkpoint: Option<String>,
    pub manifest_sha256: Option<String>,
}

impl Tombstone {
    /// The erasure journal's entry of this purge.
    pub fn erasure(&self) -> crate::journal::Erasure {
        crate::journal::Erasure::TenantPurge {
            created_at: self.created_at,
            terminated_at: self.terminated_at,
            terminated_by: self.terminated_by.clone(),
            purged_by: self.purged_by.clone(),
            final_checkpoint: self.final_checkpoint.clone(),
            manifest_sha256: self.manifest_sha256.clone(),
        }
    }
}

/// Deletes a tenant in `tx` as a purge does: every `control` row naming it (found by column, so
/// whichever service made the table; the termination's parts and files go by cascade), its schema
/// with everything in it, its migration rows and its registry row, and has every replica forget its
/// cached keys. The tombstone stays.
async fn erase_tenant(tx: &mut PgConnection, tenant: &Tenant) -> Result<(), MigrateError> {
    let slug = &tenant.slug;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', c.table_schema, c.table_name) FROM information_schema.columns c
         JOIN information_schema.tables t USING (table_schema, table_name)
         WHERE c.table_schema = 'control' AND c.column_name = 'tenant_id' AND t.table_type = 'BASE TABLE'
           AND c.table_name NOT IN ('tenant_tombstones', 'tenants')
         ORDER BY c.table_name = 'tenant_terminations', 1",
    )
    .fetch_all(&mut *tx)
    .await?;
    for table in tables {
        sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1")).bind(tenant.id.0).execute(&mut *tx).await?;
    }
    exec(tx, &format!("DROP SCHEMA IF EXISTS {} CASCADE", slug.schema())).await?;
    sqlx::query("DELETE FROM control.schema_migrations WHERE schema_name = $1")
        .bind(slug.schema())
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM control.tenants WHERE id = $1").bind(tenant.id.0).execute(&mut *tx).await?;
    // Every replica of every service drops the tenant's cached keys as this commits.
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(crate::tenancy::KEY_INVALIDATION_CHANNEL)
        .bind(tenant.id.0.to_string())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn registered(conn: &mut PgConnection, slug: &TenantSlug) -> Result<Tenant, MigrateError> {
    let row: Option<(uuid::Uuid, String, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT id, status, created_at FROM control.tenants WHERE slug = $1")
            .bind(slug.as_str())
            .fetch_optional(&mut *conn)
            .await?;
    let (id, status, created_at) = row.ok_or_else(|| MigrateError::UnknownTenant(slug.to_string()))?;
    let status = match status.as_str() {
        "active" => crate::tenancy::TenantStatus::Active,
        "suspended" => crate::tenancy::TenantStatus::Suspended,
        _ => crate::tenancy::TenantStatus::Terminated,
    };
    Ok(Tenant { id: crate::TenantId(id), slug: slug.clone(), status, created_at })
}

/// What a service built with `set` needs and the database lacks: each missing (or edited)
/// migration of the `control` schema and of every registered tenant's schema, as
/// `<schema>: <service>/<name>`, at most `limit` of them. Runs with the service's own login role
/// (which may read `control.schema_migrations`); an empty answer means the service may serve.
pub async fn pending(pool: &PgPool, set: &MigrationSet, limit: usize) -> Result<Vec<String>, sqlx::Error> {
    let services = vec![KIT.service.to_owned(), set.service.to_owned()];
    let done: Vec<(String, String, i32, Vec<u8>)> = sqlx::query_as(
        "SELECT schema_name, service, version, checksum FROM control.schema_migrations WHERE service = ANY($1)",
    )
    .bind(&services)
    .fetch_all(pool)
    .await?;
    let done: std::collections::HashMap<(&str, &str, i32), &[u8]> = done
        .iter()
        .map(|(schema, service, v, sum)| ((schema.as_str(), service.as_str(), *v), sum.as_slice()))
        .collect();
    let tenants: Vec<String> =
        sqlx::query_scalar("SELECT slug FROM control.tenants WHERE status <> 'terminated' ORDER BY slug")
            .fetch_all(pool)
            .await?;
    let mut schemas = vec![("control".to_owned(), true)];
    schemas.extend(tenants.iter().filter_map(|s| TenantSlug::parse(s).ok()).map(|s| (s.schema(), false)));
    let mut missing = Vec::new();
    for (schema, control) in &schemas {
        for s in [&KIT, set] {
            for m in if *control { s.control } else { s.tenant } {
                let state = match done.get(&(schema.as_str(), s.service, m.version())) {
                    None => "missing",
                    Some(sum) if *sum != m.checksum().as_slice() => "edited",
                    Some(_) => continue,
                };
                if missing.len() == limit {
                    return Ok(missing);
                }
                missing.push(format!("{schema}: {}/{} ({state})", s.service, m.name));
            }
        }
    }
    Ok(missing)
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
