//! auth-svc's part of replaying the erasure journal on a restored database (`kit::journal`,
//! `strongroom backup restore`): a user whose subject key vault-svc shredded after the backup was
//! deleted then, and is deleted again.

use kit::journal::Erasure;
use kit::outbox::{Actor, AuditRecord, Outcome};
use kit::{ApiError, TenantTx};

/// For a subject shred that named one of `tx`'s tenant's users who is not deleted in the restored
/// database, erases that user again as `DeleteUser` did (profile, password, blind index, second
/// factors, memberships; sessions ended, API keys revoked) and audits it. Returns the user.
pub async fn replay(tx: &mut TenantTx, entry: &kit::journal::Entry, by: &str) -> Result<Option<uuid::Uuid>, ApiError> {
    let Erasure::SubjectShred { subject_sha256 } = &entry.erasure else { return Ok(None) };
    let user: Option<uuid::Uuid> = tx
        .optional_scalar(
            sqlx::query_scalar(
                "SELECT id FROM users WHERE encode(sha256(convert_to(id::text, 'UTF8')), 'hex') = $1 AND status <> 'deleted'",
            )
            .bind(subject_sha256),
        )
        .await?;
    let Some(user) = user else { return Ok(None) };
    crate::api::users::erase(tx, user).await?;
    let record = AuditRecord::new(
        crate::SERVICE,
        Actor::Service(by.to_owned()),
        "user.delete.replay",
        &format!("user/{user}"),
        Outcome::Success,
    )
    .detail("journal_entry", entry.id.to_string())
    .detail("deleted_at", entry.time.to_rfc3339());
    tx.record(record).await?;
    Ok(Some(user))
}
