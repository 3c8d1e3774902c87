//! SQL of the tenant's `audit_outbox`, which every service's transactions write (kit's
//! `TenantTx::record`) and only the sequencer reads, by taking rows out of it.

use kit::{ApiError, TenantTx};

use super::log::RecordFields;

#[derive(sqlx::FromRow)]
struct Positioned {
    position: i64,
    #[sqlx(flatten)]
    fields: RecordFields,
}

/// Takes (deletes) the oldest `limit` records of the outbox and returns them in outbox order. The
/// caller holds the sequencer lock; for the rest of `tx` the planner uses no sequential scans.
pub async fn take(tx: &mut TenantTx, limit: i64) -> Result<Vec<RecordFields>, ApiError> {
    // Only index and TID scans make sense here, whatever the statistics say. A new tenant's
    // outbox has none (or was analyzed while nearly empty): planned as a table of a few pages,
    // the DELETE became a scan of the whole queue comparing every row with each of up to `limit`
    // tuple ids — quadratic in the backlog, seconds per drain under a batch load, and the plan
    // stayed cached until the next ANALYZE.
    tx.execute(sqlx::query("SET LOCAL enable_seqscan = off")).await.map(drop)?;
    // Taken and deleted in one statement: the rows are found once, by position, and removed by
    // their tuple ids (a TID scan).
    let mut taken: Vec<Positioned> = tx.all(sqlx::query_as(
        "DELETE FROM audit_outbox WHERE ctid = ANY(ARRAY(SELECT ctid FROM audit_outbox ORDER BY position LIMIT $1)) \
         RETURNING position, event_id, occurred_at, service, actor, action, resource, outcome, request_id, trace_id, details",
    )
    .bind(limit)).await?;
    taken.sort_by_key(|row| row.position);
    Ok(taken.into_iter().map(|row| row.fields).collect())
}
