//! Retention, for a tenant's administrators: the tenant's retention policy (how long auth-svc
//! keeps each kind of data once it has ended, `/v1/tenant/retention`) and its retention classes
//! (crypto-deletion by time in vault-svc, `/v1/vault/retention-classes`). The gateway checks the
//! route's permission; the service checks it again and decides.

use axum::Json;
use axum::extract::State;
use kit::ApiError;
use kit::authz::Permission;
use kit::time::rfc3339;
use proto::auth::v1 as auth_pb;
use proto::auth::v1::access_service_client::AccessServiceClient;
use proto::vault::v1 as vault_pb;
use proto::vault::v1::retention_service_client::RetentionServiceClient;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::http_layer::HttpError;
use crate::identity::Refusals;
use crate::input::{JsonBody, PathParams, QueryParams};
use crate::upstream::{Call, upstream};

fn access(state: &AppState) -> AccessServiceClient<kit::client::Channel> {
    AccessServiceClient::new(state.upstreams.auth.clone())
}

fn classes(state: &AppState) -> RetentionServiceClient<kit::client::Channel> {
    RetentionServiceClient::new(state.upstreams.vault.clone())
}

// ---- The tenant's retention policy (auth-svc) ----

/// How long the tenant's identity data is kept once it has ended, in days per kind of data;
/// auth-svc's housekeeping removes it then.
#[derive(Debug, Serialize, ToSchema)]
pub struct RetentionPolicy {
    /// An ended session (expired; a revoked one still expires on schedule) and its refresh tokens,
    /// after they expired.
    #[schema(minimum = 1, maximum = 3650)]
    ended_sessions_days: u32,
    /// A pending login's second-factor challenge, after it expired.
    #[schema(minimum = 1, maximum = 3650)]
    mfa_challenges_days: u32,
    /// What is left of a deleted user (the row without personal data, ended sessions, revoked
    /// API keys, appeals), after the deletion.
    #[schema(minimum = 1, maximum = 3650)]
    erased_users_days: u32,
    /// A closed data-subject request (completed or rejected) and its history, after it closed,
    /// unless a legal hold covers its subject.
    #[schema(minimum = 1, maximum = 3650)]
    privacy_requests_days: u32,
    /// When the policy last changed.
    #[schema(format = DateTime)]
    updated_at: Option<String>,
}

impl From<&auth_pb::RetentionPolicy> for RetentionPolicy {
    fn from(p: &auth_pb::RetentionPolicy) -> Self {
        Self {
            ended_sessions_days: p.ended_sessions_days,
            mfa_challenges_days: p.mfa_challenges_days,
            erased_users_days: p.erased_users_days,
            privacy_requests_days: p.privacy_requests_days,
            updated_at: rfc3339(&p.update_time),
        }
    }
}

/// A new retention policy: every value, 1–3650 days (`privacy_requests_days` may be left out to
/// keep its current value).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicyBody {
    #[schema(minimum = 1, maximum = 3650)]
    ended_sessions_days: u32,
    #[schema(minimum = 1, maximum = 3650)]
    mfa_challenges_days: u32,
    #[schema(minimum = 1, maximum = 3650)]
    erased_users_days: u32,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3650)]
    privacy_requests_days: Option<u32>,
}

/// The tenant's retention policy (any user of the tenant may read it)
#[utoipa::path(get, path = "/v1/tenant/retention", operation_id = "getRetentionPolicy",
    responses((status = 200, description = "the policy", body = RetentionPolicy), Refusals))]
pub async fn get_policy(State(state): State<AppState>, call: Call) -> Result<Json<RetentionPolicy>, HttpError> {
    let msg = auth_pb::GetRetentionPolicyRequest {};
    let p = access(&state).get_retention_policy(call.request(msg)).await.map_err(upstream)?;
    Ok(Json(p.get_ref().into()))
}

/// Changes the retention policy, applied from housekeeping's next run; audited with the previous
/// and the new values; requires tenant.policy.write
#[utoipa::path(put, path = "/v1/tenant/retention", operation_id = "putRetentionPolicy",
    request_body = RetentionPolicyBody,
    responses((status = 200, description = "the policy", body = RetentionPolicy), Refusals))]
pub async fn put_policy(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody<RetentionPolicyBody>,
) -> Result<Json<RetentionPolicy>, HttpError> {
    call.require(Permission::TenantPolicyWrite)?;
    // auth-svc reads 0 as "keep the current value": an explicit 0 is out of bounds here.
    if body.privacy_requests_days == Some(0) {
        return Err(ApiError::invalid_field("privacy_requests_days", "1 to 3650 days").into());
    }
    let msg = auth_pb::RetentionPolicy {
        ended_sessions_days: body.ended_sessions_days,
        mfa_challenges_days: body.mfa_challenges_days,
        erased_users_days: body.erased_users_days,
        privacy_requests_days: body.privacy_requests_days.unwrap_or_default(),
        update_time: None,
    };
    let p = access(&state).update_retention_policy(call.request(msg)).await.map_err(upstream)?;
    Ok(Json(p.get_ref().into()))
}

// ---- Retention classes (vault-svc) ----

/// What one key of a retention class covers: a calendar day or month (UTC).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RetentionPeriod {
    Day,
    Month,
}

impl RetentionPeriod {
    fn from_pb(raw: i32) -> Option<Self> {
        match vault_pb::RetentionPeriod::try_from(raw) {
            Ok(vault_pb::RetentionPeriod::Day) => Some(Self::Day),
            Ok(vault_pb::RetentionPeriod::Month) => Some(Self::Month),
            _ => None,
        }
    }

    fn to_pb(period: Option<Self>) -> i32 {
        match period {
            None => vault_pb::RetentionPeriod::Unspecified as i32,
            Some(Self::Day) => vault_pb::RetentionPeriod::Day as i32,
            Some(Self::Month) => vault_pb::RetentionPeriod::Month as i32,
        }
    }
}

/// A retention class: transit encryption with it seals under the current period's key, and a
/// period's key is destroyed once the whole period is past the class's retention.
#[derive(Debug, Serialize, ToSchema)]
pub struct RetentionClass {
    /// `[a-z][a-z0-9_-]{0,63}`, e.g. `messages`.
    name: String,
    /// A period's key is destroyed this many days after the period ended.
    #[schema(minimum = 1, maximum = 36500)]
    retention_days: u32,
    period: Option<RetentionPeriod>,
    #[schema(format = DateTime)]
    created_at: Option<String>,
    #[schema(format = DateTime)]
    updated_at: Option<String>,
    /// Period keys still able to decrypt.
    live_period_keys: u32,
    /// Period keys destroyed (their ciphertexts answer RETENTION_EXPIRED).
    destroyed_period_keys: u32,
}

impl From<&vault_pb::RetentionClass> for RetentionClass {
    fn from(c: &vault_pb::RetentionClass) -> Self {
        Self {
            name: c.name.clone(),
            retention_days: c.retention_days,
            period: RetentionPeriod::from_pb(c.period),
            created_at: rfc3339(&c.create_time),
            updated_at: rfc3339(&c.update_time),
            live_period_keys: c.live_period_keys,
            destroyed_period_keys: c.destroyed_period_keys,
        }
    }
}

/// A page of retention classes, by name.
#[derive(Debug, Serialize, ToSchema)]
pub struct RetentionClassPage {
    retention_classes: Vec<RetentionClass>,
    /// Empty on the last page.
    next_page_token: String,
}

/// A page of retention classes (up to 1,000).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ClassPageQuery {
    /// 0 or absent: 100
    #[serde(default)]
    #[param(minimum = 0, maximum = 1000)]
    page_size: i32,
    /// next_page_token of the previous page
    #[serde(default)]
    page_token: String,
}

/// A class to create, or a new retention for one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionClassBody {
    #[schema(minimum = 1, maximum = 36500)]
    retention_days: u32,
    /// Required when the class is created; fixed afterwards (absent, or the class's own).
    #[serde(default)]
    period: Option<RetentionPeriod>,
    /// A repeat returns the original response.
    #[serde(default)]
    #[schema(format = "uuid")]
    request_id: Option<String>,
}

/// The tenant's retention classes, by name, with their period keys' counts; requires
/// tenant.policy.write
#[utoipa::path(get, path = "/v1/vault/retention-classes", operation_id = "listRetentionClasses",
    params(ClassPageQuery),
    responses((status = 200, description = "a page of classes", body = RetentionClassPage), Refusals))]
pub async fn list_classes(
    State(state): State<AppState>,
    call: Call,
    QueryParams(q): QueryParams<ClassPageQuery>,
) -> Result<Json<RetentionClassPage>, HttpError> {
    call.require(Permission::TenantPolicyWrite)?;
    let msg = vault_pb::ListRetentionClassesRequest { page_size: q.page_size, page_token: q.page_token };
    let r = classes(&state).list_retention_classes(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(RetentionClassPage {
        retention_classes: r.retention_classes.iter().map(RetentionClass::from).collect(),
        next_page_token: r.next_page_token,
    }))
}

/// Creates a retention class or changes its retention (its period is fixed at creation);
/// audited; requires tenant.policy.write
#[utoipa::path(put, path = "/v1/vault/retention-classes/{name}", operation_id = "putRetentionClass",
    params(("name" = String, Path, description = "`[a-z][a-z0-9_-]{0,63}`")),
    request_body = RetentionClassBody,
    responses(
        (status = 200, description = "the class", body = RetentionClass),
        (status = 412, description = "RETENTION_PERIOD_FIXED: the class exists with another period", body = crate::openapi::ErrorBody),
        Refusals,
    ))]
pub async fn put_class(
    State(state): State<AppState>,
    call: Call,
    PathParams(name): PathParams<String>,
    JsonBody(body): JsonBody<RetentionClassBody>,
) -> Result<Json<RetentionClass>, HttpError> {
    call.require(Permission::TenantPolicyWrite)?;
    let msg = vault_pb::PutRetentionClassRequest {
        name,
        retention_days: body.retention_days,
        period: RetentionPeriod::to_pb(body.period),
        request_id: body.request_id.unwrap_or_default(),
    };
    let r = classes(&state).put_retention_class(call.request(msg)).await.map_err(upstream)?.into_inner();
    r.retention_class
        .as_ref()
        .map(|c| Json(c.into()))
        .ok_or_else(|| ApiError::internal(&"vault-svc answered no class").into())
}
