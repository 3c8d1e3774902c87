//! Keeps Redis's revocation list ([`kit::revocation`]) true to the database, so that no revocation
//! is lost between the two:
//! - Every revocation of a session or an API key, and every deletion of one that was live, writes
//!   a row to `control.revocations` in the same transaction (triggers on each tenant's `sessions`
//!   and `api_keys`).
//! - The revoking call then lists its tenant's unlisted rows in Redis ([`publish`]). When Redis
//!   does not take them, a call whose purpose is the revocation (revoking a session or an API key,
//!   suspending a user) answers `UNAVAILABLE` `REVOCATION_PENDING`; the change itself is saved.
//! - Every replica, every [`EVERY`], lists whatever is still unlisted; when Redis has lost its list
//!   (no [`kit::revocation::LOADED_KEY`]: a restart without persistence, a flush) it lists every
//!   kept row again and then sets the marker ([`reload_if_lost`]); and every [`RELIST_EVERY`] it
//!   lists every kept row again anyway, which mends a Redis that lost some listings but kept the
//!   marker (a failover to a lagging replica, eviction). Verifiers refuse tokens while the marker
//!   is missing.
//! - Rows older than [`KEEP`] go: by then every token they stop has expired.

use std::time::Duration;

use kit::revocation::{Revocations, Revoked};
use kit::{ApiError, Db};

use crate::error::AuthError;
use crate::store::revocations::{self as store, Row};

/// How often each replica lists what Redis has not taken and checks that Redis still has its list.
pub const EVERY: Duration = Duration::from_secs(1);

/// How long a revocation is kept for listing again: longer than any access token lives (at most
/// 15 minutes) and than a verifier caches an API key (30 s).
pub const KEEP: &str = "1 hour";

/// How often each replica lists every kept revocation again.
pub const RELIST_EVERY: Duration = Duration::from_secs(30);

/// Rows listed per round trip.
const BATCH: i64 = 5_000;

fn entries(rows: &[Row]) -> Vec<(Revoked, String)> {
    rows.iter().filter_map(|(kind, id)| Some((Revoked::parse(kind)?, id.to_string()))).collect()
}

/// Lists in Redis every revocation of `tenant` (of every tenant with `None`) that Redis has not
/// taken yet; returns how many.
pub async fn publish(db: &Db, list: &Revocations, tenant: Option<uuid::Uuid>) -> Result<usize, ApiError> {
    let mut total = 0;
    loop {
        let rows = store::unlisted(db, tenant, BATCH).await?;
        if rows.is_empty() {
            return Ok(total);
        }
        list.revoke_each(&entries(&rows)).await?;
        store::mark_listed(db, &rows).await?;
        total += rows.len();
        if rows.len() < BATCH as usize {
            return Ok(total);
        }
    }
}

/// Lists every kept revocation again, [`BATCH`] at a time; returns how many.
pub async fn relist(db: &Db, list: &Revocations) -> Result<usize, ApiError> {
    let mut total = 0;
    let mut after: Row = (String::new(), uuid::Uuid::nil());
    loop {
        let rows = store::kept_after(db, &after, BATCH).await?;
        let Some(last) = rows.last().cloned() else { return Ok(total) };
        list.revoke_each(&entries(&rows)).await?;
        store::mark_listed(db, &rows).await?;
        total += rows.len();
        if rows.len() < BATCH as usize {
            return Ok(total);
        }
        after = last;
    }
}

/// When Redis has lost its list, lists every kept revocation again and then marks the list
/// complete, unless Redis restarted (or another replica began loading) meanwhile; returns how
/// many it listed, or `None` when the list was there.
pub async fn reload_if_lost(db: &Db, list: &Revocations) -> Result<Option<usize>, ApiError> {
    if list.is_loaded().await? {
        return Ok(None);
    }
    let load = list.begin_loading().await?;
    let listed = relist(db, list).await?;
    if !list.finish_loading(&load).await? {
        return Err(AuthError::RevocationLoadInterrupted.into());
    }
    Ok(Some(listed))
}

/// Removes rows older than [`KEEP`]; returns how many.
pub async fn prune(db: &Db) -> Result<u64, ApiError> {
    store::delete_expired(db, BATCH).await
}

/// One round: reload if lost (or list everything again when `relist_all`), list what is
/// unlisted, prune.
pub async fn sweep(db: &Db, list: &Revocations, relist_all: bool) -> Result<(), ApiError> {
    if let Some(n) = reload_if_lost(db, list).await? {
        kit::metrics::Metrics::global().event("revocations_reloaded");
        tracing::warn!(revocations = n, "Redis had lost the revocation list; listed every kept revocation again");
    } else if relist_all {
        relist(db, list).await?;
    }
    let listed = publish(db, list, None).await?;
    if listed > 0 {
        tracing::info!(revocations = listed, "listed revocations that Redis had not taken");
    }
    prune(db).await?;
    Ok(())
}

/// Sweeps every [`EVERY`] (the first time at once, listing everything again every
/// [`RELIST_EVERY`]) until `shutdown`. A failure is logged when it starts and when it ends, not
/// every round.
pub fn spawn(db: Db, list: Revocations, shutdown: kit::server::Shutdown) {
    tokio::spawn(async move {
        let mut failing = false;
        let mut relisted = tokio::time::Instant::now();
        loop {
            let relist_all = relisted.elapsed() >= RELIST_EVERY;
            match sweep(&db, &list, relist_all).await {
                Ok(()) => {
                    if relist_all {
                        relisted = tokio::time::Instant::now();
                    }
                    if failing {
                        failing = false;
                        tracing::info!("the revocation list is up to date again");
                    }
                }
                Err(e) => {
                    kit::metrics::Metrics::global().event("revocation_sweep_failed");
                    if !failing {
                        failing = true;
                        tracing::warn!(reason = %e.reason, "cannot bring the revocation list up to date; retrying every second");
                    }
                }
            }
            tokio::select! {
                () = shutdown.clone().wait() => return,
                () = tokio::time::sleep(EVERY) => {}
            }
        }
    });
}
