//! RED metrics (rate, errors, duration) per RPC and per HTTP route, security and reliability
//! events, the continuous integrity verification of the audit log and the receipt chain, and the
//! expiry of the process's certificates, exposed in Prometheus text on the admin port (`/metrics`).
//! audit-svc also exports the state of each tenant's audit pipeline, by tenant slug (`tenant`),
//! measured every `service.signals_interval_ms` (15 s unless configured):
//! - `strongroom_audit_outbox_backlog{tenant}`: records waiting in the tenant's outbox, not yet
//!   sequenced into its log (counted up to 100,000: a larger backlog reads 100,000);
//! - `strongroom_audit_outbox_oldest_age_seconds{tenant}`: how long ago the oldest of them
//!   occurred (0 when the outbox is empty);
//! - `strongroom_audit_unsigned_age_seconds{tenant}`: how long ago the oldest log entry that no
//!   signed checkpoint covers was logged (0 when the latest checkpoint covers the whole log): a
//!   stale checkpoint. An idle tenant whose log is fully checkpointed reads 0.
//!
//! A tenant that is deleted (or terminated) drops its series.
//!
//! The domain signals an on-call reads, each counted by the service that owns it (every process
//! registers every family, so a family another service owns reads 0):
//! - `strongroom_ledger_batch_size`: transfers per batch ledger-svc committed (buckets 1 to
//!   8,190, by powers of two);
//! - `strongroom_ledger_commit_duration_seconds`: how long committing each of those batches took;
//! - `strongroom_ledger_pending_expiring`: pending transfers whose timeout falls within the next
//!   [`PENDING_EXPIRING_WINDOW`], summed over tenants, as ledger-svc's expiry sweep last counted
//!   each tenant (every replica counts every tenant: aggregate replicas with `max`);
//! - `strongroom_auth_logins_total{outcome}`: logins that ended, by `success`, `failure`, `locked`
//!   or `mfa_required`;
//! - `strongroom_vault_operations_total{operation}`: `encrypt` and `decrypt` (transit, secrets),
//!   `unwrap` (a tenant key unwrapped by the master key, in the KMS/HSM) and `shred` (a subject's
//!   or a tenant's keys destroyed);
//! - `strongroom_vault_kms_errors_total`: wraps and unwraps the KMS/HSM failed;
//! - `strongroom_gateway_rate_limited_total{class}`: requests the gateway refused with 429, by
//!   route class (`auth`, `write`, `read`);
//! - `strongroom_gateway_recorder_queue_depth`: request events waiting in the gateway's audit
//!   recorder queue;
//! - `strongroom_retention_rows_removed_total{service,data_type}`: what a retention job removed
//!   because the tenant's retention for it ran out: auth-svc's housekeeping (`refresh_tokens`,
//!   `sessions`, `mfa_challenges`, `signing_keys`, `erased_users`, `erased_user_rows`), vault-svc's
//!   (`period_keys`, destroyed), audit-svc's (`audit_entries`, pruned). Each job counts every kind
//!   it removes from its first run, 0 included;
//! - `strongroom_retention_last_run_timestamp_seconds{service}`: when the service's retention job
//!   last completed a run without failing (auth-svc: a tenant's purge; vault-svc: a pass over every
//!   tenant; audit-svc: a tenant's prune). A job that stops running leaves it behind: alert on
//!   `time() - …` beyond a few intervals;
//! - `strongroom_privacy_requests_overdue`: data-subject requests still open (received or in
//!   progress) past their due date, summed over tenants, as auth-svc last counted them (every
//!   `purge_every_secs`; every replica counts every tenant: aggregate replicas with `max`).
//!
//! Saturation and state, measured when `/metrics` is scraped rather than when something happens:
//! - `strongroom_db_pool_connections{service,state}`: the connections of the service's runtime
//!   pool (`database.max_connections`), `idle` or `in_use` (handed out to a transaction or query);
//!   `strongroom_db_pool_max_connections{service}`: the most it opens. A backend service reports its
//!   pool from start-up ([`Metrics::watch_pool`]); the gateway has none;
//! - `strongroom_db_pool_timeouts_total{service}`: requests that waited the pool's whole acquire
//!   timeout (5 s) for a connection and failed `DATABASE_UNAVAILABLE` (counted where kit classifies
//!   database errors, [`crate::tenancy::db_error`]);
//! - `strongroom_revocation_list_complete`: 1 when the revocation list's marker was present at the
//!   process's last check of it, 0 when it was missing ([`crate::revocation`]). auth-svc checks every
//!   second; a verifier checks on every token it verifies, and drops the series when it has not
//!   checked for [`REVOCATION_MARKER_FRESH`], so an idle process never reports a stale answer;
//! - `process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds` and
//!   `process_max_fds`: the process's CPU time, resident memory and file descriptors, read from
//!   `/proc/self` (absent where there is no `/proc`).
//!
//! Names and labels follow the OpenTelemetry RPC/HTTP conventions as named in
//! [`crate::telemetry::semconv`]; `docs/operations.md` lists every family and the alerts on it.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub service: String,
    pub rpc_service: String,
    pub rpc_method: String,
    pub rpc_grpc_status_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub http_request_method: String,
    pub http_route: String,
    pub http_response_status_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event: String,
}

/// Which hash chain a verification is about: `audit_log` (audit-svc) or `ledger_receipts`
/// (ledger-svc).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChainLabels {
    pub chain: String,
}

/// A verification pass over a chain: `incremental` (what came since the last pass) or `full`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PassLabels {
    pub chain: String,
    pub pass: String,
}

/// A certificate the process holds: `own` (its workload or server certificate) or `ca`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    pub certificate: String,
}

/// A tenant, by slug (the per-tenant state of the audit pipeline).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: String,
}

/// How a login ended: `success`, `failure`, `locked` or `mfa_required`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoginLabels {
    pub outcome: String,
}

/// What vault-svc did: `encrypt`, `decrypt`, `unwrap` or `shred`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: String,
}

/// The gateway's route class of a request: `auth`, `write` or `read`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteClassLabels {
    pub class: String,
}

/// A backend service (`auth`, `vault`, `audit`, `ledger`), as the RPC families name it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: String,
}

/// A kind of data a service's retention job removes (`sessions`, `period_keys`, `audit_entries`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetentionLabels {
    pub service: String,
    pub data_type: String,
}

/// The connections of a service's pool in one state: `idle` or `in_use`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub service: String,
    pub state: String,
}

/// How long a process's answer about the revocation list's marker stands without a new check.
pub const REVOCATION_MARKER_FRESH: Duration = Duration::from_secs(60);

/// How far ahead `strongroom_ledger_pending_expiring` looks.
pub const PENDING_EXPIRING_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// A gauge of seconds, with fractions.
pub type SecondsGauge = Gauge<f64, AtomicU64>;

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_5, 2.0, 16))
}

/// Transfers per ledger batch: 1, 2, 4, ... 4,096, then 8,190 (the most a batch holds).
fn batch_size_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 13).chain(std::iter::once(8_190.0)))
}

/// The process's metric families.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub rpc_server: Family<RpcLabels, Histogram>,
    pub http_server: Family<HttpLabels, Histogram>,
    /// Notable security and reliability events (refused handshakes, refused calls, ...).
    pub events: Family<EventLabels, Counter>,
    /// Mismatches the continuous verification found (`strongroom_integrity_failures_total`).
    pub integrity_failures: Family<ChainLabels, Counter>,
    /// Entries (log entries, receipts) the continuous verification checked, by pass.
    pub integrity_checked: Family<PassLabels, Counter>,
    /// When a verification pass over every tenant last completed (Unix seconds), by pass.
    pub integrity_last_pass: Family<PassLabels, Gauge>,
    /// When each certificate the process holds expires (Unix seconds).
    pub certificate_expiry: Family<CertificateLabels, Gauge>,
    /// Records waiting in each tenant's audit outbox (`strongroom_audit_outbox_backlog`).
    pub audit_outbox_backlog: Family<TenantLabels, Gauge>,
    /// Age of the oldest record waiting in each tenant's audit outbox.
    pub audit_outbox_oldest_age: Family<TenantLabels, SecondsGauge>,
    /// Age of the oldest entry of each tenant's audit log that no signed checkpoint covers.
    pub audit_unsigned_age: Family<TenantLabels, SecondsGauge>,
    /// Transfers per committed ledger batch (`strongroom_ledger_batch_size`).
    pub ledger_batch_size: Histogram,
    /// How long committing a ledger batch took.
    pub ledger_commit_duration: Histogram,
    /// Pending transfers expiring within [`PENDING_EXPIRING_WINDOW`], over every tenant.
    pub ledger_pending_expiring: Gauge,
    /// Logins that ended, by outcome (`strongroom_auth_logins_total`).
    pub auth_logins: Family<LoginLabels, Counter>,
    /// vault-svc's operations (`strongroom_vault_operations_total`).
    pub vault_operations: Family<OperationLabels, Counter>,
    /// KMS/HSM calls that failed (`strongroom_vault_kms_errors_total`).
    pub vault_kms_errors: Counter,
    /// Requests the gateway refused with 429, by route class.
    pub gateway_rate_limited: Family<RouteClassLabels, Counter>,
    /// Events waiting in the gateway's audit recorder queue.
    pub gateway_recorder_queue_depth: Gauge,
    /// Requests that timed out waiting for a pooled database connection, by service.
    pub db_pool_timeouts: Family<ServiceLabels, Counter>,
    /// Rows (keys, entries) retention jobs removed (`strongroom_retention_rows_removed_total`).
    pub retention_removed: Family<RetentionLabels, Counter>,
    /// Rows written into terminated tenants' export bundles, by service part
    /// (`strongroom_tenant_export_rows_total`).
    pub export_rows: Family<ServiceLabels, Counter>,
    /// When each service's retention job last completed a run (Unix seconds).
    pub retention_last_run: Family<ServiceLabels, Gauge>,
    /// Open data-subject requests past their due date, over every tenant.
    pub privacy_requests_overdue: Gauge,
    /// What is measured when scraped (pools, the revocation marker, the process).
    scraped: Arc<ScrapeTime>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

impl Metrics {
    pub fn global() -> &'static Metrics {
        METRICS.get_or_init(|| {
            let mut registry = Registry::default();
            let rpc_server =
                Family::<RpcLabels, Histogram>::new_with_constructor(duration_histogram as fn() -> Histogram);
            let http_server =
                Family::<HttpLabels, Histogram>::new_with_constructor(duration_histogram as fn() -> Histogram);
            let events = Family::<EventLabels, Counter>::default();
            registry.register_with_unit(
                "rpc_server_call_duration",
                "Duration of RPCs handled, by outcome",
                prometheus_client::registry::Unit::Seconds,
                rpc_server.clone(),
            );
            registry.register_with_unit(
                "http_server_request_duration",
                "Duration of HTTP requests handled, by route and status",
                prometheus_client::registry::Unit::Seconds,
                http_server.clone(),
            );
            registry.register("strongroom_events", "Security and reliability events", events.clone());
            let integrity_failures = Family::<ChainLabels, Counter>::default();
            registry.register(
                "strongroom_integrity_failures",
                "Mismatches found by the continuous verification of a hash chain (each also an audit record)",
                integrity_failures.clone(),
            );
            let integrity_checked = Family::<PassLabels, Counter>::default();
            registry.register(
                "strongroom_integrity_checked_entries",
                "Entries checked by the continuous verification of a hash chain",
                integrity_checked.clone(),
            );
            let integrity_last_pass = Family::<PassLabels, Gauge>::default();
            registry.register_with_unit(
                "strongroom_integrity_last_pass_timestamp",
                "When a verification pass over every tenant's chain last completed",
                prometheus_client::registry::Unit::Seconds,
                integrity_last_pass.clone(),
            );
            let certificate_expiry = Family::<CertificateLabels, Gauge>::default();
            registry.register_with_unit(
                "strongroom_certificate_expiry_timestamp",
                "When a certificate the process holds expires",
                prometheus_client::registry::Unit::Seconds,
                certificate_expiry.clone(),
            );
            let audit_outbox_backlog = Family::<TenantLabels, Gauge>::default();
            registry.register(
                "strongroom_audit_outbox_backlog",
                "Records waiting in a tenant's audit outbox, not yet sequenced into its log (counted up to 100,000)",
                audit_outbox_backlog.clone(),
            );
            let audit_outbox_oldest_age = Family::<TenantLabels, SecondsGauge>::default();
            registry.register_with_unit(
                "strongroom_audit_outbox_oldest_age",
                "Age of the oldest record waiting in a tenant's audit outbox (0 when empty)",
                prometheus_client::registry::Unit::Seconds,
                audit_outbox_oldest_age.clone(),
            );
            let audit_unsigned_age = Family::<TenantLabels, SecondsGauge>::default();
            registry.register_with_unit(
                "strongroom_audit_unsigned_age",
                "Age of the oldest audit log entry no signed checkpoint covers (0 when the latest covers the whole log)",
                prometheus_client::registry::Unit::Seconds,
                audit_unsigned_age.clone(),
            );
            let ledger_batch_size = batch_size_histogram();
            registry.register(
                "strongroom_ledger_batch_size",
                "Transfers per batch ledger-svc committed",
                ledger_batch_size.clone(),
            );
            let ledger_commit_duration = duration_histogram();
            registry.register_with_unit(
                "strongroom_ledger_commit_duration",
                "How long committing a ledger batch took",
                prometheus_client::registry::Unit::Seconds,
                ledger_commit_duration.clone(),
            );
            let ledger_pending_expiring = Gauge::default();
            registry.register(
                "strongroom_ledger_pending_expiring",
                "Pending transfers whose timeout falls within the next five minutes, over every tenant",
                ledger_pending_expiring.clone(),
            );
            let auth_logins = Family::<LoginLabels, Counter>::default();
            registry.register("strongroom_auth_logins", "Logins that ended, by outcome", auth_logins.clone());
            let vault_operations = Family::<OperationLabels, Counter>::default();
            registry.register(
                "strongroom_vault_operations",
                "Encryptions, decryptions, tenant key unwraps (KMS/HSM) and shreds vault-svc did",
                vault_operations.clone(),
            );
            let vault_kms_errors = Counter::default();
            registry.register("strongroom_vault_kms_errors", "KMS/HSM calls that failed", vault_kms_errors.clone());
            let gateway_rate_limited = Family::<RouteClassLabels, Counter>::default();
            registry.register(
                "strongroom_gateway_rate_limited",
                "Requests the gateway refused with 429, by route class",
                gateway_rate_limited.clone(),
            );
            let gateway_recorder_queue_depth = Gauge::default();
            registry.register(
                "strongroom_gateway_recorder_queue_depth",
                "Request events waiting in the gateway's audit recorder queue",
                gateway_recorder_queue_depth.clone(),
            );
            let db_pool_timeouts = Family::<ServiceLabels, Counter>::default();
            registry.register(
                "strongroom_db_pool_timeouts",
                "Requests that waited the pool's whole acquire timeout for a database connection",
                db_pool_timeouts.clone(),
            );
            let retention_removed = Family::<RetentionLabels, Counter>::default();
            registry.register(
                "strongroom_retention_rows_removed",
                "Rows, keys or entries a retention job removed because the tenant's retention for them ran out",
                retention_removed.clone(),
            );
            let export_rows = Family::<ServiceLabels, Counter>::default();
            registry.register(
                "strongroom_tenant_export_rows",
                "Rows written into terminated tenants' export bundles, by the service whose part they are in",
                export_rows.clone(),
            );
            let retention_last_run = Family::<ServiceLabels, Gauge>::default();
            registry.register_with_unit(
                "strongroom_retention_last_run_timestamp",
                "When the service's retention job last completed a run without failing",
                prometheus_client::registry::Unit::Seconds,
                retention_last_run.clone(),
            );
            let privacy_requests_overdue = Gauge::default();
            registry.register(
                "strongroom_privacy_requests_overdue",
                "Data-subject requests still open past their due date, over every tenant",
                privacy_requests_overdue.clone(),
            );
            let scraped = Arc::new(ScrapeTime::default());
            registry.register_collector(Box::new(Arc::clone(&scraped)));
            Metrics {
                registry: Mutex::new(registry),
                rpc_server,
                http_server,
                events,
                integrity_failures,
                integrity_checked,
                integrity_last_pass,
                certificate_expiry,
                audit_outbox_backlog,
                audit_outbox_oldest_age,
                audit_unsigned_age,
                ledger_batch_size,
                ledger_commit_duration,
                ledger_pending_expiring,
                auth_logins,
                vault_operations,
                vault_kms_errors,
                gateway_rate_limited,
                gateway_recorder_queue_depth,
                db_pool_timeouts,
                retention_removed,
                export_rows,
                retention_last_run,
                privacy_requests_overdue,
                scraped,
            }
        })
    }

    /// Counts one event.
    pub fn event(&self, event: &str) {
        self.events.get_or_create(&EventLabels { event: event.to_owned() }).inc();
    }

    /// Counts a mismatch the continuous verification of `chain` found.
    pub fn integrity_failure(&self, chain: &str) {
        self.integrity_failures.get_or_create(&ChainLabels { chain: chain.to_owned() }).inc();
    }

    /// Counts `entries` checked by a `pass` (`incremental` or `full`) over `chain`.
    pub fn integrity_checked(&self, chain: &str, pass: &str, entries: u64) {
        self.integrity_checked
            .get_or_create(&PassLabels { chain: chain.to_owned(), pass: pass.to_owned() })
            .inc_by(entries);
    }

    /// Notes that a `pass` over every tenant's `chain` completed now.
    pub fn integrity_pass_completed(&self, chain: &str, pass: &str) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let labels = PassLabels { chain: chain.to_owned(), pass: pass.to_owned() };
        self.integrity_last_pass.get_or_create(&labels).set(i64::try_from(now).unwrap_or(i64::MAX));
    }

    /// Notes when the `certificate` (`own` or `ca`) expires (Unix seconds).
    pub fn certificate_expires(&self, certificate: &str, not_after: i64) {
        self.certificate_expiry
            .get_or_create(&CertificateLabels { certificate: certificate.to_owned() })
            .set(not_after);
    }

    /// Notes the state of `tenant`'s audit pipeline: `backlog` records waiting in its outbox, the
    /// oldest of them `oldest_age` seconds old, and the oldest log entry no signed checkpoint covers
    /// `unsigned_age` seconds old (each 0 when there is none).
    pub fn audit_pipeline(&self, tenant: &str, backlog: u64, oldest_age: f64, unsigned_age: f64) {
        let labels = TenantLabels { tenant: tenant.to_owned() };
        self.audit_outbox_backlog.get_or_create(&labels).set(i64::try_from(backlog).unwrap_or(i64::MAX));
        self.audit_outbox_oldest_age.get_or_create(&labels).set(oldest_age);
        self.audit_unsigned_age.get_or_create(&labels).set(unsigned_age);
    }

    /// Drops the audit pipeline series of `tenant` (deleted, or no longer served).
    pub fn forget_audit_pipeline(&self, tenant: &str) {
        let labels = TenantLabels { tenant: tenant.to_owned() };
        self.audit_outbox_backlog.remove(&labels);
        self.audit_outbox_oldest_age.remove(&labels);
        self.audit_unsigned_age.remove(&labels);
    }

    /// Notes a ledger batch of `transfers` committed in `elapsed`.
    pub fn ledger_batch_committed(&self, transfers: usize, elapsed: std::time::Duration) {
        self.ledger_batch_size.observe(transfers as f64);
        self.ledger_commit_duration.observe(elapsed.as_secs_f64());
    }

    /// Notes that `n` pending transfers, over every tenant, expire within
    /// [`PENDING_EXPIRING_WINDOW`].
    pub fn ledger_pending_expiring(&self, n: u64) {
        self.ledger_pending_expiring.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sets the open data-subject requests past their due date, over every tenant.
    pub fn privacy_requests_overdue(&self, n: u64) {
        self.privacy_requests_overdue.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts a login that ended with `outcome` (`success`, `failure`, `locked`, `mfa_required`).
    pub fn login(&self, outcome: &str) {
        self.auth_logins.get_or_create(&LoginLabels { outcome: outcome.to_owned() }).inc();
    }

    /// Counts one vault-svc `operation` (`encrypt`, `decrypt`, `unwrap`, `shred`).
    pub fn vault_operation(&self, operation: &str) {
        self.vault_operations.get_or_create(&OperationLabels { operation: operation.to_owned() }).inc();
    }

    /// Counts a KMS/HSM call that failed.
    pub fn kms_error(&self) {
        self.vault_kms_errors.inc();
    }

    /// Counts a request of route `class` the gateway refused with 429.
    pub fn rate_limited(&self, class: &str) {
        self.gateway_rate_limited.get_or_create(&RouteClassLabels { class: class.to_owned() }).inc();
    }

    /// Notes that `depth` events wait in the gateway's audit recorder queue.
    pub fn recorder_queue_depth(&self, depth: usize) {
        self.gateway_recorder_queue_depth.set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// Counts `rows` of `data_type` the retention job of `service` removed (0 too: the series then
    /// exists, so a rate over it has something to read before the first removal).
    pub fn retention_removed(&self, service: &str, data_type: &str, rows: u64) {
        let labels = RetentionLabels { service: service.to_owned(), data_type: data_type.to_owned() };
        self.retention_removed.get_or_create(&labels).inc_by(rows);
    }

    /// Counts `rows` written into a terminated tenant's export bundle by `service`'s part.
    pub fn export_rows(&self, service: &str, rows: u64) {
        self.export_rows.get_or_create(&ServiceLabels { service: service.to_owned() }).inc_by(rows);
    }

    /// Notes that the retention job of `service` completed a run now.
    pub fn retention_ran(&self, service: &str) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let labels = ServiceLabels { service: service.to_owned() };
        self.retention_last_run.get_or_create(&labels).set(i64::try_from(now).unwrap_or(i64::MAX));
    }

    /// Reports `pool`'s connections as `service`'s at every scrape, in place of any pool reported
    /// for `service` before (a service started again in the same process, as tests do). The first
    /// service reported is the process's: its pool timeouts are counted under its name.
    pub fn watch_pool(&self, service: &str, pool: &sqlx::PgPool) {
        let _ = self.scraped.service.set(service.to_owned());
        // The counter reads 0 from the start, so rates and alerts on it have a series to look at.
        let _ = self.db_pool_timeouts.get_or_create(&ServiceLabels { service: service.to_owned() });
        lock(&self.scraped.pools).insert(service.to_owned(), pool.clone());
    }

    /// Counts a request that timed out waiting for a pooled connection of this process's service.
    pub fn db_pool_timed_out(&self) {
        let service = self.scraped.service.get().map_or("unknown", String::as_str);
        self.db_pool_timeouts.get_or_create(&ServiceLabels { service: service.to_owned() }).inc();
    }

    /// Notes whether the revocation list's marker was `present` at a check made now.
    pub fn revocation_marker_checked(&self, present: bool) {
        *lock(&self.scraped.revocation_marker) = Some((present, Instant::now()));
    }

    /// The Prometheus/OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The series measured when `/metrics` is scraped: a pool's occupancy or the process's memory
/// have no event to count them at.
#[derive(Debug, Default)]
struct ScrapeTime {
    /// The runtime pool of each service of this process.
    pools: Mutex<BTreeMap<String, sqlx::PgPool>>,
    /// The process's service (the first pool watched), whose pool timeouts are counted.
    service: OnceLock<String>,
    /// The revocation list's marker at the last check, and when that was.
    revocation_marker: Mutex<Option<(bool, Instant)>>,
}

impl ScrapeTime {
    fn encode_pools(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // (service, idle, in use, max), read without holding the lock while encoding.
        let pools: Vec<(String, i64, i64, i64)> = lock(&self.pools)
            .iter()
            .map(|(service, pool)| {
                let (size, idle) = (i64::from(pool.size()), i64::try_from(pool.num_idle()).unwrap_or(i64::MAX));
                // Read one after the other, the two can disagree for a moment.
                let in_use = (size - idle).max(0);
                (service.clone(), idle, in_use, i64::from(pool.options().get_max_connections()))
            })
            .collect();
        if pools.is_empty() {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(
            "strongroom_db_pool_connections",
            "Connections of the service's database pool, idle or in use",
            None,
            MetricType::Gauge,
        )?;
        for (service, idle, in_use, _) in &pools {
            for (state, n) in [("idle", *idle), ("in_use", *in_use)] {
                let labels = PoolLabels { service: service.clone(), state: state.to_owned() };
                ConstGauge::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "strongroom_db_pool_max_connections",
            "The most connections the service's database pool opens",
            None,
            MetricType::Gauge,
        )?;
        for (service, _, _, max) in &pools {
            let labels = ServiceLabels { service: service.clone() };
            ConstGauge::new(*max).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn encode_revocation_marker(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // A process that stopped checking (no token to verify) has no current answer: a stale 0
        // would page someone for a list that has long been complete again.
        let last = *lock(&self.revocation_marker);
        let Some((present, _)) = last.filter(|(_, at)| at.elapsed() < REVOCATION_MARKER_FRESH) else {
            return Ok(());
        };
        let gauge = ConstGauge::new(i64::from(present));
        gauge.encode(encoder.encode_descriptor(
            "strongroom_revocation_list_complete",
            "1 when the revocation list's marker was present at the process's last check, 0 when missing",
            None,
            gauge.metric_type(),
        )?)
    }

    fn encode_process(encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let process = ProcessStats::read();
        if let Some(seconds) = process.cpu_seconds {
            let counter = ConstCounter::new(seconds);
            counter.encode(encoder.encode_descriptor(
                "process_cpu",
                "User and system CPU time the process spent",
                Some(&Unit::Seconds),
                counter.metric_type(),
            )?)?;
        }
        let gauges = [
            ("process_resident_memory", "Resident memory of the process", Some(Unit::Bytes), process.resident_bytes),
            ("process_open_fds", "File descriptors the process holds open", None, process.open_fds),
            ("process_max_fds", "The most file descriptors the process may open", None, process.max_fds),
        ];
        for (name, help, unit, value) in &gauges {
            if let Some(value) = value {
                let gauge = ConstGauge::new(i64::try_from(*value).unwrap_or(i64::MAX));
                gauge.encode(encoder.encode_descriptor(name, help, unit.as_ref(), gauge.metric_type())?)?;
            }
        }
        Ok(())
    }
}

impl Collector for ScrapeTime {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_pools(&mut encoder)?;
        self.encode_revocation_marker(&mut encoder)?;
        Self::encode_process(&mut encoder)
    }
}

/// The process's CPU time, memory and file descriptors, from Linux's `/proc/self`; each `None`
/// where it cannot be read.
#[derive(Debug, Default, PartialEq)]
struct ProcessStats {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<u64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
}

/// Clock ticks per second of `/proc/<pid>/stat`'s times: USER_HZ, which Linux fixes at 100 for
/// user space on the architectures Strongroom builds for (x86-64, arm64).
const USER_HZ: f64 = 100.0;

impl ProcessStats {
    fn read() -> Self {
        let text = |path: &str| std::fs::read_to_string(path).ok();
        Self {
            cpu_seconds: text("/proc/self/stat").as_deref().and_then(Self::cpu_seconds),
            resident_bytes: text("/proc/self/status").as_deref().and_then(Self::resident_bytes),
            // The directory's own descriptor, open while it is read, is among them (as other
            // exporters count it).
            open_fds: std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64),
            max_fds: text("/proc/self/limits").as_deref().and_then(Self::max_fds),
        }
    }

    /// `utime` and `stime` (fields 14 and 15 of `stat`, counted after the command's closing
    /// parenthesis: the command itself may hold spaces), in seconds.
    fn cpu_seconds(stat: &str) -> Option<f64> {
        let (_, after) = stat.rsplit_once(')')?;
        let mut fields = after.split_whitespace().skip(11);
        let user: u64 = fields.next()?.parse().ok()?;
        let system: u64 = fields.next()?.parse().ok()?;
        Some((user + system) as f64 / USER_HZ)
    }

    /// `VmRSS:    1234 kB` of `status`, in bytes.
    fn resident_bytes(status: &str) -> Option<u64> {
        let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
        let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
        Some(kib * 1024)
    }

    /// The soft limit of `Max open files` in `limits` (`None` when unlimited).
    fn max_fds(limits: &str) -> Option<u64> {
        let line = limits.lines().find_map(|l| l.strip_prefix("Max open files"))?;
        line.split_whitespace().next()?.parse().ok()
    }
}

/// Serves `/metrics` (and `/healthz`) over plain HTTP on the admin listener until `shutdown`.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(|| async {
                (
                    [(http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                    Metrics::global().encode(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_domain_signals_are_exposed_under_their_conventional_names() {
        let m = Metrics::global();
        m.ledger_batch_committed(3, std::time::Duration::from_millis(2));
        m.ledger_pending_expiring(7);
        m.privacy_requests_overdue(2);
        m.login("mfa_required");
        m.vault_operation("unwrap");
        m.kms_error();
        m.rate_limited("auth");
        m.recorder_queue_depth(4);
        m.retention_removed("vault", "period_keys", 0);
        m.retention_removed("auth", "sessions", 3);
        m.retention_removed("auth", "sessions", 2);
        m.retention_ran("audit");
        let text = m.encode();
        for series in [
            "strongroom_ledger_batch_size_bucket{le=\"4.0\"} 1",
            "strongroom_ledger_batch_size_bucket{le=\"8190.0\"} 1",
            "strongroom_ledger_commit_duration_seconds_count 1",
            "strongroom_ledger_pending_expiring 7",
            "strongroom_privacy_requests_overdue 2",
            "strongroom_auth_logins_total{outcome=\"mfa_required\"} 1",
            "strongroom_vault_operations_total{operation=\"unwrap\"} 1",
            "strongroom_vault_kms_errors_total 1",
            "strongroom_gateway_rate_limited_total{class=\"auth\"} 1",
            "strongroom_gateway_recorder_queue_depth 4",
            "strongroom_retention_rows_removed_total{service=\"vault\",data_type=\"period_keys\"} 0",
            "strongroom_retention_rows_removed_total{service=\"auth\",data_type=\"sessions\"} 5",
        ] {
            assert!(text.lines().any(|l| l == series), "{series} missing from:\n{text}");
        }
        assert!(!text.contains("le=\"8192.0\""), "a batch holds at most 8,190 transfers");
        let last_run = sample(&text, "strongroom_retention_last_run_timestamp_seconds{service=\"audit\"}");
        assert!(last_run.is_some_and(|t| t > 1.7e9), "{text}");
        assert!(text.contains("# TYPE strongroom_retention_last_run_timestamp_seconds gauge"), "{text}");
    }

    /// The value of the series named exactly `series` (name and labels), if exposed.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[tokio::test]
    async fn a_pool_is_reported_idle_and_in_use_at_each_scrape() {
        let m = Metrics::global();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(3)
            .connect(&crate::testing::base_database_url())
            .await
            .expect("database");
        m.watch_pool("ledger", &pool);
        let held = pool.acquire().await.expect("connection");
        let text = m.encode();
        assert_eq!(sample(&text, "strongroom_db_pool_connections{service=\"ledger\",state=\"in_use\"}"), Some(1.0));
        assert_eq!(sample(&text, "strongroom_db_pool_connections{service=\"ledger\",state=\"idle\"}"), Some(0.0));
        assert_eq!(sample(&text, "strongroom_db_pool_max_connections{service=\"ledger\"}"), Some(3.0));
        assert_eq!(sample(&text, "strongroom_db_pool_timeouts_total{service=\"ledger\"}"), Some(0.0), "{text}");
        assert!(text.contains("# TYPE strongroom_db_pool_connections gauge"), "{text}");
        drop(held);
        // The connection goes back to the pool on a task of its own.
        let deadline = Instant::now() + Duration::from_secs(10);
        while sample(&m.encode(), "strongroom_db_pool_connections{service=\"ledger\",state=\"idle\"}") != Some(1.0) {
            assert!(Instant::now() < deadline, "the connection never came back idle:\n{}", m.encode());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            sample(&m.encode(), "strongroom_db_pool_connections{service=\"ledger\",state=\"in_use\"}"),
            Some(0.0)
        );

        // A pool watched again under the same name replaces the first; a pool timeout is counted
        // under the process's service, the first one watched.
        let other = sqlx::postgres::PgPoolOptions::new()
            .max_connections(5)
            .connect_lazy(&crate::testing::base_database_url())
            .expect("lazy pool");
        m.watch_pool("ledger", &other);
        m.watch_pool("audit", &other);
        let _ = crate::tenancy::db_error(sqlx::Error::PoolTimedOut);
        let text = m.encode();
        assert_eq!(sample(&text, "strongroom_db_pool_max_connections{service=\"ledger\"}"), Some(5.0));
        assert_eq!(sample(&text, "strongroom_db_pool_max_connections{service=\"audit\"}"), Some(5.0));
        assert_eq!(sample(&text, "strongroom_db_pool_timeouts_total{service=\"ledger\"}"), Some(1.0), "{text}");
        assert_eq!(sample(&text, "strongroom_db_pool_timeouts_total{service=\"audit\"}"), Some(0.0));
        // Other database errors are not pool timeouts.
        let _ = crate::tenancy::db_error(sqlx::Error::PoolClosed);
        assert_eq!(sample(&m.encode(), "strongroom_db_pool_timeouts_total{service=\"ledger\"}"), Some(1.0));
    }

    #[test]
    fn the_revocation_marker_is_reported_as_last_checked_and_only_while_fresh() {
        let m = Metrics::global();
        assert_eq!(sample(&m.encode(), "strongroom_revocation_list_complete"), None, "no check, no answer");
        m.revocation_marker_checked(true);
        assert_eq!(sample(&m.encode(), "strongroom_revocation_list_complete"), Some(1.0));
        m.revocation_marker_checked(false);
        let text = m.encode();
        assert_eq!(sample(&text, "strongroom_revocation_list_complete"), Some(0.0));
        assert!(text.contains("# TYPE strongroom_revocation_list_complete gauge"), "{text}");
        // A check older than REVOCATION_MARKER_FRESH says nothing about now.
        if let Some(long_ago) = Instant::now().checked_sub(REVOCATION_MARKER_FRESH) {
            *lock(&m.scraped.revocation_marker) = Some((false, long_ago));
            assert_eq!(sample(&m.encode(), "strongroom_revocation_list_complete"), None);
        }
    }

    #[test]
    fn the_process_cpu_memory_and_descriptors_are_read_from_proc() {
        // A command with spaces and a parenthesis does not shift the fields.
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194304 1234 0 0 0 250 75 0 0 20 0 9 0 100 0";
        assert_eq!(ProcessStats::cpu_seconds(stat), Some(3.25));
        assert_eq!(ProcessStats::cpu_seconds("garbage"), None);
        let status = "Name:\tauth-svc\nVmPeak:\t  20000 kB\nVmRSS:\t   12345 kB\nThreads:\t9\n";
        assert_eq!(ProcessStats::resident_bytes(status), Some(12_345 * 1024));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(ProcessStats::max_fds(limits), Some(1024));
        assert_eq!(
            ProcessStats::max_fds("Max open files            unlimited            unlimited            files"),
            None
        );

        if cfg!(target_os = "linux") {
            let text = Metrics::global().encode();
            assert!(text.contains("# TYPE process_cpu_seconds counter"), "{text}");
            assert!(sample(&text, "process_cpu_seconds_total").is_some(), "{text}");
            assert!(sample(&text, "process_resident_memory_bytes").is_some_and(|b| b > 0.0), "{text}");
            assert!(sample(&text, "process_open_fds").is_some_and(|n| n >= 3.0), "{text}");
            assert!(sample(&text, "process_max_fds").is_some_and(|n| n >= 3.0), "{text}");
        }
    }
}
