//! `AppealService`: a suspended user's appeal against the suspension, and staff's handling of it.
//! The user signs each step with their password (the login's password step: throttled and
//! audited as a login is); staff hold `users.suspend`. Statements and messages are sealed under
//! the user's subject key.

use std::collections::HashMap;

use kit::access::RequestContext;
use kit::authz::Permission;
use kit::outbox::Outcome;
use kit::time::to_pb;
use kit::{ApiError, Tenant};
use proto::auth::v1 as pb;
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use super::authn::{Authn, PasswordOk};
use crate::core::{Core, audit};
use crate::domain::input::parse_id;
use crate::error::AuthError;
use crate::personal::{
    APPEAL_DECISION_REASON, APPEAL_MESSAGE, APPEAL_SUSPENSION_REASON, Field, Item, Stored, USER_SUSPENSION_REASON,
};
use crate::store::appeals::{self as store, AppealRow, MessageRow};
use crate::store::users;

/// `AppealService`.
#[derive(Clone, Debug)]
pub struct Appeals {
    pub core: Core,
    pub authn: Authn,
}

const WAITING: [&str; 2] = ["open", "information_requested"];

fn check_text(field: &str, text: &str, max: usize) -> Result<String, ApiError> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > max {
        return Err(ApiError::invalid_field(field, format!("1 to {max} characters")));
    }
    Ok(text.to_owned())
}

fn status_pb(status: &str) -> pb::AppealStatus {
    match status {
        "open" => pb::AppealStatus::Open,
        "information_requested" => pb::AppealStatus::InformationRequested,
        "lifted" => pb::AppealStatus::Lifted,
        "upheld" => pb::AppealStatus::Upheld,
        _ => pb::AppealStatus::Unspecified,
    }
}

/// Opens the messages of `appeals` in one call and puts each appeal together.
pub async fn open_appeals(
    core: &Core,
    tenant: &Tenant,
    appeals: Vec<AppealRow>,
    messages: Vec<MessageRow>,
) -> Result<Vec<pb::Appeal>, ApiError> {
    let owner: HashMap<uuid::Uuid, uuid::Uuid> = appeals.iter().map(|a| (a.id, a.user_id)).collect();
    // Each appeal's two reasons, then every message, opened in one call.
    let reasons = appeals.iter().flat_map(|a| {
        let item = |field, sealed: &Option<String>, plain: &Option<String>| Item {
            field,
            row: a.id,
            subject: a.user_id,
            value: Stored::of(sealed.clone(), plain.clone()),
        };
        [
            item(APPEAL_SUSPENSION_REASON, &a.suspension_reason_sealed, &a.suspension_reason),
            item(APPEAL_DECISION_REASON, &a.decision_reason_sealed, &a.decision_reason),
        ]
    });
    let items = reasons
        .chain(messages.iter().map(|m| Item {
            field: APPEAL_MESSAGE,
            row: m.id,
            subject: owner.get(&m.appeal_id).copied().unwrap_or_default(),
            value: Stored::of(m.body_sealed.clone(), None),
        }))
        .collect();
    let mut opened = core.personal.open(tenant, items).await?.into_iter();
    let mut reasons: HashMap<uuid::Uuid, (String, String)> = HashMap::new();
    for a in &appeals {
        let (suspension, decision) = (opened.next().unwrap_or_default(), opened.next().unwrap_or_default());
        reasons.insert(a.id, (suspension, decision));
    }
    let bodies: Vec<String> = opened.collect();
    let mut by_appeal: HashMap<uuid::Uuid, Vec<pb::AppealMessage>> = HashMap::new();
    for (m, body) in messages.into_iter().zip(bodies) {
        let message = pb::AppealMessage { author: m.author, body, create_time: Some(to_pb(m.created_at)) };
        by_appeal.entry(m.appeal_id).or_default().push(message);
    }
    Ok(appeals
        .into_iter()
        .map(|a| {
            let (suspension_reason, decision_reason) = reasons.remove(&a.id).unwrap_or_default();
            pb::Appeal {
                id: a.id.to_string(),
                user_id: a.user_id.to_string(),
                status: status_pb(&a.status) as i32,
                suspension_reason,
                messages: by_appeal.remove(&a.id).unwrap_or_default(),
                decision_reason,
                create_time: Some(to_pb(a.created_at)),
                decide_time: a.decided_at.map(to_pb),
            }
        })
        .collect())
}

impl Appeals {
    /// The suspended user the credentials name (their password checked as a login checks it).
    async fn suspended_user(
        &self,
        credentials: Option<pb::AppealCredentials>,
        request_id: Option<String>,
    ) -> Result<PasswordOk, ApiError> {
        let c = credentials.ok_or_else(|| ApiError::invalid_field("credentials", "required"))?;
        let email = crate::domain::email::normalized(&c.email);
        let (ip, _) = crate::domain::login::client(c.client);
        let checked = self.authn.check_password(&c.tenant, &email, Zeroizing::new(c.password), &ip, request_id).await?;
        if checked.user.status != "suspended" {
            return Err(AuthError::NotSuspended.into());
        }
        Ok(checked)
    }

    /// Seals `body` as message `id` of the user's appeal.
    async fn seal(&self, tenant: &Tenant, user: uuid::Uuid, id: uuid::Uuid, body: &str) -> Result<String, ApiError> {
        self.seal_field(tenant, APPEAL_MESSAGE, user, id, body).await
    }

    /// Seals `text` as `field` of row `id`, under `user`'s key.
    async fn seal_field(
        &self,
        tenant: &Tenant,
        field: Field,
        user: uuid::Uuid,
        id: uuid::Uuid,
        text: &str,
    ) -> Result<String, ApiError> {
        let item = Item { field, row: id, subject: user, value: text };
        let sealed = self.core.personal.seal(tenant, &[item]).await?.pop().flatten();
        sealed.ok_or_else(|| ApiError::internal(&"a text sealed to nothing"))
    }

    /// Appeal `row` as its user or staff sees it, read in `tx` (committed here).
    async fn answer(&self, mut tx: kit::TenantTx, row: AppealRow) -> Result<pb::Appeal, ApiError> {
        let tenant = tx.tenant().clone();
        let messages = store::messages_of(&mut tx, &[row.id]).await?;
        tx.commit().await?;
        let mut appeals = open_appeals(&self.core, &tenant, vec![row], messages).await?;
        appeals.pop().ok_or_else(|| ApiError::internal(&"an appeal went missing"))
    }

    /// Staff's step on appeal `id`: checks the caller's permission, locks the appeal.
    async fn staff_appeal(&self, me: &crate::core::Authed, id: &str) -> Result<(kit::TenantTx, AppealRow), ApiError> {
        me.require(Permission::UsersSuspend)?;
        let id = parse_id("id", id)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let row = store::for_update(&mut tx, id).await?;
        Ok((tx, row))
    }
}

#[tonic::async_trait]
impl pb::appeal_service_server::AppealService for Appeals {
    async fn file_appeal(&self, request: Request<pb::FileAppealRequest>) -> Result<Response<pb::Appeal>, Status> {
        let request_id = RequestContext::of(&request)?.request_id;
        let req = request.into_inner();
        let statement = check_text("statement", &req.statement, 4000)?;
        let ok = self.suspended_user(req.credentials, request_id.clone()).await?;
        let user = ok.user.id;
        let (id, message) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let sealed = self.seal(&ok.tenant, user, message, &statement).await?;
        // The appeal keeps the reason it answers: opened from the user's row, sealed for its own.
        let item =
            Item { field: USER_SUSPENSION_REASON, row: user, subject: user, value: ok.user.suspension_reason.clone() };
        let reason = self.core.personal.open(&ok.tenant, vec![item]).await?.pop().unwrap_or_default();
        let reason = match reason.as_str() {
            "" => None,
            text => Some(self.seal_field(&ok.tenant, APPEAL_SUSPENSION_REASON, user, id, text).await?),
        };
        let mut tx = self.core.db.begin(&ok.tenant).await?;
        store::insert(&mut tx, id, user, reason.as_deref()).await?;
        store::add_message(&mut tx, message, id, "user", &user.to_string(), &sealed).await?;
        tx.record(audit(ok.actor, "appeal.file", &format!("appeal/{id}"), Outcome::Success, request_id)).await?;
        let row = store::for_update(&mut tx, id).await?;
        Ok(Response::new(self.answer(tx, row).await?))
    }

    async fn get_my_appeal(&self, request: Request<pb::AppealCredentials>) -> Result<Response<pb::Appeal>, Status> {
        let request_id = RequestContext::of(&request)?.request_id;
        let ok = self.suspended_user(Some(request.into_inner()), request_id).await?;
        let mut tx = self.core.db.begin(&ok.tenant).await?;
        let row = store::latest_of(&mut tx, ok.user.id).await?.ok_or(AuthError::AppealNotFound)?;
        Ok(Response::new(self.answer(tx, row).await?))
    }

    async fn answer_appeal(&self, request: Request<pb::AnswerAppealRequest>) -> Result<Response<pb::Appeal>, Status> {
        let request_id = RequestContext::of(&request)?.request_id;
        let req = request.into_inner();
        let text = check_text("message", &req.message, 4000)?;
        let ok = self.suspended_user(req.credentials, request_id.clone()).await?;
        let user = ok.user.id;
        let message = uuid::Uuid::new_v4();
        let sealed = self.seal(&ok.tenant, user, message, &text).await?;
        let mut tx = self.core.db.begin(&ok.tenant).await?;
        let row = store::latest_of(&mut tx, user).await?.ok_or(AuthError::AppealNotFound)?;
        if row.status != "information_requested" {
            return Err(AuthError::NoInformationRequested.into());
        }
        store::add_message(&mut tx, message, row.id, "user", &user.to_string(), &sealed).await?;
        store::set_status(&mut tx, row.id, "open").await?;
        let resource = format!("appeal/{}", row.id);
        tx.record(audit(ok.actor, "appeal.answer", &resource, Outcome::Success, request_id)).await?;
        let row = store::for_update(&mut tx, row.id).await?;
        Ok(Response::new(self.answer(tx, row).await?))
    }

    async fn list_appeals(
        &self,
        request: Request<pb::ListAppealsRequest>,
    ) -> Result<Response<pb::ListAppealsResponse>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::UsersSuspend)?;
        let req = request.into_inner();
        let size = ApiError::page_size(req.page_size, 50, 200)?;
        let statuses: Vec<&str> = match pb::AppealStatus::try_from(req.status).unwrap_or_default() {
            pb::AppealStatus::Unspecified => WAITING.to_vec(),
            pb::AppealStatus::Open => vec!["open"],
            pb::AppealStatus::InformationRequested => vec!["information_requested"],
            pb::AppealStatus::Lifted => vec!["lifted"],
            pb::AppealStatus::Upheld => vec!["upheld"],
        };
        let after = match req.page_token.split_once('/') {
            None if req.page_token.is_empty() => None,
            Some((at, id)) => {
                let at = at.parse::<i64>().ok().and_then(chrono::DateTime::from_timestamp_micros);
                let id = uuid::Uuid::parse_str(id).ok();
                Some(at.zip(id).ok_or_else(|| ApiError::invalid_field("page_token", "as a page answered it"))?)
            }
            None => return Err(ApiError::invalid_field("page_token", "as a page answered it").into()),
        };
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let rows = store::page(&mut tx, &statuses, after, size + 1).await?;
        let (rows, next_page_token) =
            super::page(rows, size, |a| format!("{}/{}", a.updated_at.timestamp_micros(), a.id));
        let ids: Vec<uuid::Uuid> = rows.iter().map(|a| a.id).collect();
        let messages = store::messages_of(&mut tx, &ids).await?;
        tx.commit().await?;
        let appeals = open_appeals(&self.core, &me.tenant, rows, messages).await?;
        Ok(Response::new(pb::ListAppealsResponse { appeals, next_page_token }))
    }

    async fn request_appeal_information(
        &self,
        request: Request<pb::AppealMessageRequest>,
    ) -> Result<Response<pb::Appeal>, Status> {
        let me = self.core.authed(&request).await?;
        let req = request.into_inner();
        let text = check_text("message", &req.message, 4000)?;
        let (mut tx, row) = self.staff_appeal(&me, &req.id).await?;
        if row.status != "open" {
            return Err(AuthError::AppealNotOpen.into());
        }
        let message = uuid::Uuid::new_v4();
        let sealed = self.seal(&me.tenant, row.user_id, message, &text).await?;
        store::add_message(&mut tx, message, row.id, "staff", &me.principal.subject, &sealed).await?;
        store::set_status(&mut tx, row.id, "information_requested").await?;
        tx.record(me.audit("appeal.information_request", &format!("appeal/{}", row.id), Outcome::Success)).await?;
        let row = store::for_update(&mut tx, row.id).await?;
        Ok(Response::new(self.answer(tx, row).await?))
    }

    async fn decide_appeal(&self, request: Request<pb::DecideAppealRequest>) -> Result<Response<pb::Appeal>, Status> {
        let me = self.core.authed(&request).await?;
        let req = request.into_inner();
        let reason = check_text("reason", &req.reason, 2000)?;
        let decision = match pb::AppealDecision::try_from(req.decision).unwrap_or_default() {
            pb::AppealDecision::Lift => "lifted",
            pb::AppealDecision::Uphold => "upheld",
            pb::AppealDecision::Unspecified => return Err(ApiError::invalid_field("decision", "lift or uphold").into()),
        };
        let (mut tx, row) = self.staff_appeal(&me, &req.id).await?;
        if row.status != "open" {
            return Err(AuthError::AppealNotOpen.into());
        }
        crate::rbac::check_not_superior(&mut tx, crate::store::roles::ONE_USER, row.user_id, &me.principal.permissions)
            .await?;
        let sealed = self.seal_field(&me.tenant, APPEAL_DECISION_REASON, row.user_id, row.id, &reason).await?;
        store::decide(&mut tx, row.id, decision, &sealed, &me.principal.subject).await?;
        if decision == "lifted" {
            users::reactivate(&mut tx, row.user_id).await?;
        }
        let resource = format!("appeal/{}", row.id);
        tx.record(me.audit("appeal.decide", &resource, Outcome::Success).detail("decision", decision)).await?;
        if decision == "lifted" {
            let user = format!("user/{}", row.user_id);
            tx.record(me.audit("user.reactivate", &user, Outcome::Success).detail("appeal", row.id.to_string()))
                .await?;
        }
        let row = store::for_update(&mut tx, row.id).await?;
        let appeal = self.answer(tx, row).await?;
        self.core.profiles.forget(&me.tenant);
        Ok(Response::new(appeal))
    }
}
