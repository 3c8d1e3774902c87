//! Changes to a tenant's key hierarchy that span many rows and transactions, over the keyring and
//! the store: the rewrap of everything sealed under older tenant key versions, the retirement of
//! those versions once nothing is, and the re-wrap of every tenant's keys under a new master key.
//! Each transaction carries its own audit record, so a run killed midway leaves an honest trail;
//! the adapters (`api/keys.rs`) decode and authorize, the SQL is in `store/`.

use kit::access::RequestContext;
use kit::{ApiError, Db, Tenant, TenantTx};

use crate::api::tenant_record;
use crate::domain::envelope::Envelope;
use crate::domain::path::{SecretPath, secret_aad};
use crate::domain::retention::period_key_aad;
use crate::domain::signing::seal_aad;
use crate::error::VaultError;
use crate::keyring::{Keyring, subject_aad};
use crate::store::keys::{self as key_store, notify_key_change};
use crate::store::{self, Sealed};

/// What a rewrap of a tenant moved, and what it left under older key versions.
#[derive(Debug, Clone, Copy)]
pub struct Rewrapped {
    /// The tenant key version everything now sits under.
    pub active_version: u32,
    /// Stored secret versions moved.
    pub secret_versions: u64,
    /// Subject, signing and period keys moved.
    pub keys: u64,
    /// Rows still under an older version (sealed by a concurrent writer, or held by another run).
    pub remaining: u64,
}

/// Moves everything of `tenant` sealed under older tenant key versions to the active one, `batch`
/// rows of each table at a time. Each batch commits on its own: a run killed in the middle keeps
/// its progress, and the next run continues with what is left.
pub async fn rewrap_tenant(
    db: &Db,
    keyring: &Keyring,
    ctx: &RequestContext,
    tenant: &Tenant,
    batch: i64,
) -> Result<Rewrapped, ApiError> {
    let (mut secret_versions, mut keys) = (0u64, 0u64);
    loop {
        let mut tx = db.begin(tenant).await?;
        let (s, k) = rewrap_batch(keyring, &mut tx, batch).await?;
        if s + k > 0 {
            tx.record(
                tenant_record(ctx, "vault.tenant.rewrap_batch", tenant)
                    .detail("stored_versions_moved", s)
                    .detail("subject_keys_moved", k),
            )
            .await?;
        }
        tx.commit().await?;
        secret_versions += s;
        keys += k;
        if s + k == 0 {
            break;
        }
    }
    let mut tx = db.begin(tenant).await?;
    let (active_version, _) = keyring.active(&mut tx).await?;
    let remaining = store::left_under(&mut tx, active_version).await?;
    tx.commit().await?;
    Ok(Rewrapped { active_version, secret_versions, keys, remaining })
}

/// One batch of rewrap: secret versions, subject keys, signing keys and period keys under older
/// tenant keys move to the active one. Returns (secret versions, keys) moved.
async fn rewrap_batch(keyring: &Keyring, tx: &mut TenantTx, batch: i64) -> Result<(u64, u64), ApiError> {
    let (active, active_key) = keyring.active(tx).await?;
    let tenant = tx.tenant().clone();
    let (mut secrets, mut keys) = (0, 0);
    for what in Sealed::ALL {
        for row in store::sealed_under(tx, what, active, batch).await? {
            let version = row.version as u32;
            let resealed = match what {
                Sealed::SecretVersions => {
                    let path = SecretPath::parse(&row.name)?;
                    let envelope = Envelope::decode(&row.sealed).map_err(|e| ApiError::internal(&e))?;
                    let old_key = keyring.version(tx, envelope.key_version).await?;
                    let aad = secret_aad(&tenant, &path, version);
                    let moved =
                        envelope.rewrap(&old_key, &active_key, active, &aad).map_err(|e| ApiError::internal(&e))?;
                    secrets += 1;
                    moved.encode()
                }
                Sealed::SubjectKeys | Sealed::SigningKeys | Sealed::PeriodKeys => {
                    let aad = match what {
                        Sealed::SubjectKeys => subject_aad(tenant.id.0, &row.name, version),
                        Sealed::PeriodKeys => period_key_aad(tenant.id.0, &row.name, version),
                        _ => seal_aad(tenant.id.0, &row.name, version),
                    };
                    let old_key = keyring.version(tx, row.key_version as u32).await?;
                    let key = Keyring::open_key(&old_key, &aad, &row.sealed)?;
                    keys += 1;
                    Keyring::seal_key(&active_key, &aad, &key)?
                }
            };
            store::reseal(tx, what, &row.name, row.version, &resealed, active).await?;
        }
    }
    Ok((secrets, keys))
}

/// Destroys the tenant key versions below the active one, refused (`REWRAP_INCOMPLETE`) while
/// anything is still sealed under them; returns the versions destroyed, oldest first. The caller
/// drops its cached keys; every other replica is notified on commit.
pub async fn retire_old_versions(
    keyring: &Keyring,
    ctx: &RequestContext,
    tx: &mut TenantTx,
) -> Result<Vec<u32>, ApiError> {
    let (active, _) = keyring.active(tx).await?;
    let remaining = store::left_under(tx, active).await?;
    if remaining > 0 {
        return Err(VaultError::RewrapIncomplete { remaining }.into());
    }
    let retired = key_store::retire_tenant_keys_below(tx, active).await?;
    let mut retired: Vec<u32> = retired.into_iter().map(|v| v as u32).collect();
    retired.sort_unstable();
    if !retired.is_empty() {
        notify_key_change(tx).await?;
        let tenant = tx.tenant().clone();
        tx.record(tenant_record(ctx, "vault.tenant_key.retire", &tenant).detail("versions", retired.clone())).await?;
    }
    Ok(retired)
}

/// Wraps every tenant's keys again under the current master key, one transaction per tenant;
/// returns (tenants, tenant key versions re-wrapped).
pub async fn rewrap_under_current_master(
    db: &Db,
    keyring: &Keyring,
    ctx: &RequestContext,
) -> Result<(usize, u32), ApiError> {
    let tenants = db.tenants().await?;
    let master_key_id = keyring.provider().key_id();
    let mut rewrapped = 0;
    for tenant in &tenants {
        let mut tx = db.begin(tenant).await?;
        let n = keyring.rewrap_under_current_master(&mut tx).await?;
        if n > 0 {
            let record = tenant_record(ctx, "vault.master_key.rewrap", tenant).detail("tenant_keys", n);
            tx.record(record.detail("master_key_id", master_key_id)).await?;
        }
        tx.commit().await?;
        rewrapped += n;
    }
    tracing::info!(tenants = tenants.len(), rewrapped, master_key = master_key_id, "master key rotation done");
    Ok((tenants.len(), rewrapped))
}
