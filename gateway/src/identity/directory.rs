//! The tenant's directory, administered under permissions: users, roles and their grants, groups
//! and their members, API keys, and the tenant's identity policy.

use axum::Json;
use axum::extract::State;
use kit::ApiError;
use kit::authz::Permission;
use kit::time::rfc3339;
use proto::auth::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Refusals, RevocationPending, Revoked, access, sessions, users};
use crate::AppState;
use crate::http_layer::HttpError;
use crate::input::{JsonBody, PathParams, QueryParams};
use crate::openapi::ErrorBody;
use crate::upstream::{Call, upstream};

/// Where a user's account stands.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    Active,
    Suspended,
    Deleted,
    Unknown,
}

impl From<i32> for UserStatus {
    fn from(s: i32) -> Self {
        match s {
            1 => Self::Active,
            2 => Self::Suspended,
            3 => Self::Deleted,
            _ => Self::Unknown,
        }
    }
}

/// A user of the tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct User {
    id: String,
    email: String,
    display_name: String,
    status: UserStatus,
    suspension_reason: Option<String>,
    mfa_enabled: bool,
    roles: Vec<String>,
    #[schema(format = DateTime)]
    created_at: Option<String>,
    /// When the user last logged in (password or second factor; refreshes do not count); null if
    /// never.
    #[schema(format = DateTime)]
    last_login_at: Option<String>,
}

impl From<&pb::User> for User {
    fn from(u: &pb::User) -> Self {
        Self {
            id: u.id.clone(),
            email: u.email.clone(),
            display_name: u.display_name.clone(),
            status: u.status.into(),
            suspension_reason: (!u.suspension_reason.is_empty()).then(|| u.suspension_reason.clone()),
            mfa_enabled: u.mfa_enabled,
            roles: u.roles.clone(),
            created_at: rfc3339(&u.create_time),
            last_login_at: rfc3339(&u.last_login_time),
        }
    }
}

/// The user auth-svc answered.
fn user(u: tonic::Response<pb::User>) -> Json<User> {
    Json(u.get_ref().into())
}

/// A deletion was done.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    /// Always true.
    deleted: bool,
}

/// A role was granted (true) or revoked (false).
#[derive(Debug, Serialize, ToSchema)]
pub struct Granted {
    granted: bool,
}

/// A page of users.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage {
    users: Vec<User>,
    /// Empty on the last page.
    next_page_token: String,
}

/// A role and its permissions.
#[derive(Debug, Serialize, ToSchema)]
pub struct Role {
    id: String,
    name: String,
    description: String,
    permissions: Vec<String>,
    builtin: bool,
}

impl From<&pb::Role> for Role {
    fn from(r: &pb::Role) -> Self {
        Self {
            id: r.id.clone(),
            name: r.name.clone(),
            description: r.description.clone(),
            permissions: r.permissions.clone(),
            builtin: r.builtin,
        }
    }
}

/// A page of roles.
#[derive(Debug, Serialize, ToSchema)]
pub struct RolePage {
    roles: Vec<Role>,
    /// Empty on the last page.
    next_page_token: String,
}

/// A group with its roles and member count.
#[derive(Debug, Serialize, ToSchema)]
pub struct Group {
    id: String,
    name: String,
    description: String,
    #[schema(minimum = 0)]
    member_count: i64,
    roles: Vec<String>,
}

impl From<&pb::Group> for Group {
    fn from(g: &pb::Group) -> Self {
        Self {
            id: g.id.clone(),
            name: g.name.clone(),
            description: g.description.clone(),
            member_count: g.member_count,
            roles: g.roles.clone(),
        }
    }
}

/// The group auth-svc answered.
fn group(g: tonic::Response<pb::Group>) -> Json<Group> {
    Json(g.get_ref().into())
}

/// A page of groups.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupPage {
    groups: Vec<Group>,
    /// Empty on the last page.
    next_page_token: String,
}

/// A page of a group's member ids.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberPage {
    member_ids: Vec<String>,
    /// Empty on the last page.
    next_page_token: String,
}

/// An API key (never the key itself).
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKey {
    id: String,
    name: String,
    /// The key's first characters.
    display: String,
    scopes: Vec<String>,
    #[schema(format = DateTime)]
    created_at: Option<String>,
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    #[schema(format = DateTime)]
    last_used_at: Option<String>,
    #[schema(format = DateTime)]
    revoked_at: Option<String>,
}

impl From<&pb::ApiKey> for ApiKey {
    fn from(k: &pb::ApiKey) -> Self {
        Self {
            id: k.id.clone(),
            name: k.name.clone(),
            display: k.display.clone(),
            scopes: k.scopes.clone(),
            created_at: rfc3339(&k.create_time),
            expires_at: rfc3339(&k.expire_time),
            last_used_at: rfc3339(&k.last_used_time),
            revoked_at: rfc3339(&k.revoke_time),
        }
    }
}

/// A page of API keys, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyPage {
    api_keys: Vec<ApiKey>,
    /// Empty on the last page.
    next_page_token: String,
}

/// A new API key with the key itself, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewApiKey {
    // Always some: auth-svc answers the key it created.
    #[serde(flatten)]
    #[schema(value_type = ApiKey)]
    key: Option<ApiKey>,
    /// `srk_` + 32 base62 characters + a 6-character CRC32 checksum.
    api_key: String,
}

/// The tenant's identity policy (the body of a change, and the answer).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Failed logins per account (and account+IP) within the window before a lockout.
    #[schema(minimum = 1, maximum = 100)]
    lockout_threshold: u32,
    #[schema(minimum = 60, maximum = 86400)]
    lockout_window_secs: u32,
    #[schema(minimum = 300, maximum = 900)]
    access_token_ttl_secs: u32,
    #[schema(minimum = 3600, maximum = 7_776_000)]
    refresh_token_ttl_secs: u32,
    /// Roles whose holders must use a second factor.
    mfa_required_roles: Vec<String>,
    /// holders of any of these must use a second factor, and an API key carrying one needs a
    /// recent one; absent or empty keeps the current list
    #[serde(default)]
    privileged_permissions: Vec<String>,
}

impl From<&pb::Policy> for Policy {
    fn from(p: &pb::Policy) -> Self {
        Self {
            lockout_threshold: p.lockout_threshold,
            lockout_window_secs: p.lockout_window_secs,
            access_token_ttl_secs: p.access_token_ttl_secs,
            refresh_token_ttl_secs: p.refresh_token_ttl_secs,
            mfa_required_roles: p.mfa_required_roles.clone(),
            privileged_permissions: p.privileged_permissions.clone(),
        }
    }
}

impl From<Policy> for pb::Policy {
    fn from(p: Policy) -> Self {
        Self {
            lockout_threshold: p.lockout_threshold,
            lockout_window_secs: p.lockout_window_secs,
            access_token_ttl_secs: p.access_token_ttl_secs,
            refresh_token_ttl_secs: p.refresh_token_ttl_secs,
            mfa_required_roles: p.mfa_required_roles,
            privileged_permissions: p.privileged_permissions,
        }
    }
}

/// A new user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserBody {
    email: String,
    #[serde(default)]
    display_name: String,
    #[schema(write_only, min_length = 12)]
    password: String,
    #[serde(default)]
    roles: Vec<String>,
    /// ignored: send the X-Request-Id header
    #[schema(deprecated)]
    request_id: Option<String>,
}

/// A user's new display name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserBody {
    display_name: String,
}

/// Why a user is suspended (shown to them after the right password).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuspendBody {
    #[schema(max_length = 500)]
    reason: String,
}

/// A new custom role.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoleBody {
    name: String,
    #[serde(default)]
    description: String,
    permissions: Vec<String>,
}

/// Who a role is granted to or revoked from: exactly one of a user and a group.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    user_id: Option<String>,
    group_id: Option<String>,
}

/// A new group.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroupBody {
    name: String,
    #[serde(default)]
    description: String,
}

/// A new API key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyBody {
    name: String,
    /// A subset of the caller's permissions.
    scopes: Vec<String>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 365)]
    ttl_days: u32,
}

/// A page of a listing (up to 500).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 0 or absent: the default page
    #[serde(default)]
    #[param(minimum = 0, maximum = 500)]
    pub(crate) page_size: i32,
    /// next_page_token of the previous page
    #[serde(default)]
    pub(crate) page_token: String,
}

/// A page of a group's members (up to 1,000).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MemberPageQuery {
    /// 0 or absent: the default page
    #[serde(default)]
    #[param(minimum = 0, maximum = 1000)]
    page_size: i32,
    /// next_page_token of the previous page
    #[serde(default)]
    page_token: String,
}

/// Users; requires users.read
#[utoipa::path(get, path = "/v1/users", operation_id = "listUsers", params(PageQuery), responses(
    (status = 200, description = "a page of users", body = UserPage), Refusals,
))]
pub async fn list_users(
    State(state): State<AppState>,
    call: Call,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<UserPage>, HttpError> {
    call.require(Permission::UsersRead)?;
    let msg = pb::ListUsersRequest { page_size: q.page_size, page_token: q.page_token };
    let r = users(&state).list_users(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(UserPage { users: r.users.iter().map(User::from).collect(), next_page_token: r.next_page_token }))
}

/// Creates a user (password of 12+ characters); granting roles requires roles.grant and only
/// roles whose permissions the caller holds; requires users.write
#[utoipa::path(post, path = "/v1/users", operation_id = "createUser", request_body = CreateUserBody, responses(
    (status = 200, description = "the user", body = User),
    (status = 409, description = "EMAIL_TAKEN", body = ErrorBody),
    Refusals,
))]
pub async fn create_user(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody<CreateUserBody>,
) -> Result<Json<User>, HttpError> {
    call.require(Permission::UsersWrite)?;
    let msg = pb::CreateUserRequest {
        email: body.email,
        display_name: body.display_name,
        password: body.password,
        roles: body.roles,
        request_id: body.request_id.unwrap_or_default(),
    };
    Ok(user(users(&state).create_user(call.request(msg)).await.map_err(upstream)?))
}

/// One user; requires users.read
#[utoipa::path(get, path = "/v1/users/{id}", operation_id = "getUser", params(("id" = String, Path)),
    responses((status = 200, description = "the user", body = User), Refusals))]
pub async fn get_user(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
) -> Result<Json<User>, HttpError> {
    // auth-svc decides: a user may read themselves, anyone else needs users.read.
    Ok(user(users(&state).get_user(call.request(pb::GetUserRequest { id })).await.map_err(upstream)?))
}

/// Changes the display name; requires users.write
#[utoipa::path(patch, path = "/v1/users/{id}", operation_id = "updateUser", params(("id" = String, Path)),
    request_body = UpdateUserBody, responses((status = 200, description = "the user", body = User), Refusals))]
pub async fn update_user(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<UpdateUserBody>,
) -> Result<Json<User>, HttpError> {
    call.require(Permission::UsersWrite)?;
    let msg = pb::UpdateUserRequest { id, display_name: body.display_name };
    Ok(user(users(&state).update_user(call.request(msg)).await.map_err(upstream)?))
}

/// Removes the user's personal data and shreds their subject key; the audit trail stays
/// verifiable; requires users.delete
#[utoipa::path(delete, path = "/v1/users/{id}", operation_id = "deleteUser", params(("id" = String, Path)), responses(
    (status = 200, description = "deleted", body = Deleted),
    (status = 412, description = "CANNOT_DELETE_SELF", body = ErrorBody),
    Refusals,
))]
pub async fn delete_user(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
) -> Result<Json<Deleted>, HttpError> {
    call.require(Permission::UsersDelete)?;
    users(&state).delete_user(call.request(pb::DeleteUserRequest { id })).await.map_err(upstream)?;
    Ok(Json(Deleted { deleted: true }))
}

/// Suspends (sessions end at once); the user sees the reason only after the right password;
/// requires users.suspend
#[utoipa::path(post, path = "/v1/users/{id}/suspend", operation_id = "suspendUser", params(("id" = String, Path)),
    request_body = SuspendBody, responses(
        (status = 200, description = "the user", body = User),
        (status = 412, description = "CANNOT_SUSPEND_SELF", body = ErrorBody),
        Refusals, RevocationPending,
    ))]
pub async fn suspend_user(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<SuspendBody>,
) -> Result<Json<User>, HttpError> {
    call.require(Permission::UsersSuspend)?;
    let msg = pb::SuspendUserRequest { id, reason: body.reason };
    Ok(user(users(&state).suspend_user(call.request(msg)).await.map_err(upstream)?))
}

/// Lifts a suspension; requires users.suspend
#[utoipa::path(post, path = "/v1/users/{id}/reactivate", operation_id = "reactivateUser",
    params(("id" = String, Path)), responses(
        (status = 200, description = "the user", body = User),
        (status = 412, description = "NOT_SUSPENDED", body = ErrorBody),
        Refusals,
    ))]
pub async fn reactivate_user(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
) -> Result<Json<User>, HttpError> {
    call.require(Permission::UsersSuspend)?;
    Ok(user(users(&state).reactivate_user(call.request(pb::ReactivateUserRequest { id })).await.map_err(upstream)?))
}

// ---- Roles ----

/// Built-in and custom roles by name, with their permissions; requires roles.read
#[utoipa::path(get, path = "/v1/roles", operation_id = "listRoles", params(PageQuery), responses(
    (status = 200, description = "a page of roles", body = RolePage), Refusals,
))]
pub async fn list_roles(
    State(state): State<AppState>,
    call: Call,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<RolePage>, HttpError> {
    call.require(Permission::RolesRead)?;
    let msg = pb::ListRolesRequest { page_size: q.page_size, page_token: q.page_token };
    let r = access(&state).list_roles(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(RolePage { roles: r.roles.iter().map(Role::from).collect(), next_page_token: r.next_page_token }))
}

/// A custom role of known permissions the caller holds; requires roles.write
#[utoipa::path(post, path = "/v1/roles", operation_id = "createRole", request_body = CreateRoleBody, responses(
    (status = 200, description = "the role", body = Role),
    (status = 409, description = "ROLE_EXISTS", body = ErrorBody),
    Refusals,
))]
pub async fn create_role(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody<CreateRoleBody>,
) -> Result<Json<Role>, HttpError> {
    call.require(Permission::RolesWrite)?;
    let msg = pb::CreateRoleRequest { name: body.name, description: body.description, permissions: body.permissions };
    let r = access(&state).create_role(call.request(msg)).await.map_err(upstream)?;
    Ok(Json(r.get_ref().into()))
}

/// Deletes a custom role; requires roles.write
#[utoipa::path(delete, path = "/v1/roles/{id}", operation_id = "deleteRole", params(("id" = String, Path)), responses(
    (status = 200, description = "deleted", body = Deleted),
    (status = 412, description = "BUILTIN_ROLE", body = ErrorBody),
    Refusals,
))]
pub async fn delete_role(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
) -> Result<Json<Deleted>, HttpError> {
    call.require(Permission::RolesWrite)?;
    access(&state).delete_role(call.request(pb::DeleteRoleRequest { id })).await.map_err(upstream)?;
    Ok(Json(Deleted { deleted: true }))
}

async fn grant_or_revoke(
    state: &AppState,
    call: &Call,
    role: String,
    body: GrantBody,
    revoke: bool,
) -> Result<Json<Granted>, HttpError> {
    let grantee = match (body.user_id, body.group_id) {
        (Some(u), None) => pb::grant_role_request::Grantee::UserId(u),
        (None, Some(g)) => pb::grant_role_request::Grantee::GroupId(g),
        _ => return Err(ApiError::invalid_field("user_id", "give exactly one of user_id and group_id").into()),
    };
    let msg = pb::GrantRoleRequest { role, grantee: Some(grantee) };
    if revoke {
        access(state).revoke_role(call.request(msg)).await.map_err(upstream)?;
    } else {
        access(state).grant_role(call.request(msg)).await.map_err(upstream)?;
    }
    Ok(Json(Granted { granted: !revoke }))
}

/// Grants the role (by name) to a user or a group; only roles whose permissions the caller holds;
/// requires roles.grant
#[utoipa::path(post, path = "/v1/roles/{id}/grant", operation_id = "grantRole",
    params(("id" = String, Path, description = "the role's name")), request_body = GrantBody,
    responses((status = 200, description = "granted", body = Granted), Refusals))]
pub async fn grant_role(
    State(state): State<AppState>,
    call: Call,
    PathParams(role): PathParams<String>,
    JsonBody(body): JsonBody<GrantBody>,
) -> Result<Json<Granted>, HttpError> {
    call.require(Permission::RolesGrant)?;
    grant_or_revoke(&state, &call, role, body, false).await
}

/// Revokes the role (by name) from a user or a group; requires roles.grant
#[utoipa::path(post, path = "/v1/roles/{id}/revoke", operation_id = "revokeRole",
    params(("id" = String, Path, description = "the role's name")), request_body = GrantBody,
    responses((status = 200, description = "revoked (`granted` is false)", body = Granted), Refusals))]
pub async fn revoke_role(
    State(state): State<AppState>,
    call: Call,
    PathParams(role): PathParams<String>,
    JsonBody(body): JsonBody<GrantBody>,
) -> Result<Json<Granted>, HttpError> {
    call.require(Permission::RolesGrant)?;
    grant_or_revoke(&state, &call, role, body, true).await
}

// ---- Groups ----

/// Groups by name, with their roles and member count (members: /v1/groups/{id}/members); requires
/// groups.read
#[utoipa::path(get, path = "/v1/groups", operation_id = "listGroups", params(PageQuery), responses(
    (status = 200, description = "a page of groups", body = GroupPage), Refusals,
))]
pub async fn list_groups(
    State(state): State<AppState>,
    call: Call,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<GroupPage>, HttpError> {
    call.require(Permission::GroupsRead)?;
    let msg = pb::ListGroupsRequest { page_size: q.page_size, page_token: q.page_token };
    let r = access(&state).list_groups(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(GroupPage { groups: r.groups.iter().map(Group::from).collect(), next_page_token: r.next_page_token }))
}

/// A group's member ids in id order; requires groups.read
#[utoipa::path(get, path = "/v1/groups/{id}/members", operation_id = "listGroupMembers",
    params(("id" = String, Path), MemberPageQuery),
    responses((status = 200, description = "a page of member ids", body = MemberPage), Refusals))]
pub async fn list_group_members(
    State(state): State<AppState>,
    call: Call,
    PathParams(group_id): PathParams<String>,
    QueryParams(q): QueryParams<MemberPageQuery>,
) -> Result<Json<MemberPage>, HttpError> {
    call.require(Permission::GroupsRead)?;
    let msg = pb::ListGroupMembersRequest { group_id, page_size: q.page_size, page_token: q.page_token };
    let r = access(&state).list_group_members(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(MemberPage { member_ids: r.member_ids, next_page_token: r.next_page_token }))
}

/// Creates a group; requires groups.write
#[utoipa::path(post, path = "/v1/groups", operation_id = "createGroup", request_body = CreateGroupBody, responses(
    (status = 200, description = "the group", body = Group),
    (status = 409, description = "GROUP_EXISTS", body = ErrorBody),
    Refusals,
))]
pub async fn create_group(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody<CreateGroupBody>,
) -> Result<Json<Group>, HttpError> {
    call.require(Permission::GroupsWrite)?;
    let msg = pb::CreateGroupRequest { name: body.name, description: body.description };
    Ok(group(access(&state).create_group(call.request(msg)).await.map_err(upstream)?))
}

/// Deletes a group; requires groups.write
#[utoipa::path(delete, path = "/v1/groups/{id}", operation_id = "deleteGroup", params(("id" = String, Path)),
    responses((status = 200, description = "deleted", body = Deleted), Refusals))]
pub async fn delete_group(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
) -> Result<Json<Deleted>, HttpError> {
    call.require(Permission::GroupsWrite)?;
    access(&state).delete_group(call.request(pb::DeleteGroupRequest { id })).await.map_err(upstream)?;
    Ok(Json(Deleted { deleted: true }))
}

/// Adds a member (the caller must hold every permission the group confers); requires groups.write
#[utoipa::path(put, path = "/v1/groups/{id}/members/{user_id}", operation_id = "addGroupMember",
    params(("id" = String, Path), ("user_id" = String, Path)),
    responses((status = 200, description = "the group", body = Group), Refusals))]
pub async fn add_member(
    State(state): State<AppState>,
    call: Call,
    PathParams((group_id, user_id)): PathParams<(String, String)>,
) -> Result<Json<Group>, HttpError> {
    call.require(Permission::GroupsWrite)?;
    let msg = pb::GroupMemberRequest { group_id, user_id };
    Ok(group(access(&state).add_group_member(call.request(msg)).await.map_err(upstream)?))
}

/// Removes a member; requires groups.write
#[utoipa::path(delete, path = "/v1/groups/{id}/members/{user_id}", operation_id = "removeGroupMember",
    params(("id" = String, Path), ("user_id" = String, Path)),
    responses((status = 200, description = "the group", body = Group), Refusals))]
pub async fn remove_member(
    State(state): State<AppState>,
    call: Call,
    PathParams((group_id, user_id)): PathParams<(String, String)>,
) -> Result<Json<Group>, HttpError> {
    call.require(Permission::GroupsWrite)?;
    let msg = pb::GroupMemberRequest { group_id, user_id };
    Ok(group(access(&state).remove_group_member(call.request(msg)).await.map_err(upstream)?))
}

// ---- API keys ----

/// The caller's API keys, newest first (all of the tenant's with api_keys.read)
#[utoipa::path(get, path = "/v1/api-keys", operation_id = "listApiKeys", params(PageQuery), responses(
    (status = 200, description = "a page of keys", body = ApiKeyPage), Refusals,
))]
pub async fn list_api_keys(
    State(state): State<AppState>,
    call: Call,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<ApiKeyPage>, HttpError> {
    let msg = pb::ListApiKeysRequest { page_size: q.page_size, page_token: q.page_token };
    let r = sessions(&state).list_api_keys(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(ApiKeyPage { api_keys: r.keys.iter().map(ApiKey::from).collect(), next_page_token: r.next_page_token }))
}

/// An API key for a machine agent, scoped to a subset of the caller's permissions, 1–365 days;
/// the key is in the answer once; requires api_keys.create
#[utoipa::path(post, path = "/v1/api-keys", operation_id = "createApiKey", request_body = CreateApiKeyBody, responses(
    (status = 200, description = "the key", body = NewApiKey),
    (status = 412, description = "STEP_UP_REQUIRED: a key carrying a privileged or step-up permission needs a second factor within 10 minutes", body = ErrorBody),
    Refusals,
))]
pub async fn create_api_key(
    State(state): State<AppState>,
    call: Call,
    JsonBody(body): JsonBody<CreateApiKeyBody>,
) -> Result<Json<NewApiKey>, HttpError> {
    call.require(Permission::ApiKeysCreate)?;
    let msg = pb::CreateApiKeyRequest { name: body.name, scopes: body.scopes, ttl_days: body.ttl_days };
    let r = sessions(&state).create_api_key(call.request(msg)).await.map_err(upstream)?.into_inner();
    Ok(Json(NewApiKey { key: r.key.as_ref().map(ApiKey::from), api_key: r.api_key }))
}

/// Revokes a key at once (another's with api_keys.revoke)
#[utoipa::path(delete, path = "/v1/api-keys/{id}", operation_id = "revokeApiKey", params(("id" = String, Path)),
    responses((status = 200, description = "revoked", body = Revoked), Refusals, RevocationPending))]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    call: Call,
    PathParams(id): PathParams<String>,
) -> Result<Json<Revoked>, HttpError> {
    sessions(&state).revoke_api_key(call.request(pb::RevokeApiKeyRequest { id })).await.map_err(upstream)?;
    Ok(Json(Revoked { revoked: true }))
}

// ---- Tenant policy ----

/// The tenant's identity policy
#[utoipa::path(get, path = "/v1/tenant/policy", operation_id = "getPolicy",
    responses((status = 200, description = "policy", body = Policy), Refusals))]
pub async fn get_policy(State(state): State<AppState>, call: Call) -> Result<Json<Policy>, HttpError> {
    let p = access(&state).get_policy(call.request(pb::GetPolicyRequest {})).await.map_err(upstream)?;
    Ok(Json(p.get_ref().into()))
}

/// Changes the policy; dropping a role from mfa_required_roles needs every permission of that
/// role; requires tenant.policy.write
#[utoipa::path(put, path = "/v1/tenant/policy", operation_id = "putPolicy", request_body = Policy,
    responses((status = 200, description = "policy", body = Policy), Refusals))]
pub async fn put_policy(
    State(state): State<AppState>,
    call: Call,
    JsonBody(policy): JsonBody<Policy>,
) -> Result<Json<Policy>, HttpError> {
    call.require(Permission::TenantPolicyWrite)?;
    let p = access(&state).update_policy(call.request(policy.into())).await.map_err(upstream)?;
    Ok(Json(p.get_ref().into()))
}
