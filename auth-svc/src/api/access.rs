//! `AccessService`: roles, groups, grants, and the tenant's access policy.

use kit::ApiError;
use kit::authz::Permission;
use kit::outbox::Outcome;
use proto::auth::v1 as pb;
use tonic::{Request, Response, Status};

use crate::core::{Authed, Core};
use crate::domain::input::{check_description, check_name, parse_id};
use crate::domain::policy::{self, Policy};
use crate::domain::retention;
use crate::error::AuthError;
use crate::rbac;
use crate::store::roles::{self, Grantee};
use crate::store::{groups, sessions, users};

/// `AccessService`.
#[derive(Clone, Debug)]
pub struct Access {
    pub core: Core,
}

impl Access {
    /// After a committed change of who holds what: profiles are read again, the password-only
    /// sessions it `ended` are listed as revoked, and a change that `shrank` permissions is
    /// announced to API-key verifiers.
    async fn changed(&self, me: &Authed, ended: u64, shrank: bool) {
        self.core.profiles.forget(&me.tenant);
        if ended > 0 {
            self.core.publish_revocations_soon(&me.tenant).await;
        }
        if shrank {
            self.core.access_changed(&me.tenant).await;
        }
    }

    async fn grant(
        &self,
        request: Request<pb::GrantRoleRequest>,
        revoke: bool,
    ) -> Result<pb::GrantRoleResponse, ApiError> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::RolesGrant)?;
        let req = request.into_inner();
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let (role_id, perms) = roles::by_name(&mut tx, &req.role).await?;
        // Revoking a role one could not grant is refused as well: no stripping of superiors.
        rbac::check_subset(&perms, &me.principal.permissions)?;
        let grantee = match req.grantee {
            Some(pb::grant_role_request::Grantee::UserId(u)) => Grantee::User(parse_id("user_id", &u)?),
            Some(pb::grant_role_request::Grantee::GroupId(g)) => Grantee::Group(parse_id("group_id", &g)?),
            None => return Err(ApiError::invalid_field("grantee", "user_id or group_id is required")),
        };
        let (resource, holders, id) = match grantee {
            Grantee::User(id) => (format!("user/{id}"), roles::ONE_USER, id),
            Grantee::Group(id) => (format!("group/{id}"), roles::GROUP_MEMBERS, id),
        };
        let ended = if revoke {
            // Nor from someone (or a group with someone) who holds what the caller does not.
            roles::lock_owners(&mut tx).await?;
            rbac::check_not_superior(&mut tx, holders, id, &me.principal.permissions).await?;
            roles::revoke(&mut tx, role_id, grantee).await?;
            rbac::check_an_owner_remains(&mut tx).await?;
            0
        } else {
            roles::grant(&mut tx, role_id, grantee, &me.principal.subject).await?;
            let holders = match grantee {
                Grantee::User(id) => vec![id],
                Grantee::Group(id) => groups::members(&mut tx, id).await?,
            };
            sessions::end_lacking_mfa(&mut tx, Some(&holders)).await?
        };
        let action = if revoke { "role.revoke" } else { "role.grant" };
        tx.record(
            me.audit(action, &resource, Outcome::Success).detail("role", req.role).detail("sessions_ended", ended),
        )
        .await?;
        tx.commit().await?;
        self.changed(&me, ended, revoke).await;
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
        let perms = groups::permissions(&mut tx, group).await?;
        rbac::check_subset(&perms, &me.principal.permissions)?;
        let ended = if add {
            groups::add_member(&mut tx, group, user).await?;
            sessions::end_lacking_mfa(&mut tx, Some(&[user])).await?
        } else {
            roles::lock_owners(&mut tx).await?;
            rbac::check_not_superior(&mut tx, roles::ONE_USER, user, &me.principal.permissions).await?;
            groups::remove_member(&mut tx, group, user).await?;
            rbac::check_an_owner_remains(&mut tx).await?;
            0
        };
        let action = if add { "group.member_add" } else { "group.member_remove" };
        tx.record(
            me.audit(action, &format!("group/{group}"), Outcome::Success)
                .detail("user", user.to_string())
                .detail("sessions_ended", ended),
        )
        .await?;
        let out = groups::get(&mut tx, group).await?;
        tx.commit().await?;
        self.changed(&me, ended, !add).await;
        Ok(out)
    }

    async fn update_policy(&self, request: Request<pb::Policy>) -> Result<pb::Policy, ApiError> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::TenantPolicyWrite)?;
        let p = request.into_inner();
        policy::check_update(&p)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        for role in &p.mfa_required_roles {
            roles::by_name(&mut tx, role).await?;
        }
        let current = crate::store::policy::get(&mut tx).await?;
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
            let (_, perms) = roles::by_name(&mut tx, dropped).await?;
            rbac::check_subset(&perms, &me.principal.permissions)?;
        }
        let dropped: Vec<String> =
            current.privileged_permissions.iter().filter(|x| !privileged.contains(x)).cloned().collect();
        rbac::check_subset(&dropped, &me.principal.permissions)?;
        let wanted = Policy {
            lockout_threshold: p.lockout_threshold as i32,
            lockout_window_secs: p.lockout_window_secs as i32,
            access_token_ttl_secs: p.access_token_ttl_secs as i32,
            refresh_token_ttl_secs: p.refresh_token_ttl_secs as i32,
            mfa_required_roles: p.mfa_required_roles.clone(),
            privileged_permissions: privileged.clone(),
        };
        let updated = crate::store::policy::update(&mut tx, &wanted).await?;
        // A policy that makes more users privileged ends their password-only sessions.
        let ended = sessions::end_lacking_mfa(&mut tx, None).await?;
        tx.record(
            me.audit("tenant.policy_update", "tenant/policy", Outcome::Success)
                .detail("lockout_threshold", p.lockout_threshold)
                .detail("mfa_required_roles", p.mfa_required_roles)
                .detail("privileged_permissions", privileged)
                .detail("sessions_ended", ended),
        )
        .await?;
        tx.commit().await?;
        if ended > 0 {
            self.core.publish_revocations_soon(&me.tenant).await;
        }
        Ok(updated.into())
    }

    /// Replaces the retention policy; the audit record names each value changed, before and after.
    async fn update_retention_policy(
        &self,
        request: Request<pb::RetentionPolicy>,
    ) -> Result<pb::RetentionPolicy, ApiError> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::TenantPolicyWrite)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let current = crate::store::retention::get_for_update(&mut tx).await?;
        let wanted = retention::check_update(request.get_ref(), &current)?;
        let updated_at = crate::store::retention::update(&mut tx, &wanted).await?;
        let mut record = me.audit("tenant.retention_update", "tenant/retention", Outcome::Success);
        for (field, previous, new) in current.changes(&wanted) {
            record = record.detail(field, serde_json::json!({ "previous": previous, "new": new }));
        }
        tx.record(record).await?;
        tx.commit().await?;
        Ok(wanted.to_pb(updated_at))
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
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let rows = roles::page(&mut tx, &req.page_token, size + 1).await?;
        tx.commit().await?;
        // Names are unique in a tenant: the last name of a page is where the next one starts.
        let (roles, next_page_token) = super::page(rows, size, |r| r.name.clone());
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
        let id = roles::insert(&mut tx, &req.name, &req.description, &perms).await?;
        tx.record(
            me.audit("role.create", &format!("role/{id}"), Outcome::Success)
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
        match roles::builtin(&mut tx, id).await? {
            None => return Err(AuthError::RoleNotFound.into()),
            Some(true) => return Err(AuthError::BuiltinRole.into()),
            Some(false) => {}
        }
        // Deleting a role strips it from its holders: only with every permission it grants, and
        // not from a holder who holds more than the caller.
        let perms = roles::permissions(&mut tx, id).await?;
        rbac::check_subset(&perms, &me.principal.permissions)?;
        rbac::check_not_superior(&mut tx, roles::ROLE_HOLDERS, id, &me.principal.permissions).await?;
        roles::delete(&mut tx, id).await?;
        tx.record(me.audit("role.delete", &format!("role/{id}"), Outcome::Success)).await?;
        tx.commit().await?;
        self.changed(&me, 0, true).await;
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
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let rows = groups::page(&mut tx, &req.page_token, size + 1).await?;
        tx.commit().await?;
        // Names are unique in a tenant: the last name of a page is where the next one starts.
        let (groups, next_page_token) = super::page(rows, size, |g| g.name.clone());
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
        if !groups::exists(&mut tx, group).await? {
            return Err(AuthError::GroupNotFound.into());
        }
        let members = groups::member_page(&mut tx, group, after, size + 1).await?;
        tx.commit().await?;
        let (members, next_page_token) = super::page(members, size, ToString::to_string);
        let member_ids = members.iter().map(ToString::to_string).collect();
        Ok(Response::new(pb::ListGroupMembersResponse { member_ids, next_page_token }))
    }

    async fn create_group(&self, request: Request<pb::CreateGroupRequest>) -> Result<Response<pb::Group>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::GroupsWrite)?;
        let req = request.into_inner();
        check_name("name", &req.name)?;
        check_description(&req.description)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let id = groups::insert(&mut tx, &req.name, &req.description).await?;
        tx.record(me.audit("group.create", &format!("group/{id}"), Outcome::Success).detail("name", req.name)).await?;
        let group = groups::get(&mut tx, id).await?;
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
        roles::lock_owners(&mut tx).await?;
        let perms = groups::permissions(&mut tx, id).await?;
        rbac::check_subset(&perms, &me.principal.permissions)?;
        rbac::check_not_superior(&mut tx, roles::GROUP_MEMBERS, id, &me.principal.permissions).await?;
        groups::delete(&mut tx, id).await?;
        rbac::check_an_owner_remains(&mut tx).await?;
        tx.record(me.audit("group.delete", &format!("group/{id}"), Outcome::Success)).await?;
        tx.commit().await?;
        self.changed(&me, 0, true).await;
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
        let active = users::is_active(&mut tx, user).await?;
        let (_, permissions) = roles::effective(&mut tx, user).await?;
        tx.commit().await?;
        // As everywhere: an unscoped permission also covers its `.own` form.
        let allowed = active == Some(true) && rbac::covers(&permissions, &request.get_ref().permission);
        Ok(Response::new(pb::CheckPermissionResponse { allowed }))
    }

    async fn get_policy(&self, request: Request<pb::GetPolicyRequest>) -> Result<Response<pb::Policy>, Status> {
        let me = self.core.authed(&request).await?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let p = crate::store::policy::get(&mut tx).await?;
        tx.commit().await?;
        Ok(Response::new(p.into()))
    }

    async fn update_policy(&self, request: Request<pb::Policy>) -> Result<Response<pb::Policy>, Status> {
        Ok(Response::new(Access::update_policy(self, request).await?))
    }

    async fn get_retention_policy(
        &self,
        request: Request<pb::GetRetentionPolicyRequest>,
    ) -> Result<Response<pb::RetentionPolicy>, Status> {
        // Readable by every user of the tenant, as the identity policy: how long their sessions
        // are kept is theirs to know.
        let me = self.core.authed(&request).await?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let (policy, updated_at) = crate::store::retention::get(&mut tx).await?;
        tx.commit().await?;
        Ok(Response::new(policy.to_pb(updated_at)))
    }

    async fn update_retention_policy(
        &self,
        request: Request<pb::RetentionPolicy>,
    ) -> Result<Response<pb::RetentionPolicy>, Status> {
        Ok(Response::new(Access::update_retention_policy(self, request).await?))
    }
}
