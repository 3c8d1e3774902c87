//! Signed checkpoints: after a batch, the tree's new root is signed by the tenant's `audit` key in
//! vault-svc (the private key never leaves it) and stored as a C2SP signed note.

use kit::{ApiError, Db, Tenant};
use proto::vault::v1::signing_service_client::SigningServiceClient;

use crate::domain::merkle;
use crate::domain::note;
use crate::store;

/// Name of the tenant's signing key in vault-svc.
pub const KEY_NAME: &str = "audit";

pub type Signer = SigningServiceClient<kit::client::Channel>;

/// The checkpoint origin (and key name) of a tenant.
pub fn origin(tenant: &Tenant) -> String {
    format!("strongroom.audit/{}", tenant.slug)
}

/// Signs and stores a checkpoint of the current log if it grew since the latest one.
pub async fn make(db: &Db, signer: &Signer, tenant: &Tenant) -> Result<Option<u64>, ApiError> {
    let mut tx = db.begin(tenant).await?;
    let size = store::log::size(&mut tx).await?;
    let latest = store::checkpoints::latest(&mut tx).await?.map_or(0, |c| c.tree_size);
    if size == 0 || size <= latest {
        tx.rollback().await?;
        return Ok(None);
    }
    // The root of the first `size` entries, from O(log n) stored nodes.
    let root = store::log::compute(&mut tx, |n| merkle::root(size, &n)).await?;
    tx.commit().await?;
    let name = origin(tenant);
    let body = note::body(&name, size, &root);
    let signed = kit::signing::sign(signer, tenant.slug.as_str(), KEY_NAME, body.clone().into_bytes())
        .await
        .map_err(|s| ApiError::from_status(&s))?;
    let signed_note = note::signed_note(&body, &name, &signed.public_key, &signed.signature);
    let mut tx = db.begin(tenant).await?;
    store::checkpoints::insert(&mut tx, size, &root, &signed_note, signed.key_version as i32).await?;
    store::log::notify_readers(&mut tx).await?;
    tx.commit().await?;
    Ok(Some(size))
}
