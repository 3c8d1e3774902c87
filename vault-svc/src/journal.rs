//! vault-svc's part of replaying the erasure journal on a restored database (`kit::journal`,
//! `strongroom backup restore`): the shreds a backup from before them would undo.

use kit::journal::Erasure;
use kit::outbox::{Actor, AuditRecord, Outcome};
use kit::{ApiError, TenantTx};

use crate::store::keys;

/// Applies `erasure` (recorded at `entry`) in `tx`'s tenant when it is vault-svc's; the key
/// versions it destroyed again (0 when the restored database already had them destroyed), or
/// `None` for another service's entry. Each replay that destroyed something is audited.
pub async fn replay(tx: &mut TenantTx, entry: &kit::journal::Entry, by: &str) -> Result<Option<u64>, ApiError> {
    let destroyed = match &entry.erasure {
        Erasure::SubjectShred { subject_sha256 } => keys::destroy_subject_keys_by_digest(tx, subject_sha256).await?,
        Erasure::TenantShred => keys::destroy_tenant_keys(tx).await?,
        _ => return Ok(None),
    };
    if destroyed > 0 {
        let record = AuditRecord::new(
            crate::SERVICE,
            Actor::Service(by.to_owned()),
            "vault.shred.replay",
            &format!("tenant/{}", tx.tenant().slug),
            Outcome::Success,
        )
        .detail("journal_entry", entry.id.to_string())
        .detail("kind", entry.erasure.kind())
        .detail("shredded_at", entry.time.to_rfc3339())
        .detail("destroyed_versions", destroyed);
        tx.record(record).await?;
    }
    Ok(Some(destroyed))
}
