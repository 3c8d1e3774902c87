//! The sealing sweep: rows written before personal data was sealed (auth tenant migration 0007)
//! still hold emails, display names, client addresses and user agents in plaintext. auth-svc seals
//! them itself (only it can: a ciphertext opens only for the service that sealed it), a page of
//! [`PAGE`] rows per transit call and per transaction, as it starts and then every
//! `service.purge_every_secs`, each tenant in turn; nothing is held open across a transit call.
//! Each page that sealed something writes one audit record with counts (`auth.personal_data_seal`).
//!
//! Replicas may run it at the same time: a row is sealed once (the update requires the plaintext
//! it read). A user whose email another user already holds (two replicas of different versions
//! created it during the upgrade) is left in plaintext, logged, for an operator to resolve.

use std::time::Duration;

use kit::outbox::{Actor, Outcome};
use kit::{ApiError, Db, Tenant};

use crate::core::audit;
use crate::email_index::EmailIndex;
use crate::personal::{Item, Personal, SESSION_IP, SESSION_USER_AGENT, USER_DISPLAY_NAME, USER_EMAIL};
use crate::store::sealing as store;

/// Rows sealed per transit call (two values each: within vault-svc's batch limit).
pub const PAGE: i64 = 250;

/// What one [`seal`] sealed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    pub users: u64,
    pub sessions: u64,
    /// Users left in plaintext: their email is another user's.
    pub duplicates: u64,
}

/// Seals every plaintext row of `tenant`.
pub async fn seal(db: &Db, personal: &Personal, index: &EmailIndex, tenant: &Tenant) -> Result<Sealed, ApiError> {
    let mut done = Sealed::default();
    let mut after = uuid::Uuid::nil();
    loop {
        let mut tx = db.begin(tenant).await?;
        let users = store::plain_users(&mut tx, after, PAGE).await?;
        tx.commit().await?;
        let Some(last) = users.last() else { break };
        after = last.id;
        let items: Vec<Item<&str>> = users
            .iter()
            .flat_map(|u| {
                let item = |field, value| Item { field, row: u.id, subject: u.id, value };
                [item(USER_EMAIL, u.email.as_str()), item(USER_DISPLAY_NAME, u.display_name.as_deref().unwrap_or(""))]
            })
            .collect();
        let sealed = personal.seal(tenant, &items).await?;
        let mut tx = db.begin(tenant).await?;
        let (mut page, mut duplicates) = (0, 0);
        for (u, pair) in users.iter().zip(sealed.chunks(2)) {
            let (Some(Some(email)), name) = (pair.first(), pair.get(1).cloned().flatten()) else { continue };
            let blinds = index.blinds_for_write(&mut tx, &u.email).await?;
            if store::seal_user(&mut tx, u, email, name.as_deref(), &blinds).await? {
                page += 1;
            } else {
                duplicates += 1;
                tracing::warn!(tenant = %tenant.slug, user = %u.id, "user left unsealed: changed meanwhile, or its email is another user's");
            }
        }
        record(tx, "users", page).await?;
        done.users += page;
        done.duplicates += duplicates;
    }
    let mut after = uuid::Uuid::nil();
    loop {
        let mut tx = db.begin(tenant).await?;
        let sessions = store::plain_sessions(&mut tx, after, PAGE).await?;
        tx.commit().await?;
        let Some(last) = sessions.last() else { break };
        after = last.id;
        let items: Vec<Item<&str>> = sessions
            .iter()
            .flat_map(|s| {
                let item = |field, value| Item { field, row: s.id, subject: s.user_id, value };
                [item(SESSION_IP, s.ip.as_str()), item(SESSION_USER_AGENT, s.user_agent.as_str())]
            })
            .collect();
        let sealed = personal.seal(tenant, &items).await?;
        let mut tx = db.begin(tenant).await?;
        let mut page = 0;
        for (s, pair) in sessions.iter().zip(sealed.chunks(2)) {
            let (ip, agent) = (pair.first().cloned().flatten(), pair.get(1).cloned().flatten());
            if store::seal_session(&mut tx, s, ip.as_deref(), agent.as_deref()).await? {
                page += 1;
            }
        }
        record(tx, "sessions", page).await?;
        done.sessions += page;
    }
    Ok(done)
}

/// Commits a page with its audit record, or rolls back one that sealed nothing.
async fn record(mut tx: kit::TenantTx, table: &str, sealed: u64) -> Result<(), ApiError> {
    if sealed == 0 {
        return tx.rollback().await;
    }
    let actor = Actor::Service(crate::SERVICE.to_owned());
    tx.record(audit(actor, "auth.personal_data_seal", table, Outcome::Success, None).detail("rows", sealed)).await?;
    tx.commit().await
}

/// Seals every active tenant's plaintext rows at once, then every `every`, until `shutdown`.
pub fn spawn(db: Db, personal: Personal, index: EmailIndex, every: Duration, shutdown: kit::server::Shutdown) {
    let first = (db.clone(), personal.clone(), index.clone());
    tokio::spawn(async move {
        let (db, personal, index) = first;
        let Ok(tenants) = db.tenants().await else { return };
        for tenant in tenants.into_iter().filter(|t| t.status == kit::tenancy::TenantStatus::Active) {
            seal_logged(&db, &personal, &index, &tenant).await;
        }
    });
    db.clone().every_active_tenant(every, shutdown, move |tenant| {
        let (db, personal, index) = (db.clone(), personal.clone(), index.clone());
        async move { seal_logged(&db, &personal, &index, &tenant).await }
    });
}

async fn seal_logged(db: &Db, personal: &Personal, index: &EmailIndex, tenant: &Tenant) {
    match seal(db, personal, index, tenant).await {
        Ok(s) if s.users + s.sessions + s.duplicates > 0 => tracing::info!(
            tenant = %tenant.slug,
            users = s.users,
            sessions = s.sessions,
            left_unsealed = s.duplicates,
            "sealed personal data written before sealing"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(tenant = %tenant.slug, reason = %e.reason, "sealing personal data failed"),
    }
}
