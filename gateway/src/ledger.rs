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
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use crate::AppState;
use crate::http_layer::HttpError;
use crate::input::{PathParams, QueryParams};
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

fn balances_json(b: &Option<pb::Balances>) -> Value {
    let b = b.clone().unwrap_or_default();
    json!({
        "debits_pending": b.debits_pending,
        "debits_posted": b.debits_posted,
        "credits_pending": b.credits_pending,
        "credits_posted": b.credits_posted,
    })
}

fn account_json(a: &pb::Account) -> Value {
    let f = a.flags.unwrap_or_default();
    let metadata: BTreeMap<&String, &String> = a.metadata.iter().collect();
    json!({
        "id": a.id,
        "ledger": a.ledger,
        "code": a.code,
        "owner": a.owner,
        "flags": {
            "debits_must_not_exceed_credits": f.debits_must_not_exceed_credits,
            "credits_must_not_exceed_debits": f.credits_must_not_exceed_debits,
            "history": f.history,
        },
        "metadata": metadata,
        "balances": balances_json(&a.balances),
        "timestamp": a.timestamp.to_string(),
    })
}

fn state_name(s: i32) -> &'static str {
    match pb::TransferState::try_from(s) {
        Ok(pb::TransferState::Posted) => "posted",
        Ok(pb::TransferState::Pending) => "pending",
        Ok(pb::TransferState::PendingPosted) => "pending_posted",
        Ok(pb::TransferState::PendingVoided) => "pending_voided",
        Ok(pb::TransferState::PendingExpired) => "pending_expired",
        _ => "unspecified",
    }
}

fn transfer_json(t: &pb::Transfer) -> Value {
    let f = t.flags.unwrap_or_default();
    let metadata: BTreeMap<&String, &String> = t.metadata.iter().collect();
    json!({
        "id": t.id,
        "debit_account_id": t.debit_account_id,
        "credit_account_id": t.credit_account_id,
        "amount": t.amount,
        "pending_id": if t.pending_id.is_empty() { Value::Null } else { json!(t.pending_id) },
        "timeout_seconds": t.timeout_seconds,
        "ledger": t.ledger,
        "code": t.code,
        "flags": {
            "linked": f.linked, "pending": f.pending, "post_pending": f.post_pending, "void_pending": f.void_pending,
            "balancing_debit": f.balancing_debit, "balancing_credit": f.balancing_credit,
        },
        "metadata": metadata,
        "timestamp": t.timestamp.to_string(),
        "state": state_name(t.state),
        "receipt_seq": t.receipt_seq.to_string(),
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountFlagsBody {
    #[serde(default)]
    debits_must_not_exceed_credits: bool,
    #[serde(default)]
    credits_must_not_exceed_debits: bool,
    #[serde(default)]
    history: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountBody {
    id: Option<String>,
    ledger: String,
    code: u32,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    flags: AccountFlagsBody,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    request_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferFlagsBody {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    id: String,
    #[serde(default)]
    debit_account_id: String,
    #[serde(default)]
    credit_account_id: String,
    #[serde(default)]
    amount: Decimal,
    #[serde(default)]
    pending_id: String,
    #[serde(default)]
    timeout_seconds: u32,
    #[serde(default)]
    ledger: String,
    #[serde(default)]
    code: u32,
    #[serde(default)]
    flags: TransferFlagsBody,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

impl TransferBody {
    fn into_pb(self) -> pb::Transfer {
        let f = self.flags;
        pb::Transfer {
            id: self.id,
            debit_account_id: self.debit_account_id,
            credit_account_id: self.credit_account_id,
            amount: self.amount.0,
            pending_id: self.pending_id,
            timeout_seconds: self.timeout_seconds,
            ledger: self.ledger,
            code: self.code,
            flags: Some(pb::TransferFlags {
                linked: f.linked,
                pending: f.pending,
                post_pending: f.post_pending,
                void_pending: f.void_pending,
                balancing_debit: f.balancing_debit,
                balancing_credit: f.balancing_credit,
            }),
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    transfers: Vec<TransferBody>,
    #[serde(default)]
    request_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    /// The id of the post/void transfer; by default derived from the pending id, so repeating
    /// the call is idempotent.
    id: Option<String>,
    #[serde(default)]
    amount: Decimal,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    #[serde(default)]
    page_size: u32,
    #[serde(default)]
    page_token: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalancesQuery {
    at: Option<String>,
    #[serde(default)]
    page_size: u32,
    #[serde(default)]
    page_token: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerBody {
    code: String,
    scale: u32,
    #[serde(default)]
    description: String,
    request_id: Option<String>,
}

fn ledger_json(l: &pb::Ledger) -> Value {
    json!({ "code": l.code, "scale": l.scale, "description": l.description })
}

/// `POST /v1/ledger/ledgers`: a currency or asset and the decimals of its minor unit.
pub async fn create_ledger(State(state): State<AppState>, call: Call, body: Bytes) -> Result<Json<Value>, HttpError> {
    call.require(Permission::LedgerLedgersCreate)?;
    let b: LedgerBody = parse_body(&body)?;
    let msg = pb::CreateLedgerRequest {
        ledger: Some(pb::Ledger { code: b.code, scale: b.scale, description: b.description }),
        request_id: b.request_id.unwrap_or_default(),
    };
    let l = client(&state).create_ledger(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(ledger_json(&l)))
}

/// `GET /v1/ledger/ledgers`
pub async fn list_ledgers(State(state): State<AppState>, call: Call) -> Result<Json<Value>, HttpError> {
    call.reach(Permission::LedgerAccountsRead)?;
    let msg = pb::ListLedgersRequest {};
    let list = client(&state).list_ledgers(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(json!({ "ledgers": list.ledgers.iter().map(ledger_json).collect::<Vec<_>>() })))
}

/// `POST /v1/ledger/accounts`
pub async fn create_account(State(state): State<AppState>, call: Call, body: Bytes) -> Result<Json<Value>, HttpError> {
    call.require(Permission::LedgerAccountsCreate)?;
    let b: AccountBody = parse_body(&body)?;
    let msg = pb::CreateAccountRequest {
        account: Some(pb::Account {
            id: b.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            ledger: b.ledger,
            code: b.code,
            owner: b.owner,
            flags: Some(pb::AccountFlags {
                debits_must_not_exceed_credits: b.flags.debits_must_not_exceed_credits,
                credits_must_not_exceed_debits: b.flags.credits_must_not_exceed_debits,
                history: b.flags.history,
            }),
            metadata: b.metadata.into_iter().collect(),
            ..Default::default()
        }),
        request_id: b.request_id.unwrap_or_default(),
    };
    let a = client(&state).create_account(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(account_json(&a)))
}

/// `GET /v1/ledger/accounts/{id}`
pub async fn get_account(
    State(state): State<AppState>,
    call: Call,
    PathParams(account): PathParams<String>,
) -> Result<Json<Value>, HttpError> {
    call.reach(Permission::LedgerAccountsRead)?;
    let msg = pb::GetAccountRequest { id: account };
    let a = client(&state).get_account(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(account_json(&a)))
}

/// `GET /v1/ledger/accounts/{id}/balances?at=&page_size=&page_token=`
pub async fn balances(
    State(state): State<AppState>,
    call: Call,
    PathParams(account): PathParams<String>,
    QueryParams(q): QueryParams<BalancesQuery>,
) -> Result<Json<Value>, HttpError> {
    call.reach(Permission::LedgerAccountsRead)?;
    let msg = pb::GetAccountBalancesRequest {
        account_id: account,
        at: parse_at(&q.at)?,
        page_size: q.page_size,
        page_token: q.page_token,
    };
    let r = client(&state).get_account_balances(call.request(msg)).await.map_err(upstream)?.into_inner();
    let changes: Vec<Value> = r
        .changes
        .iter()
        .map(|ch| {
            json!({ "timestamp": ch.timestamp.to_string(), "transfer_id": ch.transfer_id, "balances": balances_json(&ch.balances) })
        })
        .collect();
    Ok(Json(json!({
        "balances": balances_json(&r.balances),
        "as_of": r.as_of.to_string(),
        "changes": changes,
        "next_page_token": if r.next_page_token.is_empty() { Value::Null } else { json!(r.next_page_token) },
    })))
}

/// `GET /v1/ledger/accounts/{id}/transfers?page_size=&page_token=`
pub async fn account_transfers(
    State(state): State<AppState>,
    call: Call,
    PathParams(account): PathParams<String>,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<Value>, HttpError> {
    call.reach(Permission::LedgerAccountsRead)?;
    let msg = pb::ListAccountTransfersRequest { account_id: account, page_size: q.page_size, page_token: q.page_token };
    let r = client(&state).list_account_transfers(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(json!({
        "transfers": r.transfers.iter().map(transfer_json).collect::<Vec<_>>(),
        "next_page_token": if r.next_page_token.is_empty() { Value::Null } else { json!(r.next_page_token) },
    })))
}

/// `POST /v1/ledger/transfers`: one transfer, or `{"transfers": [...]}` (up to 8,190).
pub async fn create_transfers(
    State(state): State<AppState>,
    call: Call,
    body: Bytes,
) -> Result<Json<Value>, HttpError> {
    call.reach(Permission::LedgerTransfersCreate)?;
    // Which of the two shapes, without building the document: a 16 MiB body parsed into a
    // `Value` first could take some 250 MB (an array of small numbers under an unknown key).
    let shape: Shape = parse_body(&body)?;
    if shape.transfers.is_none() {
        let t: TransferBody = parse_body(&body)?;
        let msg = pb::CreateTransferRequest { transfer: Some(t.into_pb()), request_id: String::new() };
        let r = client(&state).create_transfer(call.request(msg)).await.map_err(upstream)?.into_inner();
        return Ok(Json(json!({ "transfer": r.transfer.as_ref().map(transfer_json), "replayed": r.replayed })));
    }
    let BatchBody { transfers, request_id } = parse_body(&body)?;
    let msg = pb::CreateTransfersRequest {
        transfers: transfers.into_iter().map(TransferBody::into_pb).collect(),
        request_id: request_id.unwrap_or_default(),
    };
    let r = client(&state).create_transfers(call.request(msg)).await.map_err(upstream)?.into_inner();
    let results: Vec<Value> = r
        .results
        .iter()
        .map(|x| {
            let created = x.outcome == pb::TransferOutcome::Created as i32;
            json!({
                "id": x.id,
                "outcome": if created { "created" } else { "failed" },
                "reason": if x.reason.is_empty() { Value::Null } else { json!(x.reason) },
                "replayed": x.replayed,
                "transfer": x.transfer.as_ref().map(transfer_json),
            })
        })
        .collect();
    Ok(Json(json!({ "results": results })))
}

/// `GET /v1/ledger/transfers/{id}`
pub async fn get_transfer(
    State(state): State<AppState>,
    call: Call,
    PathParams(transfer): PathParams<String>,
) -> Result<Json<Value>, HttpError> {
    call.reach(Permission::LedgerTransfersRead)?;
    let t = client(&state)
        .get_transfer(call.request(pb::GetTransferRequest { id: transfer }))
        .await
        .map_err(upstream)?
        .into_inner();
    Ok(Json(transfer_json(&t)))
}

/// `POST /v1/ledger/transfers/{id}:post` and `:void`
pub async fn resolve(
    State(state): State<AppState>,
    call: Call,
    PathParams(target): PathParams<String>,
    body: Bytes,
) -> Result<Json<Value>, HttpError> {
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
    Ok(Json(json!({ "transfer": r.transfer.as_ref().map(transfer_json), "replayed": r.replayed })))
}

/// `GET /v1/ledger/receipts/verify?from_seq=`
pub async fn verify(
    State(state): State<AppState>,
    call: Call,
    QueryParams(q): QueryParams<VerifyQuery>,
) -> Result<Json<Value>, HttpError> {
    call.require(Permission::LedgerReceiptsVerify)?;
    let r = client(&state)
        .verify_receipts(call.request(pb::VerifyReceiptsRequest { from_seq: q.from_seq }))
        .await
        .map_err(upstream)?
        .into_inner();
    let head: String = r.head_hash.iter().map(|b| format!("{b:02x}")).collect();
    Ok(Json(json!({
        "ok": r.ok,
        "checked": r.checked,
        "first_bad_seq": if r.first_bad_seq == 0 { Value::Null } else { json!(r.first_bad_seq) },
        "problem": if r.problem.is_empty() { Value::Null } else { json!(r.problem) },
        "unsigned": r.unsigned,
        "head_hash": head,
    })))
}

fn err(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn ok(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

/// Adds the ledger's paths and schemas to the OpenAPI document.
pub fn document(doc: &mut Value) {
    let tenant = json!({ "$ref": "#/components/parameters/Tenant" });
    let id = |name: &str| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } });
    let page = [
        json!({ "name": "page_size", "in": "query", "schema": { "type": "integer", "minimum": 0, "maximum": 1000 } }),
        json!({ "name": "page_token", "in": "query", "schema": { "type": "string" } }),
    ];
    let common = |ok_resp: Value| {
        json!({
            "200": ok_resp,
            "400": err("malformed input (a JSON number as an amount, a bad UUID)"),
            "401": err("not authenticated"),
            "403": err("missing permission, other tenant, ONLY_THE_PAYEE_RESOLVES, or BALANCING_AGAINST_ANOTHER_OWNER"),
            "404": err("no such account or transfer (or not visible to an owner-scoped caller)"),
            "409": err("the id exists with different content (reason EXISTS_WITH_DIFFERENT_<FIELD>)"),
            "412": err("the transfer failed; reason is the result, e.g. EXCEEDS_CREDITS")
        })
    };
    let account = json!({ "$ref": "#/components/schemas/LedgerAccount" });
    let transfer = json!({ "$ref": "#/components/schemas/LedgerTransfer" });
    let created =
        json!({ "type": "object", "properties": { "transfer": transfer, "replayed": { "type": "boolean" } } });
    let paths = json!({
        "/v1/ledger/ledgers": {
            "get": {
                "operationId": "listLedgers", "summary": "The tenant's ledgers (currencies or assets); ledger.accounts.read or .read.own",
                "parameters": [tenant],
                "responses": common(ok("the ledgers", json!({ "type": "object", "required": ["ledgers"], "properties": {
                    "ledgers": { "type": "array", "items": { "$ref": "#/components/schemas/Ledger" } } } })))
            },
            "post": {
                "operationId": "createLedger", "summary": "Create a ledger (a currency or asset with the decimals of its minor unit); requires ledger.ledgers.create. Idempotent by code.",
                "parameters": [tenant],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "additionalProperties": false, "required": ["code", "scale"], "properties": {
                    "code": { "type": "string", "pattern": "^[A-Z0-9_]{1,16}$" },
                    "scale": { "type": "integer", "minimum": 0, "maximum": 18 },
                    "description": { "type": "string", "maxLength": 256 },
                    "request_id": { "type": "string", "deprecated": true, "description": "ignored: send the X-Request-Id header (ids make creation idempotent)" } } } } } },
                "responses": common(ok("the ledger", json!({ "$ref": "#/components/schemas/Ledger" })))
            }
        },
        "/v1/ledger/accounts": { "post": {
            "operationId": "createLedgerAccount", "summary": "Create an account; requires ledger.accounts.create. Idempotent by id.",
            "parameters": [tenant],
            "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/LedgerAccountCreate" } } } },
            "responses": common(ok("the account", account.clone()))
        }},
        "/v1/ledger/accounts/{id}": { "get": {
            "operationId": "getLedgerAccount", "summary": "An account with its balances; ledger.accounts.read (or .read.own for own accounts)",
            "parameters": [tenant, id("id")],
            "responses": common(ok("the account", account.clone()))
        }},
        "/v1/ledger/accounts/{id}/balances": { "get": {
            "operationId": "getLedgerAccountBalances", "summary": "Balances at an instant (accounts with history) and the changes before it",
            "parameters": [tenant, id("id"),
                { "name": "at", "in": "query", "schema": { "type": "string" }, "description": "RFC 3339 or nanoseconds since the epoch; default now" },
                page[0], page[1]],
            "responses": common(ok("balances", json!({ "type": "object", "properties": {
                "balances": { "$ref": "#/components/schemas/LedgerBalances" }, "as_of": { "type": "string" },
                "changes": { "type": "array", "items": { "type": "object" } }, "next_page_token": { "type": ["string", "null"] } } })))
        }},
        "/v1/ledger/accounts/{id}/transfers": { "get": {
            "operationId": "listLedgerAccountTransfers", "summary": "Transfers of an account, oldest first",
            "parameters": [tenant, id("id"), page[0], page[1]],
            "responses": common(ok("a page", json!({ "type": "object", "properties": {
                "transfers": { "type": "array", "items": transfer }, "next_page_token": { "type": ["string", "null"] } } })))
        }},
        "/v1/ledger/transfers": { "post": {
            "operationId": "createLedgerTransfers", "summary": "One transfer, or {\"transfers\": [...]} (up to 8,190, one result each); requires ledger.transfers.create (or .create.own: debit account must be the caller's)",
            "parameters": [tenant],
            "requestBody": { "required": true, "content": { "application/json": { "schema": { "oneOf": [
                { "$ref": "#/components/schemas/LedgerTransferCreate" },
                { "type": "object", "required": ["transfers"], "properties": {
                    "transfers": { "type": "array", "maxItems": 8190, "items": { "$ref": "#/components/schemas/LedgerTransferCreate" } },
                    "request_id": { "type": "string", "deprecated": true, "description": "ignored: send the X-Request-Id header (ids make creation idempotent)" } } } ] } } } },
            "responses": common(ok("the transfer, or one result per transfer", json!({ "type": "object" })))
        }},
        "/v1/ledger/transfers/{id}": { "get": {
            "operationId": "getLedgerTransfer", "summary": "One transfer; ledger.transfers.read (or .read.own)",
            "parameters": [tenant, id("id")],
            "responses": common(ok("the transfer", transfer.clone()))
        }},
        "/v1/ledger/transfers/{id}:post": { "post": {
            "operationId": "postLedgerTransfer", "summary": "Post a pending transfer (in full, or `amount` of it); an owner-scoped caller only as its payee (403 ONLY_THE_PAYEE_RESOLVES for the payer); without `id` a reserved one derived from the pending id, so a repeat replays it",
            "parameters": [tenant, id("id")],
            "requestBody": { "required": false, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/LedgerResolve" } } } },
            "responses": common(ok("the posting transfer", created.clone()))
        }},
        "/v1/ledger/transfers/{id}:void": { "post": {
            "operationId": "voidLedgerTransfer", "summary": "Void a pending transfer; an owner-scoped caller only as its payee (403 ONLY_THE_PAYEE_RESOLVES for the payer); without `id` a reserved one derived from the pending id",
            "parameters": [tenant, id("id")],
            "requestBody": { "required": false, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/LedgerResolve" } } } },
            "responses": common(ok("the voiding transfer", created))
        }},
        "/v1/ledger/receipts/verify": { "get": {
            "operationId": "verifyLedgerReceipts", "summary": "Recompute the receipt chain from the stored transfers and check signatures; requires ledger.receipts.verify",
            "parameters": [tenant, { "name": "from_seq", "in": "query", "schema": { "type": "integer", "minimum": 0 } }],
            "responses": common(ok("the verification", json!({ "type": "object", "properties": {
                "ok": { "type": "boolean" }, "checked": { "type": "integer" }, "first_bad_seq": { "type": ["integer", "null"] },
                "problem": { "type": ["string", "null"] }, "unsigned": { "type": "integer" }, "head_hash": { "type": "string" } } })))
        }}
    });
    let amount = json!({ "type": "string", "pattern": "^[0-9]{1,39}$", "description": "unsigned 128-bit integer of minor units, as a string" });
    let uuid = json!({ "type": "string", "format": "uuid" });
    let schemas = json!({
        "Ledger": { "type": "object", "required": ["code", "scale"], "properties": {
            "code": { "type": "string" }, "scale": { "type": "integer" }, "description": { "type": "string" } } },
        "LedgerBalances": { "type": "object", "properties": {
            "debits_pending": amount, "debits_posted": amount, "credits_pending": amount, "credits_posted": amount } },
        "LedgerAccountFlags": { "type": "object", "additionalProperties": false, "properties": {
            "debits_must_not_exceed_credits": { "type": "boolean" }, "credits_must_not_exceed_debits": { "type": "boolean" },
            "history": { "type": "boolean" } } },
        "LedgerAccountCreate": { "type": "object", "additionalProperties": false, "required": ["ledger", "code"], "properties": {
            "id": uuid, "ledger": { "type": "string", "pattern": "^[A-Z0-9_]{1,16}$" }, "code": { "type": "integer", "minimum": 1, "maximum": 2_147_483_647i64 }, "owner": { "type": "string", "maxLength": 128 },
            "flags": { "$ref": "#/components/schemas/LedgerAccountFlags" },
            "metadata": { "type": "object", "additionalProperties": { "type": "string" } }, "request_id": { "type": "string", "deprecated": true, "description": "ignored: send the X-Request-Id header (ids make creation idempotent)" } } },
        "LedgerAccount": { "type": "object", "properties": {
            "id": uuid, "ledger": { "type": "string" }, "code": { "type": "integer" }, "owner": { "type": "string" },
            "flags": { "$ref": "#/components/schemas/LedgerAccountFlags" },
            "metadata": { "type": "object", "additionalProperties": { "type": "string" } },
            "balances": { "$ref": "#/components/schemas/LedgerBalances" }, "timestamp": { "type": "string" } } },
        "LedgerTransferFlags": { "type": "object", "additionalProperties": false, "properties": {
            "linked": { "type": "boolean" }, "pending": { "type": "boolean" }, "post_pending": { "type": "boolean" },
            "void_pending": { "type": "boolean" }, "balancing_debit": { "type": "boolean" }, "balancing_credit": { "type": "boolean" } } },
        "LedgerTransferCreate": { "type": "object", "additionalProperties": false, "required": ["id"], "properties": {
            "id": uuid, "debit_account_id": uuid, "credit_account_id": uuid, "amount": amount, "pending_id": uuid,
            "timeout_seconds": { "type": "integer", "minimum": 0 }, "ledger": { "type": "string", "pattern": "^([A-Z0-9_]{1,16})?$" }, "code": { "type": "integer", "minimum": 0, "maximum": 2_147_483_647i64 },
            "flags": { "$ref": "#/components/schemas/LedgerTransferFlags" },
            "metadata": { "type": "object", "additionalProperties": { "type": "string" } } } },
        "LedgerTransfer": { "type": "object", "properties": {
            "id": uuid, "debit_account_id": uuid, "credit_account_id": uuid, "amount": amount, "pending_id": { "type": ["string", "null"] },
            "timeout_seconds": { "type": "integer" }, "ledger": { "type": "string" }, "code": { "type": "integer" },
            "flags": { "$ref": "#/components/schemas/LedgerTransferFlags" },
            "metadata": { "type": "object", "additionalProperties": { "type": "string" } }, "timestamp": { "type": "string" },
            "state": { "enum": ["posted", "pending", "pending_posted", "pending_voided", "pending_expired"] },
            "receipt_seq": { "type": "string" } } },
        "LedgerResolve": { "type": "object", "additionalProperties": false, "properties": {
            "id": uuid, "amount": amount } }
    });
    if let (Some(p), Some(new)) = (doc["paths"].as_object_mut(), paths.as_object()) {
        p.extend(new.clone());
    }
    if let (Some(s), Some(new)) = (doc["components"]["schemas"].as_object_mut(), schemas.as_object()) {
        s.extend(new.clone());
    }
}
