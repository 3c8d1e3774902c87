//! Removes what has expired and can no longer matter, so that a tenant's refresh tokens (one row
//! per grant), sessions and MFA challenges do not grow without end:
//! - a refresh token [`KEEP_ENDED`] after it expired. Until it expires, a spent token must stay:
//!   presenting it again is reuse, which ends its session. After that it is only refused.
//! - a session with its last token, so as long after it expired (its last token expires with it):
//!   the user's session list shows ended sessions for 30 days, and its IP and user agent are
//!   personal data.
//! - an MFA challenge a day after it expired (challenges live minutes).
//! - a retired token signing key a day after it stopped signing: its sealed private half and its
//!   public half in the JWKS (by then past its `expires_at`: no token it signed is still valid).
//!
//! Each tenant is purged in batches of [`BATCH`] rows, one transaction per batch, each batch that
//! removed something with one audit record of what it removed (counts, no identifiers:
//! `refreshes`, `sessions`, `mfa_challenges`, `signing_keys`). Replicas may run it at the same time: a row is
//! removed once, by whichever takes its lock first.

use std::time::Duration;

use kit::outbox::{Actor, Outcome};
use kit::{ApiError, Db, Tenant};

use crate::core::audit;
use crate::store::housekeeping as store;

/// How long an ended session and an expired refresh token are kept.
pub const KEEP_ENDED: &str = "30 days";

/// Rows of one table removed per transaction.
pub const BATCH: i64 = 5_000;

/// What one [`purge`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub refresh_tokens: u64,
    pub sessions: u64,
    pub mfa_challenges: u64,
    pub signing_keys: u64,
}

impl Purged {
    fn total(&self) -> u64 {
        self.refresh_tokens + self.sessions + self.mfa_challenges + self.signing_keys
    }
}

/// Purges `tenant` until nothing more has expired.
pub async fn purge(db: &Db, tenant: &Tenant) -> Result<Purged, ApiError> {
    let mut all = Purged::default();
    loop {
        let batch = purge_batch(db, tenant).await?;
        all.refresh_tokens += batch.refresh_tokens;
        all.sessions += batch.sessions;
        all.mfa_challenges += batch.mfa_challenges;
        all.signing_keys += batch.signing_keys;
        if batch.refresh_tokens < BATCH as u64 && batch.mfa_challenges < BATCH as u64 {
            return Ok(all);
        }
    }
}

async fn purge_batch(db: &Db, tenant: &Tenant) -> Result<Purged, ApiError> {
    let mut tx = db.begin(tenant).await?;
    // Expired tokens, then the sessions that lost their last one (a later statement sees the
    // deletions of an earlier one; within one statement a NOT EXISTS would still see them). A
    // session's last token expires with it, so such a session ended `KEEP_ENDED` ago; it is
    // found only here, so the condition must not depend on when it was revoked (a suspension
    // revokes expired sessions too).
    let sessions = store::delete_expired_refresh_tokens(&mut tx, BATCH).await?;
    let refresh_tokens = sessions.len() as u64;
    let ended = if sessions.is_empty() { 0 } else { store::delete_ended_sessions(&mut tx, &sessions).await? };
    let mfa_challenges = store::delete_expired_mfa_challenges(&mut tx, BATCH).await?;
    // A tenant retires a key per rotation (every 30 days by default): a handful at most.
    let retired = store::delete_retired_signing_keys(&mut tx).await?;
    if !retired.is_empty() {
        store::unpublish_expired_signing_keys(&mut tx, &retired).await?;
    }
    let purged = Purged { refresh_tokens, sessions: ended, mfa_challenges, signing_keys: retired.len() as u64 };
    if purged.total() == 0 {
        tx.rollback().await?;
        return Ok(purged);
    }
    tx.record(
        audit(Actor::Service(crate::SERVICE.to_owned()), "auth.purge_expired", "sessions", Outcome::Success, None)
            // Keys naming a token are refused as secret-like (`kit::outbox::SECRET_KEYS`).
            .detail("refreshes", purged.refresh_tokens)
            .detail("sessions", purged.sessions)
            .detail("mfa_challenges", purged.mfa_challenges)
            .detail("signing_keys", purged.signing_keys),
    )
    .await?;
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
                    "purged expired sessions and tokens"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(tenant = %tenant.slug, reason = %e.reason, "purge of expired sessions failed"),
            }
        }
    });
}
