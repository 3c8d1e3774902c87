//! Suspension appeals (`/v1/auth/appeal*` for the suspended user, who signs each step with their
//! password as a login does; `/v1/appeals*` for staff holding users.suspend).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use kit::ApiError;
use kit::authz::Permission;
use kit::time::rfc3339;
use proto::auth::v1 as pb;
use proto::auth::v1::appeal_service_client::AppealServiceClient;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Refusals;
use super::login::{SignInRefusals, anonymous, check_tenant, client_info, recorded_in};
use crate::AppState;
use crate::http_layer::{HttpError, JsonError, RequestId};
use crate::input::{JsonBody, PathParams, QueryParams};
use crate::openapi::ErrorBody;
use crate::upstream::{Call, upstream};

pub(super) fn appeals(state: &AppState) -> AppealServiceClient<kit::client::Channel> {
    AppealServiceClient::new(state.upstreams.auth.clone())
}

/// Where an appeal stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AppealStatus {
    /// Waiting for staff.
    Open,
    /// Waiting for the user's answer.
    InformationRequested,
    /// Decided: the suspension was lifted.
    Lifted,
    /// Decided: the suspension stands.
    Upheld,
}

impl AppealStatus {
    fn of(status: i32) -> Option<Self> {
        match pb::AppealStatus::try_from(status).ok()? {
            pb::AppealStatus::Open => Some(Self::Open),
            pb::AppealStatus::InformationRequested => Some(Self::InformationRequested),
            pb::AppealStatus::Lifted => Some(Self::Lifted),
            pb::AppealStatus::Upheld => Some(Self::Upheld),
            pb::AppealStatus::Unspecified => None,
        }
    }

    fn pb(self) -> pb::AppealStatus {
        match self {
            Self::Open => pb::AppealStatus::Open,
            Self::InformationRequested => pb::AppealStatus::InformationRequested,
            Self::Lifted => pb::AppealStatus::Lifted,
            Self::Upheld => pb::AppealStatus::Upheld,
        }
    }
}

/// A message of an appeal.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppealMessage {
    /// `user` or `staff`.
    author: String,
    body: String,
    #[schema(format = DateTime)]
    created_at: Option<String>,
}

/// An appeal against a suspension, with its whole history.
#[derive(Debug, Serialize, ToSchema)]
pub struct Appeal {
    id: String,
    user_id: String,
    status: Option<AppealStatus>,
    /// The suspension's reason when the appeal was filed.
    suspension_reason: String,
    /// The statement first, then each request for information and answer.
    messages: Vec<AppealMessage>,
    /// The decision's reason, shown to the user; null until decided.
    decision_reason: Option<String>,
    #[schema(format = DateTime)]
    created_at: Option<String>,
    #[schema(format = DateTime)]
    decided_at: Option<String>,
}

impl From<pb::Appeal> for Appeal {
    fn from(a: pb::Appeal) -> Self {
        Self {
            id: a.id,
            user_id: a.user_id,
            status: AppealStatus::of(a.status),
            suspension_reason: a.suspension_reason,
            messages: a
                .messages
                .into_iter()
                .map(|m| AppealMessage { author: m.author, body: m.body, created_at: rfc3339(&m.create_time) })
                .collect(),
            decision_reason: (!a.decision_reason.is_empty()).then_some(a.decision_reason),
            created_at: rfc3339(&a.create_time),
            decided_at: rfc3339(&a.decide_time),
        }
    }
}

/// A suspended user's sign-in for an appeal step, with the statement or message of the step.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppealBody {
    tenant: String,
    email: String,
    password: String,
    /// The statement (filing) or the answer (1 to 4,000 characters); absent when reading.
    #[serde(default)]
    text: Option<String>,
}

/// The user's side: checks the tenant, sends `call` with the credentials, records the request in
/// the tenant named.
async fn as_user<F, Fut>(
    state: &AppState,
    id: &RequestId,
    addr: &SocketAddr,
    headers: &HeaderMap,
    body: AppealBody,
    call: F,
) -> Response
where
    F: FnOnce(AppStateClient, tonic::Request<(pb::AppealCredentials, String)>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<pb::Appeal>, tonic::Status>>,
{
    let tenant = check_tenant(&body.tenant);
    let named = tenant.clone().ok();
    let result = async {
        let tenant = tenant?;
        let credentials = pb::AppealCredentials {
            tenant: tenant.clone(),
            email: body.email,
            password: body.password,
            client: Some(client_info(state, addr, headers)),
        };
        let msg = (credentials, body.text.unwrap_or_default());
        let r = call(appeals(state), anonymous(&tenant, id, msg)).await.map_err(upstream)?;
        Ok::<_, ApiError>(Appeal::from(r.into_inner()))
    }
    .await;
    let resp = match result {
        Ok(appeal) => Json(appeal).into_response(),
        Err(e) => JsonError(e, id.0.clone()).into_response(),
    };
    recorded_in(resp, named)
}

type AppStateClient = AppealServiceClient<kit::client::Channel>;

/// Splits a request carrying `(credentials, text)` into the request of `make`.
fn split<T>(
    req: tonic::Request<(pb::AppealCredentials, String)>,
    make: impl FnOnce(pb::AppealCredentials, String) -> T,
) -> tonic::Request<T> {
    let (metadata, extensions, (credentials, text)) = req.into_parts();
    tonic::Request::from_parts(metadata, extensions, make(credentials, text))
}

/// A suspended user files an appeal with a statement (`text`), signing it with their password
#[utoipa::path(post, path = "/v1/auth/appeal", operation_id = "fileAppeal", request_body = AppealBody, responses(
    (status = 200, description = "the appeal", body = Appeal),
    (status = 412, description = "NOT_SUSPENDED, or APPEAL_OPEN (one is waiting already)", body = ErrorBody),
    SignInRefusals,
))]
pub async fn file(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<AppealBody>,
) -> Response {
    as_user(&state, &id, &addr, &headers, body, |mut c, r| async move {
        c.file_appeal(split(r, |credentials, statement| pb::FileAppealRequest {
            credentials: Some(credentials),
            statement,
        }))
        .await
    })
    .await
}

/// A suspended user reads their latest appeal (its state, messages and decision)
#[utoipa::path(post, path = "/v1/auth/appeal/status", operation_id = "getMyAppeal", request_body = AppealBody,
    responses(
        (status = 200, description = "the appeal", body = Appeal),
        (status = 404, description = "APPEAL_NOT_FOUND", body = ErrorBody),
        (status = 412, description = "NOT_SUSPENDED", body = ErrorBody),
        SignInRefusals,
    ))]
pub async fn status(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<AppealBody>,
) -> Response {
    as_user(&state, &id, &addr, &headers, body, |mut c, r| async move {
        c.get_my_appeal(split(r, |credentials, _| credentials)).await
    })
    .await
}

/// A suspended user answers staff's request for more information (`text`); the appeal is open again
#[utoipa::path(post, path = "/v1/auth/appeal/answer", operation_id = "answerAppeal", request_body = AppealBody,
    responses(
        (status = 200, description = "the appeal", body = Appeal),
        (status = 404, description = "APPEAL_NOT_FOUND", body = ErrorBody),
        (status = 412, description = "NOT_SUSPENDED, or NO_INFORMATION_REQUESTED", body = ErrorBody),
        SignInRefusals,
    ))]
pub async fn answer(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<AppealBody>,
) -> Response {
    as_user(&state, &id, &addr, &headers, body, |mut c, r| async move {
        c.answer_appeal(split(r, |credentials, message| pb::AnswerAppealRequest {
            credentials: Some(credentials),
            message,
        }))
        .await
    })
    .await
}

/// Which appeals to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AppealQuery {
    /// Only appeals in this state; absent: those waiting (open or awaiting the user), oldest first
    #[serde(default)]
    status: Option<AppealStatus>,
    /// 0 or absent: 50
    #[serde(default)]
    #[param(minimum = 0, maximum = 200)]
    page_size: i32,
    /// next_page_token of the previous page
    #[serde(default)]
    page_token: String,
}

/// A page of appeals.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppealPage {
    appeals: Vec<Appeal>,
    next_page_token: String,
}

/// Appeals, those waiting oldest first; requires users.suspend
#[utoipa::path(get, path = "/v1/appeals", operation_id = "listAppeals", params(AppealQuery), responses(
    (status = 200, description = "a page of appeals", body = AppealPage), Refusals,
))]
pub async fn list(
    State(state): State<AppState>,
    call: Call,
    QueryParams(q): QueryParams<AppealQuery>,
) -> Result<Json<AppealPage>, HttpError> {
    call.require(Permission::UsersSuspend)?;
    let status = q.status.map(|s| s.pb() as i32).unwrap_or_default();
    let msg = pb::ListAppealsRequest { status, page_size: q.page_size, page_token: q.page_token };
    let r = appeals(&state).list_appeals(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(AppealPage {
        appeals: r.appeals.into_iter().map(Appeal::from).collect(),
        next_page_token: r.next_page_token,
    }))
}

/// A request for more information.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InformationBody {
    /// Shown to the user: 1 to 4,000 characters.
    message: String,
}

/// Asks the user for more information; requires users.suspend
#[utoipa::path(post, path = "/v1/appeals/{id}/request-information", operation_id = "requestAppealInformation",
    params(("id" = String, Path)), request_body = InformationBody, responses(
        (status = 200, description = "the appeal", body = Appeal),
        (status = 412, description = "APPEAL_NOT_OPEN", body = ErrorBody),
        Refusals,
    ))]
pub async fn request_information(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<InformationBody>,
) -> Result<Json<Appeal>, HttpError> {
    call.require(Permission::UsersSuspend)?;
    let msg = pb::AppealMessageRequest { id, message: body.message };
    let r = appeals(&state).request_appeal_information(call.request(msg)).await.map_err(upstream)?;
    Ok(Json(r.into_inner().into()))
}

/// A decision on an appeal.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    decision: Decision,
    /// Shown to the user: 1 to 2,000 characters.
    reason: String,
}

/// Lift the suspension (the user is reactivated) or uphold it.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Lift,
    Uphold,
}

/// Decides an open appeal: lifting reactivates the user; requires users.suspend
#[utoipa::path(post, path = "/v1/appeals/{id}/decide", operation_id = "decideAppeal",
    params(("id" = String, Path)), request_body = DecisionBody, responses(
        (status = 200, description = "the decided appeal", body = Appeal),
        (status = 412, description = "APPEAL_NOT_OPEN", body = ErrorBody),
        Refusals,
    ))]
pub async fn decide(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<DecisionBody>,
) -> Result<Json<Appeal>, HttpError> {
    call.require(Permission::UsersSuspend)?;
    let decision = match body.decision {
        Decision::Lift => pb::AppealDecision::Lift,
        Decision::Uphold => pb::AppealDecision::Uphold,
    } as i32;
    let msg = pb::DecideAppealRequest { id, decision, reason: body.reason };
    Ok(Json(appeals(&state).decide_appeal(call.request(msg)).await.map_err(upstream)?.into_inner().into()))
}
