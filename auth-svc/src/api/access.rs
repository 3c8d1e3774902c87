//! `AccessService`: roles, groups, grants, and the tenant's access policy.

use kit::authz::Permission;
use kit::outbox::Outcome;
use kit::tenancy::db_error;
use kit::{ApiError, TenantTx};
use proto::auth::v1 as pb;
use tonic::{Request, Response, Status};

use crate::core::{Core, POLICY_COLUMNS, audit};
use crate::domain::input::{check_description, check_name, parse_id};
use crate::rbac;
use crate::store::users::role_by_name;

/// `AccessService`.
#[derive(Clone, Debug)]
pub struct Access {
    pub core: Core,
}

/// The columns of a group as `Group` carries them: its member count and its roles, not its
/// members (a group may hold every user of the tenant; `ListGroupMembers` pages through them).
const GROUP_COLUMNS: &str = "g.id, g.name, g.description, \
     (SELECT count(*) FROM group_members m WHERE m.group_id = g.id) AS member_count, \
     ARRAY(SELECT r.name FROM roles r JOIN role_grants rg ON rg.role_id = r.id WHERE rg.group_id = g.id \
           ORDER BY r.name) AS roles";

#[derive(sqlx::FromRow)]
struct GroupRow {
    id: uuid::Uuid,
    name: String,
    description: String,
    member_count: i64,
    roles: Vec<String>,
}

impl From<GroupRow> for pb::Group {
    fn from(g: GroupRow) -> Self {
        pb::Group {
            id: g.id.to_string(),
            name: g.name,
            description: g.description,
            roles: g.roles,
            member_count: g.member_count,
        }
    }
}

async fn group_pb(tx: &mut TenantTx, id: uuid::Uuid) -> Result<pb::Group, ApiError> {
    let row: Option<GroupRow> = sqlx::query_as(&format!("SELECT {GROUP_COLUMNS} FROM groups g WHERE g.id = $1"))
        .bind(id)
        .fetch_optional(tx.conn())
        .await
        .map_err(db_error)?;
    row.map(pb::Group::from).ok_or_else(|| ApiError::not_found("GROUP_NOT_FOUND", "no such group"))
}

/// The union of the permissions a group confers.
async fn group_permissions(tx: &mut TenantTx, group: uuid::Uuid) -> Result<Vec<String>, ApiError> {
    sqlx::query_scalar(
        "SELECT DISTINCT p FROM roles r JOIN role_grants g ON g.role_id = r.id, unnest(r.permissions) p WHERE g.group_id = $1",
    )
    .bind(group)
    .fetch_all(tx.conn())
    .await
    .map_err(db_error)
}

/// Ends the live sessions that never passed a second factor of those `users` (every user, when
/// `None`) who are now privileged: granting privilege must not hand it to a session opened with a
/// password alone (each session's next refresh would refuse it too, but its access token would
/// carry the new permissions until then). Returns how many.
async fn end_sessions_lacking_mfa(tx: &mut TenantTx, users: Option<&[uuid::Uuid]>) -> Result<u64, ApiError> {
    let sql = format!(
        "UPDATE sessions SET revoked_at = now(), revoke_reason = 'privilege_requires_mfa'
          WHERE id IN (
              SELECT s.id FROM sessions s CROSS JOIN tenant_policy p CROSS JOIN LATERAL (SELECT {}) e
               WHERE s.revoked_at IS NULL AND s.mfa_at IS NULL AND NOT s.enrollment_only AND s.expires_at > now()
                 AND ($1::uuid[] IS NULL OR s.user_id = ANY($1))
                 AND (e.permissions && (p.privileged_permissions COLLATE \"C\")
                      OR e.roles && (p.mfa_required_roles COLLATE \"C\")))",
        rbac::effective_columns("s.user_id")
    );
    Ok(sqlx::query(&sql).bind(users).execute(tx.conn()).await.map_err(db_error)?.rows_affected())
}

impl Access {
    async fn grant(
        &self,
        request: Request<pb::GrantRoleRequest>,
        revoke: bool,
    ) -> Result<pb::GrantRoleResponse, ApiError> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::RolesGrant)?;
        let req = request.into_inner();
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let (role_id, perms) = role_by_name(&mut tx, &req.role).await?;
        // Revoking a role one could not grant is refused as well: no stripping of superiors.
        rbac::check_subset(&perms, &me.principal.permissions)?;
        let (column, grantee) = match req.grantee {
            Some(pb::grant_role_request::Grantee::UserId(u)) => ("user_id", parse_id("user_id", &u)?),
            Some(pb::grant_role_request::Grantee::GroupId(g)) => ("group_id", parse_id("group_id", &g)?),
            None => return Err(ApiError::invalid_field("grantee", "user_id or group_id is required")),
        };
        let resource = format!("{}/{grantee}", if column == "user_id" { "user" } else { "group" });
        if revoke {
            // Nor from someone (or a group with someone) who holds what the caller does not.
            rbac::lock_owners(&mut tx).await?;
            let holders = if column == "user_id" { rbac::ONE_USER } else { rbac::GROUP_MEMBERS };
            rbac::check_not_superior(&mut tx, holders, grantee, &me.principal.permissions).await?;
            sqlx::query(&format!("DELETE FROM role_grants WHERE role_id = $1 AND {column} = $2"))
                .bind(role_id)
                .bind(grantee)
                .execute(tx.conn())
                .await
                .map_err(db_error)?;
            rbac::check_an_owner_remains(&mut tx).await?;
        } else {
            sqlx::query(&format!(
                "INSERT INTO role_grants (role_id, {column}, granted_by) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
            ))
            .bind(role_id)
            .bind(grantee)
            .bind(&me.principal.subject)
            .execute(tx.conn())
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                    ApiError::not_found("GRANTEE_NOT_FOUND", "no such user or group")
                }
                _ => db_error(e),
            })?;
        }
        let ended = if revoke {
            0
        } else {
            let holders: Vec<uuid::Uuid> = if column == "user_id" {
                vec![grantee]
            } else {
                sqlx::query_scalar("SELECT user_id FROM group_members WHERE group_id = $1")
                    .bind(grantee)
                    .fetch_all(tx.conn())
                    .await
                    .map_err(db_error)?
            };
            end_sessions_lacking_mfa(&mut tx, Some(&holders)).await?
        };
        let action = if revoke { "role.revoke" } else { "role.grant" };
        tx.record(
            audit(me.actor(), action, &resource, Outcome::Success, me.request_id.clone())
                .detail("role", req.role)
                .detail("sessions_ended", ended),
        )
        .await?;
        tx.commit().await?;
        self.core.profiles.forget(&me.tenant);
        if ended > 0 {
            self.core.publish_revocations_soon(&me.tenant).await;
        }
        if revoke {
            self.core.access_changed(&me.tenant).await;
        }
        Ok(pb::GrantRoleResponse {})
    }

    async fn membership(&self, request: Request<pb::GroupMemberRequest>, add: bool) -> Result<pb::Group, ApiError> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::GroupsWrite)?;
        let req = request.into_inner();
        let group = parse_id("group_id", &req.group_id)?;
        let user = parse_id("user_id", &req.user_id)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        // Adding someone to a group grants its roles: the caller must hold all of them.
        let perms = group_permissions(&mut tx, group).await?;
        rbac::check_subset(&perms, &me.principal.permissions)?;
        if add {
            sqlx::query("INSERT INTO group_members (group_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(group)
                .bind(user)
                .execute(tx.conn())
                .await
                .map_err(|e| match &e {
                    sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                        ApiError::not_found("NOT_FOUND", "no such user or group")
                    }
                    _ => db_error(e),
                })?;
        } else {
            rbac::lock_owners(&mut tx).await?;
            rbac::check_not_superior(&mut tx, rbac::ONE_USER, user, &me.principal.permissions).await?;
            sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND user_id = $2")
                .bind(group)
                .bind(user)
                .execute(tx.conn())
                .await
                .map_err(db_error)?;
            rbac::check_an_owner_remains(&mut tx).await?;
        }
        let ended = if add { end_sessions_lacking_mfa(&mut tx, Some(&[user])).await? } else { 0 };
        let action = if add { "group.member_add" } else { "group.member_remove" };
        tx.record(
            audit(me.actor(), action, &format!("group/{group}"), Outcome::Success, me.request_id.clone())
                .detail("user", user.to_string())
                .detail("sessions_ended", ended),
        )
        .await?;
        let out = group_pb(&mut tx, group).await?;
        tx.commit().await?;
        self.core.profiles.forget(&me.tenant);
        if ended > 0 {
            self.core.publish_revocations_soon(&me.tenant).await;
        }
        if !add {
            self.core.access_changed(&me.tenant).await;
        }
        Ok(out)
    }
}

#[tonic::async_trait]
impl pb::access_service_server::AccessService for Access {
    async fn list_roles(
        &self,
        request: Request<pb::ListRolesRequest>,
    ) -> Result<Response<pb::ListRolesResponse>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::RolesRead)?;
        let req = request.into_inner();
        let size = ApiError::page_size(req.page_size, 100, 500)?;
        // Names are unique in a tenant: the last name of a page is where the next one starts.
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let rows: Vec<(uuid::Uuid, String, String, Vec<String>, bool)> = sqlx::query_as(
            "SELECT id, name, description, permissions, builtin FROM roles WHERE name > $1 ORDER BY name LIMIT $2",
        )
        .bind(&req.page_token)
        .bind(size + 1)
        .fetch_all(tx.conn())
        .await
        .map_err(db_error)?;
        tx.commit().await?;
        let more = rows.len() as i64 > size;
        let roles: Vec<pb::Role> = rows
            .into_iter()
            .take(size as usize)
            .map(|(id, name, description, permissions, builtin)| pb::Role {
                id: id.to_string(),
                name,
                description,
                permissions,
                builtin,
            })
            .collect();
        let next_page_token =
            if more { roles.last().map(|r| r.name.clone()).unwrap_or_default() } else { String::new() };
        Ok(Response::new(pb::ListRolesResponse { roles, next_page_token }))
    }

    async fn create_role(&self, request: Request<pb::CreateRoleRequest>) -> Result<Response<pb::Role>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::RolesWrite)?;
        let req = request.into_inner();
        check_name("name", &req.name)?;
        check_description(&req.description)?;
        if req.permissions.is_empty() {
            return Err(ApiError::invalid_field("permissions", "at least one").into());
        }
        rbac::check_known(&req.permissions)?;
        rbac::check_subset(&req.permissions, &me.principal.permissions)?;
        let mut perms = req.permissions.clone();
        perms.sort();
        perms.dedup();
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let id: Option<uuid::Uuid> = sqlx::query_scalar(
            "INSERT INTO roles (name, description, permissions) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(&req.name)
        .bind(&req.description)
        .bind(&perms)
        .fetch_optional(tx.conn())
        .await
        .map_err(db_error)?;
        let id = id.ok_or_else(|| ApiError::already_exists("ROLE_EXISTS", "a role with this name exists"))?;
        tx.record(
            audit(me.actor(), "role.create", &format!("role/{id}"), Outcome::Success, me.request_id.clone())
                .detail("name", req.name.clone())
                .detail("permissions", perms.clone()),
        )
        .await?;
        tx.commit().await?;
        Ok(Response::new(pb::Role {
            id: id.to_string(),
            name: req.name,
            description: req.description,
            permissions: perms,
            builtin: false,
        }))
    }

    async fn delete_role(
        &self,
        request: Request<pb::DeleteRoleRequest>,
    ) -> Result<Response<pb::DeleteRoleResponse>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::RolesWrite)?;
        let id = parse_id("id", &request.get_ref().id)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let builtin: Option<bool> = sqlx::query_scalar("SELECT builtin FROM roles WHERE id = $1")
            .bind(id)
            .fetch_optional(tx.conn())
            .await
            .map_err(db_error)?;
        match builtin {
            None => return Err(ApiError::not_found("ROLE_NOT_FOUND", "no such role").into()),
            Some(true) => {
                return Err(ApiError::failed_precondition("BUILTIN_ROLE", "built-in roles cannot be deleted").into());
            }
            Some(false) => {}
        }
        // Deleting a role strips it from its holders: only with every permission it grants, and
        // not from a holder who holds more than the caller.
        let perms: Vec<String> = sqlx::query_scalar("SELECT permissions FROM roles WHERE id = $1")
            .bind(id)
            .fetch_one(tx.conn())
            .await
            .map_err(db_error)?;
        rbac::check_subset(&perms, &me.principal.permissions)?;
        rbac::check_not_superior(&mut tx, rbac::ROLE_HOLDERS, id, &me.principal.permissions).await?;
        sqlx::query("DELETE FROM roles WHERE id = $1").bind(id).execute(tx.conn()).await.map_err(db_error)?;
        tx.record(audit(me.actor(), "role.delete", &format!("role/{id}"), Outcome::Success, me.request_id.clone()))
            .await?;
        tx.commit().await?;
        self.core.profiles.forget(&me.tenant);
        self.core.access_changed(&me.tenant).await;
        Ok(Response::new(pb::DeleteRoleResponse {}))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::GroupsRead)?;
        let req = request.into_inner();
        let size = ApiError::page_size(req.page_size, 50, 500)?;
        // Names are unique in a tenant: the last name of a page is where the next one starts.
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let rows: Vec<GroupRow> =
            sqlx::query_as(&format!("SELECT {GROUP_COLUMNS} FROM groups g WHERE g.name > $1 ORDER BY g.name LIMIT $2"))
                .bind(&req.page_token)
                .bind(size + 1)
                .fetch_all(tx.conn())
                .await
                .map_err(db_error)?;
        tx.commit().await?;
        let more = rows.len() as i64 > size;
        let groups: Vec<pb::Group> = rows.into_iter().take(size as usize).map(pb::Group::from).collect();
        let next_page_token =
            if more { groups.last().map(|g| g.name.clone()).unwrap_or_default() } else { String::new() };
        Ok(Response::new(pb::ListGroupsResponse { groups, next_page_token }))
    }

    async fn list_group_members(
        &self,
        request: Request<pb::ListGroupMembersRequest>,
    ) -> Result<Response<pb::ListGroupMembersResponse>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::GroupsRead)?;
        let req = request.into_inner();
        let group = parse_id("group_id", &req.group_id)?;
        let size = ApiError::page_size(req.page_size, 100, 1000)?;
        let after =
            if req.page_token.is_empty() { uuid::Uuid::nil() } else { parse_id("page_token", &req.page_token)? };
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM groups WHERE id = $1)")
            .bind(group)
            .fetch_one(tx.conn())
            .await
            .map_err(db_error)?;
        if !exists {
            return Err(ApiError::not_found("GROUP_NOT_FOUND", "no such group").into());
        }
        let members: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT user_id FROM group_members WHERE group_id = $1 AND user_id > $2 ORDER BY user_id LIMIT $3",
        )
        .bind(group)
        .bind(after)
        .bind(size + 1)
        .fetch_all(tx.conn())
        .await
        .map_err(db_error)?;
        tx.commit().await?;
        let more = members.len() as i64 > size;
        let member_ids: Vec<String> = members.iter().take(size as usize).map(ToString::to_string).collect();
        let next_page_token = if more { member_ids.last().cloned().unwrap_or_default() } else { String::new() };
        Ok(Response::new(pb::ListGroupMembersResponse { member_ids, next_page_token }))
    }

    async fn create_group(&self, request: Request<pb::CreateGroupRequest>) -> Result<Response<pb::Group>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::GroupsWrite)?;
        let req = request.into_inner();
        check_name("name", &req.name)?;
        check_description(&req.description)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let id: Option<uuid::Uuid> = sqlx::query_scalar(
            "INSERT INTO groups (name, description) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(&req.name)
        .bind(&req.description)
        .fetch_optional(tx.conn())
        .await
        .map_err(db_error)?;
        let id = id.ok_or_else(|| ApiError::already_exists("GROUP_EXISTS", "a group with this name exists"))?;
        tx.record(
            audit(me.actor(), "group.create", &format!("group/{id}"), Outcome::Success, me.request_id.clone())
                .detail("name", req.name),
        )
        .await?;
        let group = group_pb(&mut tx, id).await?;
        tx.commit().await?;
        Ok(Response::new(group))
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::GroupsWrite)?;
        let id = parse_id("id", &request.get_ref().id)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        // Deleting a group strips its roles from its members: only with every permission they
        // grant, and not from a member who holds more than the caller.
        rbac::lock_owners(&mut tx).await?;
        let perms = group_permissions(&mut tx, id).await?;
        rbac::check_subset(&perms, &me.principal.permissions)?;
        rbac::check_not_superior(&mut tx, rbac::GROUP_MEMBERS, id, &me.principal.permissions).await?;
        let done =
            sqlx::query("DELETE FROM groups WHERE id = $1").bind(id).execute(tx.conn()).await.map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(ApiError::not_found("GROUP_NOT_FOUND", "no such group").into());
        }
        rbac::check_an_owner_remains(&mut tx).await?;
        tx.record(audit(me.actor(), "group.delete", &format!("group/{id}"), Outcome::Success, me.request_id.clone()))
            .await?;
        tx.commit().await?;
        self.core.profiles.forget(&me.tenant);
        self.core.access_changed(&me.tenant).await;
        Ok(Response::new(pb::DeleteGroupResponse {}))
    }

    async fn add_group_member(&self, request: Request<pb::GroupMemberRequest>) -> Result<Response<pb::Group>, Status> {
        Ok(Response::new(self.membership(request, true).await?))
    }

    async fn remove_group_member(
        &self,
        request: Request<pb::GroupMemberRequest>,
    ) -> Result<Response<pb::Group>, Status> {
        Ok(Response::new(self.membership(request, false).await?))
    }

    async fn grant_role(
        &self,
        request: Request<pb::GrantRoleRequest>,
    ) -> Result<Response<pb::GrantRoleResponse>, Status> {
        Ok(Response::new(self.grant(request, false).await?))
    }

    async fn revoke_role(
        &self,
        request: Request<pb::GrantRoleRequest>,
    ) -> Result<Response<pb::GrantRoleResponse>, Status> {
        Ok(Response::new(self.grant(request, true).await?))
    }

    async fn check_permission(
        &self,
        request: Request<pb::CheckPermissionRequest>,
    ) -> Result<Response<pb::CheckPermissionResponse>, Status> {
        let ctx = kit::access::RequestContext::of(&request)?;
        let tenant = self.core.db.tenant(&ctx.tenant_slug()?).await?;
        let user = parse_id("user_id", &request.get_ref().user_id)?;
        let mut tx = self.core.db.begin(&tenant).await?;
        let active: Option<bool> = sqlx::query_scalar("SELECT status = 'active' FROM users WHERE id = $1")
            .bind(user)
            .fetch_optional(tx.conn())
            .await
            .map_err(db_error)?;
        let (_, permissions) = rbac::effective(&mut tx, user).await?;
        tx.commit().await?;
        // As everywhere: an unscoped permission also covers its `.own` form.
        let allowed = active == Some(true) && rbac::covers(&permissions, &request.get_ref().permission);
        Ok(Response::new(pb::CheckPermissionResponse { allowed }))
    }

    async fn get_policy(&self, request: Request<pb::GetPolicyRequest>) -> Result<Response<pb::Policy>, Status> {
        let me = self.core.authed(&request).await?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let p = crate::core::policy(&mut tx).await?;
        tx.commit().await?;
        Ok(Response::new(policy_pb(p)))
    }

    async fn update_policy(&self, request: Request<pb::Policy>) -> Result<Response<pb::Policy>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::TenantPolicyWrite)?;
        let p = request.into_inner();
        if !(1..=100).contains(&p.lockout_threshold) {
            return Err(ApiError::invalid_field("lockout_threshold", "1 to 100").into());
        }
        if !(60..=86_400).contains(&p.lockout_window_secs) {
            return Err(ApiError::invalid_field("lockout_window_secs", "60 to 86400").into());
        }
        if !(300..=900).contains(&p.access_token_ttl_secs) {
            return Err(ApiError::invalid_field("access_token_ttl_secs", "300 to 900").into());
        }
        if !(3_600..=90 * 86_400).contains(&p.refresh_token_ttl_secs) {
            return Err(ApiError::invalid_field("refresh_token_ttl_secs", "3600 to 7776000").into());
        }
        rbac::check_known(&p.privileged_permissions)
            .map_err(|_| ApiError::invalid_field("privileged_permissions", "only known permissions"))?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        for role in &p.mfa_required_roles {
            role_by_name(&mut tx, role).await?;
        }
        let current = crate::core::policy(&mut tx).await?;
        // Empty keeps the current list: a tenant always has privileged permissions, and a client
        // that does not know the field must not clear it.
        let privileged = if p.privileged_permissions.is_empty() {
            current.privileged_permissions.clone()
        } else {
            p.privileged_permissions
        };
        // Dropping a role or a permission from what requires MFA weakens the tenant: only with
        // every permission dropped.
        for dropped in current.mfa_required_roles.iter().filter(|r| !p.mfa_required_roles.contains(r)) {
            let (_, perms) = role_by_name(&mut tx, dropped).await?;
            rbac::check_subset(&perms, &me.principal.permissions)?;
        }
        let dropped: Vec<String> =
            current.privileged_permissions.iter().filter(|x| !privileged.contains(x)).cloned().collect();
        rbac::check_subset(&dropped, &me.principal.permissions)?;
        let updated: crate::core::Policy = sqlx::query_as(&format!(
            "UPDATE tenant_policy p SET lockout_threshold = $1, lockout_window_secs = $2, access_token_ttl_secs = $3,
                    refresh_token_ttl_secs = $4, mfa_required_roles = $5, privileged_permissions = $6, updated_at = now()
             RETURNING {POLICY_COLUMNS}"
        ))
        .bind(p.lockout_threshold as i32)
        .bind(p.lockout_window_secs as i32)
        .bind(p.access_token_ttl_secs as i32)
        .bind(p.refresh_token_ttl_secs as i32)
        .bind(&p.mfa_required_roles)
        .bind(&privileged)
        .fetch_one(tx.conn())
        .await
        .map_err(db_error)?;
        // A policy that makes more users privileged ends their password-only sessions.
        let ended = end_sessions_lacking_mfa(&mut tx, None).await?;
        tx.record(
            audit(me.actor(), "tenant.policy_update", "tenant/policy", Outcome::Success, me.request_id.clone())
                .detail("lockout_threshold", p.lockout_threshold)
                .detail("mfa_required_roles", p.mfa_required_roles.clone())
                .detail("privileged_permissions", privileged)
                .detail("sessions_ended", ended),
        )
        .await?;
        tx.commit().await?;
        if ended > 0 {
            self.core.publish_revocations_soon(&me.tenant).await;
        }
        Ok(Response::new(policy_pb(updated)))
    }
}

fn policy_pb(p: crate::core::Policy) -> pb::Policy {
    pb::Policy {
        lockout_threshold: p.lockout_threshold.unsigned_abs(),
        lockout_window_secs: p.lockout_window_secs.unsigned_abs(),
        access_token_ttl_secs: p.access_token_ttl_secs.unsigned_abs(),
        refresh_token_ttl_secs: p.refresh_token_ttl_secs.unsigned_abs(),
        mfa_required_roles: p.mfa_required_roles,
        privileged_permissions: p.privileged_permissions,
    }
}
