//! Removes what has ended and can no longer matter, as long after as the tenant's retention
//! policy says (`identity_retention_policy`, read at each run), so that a tenant's refresh tokens
//! (one row per grant), sessions and MFA challenges do not grow without end and personal data is
//! not kept longer than promised:
//! - a refresh token `ended_sessions_days` after it expired. Until it expires, a spent token must
//!   stay: presenting it again is reuse, which ends its session. After that it is only refused.
//! - a session with its last token, so as long after it expired (its last token expires with it;
//!   a revoked session's tokens still expire on schedule): the user's session list and export show
//!   ended sessions until then, and their IP and user agent are personal data.
//! - an MFA challenge `mfa_challenges_days` after it expired (challenges live minutes).
//! - a retired token signing key a day after it stopped signing: its sealed private half and its
//!   public half in the JWKS (by then past its `expires_at`: no token it signed is still valid).
//!   Not a tenant's choice: nothing personal, and a key must outlive the tokens it signed.
//! - a deleted user `erased_users_days` after the deletion: the row (its personal fields are NULL
//!   already, its subject key shredded) with every row that refers to it: its ended sessions and
//!   their tokens, revoked API keys, appeals and their messages. Nothing else refers to a user by
//!   key: the audit trail and the other services name them by id only, and stay valid.
//! - a closed data-subject request (completed or rejected) `privacy_requests_days` after it
//!   closed, with its steps: the record that it was honoured (its notes sealed under the subject's
//!   key) is kept three years by default, then goes.
//!
//! A legal hold defers all of it (docs/privacy.md, "Legal hold"): nothing of a user under a
//! subject hold (their sessions and tokens, MFA challenges, their row once deleted), and nothing
//! at all of a tenant under a tenant hold. The audit record of a run that a hold held back says so
//! with `deferred_by_hold`: how many rows the policy would have removed.
//!
//! Each tenant is purged in batches of [`BATCH`] rows, one transaction per batch, each batch that
//! removed something with one audit record of what it removed (counts, no identifiers:
//! `refreshes`, `sessions`, `mfa_challenges`, `signing_keys`, `erased_users`, `erased_user_rows`,
//! `privacy_requests`)
//! and the policy it applied, so a run that removes less than a batch leaves one record. Each run
//! counts what it removed in `strongroom_retention_rows_removed_total{service="auth"}` and notes
//! itself in `strongroom_retention_last_run_timestamp_seconds`. Replicas may run it at the same
//! time: a row is removed once, by whichever takes its lock first.

use std::time::Duration;

use kit::metrics::Metrics;
use kit::outbox::{Actor, Outcome};
use kit::{ApiError, Db, Tenant};

use crate::core::audit;
use crate::domain::legal_holds::Scope;
use crate::domain::retention::RetentionPolicy;
use crate::store::housekeeping as store;

/// Rows of one table removed per transaction.
pub const BATCH: i64 = 5_000;

/// Deleted users removed per transaction (each with every row that refers to them).
const ERASED_USERS_BATCH: i64 = 500;

/// What one [`purge`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub refresh_tokens: u64,
    pub sessions: u64,
    pub mfa_challenges: u64,
    pub signing_keys: u64,
    /// Deleted users' rows.
    pub erased_users: u64,
    /// The rows that referred to those users (sessions and their tokens, API keys, appeals).
    pub erased_user_rows: u64,
    /// Closed data-subject requests (each with its steps).
    pub privacy_requests: u64,
    /// Rows due for removal that a legal hold kept (not removed; not in [`Self::counts`]).
    pub deferred_by_hold: u64,
}

impl Purged {
    fn total(&self) -> u64 {
        self.counts().iter().map(|(_, n)| n).sum()
    }

    /// Each kind of data by its name in the metrics, with how many of it were removed.
    pub fn counts(&self) -> [(&'static str, u64); 7] {
        [
            ("refresh_tokens", self.refresh_tokens),
            ("sessions", self.sessions),
            ("mfa_challenges", self.mfa_challenges),
            ("signing_keys", self.signing_keys),
            ("erased_users", self.erased_users),
            ("erased_user_rows", self.erased_user_rows),
            ("privacy_requests", self.privacy_requests),
        ]
    }

    fn add(&mut self, batch: &Purged) {
        self.refresh_tokens += batch.refresh_tokens;
        self.sessions += batch.sessions;
        self.mfa_challenges += batch.mfa_challenges;
        self.signing_keys += batch.signing_keys;
        self.erased_users += batch.erased_users;
        self.erased_user_rows += batch.erased_user_rows;
        self.privacy_requests += batch.privacy_requests;
        self.deferred_by_hold = self.deferred_by_hold.max(batch.deferred_by_hold);
    }
}

/// Purges `tenant`, as its retention policy says, until nothing more is due; counts what it
/// removed in the retention metrics.
pub async fn purge(db: &Db, tenant: &Tenant) -> Result<Purged, ApiError> {
    let mut tx = db.begin(tenant).await?;
    let (policy, _) = crate::store::retention::get(&mut tx).await?;
    tx.rollback().await?;
    let mut all = Purged::default();
    loop {
        let batch = purge_batch(db, tenant, &policy).await?;
        all.add(&batch);
        if batch.refresh_tokens < BATCH as u64
            && batch.mfa_challenges < BATCH as u64
            && batch.erased_users < ERASED_USERS_BATCH as u64
            && batch.privacy_requests < BATCH as u64
        {
            break;
        }
    }
    let metrics = Metrics::global();
    for (data_type, n) in all.counts() {
        metrics.retention_removed(crate::SERVICE, data_type, n);
    }
    metrics.retention_ran(crate::SERVICE);
    Ok(all)
}

async fn purge_batch(db: &Db, tenant: &Tenant, policy: &RetentionPolicy) -> Result<Purged, ApiError> {
    let mut tx = db.begin(tenant).await?;
    let holds = crate::store::legal_holds::active(&mut tx).await?;
    let tenant_held = holds.contains(&Scope::Tenant);
    let held: Vec<uuid::Uuid> = holds.iter().filter_map(|s| s.subject()).collect();
    let deferred_by_hold =
        if tenant_held || !held.is_empty() { store::count_held(&mut tx, policy, &held, tenant_held).await? } else { 0 };
    if tenant_held {
        // Nothing at all of a tenant under a tenant-wide hold.
        let purged = Purged { deferred_by_hold, ..Default::default() };
        return record(tx, policy, purged).await;
    }
    // Expired tokens, then the sessions that lost their last one (a later statement sees the
    // deletions of an earlier one; within one statement a NOT EXISTS would still see them). A
    // session's last token expires with it, so such a session ended `ended_sessions_days` ago;
    // it is found only here, so the condition must not depend on when it was revoked (a
    // suspension revokes expired sessions too).
    let sessions = store::delete_expired_refresh_tokens(&mut tx, policy.ended_sessions_days, BATCH, &held).await?;
    let refresh_tokens = sessions.len() as u64;
    let ended = if sessions.is_empty() { 0 } else { store::delete_ended_sessions(&mut tx, &sessions).await? };
    let mfa_challenges =
        store::delete_expired_mfa_challenges(&mut tx, policy.mfa_challenges_days, BATCH, &held).await?;
    // A tenant retires a key per rotation (every 30 days by default): a handful at most.
    let retired = store::delete_retired_signing_keys(&mut tx).await?;
    if !retired.is_empty() {
        store::unpublish_expired_signing_keys(&mut tx, &retired).await?;
    }
    let erased = store::lock_erased_users(&mut tx, policy.erased_users_days, ERASED_USERS_BATCH, &held).await?;
    let (erased_users, erased_user_rows) =
        if erased.is_empty() { (0, 0) } else { store::delete_erased_users(&mut tx, &erased).await? };
    let privacy_requests =
        store::delete_closed_privacy_requests(&mut tx, policy.privacy_requests_days, BATCH, &held).await?;
    let purged = Purged {
        refresh_tokens,
        sessions: ended,
        mfa_challenges,
        signing_keys: retired.len() as u64,
        erased_users,
        erased_user_rows,
        privacy_requests,
        deferred_by_hold,
    };
    record(tx, policy, purged).await
}

/// Records what a batch removed (and what a hold kept) and commits; rolls back a batch that did
/// neither.
async fn record(mut tx: kit::TenantTx, policy: &RetentionPolicy, purged: Purged) -> Result<Purged, ApiError> {
    if purged.total() == 0 && purged.deferred_by_hold == 0 {
        tx.rollback().await?;
        return Ok(purged);
    }
    let mut record =
        audit(Actor::Service(crate::SERVICE.to_owned()), "auth.purge_expired", "sessions", Outcome::Success, None)
            // Keys naming a token are refused as secret-like (`kit::outbox::SECRET_KEYS`).
            .detail("refreshes", purged.refresh_tokens)
            .detail("sessions", purged.sessions)
            .detail("mfa_challenges", purged.mfa_challenges)
            .detail("signing_keys", purged.signing_keys)
            .detail("erased_users", purged.erased_users)
            .detail("erased_user_rows", purged.erased_user_rows)
            .detail("privacy_requests", purged.privacy_requests)
            .detail("retention_days", serde_json::json!(std::collections::BTreeMap::from(policy.fields())));
    if purged.deferred_by_hold > 0 {
        record = record.detail("deferred_by_hold", purged.deferred_by_hold);
    }
    tx.record(record).await?;
    tx.commit().await?;
    Ok(purged)
}

/// Purges every active tenant every `every` until `shutdown`.
pub fn spawn(db: Db, every: Duration, shutdown: kit::server::Shutdown) {
    db.clone().every_active_tenant(every, shutdown, move |tenant| {
        let db = db.clone();
        async move {
            match purge(&db, &tenant).await {
                Ok(p) if p.total() > 0 => tracing::info!(
                    tenant = %tenant.slug,
                    refresh_tokens = p.refresh_tokens,
                    sessions = p.sessions,
                    mfa_challenges = p.mfa_challenges,
                    signing_keys = p.signing_keys,
                    erased_users = p.erased_users,
                    erased_user_rows = p.erased_user_rows,
                    deferred_by_hold = p.deferred_by_hold,
                    "purged what the retention policy no longer keeps"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(tenant = %tenant.slug, reason = %e.reason, "purge of expired sessions failed"),
            }
        }
    });
}
