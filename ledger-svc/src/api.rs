//! gRPC adapter of `strongroom.ledger.v1.LedgerService`: decode, authorize, call the batcher or the
//! store, map results. Owner-scoped callers (`*.own` permissions) read through a transaction with
//! `strongroom.owner_subject` set, so row-level security hides other owners' rows as well.

use std::collections::{BTreeMap, HashSet};

use kit::access::RequestContext;
use kit::authz::{Permission, Reach};
use kit::client::Channel;
use kit::outbox::{Actor, AuditRecord, Outcome as AuditOutcome};
use kit::principal::Principal;
use kit::{ApiError, Db, Tenant, TenantTx};
use proto::ledger::v1 as pb;
use proto::vault::v1::signing_service_client::SigningServiceClient;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::SERVICE;
use crate::batcher::{Batcher, MAX_BATCH};
use crate::domain::engine::{Outcome, Submission};
use crate::domain::{Account, Balances, Transfer, TransferInput, TransferState, account_flags, amount, transfer_flags};
use crate::error::LedgerError;
use crate::{receipts, store};

#[derive(Clone)]
pub struct Ledger {
    pub db: Db,
    pub batcher: Batcher,
    pub signer: Option<SigningServiceClient<Channel>>,
}

/// Which rows a caller may see or move.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    All,
    Own(String),
}

/// `all` or its owner-scoped form (`all.own`), and which rows that lets the caller reach.
fn scope(p: &Principal, all: Permission) -> Result<Scope, ApiError> {
    if p.reach(all)? == Reach::All {
        return Ok(Scope::All);
    }
    if !scopable(&p.subject) {
        return Err(LedgerError::SubjectNotScopable.into());
    }
    Ok(Scope::Own(p.subject.clone()))
}

/// Whether `owner` may narrow a transaction: it is spliced into `SET LOCAL`, so only a
/// conservative alphabet is accepted.
fn scopable(owner: &str) -> bool {
    !owner.is_empty()
        && owner.len() <= 128
        && owner.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:@|".contains(&b))
}

/// A ledger's code: `[A-Z0-9_]{1,16}`, e.g. `USD`.
fn is_ledger_code(code: &str) -> bool {
    (1..=16).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// Account and transfer codes are stored as PostgreSQL `integer`.
const MAX_CODE: u32 = i32::MAX as u32;

fn parse_id(field: &str, raw: &str) -> Result<Uuid, ApiError> {
    match Uuid::parse_str(raw) {
        Ok(id) if !id.is_nil() => Ok(id),
        _ => Err(ApiError::invalid_field(field, "must be a non-nil UUID")),
    }
}

fn parse_optional_id(field: &str, raw: &str) -> Result<Uuid, ApiError> {
    if raw.is_empty() { Ok(Uuid::nil()) } else { parse_id(field, raw) }
}

fn check_metadata(
    field: &str,
    m: &std::collections::HashMap<String, String>,
) -> Result<BTreeMap<String, String>, ApiError> {
    if m.len() > 16 || m.iter().any(|(k, v)| k.is_empty() || k.len() > 64 || v.len() > 256) {
        return Err(ApiError::invalid_field(field, "at most 16 entries, keys 1–64 and values ≤ 256 bytes"));
    }
    // PostgreSQL text cannot hold NUL. Transfers are written in batches with other callers' ones,
    // so what the database would refuse is refused here, before it could fail the whole batch.
    if m.iter().any(|(k, v)| k.contains('\0') || v.contains('\0')) {
        return Err(ApiError::invalid_field(field, "keys and values must not contain NUL (U+0000)"));
    }
    Ok(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

pub fn balances(b: &Balances) -> pb::Balances {
    pb::Balances {
        debits_pending: b.debits_pending.to_string(),
        debits_posted: b.debits_posted.to_string(),
        credits_pending: b.credits_pending.to_string(),
        credits_posted: b.credits_posted.to_string(),
    }
}

pub fn account_pb(a: &Account) -> pb::Account {
    pb::Account {
        id: a.id.to_string(),
        ledger: a.ledger.clone(),
        code: a.code,
        owner: a.owner.clone(),
        flags: Some(pb::AccountFlags {
            debits_must_not_exceed_credits: a.has(account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS),
            credits_must_not_exceed_debits: a.has(account_flags::CREDITS_MUST_NOT_EXCEED_DEBITS),
            history: a.has(account_flags::HISTORY),
        }),
        metadata: a.metadata.clone().into_iter().collect(),
        balances: Some(balances(&a.balances)),
        timestamp: a.ts as u64,
    }
}

fn flags_pb(f: i32) -> pb::TransferFlags {
    use transfer_flags::*;
    pb::TransferFlags {
        linked: f & LINKED != 0,
        pending: f & PENDING != 0,
        post_pending: f & POST_PENDING != 0,
        void_pending: f & VOID_PENDING != 0,
        balancing_debit: f & BALANCING_DEBIT != 0,
        balancing_credit: f & BALANCING_CREDIT != 0,
    }
}

fn flags_bits(f: Option<&pb::TransferFlags>) -> i32 {
    use transfer_flags::*;
    let Some(f) = f else { return 0 };
    [
        (f.linked, LINKED),
        (f.pending, PENDING),
        (f.post_pending, POST_PENDING),
        (f.void_pending, VOID_PENDING),
        (f.balancing_debit, BALANCING_DEBIT),
        (f.balancing_credit, BALANCING_CREDIT),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(0, |acc, (_, bit)| acc | bit)
}

pub fn transfer_pb(t: &Transfer) -> pb::Transfer {
    pb::Transfer {
        id: t.id.to_string(),
        debit_account_id: t.debit_account_id.to_string(),
        credit_account_id: t.credit_account_id.to_string(),
        amount: t.amount.to_string(),
        pending_id: t.pending_id.map(|p| p.to_string()).unwrap_or_default(),
        timeout_seconds: t.timeout_seconds,
        ledger: t.ledger.clone(),
        code: t.code,
        flags: Some(flags_pb(t.flags)),
        metadata: t.metadata.clone().into_iter().collect(),
        timestamp: t.ts as u64,
        state: match t.state {
            TransferState::Posted => pb::TransferState::Posted,
            TransferState::Pending => pb::TransferState::Pending,
            TransferState::PendingPosted => pb::TransferState::PendingPosted,
            TransferState::PendingVoided => pb::TransferState::PendingVoided,
            TransferState::PendingExpired => pb::TransferState::PendingExpired,
        } as i32,
        receipt_seq: t.receipt_seq as u64,
    }
}

/// Validates the shape of a submitted transfer (state is the engine's business).
pub fn transfer_input(field: &str, t: &pb::Transfer) -> Result<TransferInput, ApiError> {
    let f = |name: &str| format!("{field}.{name}");
    let flags = flags_bits(t.flags.as_ref());
    let pending_id = if t.pending_id.is_empty() { None } else { Some(parse_id(&f("pending_id"), &t.pending_id)?) };
    let resolving = flags & (transfer_flags::POST_PENDING | transfer_flags::VOID_PENDING);
    let id = match pending_id {
        // A resolution without an id gets its derived, reserved one: a repeat replays it.
        Some(pending) if t.id.is_empty() && resolving != 0 => {
            crate::domain::resolution_id(pending, resolving == transfer_flags::POST_PENDING)
        }
        _ => parse_id(&f("id"), &t.id)?,
    };
    Ok(TransferInput {
        id,
        debit_account_id: parse_optional_id(&f("debit_account_id"), &t.debit_account_id)?,
        credit_account_id: parse_optional_id(&f("credit_account_id"), &t.credit_account_id)?,
        amount: amount::parse_or_zero(&f("amount"), &t.amount)?,
        pending_id,
        timeout_seconds: t.timeout_seconds,
        ledger: if t.ledger.is_empty() || is_ledger_code(&t.ledger) {
            t.ledger.clone()
        } else {
            return Err(ApiError::invalid_field(&f("ledger"), "must match [A-Z0-9_]{1,16}"));
        },
        code: if t.code <= MAX_CODE {
            t.code
        } else {
            return Err(ApiError::invalid_field(&f("code"), "0 to 2147483647"));
        },
        flags,
        metadata: check_metadata(&f("metadata"), &t.metadata)?,
    })
}

/// The result of one transfer for the batch RPC.
pub(crate) fn result_pb(id: Uuid, o: &Outcome) -> pb::TransferResult {
    let (outcome, reason, replayed, transfer) = match o {
        Outcome::Created(t) => (pb::TransferOutcome::Created, String::new(), false, Some(transfer_pb(t))),
        Outcome::Replayed(t) => (pb::TransferOutcome::Created, String::new(), true, Some(transfer_pb(t))),
        Outcome::Failed(r) => (pb::TransferOutcome::Failed, r.clone(), false, None),
        Outcome::ReplayedFailure(r) => (pb::TransferOutcome::Failed, r.clone(), true, None),
        Outcome::Conflict(field) => {
            (pb::TransferOutcome::Failed, format!("EXISTS_WITH_DIFFERENT_{}", field.to_ascii_uppercase()), false, None)
        }
        Outcome::Refused(r) => (pb::TransferOutcome::Failed, (*r).to_owned(), false, None),
    };
    pb::TransferResult { id: id.to_string(), outcome: outcome as i32, reason, replayed, transfer }
}

impl Ledger {
    async fn enter(&self, ctx: &RequestContext) -> Result<(Tenant, Principal), ApiError> {
        let p = ctx.require_principal()?.clone();
        let tenant = self.db.authorize_tenant(&ctx.tenant_slug()?, Some(&p)).await?;
        Ok((tenant, p))
    }

    /// A read transaction narrowed to the caller's scope.
    async fn read_tx(&self, tenant: &Tenant, scope: &Scope) -> Result<TenantTx, ApiError> {
        let mut tx = self.db.begin(tenant).await?;
        if let Scope::Own(subject) = scope {
            store::scope_to_owner(&mut tx, subject).await?;
        }
        Ok(tx)
    }

    /// Applies transfers through the batcher.
    pub async fn apply(
        &self,
        ctx: &RequestContext,
        transfers: &[pb::Transfer],
    ) -> Result<(Vec<TransferInput>, Vec<Outcome>), ApiError> {
        let (tenant, p) = self.enter(ctx).await?;
        let scope = scope(&p, Permission::LedgerTransfersCreate)?;
        if transfers.is_empty() || transfers.len() > MAX_BATCH {
            return Err(ApiError::invalid_field("transfers", "1 to 8190 transfers"));
        }
        let inputs = transfers
            .iter()
            .enumerate()
            .map(|(i, t)| transfer_input(&format!("transfers[{i}]"), t))
            .collect::<Result<Vec<_>, _>>()?;
        let mut seen = HashSet::with_capacity(inputs.len());
        if let Some(dup) = inputs.iter().position(|t| !seen.insert(t.id)) {
            return Err(ApiError::invalid_field(&format!("transfers[{dup}].id"), "appears twice in this request"));
        }
        let owner_scope = match scope {
            Scope::All => None,
            Scope::Own(s) => Some(s),
        };
        let submission = Submission { transfers: inputs.clone(), owner_scope };
        let outcomes = self.batcher.submit(&tenant, submission, Actor::of(&p), ctx.request_id.clone()).await?;
        Ok((inputs, outcomes))
    }
}

#[tonic::async_trait]
impl pb::ledger_service_server::LedgerService for Ledger {
    async fn create_ledger(&self, request: Request<pb::CreateLedgerRequest>) -> Result<Response<pb::Ledger>, Status> {
        let ctx = RequestContext::of(&request)?;
        let (tenant, p) = self.enter(&ctx).await?;
        p.require(Permission::LedgerLedgersCreate)?;
        let l = request.into_inner().ledger.ok_or_else(|| ApiError::invalid_field("ledger", "required"))?;
        if !is_ledger_code(&l.code) {
            return Err(ApiError::invalid_field("ledger.code", "must match [A-Z0-9_]{1,16}").into());
        }
        if l.scale > 18 {
            return Err(ApiError::invalid_field("ledger.scale", "0 to 18").into());
        }
        if l.description.len() > 256 {
            return Err(ApiError::invalid_field("ledger.description", "at most 256 bytes").into());
        }
        let mut tx = self.db.begin(&tenant).await?;
        if store::insert_ledger(&mut tx, &l.code, l.scale as i16, &l.description).await? {
            tx.record(
                AuditRecord::new(
                    SERVICE,
                    Actor::of(&p),
                    "ledger.ledger.create",
                    &format!("ledger/{}", l.code),
                    AuditOutcome::Success,
                )
                .request_id(ctx.request_id.clone())
                .detail("scale", l.scale),
            )
            .await?;
        } else {
            if store::ledger_scale(&mut tx, &l.code).await? as u32 != l.scale {
                let id = l.code.clone();
                return Err(LedgerError::ExistsWithDifferent { what: "ledger", id, field: "scale" }.into());
            }
        }
        tx.commit().await?;
        Ok(Response::new(l))
    }

    async fn list_ledgers(
        &self,
        request: Request<pb::ListLedgersRequest>,
    ) -> Result<Response<pb::ListLedgersResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let (tenant, p) = self.enter(&ctx).await?;
        scope(&p, Permission::LedgerAccountsRead)?;
        let mut tx = self.db.begin(&tenant).await?;
        let rows = store::ledgers(&mut tx).await?;
        tx.commit().await?;
        let ledgers = rows
            .into_iter()
            .map(|(code, scale, description)| pb::Ledger { code, scale: scale as u32, description })
            .collect();
        Ok(Response::new(pb::ListLedgersResponse { ledgers }))
    }

    async fn create_account(
        &self,
        request: Request<pb::CreateAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let ctx = RequestContext::of(&request)?;
        let (tenant, p) = self.enter(&ctx).await?;
        p.require(Permission::LedgerAccountsCreate)?;
        let a = request.into_inner().account.ok_or_else(|| ApiError::invalid_field("account", "required"))?;
        let flags = a.flags.unwrap_or_default();
        if flags.debits_must_not_exceed_credits && flags.credits_must_not_exceed_debits {
            return Err(ApiError::invalid_field("account.flags", "the two limits are mutually exclusive").into());
        }
        if !(1..=MAX_CODE).contains(&a.code) {
            return Err(ApiError::invalid_field("account.code", "1 to 2147483647").into());
        }
        if !is_ledger_code(&a.ledger) {
            return Err(ApiError::invalid_field("account.ledger", "must match [A-Z0-9_]{1,16}").into());
        }
        if a.owner.len() > 128 {
            return Err(ApiError::invalid_field("account.owner", "at most 128 bytes").into());
        }
        let account = Account {
            id: parse_id("account.id", &a.id)?,
            ledger: a.ledger.clone(),
            code: a.code,
            owner: a.owner.clone(),
            flags: [
                (flags.debits_must_not_exceed_credits, account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS),
                (flags.credits_must_not_exceed_debits, account_flags::CREDITS_MUST_NOT_EXCEED_DEBITS),
                (flags.history, account_flags::HISTORY),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .fold(0, |acc, (_, bit)| acc | bit),
            metadata: check_metadata("account.metadata", &a.metadata)?,
            balances: Balances::default(),
            ts: crate::batcher::now_ns(),
        };
        let mut tx = self.db.begin(&tenant).await?;
        if store::insert_account(&mut tx, &account).await? {
            tx.record(
                AuditRecord::new(
                    SERVICE,
                    Actor::of(&p),
                    "ledger.account.create",
                    &format!("account/{}", account.id),
                    AuditOutcome::Success,
                )
                .request_id(ctx.request_id.clone())
                .detail("ledger", account.ledger.clone())
                .detail("code", account.code)
                .detail("owner", account.owner.clone())
                .detail("flags", account.flags),
            )
            .await?;
            tx.commit().await?;
            return Ok(Response::new(account_pb(&account)));
        }
        let existing =
            store::account(&mut tx, account.id).await?.ok_or_else(|| ApiError::internal(&"account vanished"))?;
        tx.commit().await?;
        let differs = [
            ("ledger", existing.ledger != account.ledger),
            ("code", existing.code != account.code),
            ("owner", existing.owner != account.owner),
            ("flags", existing.flags != account.flags),
            ("metadata", existing.metadata != account.metadata),
        ]
        .into_iter()
        .find(|(_, d)| *d);
        match differs {
            None => Ok(Response::new(account_pb(&existing))),
            Some((field, _)) => {
                Err(LedgerError::ExistsWithDifferent { what: "account", id: account.id.to_string(), field }.into())
            }
        }
    }

    async fn get_account(&self, request: Request<pb::GetAccountRequest>) -> Result<Response<pb::Account>, Status> {
        let ctx = RequestContext::of(&request)?;
        let (tenant, p) = self.enter(&ctx).await?;
        let scope = scope(&p, Permission::LedgerAccountsRead)?;
        let id = parse_id("id", &request.get_ref().id)?;
        let mut tx = self.read_tx(&tenant, &scope).await?;
        let account = store::account(&mut tx, id).await?;
        tx.commit().await?;
        let account = account.ok_or_else(|| ApiError::from(LedgerError::AccountNotFound))?;
        Ok(Response::new(account_pb(&account)))
    }

    async fn get_account_balances(
        &self,
        request: Request<pb::GetAccountBalancesRequest>,
    ) -> Result<Response<pb::GetAccountBalancesResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let (tenant, p) = self.enter(&ctx).await?;
        let scope = scope(&p, Permission::LedgerAccountsRead)?;
        let req = request.into_inner();
        let id = parse_id("account_id", &req.account_id)?;
        if req.page_size > 1000 {
            return Err(ApiError::invalid_field("page_size", "at most 1000").into());
        }
        let at = if req.at == 0 { i64::MAX } else { i64::try_from(req.at).unwrap_or(i64::MAX) };
        let from = if req.page_token.is_empty() {
            at
        } else {
            req.page_token
                .parse::<i64>()
                .map_err(|_| ApiError::invalid_field("page_token", "not a token of this list"))?
        };
        let mut tx = self.read_tx(&tenant, &scope).await?;
        let account = store::account(&mut tx, id).await?.ok_or_else(|| ApiError::from(LedgerError::AccountNotFound))?;
        if req.at != 0 && !account.has(account_flags::HISTORY) {
            return Err(LedgerError::HistoryNotKept.into());
        }
        let current = store::balance_history(&mut tx, id, at, 1).await?;
        let changes = if req.page_size > 0 {
            store::balance_history(&mut tx, id, from, req.page_size as i64).await?
        } else {
            Vec::new()
        };
        tx.commit().await?;
        let (balances_now, as_of) = if req.at == 0 {
            (account.balances, current.first().map(|c| c.0).unwrap_or(0))
        } else {
            current.first().map(|c| (c.2, c.0)).unwrap_or((Balances::default(), 0))
        };
        let next_page_token = if req.page_size > 0 && changes.len() == req.page_size as usize {
            changes.last().map(|c| (c.0 - 1).to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::GetAccountBalancesResponse {
            balances: Some(balances(&balances_now)),
            as_of: as_of as u64,
            changes: changes
                .iter()
                .map(|(ts, tid, b)| pb::BalanceChange {
                    timestamp: *ts as u64,
                    transfer_id: tid.to_string(),
                    balances: Some(balances(b)),
                })
                .collect(),
            next_page_token,
        }))
    }

    async fn export_owner(
        &self,
        request: Request<pb::ExportOwnerRequest>,
    ) -> Result<Response<pb::ExportOwnerResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let (tenant, p) = self.enter(&ctx).await?;
        p.require(Permission::PrivacyRequestsWrite)?;
        let req = request.into_inner();
        if !scopable(&req.owner) {
            return Err(ApiError::invalid_field("owner", "1 to 128 letters, digits and -_.:@|").into());
        }
        let privacy_request = parse_optional_id("privacy_request_id", &req.privacy_request_id)?;
        if req.page_size > 1000 {
            return Err(ApiError::invalid_field("page_size", "at most 1000").into());
        }
        let size = if req.page_size == 0 { 500 } else { req.page_size as i64 };
        let first = req.page_token.is_empty();
        let after = if first {
            0
        } else {
            req.page_token
                .parse::<i64>()
                .map_err(|_| ApiError::invalid_field("page_token", "not a token of this list"))?
        };
        // Through the owner scope: row-level security shows only the owner's rows.
        let mut tx = self.read_tx(&tenant, &Scope::Own(req.owner.clone())).await?;
        let accounts = if first { store::owner_accounts(&mut tx, &req.owner).await? } else { Vec::new() };
        let transfers = store::owner_transfers(&mut tx, &req.owner, after, size).await?;
        if first {
            let mut record =
                AuditRecord::new(SERVICE, Actor::of(&p), "ledger.owner.export", "accounts", AuditOutcome::Success)
                    .request_id(ctx.request_id.clone())
                    .detail("accounts", accounts.len());
            if !privacy_request.is_nil() {
                record = record.detail("privacy_request_id", privacy_request.to_string());
            }
            tx.record(record).await?;
        }
        tx.commit().await?;
        let next_page_token = if transfers.len() as i64 == size {
            transfers.last().map(|t| t.ts.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ExportOwnerResponse {
            accounts: accounts.iter().map(account_pb).collect(),
            transfers: transfers.iter().map(transfer_pb).collect(),
            next_page_token,
        }))
    }

    async fn list_account_transfers(
        &self,
        request: Request<pb::ListAccountTransfersRequest>,
    ) -> Result<Response<pb::ListAccountTransfersResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let (tenant, p) = self.enter(&ctx).await?;
        let scope = scope(&p, Permission::LedgerAccountsRead)?;
        let req = request.into_inner();
        let id = parse_id("account_id", &req.account_id)?;
        if req.page_size > 1000 {
            return Err(ApiError::invalid_field("page_size", "at most 1000").into());
        }
        let size = if req.page_size == 0 { 100 } else { req.page_size as i64 };
        let after = if req.page_token.is_empty() {
            0
        } else {
            req.page_token
                .parse::<i64>()
                .map_err(|_| ApiError::invalid_field("page_token", "not a token of this list"))?
        };
        let mut tx = self.read_tx(&tenant, &scope).await?;
        if store::account(&mut tx, id).await?.is_none() {
            return Err(ApiError::from(LedgerError::AccountNotFound).into());
        }
        let transfers = store::account_transfers(&mut tx, id, after, size).await?;
        tx.commit().await?;
        let next_page_token = if transfers.len() as i64 == size {
            transfers.last().map(|t| t.ts.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListAccountTransfersResponse {
            transfers: transfers.iter().map(transfer_pb).collect(),
            next_page_token,
        }))
    }

    async fn create_transfer(
        &self,
        request: Request<pb::CreateTransferRequest>,
    ) -> Result<Response<pb::CreateTransferResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let t = request.into_inner().transfer.ok_or_else(|| ApiError::invalid_field("transfer", "required"))?;
        let (inputs, outcomes) = self.apply(&ctx, std::slice::from_ref(&t)).await.map_err(|e| {
            // A single transfer's field errors name `transfer.*`, not `transfers[0].*`.
            let mut e = e;
            for v in &mut e.violations {
                v.field = v.field.replacen("transfers[0]", "transfer", 1);
            }
            e.message = e.message.replacen("transfers[0]", "transfer", 1);
            e
        })?;
        let id = inputs.first().map(|i| i.id).unwrap_or_default();
        match outcomes.first() {
            Some(Outcome::Created(t)) => {
                Ok(Response::new(pb::CreateTransferResponse { transfer: Some(transfer_pb(t)), replayed: false }))
            }
            Some(Outcome::Replayed(t)) => {
                Ok(Response::new(pb::CreateTransferResponse { transfer: Some(transfer_pb(t)), replayed: true }))
            }
            Some(o) => Err(LedgerError::Transfer { id, outcome: o.clone() }.into()),
            None => Err(ApiError::internal(&"no outcome").into()),
        }
    }

    async fn create_transfers(
        &self,
        request: Request<pb::CreateTransfersRequest>,
    ) -> Result<Response<pb::CreateTransfersResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        let (inputs, outcomes) = self.apply(&ctx, &req.transfers).await?;
        let results = inputs.iter().zip(&outcomes).map(|(i, o)| result_pb(i.id, o)).collect();
        Ok(Response::new(pb::CreateTransfersResponse { results }))
    }

    async fn get_transfer(&self, request: Request<pb::GetTransferRequest>) -> Result<Response<pb::Transfer>, Status> {
        let ctx = RequestContext::of(&request)?;
        let (tenant, p) = self.enter(&ctx).await?;
        let scope = scope(&p, Permission::LedgerTransfersRead)?;
        let id = parse_id("id", &request.get_ref().id)?;
        let mut tx = self.read_tx(&tenant, &scope).await?;
        let t = store::transfer(&mut tx, id).await?;
        tx.commit().await?;
        let t = t.ok_or_else(|| ApiError::from(LedgerError::TransferNotFound))?;
        Ok(Response::new(transfer_pb(&t)))
    }

    async fn verify_receipts(
        &self,
        request: Request<pb::VerifyReceiptsRequest>,
    ) -> Result<Response<pb::VerifyReceiptsResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let slug = ctx.tenant_slug()?;
        let tenant = match &ctx.principal {
            Some(p) => {
                p.require(Permission::LedgerReceiptsVerify)?;
                self.db.authorize_tenant(&slug, Some(p)).await?
            }
            // The operator (an mTLS identity, no user) may verify any tenant.
            None if ctx.caller.identity.name() == kit::Identity::OPERATOR => {
                self.db.authorize_tenant(&slug, None).await?
            }
            None => return Err(ApiError::unauthenticated("TOKEN_REQUIRED", "an access token is required").into()),
        };
        let v = receipts::verify(&self.db, self.signer.as_ref(), &tenant, request.get_ref().from_seq).await?;
        Ok(Response::new(pb::VerifyReceiptsResponse {
            ok: v.first_bad_seq == 0,
            checked: v.checked,
            first_bad_seq: v.first_bad_seq,
            problem: v.problem,
            unsigned: v.unsigned,
            head_hash: v.head_hash,
        }))
    }
}
