//! `UserService`: users, their profile, suspension, deletion and password.

use kit::authz::Permission;
use kit::outbox::{Actor, Outcome};
use kit::tenancy::db_error;
use kit::{ApiError, TenantTx};
use proto::auth::v1 as pb;
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use crate::core::{Authed, Core, audit};
use crate::domain::input::{normalize_email, parse_id};
use crate::store::users::{USER_COLUMNS, UserRow, insert_user, load_user, role_by_name, user_pb};
use crate::{passwords, rbac};

/// `UserService`.
#[derive(Clone, Debug)]
pub struct Users {
    pub core: Core,
}

impl Users {
    /// Ends the user's open sessions (each listed as revoked by the tenant's trigger); returns
    /// how many.
    async fn end_sessions(&self, tx: &mut TenantTx, user: uuid::Uuid, reason: &str) -> Result<u64, ApiError> {
        Ok(sqlx::query(
            "UPDATE sessions SET revoked_at = now(), revoke_reason = $2 WHERE user_id = $1 AND revoked_at IS NULL",
        )
        .bind(user)
        .bind(reason)
        .execute(tx.conn())
        .await
        .map_err(db_error)?
        .rows_affected())
    }

    /// Revokes the user's API keys (each listed by the tenant's trigger); returns how many.
    async fn revoke_keys(&self, tx: &mut TenantTx, user: uuid::Uuid) -> Result<u64, ApiError> {
        Ok(sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL")
            .bind(user)
            .execute(tx.conn())
            .await
            .map_err(db_error)?
            .rows_affected())
    }

    async fn shred_subject(&self, me: &Authed, user: uuid::Uuid) -> Result<(), ApiError> {
        use proto::vault::v1 as vault;
        let mut client = vault::key_management_service_client::KeyManagementServiceClient::new(self.core.vault.clone());
        let req = vault::ShredSubjectRequest { subject: user.to_string(), ..Default::default() };
        let req = kit::client::with_context(
            tonic::Request::new(req),
            Some(me.tenant.slug.as_str()),
            me.request_id.as_deref(),
            None,
        );
        client.shred_subject(req).await.map_err(|s| {
            tracing::error!(code = ?s.code(), message = %s.message(), "subject shredding failed");
            ApiError::unavailable("VAULT_UNAVAILABLE", "could not shred the user's key; nothing was deleted, retry")
        })?;
        Ok(())
    }
}

#[tonic::async_trait]
impl pb::user_service_server::UserService for Users {
    async fn create_user(&self, request: Request<pb::CreateUserRequest>) -> Result<Response<pb::User>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::UsersWrite)?;
        let req = request.into_inner();
        let email = normalize_email(&req.email)?;
        if req.display_name.chars().count() > 200 {
            return Err(ApiError::invalid_field("display_name", "at most 200 characters").into());
        }
        passwords::check_policy(&req.password)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        if !req.roles.is_empty() {
            me.require(Permission::RolesGrant)?;
            for role in &req.roles {
                let (_, perms) = role_by_name(&mut tx, role).await?;
                rbac::check_subset(&perms, &me.principal.permissions)?;
            }
        }
        let hash = self.core.hasher.hash(Zeroizing::new(req.password)).await?;
        let id =
            insert_user(&mut tx, &email, req.display_name.trim(), &hash, &req.roles, &me.principal.subject).await?;
        tx.record(
            audit(me.actor(), "user.create", &format!("user/{id}"), Outcome::Success, me.request_id.clone())
                .detail("roles", req.roles.clone()),
        )
        .await?;
        let user = load_user(&mut tx, id).await?;
        tx.commit().await?;
        Ok(Response::new(user))
    }

    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Result<Response<pb::User>, Status> {
        let me = self.core.authed(&request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        if me.user_id().ok() != Some(id) {
            me.require(Permission::UsersRead)?;
        }
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let user = load_user(&mut tx, id).await?;
        tx.commit().await?;
        Ok(Response::new(user))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::UsersRead)?;
        let req = request.into_inner();
        let size = if req.page_size <= 0 { 50 } else { req.page_size.min(500) } as i64;
        let after =
            if req.page_token.is_empty() { uuid::Uuid::nil() } else { parse_id("page_token", &req.page_token)? };
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let rows: Vec<UserRow> = sqlx::query_as(&format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE u.id > $1 AND u.status <> 'deleted' ORDER BY u.id LIMIT $2"
        ))
        .bind(after)
        .bind(size + 1)
        .fetch_all(tx.conn())
        .await
        .map_err(db_error)?;
        let more = rows.len() as i64 > size;
        let mut users = Vec::new();
        for row in rows.into_iter().take(size as usize) {
            let (roles, _) = rbac::effective(&mut tx, row.id).await?;
            users.push(user_pb(row, roles));
        }
        tx.commit().await?;
        let next_page_token = if more { users.last().map(|u| u.id.clone()).unwrap_or_default() } else { String::new() };
        Ok(Response::new(pb::ListUsersResponse { users, next_page_token }))
    }

    async fn update_user(&self, request: Request<pb::UpdateUserRequest>) -> Result<Response<pb::User>, Status> {
        let me = self.core.authed(&request).await?;
        let req = request.into_inner();
        let id = parse_id("id", &req.id)?;
        if me.user_id().ok() != Some(id) {
            me.require(Permission::UsersWrite)?;
        }
        if req.display_name.chars().count() > 200 {
            return Err(ApiError::invalid_field("display_name", "at most 200 characters").into());
        }
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let done =
            sqlx::query("UPDATE users SET display_name = $2, updated_at = now() WHERE id = $1 AND status <> 'deleted'")
                .bind(id)
                .bind(req.display_name.trim())
                .execute(tx.conn())
                .await
                .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(ApiError::not_found("USER_NOT_FOUND", "no such user").into());
        }
        tx.record(audit(me.actor(), "user.update", &format!("user/{id}"), Outcome::Success, me.request_id.clone()))
            .await?;
        let user = load_user(&mut tx, id).await?;
        tx.commit().await?;
        self.core.profiles.forget(&me.tenant);
        Ok(Response::new(user))
    }

    async fn suspend_user(&self, request: Request<pb::SuspendUserRequest>) -> Result<Response<pb::User>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::UsersSuspend)?;
        let req = request.into_inner();
        let id = parse_id("id", &req.id)?;
        let reason = req.reason.trim().to_owned();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(ApiError::invalid_field("reason", "1 to 500 characters").into());
        }
        if me.user_id().ok() == Some(id) {
            return Err(ApiError::failed_precondition("CANNOT_SUSPEND_SELF", "you cannot suspend yourself").into());
        }
        let mut tx = self.core.db.begin(&me.tenant).await?;
        rbac::lock_owners(&mut tx).await?;
        rbac::check_not_superior(&mut tx, rbac::ONE_USER, id, &me.principal.permissions).await?;
        let done = sqlx::query(
            "UPDATE users SET status = 'suspended', suspension_reason = $2, updated_at = now() WHERE id = $1 AND status <> 'deleted'",
        )
        .bind(id)
        .bind(&reason)
        .execute(tx.conn())
        .await
        .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(ApiError::not_found("USER_NOT_FOUND", "no such user").into());
        }
        // Everything that speaks for the user ends: sessions, logins waiting for their second
        // factor, and API keys (revoked for good; new ones after reactivation).
        let sessions = self.end_sessions(&mut tx, id, "user_suspended").await?;
        sqlx::query("UPDATE mfa_challenges SET used_at = now() WHERE user_id = $1 AND used_at IS NULL")
            .bind(id)
            .execute(tx.conn())
            .await
            .map_err(db_error)?;
        let keys = self.revoke_keys(&mut tx, id).await?;
        rbac::check_an_owner_remains(&mut tx).await?;
        tx.record(
            audit(me.actor(), "user.suspend", &format!("user/{id}"), Outcome::Success, me.request_id.clone())
                .detail("suspension_reason", reason)
                .detail("sessions_ended", sessions)
                .detail("api_keys_revoked", keys),
        )
        .await?;
        let user = load_user(&mut tx, id).await?;
        tx.commit().await?;
        self.core.profiles.forget(&me.tenant);
        self.core.publish_revocations(&me.tenant).await?;
        Ok(Response::new(user))
    }

    async fn reactivate_user(&self, request: Request<pb::ReactivateUserRequest>) -> Result<Response<pb::User>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::UsersSuspend)?;
        let id = parse_id("id", &request.get_ref().id)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let done = sqlx::query(
            "UPDATE users SET status = 'active', suspension_reason = NULL, updated_at = now() WHERE id = $1 AND status = 'suspended'",
        )
        .bind(id)
        .execute(tx.conn())
        .await
        .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(ApiError::failed_precondition("NOT_SUSPENDED", "the user is not suspended").into());
        }
        tx.record(audit(me.actor(), "user.reactivate", &format!("user/{id}"), Outcome::Success, me.request_id.clone()))
            .await?;
        let user = load_user(&mut tx, id).await?;
        tx.commit().await?;
        self.core.profiles.forget(&me.tenant);
        Ok(Response::new(user))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::UsersDelete)?;
        let id = parse_id("id", &request.get_ref().id)?;
        if me.user_id().ok() == Some(id) {
            return Err(ApiError::failed_precondition("CANNOT_DELETE_SELF", "you cannot delete yourself").into());
        }
        let mut tx = self.core.db.begin(&me.tenant).await?;
        rbac::lock_owners(&mut tx).await?;
        rbac::check_not_superior(&mut tx, rbac::ONE_USER, id, &me.principal.permissions).await?;
        let done = sqlx::query(
            "UPDATE users SET status = 'deleted', email = NULL, display_name = NULL, password_hash = NULL,
                    suspension_reason = NULL, deleted_at = now(), updated_at = now()
              WHERE id = $1 AND status <> 'deleted'",
        )
        .bind(id)
        .execute(tx.conn())
        .await
        .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(ApiError::not_found("USER_NOT_FOUND", "no such user").into());
        }
        for sql in [
            "DELETE FROM mfa_totp WHERE user_id = $1",
            "DELETE FROM backup_codes WHERE user_id = $1",
            "DELETE FROM mfa_challenges WHERE user_id = $1",
            "DELETE FROM group_members WHERE user_id = $1",
            "DELETE FROM role_grants WHERE user_id = $1",
            "UPDATE sessions SET ip = '', user_agent = '' WHERE user_id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(tx.conn()).await.map_err(db_error)?;
        }
        self.end_sessions(&mut tx, id, "user_deleted").await?;
        self.revoke_keys(&mut tx, id).await?;
        rbac::check_an_owner_remains(&mut tx).await?;
        tx.record(audit(me.actor(), "user.delete", &format!("user/{id}"), Outcome::Success, me.request_id.clone()))
            .await?;
        // Shred before committing: if vault-svc cannot, nothing is deleted.
        self.shred_subject(&me, id).await?;
        tx.commit().await?;
        self.core.profiles.forget(&me.tenant);
        self.core.publish_revocations_soon(&me.tenant).await;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn get_me(&self, request: Request<pb::GetMeRequest>) -> Result<Response<pb::Me>, Status> {
        let me = self.core.authed(&request).await?;
        let id = me.user_id()?;
        let user = match self.core.profiles.get(&me.tenant, id) {
            Some(user) => user,
            None => {
                let mut tx = self.core.db.begin(&me.tenant).await?;
                let user = load_user(&mut tx, id).await?;
                tx.commit().await?;
                self.core.profiles.put(&me.tenant, id, user.clone());
                user
            }
        };
        Ok(Response::new(pb::Me {
            user: Some(user),
            permissions: me.principal.permissions.clone(),
            session_id: me.principal.session_id.clone().unwrap_or_default(),
            amr: me.principal.amr.clone(),
            mfa_enrollment_required: false,
        }))
    }

    async fn export_me(&self, request: Request<pb::ExportMeRequest>) -> Result<Response<pb::ExportMeResponse>, Status> {
        let me = self.core.authed(&request).await?;
        let id = me.user_id()?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let user = load_user(&mut tx, id).await?;
        let groups: Vec<String> = sqlx::query_scalar(
            "SELECT g.name FROM groups g JOIN group_members m ON m.group_id = g.id WHERE m.user_id = $1 ORDER BY g.name",
        )
        .bind(id)
        .fetch_all(tx.conn())
        .await
        .map_err(db_error)?;
        let sessions: Vec<serde_json::Value> = sqlx::query_scalar(
            "SELECT jsonb_build_object('id', id, 'ip', ip, 'user_agent', user_agent, 'amr', amr, 'created_at', created_at,
                    'last_seen_at', last_seen_at, 'revoked_at', revoked_at, 'revoke_reason', revoke_reason)
               FROM sessions WHERE user_id = $1 ORDER BY created_at",
        )
        .bind(id)
        .fetch_all(tx.conn())
        .await
        .map_err(db_error)?;
        let keys: Vec<serde_json::Value> = sqlx::query_scalar(
            "SELECT jsonb_build_object('id', id, 'name', name, 'display', display, 'scopes', scopes, 'created_at', created_at,
                    'expires_at', expires_at, 'last_used_at', last_used_at, 'revoked_at', revoked_at)
               FROM api_keys WHERE user_id = $1 ORDER BY created_at",
        )
        .bind(id)
        .fetch_all(tx.conn())
        .await
        .map_err(db_error)?;
        let (roles, permissions) = rbac::effective(&mut tx, id).await?;
        tx.record(audit(me.actor(), "user.export", &format!("user/{id}"), Outcome::Success, me.request_id.clone()))
            .await?;
        tx.commit().await?;
        let doc = serde_json::json!({
            "format": "strongroom.user-export.v1",
            "exported_at": chrono::Utc::now().to_rfc3339(),
            "tenant": me.tenant.slug.as_str(),
            "user": {
                "id": user.id, "email": user.email, "display_name": user.display_name,
                "status": match user.status { 1 => "active", 2 => "suspended", _ => "deleted" },
                "mfa_enabled": user.mfa_enabled,
                "created_at": user.create_time.map(|t| t.seconds),
            },
            "roles": roles,
            "permissions": permissions,
            "groups": groups,
            "sessions": sessions,
            "api_keys": keys,
        });
        Ok(Response::new(pb::ExportMeResponse { json: doc.to_string() }))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let me = self.core.authed(&request).await?;
        let id = me.user_id()?;
        let req = request.into_inner();
        passwords::check_policy(&req.new_password)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let stored: Option<String> = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(tx.conn())
            .await
            .map_err(db_error)?
            .flatten();
        let verdict = self.core.hasher.verify(Zeroizing::new(req.current_password), stored).await?;
        if verdict == passwords::Verdict::Wrong {
            tx.record(audit(
                me.actor(),
                "user.password_change",
                &format!("user/{id}"),
                Outcome::Denied,
                me.request_id.clone(),
            ))
            .await?;
            tx.commit().await?;
            return Err(ApiError::unauthenticated("INVALID_CREDENTIALS", "the current password is wrong").into());
        }
        let hash = self.core.hasher.hash(Zeroizing::new(req.new_password)).await?;
        sqlx::query(
            "UPDATE users SET password_hash = $2, password_changed_at = now(), updated_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(hash)
        .execute(tx.conn())
        .await
        .map_err(db_error)?;
        // Every other session ends.
        let current =
            me.principal.session_id.as_deref().and_then(|s| uuid::Uuid::parse_str(s).ok()).unwrap_or_default();
        sqlx::query(
            "UPDATE sessions SET revoked_at = now(), revoke_reason = 'password_changed'
              WHERE user_id = $1 AND id <> $2 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(current)
        .execute(tx.conn())
        .await
        .map_err(db_error)?;
        tx.record(audit(
            me.actor(),
            "user.password_change",
            &format!("user/{id}"),
            Outcome::Success,
            me.request_id.clone(),
        ))
        .await?;
        tx.commit().await?;
        self.core.publish_revocations_soon(&me.tenant).await;
        Ok(Response::new(pb::ChangePasswordResponse {}))
    }
}

/// Creates a tenant's first owner with a generated password, if the tenant has no user yet.
pub async fn create_owner(
    core: &Core,
    tx: &mut TenantTx,
    email: &str,
) -> Result<Option<(uuid::Uuid, Zeroizing<String>)>, ApiError> {
    let email = normalize_email(email)?;
    let any: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users)").fetch_one(tx.conn()).await.map_err(db_error)?;
    if any {
        return Ok(None);
    }
    let password = crate::tokens::opaque("")?;
    let hash = core.hasher.hash(password.clone()).await?;
    let id = insert_user(tx, &email, "Owner", &hash, &["owner".to_owned()], "operator").await?;
    tx.record(
        audit(Actor::Service("operator".into()), "user.create", &format!("user/{id}"), Outcome::Success, None)
            .detail("roles", vec!["owner"]),
    )
    .await?;
    Ok(Some((id, password)))
}
