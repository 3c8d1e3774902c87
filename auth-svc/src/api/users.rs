//! `UserService`: users, their profile, suspension, deletion and password.

use kit::authz::Permission;
use kit::outbox::{Actor, Outcome};
use kit::{ApiError, TenantTx};
use proto::auth::v1 as pb;
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use crate::core::{Authed, Core, audit};
use crate::domain::input::{normalize_email, parse_id};
use crate::error::AuthError;
use crate::personal::{Item, USER_DISPLAY_NAME, USER_EMAIL, USER_SUSPENSION_REASON};
use crate::store::users::{StoredUser, insert_user, load_user};
use crate::store::{api_keys, groups, mfa, roles, sessions, users};
use crate::{passwords, rbac};

/// `UserService`.
#[derive(Clone, Debug)]
pub struct Users {
    pub core: Core,
}

fn check_display_name(name: &str) -> Result<(), ApiError> {
    if name.chars().count() > 200 {
        return Err(ApiError::invalid_field("display_name", "at most 200 characters"));
    }
    Ok(())
}

/// The suspension reason of a user whose erasure waits for a legal hold.
pub const RESTRICTED_REASON: &str = "erasure requested; restricted under a legal hold";

/// Shreds `user`'s subject key in vault-svc: every copy of their sealed fields, anywhere, opens no
/// more. Called before the erasing transaction commits, so that if vault-svc cannot, nothing is
/// deleted.
pub(crate) async fn shred_subject(core: &Core, me: &Authed, user: uuid::Uuid) -> Result<(), ApiError> {
    shred_named(core, me, &user.to_string()).await
}

/// Shreds the vault-svc subject key named `subject` (a user's id, or an external subject's).
pub(crate) async fn shred_named(core: &Core, me: &Authed, subject: &str) -> Result<(), ApiError> {
    use proto::vault::v1 as vault;
    let mut client = vault::key_management_service_client::KeyManagementServiceClient::new(core.vault.clone());
    let req = vault::ShredSubjectRequest { subject: subject.to_owned(), ..Default::default() };
    let req = kit::client::with_context(
        tonic::Request::new(req),
        Some(me.tenant.slug.as_str()),
        me.request_id.as_deref(),
        None,
    );
    client.shred_subject(req).await.map_err(|s| {
        tracing::error!(code = ?s.code(), message = %s.message(), "subject shredding failed");
        AuthError::ShredFailed
    })?;
    Ok(())
}

/// Erases user `id` in `tx`: their profile and what identifies them (`users::erase`), their
/// appeals' messages; ends their sessions and revokes their API keys. The caller shreds their
/// subject key before committing. The one erase path of DeleteUser and of a released hold.
pub(crate) async fn erase(tx: &mut TenantTx, id: uuid::Uuid) -> Result<(), ApiError> {
    users::erase(tx, id).await?;
    crate::store::appeals::erase_messages_of(tx, id).await?;
    sessions::end_all_of(tx, id, None, "user_deleted").await?;
    api_keys::revoke_all_of(tx, id).await?;
    Ok(())
}

/// What [`delete`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deletion {
    /// The user is erased and their subject key shredded.
    Erased,
    /// A legal hold covers the user: they are restricted until the last hold is released, which
    /// completes the erasure.
    Deferred,
}

/// Deletes user `id` on `me`'s behalf, who may not delete a user holding permissions it lacks
/// nor leave the tenant without an owner: erased at once, or restricted while a legal hold
/// covers them. The one deletion path of DeleteUser and of an executed erasure request.
pub(crate) async fn delete(core: &Core, me: &Authed, id: uuid::Uuid) -> Result<Deletion, ApiError> {
    let mut tx = core.db.begin(&me.tenant).await?;
    roles::lock_owners(&mut tx).await?;
    rbac::check_not_superior(&mut tx, roles::ONE_USER, id, &me.principal.permissions).await?;
    users::lock(&mut tx, id).await?;
    // Locked after the user, so a hold placed meanwhile is seen (docs/privacy.md, "Legal hold").
    let holds = crate::store::legal_holds::covering(&mut tx, id).await?;
    let done = if !holds.is_empty() {
        // Under a hold the erasure waits: the user is restricted and can act no more, their
        // sealed fields stay, and the release of the last hold completes it.
        users::restrict(&mut tx, id, RESTRICTED_REASON).await?;
        let sessions = sessions::end_all_of(&mut tx, id, None, "user_deleted").await?;
        mfa::void_challenges_of(&mut tx, id).await?;
        let keys = api_keys::revoke_all_of(&mut tx, id).await?;
        rbac::check_an_owner_remains(&mut tx).await?;
        let holds: Vec<String> = holds.iter().map(uuid::Uuid::to_string).collect();
        tx.record(
            me.audit("user.delete_deferred", &format!("user/{id}"), Outcome::Success)
                .detail("legal_holds", holds)
                .detail("sessions_ended", sessions)
                .detail("api_keys_revoked", keys),
        )
        .await?;
        tx.commit().await?;
        Deletion::Deferred
    } else {
        erase(&mut tx, id).await?;
        rbac::check_an_owner_remains(&mut tx).await?;
        tx.record(me.audit("user.delete", &format!("user/{id}"), Outcome::Success)).await?;
        // Shred before committing: if vault-svc cannot, nothing is deleted.
        shred_subject(core, me, id).await?;
        tx.commit().await?;
        Deletion::Erased
    };
    core.profiles.forget(&me.tenant);
    core.publish_revocations_soon(&me.tenant).await;
    Ok(done)
}

impl Users {
    /// The users as the API shows them. A user restricted under a legal hold shows no email or
    /// display name, unless the caller holds `privacy.restricted.read`: then they show, and the
    /// request leaves one `privacy.restricted.reveal` record naming whom it revealed (no values).
    async fn show(&self, me: &Authed, users: Vec<StoredUser>) -> Result<Vec<pb::User>, ApiError> {
        let restricted: Vec<String> = users.iter().filter(|u| u.restricted).map(|u| u.id.to_string()).collect();
        let mut shown = self.core.open_users(&me.tenant, users).await?;
        if restricted.is_empty() {
            return Ok(shown);
        }
        if me.principal.holds(Permission::PrivacyRestrictedRead) {
            let resource = match restricted.as_slice() {
                [one] => format!("user/{one}"),
                _ => "users".to_owned(),
            };
            let mut tx = self.core.db.begin(&me.tenant).await?;
            tx.record(
                me.audit("privacy.restricted.reveal", &resource, Outcome::Success).detail("user_ids", restricted),
            )
            .await?;
            tx.commit().await?;
        } else {
            for user in shown.iter_mut().filter(|u| restricted.contains(&u.id)) {
                user.email.clear();
                user.display_name.clear();
            }
        }
        Ok(shown)
    }

    /// One user as [`Self::show`] shows it.
    async fn show_one(&self, me: &Authed, user: StoredUser) -> Result<pb::User, ApiError> {
        self.show(me, vec![user]).await?.pop().ok_or_else(|| ApiError::internal(&"a shown user went missing"))
    }

    /// Records `action` on user `id` in `tx`, reads the user back and commits.
    async fn done(&self, me: &Authed, mut tx: TenantTx, action: &str, id: uuid::Uuid) -> Result<pb::User, ApiError> {
        tx.record(me.audit(action, &format!("user/{id}"), Outcome::Success)).await?;
        let user = load_user(&mut tx, id).await?;
        tx.commit().await?;
        self.show_one(me, user).await
    }
}

#[tonic::async_trait]
impl pb::user_service_server::UserService for Users {
    async fn create_user(&self, request: Request<pb::CreateUserRequest>) -> Result<Response<pb::User>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::UsersWrite)?;
        let req = request.into_inner();
        let email = normalize_email(&req.email)?;
        check_display_name(&req.display_name)?;
        passwords::check_policy(&req.password)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        if !req.roles.is_empty() {
            me.require(Permission::RolesGrant)?;
            for role in &req.roles {
                let (_, perms) = roles::by_name(&mut tx, role).await?;
                rbac::check_subset(&perms, &me.principal.permissions)?;
            }
        }
        let id = uuid::Uuid::new_v4();
        let display_name = req.display_name.trim();
        let fields = self.core.seal_profile(&mut tx, id, &email, display_name).await?;
        let hash = self.core.hasher.hash(Zeroizing::new(req.password)).await?;
        insert_user(&mut tx, &fields.row(id, &hash), &req.roles, &me.principal.subject).await?;
        tx.record(me.audit("user.create", &format!("user/{id}"), Outcome::Success).detail("roles", req.roles.clone()))
            .await?;
        let user = load_user(&mut tx, id).await?;
        tx.commit().await?;
        // The values just sealed: no call to open them again.
        Ok(Response::new(user.into_pb(email, display_name.to_owned(), String::new())))
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
        Ok(Response::new(self.show_one(&me, user).await?))
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
        let rows = users::page(&mut tx, after, size + 1).await?;
        tx.commit().await?;
        // Only the page shown is opened (the extra row tells whether there is a next page).
        let (rows, next_page_token) = super::page(rows, size, |u| u.id.to_string());
        let users = self.show(&me, rows).await?;
        Ok(Response::new(pb::ListUsersResponse { users, next_page_token }))
    }

    async fn update_user(&self, request: Request<pb::UpdateUserRequest>) -> Result<Response<pb::User>, Status> {
        let me = self.core.authed(&request).await?;
        let req = request.into_inner();
        let id = parse_id("id", &req.id)?;
        if me.user_id().ok() != Some(id) {
            me.require(Permission::UsersWrite)?;
        }
        check_display_name(&req.display_name)?;
        let name = req.display_name.trim();
        let item = Item { field: USER_DISPLAY_NAME, row: id, subject: id, value: name };
        let sealed = self.core.personal.seal(&me.tenant, &[item]).await?.pop().flatten();
        let mut tx = self.core.db.begin(&me.tenant).await?;
        users::set_display_name(&mut tx, id, sealed.as_deref()).await?;
        let user = self.done(&me, tx, "user.update", id).await?;
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
            return Err(AuthError::CannotSuspendSelf.into());
        }
        let mut tx = self.core.db.begin(&me.tenant).await?;
        roles::lock_owners(&mut tx).await?;
        rbac::check_not_superior(&mut tx, roles::ONE_USER, id, &me.principal.permissions).await?;
        // Known before anything is sealed under their key; sealed while they are locked.
        users::lock(&mut tx, id).await?;
        let item = Item { field: USER_SUSPENSION_REASON, row: id, subject: id, value: reason.as_str() };
        let sealed = self.core.personal.seal(&me.tenant, &[item]).await?.pop().flatten().unwrap_or_default();
        users::suspend(&mut tx, id, &sealed).await?;
        // Everything that speaks for the user ends: sessions, logins waiting for their second
        // factor, and API keys (revoked for good; new ones after reactivation).
        let sessions = sessions::end_all_of(&mut tx, id, None, "user_suspended").await?;
        mfa::void_challenges_of(&mut tx, id).await?;
        let keys = api_keys::revoke_all_of(&mut tx, id).await?;
        rbac::check_an_owner_remains(&mut tx).await?;
        tx.record(
            me.audit("user.suspend", &format!("user/{id}"), Outcome::Success)
                // The reason is about the user: in the trail only sealed under their key.
                .detail("suspension_reason_sealed", sealed)
                .detail("sessions_ended", sessions)
                .detail("api_keys_revoked", keys),
        )
        .await?;
        let user = load_user(&mut tx, id).await?;
        tx.commit().await?;
        self.core.profiles.forget(&me.tenant);
        self.core.publish_revocations(&me.tenant).await?;
        Ok(Response::new(self.show_one(&me, user).await?))
    }

    async fn reactivate_user(&self, request: Request<pb::ReactivateUserRequest>) -> Result<Response<pb::User>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::UsersSuspend)?;
        let id = parse_id("id", &request.get_ref().id)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        users::reactivate(&mut tx, id).await?;
        let user = self.done(&me, tx, "user.reactivate", id).await?;
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
            return Err(AuthError::CannotDeleteSelf.into());
        }
        delete(&self.core, &me, id).await?;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn get_me(&self, request: Request<pb::GetMeRequest>) -> Result<Response<pb::Me>, Status> {
        let me = self.core.authed(&request).await?;
        let id = me.user_id()?;
        let user = self.core.profile(&me.tenant, id).await?;
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
        let raw = UserExport::read(&mut tx, id).await?;
        tx.record(me.audit("user.export", &format!("user/{id}"), Outcome::Success)).await?;
        tx.commit().await?;
        let mut doc = raw.open(&self.core, &me.tenant).await?.document;
        if let serde_json::Value::Object(fields) = &mut doc {
            fields.insert("format".into(), "strongroom.user-export.v1".into());
            fields.insert("exported_at".into(), chrono::Utc::now().to_rfc3339().into());
            fields.insert("tenant".into(), me.tenant.slug.as_str().into());
        }
        Ok(Response::new(pb::ExportMeResponse { json: doc.to_string() }))
    }

    async fn change_email(&self, request: Request<pb::ChangeEmailRequest>) -> Result<Response<pb::User>, Status> {
        let me = self.core.authed(&request).await?;
        let id = me.user_id()?;
        let req = request.into_inner();
        let email = normalize_email(&req.new_email)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let stored = users::password_hash_for_update(&mut tx, id).await?;
        let verdict = self.core.hasher.verify(Zeroizing::new(req.current_password), stored).await?;
        let resource = format!("user/{id}");
        if verdict == passwords::Verdict::Wrong {
            tx.record(me.audit("user.email_change", &resource, Outcome::Denied)).await?;
            tx.commit().await?;
            return Err(AuthError::WrongCurrentPassword.into());
        }
        let blinds = self.core.email_index.blinds_for_write(&mut tx, &email).await?;
        if users::email_taken(&mut tx, &blinds, &email).await? {
            return Err(AuthError::EmailTaken.into());
        }
        let item = Item { field: USER_EMAIL, row: id, subject: id, value: email.as_str() };
        let sealed = self.core.personal.seal(&me.tenant, &[item]).await?.pop().flatten();
        let sealed = sealed.ok_or_else(|| ApiError::internal(&"an email sealed to nothing"))?;
        users::set_email(&mut tx, id, &sealed, &blinds).await?;
        // Whoever else holds a session of the account loses it with the old address.
        let current = me.session_id().unwrap_or_default();
        let ended = sessions::end_all_of(&mut tx, id, Some(current), "email_changed").await?;
        tx.record(me.audit("user.email_change", &resource, Outcome::Success).detail("sessions_ended", ended)).await?;
        let user = load_user(&mut tx, id).await?;
        tx.commit().await?;
        self.core.profiles.forget(&me.tenant);
        self.core.publish_revocations_soon(&me.tenant).await;
        Ok(Response::new(self.core.open_user(&me.tenant, user).await?))
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
        let stored = users::password_hash_for_update(&mut tx, id).await?;
        let verdict = self.core.hasher.verify(Zeroizing::new(req.current_password), stored).await?;
        let resource = format!("user/{id}");
        if verdict == passwords::Verdict::Wrong {
            tx.record(me.audit("user.password_change", &resource, Outcome::Denied)).await?;
            tx.commit().await?;
            return Err(AuthError::WrongCurrentPassword.into());
        }
        let hash = self.core.hasher.hash(Zeroizing::new(req.new_password)).await?;
        users::set_password_hash(&mut tx, id, &hash, true).await?;
        // Every other session ends.
        let current = me.session_id().unwrap_or_default();
        sessions::end_all_of(&mut tx, id, Some(current), "password_changed").await?;
        tx.record(me.audit("user.password_change", &resource, Outcome::Success)).await?;
        tx.commit().await?;
        self.core.publish_revocations_soon(&me.tenant).await;
        Ok(Response::new(pb::ChangePasswordResponse {}))
    }
}

/// What auth-svc holds about a user, as read (personal fields still sealed): the user's own
/// export (`ExportMe`) and auth-svc's part of an access request's bundle.
pub(crate) struct UserExport {
    user: StoredUser,
    groups: Vec<String>,
    sessions: Vec<sessions::SessionRow>,
    keys: Vec<serde_json::Value>,
    roles: Vec<String>,
    permissions: Vec<String>,
    appeals: Vec<crate::store::appeals::AppealRow>,
    messages: Vec<crate::store::appeals::MessageRow>,
}

/// A [`UserExport`] opened.
pub(crate) struct OpenedExport {
    /// `user`, `roles`, `permissions`, `groups`, `sessions`, `api_keys`, `appeals`.
    pub document: serde_json::Value,
    /// The user's own values that audit-svc keeps as pseudonyms: each session's `client_ip` and
    /// `user_agent`.
    pub personal_values: Vec<(String, String)>,
    /// The ids of the user's API keys (audit actors `api_key:<id>`).
    pub api_key_ids: Vec<String>,
}

impl UserExport {
    /// Reads user `id`'s data in `tx`.
    pub(crate) async fn read(tx: &mut TenantTx, id: uuid::Uuid) -> Result<Self, ApiError> {
        let user = load_user(tx, id).await?;
        let groups = groups::names_of(tx, id).await?;
        let sessions = sessions::export_of(tx, id).await?;
        let keys = api_keys::export_of(tx, id).await?;
        let (roles, permissions) = roles::effective(tx, id).await?;
        let appeals = crate::store::appeals::all_of(tx, id).await?;
        let ids: Vec<uuid::Uuid> = appeals.iter().map(|a| a.id).collect();
        let messages = crate::store::appeals::messages_of(tx, &ids).await?;
        Ok(Self { user, groups, sessions, keys, roles, permissions, appeals, messages })
    }

    /// Opens the sealed fields (the user's, every session's and every appeal message's).
    pub(crate) async fn open(self, core: &Core, tenant: &kit::Tenant) -> Result<OpenedExport, ApiError> {
        let Self { user, groups, sessions, keys, roles, permissions, appeals, messages } = self;
        let items = user.personal().into_iter().chain(sessions.iter().flat_map(|s| s.personal())).collect();
        let mut opened = core.personal.open(tenant, items).await?.into_iter();
        let mut next = || opened.next().unwrap_or_default();
        let user = user.into_pb(next(), next(), next());
        let mut personal_values: Vec<(String, String)> = Vec::new();
        let sessions: Vec<serde_json::Value> = sessions
            .into_iter()
            .map(|s| {
                let (ip, user_agent) = (next(), next());
                for (name, value) in [("client_ip", &ip), ("user_agent", &user_agent)] {
                    if !value.is_empty() && !personal_values.iter().any(|(n, v)| n == name && v == value) {
                        personal_values.push((name.to_owned(), value.clone()));
                    }
                }
                serde_json::json!({
                    "id": s.id, "ip": ip, "user_agent": user_agent, "amr": s.amr, "created_at": s.created_at,
                    "last_seen_at": s.last_seen_at, "revoked_at": s.revoked_at, "revoke_reason": s.revoke_reason,
                })
            })
            .collect();
        let api_key_ids =
            keys.iter().filter_map(|k| k.get("id").and_then(serde_json::Value::as_str).map(str::to_owned)).collect();
        let appeals = appeals_json(super::appeals::open_appeals(core, tenant, appeals, messages).await?);
        let document = serde_json::json!({
            "user": {
                "id": user.id, "email": user.email, "display_name": user.display_name,
                "status": match user.status { 1 => "active", 2 => "suspended", _ => "deleted" },
                "mfa_enabled": user.mfa_enabled,
                "created_at": user.create_time.map(|t| t.seconds),
                "last_login_at": user.last_login_time.map(|t| t.seconds),
            },
            "roles": roles,
            "permissions": permissions,
            "groups": groups,
            "sessions": sessions,
            "api_keys": keys,
            "appeals": appeals,
        });
        Ok(OpenedExport { document, personal_values, api_key_ids })
    }
}

/// The appeals of a user's export: the whole history of each suspension they appealed.
fn appeals_json(appeals: Vec<pb::Appeal>) -> Vec<serde_json::Value> {
    let status = |s: i32| match pb::AppealStatus::try_from(s).unwrap_or_default() {
        pb::AppealStatus::Open => "open",
        pb::AppealStatus::InformationRequested => "information_requested",
        pb::AppealStatus::Lifted => "lifted",
        pb::AppealStatus::Upheld => "upheld",
        pb::AppealStatus::Unspecified => "unknown",
    };
    appeals
        .into_iter()
        .map(|a| {
            let messages: Vec<serde_json::Value> = a
                .messages
                .into_iter()
                .map(|m| {
                    serde_json::json!({ "author": m.author, "body": m.body, "created_at": m.create_time.map(|t| t.seconds) })
                })
                .collect();
            serde_json::json!({
                "id": a.id, "status": status(a.status), "suspension_reason": a.suspension_reason,
                "messages": messages, "decision_reason": a.decision_reason,
                "created_at": a.create_time.map(|t| t.seconds), "decided_at": a.decide_time.map(|t| t.seconds),
            })
        })
        .collect()
}

/// Creates a tenant's first owner with a generated password, if the tenant has no user yet.
pub async fn create_owner(
    core: &Core,
    tx: &mut TenantTx,
    email: &str,
) -> Result<Option<(uuid::Uuid, Zeroizing<String>)>, ApiError> {
    let email = normalize_email(email)?;
    if users::any(tx).await? {
        return Ok(None);
    }
    let password = crate::tokens::opaque("")?;
    let id = uuid::Uuid::new_v4();
    let fields = core.seal_profile(tx, id, &email, "Owner").await?;
    let hash = core.hasher.hash(password.clone()).await?;
    insert_user(tx, &fields.row(id, &hash), &["owner".to_owned()], "operator").await?;
    tx.record(
        audit(Actor::Service("operator".into()), "user.create", &format!("user/{id}"), Outcome::Success, None)
            .detail("roles", vec!["owner"]),
    )
    .await?;
    Ok(Some((id, password)))
}
