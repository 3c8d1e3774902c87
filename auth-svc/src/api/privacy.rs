//! `PrivacyService`: data-subject requests as tracked objects with a due date. A user files and
//! lists their own; a privacy officer (`privacy.requests.read` / `.write`) files them for a user or
//! an external subject, lists them overdue first and moves them on. Every step is kept with its
//! note, sealed under the subject's key, and audited. Executing one: auth-svc's part of an access
//! request's bundle (`ExportSubject`; the gateway assembles the bundle from every service's part),
//! and erasure and restriction (`ExecuteRequest`), deferred by a legal hold and completed by its
//! release.
//!
//! Legal holds too (`privacy.holds.write`): placing one, listing them, and releasing one, which
//! completes every erasure the hold deferred and no other hold still covers, each through the
//! same erase path as DeleteUser.

use std::collections::HashMap;

use kit::authz::Permission;
use kit::outbox::Outcome;
use kit::time::to_pb;
use kit::{ApiError, Tenant};
use proto::auth::v1 as pb;
use tonic::{Request, Response, Status};

use crate::core::{Authed, Core};
use crate::domain::input::parse_id;
use crate::domain::legal_holds::{self as holds, Scope};
use crate::domain::privacy_requests::{self as rules, RequestType, Status as RequestStatus, Subject, TransitionError};
use crate::error::AuthError;
use crate::personal::{Item, PRIVACY_REQUEST_NOTE, Stored};
use crate::store::legal_holds::{self as hold_store, HoldRow};
use crate::store::privacy_requests::{self as store, NewRequest, RequestRow, StepRow};

/// `PrivacyService`.
#[derive(Clone, Debug)]
pub struct Privacy {
    pub core: Core,
}

fn type_of(raw: i32) -> Result<RequestType, ApiError> {
    match pb::PrivacyRequestType::try_from(raw).unwrap_or_default() {
        pb::PrivacyRequestType::Access => Ok(RequestType::Access),
        pb::PrivacyRequestType::Rectification => Ok(RequestType::Rectification),
        pb::PrivacyRequestType::Erasure => Ok(RequestType::Erasure),
        pb::PrivacyRequestType::Restriction => Ok(RequestType::Restriction),
        pb::PrivacyRequestType::Unspecified => {
            Err(ApiError::invalid_field("request_type", "access, rectification, erasure or restriction"))
        }
    }
}

fn type_pb(kind: &str) -> pb::PrivacyRequestType {
    match RequestType::parse(kind) {
        Some(RequestType::Access) => pb::PrivacyRequestType::Access,
        Some(RequestType::Rectification) => pb::PrivacyRequestType::Rectification,
        Some(RequestType::Erasure) => pb::PrivacyRequestType::Erasure,
        Some(RequestType::Restriction) => pb::PrivacyRequestType::Restriction,
        None => pb::PrivacyRequestType::Unspecified,
    }
}

fn status_of(raw: i32) -> Option<RequestStatus> {
    match pb::PrivacyRequestStatus::try_from(raw).unwrap_or_default() {
        pb::PrivacyRequestStatus::Received => Some(RequestStatus::Received),
        pb::PrivacyRequestStatus::InProgress => Some(RequestStatus::InProgress),
        pb::PrivacyRequestStatus::Completed => Some(RequestStatus::Completed),
        pb::PrivacyRequestStatus::Rejected => Some(RequestStatus::Rejected),
        pb::PrivacyRequestStatus::Unspecified => None,
    }
}

fn status_pb(status: &str) -> pb::PrivacyRequestStatus {
    match RequestStatus::parse(status) {
        Some(RequestStatus::Received) => pb::PrivacyRequestStatus::Received,
        Some(RequestStatus::InProgress) => pb::PrivacyRequestStatus::InProgress,
        Some(RequestStatus::Completed) => pb::PrivacyRequestStatus::Completed,
        Some(RequestStatus::Rejected) => pb::PrivacyRequestStatus::Rejected,
        None => pb::PrivacyRequestStatus::Unspecified,
    }
}

/// The subject a stored request names (a row the migration's checks let through always has one).
fn subject_of(row: &RequestRow) -> Result<Subject, ApiError> {
    Subject::stored(&row.subject_kind, &row.subject_id).ok_or_else(|| ApiError::internal(&"a request without subject"))
}

/// The suspension reason of a user whose processing is restricted at their request.
pub const RESTRICTED_AT_REQUEST: &str = "processing restricted at the data subject's request";

/// Most `privacy_request/<id>` resources an access export asks audit-svc for.
const MAX_REQUEST_RESOURCES: usize = 99;

/// The vault-svc subject keys that are `subject`'s: a user's own; an external subject's, named by
/// its id (what the tenant's platform encrypts under) and the one sealing its requests' notes.
fn vault_subjects(subject: &Subject) -> Vec<String> {
    match subject {
        Subject::User(user) => vec![user.to_string()],
        Subject::External(id) => vec![id.clone(), subject.key().to_string()],
    }
}

/// A request as an access bundle shows it.
fn request_json(r: &pb::PrivacyRequest) -> serde_json::Value {
    let kind = pb::PrivacyRequestType::try_from(r.request_type).unwrap_or_default().as_str_name();
    let status = pb::PrivacyRequestStatus::try_from(r.status).unwrap_or_default().as_str_name();
    let steps: Vec<serde_json::Value> = r
        .steps
        .iter()
        .map(|s| {
            serde_json::json!({
                "actor": s.actor, "action": s.action,
                "status": pb::PrivacyRequestStatus::try_from(s.status).unwrap_or_default().as_str_name(),
                "note": s.note, "created_at": s.create_time.map(|t| t.seconds),
            })
        })
        .collect();
    serde_json::json!({
        "id": r.id, "type": kind, "status": status, "due_at": r.due_time.map(|t| t.seconds),
        "execution": r.execution, "steps": steps, "created_at": r.create_time.map(|t| t.seconds),
    })
}

fn hold_pb(h: HoldRow) -> pb::LegalHold {
    let scope = match h.scope() {
        Some(Scope::Tenant) => pb::LegalHoldScope::Tenant,
        Some(Scope::Subject(_)) => pb::LegalHoldScope::Subject,
        None => pb::LegalHoldScope::Unspecified,
    };
    pb::LegalHold {
        id: h.id.to_string(),
        scope: scope as i32,
        subject_id: h.subject_id.map(|s| s.to_string()).unwrap_or_default(),
        reason: h.reason,
        placed_by: h.placed_by,
        place_time: Some(to_pb(h.placed_at)),
        release_time: h.released_at.map(to_pb),
        released_by: h.released_by.unwrap_or_default(),
        release_note: h.release_note.unwrap_or_default(),
    }
}

impl Privacy {
    /// Completes the deferred erasure of `user` (asked for at `since`), in its own transaction,
    /// if no active hold covers them any more; whether it did.
    async fn complete_erasure(
        &self,
        me: &Authed,
        user: uuid::Uuid,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, ApiError> {
        let mut tx = self.core.db.begin(&me.tenant).await?;
        crate::store::users::lock(&mut tx, user).await?;
        if !hold_store::covering(&mut tx, user).await?.is_empty() {
            tx.rollback().await?;
            return Ok(false);
        }
        super::users::erase(&mut tx, user).await?;
        tx.record(
            me.audit("user.delete", &format!("user/{user}"), Outcome::Success)
                .detail("deferred_since", since.to_rfc3339()),
        )
        .await?;
        // Shred before committing: if vault-svc cannot, nothing is deleted (the user stays
        // restricted, and the erasure is found again by the next release or a DeleteUser).
        super::users::shred_subject(&self.core, me, user).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records in `tx` that executing request `id` did `execution`, leaving it in `status`, with
    /// its audit record, and answers the request.
    async fn executed(
        &self,
        me: &Authed,
        mut tx: kit::TenantTx,
        row: &RequestRow,
        execution: &str,
        status: RequestStatus,
    ) -> Result<pb::PrivacyRequest, ApiError> {
        let id = row.id;
        store::add_step(&mut tx, uuid::Uuid::now_v7(), id, &me.principal.subject, "update", status, None).await?;
        store::set_status(&mut tx, id, status).await?;
        store::set_execution(&mut tx, id, execution).await?;
        let record = me
            .audit("privacy.request.execute", &format!("privacy_request/{id}"), Outcome::Success)
            .detail("type", row.request_type.clone())
            .detail("subject_kind", row.subject_kind.clone())
            .detail("execution", execution);
        tx.record(record).await?;
        self.answer(tx, id).await
    }

    /// Shreds every vault-svc subject key of external subject `subject`: the one named by its id
    /// (the tenant's platform's transit data) and the one sealing its requests' notes.
    async fn shred_external(&self, me: &Authed, subject: &Subject) -> Result<(), ApiError> {
        for name in vault_subjects(subject) {
            super::users::shred_named(&self.core, me, &name).await?;
        }
        Ok(())
    }

    /// Completes the erasure requests a hold deferred that no active hold holds back any more: a
    /// user's once their deferred erasure is done, an external subject's by shredding its keys.
    /// Each in its own transaction; returns how many completed.
    async fn complete_deferred_requests(&self, me: &Authed) -> Result<i64, ApiError> {
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let rows = store::deferred(&mut tx).await?;
        tx.rollback().await?;
        let mut completed = 0;
        for candidate in rows {
            let mut tx = self.core.db.begin(&me.tenant).await?;
            let row = store::get(&mut tx, candidate.id, true).await?;
            if row.execution.as_deref() != Some("deferred")
                || RequestStatus::parse(&row.status).is_none_or(|s| s.is_final())
            {
                tx.rollback().await?;
                continue;
            }
            let subject = subject_of(&row)?;
            let free = match &subject {
                // Erased by the release (the row stays, marked deleted).
                Subject::User(user) => crate::store::users::is_deleted(&mut tx, *user).await?,
                Subject::External(_) => !hold_store::active(&mut tx).await?.contains(&Scope::Tenant),
            };
            if !free {
                tx.rollback().await?;
                continue;
            }
            if let Subject::External(_) = subject {
                // Before the request records it: if vault-svc cannot, the request stays deferred.
                self.shred_external(me, &subject).await?;
            }
            self.executed(me, tx, &row, "erased", RequestStatus::Completed).await?;
            completed += 1;
        }
        Ok(completed)
    }

    /// Seals `note` as the note of step `step` of a request about `subject` (nothing when empty).
    async fn seal(
        &self,
        tenant: &Tenant,
        subject: &Subject,
        step: uuid::Uuid,
        note: &str,
    ) -> Result<Option<String>, ApiError> {
        let item = Item { field: PRIVACY_REQUEST_NOTE, row: step, subject: subject.key(), value: note };
        Ok(self.core.personal.seal(tenant, &[item]).await?.pop().flatten())
    }

    /// Puts `rows` together with their steps, every note opened in one call.
    async fn open(
        &self,
        tenant: &Tenant,
        rows: Vec<RequestRow>,
        steps: Vec<StepRow>,
    ) -> Result<Vec<pb::PrivacyRequest>, ApiError> {
        let keys: HashMap<uuid::Uuid, uuid::Uuid> =
            rows.iter().filter_map(|r| subject_of(r).ok().map(|s| (r.id, s.key()))).collect();
        let items = steps
            .iter()
            .map(|s| Item {
                field: PRIVACY_REQUEST_NOTE,
                row: s.id,
                subject: keys.get(&s.request_id).copied().unwrap_or_default(),
                value: Stored::of(s.note_sealed.clone(), None),
            })
            .collect();
        let notes = self.core.personal.open(tenant, items).await?;
        let mut by_request: HashMap<uuid::Uuid, Vec<pb::PrivacyRequestStep>> = HashMap::new();
        for (s, note) in steps.into_iter().zip(notes) {
            let step = pb::PrivacyRequestStep {
                actor: s.actor,
                action: s.action,
                status: status_pb(&s.status) as i32,
                note,
                create_time: Some(to_pb(s.created_at)),
            };
            by_request.entry(s.request_id).or_default().push(step);
        }
        Ok(rows
            .into_iter()
            .map(|r| {
                let (user_id, external_subject) = match r.subject_kind.as_str() {
                    "user" => (r.subject_id, String::new()),
                    _ => (String::new(), r.subject_id),
                };
                pb::PrivacyRequest {
                    id: r.id.to_string(),
                    request_type: type_pb(&r.request_type) as i32,
                    user_id,
                    external_subject,
                    status: status_pb(&r.status) as i32,
                    due_time: Some(to_pb(r.due_at)),
                    overdue: r.overdue,
                    steps: by_request.remove(&r.id).unwrap_or_default(),
                    create_time: Some(to_pb(r.created_at)),
                    update_time: Some(to_pb(r.updated_at)),
                    execution: r.execution.unwrap_or_default(),
                    execute_time: r.executed_at.map(to_pb),
                }
            })
            .collect())
    }

    /// Request `id` as read in `tx` (committed here), with its history.
    async fn answer(&self, mut tx: kit::TenantTx, id: uuid::Uuid) -> Result<pb::PrivacyRequest, ApiError> {
        let tenant = tx.tenant().clone();
        let row = store::get(&mut tx, id, false).await?;
        let steps = store::steps_of(&mut tx, &[id]).await?;
        tx.commit().await?;
        let mut requests = self.open(&tenant, vec![row], steps).await?;
        requests.pop().ok_or_else(|| ApiError::internal(&"a request went missing"))
    }

    /// Files a request of `kind` about `subject` by the caller, with `details` as the first note.
    async fn file(
        &self,
        me: &Authed,
        kind: RequestType,
        subject: Subject,
        details: &str,
    ) -> Result<pb::PrivacyRequest, ApiError> {
        let details = rules::check_note("details", details)?;
        let (id, step) = (uuid::Uuid::new_v4(), uuid::Uuid::now_v7());
        let sealed = self.seal(&me.tenant, &subject, step, &details).await?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        if let Subject::User(user) = subject {
            crate::store::users::load_user(&mut tx, user).await?;
        }
        let subject_id = subject.id();
        let new = NewRequest {
            id,
            request_type: kind.as_str(),
            subject_kind: subject.kind(),
            subject_id: &subject_id,
            filed_by: &me.principal.subject,
            due_at: rules::due_at(kind, &subject, chrono::Utc::now()),
        };
        store::insert(&mut tx, &new).await?;
        let actor = &me.principal.subject;
        store::add_step(&mut tx, step, id, actor, "file", RequestStatus::Received, sealed.as_deref()).await?;
        let record = me
            .audit("privacy.request.file", &format!("privacy_request/{id}"), Outcome::Success)
            .detail("type", kind.as_str())
            .detail("subject_kind", subject.kind());
        tx.record(record).await?;
        self.answer(tx, id).await
    }
}

#[tonic::async_trait]
impl pb::privacy_service_server::PrivacyService for Privacy {
    async fn file_my_request(
        &self,
        request: Request<pb::FileMyRequestRequest>,
    ) -> Result<Response<pb::PrivacyRequest>, Status> {
        let me = self.core.authed(&request).await?;
        let user = me.user_id()?;
        let req = request.into_inner();
        let kind = type_of(req.request_type)?;
        Ok(Response::new(self.file(&me, kind, Subject::User(user), &req.details).await?))
    }

    async fn list_my_requests(
        &self,
        request: Request<pb::ListMyRequestsRequest>,
    ) -> Result<Response<pb::ListPrivacyRequestsResponse>, Status> {
        let me = self.core.authed(&request).await?;
        let user = Subject::User(me.user_id()?);
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let rows = store::of_subject(&mut tx, user.kind(), &user.id()).await?;
        let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.id).collect();
        let steps = store::steps_of(&mut tx, &ids).await?;
        tx.commit().await?;
        let overdue_count = rows.iter().filter(|r| r.overdue).count() as i64;
        let requests = self.open(&me.tenant, rows, steps).await?;
        Ok(Response::new(pb::ListPrivacyRequestsResponse { requests, next_page_token: String::new(), overdue_count }))
    }

    async fn file_request(
        &self,
        request: Request<pb::FilePrivacyRequestRequest>,
    ) -> Result<Response<pb::PrivacyRequest>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::PrivacyRequestsWrite)?;
        let req = request.into_inner();
        let kind = type_of(req.request_type)?;
        let subject = match (req.user_id.is_empty(), req.external_subject.is_empty()) {
            (false, true) => Subject::User(parse_id("user_id", &req.user_id)?),
            (true, false) => Subject::external(&req.external_subject)?,
            _ => return Err(ApiError::invalid_field("user_id", "exactly one of user_id and external_subject").into()),
        };
        Ok(Response::new(self.file(&me, kind, subject, &req.details).await?))
    }

    async fn list_requests(
        &self,
        request: Request<pb::ListPrivacyRequestsRequest>,
    ) -> Result<Response<pb::ListPrivacyRequestsResponse>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::PrivacyRequestsRead)?;
        let req = request.into_inner();
        let size = ApiError::page_size(req.page_size, 50, 200)?;
        let statuses: Vec<&str> = status_of(req.status).map(|s| vec![s.as_str()]).unwrap_or_default();
        // The position in the listing: overdue first moves as time passes, so no key fits.
        let offset = match req.page_token.as_str() {
            "" => 0,
            t => t
                .parse::<i64>()
                .ok()
                .filter(|o| *o > 0)
                .ok_or_else(|| ApiError::invalid_field("page_token", "as a page answered it"))?,
        };
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let rows = store::page(&mut tx, &statuses, offset, size + 1).await?;
        let (rows, next_page_token) = super::page(rows, size, |_| (offset + size).to_string());
        let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.id).collect();
        let steps = store::steps_of(&mut tx, &ids).await?;
        let overdue_count = store::count_overdue(&mut tx).await?;
        tx.commit().await?;
        let requests = self.open(&me.tenant, rows, steps).await?;
        Ok(Response::new(pb::ListPrivacyRequestsResponse { requests, next_page_token, overdue_count }))
    }

    async fn get_request(
        &self,
        request: Request<pb::GetPrivacyRequestRequest>,
    ) -> Result<Response<pb::PrivacyRequest>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::PrivacyRequestsRead)?;
        let id = parse_id("id", &request.into_inner().id)?;
        let tx = self.core.db.begin(&me.tenant).await?;
        Ok(Response::new(self.answer(tx, id).await?))
    }

    async fn update_request(
        &self,
        request: Request<pb::UpdatePrivacyRequestRequest>,
    ) -> Result<Response<pb::PrivacyRequest>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::PrivacyRequestsWrite)?;
        let req = request.into_inner();
        let id = parse_id("id", &req.id)?;
        let to = status_of(req.status)
            .ok_or_else(|| ApiError::invalid_field("status", "in_progress, completed or rejected"))?;
        let note = rules::check_note("note", &req.note)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let row = store::get(&mut tx, id, true).await?;
        let from = RequestStatus::parse(&row.status).ok_or_else(|| ApiError::internal(&"a request without status"))?;
        match rules::check_transition(from, to, &note) {
            Ok(()) => {}
            Err(TransitionError::Final) => return Err(AuthError::PrivacyRequestFinal.into()),
            Err(TransitionError::Backwards) => return Err(AuthError::PrivacyRequestBackwards.into()),
            Err(TransitionError::NoteRequired) => {
                return Err(ApiError::invalid_field("note", "required to complete or reject a request").into());
            }
        }
        let subject = subject_of(&row)?;
        let step = uuid::Uuid::now_v7();
        // Sealed while the request is locked: a vault-svc call, as appeals make.
        let sealed = self.seal(&me.tenant, &subject, step, &note).await?;
        store::add_step(&mut tx, step, id, &me.principal.subject, "update", to, sealed.as_deref()).await?;
        store::set_status(&mut tx, id, to).await?;
        let record = me
            .audit("privacy.request.update", &format!("privacy_request/{id}"), Outcome::Success)
            .detail("from", from.as_str())
            .detail("status", to.as_str());
        tx.record(record).await?;
        Ok(Response::new(self.answer(tx, id).await?))
    }

    async fn export_subject(
        &self,
        request: Request<pb::ExportSubjectRequest>,
    ) -> Result<Response<pb::SubjectExport>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::PrivacyRequestsWrite)?;
        let id = parse_id("request_id", &request.get_ref().request_id)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let row = store::get(&mut tx, id, true).await?;
        if RequestStatus::parse(&row.status).is_none_or(|s| s.is_final()) {
            return Err(AuthError::PrivacyRequestFinal.into());
        }
        if RequestType::parse(&row.request_type) != Some(RequestType::Access) {
            return Err(AuthError::NotAnAccessRequest.into());
        }
        let subject = subject_of(&row)?;
        let user = match subject {
            Subject::User(user) => Some(super::users::UserExport::read(&mut tx, user).await?),
            Subject::External(_) => None,
        };
        let requests = store::of_subject(&mut tx, subject.kind(), &subject.id()).await?;
        let ids: Vec<uuid::Uuid> = requests.iter().map(|r| r.id).collect();
        let steps = store::steps_of(&mut tx, &ids).await?;
        if row.status == RequestStatus::Received.as_str() {
            let step = uuid::Uuid::now_v7();
            store::add_step(&mut tx, step, id, &me.principal.subject, "update", RequestStatus::InProgress, None)
                .await?;
            store::set_status(&mut tx, id, RequestStatus::InProgress).await?;
        }
        store::set_execution(&mut tx, id, "exported").await?;
        let record = me
            .audit("privacy.request.export", &format!("privacy_request/{id}"), Outcome::Success)
            .detail("subject_kind", subject.kind());
        tx.record(record).await?;
        tx.commit().await?;

        let requests = self.open(&me.tenant, requests, steps).await?;
        let mut export = serde_json::json!({
            "format": "strongroom.subject-export.auth.v1",
            "subject": { "kind": subject.kind(), "id": subject.id() },
            "privacy_requests": requests.iter().map(request_json).collect::<Vec<_>>(),
        });
        let (mut audit_actors, mut audit_resources, mut personal_values) = (Vec::new(), Vec::new(), Vec::new());
        match (&subject, user) {
            (Subject::User(u), Some(user)) => {
                let opened = user.open(&self.core, &me.tenant).await?;
                if let (serde_json::Value::Object(out), serde_json::Value::Object(doc)) = (&mut export, opened.document)
                {
                    out.extend(doc);
                }
                audit_actors.push(format!("user:{u}"));
                audit_actors.extend(opened.api_key_ids.iter().map(|k| format!("api_key:{k}")));
                audit_resources.push(format!("user/{u}"));
                personal_values = opened.personal_values;
            }
            _ => {
                audit_actors.push(subject.id());
                audit_resources.push(subject.id());
            }
        }
        // Every request about the subject is part of what was done with their data.
        audit_resources.extend(ids.iter().take(MAX_REQUEST_RESOURCES).map(|r| format!("privacy_request/{r}")));
        audit_actors.truncate(100);
        Ok(Response::new(pb::SubjectExport {
            json: export.to_string(),
            subject: subject.id(),
            vault_subjects: vault_subjects(&subject),
            audit_actors,
            audit_resources,
            personal_values: personal_values
                .into_iter()
                .map(|(name, value)| pb::PersonalValue { name, value })
                .collect(),
        }))
    }

    async fn execute_request(
        &self,
        request: Request<pb::ExecuteRequestRequest>,
    ) -> Result<Response<pb::PrivacyRequest>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::PrivacyRequestsWrite)?;
        let id = parse_id("id", &request.get_ref().id)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        // Locked while executing: two officers executing one request do it once.
        let row = store::get(&mut tx, id, true).await?;
        if RequestStatus::parse(&row.status).is_none_or(|s| s.is_final()) {
            return Err(AuthError::PrivacyRequestFinal.into());
        }
        let kind =
            RequestType::parse(&row.request_type).ok_or_else(|| ApiError::internal(&"a request without type"))?;
        let subject = subject_of(&row)?;
        let done = match (kind, &subject) {
            (RequestType::Access, _) => {
                return Err(AuthError::NotExecutable(
                    "an access request is executed by assembling its bundle (POST /v1/privacy/requests/{id}/execute)",
                )
                .into());
            }
            (RequestType::Rectification, _) => {
                return Err(AuthError::NotExecutable(
                    "a rectification is made by the user or an administrator, then the request is completed with a note",
                )
                .into());
            }
            (RequestType::Restriction, Subject::External(_)) => {
                return Err(AuthError::NotExecutable(
                    "an external subject's processing is restricted by the tenant's platform; complete the request with a note",
                )
                .into());
            }
            (RequestType::Erasure, Subject::User(user)) => {
                if me.user_id().ok() == Some(*user) {
                    return Err(AuthError::CannotDeleteSelf.into());
                }
                if crate::store::users::is_deleted(&mut tx, *user).await? {
                    // Erased already (by DeleteUser, or an execution that stopped before recording it).
                    ("erased", RequestStatus::Completed)
                } else {
                    match super::users::delete(&self.core, &me, *user).await? {
                        super::users::Deletion::Erased => ("erased", RequestStatus::Completed),
                        super::users::Deletion::Deferred => ("deferred", RequestStatus::InProgress),
                    }
                }
            }
            (RequestType::Erasure, Subject::External(_)) => {
                if hold_store::active(&mut tx).await?.contains(&Scope::Tenant) {
                    ("deferred", RequestStatus::InProgress)
                } else {
                    // Before the request records it: if vault-svc cannot, nothing is recorded.
                    self.shred_external(&me, &subject).await?;
                    ("erased", RequestStatus::Completed)
                }
            }
            (RequestType::Restriction, Subject::User(user)) => {
                crate::store::users::lock(&mut tx, *user).await?;
                crate::rbac::check_not_superior(
                    &mut tx,
                    crate::store::roles::ONE_USER,
                    *user,
                    &me.principal.permissions,
                )
                .await?;
                crate::store::users::restrict_processing(&mut tx, *user, RESTRICTED_AT_REQUEST).await?;
                let sessions = crate::store::sessions::end_all_of(&mut tx, *user, None, "user_restricted").await?;
                crate::store::mfa::void_challenges_of(&mut tx, *user).await?;
                crate::rbac::check_an_owner_remains(&mut tx).await?;
                tx.record(
                    me.audit("user.restrict", &format!("user/{user}"), Outcome::Success)
                        .detail("sessions_ended", sessions),
                )
                .await?;
                ("restricted", RequestStatus::Completed)
            }
        };
        let answer = self.executed(&me, tx, &row, done.0, done.1).await?;
        if matches!(kind, RequestType::Restriction) {
            self.core.profiles.forget(&me.tenant);
            self.core.publish_revocations_soon(&me.tenant).await;
        }
        Ok(Response::new(answer))
    }

    async fn place_legal_hold(
        &self,
        request: Request<pb::PlaceLegalHoldRequest>,
    ) -> Result<Response<pb::LegalHold>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::PrivacyHoldsWrite)?;
        let req = request.into_inner();
        let scope = match (pb::LegalHoldScope::try_from(req.scope).unwrap_or_default(), req.subject_id.is_empty()) {
            (pb::LegalHoldScope::Tenant, true) => Scope::Tenant,
            (pb::LegalHoldScope::Subject, false) => Scope::Subject(parse_id("subject_id", &req.subject_id)?),
            (pb::LegalHoldScope::Tenant, false) => {
                return Err(ApiError::invalid_field("subject_id", "empty for a tenant hold").into());
            }
            (pb::LegalHoldScope::Subject, true) => {
                return Err(ApiError::invalid_field("subject_id", "required for a subject hold").into());
            }
            (pb::LegalHoldScope::Unspecified, _) => {
                return Err(ApiError::invalid_field("scope", "tenant or subject").into());
            }
        };
        let reason = holds::check_reason(&req.reason)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        if let Scope::Subject(user) = scope {
            // Locks the user: a deletion running meanwhile finishes first, or sees this hold.
            hold_store::lock_subject(&mut tx, user).await?;
        }
        let id = uuid::Uuid::new_v4();
        let hold = hold_store::insert(&mut tx, id, scope, &reason, &me.principal.subject).await?;
        let mut record = me
            .audit("privacy.hold.place", &format!("legal_hold/{id}"), Outcome::Success)
            .detail("scope", scope.as_str());
        if let Some(user) = scope.subject() {
            record = record.detail("subject_id", user.to_string());
        }
        tx.record(record).await?;
        tx.commit().await?;
        Ok(Response::new(hold_pb(hold)))
    }

    async fn release_legal_hold(
        &self,
        request: Request<pb::ReleaseLegalHoldRequest>,
    ) -> Result<Response<pb::ReleaseLegalHoldResponse>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::PrivacyHoldsWrite)?;
        let req = request.into_inner();
        let id = parse_id("id", &req.id)?;
        let note = holds::check_note(&req.note)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        hold_store::lock(&mut tx, id).await?;
        let hold = hold_store::release(&mut tx, id, &me.principal.subject, &note).await?;
        tx.record(me.audit("privacy.hold.release", &format!("legal_hold/{id}"), Outcome::Success)).await?;
        tx.commit().await?;
        // After the release committed: a deletion that saw the hold held its lock until it
        // committed, so its deferred erasure is listed here.
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let deferred = hold_store::deferred(&mut tx).await?;
        let active = hold_store::active(&mut tx).await?;
        tx.rollback().await?;
        let users: Vec<uuid::Uuid> = deferred.iter().map(|(u, _)| *u).collect();
        let freed = holds::freed(&users, &active);
        let mut completed = 0;
        for (user, since) in deferred.iter().filter(|(u, _)| freed.contains(u)) {
            if self.complete_erasure(&me, *user, *since).await? {
                completed += 1;
            }
        }
        if completed > 0 {
            self.core.profiles.forget(&me.tenant);
            self.core.publish_revocations_soon(&me.tenant).await;
        }
        // The erasure requests waiting for those erasures (or for the tenant hold) complete too.
        self.complete_deferred_requests(&me).await?;
        Ok(Response::new(pb::ReleaseLegalHoldResponse {
            hold: Some(hold_pb(hold)),
            erasures_completed: completed,
            erasures_still_held: deferred.len() as i64 - completed,
        }))
    }

    async fn list_legal_holds(
        &self,
        request: Request<pb::ListLegalHoldsRequest>,
    ) -> Result<Response<pb::ListLegalHoldsResponse>, Status> {
        let me = self.core.authed(&request).await?;
        if me.require(Permission::PrivacyHoldsWrite).is_err() {
            me.require(Permission::PrivacyRequestsRead)?;
        }
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let rows = hold_store::all(&mut tx).await?;
        tx.commit().await?;
        Ok(Response::new(pb::ListLegalHoldsResponse { holds: rows.into_iter().map(hold_pb).collect() }))
    }
}
