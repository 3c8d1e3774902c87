//! SQL of ledger-svc's tenant tables. Every function runs inside a `TenantTx`. Amounts cross the
//! wire as decimal text (`::text` out, `::numeric` in): exact, and no float ever appears. Batch
//! writes are set-based (`UNNEST` of arrays): a batch costs the same dozen statements whether it
//! holds one transfer or 8,190.
//!
//! Rows are looked up by id list as `unnest($1) CROSS JOIN LATERAL (… WHERE id = w.want LIMIT 1)`,
//! never as `id = ANY($1)` or a plain join, and the probes run unprepared (`persistent(false)`;
//! the account update, which is no probe, stays prepared, see there). The other forms become a
//! scan of every row of the tenant (times every id) when statistics are missing or stale — a new
//! tenant's first minute, before autovacuum has analyzed its tables. And a prepared statement, even of the lateral form, switches to a generic
//! plan after five executions: made while the table was a page or two, that plan is a scan per
//! id, and it stays cached on the connection until the table is analyzed. Planned per call, the
//! lateral form is one primary-key probe per id.

use std::collections::{BTreeMap, HashMap};

use kit::tenancy::db_error;
use kit::{ApiError, TenantTx};
use uuid::Uuid;

use crate::domain::engine::{Effects, HistoryRow, Prior, Resolution, ResolutionKind};
use crate::domain::receipt::Receipt;
use crate::domain::{Account, Balances, Transfer, TransferInput, TransferState};

fn amount(raw: &str) -> Result<u128, ApiError> {
    raw.parse::<u128>().map_err(|e| ApiError::internal(&format!("stored amount {raw:?}: {e}")))
}

#[derive(sqlx::FromRow)]
struct AccountRow {
    id: Uuid,
    ledger: String,
    code: i32,
    owner: String,
    flags: i32,
    #[sqlx(json)]
    metadata: BTreeMap<String, String>,
    debits_pending: String,
    debits_posted: String,
    credits_pending: String,
    credits_posted: String,
    ts: i64,
}

impl TryFrom<AccountRow> for Account {
    type Error = ApiError;
    fn try_from(r: AccountRow) -> Result<Self, ApiError> {
        Ok(Account {
            id: r.id,
            ledger: r.ledger,
            code: r.code as u32,
            owner: r.owner,
            flags: r.flags,
            metadata: r.metadata,
            balances: Balances {
                debits_pending: amount(&r.debits_pending)?,
                debits_posted: amount(&r.debits_posted)?,
                credits_pending: amount(&r.credits_pending)?,
                credits_posted: amount(&r.credits_posted)?,
            },
            ts: r.ts,
        })
    }
}

const ACCOUNT_COLUMNS: &str = "id, ledger, code, owner, flags, metadata, debits_pending::text AS debits_pending, \
     debits_posted::text AS debits_posted, credits_pending::text AS credits_pending, \
     credits_posted::text AS credits_posted, ts";

#[derive(sqlx::FromRow)]
struct TransferRow {
    id: Uuid,
    debit_account_id: Uuid,
    credit_account_id: Uuid,
    amount: String,
    pending_id: Option<Uuid>,
    timeout_seconds: i32,
    ledger: String,
    code: i32,
    flags: i32,
    #[sqlx(json)]
    metadata: BTreeMap<String, String>,
    ts: i64,
    state: String,
    expires_at: Option<i64>,
    receipt_seq: i64,
    content_hash: Vec<u8>,
}

impl TransferRow {
    fn into_transfer(self) -> Result<(Transfer, Vec<u8>), ApiError> {
        Ok((
            Transfer {
                id: self.id,
                debit_account_id: self.debit_account_id,
                credit_account_id: self.credit_account_id,
                amount: amount(&self.amount)?,
                pending_id: self.pending_id,
                timeout_seconds: self.timeout_seconds as u32,
                ledger: self.ledger,
                code: self.code as u32,
                flags: self.flags,
                metadata: self.metadata,
                ts: self.ts,
                state: TransferState::parse(&self.state),
                expires_at: self.expires_at,
                receipt_seq: self.receipt_seq,
            },
            self.content_hash,
        ))
    }
}

const TRANSFER_COLUMNS: &str = "id, debit_account_id, credit_account_id, amount::text AS amount, pending_id, \
     timeout_seconds, ledger, code, flags, metadata, ts, state, expires_at, receipt_seq, content_hash";

/// Transfers whose ids are in `$1` (one primary-key probe per id).
///
/// Callers run it unprepared (`persistent(false)`), so it is planned for the table as it is now.
/// A prepared statement switches to a generic plan after five executions; made in a new tenant's
/// first batches, while `transfers` was a page or two, that plan was a sequential scan per id,
/// and it stayed in use on that connection until autovacuum's first ANALYZE of the table (up to a
/// minute or more): single transfers into a new tenant ran at a quarter of their rate, the probe
/// costing 9 ms instead of 0.1 ms. Planning it costs well under a millisecond per batch.
fn transfers_by_id() -> String {
    format!(
        "SELECT {TRANSFER_COLUMNS} FROM unnest($1::uuid[]) AS w(want) \
         CROSS JOIN LATERAL (SELECT * FROM transfers t WHERE t.id = w.want LIMIT 1) AS t"
    )
}

/// Serialises the tenant's batches and returns the chain head `(seq, hash, last_ts)`.
pub async fn lock_head(tx: &mut TenantTx) -> Result<(i64, Vec<u8>, i64), ApiError> {
    for _ in 0..2 {
        let head: Option<(i64, Vec<u8>, i64)> =
            tx.optional(sqlx::query_as("SELECT seq, hash, last_ts FROM receipt_head FOR UPDATE")).await?;
        if let Some(head) = head {
            return Ok(head);
        }
        tx.execute(
            sqlx::query("INSERT INTO receipt_head (seq, hash, last_ts) VALUES (0, $1, 0) ON CONFLICT DO NOTHING")
                .bind(crate::domain::receipt::GENESIS.as_slice()),
        )
        .await?;
    }
    Err(ApiError::internal(&"receipt head cannot be created"))
}

/// Limits the transaction's row-level security to the accounts `subject` owns (an owner-scoped
/// caller). `subject` was checked to be of a conservative alphabet (`api::scope`).
pub async fn scope_to_owner(tx: &mut TenantTx, subject: &str) -> Result<(), ApiError> {
    tx.execute(sqlx::query(&format!("SET LOCAL strongroom.owner_subject TO '{subject}'"))).await?;
    Ok(())
}

/// Creates a ledger (currency); false when its code exists already.
pub async fn insert_ledger(tx: &mut TenantTx, code: &str, scale: i16, description: &str) -> Result<bool, ApiError> {
    let inserted = tx
        .execute(
            sqlx::query("INSERT INTO ledgers (code, scale, description) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(code)
                .bind(scale)
                .bind(description),
        )
        .await?;
    Ok(inserted == 1)
}

/// The scale of an existing ledger.
pub async fn ledger_scale(tx: &mut TenantTx, code: &str) -> Result<i16, ApiError> {
    tx.scalar(sqlx::query_scalar("SELECT scale FROM ledgers WHERE code = $1").bind(code)).await
}

/// Every ledger: `(code, scale, description)`, by code.
pub async fn ledgers(tx: &mut TenantTx) -> Result<Vec<(String, i16, String)>, ApiError> {
    tx.all(sqlx::query_as("SELECT code, scale, description FROM ledgers ORDER BY code")).await
}

/// What the ids already stand for (created or failed).
pub async fn prior(tx: &mut TenantTx, ids: &[Uuid]) -> Result<HashMap<Uuid, Prior>, ApiError> {
    let mut out = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let rows: Vec<TransferRow> = tx.all(sqlx::query_as(&transfers_by_id()).bind(ids).persistent(false)).await?;
    for row in rows {
        let (transfer, content_hash) = row.into_transfer()?;
        out.insert(transfer.id, Prior::Created { transfer, content_hash });
    }
    let failures: Vec<(Uuid, String, serde_json::Value, Vec<u8>)> = tx
        .all(
            sqlx::query_as(
                "SELECT f.id, f.reason, f.content, f.content_hash FROM unnest($1::uuid[]) AS w(want) \
             CROSS JOIN LATERAL (SELECT * FROM transfer_failures f WHERE f.id = w.want LIMIT 1) AS f",
            )
            .bind(ids)
            .persistent(false),
        )
        .await?;
    for (id, reason, content, content_hash) in failures {
        let content = input_from_json(&content)?;
        out.insert(id, Prior::Failed { reason, content, content_hash });
    }
    Ok(out)
}

/// Transfers by id (pending transfers a batch resolves).
pub async fn transfers(tx: &mut TenantTx, ids: &[Uuid]) -> Result<Vec<Transfer>, ApiError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<TransferRow> = tx.all(sqlx::query_as(&transfers_by_id()).bind(ids).persistent(false)).await?;
    rows.into_iter().map(|r| r.into_transfer().map(|(t, _)| t)).collect()
}

/// Locks the accounts in one global order, so concurrent batches never deadlock: `ids` must be
/// sorted, and each row is locked as the probe for its id reaches it, in array order.
pub async fn lock_accounts(tx: &mut TenantTx, ids: &[Uuid]) -> Result<HashMap<Uuid, Account>, ApiError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    debug_assert!(ids.is_sorted());
    let rows: Vec<AccountRow> = tx
        .all(
            sqlx::query_as(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM unnest($1::uuid[]) AS w(want) \
             CROSS JOIN LATERAL (SELECT * FROM accounts a WHERE a.id = w.want LIMIT 1 FOR UPDATE) AS a"
            ))
            .bind(ids)
            // Unprepared, as `transfers_by_id`: a tenant may open accounts while its first batches run.
            .persistent(false),
        )
        .await?;
    rows.into_iter().map(|r| Account::try_from(r).map(|a| (a.id, a))).collect()
}

pub async fn account(tx: &mut TenantTx, id: Uuid) -> Result<Option<Account>, ApiError> {
    let row: Option<AccountRow> =
        tx.optional(sqlx::query_as(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1")).bind(id)).await?;
    row.map(Account::try_from).transpose()
}

/// Inserts an account; `false` when the id exists.
pub async fn insert_account(tx: &mut TenantTx, a: &Account) -> Result<bool, ApiError> {
    let metadata = serde_json::to_value(&a.metadata).map_err(|e| ApiError::internal(&e))?;
    let done = sqlx::query(
        "INSERT INTO accounts (id, ledger, code, owner, flags, metadata, ts) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT DO NOTHING",
    )
    .bind(a.id)
    .bind(&a.ledger)
    .bind(a.code as i32)
    .bind(&a.owner)
    .bind(a.flags)
    .bind(metadata)
    .bind(a.ts)
    .execute(tx.conn())
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("23503") => {
            ApiError::new(kit::ErrorCode::FailedPrecondition, "LEDGER_NOT_FOUND", "ledger does not exist")
        }
        _ => db_error(e),
    })?;
    Ok(done.rows_affected() == 1)
}

pub async fn transfer(tx: &mut TenantTx, id: Uuid) -> Result<Option<Transfer>, ApiError> {
    let row: Option<TransferRow> = tx
        .optional(sqlx::query_as(&format!("SELECT {TRANSFER_COLUMNS} FROM transfers WHERE id = $1")).bind(id))
        .await?;
    row.map(|r| r.into_transfer().map(|(t, _)| t)).transpose()
}

/// Transfers of an account after timestamp `after`, oldest first.
pub async fn account_transfers(
    tx: &mut TenantTx,
    account: Uuid,
    after: i64,
    limit: i64,
) -> Result<Vec<Transfer>, ApiError> {
    let rows: Vec<TransferRow> = tx
        .all(
            sqlx::query_as(&format!(
                "SELECT {TRANSFER_COLUMNS} FROM ( \
           (SELECT * FROM transfers WHERE debit_account_id = $1 AND ts > $2 ORDER BY ts LIMIT $3) \
           UNION ALL \
           (SELECT * FROM transfers WHERE credit_account_id = $1 AND ts > $2 ORDER BY ts LIMIT $3) \
         ) AS t ORDER BY ts LIMIT $3"
            ))
            .bind(account)
            .bind(after)
            .bind(limit),
        )
        .await?;
    rows.into_iter().map(|r| r.into_transfer().map(|(t, _)| t)).collect()
}

/// Every account `owner` owns, by id.
pub async fn owner_accounts(tx: &mut TenantTx, owner: &str) -> Result<Vec<Account>, ApiError> {
    let rows: Vec<AccountRow> = tx
        .all(
            sqlx::query_as(&format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE owner = $1 ORDER BY id")).bind(owner),
        )
        .await?;
    rows.into_iter().map(Account::try_from).collect()
}

/// Up to `limit` transfers debiting or crediting an account of `owner`, after `after`, oldest first.
pub async fn owner_transfers(
    tx: &mut TenantTx,
    owner: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<Transfer>, ApiError> {
    let rows: Vec<TransferRow> = tx
        .all(
            sqlx::query_as(&format!(
                "SELECT {TRANSFER_COLUMNS} FROM transfers \
                  WHERE (debit_owner = $1 OR credit_owner = $1) AND ts > $2 ORDER BY ts LIMIT $3"
            ))
            .bind(owner)
            .bind(after)
            .bind(limit),
        )
        .await?;
    rows.into_iter().map(|r| r.into_transfer().map(|(t, _)| t)).collect()
}

/// Balance changes of an account at or before `at`, newest first, starting before `before`.
pub async fn balance_history(
    tx: &mut TenantTx,
    account: Uuid,
    at: i64,
    limit: i64,
) -> Result<Vec<(i64, Uuid, Balances)>, ApiError> {
    let rows: Vec<(i64, Uuid, String, String, String, String)> = tx.all(sqlx::query_as(
        "SELECT ts, transfer_id, debits_pending::text, debits_posted::text, credits_pending::text, credits_posted::text \
         FROM balance_history WHERE account_id = $1 AND ts <= $2 ORDER BY ts DESC LIMIT $3",
    )
    .bind(account)
    .bind(at)
    .bind(limit)).await?;
    rows.into_iter()
        .map(|(ts, id, a, b, c, d)| {
            Ok((
                ts,
                id,
                Balances {
                    debits_pending: amount(&a)?,
                    debits_posted: amount(&b)?,
                    credits_pending: amount(&c)?,
                    credits_posted: amount(&d)?,
                },
            ))
        })
        .collect()
}

/// True once this service's migrations created its tables in the tenant's schema.
pub async fn has_tables(tx: &mut TenantTx) -> Result<bool, ApiError> {
    tx.scalar(sqlx::query_scalar("SELECT to_regclass('transfers') IS NOT NULL")).await
}

/// Ids of pending transfers whose timeout passed at `now`.
pub async fn expired_pending(tx: &mut TenantTx, now: i64, limit: i64) -> Result<Vec<Uuid>, ApiError> {
    tx.scalars(
        sqlx::query_scalar(
            "SELECT id FROM transfers WHERE state = 'pending' AND expires_at IS NOT NULL AND expires_at <= $1 \
         ORDER BY expires_at LIMIT $2",
        )
        .bind(now)
        .bind(limit),
    )
    .await
}

/// How many pending transfers expire after `from` and at or before `until` (nanoseconds since
/// the epoch): a range of the `transfers_expiry` index.
pub async fn pending_expiring(tx: &mut TenantTx, from: i64, until: i64) -> Result<i64, ApiError> {
    let tenant = tx.tenant().id.0;
    tx.scalar(
        sqlx::query_scalar(
            "SELECT count(*) FROM transfers WHERE tenant_id = $1 AND state = 'pending' AND expires_at IS NOT NULL \
             AND expires_at > $2 AND expires_at <= $3",
        )
        .bind(tenant)
        .bind(from)
        .bind(until),
    )
    .await
}

/// When the tenant's earliest pending transfer with a timeout expires (nanoseconds since the epoch).
pub async fn next_expiry(tx: &mut TenantTx) -> Result<Option<i64>, ApiError> {
    tx.optional_scalar(sqlx::query_scalar(
        "SELECT expires_at FROM transfers WHERE state = 'pending' AND expires_at IS NOT NULL ORDER BY expires_at LIMIT 1",
    )).await
}

pub fn input_to_json(t: &TransferInput) -> serde_json::Value {
    serde_json::json!({
        "id": t.id,
        "debit_account_id": t.debit_account_id,
        "credit_account_id": t.credit_account_id,
        "amount": t.amount.to_string(),
        "pending_id": t.pending_id,
        "timeout_seconds": t.timeout_seconds,
        "ledger": t.ledger,
        "code": t.code,
        "flags": t.flags,
        "metadata": t.metadata,
    })
}

fn input_from_json(v: &serde_json::Value) -> Result<TransferInput, ApiError> {
    #[derive(serde::Deserialize)]
    struct Stored {
        id: Uuid,
        debit_account_id: Uuid,
        credit_account_id: Uuid,
        amount: String,
        pending_id: Option<Uuid>,
        timeout_seconds: u32,
        ledger: String,
        code: u32,
        flags: i32,
        metadata: BTreeMap<String, String>,
    }
    let s: Stored = serde_json::from_value(v.clone()).map_err(|e| ApiError::internal(&e))?;
    Ok(TransferInput {
        id: s.id,
        debit_account_id: s.debit_account_id,
        credit_account_id: s.credit_account_id,
        amount: amount(&s.amount)?,
        pending_id: s.pending_id,
        timeout_seconds: s.timeout_seconds,
        ledger: s.ledger,
        code: s.code,
        flags: s.flags,
        metadata: s.metadata,
    })
}

/// The audit records of a batch's new transfers, one per entry of `Effects::created` (same order),
/// written by the statement that inserts the transfers.
pub struct CreatedAudit<'a> {
    pub event_ids: Vec<Uuid>,
    /// 1-based index into `actors` and `request_ids` (the submission the transfer came with).
    pub submissions: Vec<i32>,
    pub actions: Vec<&'static str>,
    pub actors: Vec<String>,
    pub request_ids: Vec<Option<&'a str>>,
    pub occurred_at: chrono::DateTime<chrono::Utc>,
    pub trace_id: Option<String>,
}

/// Writes a batch's effects with one statement per table. `hashes` maps new transfer ids to the
/// content hash of their request.
///
/// New transfers and their audit records are inserted by one statement from the same arrays: the
/// records' details are built by PostgreSQL from the transfer columns (the same keys and JSON types
/// as `AuditRecord::detail` gives them), so the batch neither serialises 8,190 JSON documents nor
/// makes PostgreSQL parse them, and a transfer row cannot be written without its record. Other
/// records (failures, refusals, expiries) go through `TenantTx::record_all`.
pub async fn write_effects(
    tx: &mut TenantTx,
    fx: &Effects,
    hashes: &HashMap<Uuid, Vec<u8>>,
    owners: &HashMap<Uuid, String>,
    receipt_seq: i64,
    audit: &CreatedAudit<'_>,
) -> Result<(), ApiError> {
    // Given rather than defaulted: the column default reads and parses the setting once per row.
    // The tenant policy's WITH CHECK still compares it with the transaction's tenant.
    let tenant_id = tx.tenant().id.0;
    if !fx.created.is_empty() {
        // The records below are written by this function's own SQL.
        tx.mark_recorded();
    }
    let conn = tx.conn();
    if !fx.created.is_empty() {
        let n = fx.created.len();
        if audit.event_ids.len() != n || audit.submissions.len() != n || audit.actions.len() != n {
            return Err(ApiError::internal(&"audit records do not match the new transfers"));
        }
        let (mut ids, mut drs, mut crs, mut amounts, mut pids, mut timeouts) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (
            mut ledgers,
            mut codes,
            mut flags,
            mut metas,
            mut tss,
            mut states,
            mut expires,
            mut chs,
            mut downers,
            mut cowners,
        ) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for t in &fx.created {
            ids.push(t.id);
            drs.push(t.debit_account_id);
            crs.push(t.credit_account_id);
            amounts.push(t.amount.to_string());
            pids.push(t.pending_id);
            timeouts.push(t.timeout_seconds as i32);
            ledgers.push(t.ledger.as_str());
            codes.push(t.code as i32);
            flags.push(t.flags);
            metas.push(if t.metadata.is_empty() {
                "{}".to_owned()
            } else {
                serde_json::to_string(&t.metadata).map_err(|e| ApiError::internal(&e))?
            });
            tss.push(t.ts);
            states.push(t.state.as_str());
            expires.push(t.expires_at);
            chs.push(hashes.get(&t.id).map(Vec::as_slice).unwrap_or_default());
            downers.push(owners.get(&t.debit_account_id).map(String::as_str).unwrap_or_default());
            cowners.push(owners.get(&t.credit_account_id).map(String::as_str).unwrap_or_default());
        }
        sqlx::query(
            "WITH u AS MATERIALIZED ( \
               SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::uuid[], $6::int[], $7::text[], \
                 $8::int[], $9::int[], $10::text[], $11::bigint[], $12::text[], $13::bigint[], $15::bytea[], $16::text[], \
                 $17::text[], $18::uuid[], $19::int[], $20::text[]) \
               AS u(id, dr, cr, amount, pid, timeout, ledger, code, flags, meta, ts, state, expires, ch, downer, cowner, \
                 event_id, sub, action) \
             ), created AS ( \
               INSERT INTO transfers (tenant_id, id, debit_account_id, credit_account_id, amount, pending_id, timeout_seconds, \
                 ledger, code, flags, metadata, ts, state, expires_at, receipt_seq, content_hash, debit_owner, credit_owner) \
               SELECT $26, u.id, u.dr, u.cr, u.amount::numeric, u.pid, u.timeout, u.ledger, u.code, u.flags, u.meta::jsonb, u.ts, \
                 u.state, u.expires, $14, u.ch, u.downer, u.cowner FROM u \
             ) \
             INSERT INTO audit_outbox (tenant_id, event_id, occurred_at, service, actor, action, resource, outcome, request_id, \
               trace_id, details) \
             SELECT $26, u.event_id, $21, $22, ($23::text[])[u.sub], u.action, 'transfer/' || u.id::text, 'success', \
               ($24::text[])[u.sub], $25, \
               jsonb_strip_nulls(jsonb_build_object('debit_account_id', u.dr, 'credit_account_id', u.cr, 'amount', u.amount, \
                 'ledger', u.ledger, 'timestamp', u.ts, 'receipt_seq', $14, 'pending_id', u.pid)) \
             FROM u",
        )
        .bind(&ids)
        .bind(&drs)
        .bind(&crs)
        .bind(&amounts)
        .bind(&pids)
        .bind(&timeouts)
        .bind(&ledgers)
        .bind(&codes)
        .bind(&flags)
        .bind(&metas)
        .bind(&tss)
        .bind(&states)
        .bind(&expires)
        .bind(receipt_seq)
        .bind(&chs)
        .bind(&downers)
        .bind(&cowners)
        .bind(&audit.event_ids)
        .bind(&audit.submissions)
        .bind(&audit.actions)
        .bind(audit.occurred_at)
        .bind(crate::SERVICE)
        .bind(&audit.actors)
        .bind(&audit.request_ids)
        .bind(&audit.trace_id)
        .bind(tenant_id)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    }
    if !fx.failures.is_empty() {
        let ids: Vec<Uuid> = fx.failures.iter().map(|f| f.input.id).collect();
        let reasons: Vec<&str> = fx.failures.iter().map(|f| f.reason.as_str()).collect();
        let contents: Vec<String> = fx.failures.iter().map(|f| input_to_json(&f.input).to_string()).collect();
        let hashes: Vec<Vec<u8>> = fx.failures.iter().map(|f| f.input.content_hash()).collect();
        let tss: Vec<i64> = fx.failures.iter().map(|f| f.ts).collect();
        sqlx::query(
            "INSERT INTO transfer_failures (id, reason, content, content_hash, ts) \
             SELECT u.id, u.reason, u.content::jsonb, u.ch, u.ts \
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::bigint[]) AS u(id, reason, content, ch, ts)",
        )
        .bind(&ids)
        .bind(&reasons)
        .bind(&contents)
        .bind(&hashes)
        .bind(&tss)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    }
    if !fx.accounts.is_empty() {
        let ids: Vec<Uuid> = fx.accounts.iter().map(|a| a.0).collect();
        let b = |f: fn(&Balances) -> u128| fx.accounts.iter().map(|a| f(&a.1).to_string()).collect::<Vec<_>>();
        sqlx::query(
            "UPDATE accounts SET debits_pending = u.dp::numeric, debits_posted = u.dpo::numeric, \
             credits_pending = u.cp::numeric, credits_posted = u.cpo::numeric \
             FROM (SELECT r.tid, u.* FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[]) \
                   AS u(id, dp, dpo, cp, cpo) \
                   CROSS JOIN LATERAL (SELECT a.ctid AS tid FROM accounts a WHERE a.id = u.id LIMIT 1) AS r) AS u \
             WHERE accounts.ctid = u.tid",
        )
        .bind(&ids)
        .bind(b(|b| b.debits_pending))
        .bind(b(|b| b.debits_posted))
        .bind(b(|b| b.credits_pending))
        .bind(b(|b| b.credits_posted))
        // Prepared, unlike the probes: it runs in every batch, and every transfer updates the
        // accounts, so autovacuum analyzes a new tenant's `accounts` early. Planned per call it
        // measured 0–15 % fewer single transfers/s (three alternating pairs, within the noise).
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    }
    if !fx.history.is_empty() {
        let h = &fx.history;
        let ids: Vec<Uuid> = h.iter().map(|r| r.account_id).collect();
        let tss: Vec<i64> = h.iter().map(|r| r.ts).collect();
        let tids: Vec<Uuid> = h.iter().map(|r| r.transfer_id).collect();
        let owners: Vec<&str> = h.iter().map(|r| r.owner.as_str()).collect();
        let b = |f: fn(&Balances) -> u128| h.iter().map(|r| f(&r.balances).to_string()).collect::<Vec<_>>();
        sqlx::query(
            "INSERT INTO balance_history (account_id, ts, transfer_id, debits_pending, debits_posted, credits_pending, \
             credits_posted, owner) \
             SELECT u.id, u.ts, u.tid, u.dp::numeric, u.dpo::numeric, u.cp::numeric, u.cpo::numeric, u.owner \
             FROM UNNEST($1::uuid[], $2::bigint[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[]) \
             AS u(id, ts, tid, dp, dpo, cp, cpo, owner)",
        )
        .bind(&ids)
        .bind(&tss)
        .bind(&tids)
        .bind(b(|b| b.debits_pending))
        .bind(b(|b| b.debits_posted))
        .bind(b(|b| b.credits_pending))
        .bind(b(|b| b.credits_posted))
        .bind(&owners)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    }
    if !fx.state_changes.is_empty() {
        let ids: Vec<Uuid> = fx.state_changes.iter().map(|s| s.0).collect();
        let states: Vec<&str> = fx.state_changes.iter().map(|s| s.1.as_str()).collect();
        sqlx::query(
            "UPDATE transfers SET state = u.state \
             FROM (SELECT r.tid, u.state FROM UNNEST($1::uuid[], $2::text[]) AS u(id, state) \
                   CROSS JOIN LATERAL (SELECT t.ctid AS tid FROM transfers t WHERE t.id = u.id LIMIT 1) AS r) AS u \
             WHERE transfers.ctid = u.tid AND transfers.state = 'pending'",
        )
        .bind(&ids)
        .bind(&states)
        .persistent(false)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    }
    if !fx.resolutions.is_empty() {
        let r = &fx.resolutions;
        let pids: Vec<Uuid> = r.iter().map(|r| r.pending_id).collect();
        let kinds: Vec<&str> = r.iter().map(|r| r.kind.as_str()).collect();
        let tids: Vec<Option<Uuid>> = r.iter().map(|r| r.transfer_id).collect();
        let amounts: Vec<String> = r.iter().map(|r| r.amount.to_string()).collect();
        let tss: Vec<i64> = r.iter().map(|r| r.ts).collect();
        sqlx::query(
            "INSERT INTO pending_resolutions (pending_id, kind, transfer_id, amount, ts, receipt_seq) \
             SELECT u.pid, u.kind, u.tid, u.amount::numeric, u.ts, $6 \
             FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::bigint[]) AS u(pid, kind, tid, amount, ts)",
        )
        .bind(&pids)
        .bind(&kinds)
        .bind(&tids)
        .bind(&amounts)
        .bind(&tss)
        .bind(receipt_seq)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    }
    Ok(())
}

/// Appends a receipt.
#[allow(clippy::too_many_arguments)]
pub async fn append_receipt(
    tx: &mut TenantTx,
    seq: i64,
    prev_hash: &[u8],
    content_hash: &[u8],
    hash: &[u8],
    entries: i32,
    first_ts: i64,
    last_ts: i64,
) -> Result<(), ApiError> {
    tx.execute(
        sqlx::query(
            "INSERT INTO receipts (seq, prev_hash, content_hash, hash, entries, first_ts, last_ts) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(seq)
        .bind(prev_hash)
        .bind(content_hash)
        .bind(hash)
        .bind(entries)
        .bind(first_ts)
        .bind(last_ts),
    )
    .await?;
    Ok(())
}

pub async fn move_head(tx: &mut TenantTx, seq: i64, hash: &[u8], last_ts: i64) -> Result<(), ApiError> {
    tx.execute(
        sqlx::query("UPDATE receipt_head SET seq = $1, hash = $2, last_ts = $3").bind(seq).bind(hash).bind(last_ts),
    )
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct ReceiptRow {
    seq: i64,
    prev_hash: Vec<u8>,
    content_hash: Vec<u8>,
    hash: Vec<u8>,
    entries: i32,
    signature: Option<Vec<u8>>,
    key_version: Option<i32>,
    first_ts: i64,
    last_ts: i64,
    created_at: chrono::DateTime<chrono::Utc>,
}

impl ReceiptRow {
    fn into_record(self) -> ReceiptRecord {
        ReceiptRecord {
            receipt: Receipt {
                seq: self.seq,
                prev_hash: self.prev_hash,
                content_hash: self.content_hash,
                hash: self.hash,
                entries: self.entries,
                signature: self.signature,
                key_version: self.key_version,
            },
            first_ts: self.first_ts,
            last_ts: self.last_ts,
            created_at: self.created_at,
        }
    }
}

/// A receipt with what is stored besides its link of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptRecord {
    pub receipt: Receipt,
    /// The timestamps of its first and last entries.
    pub first_ts: i64,
    pub last_ts: i64,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Up to `limit` receipts from `from` on, by sequence number.
pub async fn receipts(tx: &mut TenantTx, from: i64, limit: i64) -> Result<Vec<Receipt>, ApiError> {
    Ok(receipt_records(tx, from, limit).await?.into_iter().map(|r| r.receipt).collect())
}

/// Up to `limit` receipts from `from` on, by sequence number, with their timestamps.
pub async fn receipt_records(tx: &mut TenantTx, from: i64, limit: i64) -> Result<Vec<ReceiptRecord>, ApiError> {
    let rows: Vec<ReceiptRow> = tx
        .all(
            sqlx::query_as(
                "SELECT seq, prev_hash, content_hash, hash, entries, signature, key_version, first_ts, last_ts, \
                 created_at FROM receipts WHERE seq >= $1 ORDER BY seq LIMIT $2",
            )
            .bind(from)
            .bind(limit),
        )
        .await?;
    Ok(rows.into_iter().map(ReceiptRow::into_record).collect())
}

/// The transfers and resolutions of receipts `from..=to`, grouped by receipt, in timestamp order.
pub async fn receipt_entries(
    tx: &mut TenantTx,
    from: i64,
    to: i64,
) -> Result<HashMap<i64, (Vec<Transfer>, Vec<Resolution>)>, ApiError> {
    let rows: Vec<TransferRow> = tx
        .all(
            sqlx::query_as(&format!(
                "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE receipt_seq BETWEEN $1 AND $2 ORDER BY receipt_seq, ts"
            ))
            .bind(from)
            .bind(to),
        )
        .await?;
    let mut out: HashMap<i64, (Vec<Transfer>, Vec<Resolution>)> = HashMap::new();
    for row in rows {
        let (t, _) = row.into_transfer()?;
        out.entry(t.receipt_seq).or_default().0.push(t);
    }
    let res: Vec<(Uuid, String, Option<Uuid>, String, i64, i64)> = tx
        .all(
            sqlx::query_as(
                "SELECT pending_id, kind, transfer_id, amount::text, ts, receipt_seq FROM pending_resolutions \
         WHERE receipt_seq BETWEEN $1 AND $2 ORDER BY receipt_seq, ts",
            )
            .bind(from)
            .bind(to),
        )
        .await?;
    for (pending_id, kind, transfer_id, a, ts, seq) in res {
        let kind = ResolutionKind::parse(&kind).unwrap_or(ResolutionKind::Expired);
        out.entry(seq).or_default().1.push(Resolution { pending_id, kind, transfer_id, amount: amount(&a)?, ts });
    }
    Ok(out)
}

// What a terminated tenant's export reads (`export`): every row, a page at a time in key order,
// each page one range of the table's primary key. The first page starts at the key's smallest
// value inclusively (`after: None`), so even a row keyed by a nil UUID is exported.

/// `>` after a key, `>=` from the smallest one.
fn past(after: bool) -> &'static str {
    if after { ">" } else { ">=" }
}

/// Up to `limit` ledgers after code `after`, by code: `(code, scale, description, created_at)`.
pub async fn ledgers_page(
    tx: &mut TenantTx,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<(String, i16, String, chrono::DateTime<chrono::Utc>)>, ApiError> {
    tx.all(
        sqlx::query_as(&format!(
            "SELECT code, scale, description, created_at FROM ledgers WHERE code {} $1 ORDER BY code LIMIT $2",
            past(after.is_some())
        ))
        .bind(after.unwrap_or_default())
        .bind(limit),
    )
    .await
}

/// Up to `limit` accounts after id `after`, by id.
pub async fn accounts_page(tx: &mut TenantTx, after: Option<Uuid>, limit: i64) -> Result<Vec<Account>, ApiError> {
    let rows: Vec<AccountRow> = tx
        .all(
            sqlx::query_as(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id {} $1 ORDER BY id LIMIT $2",
                past(after.is_some())
            ))
            .bind(after.unwrap_or_default())
            .bind(limit)
            .persistent(false),
        )
        .await?;
    rows.into_iter().map(Account::try_from).collect()
}

/// Up to `limit` balance changes after `(account_id, ts)` `after`, by account and time.
pub async fn balance_history_page(
    tx: &mut TenantTx,
    after: Option<(Uuid, i64)>,
    limit: i64,
) -> Result<Vec<HistoryRow>, ApiError> {
    let (account, ts) = after.unwrap_or((Uuid::nil(), i64::MIN));
    #[derive(sqlx::FromRow)]
    struct Row {
        account_id: Uuid,
        ts: i64,
        transfer_id: Uuid,
        debits_pending: String,
        debits_posted: String,
        credits_pending: String,
        credits_posted: String,
        owner: String,
    }
    let rows: Vec<Row> = tx
        .all(
            sqlx::query_as(&format!(
                "SELECT account_id, ts, transfer_id, debits_pending::text AS debits_pending, \
                 debits_posted::text AS debits_posted, credits_pending::text AS credits_pending, \
                 credits_posted::text AS credits_posted, owner FROM balance_history \
                 WHERE (account_id, ts) {} ($1, $2) ORDER BY account_id, ts LIMIT $3",
                past(after.is_some())
            ))
            .bind(account)
            .bind(ts)
            .bind(limit)
            .persistent(false),
        )
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(HistoryRow {
                account_id: r.account_id,
                ts: r.ts,
                transfer_id: r.transfer_id,
                balances: Balances {
                    debits_pending: amount(&r.debits_pending)?,
                    debits_posted: amount(&r.debits_posted)?,
                    credits_pending: amount(&r.credits_pending)?,
                    credits_posted: amount(&r.credits_posted)?,
                },
                owner: r.owner,
            })
        })
        .collect()
}

/// Up to `limit` transfers after id `after`, by id.
pub async fn transfers_page(tx: &mut TenantTx, after: Option<Uuid>, limit: i64) -> Result<Vec<Transfer>, ApiError> {
    let rows: Vec<TransferRow> = tx
        .all(
            sqlx::query_as(&format!(
                "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE id {} $1 ORDER BY id LIMIT $2",
                past(after.is_some())
            ))
            .bind(after.unwrap_or_default())
            .bind(limit)
            .persistent(false),
        )
        .await?;
    rows.into_iter().map(|r| r.into_transfer().map(|(t, _)| t)).collect()
}

/// Up to `limit` resolutions of pending transfers after pending id `after`, by pending id, each
/// with the receipt that covers it.
pub async fn resolutions_page(
    tx: &mut TenantTx,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<(Resolution, i64)>, ApiError> {
    let rows: Vec<(Uuid, String, Option<Uuid>, String, i64, i64)> = tx
        .all(
            sqlx::query_as(&format!(
                "SELECT pending_id, kind, transfer_id, amount::text, ts, receipt_seq FROM pending_resolutions \
                 WHERE pending_id {} $1 ORDER BY pending_id LIMIT $2",
                past(after.is_some())
            ))
            .bind(after.unwrap_or_default())
            .bind(limit)
            .persistent(false),
        )
        .await?;
    rows.into_iter()
        .map(|(pending_id, kind, transfer_id, a, ts, seq)| {
            let kind = ResolutionKind::parse(&kind)
                .ok_or_else(|| ApiError::internal(&format!("stored resolution kind {kind:?}")))?;
            Ok((Resolution { pending_id, kind, transfer_id, amount: amount(&a)?, ts }, seq))
        })
        .collect()
}

/// The chain head `(seq, hash, last_ts)`, if a batch ever ran.
pub async fn head_record(tx: &mut TenantTx) -> Result<Option<(i64, Vec<u8>, i64)>, ApiError> {
    tx.optional(sqlx::query_as("SELECT seq, hash, last_ts FROM receipt_head")).await
}

/// The versions of the signing key that signed the tenant's receipts, ascending.
pub async fn receipt_key_versions(tx: &mut TenantTx) -> Result<Vec<i32>, ApiError> {
    tx.scalars(sqlx::query_scalar(
        "SELECT DISTINCT key_version FROM receipts WHERE key_version IS NOT NULL ORDER BY key_version",
    ))
    .await
}

/// The newest unsigned receipt, if any.
pub async fn newest_unsigned(tx: &mut TenantTx) -> Result<Option<(i64, Vec<u8>)>, ApiError> {
    tx.optional(sqlx::query_as("SELECT seq, hash FROM receipts WHERE signature IS NULL ORDER BY seq DESC LIMIT 1"))
        .await
}

pub async fn set_signature(tx: &mut TenantTx, seq: i64, signature: &[u8], key_version: i32) -> Result<(), ApiError> {
    tx.execute(
        sqlx::query("UPDATE receipts SET signature = $2, key_version = $3 WHERE seq = $1 AND signature IS NULL")
            .bind(seq)
            .bind(signature)
            .bind(key_version),
    )
    .await?;
    Ok(())
}

pub async fn head(tx: &mut TenantTx) -> Result<Option<(i64, Vec<u8>)>, ApiError> {
    tx.optional(sqlx::query_as("SELECT seq, hash FROM receipt_head")).await
}
