//! Data-subject requests: the caller's own (`/v1/me/requests`) and a privacy officer's
//! (`/v1/privacy/requests*`, `privacy.requests.read` / `.write`). auth-svc keeps them, seals their
//! notes and checks each permission again.

use axum::Json;
use axum::extract::State;
use kit::authz::Permission;
use kit::time::rfc3339;
use proto::auth::v1 as pb;
use proto::auth::v1::privacy_service_client::PrivacyServiceClient;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Refusals;
use crate::AppState;
use crate::http_layer::HttpError;
use crate::input::{JsonBody, PathParams, QueryParams};
use crate::openapi::ErrorBody;
use crate::upstream::{Call, upstream};

fn privacy(state: &AppState) -> PrivacyServiceClient<kit::client::Channel> {
    PrivacyServiceClient::new(state.upstreams.auth.clone())
}

/// What the subject asks for.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestType {
    Access,
    Rectification,
    Erasure,
    Restriction,
}

impl RequestType {
    fn of(raw: i32) -> Option<Self> {
        match pb::PrivacyRequestType::try_from(raw).ok()? {
            pb::PrivacyRequestType::Access => Some(Self::Access),
            pb::PrivacyRequestType::Rectification => Some(Self::Rectification),
            pb::PrivacyRequestType::Erasure => Some(Self::Erasure),
            pb::PrivacyRequestType::Restriction => Some(Self::Restriction),
            pb::PrivacyRequestType::Unspecified => None,
        }
    }

    fn pb(self) -> i32 {
        (match self {
            Self::Access => pb::PrivacyRequestType::Access,
            Self::Rectification => pb::PrivacyRequestType::Rectification,
            Self::Erasure => pb::PrivacyRequestType::Erasure,
            Self::Restriction => pb::PrivacyRequestType::Restriction,
        }) as i32
    }
}

/// Where a request stands; `completed` and `rejected` are final.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    Received,
    InProgress,
    Completed,
    Rejected,
}

impl RequestStatus {
    fn of(raw: i32) -> Option<Self> {
        match pb::PrivacyRequestStatus::try_from(raw).ok()? {
            pb::PrivacyRequestStatus::Received => Some(Self::Received),
            pb::PrivacyRequestStatus::InProgress => Some(Self::InProgress),
            pb::PrivacyRequestStatus::Completed => Some(Self::Completed),
            pb::PrivacyRequestStatus::Rejected => Some(Self::Rejected),
            pb::PrivacyRequestStatus::Unspecified => None,
        }
    }

    fn pb(self) -> i32 {
        (match self {
            Self::Received => pb::PrivacyRequestStatus::Received,
            Self::InProgress => pb::PrivacyRequestStatus::InProgress,
            Self::Completed => pb::PrivacyRequestStatus::Completed,
            Self::Rejected => pb::PrivacyRequestStatus::Rejected,
        }) as i32
    }
}

/// A step of a request's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestStep {
    /// Who took it (a user id or an API key's subject).
    actor: String,
    /// `file` or `update`.
    action: String,
    /// The status the step left the request in.
    status: Option<RequestStatus>,
    note: String,
    #[schema(format = DateTime)]
    created_at: Option<String>,
}

/// A data-subject request with its history.
#[derive(Debug, Serialize, ToSchema)]
pub struct PrivacyRequest {
    id: String,
    #[serde(rename = "type")]
    request_type: Option<RequestType>,
    /// The Strongroom user it is about, or null for an external subject.
    user_id: Option<String>,
    /// The tenant's own id of the subject (e.g. `contact:123`), or null for a user.
    external_subject: Option<String>,
    status: Option<RequestStatus>,
    #[schema(format = DateTime)]
    due_at: Option<String>,
    /// Still open past its due date.
    overdue: bool,
    /// Oldest first; the first is the filing (its note the details given).
    steps: Vec<RequestStep>,
    #[schema(format = DateTime)]
    created_at: Option<String>,
    #[schema(format = DateTime)]
    updated_at: Option<String>,
    /// What executing it did: `exported`, `erased`, `restricted`, or `deferred` (an erasure waiting
    /// for a legal hold to end); null until executed.
    execution: Option<String>,
    #[schema(format = DateTime)]
    executed_at: Option<String>,
}

impl From<pb::PrivacyRequest> for PrivacyRequest {
    fn from(r: pb::PrivacyRequest) -> Self {
        Self {
            id: r.id,
            request_type: RequestType::of(r.request_type),
            user_id: (!r.user_id.is_empty()).then_some(r.user_id),
            external_subject: (!r.external_subject.is_empty()).then_some(r.external_subject),
            status: RequestStatus::of(r.status),
            due_at: rfc3339(&r.due_time),
            overdue: r.overdue,
            steps: r
                .steps
                .into_iter()
                .map(|s| RequestStep {
                    actor: s.actor,
                    action: s.action,
                    status: RequestStatus::of(s.status),
                    note: s.note,
                    created_at: rfc3339(&s.create_time),
                })
                .collect(),
            created_at: rfc3339(&r.create_time),
            updated_at: rfc3339(&r.update_time),
            execution: (!r.execution.is_empty()).then_some(r.execution),
            executed_at: rfc3339(&r.execute_time),
        }
    }
}

/// A page of requests.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestPage {
    requests: Vec<PrivacyRequest>,
    next_page_token: String,
    /// Open requests past their due date (the tenant's for an officer, the caller's own on
    /// `/v1/me/requests`), whatever the filter.
    overdue_count: i64,
}

impl From<pb::ListPrivacyRequestsResponse> for RequestPage {
    fn from(r: pb::ListPrivacyRequestsResponse) -> Self {
        Self {
            requests: r.requests.into_iter().map(PrivacyRequest::from).collect(),
            next_page_token: r.next_page_token,
            overdue_count: r.overdue_count,
        }
    }
}

/// A request the caller files about themselves.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MyRequestBody {
    #[serde(rename = "type")]
    request_type: RequestType,
    /// At most 4,000 characters, sealed.
    #[serde(default)]
    details: Option<String>,
}

/// Files a data-subject request about the caller (due in 30 days)
#[utoipa::path(post, path = "/v1/me/requests", operation_id = "fileMyPrivacyRequest", request_body = MyRequestBody,
    responses((status = 200, description = "the request", body = PrivacyRequest), Refusals))]
pub async fn file_mine(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody<MyRequestBody>,
) -> Result<Json<PrivacyRequest>, HttpError> {
    let msg =
        pb::FileMyRequestRequest { request_type: body.request_type.pb(), details: body.details.unwrap_or_default() };
    Ok(Json(privacy(&state).file_my_request(call.request(msg)).await.map_err(upstream)?.into_inner().into()))
}

/// The caller's own data-subject requests, newest first
#[utoipa::path(get, path = "/v1/me/requests", operation_id = "listMyPrivacyRequests",
    responses((status = 200, description = "the caller's requests", body = RequestPage), Refusals))]
pub async fn list_mine(State(state): State<AppState>, call: Call) -> Result<Json<RequestPage>, HttpError> {
    let msg = pb::ListMyRequestsRequest {};
    Ok(Json(privacy(&state).list_my_requests(call.request(msg)).await.map_err(upstream)?.into_inner().into()))
}

/// A request a privacy officer files: about a user (`user_id`) or an external subject.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestBody {
    #[serde(rename = "type")]
    request_type: RequestType,
    /// A user of the tenant; or else `external_subject`.
    #[serde(default)]
    user_id: Option<String>,
    /// The tenant's own id of the subject: 1 to 100 letters, digits and `:._@-` (e.g. `contact:123`).
    #[serde(default)]
    external_subject: Option<String>,
    /// At most 4,000 characters, sealed.
    #[serde(default)]
    details: Option<String>,
}

/// Files a data-subject request for a user or an external subject (an external subject's erasure
/// is due in 7 days, the rest in 30); requires privacy.requests.write
#[utoipa::path(post, path = "/v1/privacy/requests", operation_id = "filePrivacyRequest", request_body = RequestBody,
    responses((status = 200, description = "the request", body = PrivacyRequest), Refusals))]
pub async fn file(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody<RequestBody>,
) -> Result<Json<PrivacyRequest>, HttpError> {
    call.require(Permission::PrivacyRequestsWrite)?;
    let msg = pb::FilePrivacyRequestRequest {
        request_type: body.request_type.pb(),
        user_id: body.user_id.unwrap_or_default(),
        external_subject: body.external_subject.unwrap_or_default(),
        details: body.details.unwrap_or_default(),
    };
    Ok(Json(privacy(&state).file_request(call.request(msg)).await.map_err(upstream)?.into_inner().into()))
}

/// Which requests to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RequestQuery {
    /// Only requests in this status; absent: every status
    #[serde(default)]
    status: Option<RequestStatus>,
    /// 0 or absent: 50
    #[serde(default)]
    #[param(minimum = 0, maximum = 200)]
    page_size: i32,
    /// next_page_token of the previous page
    #[serde(default)]
    page_token: String,
}

/// Data-subject requests, open ones past their due date first, then by due date; requires
/// privacy.requests.read
#[utoipa::path(get, path = "/v1/privacy/requests", operation_id = "listPrivacyRequests", params(RequestQuery),
    responses((status = 200, description = "a page of requests", body = RequestPage), Refusals))]
pub async fn list(
    State(state): State<AppState>,
    call: Call,
    QueryParams(q): QueryParams<RequestQuery>,
) -> Result<Json<RequestPage>, HttpError> {
    call.require(Permission::PrivacyRequestsRead)?;
    let status = q.status.map(RequestStatus::pb).unwrap_or_default();
    let msg = pb::ListPrivacyRequestsRequest { status, page_size: q.page_size, page_token: q.page_token };
    Ok(Json(privacy(&state).list_requests(call.request(msg)).await.map_err(upstream)?.into_inner().into()))
}

/// One data-subject request with its history; requires privacy.requests.read
#[utoipa::path(get, path = "/v1/privacy/requests/{id}", operation_id = "getPrivacyRequest",
    params(("id" = String, Path)),
    responses((status = 200, description = "the request", body = PrivacyRequest), Refusals))]
pub async fn get(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
) -> Result<Json<PrivacyRequest>, HttpError> {
    call.require(Permission::PrivacyRequestsRead)?;
    let msg = pb::GetPrivacyRequestRequest { id };
    Ok(Json(privacy(&state).get_request(call.request(msg)).await.map_err(upstream)?.into_inner().into()))
}

/// A step on a request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    /// `in_progress`, `completed` or `rejected` (only forward).
    status: RequestStatus,
    /// Required to complete or reject (1 to 4,000 characters), sealed.
    #[serde(default)]
    note: Option<String>,
}

/// Moves a data-subject request on with a note (completing or rejecting is final and needs one);
/// requires privacy.requests.write
#[utoipa::path(post, path = "/v1/privacy/requests/{id}/update", operation_id = "updatePrivacyRequest",
    params(("id" = String, Path)), request_body = UpdateBody, responses(
        (status = 200, description = "the request", body = PrivacyRequest),
        (status = 412, description = "REQUEST_FINAL (completed or rejected already) or INVALID_TRANSITION",
            body = ErrorBody),
        Refusals,
    ))]
pub async fn update(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<UpdateBody>,
) -> Result<Json<PrivacyRequest>, HttpError> {
    call.require(Permission::PrivacyRequestsWrite)?;
    let msg = pb::UpdatePrivacyRequestRequest { id, status: body.status.pb(), note: body.note.unwrap_or_default() };
    Ok(Json(privacy(&state).update_request(call.request(msg)).await.map_err(upstream)?.into_inner().into()))
}

/// What executing a request did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Execution {
    /// The request afterwards: completed, or in progress while a legal hold defers an erasure.
    request: PrivacyRequest,
    /// An access request's bundle: what every service holds about the subject (`auth`, `vault`,
    /// `audit`, `ledger`), format `strongroom.subject-export.v1`; null for other requests.
    #[schema(value_type = Option<Object>)]
    bundle: Option<serde_json::Value>,
    /// SHA-256 (hex) of the bundle's RFC 8785 canonical JSON, as recorded in the request's
    /// completing step.
    bundle_sha256: Option<String>,
}

/// Most pages of one service's part an access bundle reads (each up to 1,000 entries or
/// transfers): a subject with more is refused rather than exported incompletely.
const MAX_BUNDLE_PAGES: usize = 200;

/// Follows `next` through every page of one part, refusing a part larger than a bundle holds.
async fn all_pages<T, F, Fut>(mut next: F) -> Result<Vec<T>, HttpError>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, String), HttpError>>,
{
    let (mut items, mut token) = next(String::new()).await?;
    let mut pages = 1;
    while !token.is_empty() {
        pages += 1;
        if pages > MAX_BUNDLE_PAGES {
            return Err(kit::ApiError::failed_precondition(
                "BUNDLE_TOO_LARGE",
                "the subject's data exceeds what one access bundle holds; export it with the operator tools",
            )
            .into());
        }
        let (more, t) = next(token).await?;
        items.extend(more);
        token = t;
    }
    Ok(items)
}

/// An access request's bundle: auth-svc's part, then vault-svc's, audit-svc's and ledger-svc's for
/// the subject as auth-svc names it.
async fn access_bundle(state: &AppState, call: &Call, id: &str) -> Result<serde_json::Value, HttpError> {
    use proto::audit::v1 as audit_pb;
    use proto::ledger::v1 as ledger_pb;
    use proto::vault::v1 as vault_pb;
    let msg = pb::ExportSubjectRequest { request_id: id.to_owned() };
    let auth = privacy(state).export_subject(call.request(msg)).await.map_err(upstream)?.into_inner();
    let auth_part: serde_json::Value = serde_json::from_str(&auth.json).map_err(|e| kit::ApiError::internal(&e))?;

    let mut vault =
        proto::vault::v1::key_management_service_client::KeyManagementServiceClient::new(state.upstreams.vault.clone());
    let mut vault_part = Vec::new();
    for subject in &auth.vault_subjects {
        let msg = vault_pb::DescribeSubjectRequest { subject: subject.clone(), privacy_request_id: id.to_owned() };
        let d = vault.describe_subject(call.request(msg)).await.map_err(upstream)?.into_inner();
        let keys: Vec<serde_json::Value> = d
            .keys
            .iter()
            .map(|k| {
                serde_json::json!({ "version": k.version, "state": k.state,
                    "created_at": rfc3339(&k.create_time), "destroyed_at": rfc3339(&k.destroy_time) })
            })
            .collect();
        let secrets: Vec<serde_json::Value> = d
            .secrets
            .iter()
            .map(|s| {
                serde_json::json!({ "path": s.path, "current_version": s.current_version, "labels": s.labels,
                    "created_at": rfc3339(&s.create_time), "updated_at": rfc3339(&s.update_time),
                    "deleted_at": rfc3339(&s.delete_time) })
            })
            .collect();
        vault_part.push(serde_json::json!({ "subject_key": subject, "key_versions": keys, "secrets": secrets }));
    }

    let audit = proto::audit::v1::audit_log_service_client::AuditLogServiceClient::new(state.upstreams.audit.clone());
    let values: Vec<audit_pb::SubjectValue> = auth
        .personal_values
        .iter()
        .map(|v| audit_pb::SubjectValue { name: v.name.clone(), value: v.value.clone() })
        .collect();
    let mut resolved = std::collections::BTreeMap::new();
    let entries = all_pages(|page_token| {
        let msg = audit_pb::ExportSubjectEntriesRequest {
            actors: auth.audit_actors.clone(),
            resources: auth.audit_resources.clone(),
            personal_values: values.clone(),
            page_size: 1000,
            page_token,
            privacy_request_id: id.to_owned(),
        };
        let mut audit = audit.clone();
        let req = call.request(msg);
        async move {
            let page = audit.export_subject_entries(req).await.map_err(upstream)?.into_inner();
            Ok((vec![(page.entries, page.resolved)], page.next_page_token))
        }
    })
    .await?
    .into_iter()
    .flat_map(|(entries, found)| {
        for r in found {
            resolved.insert(r.pseudonym, serde_json::json!({ "name": r.name, "value": r.value }));
        }
        entries.iter().map(crate::audit::Entry::from).collect::<Vec<_>>()
    })
    .collect::<Vec<_>>();

    let ledger = proto::ledger::v1::ledger_service_client::LedgerServiceClient::new(state.upstreams.ledger.clone());
    let mut accounts = Vec::new();
    let transfers = all_pages(|page_token| {
        let msg = ledger_pb::ExportOwnerRequest {
            owner: auth.subject.clone(),
            page_size: 1000,
            page_token,
            privacy_request_id: id.to_owned(),
        };
        let mut ledger = ledger.clone();
        let req = call.request(msg);
        async move {
            let page = ledger.export_owner(req).await.map_err(upstream)?.into_inner();
            Ok((vec![(page.accounts, page.transfers)], page.next_page_token))
        }
    })
    .await?
    .into_iter()
    .flat_map(|(a, t)| {
        accounts.extend(a.iter().map(crate::ledger::Account::from));
        t.iter().map(crate::ledger::Transfer::from).collect::<Vec<_>>()
    })
    .collect::<Vec<_>>();

    Ok(serde_json::json!({
        "format": "strongroom.subject-export.v1",
        "request_id": id,
        "tenant": call.caller.tenant,
        "exported_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "auth": auth_part,
        "vault": { "subject_keys": vault_part },
        "audit": { "entries": entries, "resolved_pseudonyms": resolved },
        "ledger": { "accounts": accounts, "transfers": transfers },
    }))
}

/// Executes a data-subject request; requires privacy.requests.read and .write. An access request: the
/// bundle of what every service holds about the subject (values of secrets never), returned here
/// once, its SHA-256 recorded as the request completes. An erasure: the user is deleted (or an
/// external subject's keys shredded) and the request completes, or, under a legal hold, stays in
/// progress (`deferred`) until the hold is released. A restriction suspends the user until they
/// are reactivated. A rectification is not executed (the user or an administrator makes it).
#[utoipa::path(post, path = "/v1/privacy/requests/{id}/execute", operation_id = "executePrivacyRequest",
    params(("id" = String, Path)), responses(
        (status = 200, description = "what was done", body = Execution),
        (status = 412, description = "REQUEST_FINAL, NOT_EXECUTABLE, BUNDLE_TOO_LARGE", body = ErrorBody),
        Refusals,
    ))]
pub async fn execute(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
) -> Result<Json<Execution>, HttpError> {
    call.require(Permission::PrivacyRequestsRead)?;
    call.require(Permission::PrivacyRequestsWrite)?;
    let msg = pb::GetPrivacyRequestRequest { id: id.clone() };
    let current = privacy(&state).get_request(call.request(msg)).await.map_err(upstream)?.into_inner();
    if current.request_type != pb::PrivacyRequestType::Access as i32 {
        let msg = pb::ExecuteRequestRequest { id };
        let done = privacy(&state).execute_request(call.request(msg)).await.map_err(upstream)?.into_inner();
        return Ok(Json(Execution { request: done.into(), bundle: None, bundle_sha256: None }));
    }
    let bundle = access_bundle(&state, &call, &id).await?;
    let canonical = serde_jcs::to_vec(&bundle).map_err(|e| kit::ApiError::internal(&e))?;
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&canonical));
    let msg = pb::UpdatePrivacyRequestRequest {
        id,
        status: pb::PrivacyRequestStatus::Completed as i32,
        note: format!("access bundle delivered; sha256:{digest}"),
    };
    let done = privacy(&state).update_request(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(Execution { request: done.into(), bundle: Some(bundle), bundle_sha256: Some(digest) }))
}

/// What a legal hold covers.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HoldScope {
    /// Everything of the tenant.
    Tenant,
    /// One user (`subject_id`).
    Subject,
}

impl HoldScope {
    fn of(raw: i32) -> Option<Self> {
        match pb::LegalHoldScope::try_from(raw).ok()? {
            pb::LegalHoldScope::Tenant => Some(Self::Tenant),
            pb::LegalHoldScope::Subject => Some(Self::Subject),
            pb::LegalHoldScope::Unspecified => None,
        }
    }

    fn pb(self) -> i32 {
        (match self {
            Self::Tenant => pb::LegalHoldScope::Tenant,
            Self::Subject => pb::LegalHoldScope::Subject,
        }) as i32
    }
}

/// A legal hold: while active, nothing it covers is deleted.
#[derive(Debug, Serialize, ToSchema)]
pub struct LegalHold {
    id: String,
    scope: Option<HoldScope>,
    /// The held user, or null for a tenant hold.
    subject_id: Option<String>,
    reason: String,
    /// Who placed it (a user id or an API key's subject).
    placed_by: String,
    #[schema(format = DateTime)]
    placed_at: Option<String>,
    /// Null while the hold is active.
    #[schema(format = DateTime)]
    released_at: Option<String>,
    released_by: Option<String>,
    release_note: Option<String>,
}

impl From<pb::LegalHold> for LegalHold {
    fn from(h: pb::LegalHold) -> Self {
        let some = |s: String| (!s.is_empty()).then_some(s);
        Self {
            id: h.id,
            scope: HoldScope::of(h.scope),
            subject_id: some(h.subject_id),
            reason: h.reason,
            placed_by: h.placed_by,
            placed_at: rfc3339(&h.place_time),
            released_at: rfc3339(&h.release_time),
            released_by: some(h.released_by),
            release_note: some(h.release_note),
        }
    }
}

/// A hold to place.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldBody {
    scope: HoldScope,
    /// The user to hold: required for a `subject` hold, absent for a `tenant` one.
    #[serde(default)]
    subject_id: Option<String>,
    /// 1 to 1,000 characters (e.g. the matter it answers).
    reason: String,
}

/// Places a legal hold on the tenant or on one user: deletions it covers wait until it is released
/// (a user's deletion restricts them instead); requires privacy.holds.write
#[utoipa::path(post, path = "/v1/privacy/holds", operation_id = "placeLegalHold", request_body = HoldBody,
    responses(
        (status = 200, description = "the hold", body = LegalHold),
        (status = 409, description = "HOLD_EXISTS: the same scope and subject is held already", body = ErrorBody),
        Refusals,
    ))]
pub async fn place_hold(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody<HoldBody>,
) -> Result<Json<LegalHold>, HttpError> {
    call.require(Permission::PrivacyHoldsWrite)?;
    let msg = pb::PlaceLegalHoldRequest {
        scope: body.scope.pb(),
        subject_id: body.subject_id.unwrap_or_default(),
        reason: body.reason,
    };
    Ok(Json(privacy(&state).place_legal_hold(call.request(msg)).await.map_err(upstream)?.into_inner().into()))
}

/// The legal holds.
#[derive(Debug, Serialize, ToSchema)]
pub struct HoldList {
    /// Active ones first, then newest first.
    holds: Vec<LegalHold>,
}

/// Every legal hold, active ones first; requires privacy.requests.read or privacy.holds.write
#[utoipa::path(get, path = "/v1/privacy/holds", operation_id = "listLegalHolds",
    responses((status = 200, description = "the holds", body = HoldList), Refusals))]
pub async fn list_holds(State(state): State<AppState>, call: Call) -> Result<Json<HoldList>, HttpError> {
    if call.require(Permission::PrivacyHoldsWrite).is_err() {
        call.require(Permission::PrivacyRequestsRead)?;
    }
    let holds = privacy(&state).list_legal_holds(call.request(pb::ListLegalHoldsRequest {})).await.map_err(upstream)?;
    Ok(Json(HoldList { holds: holds.into_inner().holds.into_iter().map(LegalHold::from).collect() }))
}

/// A release.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBody {
    /// At most 1,000 characters.
    #[serde(default)]
    note: Option<String>,
}

/// What a release did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Released {
    hold: Option<LegalHold>,
    /// Deferred erasures the release completed.
    erasures_completed: i64,
    /// Deferred erasures another active hold still holds back.
    erasures_still_held: i64,
}

/// Releases a legal hold and completes every deferred erasure no other hold covers; requires
/// privacy.holds.write
#[utoipa::path(post, path = "/v1/privacy/holds/{id}/release", operation_id = "releaseLegalHold",
    params(("id" = String, Path)), request_body = ReleaseBody, responses(
        (status = 200, description = "the released hold and the erasures completed", body = Released),
        (status = 412, description = "HOLD_RELEASED: released already", body = ErrorBody),
        Refusals,
    ))]
pub async fn release_hold(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<ReleaseBody>,
) -> Result<Json<Released>, HttpError> {
    call.require(Permission::PrivacyHoldsWrite)?;
    let msg = pb::ReleaseLegalHoldRequest { id, note: body.note.unwrap_or_default() };
    let r = privacy(&state).release_legal_hold(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(Released {
        hold: r.hold.map(LegalHold::from),
        erasures_completed: r.erasures_completed,
        erasures_still_held: r.erasures_still_held,
    }))
}
