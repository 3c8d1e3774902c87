//! `/v1/ledger`: accounts, transfers and receipts for frontends. The gateway authenticates, checks
//! the route's permission, then calls ledger-svc with the caller's token (ledger-svc checks again,
//! and narrows owner-scoped callers with row-level security). Amounts and timestamps travel as
//! decimal strings: a JSON number (which a client may have rounded through a float) is refused.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use kit::ApiError;
use kit::authz::Permission;
use proto::ledger::v1 as pb;
use proto::ledger::v1::ledger_service_client::LedgerServiceClient;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, IntoResponses, ToSchema};

use crate::AppState;
use crate::http_layer::HttpError;
use crate::input::{PathParams, QueryParams};
use crate::openapi::ErrorBody;
use crate::upstream::{Call, upstream};

/// A decimal string; JSON numbers are refused.
#[derive(Debug, Clone, Default)]
struct Decimal(String);

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Decimal(s)),
            _ => Err(D::Error::custom("amounts are decimal strings of minor units; JSON numbers are refused")),
        }
    }
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    crate::input::parse(body)
}

fn client(state: &AppState) -> LedgerServiceClient<kit::client::Channel> {
    LedgerServiceClient::new(state.upstreams.ledger.clone()).max_decoding_message_size(64 * 1024 * 1024)
}

/// An account's balances: each an unsigned 128-bit integer of minor units, as a decimal string.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = LedgerBalances)]
pub struct Balances {
    #[schema(pattern = "^[0-9]{1,39}$")]
    debits_pending: String,
    #[schema(pattern = "^[0-9]{1,39}$")]
    debits_posted: String,
    #[schema(pattern = "^[0-9]{1,39}$")]
    credits_pending: String,
    #[schema(pattern = "^[0-9]{1,39}$")]
    credits_posted: String,
}

impl From<&Option<pb::Balances>> for Balances {
    fn from(b: &Option<pb::Balances>) -> Self {
        let b = b.clone().unwrap_or_default();
        Self {
            debits_pending: b.debits_pending,
            debits_posted: b.debits_posted,
            credits_pending: b.credits_pending,
            credits_posted: b.credits_posted,
        }
    }
}

/// An account with its balances.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = LedgerAccount)]
pub struct Account {
    #[schema(format = "uuid")]
    id: String,
    ledger: String,
    code: u32,
    owner: String,
    flags: AccountFlags,
    metadata: BTreeMap<String, String>,
    balances: Balances,
    /// Nanoseconds since the Unix epoch, as a string.
    timestamp: String,
}

impl From<&pb::Account> for Account {
    fn from(a: &pb::Account) -> Self {
        Self {
            id: a.id.clone(),
            ledger: a.ledger.clone(),
            code: a.code,
            owner: a.owner.clone(),
            flags: a.flags.unwrap_or_default().into(),
            metadata: sorted(&a.metadata),
            balances: (&a.balances).into(),
            timestamp: a.timestamp.to_string(),
        }
    }
}

/// Where a transfer stands.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransferState {
    Posted,
    Pending,
    PendingPosted,
    PendingVoided,
    PendingExpired,
    Unspecified,
}

impl From<i32> for TransferState {
    fn from(s: i32) -> Self {
        match pb::TransferState::try_from(s) {
            Ok(pb::TransferState::Posted) => Self::Posted,
            Ok(pb::TransferState::Pending) => Self::Pending,
            Ok(pb::TransferState::PendingPosted) => Self::PendingPosted,
            Ok(pb::TransferState::PendingVoided) => Self::PendingVoided,
            Ok(pb::TransferState::PendingExpired) => Self::PendingExpired,
            _ => Self::Unspecified,
        }
    }
}

/// A transfer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = LedgerTransfer)]
pub struct Transfer {
    #[schema(format = "uuid")]
    id: String,
    #[schema(format = "uuid")]
    debit_account_id: String,
    #[schema(format = "uuid")]
    credit_account_id: String,
    #[schema(pattern = "^[0-9]{1,39}$")]
    amount: String,
    /// The pending transfer this one posts or voids.
    pending_id: Option<String>,
    timeout_seconds: u32,
    ledger: String,
    code: u32,
    flags: TransferFlags,
    metadata: BTreeMap<String, String>,
    /// Nanoseconds since the Unix epoch, as a string.
    timestamp: String,
    state: TransferState,
    /// Its receipt's place in the tenant's receipt chain, as a string.
    receipt_seq: String,
}

impl From<&pb::Transfer> for Transfer {
    fn from(t: &pb::Transfer) -> Self {
        Self {
            id: t.id.clone(),
            debit_account_id: t.debit_account_id.clone(),
            credit_account_id: t.credit_account_id.clone(),
            amount: t.amount.clone(),
            pending_id: (!t.pending_id.is_empty()).then(|| t.pending_id.clone()),
            timeout_seconds: t.timeout_seconds,
            ledger: t.ledger.clone(),
            code: t.code,
            flags: t.flags.unwrap_or_default().into(),
            metadata: sorted(&t.metadata),
            timestamp: t.timestamp.to_string(),
            state: t.state.into(),
            receipt_seq: t.receipt_seq.to_string(),
        }
    }
}

/// One transfer's result.
#[derive(Debug, Serialize, ToSchema)]
pub struct Created {
    transfer: Option<Transfer>,
    /// The same request was answered before: this is its answer again.
    replayed: bool,
}

impl From<pb::CreateTransferResponse> for Created {
    fn from(r: pb::CreateTransferResponse) -> Self {
        Self { transfer: r.transfer.as_ref().map(Transfer::from), replayed: r.replayed }
    }
}

/// Whether a transfer of a batch was created.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Created,
    Failed,
}

/// The result of one transfer of a batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResult {
    id: String,
    outcome: Outcome,
    /// Why it failed, e.g. EXCEEDS_CREDITS.
    reason: Option<String>,
    replayed: bool,
    transfer: Option<Transfer>,
}

/// One result per transfer of a batch, in its order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResults {
    results: Vec<BatchResult>,
}

/// The answer to `POST /v1/ledger/transfers`: one transfer's, or a batch's.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum TransfersCreated {
    One(Box<Created>),
    Batch(BatchResults),
}

/// Balances after one transfer.
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceChange {
    timestamp: String,
    transfer_id: String,
    balances: Balances,
}

/// Balances at an instant and the changes before it.
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceHistory {
    balances: Balances,
    as_of: String,
    changes: Vec<BalanceChange>,
    /// Null on the last page.
    next_page_token: Option<String>,
}

/// A page of an account's transfers, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransferPage {
    transfers: Vec<Transfer>,
    /// Null on the last page.
    next_page_token: Option<String>,
}

/// What recomputing the receipt chain found.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiptVerification {
    ok: bool,
    checked: u64,
    first_bad_seq: Option<u64>,
    problem: Option<String>,
    unsigned: u64,
    /// Hex.
    head_hash: String,
}

/// A currency or asset and the decimals of its minor unit.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ledger {
    code: String,
    scale: u32,
    description: String,
}

impl From<&pb::Ledger> for Ledger {
    fn from(l: &pb::Ledger) -> Self {
        Self { code: l.code.clone(), scale: l.scale, description: l.description.clone() }
    }
}

/// The tenant's ledgers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ledgers {
    ledgers: Vec<Ledger>,
}

/// The refusals every ledger operation may answer.
#[derive(IntoResponses)]
#[allow(dead_code)] // describes the answers of `kit::ApiError`s from ledger-svc
pub enum Refusals {
    #[response(status = 400, description = "malformed input (a JSON number as an amount, a bad UUID)")]
    BadInput(ErrorBody),
    #[response(
        status = 403,
        description = "missing permission, other tenant, ONLY_THE_PAYEE_RESOLVES, or BALANCING_AGAINST_ANOTHER_OWNER"
    )]
    Forbidden(ErrorBody),
    #[response(status = 404, description = "no such account or transfer (or not visible to an owner-scoped caller)")]
    NotFound(ErrorBody),
    #[response(
        status = 409,
        description = "the id exists with different content (reason EXISTS_WITH_DIFFERENT_<FIELD>)"
    )]
    Conflict(ErrorBody),
    #[response(status = 412, description = "the transfer failed; reason is the result, e.g. EXCEEDS_CREDITS")]
    Failed(ErrorBody),
}

/// An account's rules (all false when absent).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = LedgerAccountFlags)]
pub struct AccountFlags {
    #[serde(default)]
    debits_must_not_exceed_credits: bool,
    #[serde(default)]
    credits_must_not_exceed_debits: bool,
    #[serde(default)]
    history: bool,
}

/// The same rules on the wire and in JSON: one list of fields, converted both ways.
macro_rules! same_flags {
    ($json:ty, $wire:ty { $($field:ident),+ $(,)? }) => {
        impl From<$wire> for $json {
            fn from(f: $wire) -> Self {
                Self { $($field: f.$field),+ }
            }
        }

        impl From<$json> for $wire {
            fn from(f: $json) -> Self {
                Self { $($field: f.$field),+ }
            }
        }
    };
}

same_flags!(AccountFlags, pb::AccountFlags { debits_must_not_exceed_credits, credits_must_not_exceed_debits, history });

/// A new account; idempotent by id.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = LedgerAccountCreate)]
pub struct AccountBody {
    #[schema(format = "uuid")]
    id: Option<String>,
    #[schema(pattern = "^[A-Z0-9_]{1,16}$")]
    ledger: String,
    #[schema(minimum = 1, maximum = 2_147_483_647)]
    code: u32,
    #[serde(default)]
    #[schema(max_length = 128)]
    owner: String,
    #[serde(default)]
    flags: AccountFlags,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    /// Ignored: send the X-Request-Id header (ids make creation idempotent).
    #[schema(deprecated)]
    request_id: Option<String>,
}

/// A transfer's kind and rules (all false when absent).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = LedgerTransferFlags)]
pub struct TransferFlags {
    #[serde(default)]
    linked: bool,
    #[serde(default)]
    pending: bool,
    #[serde(default)]
    post_pending: bool,
    #[serde(default)]
    void_pending: bool,
    #[serde(default)]
    balancing_debit: bool,
    #[serde(default)]
    balancing_credit: bool,
}

same_flags!(
    TransferFlags,
    pb::TransferFlags { linked, pending, post_pending, void_pending, balancing_debit, balancing_credit }
);

/// A new transfer; idempotent by id.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = LedgerTransferCreate)]
pub struct TransferBody {
    #[schema(format = "uuid")]
    id: String,
    #[serde(default)]
    #[schema(format = "uuid")]
    debit_account_id: String,
    #[serde(default)]
    #[schema(format = "uuid")]
    credit_account_id: String,
    #[serde(default)]
    #[schema(value_type = String, pattern = "^[0-9]{1,39}$")]
    amount: Decimal,
    #[serde(default)]
    #[schema(format = "uuid")]
    pending_id: String,
    #[serde(default)]
    timeout_seconds: u32,
    #[serde(default)]
    #[schema(pattern = "^([A-Z0-9_]{1,16})?$")]
    ledger: String,
    #[serde(default)]
    #[schema(maximum = 2_147_483_647)]
    code: u32,
    #[serde(default)]
    flags: TransferFlags,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

impl TransferBody {
    fn into_pb(self) -> pb::Transfer {
        pb::Transfer {
            id: self.id,
            debit_account_id: self.debit_account_id,
            credit_account_id: self.credit_account_id,
            amount: self.amount.0,
            pending_id: self.pending_id,
            timeout_seconds: self.timeout_seconds,
            ledger: self.ledger,
            code: self.code,
            flags: Some(self.flags.into()),
            metadata: self.metadata.into_iter().collect(),
            ..Default::default()
        }
    }
}

/// Whether a transfer body is a batch; the rest of the document is skipped unread.
#[derive(Debug, Deserialize)]
struct Shape {
    transfers: Option<serde::de::IgnoredAny>,
}

/// Up to 8,190 transfers, one result each.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    #[schema(max_items = 8190)]
    transfers: Vec<TransferBody>,
    /// Ignored: send the X-Request-Id header (ids make creation idempotent).
    #[serde(default)]
    #[schema(deprecated)]
    request_id: Option<String>,
}

/// The body of `POST /v1/ledger/transfers`: one transfer, or a batch. Read by its shape
/// ([`Shape`]) rather than as this type, which only describes it.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum TransfersBody {
    One(TransferBody),
    Batch(BatchBody),
}

/// How a pending transfer is resolved.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = LedgerResolve)]
pub struct ResolveBody {
    /// The id of the post/void transfer; by default derived from the pending id, so repeating
    /// the call is idempotent.
    #[schema(format = "uuid")]
    id: Option<String>,
    /// Post only this much of it (default: all).
    #[serde(default)]
    #[schema(value_type = String, pattern = "^[0-9]{1,39}$")]
    amount: Decimal,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    #[serde(default)]
    #[param(maximum = 1000)]
    page_size: u32,
    /// next_page_token of the previous page.
    #[serde(default)]
    page_token: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BalancesQuery {
    /// RFC 3339 or nanoseconds since the epoch; default now.
    at: Option<String>,
    #[serde(default)]
    #[param(maximum = 1000)]
    page_size: u32,
    /// next_page_token of the previous page.
    #[serde(default)]
    page_token: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VerifyQuery {
    /// Verify from this receipt on.
    #[serde(default)]
    from_seq: u64,
}

/// `at`: RFC 3339, or nanoseconds since the Unix epoch.
fn parse_at(raw: &Option<String>) -> Result<u64, ApiError> {
    let Some(raw) = raw.as_deref() else { return Ok(0) };
    if let Ok(ns) = raw.parse::<u64>() {
        return Ok(ns);
    }
    chrono::DateTime::parse_from_rfc3339(raw)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .and_then(|ns| u64::try_from(ns).ok())
        .ok_or_else(|| ApiError::invalid_field("at", "an RFC 3339 timestamp or nanoseconds since the Unix epoch"))
}

/// A new ledger; idempotent by code.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LedgerBody {
    #[schema(pattern = "^[A-Z0-9_]{1,16}$")]
    code: String,
    #[schema(maximum = 18)]
    scale: u32,
    #[serde(default)]
    #[schema(max_length = 256)]
    description: String,
    /// Ignored: send the X-Request-Id header (ids make creation idempotent).
    #[schema(deprecated)]
    request_id: Option<String>,
}

/// The account or transfer id of a path.
#[derive(IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
#[allow(dead_code)] // read by `PathParams<String>`; this type only describes it
pub struct Id(#[param(format = "uuid")] String);

/// Create a ledger (a currency or asset with the decimals of its minor unit); requires
/// ledger.ledgers.create. Idempotent by code.
#[utoipa::path(post, path = "/v1/ledger/ledgers", operation_id = "createLedger", request_body = LedgerBody,
    responses((status = 200, description = "the ledger", body = Ledger), Refusals))]
pub async fn create_ledger(State(state): State<AppState>, call: Call, body: Bytes) -> Result<Json<Ledger>, HttpError> {
    call.require(Permission::LedgerLedgersCreate)?;
    let b: LedgerBody = parse_body(&body)?;
    let msg = pb::CreateLedgerRequest {
        ledger: Some(pb::Ledger { code: b.code, scale: b.scale, description: b.description }),
        request_id: b.request_id.unwrap_or_default(),
    };
    let l = client(&state).create_ledger(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json((&l).into()))
}

/// The tenant's ledgers (currencies or assets); ledger.accounts.read or .read.own.
#[utoipa::path(get, path = "/v1/ledger/ledgers", operation_id = "listLedgers",
    responses((status = 200, description = "the ledgers", body = Ledgers), Refusals))]
pub async fn list_ledgers(State(state): State<AppState>, call: Call) -> Result<Json<Ledgers>, HttpError> {
    call.reach(Permission::LedgerAccountsRead)?;
    let msg = pb::ListLedgersRequest {};
    let list = client(&state).list_ledgers(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(Ledgers { ledgers: list.ledgers.iter().map(Ledger::from).collect() }))
}

/// Create an account; requires ledger.accounts.create. Idempotent by id.
#[utoipa::path(post, path = "/v1/ledger/accounts", operation_id = "createLedgerAccount", request_body = AccountBody,
    responses((status = 200, description = "the account", body = Account), Refusals))]
pub async fn create_account(
    State(state): State<AppState>,
    call: Call,
    body: Bytes,
) -> Result<Json<Account>, HttpError> {
    call.require(Permission::LedgerAccountsCreate)?;
    let b: AccountBody = parse_body(&body)?;
    let msg = pb::CreateAccountRequest {
        account: Some(pb::Account {
            id: b.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            ledger: b.ledger,
            code: b.code,
            owner: b.owner,
            flags: Some(b.flags.into()),
            metadata: b.metadata.into_iter().collect(),
            ..Default::default()
        }),
        request_id: b.request_id.unwrap_or_default(),
    };
    let a = client(&state).create_account(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json((&a).into()))
}

/// An account with its balances; ledger.accounts.read (or .read.own for own accounts).
#[utoipa::path(get, path = "/v1/ledger/accounts/{id}", operation_id = "getLedgerAccount", params(Id),
    responses((status = 200, description = "the account", body = Account), Refusals))]
pub async fn get_account(
    State(state): State<AppState>,
    call: Call,
    PathParams(account): PathParams<String>,
) -> Result<Json<Account>, HttpError> {
    call.reach(Permission::LedgerAccountsRead)?;
    let msg = pb::GetAccountRequest { id: account };
    let a = client(&state).get_account(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json((&a).into()))
}

/// Balances at an instant (accounts with history) and the changes before it.
#[utoipa::path(get, path = "/v1/ledger/accounts/{id}/balances", operation_id = "getLedgerAccountBalances",
    params(Id, BalancesQuery), responses((status = 200, description = "balances", body = BalanceHistory), Refusals))]
pub async fn balances(
    State(state): State<AppState>,
    call: Call,
    PathParams(account): PathParams<String>,
    QueryParams(q): QueryParams<BalancesQuery>,
) -> Result<Json<BalanceHistory>, HttpError> {
    call.reach(Permission::LedgerAccountsRead)?;
    let msg = pb::GetAccountBalancesRequest {
        account_id: account,
        at: parse_at(&q.at)?,
        page_size: q.page_size,
        page_token: q.page_token,
    };
    let r = client(&state).get_account_balances(call.request(msg)).await.map_err(upstream)?.into_inner();
    let changes = r
        .changes
        .iter()
        .map(|ch| BalanceChange {
            timestamp: ch.timestamp.to_string(),
            transfer_id: ch.transfer_id.clone(),
            balances: (&ch.balances).into(),
        })
        .collect();
    Ok(Json(BalanceHistory {
        balances: (&r.balances).into(),
        as_of: r.as_of.to_string(),
        changes,
        next_page_token: next_page(r.next_page_token),
    }))
}

/// Metadata in key order, as JSON answers it.
fn sorted(metadata: &std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Null for the empty token of the last page.
fn next_page(token: String) -> Option<String> {
    (!token.is_empty()).then_some(token)
}

/// Transfers of an account, oldest first.
#[utoipa::path(get, path = "/v1/ledger/accounts/{id}/transfers", operation_id = "listLedgerAccountTransfers",
    params(Id, PageQuery), responses((status = 200, description = "a page", body = TransferPage), Refusals))]
pub async fn account_transfers(
    State(state): State<AppState>,
    call: Call,
    PathParams(account): PathParams<String>,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<TransferPage>, HttpError> {
    call.reach(Permission::LedgerAccountsRead)?;
    let msg = pb::ListAccountTransfersRequest { account_id: account, page_size: q.page_size, page_token: q.page_token };
    let r = client(&state).list_account_transfers(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(TransferPage {
        transfers: r.transfers.iter().map(Transfer::from).collect(),
        next_page_token: next_page(r.next_page_token),
    }))
}

/// One transfer, or `{"transfers": [...]}` (up to 8,190, one result each); requires
/// ledger.transfers.create (or .create.own: the debit account must be the caller's).
#[utoipa::path(post, path = "/v1/ledger/transfers", operation_id = "createLedgerTransfers", request_body = TransfersBody,
    responses((status = 200, description = "the transfer, or one result per transfer", body = TransfersCreated), Refusals))]
pub async fn create_transfers(
    State(state): State<AppState>,
    call: Call,
    body: Bytes,
) -> Result<Json<TransfersCreated>, HttpError> {
    call.reach(Permission::LedgerTransfersCreate)?;
    // Which of the two shapes, without building the document: a 16 MiB body parsed into a
    // `Value` first could take some 250 MB (an array of small numbers under an unknown key).
    let shape: Shape = parse_body(&body)?;
    if shape.transfers.is_none() {
        let t: TransferBody = parse_body(&body)?;
        let msg = pb::CreateTransferRequest { transfer: Some(t.into_pb()), request_id: String::new() };
        let r = client(&state).create_transfer(call.request(msg)).await.map_err(upstream)?.into_inner();
        return Ok(Json(TransfersCreated::One(Box::new(r.into()))));
    }
    let BatchBody { transfers, request_id } = parse_body(&body)?;
    let msg = pb::CreateTransfersRequest {
        transfers: transfers.into_iter().map(TransferBody::into_pb).collect(),
        request_id: request_id.unwrap_or_default(),
    };
    let r = client(&state).create_transfers(call.request(msg)).await.map_err(upstream)?.into_inner();
    let results = r
        .results
        .iter()
        .map(|x| BatchResult {
            id: x.id.clone(),
            outcome: if x.outcome == pb::TransferOutcome::Created as i32 { Outcome::Created } else { Outcome::Failed },
            reason: (!x.reason.is_empty()).then(|| x.reason.clone()),
            replayed: x.replayed,
            transfer: x.transfer.as_ref().map(Transfer::from),
        })
        .collect();
    Ok(Json(TransfersCreated::Batch(BatchResults { results })))
}

/// One transfer; ledger.transfers.read (or .read.own).
#[utoipa::path(get, path = "/v1/ledger/transfers/{id}", operation_id = "getLedgerTransfer", params(Id),
    responses((status = 200, description = "the transfer", body = Transfer), Refusals))]
pub async fn get_transfer(
    State(state): State<AppState>,
    call: Call,
    PathParams(transfer): PathParams<String>,
) -> Result<Json<Transfer>, HttpError> {
    call.reach(Permission::LedgerTransfersRead)?;
    let t = client(&state)
        .get_transfer(call.request(pb::GetTransferRequest { id: transfer }))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(Json((&t).into()))
}

/// Post a pending transfer (in full, or `amount` of it).
///
/// An owner-scoped caller only as its payee (403 ONLY_THE_PAYEE_RESOLVES for the payer); without
/// `id` a reserved one derived from the pending id, so a repeat replays it. The same handler
/// answers `:void` ([`void`]).
#[utoipa::path(post, path = "/v1/ledger/transfers/{id}:post", operation_id = "postLedgerTransfer", params(Id),
    request_body(content = Option<ResolveBody>),
    responses((status = 200, description = "the posting transfer", body = Created), Refusals))]
pub async fn resolve(
    State(state): State<AppState>,
    call: Call,
    PathParams(target): PathParams<String>,
    body: Bytes,
) -> Result<Json<Created>, HttpError> {
    let (pending, post) = match (target.strip_suffix(":post"), target.strip_suffix(":void")) {
        (Some(p), _) => (p.to_owned(), true),
        (_, Some(p)) => (p.to_owned(), false),
        _ => return Err(ApiError::not_found("ROUTE_NOT_FOUND", "no such route").into()),
    };
    call.reach(Permission::LedgerTransfersCreate)?;
    let b: ResolveBody = if body.is_empty() { ResolveBody::default() } else { parse_body(&body)? };
    let transfer = pb::Transfer {
        // Without an id, ledger-svc derives the resolution's reserved id: a repeat replays it.
        id: b.id.unwrap_or_default(),
        pending_id: pending,
        amount: b.amount.0,
        flags: Some(pb::TransferFlags { post_pending: post, void_pending: !post, ..Default::default() }),
        ..Default::default()
    };
    let msg = pb::CreateTransferRequest { transfer: Some(transfer), request_id: String::new() };
    let r = client(&state).create_transfer(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(r.into()))
}

/// Void a pending transfer.
///
/// An owner-scoped caller only as its payee (403 ONLY_THE_PAYEE_RESOLVES for the payer); without
/// `id` a reserved one derived from the pending id. Answered by [`resolve`]; this function only
/// documents the operation.
#[utoipa::path(post, path = "/v1/ledger/transfers/{id}:void", operation_id = "voidLedgerTransfer", params(Id),
    request_body(content = Option<ResolveBody>),
    responses((status = 200, description = "the voiding transfer", body = Created), Refusals))]
#[allow(dead_code)]
pub fn void() {}

/// Recompute the receipt chain from the stored transfers and check signatures; requires
/// ledger.receipts.verify.
#[utoipa::path(get, path = "/v1/ledger/receipts/verify", operation_id = "verifyLedgerReceipts", params(VerifyQuery),
    responses((status = 200, description = "the verification", body = ReceiptVerification), Refusals))]
pub async fn verify(
    State(state): State<AppState>,
    call: Call,
    QueryParams(q): QueryParams<VerifyQuery>,
) -> Result<Json<ReceiptVerification>, HttpError> {
    call.require(Permission::LedgerReceiptsVerify)?;
    let r = client(&state)
        .verify_receipts(call.request(pb::VerifyReceiptsRequest { from_seq: q.from_seq }))
        .await
        .map_err(upstream)?
        .into_inner();
    let head: String = r.head_hash.iter().map(|b| format!("{b:02x}")).collect();
    Ok(Json(ReceiptVerification {
        ok: r.ok,
        checked: r.checked,
        first_bad_seq: (r.first_bad_seq != 0).then_some(r.first_bad_seq),
        problem: (!r.problem.is_empty()).then_some(r.problem),
        unsigned: r.unsigned,
        head_hash: head,
    }))
}
