//! Tenancy-aware PostgreSQL access. Owns the tenant registry reads and [`TenantTx`], the only way
//! Rust code reaches tenant data: every transaction starts with `SET LOCAL search_path` and
//! `SET LOCAL strongroom.tenant_id`, so the schema and the row-level-security policies of the
//! tenant apply to everything that follows. A missing setting matches no row. Slugs are validated
//! before they reach SQL text; ids are UUIDs, formatted by us, never by the caller.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::query::{Query, QueryAs, QueryScalar};
use sqlx::{FromRow, PgConnection, PgPool, Postgres, Transaction};
use tokio::sync::RwLock;
use uuid::Uuid;

use crate::error::{ApiError, ErrorCode};
use crate::principal::Principal;

/// The LISTEN/NOTIFY channel on which vault-svc says (payload: a tenant id, after commit) that a
/// tenant's keys were rotated or destroyed: every process caching key material derived from them
/// (vault-svc's keyring, audit-svc's pseudonym keys) forgets the tenant's.
pub const KEY_INVALIDATION_CHANNEL: &str = "strongroom_vault_keys";

/// A validated tenant slug, `^[a-z][a-z0-9_]{2,39}$`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantSlug(String);

impl TenantSlug {
    /// The tenant an MFA challenge token names: auth-svc issues them as `srm_<slug>.<random>`, so
    /// that completing a login needs only the token and the code. `None` for any other shape.
    pub fn of_mfa_token(token: &str) -> Option<Self> {
        Self::named_by(token, "srm_")
    }

    /// The tenant a refresh token names (`srr_<slug>.<random>`), so that a refresh needs only the
    /// token. `None` for any other shape, such as a token issued before tokens named their tenant.
    pub fn of_refresh_token(token: &str) -> Option<Self> {
        Self::named_by(token, "srr_")
    }

    fn named_by(token: &str, prefix: &str) -> Option<Self> {
        let (slug, _) = token.strip_prefix(prefix)?.split_once('.')?;
        Self::parse(slug).ok()
    }

    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let bytes = raw.as_bytes();
        let ok = (3..=40).contains(&bytes.len())
            && bytes[0].is_ascii_lowercase()
            && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ApiError::invalid_field("tenant_slug", "must match ^[a-z][a-z0-9_]{2,39}$"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tenant's schema, `t_<slug>`; safe to splice into SQL because the slug was validated.
    pub fn schema(&self) -> String {
        format!("t_{}", self.0)
    }
}

impl fmt::Display for TenantSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantSlug({})", self.0)
    }
}

/// A tenant's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct TenantId(pub Uuid);

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantStatus {
    Active,
    Suspended,
    Terminated,
}

impl TenantStatus {
    fn parse(s: &str) -> Self {
        match s {
            "active" => Self::Active,
            "suspended" => Self::Suspended,
            _ => Self::Terminated,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Terminated => "terminated",
        }
    }
}

/// A registered tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub slug: TenantSlug,
    pub status: TenantStatus,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(sqlx::FromRow)]
struct TenantRow {
    id: Uuid,
    slug: String,
    status: String,
    created_at: chrono::DateTime<chrono::Utc>,
}

impl TryFrom<TenantRow> for Tenant {
    type Error = ApiError;

    fn try_from(row: TenantRow) -> Result<Self, ApiError> {
        Ok(Tenant {
            id: TenantId(row.id),
            slug: TenantSlug::parse(&row.slug)?,
            status: TenantStatus::parse(&row.status),
            created_at: row.created_at,
        })
    }
}

const REGISTRY_TTL: Duration = Duration::from_secs(10);

/// Where a change of a tenant's registry row is announced (payload: its slug), by a trigger on
/// `control.tenants` (kit control migration 0004).
pub const TENANT_REGISTRY_CHANNEL: &str = "strongroom_tenant_registry";

/// The service's runtime connection pool (its own role), reachable only through [`TenantTx`] and
/// the registry reads below.
#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    health: PgPool,
    /// The tenant registry listener's one connection, apart from `pool` (a `PgListener` keeps the
    /// connection it takes for good: on the runtime pool it would take one of its permits).
    registry_notices: PgPool,
    registry: Arc<RwLock<HashMap<TenantSlug, (Tenant, Instant)>>>,
    waker: crate::outbox::Waker,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

/// A pooled connection idle for at least this long is pinged before it is handed out.
const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// Connection options from a URL; the URL (with its password) never reaches a log or an error.
pub fn connect_options(url: &SecretString) -> Result<PgConnectOptions, sqlx::Error> {
    url.expose_secret()
        .parse::<PgConnectOptions>()
        .map_err(|_| sqlx::Error::Configuration("database url cannot be parsed".into()))
}

impl Db {
    /// Opens the pool lazily: the service starts (and reports NOT_SERVING) while PostgreSQL is down.
    pub fn connect_lazy(url: &SecretString, max_connections: u32) -> Result<Self, sqlx::Error> {
        let options = connect_options(url)?.application_name("strongroom");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(5))
            .idle_timeout(Duration::from_secs(60))
            // sqlx pings every connection it hands out by default: a round trip to PostgreSQL
            // before each transaction, on the request's path (a refresh grant is BEGIN, one
            // statement and COMMIT: it waited for four round trips instead of three). Only a
            // connection idle for a while is pinged now; one that went stale sooner (PostgreSQL
            // restarted that second) fails its first statement, which reads as
            // DATABASE_UNAVAILABLE, retryable, and is dropped from the pool. (sqlx also pings a
            // connection as it takes it back, after the request; that one stays.)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IDLE_AFTER {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(options.clone());
        // Health checks use a connection of their own, so a busy pool does not read as an outage.
        let health = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(3))
            .idle_timeout(Duration::from_secs(60))
            .connect_lazy_with(options.clone());
        let registry_notices = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options);
        let waker = crate::outbox::Waker::new(pool.clone());
        Ok(Self { pool, health, registry_notices, registry: Arc::default(), waker })
    }

    /// The pool, for tables of the `control` schema only. Tenant tables stay unreachable through
    /// it: without `SET LOCAL strongroom.tenant_id` their row-level security matches no row.
    pub fn control_pool(&self) -> &PgPool {
        &self.pool
    }

    /// Refuses to serve through a login role that could bypass row-level security: it must be
    /// `strongroom_<service>`, not a superuser, without BYPASSRLS and not a member of the owner.
    pub async fn check_runtime_role(&self, service: &str) -> Result<(), String> {
        let expected = crate::migrate::service_role(service);
        let (user, unsafe_role): (String, bool) = sqlx::query_as(
            "SELECT current_user::text, rolsuper OR rolbypassrls OR pg_has_role(current_user, $1, 'MEMBER') \
             FROM pg_roles WHERE rolname = current_user",
        )
        .bind(crate::migrate::OWNER_ROLE)
        .fetch_one(&self.health)
        .await
        .map_err(|e| format!("cannot inspect the runtime role: {e}"))?;
        if user != expected {
            return Err(format!("database.url logs in as {user}, expected {expected}"));
        }
        if unsafe_role {
            return Err(format!("{user} is a superuser, has BYPASSRLS or is a member of the owner role"));
        }
        Ok(())
    }

    /// True when a connection can be had and answers.
    pub async fn ping(&self) -> bool {
        let check = async {
            let mut conn = self.health.acquire().await?;
            sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&mut *conn).await
        };
        matches!(tokio::time::timeout(Duration::from_secs(3), check).await, Ok(Ok(1)))
    }

    /// Looks a tenant up in `control.tenants` (cached for a few seconds).
    pub async fn tenant(&self, slug: &TenantSlug) -> Result<Tenant, ApiError> {
        if let Some((tenant, at)) = self.registry.read().await.get(slug)
            && at.elapsed() < REGISTRY_TTL
        {
            return Ok(tenant.clone());
        }
        let row: Option<TenantRow> =
            sqlx::query_as("SELECT id, slug, status, created_at FROM control.tenants WHERE slug = $1")
                .bind(slug.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error)?;
        let tenant: Tenant = row
            .ok_or_else(|| ApiError::not_found("TENANT_NOT_FOUND", format!("tenant {slug} does not exist")))?
            .try_into()?;
        self.registry.write().await.insert(slug.clone(), (tenant.clone(), Instant::now()));
        Ok(tenant)
    }

    /// The runtime pool, for kit's own cross-tenant bookkeeping in `control` (exports).
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Drops this replica's cached registry entry of `slug` (after changing it); other replicas
    /// drop theirs when the change is announced ([`Self::spawn_registry_listener`]), at the latest
    /// after the cache's lifetime (10 s).
    pub async fn forget_tenant(&self, slug: &TenantSlug) {
        self.registry.write().await.remove(slug);
    }

    /// Listens for changes of the tenant registry ([`TENANT_REGISTRY_CHANNEL`]) and drops the
    /// cached entry of each changed tenant as its change commits: a suspension or termination made
    /// on any replica (or by hand) is refused here within the second, not after the cache's
    /// lifetime. Each dropped entry counts `strongroom_events_total{event="tenant_registry_invalidated"}`.
    /// While the listener is not connected (PostgreSQL restarting) nothing is announced, so the
    /// whole cache is dropped on every (re)connection.
    pub fn spawn_registry_listener(&self) -> tokio::task::JoinHandle<()> {
        let (pool, registry) = (self.registry_notices.clone(), self.registry.clone());
        tokio::spawn(async move {
            loop {
                let listen = async {
                    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
                    listener.listen(TENANT_REGISTRY_CHANNEL).await?;
                    registry.write().await.clear();
                    loop {
                        let n = listener.recv().await?;
                        if let Ok(slug) = TenantSlug::parse(n.payload()) {
                            registry.write().await.remove(&slug);
                            crate::metrics::Metrics::global().event("tenant_registry_invalidated");
                        }
                    }
                    #[allow(unreachable_code)]
                    Ok::<(), sqlx::Error>(())
                };
                if let Err(e) = listen.await {
                    tracing::warn!(error = %e, "tenant registry listener lost; dropping the cache and reconnecting");
                    registry.write().await.clear();
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }

    /// Spawns a task that runs `job` for every active tenant, one tenant after another, every
    /// `every` until `shutdown` (key rotation, housekeeping). A failed listing waits for the next
    /// round; `job` logs its own failures.
    pub fn every_active_tenant<F, Fut>(&self, every: Duration, shutdown: crate::server::Shutdown, job: F)
    where
        F: Fn(Tenant) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let db = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.clone().wait() => return,
                    () = tokio::time::sleep(every) => {}
                }
                let Ok(tenants) = db.tenants().await else { continue };
                for tenant in tenants.into_iter().filter(|t| t.status == TenantStatus::Active) {
                    job(tenant).await;
                }
            }
        });
    }

    /// Every registered tenant that is not terminated.
    pub async fn tenants(&self) -> Result<Vec<Tenant>, ApiError> {
        let rows: Vec<TenantRow> = sqlx::query_as(
            "SELECT id, slug, status, created_at FROM control.tenants WHERE status <> 'terminated' ORDER BY slug",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.into_iter().map(Tenant::try_from).collect()
    }

    /// Every registered tenant, terminated ones included (a terminated tenant stays registered,
    /// refused by every request, until it is purged): audit-svc keeps sequencing and
    /// checkpointing a terminated tenant's log for its export.
    pub async fn registered_tenants(&self) -> Result<Vec<Tenant>, ApiError> {
        let rows: Vec<TenantRow> =
            sqlx::query_as("SELECT id, slug, status, created_at FROM control.tenants ORDER BY slug")
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
        rows.into_iter().map(Tenant::try_from).collect()
    }

    /// Resolves the tenant a request names and checks that the caller's token (if any) belongs to
    /// it: a token of tenant A is worthless against tenant B.
    pub async fn authorize_tenant(&self, slug: &TenantSlug, principal: Option<&Principal>) -> Result<Tenant, ApiError> {
        let mismatch = || ApiError::permission_denied("TENANT_MISMATCH", "token does not belong to this tenant");
        let tenant = match (self.tenant(slug).await, principal) {
            // A token holder learns nothing about which other tenants exist.
            (Err(e), Some(_)) if e.code == ErrorCode::NotFound => return Err(mismatch()),
            (result, _) => result?,
        };
        if let Some(p) = principal
            && p.tenant_id != tenant.id
        {
            tracing::warn!(tenant = %slug, subject = %p.subject, "token of another tenant refused");
            return Err(mismatch());
        }
        match tenant.status {
            TenantStatus::Active => Ok(tenant),
            TenantStatus::Suspended => Err(ApiError::permission_denied("TENANT_SUSPENDED", "tenant is suspended")),
            TenantStatus::Terminated => {
                Err(ApiError::new(ErrorCode::FailedPrecondition, "TENANT_TERMINATED", "tenant is terminated"))
            }
        }
    }

    /// Starts a transaction scoped to `tenant`.
    pub async fn begin(&self, tenant: &Tenant) -> Result<TenantTx, ApiError> {
        // SET LOCAL (not set_config) so the scope ends with the transaction and Citus forwards it.
        // One simple query with the BEGIN: a round trip less per transaction.
        let begin = format!(
            "BEGIN; SET LOCAL search_path TO {}; SET LOCAL strongroom.tenant_id TO '{}'",
            tenant.slug.schema(),
            tenant.id.0.hyphenated()
        );
        let tx = self.pool.begin_with(begin).await.map_err(db_error)?;
        Ok(TenantTx { tx, tenant: tenant.clone(), waker: self.waker.clone(), recorded: false })
    }
}

/// A transaction bound to one tenant's schema and row-level-security scope.
pub struct TenantTx {
    tx: Transaction<'static, Postgres>,
    tenant: Tenant,
    waker: crate::outbox::Waker,
    /// Whether this transaction wrote audit records: its commit then wakes audit-svc.
    recorded: bool,
}

impl fmt::Debug for TenantTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantTx").field("tenant", &self.tenant.slug).finish()
    }
}

impl TenantTx {
    /// A transaction already scoped to `tenant` (`Db::begin` makes the ordinary ones).
    pub(crate) fn from_parts(tx: Transaction<'static, Postgres>, tenant: Tenant, waker: crate::outbox::Waker) -> Self {
        Self { tx, tenant, waker, recorded: false }
    }

    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    /// The connection, for queries inside this tenant's scope.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Notes that this transaction wrote audit records with its own SQL (`record` and
    /// `record_all` note it themselves), so that its commit wakes audit-svc.
    pub fn mark_recorded(&mut self) {
        self.recorded = true;
    }

    pub async fn commit(self) -> Result<(), ApiError> {
        self.tx.commit().await.map_err(db_error)?;
        if self.recorded {
            self.waker.wake(self.tenant.id.0);
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), ApiError> {
        self.tx.rollback().await.map_err(db_error)
    }

    /// Runs a statement in this tenant's scope; the number of rows it changed.
    pub async fn execute(&mut self, statement: Query<'_, Postgres, PgArguments>) -> Result<u64, ApiError> {
        statement.execute(&mut *self.tx).await.map(|done| done.rows_affected()).map_err(db_error)
    }

    /// The row a `sqlx::query_as` finds, if any.
    pub async fn optional<T: Send + Unpin + for<'r> FromRow<'r, PgRow>>(
        &mut self,
        query: QueryAs<'_, Postgres, T, PgArguments>,
    ) -> Result<Option<T>, ApiError> {
        query.fetch_optional(&mut *self.tx).await.map_err(db_error)
    }

    /// The one row a `sqlx::query_as` must find.
    pub async fn one<T: Send + Unpin + for<'r> FromRow<'r, PgRow>>(
        &mut self,
        query: QueryAs<'_, Postgres, T, PgArguments>,
    ) -> Result<T, ApiError> {
        query.fetch_one(&mut *self.tx).await.map_err(db_error)
    }

    /// Every row a `sqlx::query_as` finds.
    pub async fn all<T: Send + Unpin + for<'r> FromRow<'r, PgRow>>(
        &mut self,
        query: QueryAs<'_, Postgres, T, PgArguments>,
    ) -> Result<Vec<T>, ApiError> {
        query.fetch_all(&mut *self.tx).await.map_err(db_error)
    }

    /// The value a `sqlx::query_scalar` finds, if any.
    pub async fn optional_scalar<O: Send + Unpin>(
        &mut self,
        query: QueryScalar<'_, Postgres, O, PgArguments>,
    ) -> Result<Option<O>, ApiError>
    where
        (O,): for<'r> FromRow<'r, PgRow>,
    {
        query.fetch_optional(&mut *self.tx).await.map_err(db_error)
    }

    /// The one value a `sqlx::query_scalar` must find.
    pub async fn scalar<O: Send + Unpin>(
        &mut self,
        query: QueryScalar<'_, Postgres, O, PgArguments>,
    ) -> Result<O, ApiError>
    where
        (O,): for<'r> FromRow<'r, PgRow>,
    {
        query.fetch_one(&mut *self.tx).await.map_err(db_error)
    }

    /// Every value a `sqlx::query_scalar` finds.
    pub async fn scalars<O: Send + Unpin>(
        &mut self,
        query: QueryScalar<'_, Postgres, O, PgArguments>,
    ) -> Result<Vec<O>, ApiError>
    where
        (O,): for<'r> FromRow<'r, PgRow>,
    {
        query.fetch_all(&mut *self.tx).await.map_err(db_error)
    }
}

/// Classifies a database error: unavailability is retryable; text PostgreSQL cannot store is the
/// caller's error; the rest is internal (logged, not shown).
pub fn db_error(e: sqlx::Error) -> ApiError {
    // A NUL character in text (22021) or a `\u0000` escape in jsonb (22P05). Rust strings are
    // always valid UTF-8, so NUL is the only text that can get here. The statement failed, so
    // nothing was written.
    if let sqlx::Error::Database(d) = &e
        && matches!(d.code().as_deref(), Some("22021" | "22P05"))
    {
        return ApiError::new(ErrorCode::InvalidArgument, "INVALID_TEXT", "text must not contain NUL (U+0000)");
    }
    if matches!(e, sqlx::Error::PoolTimedOut) {
        // Every connection stayed busy for the whole acquire timeout: the pool is too small for
        // the load, or transactions hold their connections too long.
        crate::metrics::Metrics::global().db_pool_timed_out();
    }
    let unavailable = match &e {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => true,
        // The server ended the session or cannot take it now: connection exceptions (class 08),
        // shutdown and crash (57P01–57P03). A retry may succeed (and replays if it had committed).
        sqlx::Error::Database(d) => {
            d.code().is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03"))
        }
        _ => false,
    };
    if unavailable {
        tracing::warn!(error = %e, "database unavailable");
        return ApiError::unavailable("DATABASE_UNAVAILABLE", "database unavailable, retry later");
    }
    ApiError::internal(&e)
}

/// When each tenant is next due for a background visit (a look for work that its wake-ups may
/// have missed): every tenant at least once per `every`, the visits spread over the interval.
/// A tenant seen for the first time is due at once (work left while no replica ran); after that
/// visit its next one falls at a point of the interval fixed by its id, so a thousand tenants
/// listed at start-up cost a thousand visits spread over `every`, not a burst every `every`.
/// The cost of idle tenants is then one visit per tenant per `every`, not per poll.
#[derive(Debug)]
pub struct Sweep {
    every: Duration,
    next: HashMap<Uuid, tokio::time::Instant>,
}

impl Sweep {
    pub fn new(every: Duration) -> Self {
        Self { every, next: HashMap::new() }
    }

    /// Whether `tenant` is due for a visit at `now`.
    pub fn due(&self, tenant: Uuid, now: tokio::time::Instant) -> bool {
        self.next.get(&tenant).is_none_or(|t| *t <= now)
    }

    /// Notes a visit of `tenant` at `now` (a visit for any reason finds what a sweep would).
    pub fn visited(&mut self, tenant: Uuid, now: tokio::time::Instant) {
        let after = if self.next.contains_key(&tenant) {
            self.every
        } else {
            // A fraction of the interval fixed by the id (v4 and v7 ids both end in random bits).
            self.every.mul_f64((tenant.as_u128() % 1024) as f64 / 1024.0)
        };
        self.next.insert(tenant, now + after);
    }

    /// Every tenant is due now (wake-ups were lost: a listener reconnected, a queue overflowed).
    pub fn all_due(&mut self) {
        self.next.values_mut().for_each(|t| *t = tokio::time::Instant::now());
    }

    /// Forgets tenants no longer listed.
    pub fn retain(&mut self, listed: &std::collections::HashSet<Uuid>) {
        self.next.retain(|id, _| listed.contains(id));
    }

    /// The earliest next visit of a tenant seen so far.
    pub fn next_due(&self) -> Option<tokio::time::Instant> {
        self.next.values().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mfa_and_refresh_tokens_name_their_tenant_only_in_their_own_shape() {
        assert_eq!(TenantSlug::of_mfa_token("srm_alpha.AbC-_9").map(|s| s.to_string()), Some("alpha".into()));
        for other in ["srm_AbC-_9", "srr_alpha.x", "srm_x.y", "srm_Alpha.x", "srm_a'b.x", "alpha.x", ""] {
            assert!(TenantSlug::of_mfa_token(other).is_none(), "{other}");
        }
        assert_eq!(TenantSlug::of_refresh_token("srr_alpha.AbC-_9").map(|s| s.to_string()), Some("alpha".into()));
        for other in ["srr_AbC-_9", "srm_alpha.x", "srr_Alpha.x", "srr_a b.x", ""] {
            assert!(TenantSlug::of_refresh_token(other).is_none(), "{other}");
        }
    }

    #[test]
    fn a_sweep_visits_new_tenants_at_once_then_spreads_them_over_its_interval() {
        let every = Duration::from_secs(10);
        let mut sweep = Sweep::new(every);
        let start = tokio::time::Instant::now();
        let ids: Vec<Uuid> = (0..1000).map(|_| Uuid::new_v4()).collect();
        assert!(ids.iter().all(|id| sweep.due(*id, start)), "new tenants are due at once");
        ids.iter().for_each(|id| sweep.visited(*id, start));
        // Spread: about a tenth of them fall in each tenth of the interval, none beyond it.
        let mut per_tenth = [0usize; 10];
        for id in &ids {
            let at = sweep.next[id] - start;
            assert!(at < every, "{at:?}");
            per_tenth[at.as_secs() as usize] += 1;
        }
        assert!(per_tenth.iter().all(|n| (50..=150).contains(n)), "{per_tenth:?}");
        // Once visited, a tenant is next due a whole interval later.
        let later = start + Duration::from_secs(3);
        sweep.visited(ids[0], later);
        assert!(!sweep.due(ids[0], later + every - Duration::from_millis(1)));
        assert!(sweep.due(ids[0], later + every));
        // Lost wake-ups: everyone is due.
        sweep.all_due();
        assert!(ids.iter().all(|id| sweep.due(*id, tokio::time::Instant::now())));
        sweep.retain(&ids[..10].iter().copied().collect());
        assert_eq!(sweep.next.len(), 10);
        assert!(sweep.next_due().is_some());
    }

    #[test]
    fn slugs_are_validated() {
        for good in ["demo", "abc", "a_1_b", "tenant_number_0000000000000000000000001"] {
            assert!(TenantSlug::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "a; drop schema control",
            "../x",
            "Demo",
            "ab",
            "1abc",
            "_abc",
            "abc-def",
            "abc def",
            "abcdefghijklmnopqrstuvwxyzabcdefghijklmno",
            "tést",
            "",
        ] {
            assert!(TenantSlug::parse(bad).is_err(), "{bad}");
        }
        assert_eq!("abcdefghijklmnopqrstuvwxyzabcdefghijklmno".len(), 41);
    }
}
