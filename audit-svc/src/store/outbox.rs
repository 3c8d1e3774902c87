//! SQL of the tenant's `audit_outbox`, which every service's transactions write (kit's
//! `TenantTx::record`) and only the sequencer reads, by taking rows out of it (the `signals` job
//! only counts them).

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

/// How many records wait in the outbox, counted up to `cap` (in position order, along the
/// outbox's index), and how many seconds ago the oldest of them (the next one to be taken)
/// occurred, 0 when none waits. The outbox stores no insertion time: `occurred_at` is the time
/// its writer gave the record, in the same transaction that inserted it, so by the writer's clock
/// (never read as below 0).
pub async fn backlog(tx: &mut TenantTx, cap: i64) -> Result<(u64, f64), ApiError> {
    let (waiting, oldest_age): (i64, f64) = tx
        .one(
            sqlx::query_as(
                "SELECT (SELECT count(*) FROM (SELECT 1 FROM audit_outbox ORDER BY position LIMIT $1) AS capped), \
                 coalesce((SELECT greatest(extract(epoch FROM now() - occurred_at), 0)::float8 \
                           FROM audit_outbox ORDER BY position LIMIT 1), 0)",
            )
            .bind(cap),
        )
        .await?;
    Ok((waiting.max(0) as u64, oldest_age))
}
