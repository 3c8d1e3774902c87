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
//!   recorder queue.
//!
//! Names and labels follow the OpenTelemetry RPC/HTTP conventions as named in
//! [`crate::telemetry::semconv`]; `docs/operations.md` lists every family and the alerts on it.

use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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
        m.login("mfa_required");
        m.vault_operation("unwrap");
        m.kms_error();
        m.rate_limited("auth");
        m.recorder_queue_depth(4);
        let text = m.encode();
        for series in [
            "strongroom_ledger_batch_size_bucket{le=\"4.0\"} 1",
            "strongroom_ledger_batch_size_bucket{le=\"8190.0\"} 1",
            "strongroom_ledger_commit_duration_seconds_count 1",
            "strongroom_ledger_pending_expiring 7",
            "strongroom_auth_logins_total{outcome=\"mfa_required\"} 1",
            "strongroom_vault_operations_total{operation=\"unwrap\"} 1",
            "strongroom_vault_kms_errors_total 1",
            "strongroom_gateway_rate_limited_total{class=\"auth\"} 1",
            "strongroom_gateway_recorder_queue_depth 4",
        ] {
            assert!(text.lines().any(|l| l == series), "{series} missing from:\n{text}");
        }
        assert!(!text.contains("le=\"8192.0\""), "a batch holds at most 8,190 transfers");
    }
}
