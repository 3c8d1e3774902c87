//! `PrivacyService`: data-subject requests as tracked objects with a due date. A user files and
//! lists their own; a privacy officer (`privacy.requests.read` / `.write`) files them for a user or
//! an external subject, lists them overdue first and moves them on. Every step is kept with its
//! note, sealed under the subject's key, and audited. Executing a request (the access bundle, the
//! erasure) is not done here.

use std::collections::HashMap;

use kit::authz::Permission;
use kit::outbox::Outcome;
use kit::time::to_pb;
use kit::{ApiError, Tenant};
use proto::auth::v1 as pb;
use tonic::{Request, Response, Status};

use crate::core::{Authed, Core};
use crate::domain::input::parse_id;
use crate::domain::privacy_requests::{self as rules, RequestType, Status as RequestStatus, Subject, TransitionError};
use crate::error::AuthError;
use crate::personal::{Item, PRIVACY_REQUEST_NOTE, Stored};
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

impl Privacy {
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
}
