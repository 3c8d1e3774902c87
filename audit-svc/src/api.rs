//! `strongroom.audit.v1.AuditLogService`: read-only access to a tenant's log, its checkpoints and
//! proofs. Callers: the gateway with a token holding `audit.events.read`, or the operator.

use kit::access::RequestContext;
use kit::authz::Permission;
use kit::outbox::{Actor, AuditRecord, Outcome};
use kit::time::opt_from_pb;
use kit::{ApiError, Db, Tenant, TenantTx};
use proto::audit::v1 as pb;
use tonic::{Request, Response, Status};

use crate::checkpoint::{self, Signer};
use crate::domain::merkle::{self, Hash};
use crate::domain::note;
use crate::error::AuditError;
use crate::store;
use crate::store::log::EntryFilter;

/// The SQL of a time window's sequence range, for tests that check it against the log.
pub use crate::store::log::SEQUENCE_RANGE_SQL;

pub const READ_PERMISSION: Permission = Permission::AuditEventsRead;

#[derive(Clone)]
pub struct AuditLog {
    pub db: Db,
    pub signer: Option<Signer>,
    pub wake: crate::stream::Wake,
    /// Resolves a subject's own pseudonyms in an access export.
    pub pseudonyms: crate::pseudonym::Pseudonymizer,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

impl AuditLog {
    /// A principal needs `audit.events.read` in this tenant; without one only the operator reads.
    async fn tenant(&self, ctx: &RequestContext) -> Result<Tenant, ApiError> {
        let tenant = self.db.authorize_tenant(&ctx.tenant_slug()?, ctx.principal.as_ref()).await?;
        match &ctx.principal {
            Some(p) => p.require(READ_PERMISSION).map(|()| tenant),
            None if ctx.caller.identity.name() == kit::Identity::OPERATOR => Ok(tenant),
            None => Err(AuditError::TokenRequired.into()),
        }
    }

    async fn begin(&self, ctx: &RequestContext) -> Result<(Tenant, TenantTx), ApiError> {
        let tenant = self.tenant(ctx).await?;
        let tx = self.db.begin(&tenant).await?;
        Ok((tenant, tx))
    }
}

/// The latest signed checkpoint, which every read is proved against.
async fn latest(tx: &mut TenantTx) -> Result<pb::Checkpoint, ApiError> {
    store::checkpoints::latest(tx).await?.ok_or_else(|| AuditError::NoCheckpoint.into())
}

/// The optional filters of `ListEntries`.
fn filter(req: &pb::ListEntriesRequest) -> Result<EntryFilter, ApiError> {
    let mut text = Vec::new();
    for (column, value) in [
        ("actor", &req.actor),
        ("action", &req.action),
        ("resource", &req.resource),
        ("outcome", &req.outcome),
        ("request_id", &req.request_id),
    ] {
        if value.len() > 1024 {
            return Err(ApiError::invalid_field(column, "at most 1024 bytes"));
        }
        if !value.is_empty() {
            text.push((column, value.clone()));
        }
    }
    Ok(EntryFilter {
        start: opt_from_pb("start_time", req.start_time.as_ref())?,
        end: opt_from_pb("end_time", req.end_time.as_ref())?,
        text,
    })
}

/// The checked values whose pseudonyms an `ExportSubjectEntries` call resolves (name, value).
type SubjectValues = Vec<(String, String)>;

/// Checks an `ExportSubjectEntries` call: its values to resolve and the data-subject request it
/// answers.
fn subject_of(req: &pb::ExportSubjectEntriesRequest) -> Result<(SubjectValues, Option<uuid::Uuid>), ApiError> {
    if req.actors.is_empty() || req.actors.len() > 100 {
        return Err(ApiError::invalid_field("actors", "1 to 100 actors"));
    }
    if req.resources.len() > 100 {
        return Err(ApiError::invalid_field("resources", "at most 100 resources"));
    }
    for (field, names) in [("actors", &req.actors), ("resources", &req.resources)] {
        if names.iter().any(|n| n.is_empty() || n.chars().count() > 200) {
            return Err(ApiError::invalid_field(field, "each 1 to 200 characters"));
        }
    }
    if req.personal_values.len() > 1000 {
        return Err(ApiError::invalid_field("personal_values", "at most 1000 values"));
    }
    if req.personal_values.iter().any(|v| v.name.is_empty() || v.name.len() > 64 || v.value.len() > 1000) {
        return Err(ApiError::invalid_field("personal_values", "names 1 to 64 bytes, values at most 1000 bytes"));
    }
    let values = req.personal_values.iter().map(|v| (v.name.clone(), v.value.clone())).collect();
    let request = match req.privacy_request_id.as_str() {
        "" => None,
        raw => Some(
            uuid::Uuid::parse_str(raw).map_err(|_| ApiError::invalid_field("privacy_request_id", "must be a UUID"))?,
        ),
    };
    Ok((values, request))
}

/// The resolutions among `known` of the pseudonyms in `entries`' details.
fn resolved_in(
    entries: &[pb::Entry],
    known: &std::collections::HashMap<String, (String, String)>,
) -> Vec<pb::ResolvedPseudonym> {
    let mut found = std::collections::BTreeMap::new();
    for e in entries {
        let Ok(serde_json::Value::Object(entry)) = serde_json::from_slice::<serde_json::Value>(&e.canonical) else {
            continue;
        };
        let Some(serde_json::Value::Object(details)) = entry.get("details") else { continue };
        for value in details.values() {
            if let Some((name, plain)) = value.as_str().and_then(|p| known.get(p)) {
                found.insert(value.as_str().unwrap_or_default().to_owned(), (name.clone(), plain.clone()));
            }
        }
    }
    found.into_iter().map(|(pseudonym, (name, value))| pb::ResolvedPseudonym { pseudonym, name, value }).collect()
}

fn proof_pb(proof: Vec<Hash>) -> Vec<Vec<u8>> {
    proof.iter().map(|h| h.to_vec()).collect()
}

#[tonic::async_trait]
impl pb::audit_log_service_server::AuditLogService for AuditLog {
    async fn get_latest_checkpoint(
        &self,
        request: Request<pb::GetLatestCheckpointRequest>,
    ) -> Result<Response<pb::Checkpoint>, Status> {
        let (_, mut tx) = self.begin(&RequestContext::of(&request)?).await?;
        let checkpoint = latest(&mut tx).await?;
        tx.commit().await?;
        Ok(Response::new(checkpoint))
    }

    async fn get_entry(&self, request: Request<pb::GetEntryRequest>) -> Result<Response<pb::GetEntryResponse>, Status> {
        let (_, mut tx) = self.begin(&RequestContext::of(&request)?).await?;
        let seq = request.get_ref().seq;
        let checkpoint = latest(&mut tx).await?;
        let size = checkpoint.tree_size;
        if seq >= size {
            return Err(AuditError::EntryNotInCheckpoint { seq, size }.into());
        }
        let entry = store::log::entry(&mut tx, seq).await?.ok_or(AuditError::EntryNotFound)?;
        let proof = store::log::compute(&mut tx, |n| merkle::inclusion_proof(seq, size, &n)).await?;
        tx.commit().await?;
        Ok(Response::new(pb::GetEntryResponse {
            entry: Some(entry),
            checkpoint: Some(checkpoint),
            inclusion_proof: proof_pb(proof),
        }))
    }

    async fn list_entries(
        &self,
        request: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        let page = ApiError::page_size(req.page_size, 100, 1000)?;
        let from = match req.page_token.as_str() {
            "" => req.from_seq,
            t => t.parse::<u64>().map_err(|_| ApiError::invalid_field("page_token", "not a page token"))?,
        };
        let filter = filter(&req)?;
        let (_, mut tx) = self.begin(&ctx).await?;
        let (entries, more) = store::log::list(&mut tx, from, &filter, page).await?;
        tx.commit().await?;
        let next_seq = if more { entries.last().map_or(0, |e| e.seq + 1) } else { 0 };
        let next_page_token = if more { next_seq.to_string() } else { String::new() };
        Ok(Response::new(pb::ListEntriesResponse { entries, next_seq, more, next_page_token }))
    }

    async fn export_subject_entries(
        &self,
        request: Request<pb::ExportSubjectEntriesRequest>,
    ) -> Result<Response<pb::ExportSubjectEntriesResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let tenant = self.db.authorize_tenant(&ctx.tenant_slug()?, ctx.principal.as_ref()).await?;
        let actor = match &ctx.principal {
            Some(p) => p.require(Permission::PrivacyRequestsWrite).map(|()| Actor::of(p))?,
            None if ctx.caller.identity.name() == kit::Identity::OPERATOR => {
                Actor::Service(ctx.caller.identity.name().to_owned())
            }
            None => return Err(ApiError::from(AuditError::TokenRequired).into()),
        };
        let req = request.into_inner();
        let (values, privacy_request) = subject_of(&req)?;
        let page = ApiError::page_size(req.page_size, 500, 1000)?;
        let from = match req.page_token.as_str() {
            "" => 0,
            t => t.parse::<u64>().map_err(|_| ApiError::invalid_field("page_token", "not a page token"))?,
        };
        let mut tx = self.db.begin(&tenant).await?;
        let (entries, more) = store::log::of_subject(&mut tx, from, &req.actors, &req.resources, page).await?;
        if req.page_token.is_empty() {
            let mut record =
                AuditRecord::new(crate::SERVICE, actor, "audit.subject.export", "audit_log", Outcome::Success)
                    .request_id(ctx.request_id.clone())
                    .detail("actors", req.actors.len())
                    .detail("resources", req.resources.len());
            if let Some(id) = privacy_request {
                record = record.detail("privacy_request_id", id.to_string());
            }
            tx.record(record).await?;
        }
        tx.commit().await?;
        let known = self.pseudonyms.resolutions(&tenant, &values).await?;
        let resolved = resolved_in(&entries, &known);
        let next_page_token = match (more, entries.last()) {
            (true, Some(last)) => (last.seq + 1).to_string(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ExportSubjectEntriesResponse { entries, resolved, next_page_token }))
    }

    type ExportEntriesStream = crate::stream::Items;

    async fn export_entries(
        &self,
        request: Request<pb::ExportEntriesRequest>,
    ) -> Result<Response<Self::ExportEntriesStream>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        let (tenant, mut tx) = self.begin(&ctx).await?;
        let checkpoint = latest(&mut tx).await?;
        tx.commit().await?;
        let size = checkpoint.tree_size;
        let to = if req.to_seq == 0 { size } else { req.to_seq };
        if req.from_seq >= to || to > size {
            return Err(ApiError::invalid_field(
                "to_seq",
                format!("need from_seq < to_seq ≤ {size} (latest checkpoint)"),
            )
            .into());
        }
        Ok(Response::new(crate::stream::export(self.db.clone(), tenant, req.from_seq, to, checkpoint)))
    }

    type StreamEntriesStream = crate::stream::Items;

    async fn stream_entries(
        &self,
        request: Request<pb::StreamEntriesRequest>,
    ) -> Result<Response<Self::StreamEntriesStream>, Status> {
        let tenant = self.tenant(&RequestContext::of(&request)?).await?;
        let from = request.get_ref().from_seq;
        Ok(Response::new(crate::stream::live(self.db.clone(), tenant, from, &self.wake)))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<pb::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::ConsistencyProof>, Status> {
        let ctx = RequestContext::of(&request)?;
        let (from, to) = (request.get_ref().from_size, request.get_ref().to_size);
        let (_, mut tx) = self.begin(&ctx).await?;
        let size = store::log::size(&mut tx).await?;
        if from == 0 || from > to || to > size {
            return Err(ApiError::invalid_field("from_size", format!("need 0 < from_size ≤ to_size ≤ {size}")).into());
        }
        let proof = store::log::compute(&mut tx, |n| merkle::consistency_proof(from, to, &n)).await?;
        tx.commit().await?;
        Ok(Response::new(pb::ConsistencyProof { from_size: from, to_size: to, proof: proof_pb(proof) }))
    }

    async fn get_verifier_key(
        &self,
        request: Request<pb::GetVerifierKeyRequest>,
    ) -> Result<Response<pb::GetVerifierKeyResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let tenant = self.tenant(&ctx).await?;
        let signer = self.signer.as_ref().ok_or(AuditError::NoSigner)?;
        let slug = tenant.slug.as_str();
        let key = kit::signing::active_public_key(signer, slug, checkpoint::KEY_NAME, ctx.request_id.as_deref())
            .await
            .map_err(|s| ApiError::from_status(&s))?;
        Ok(Response::new(pb::GetVerifierKeyResponse {
            verifier_key: note::verifier_key(&checkpoint::origin(&tenant), &key.public_key),
        }))
    }

    async fn verify_log(
        &self,
        request: Request<pb::VerifyLogRequest>,
    ) -> Result<Response<pb::VerifyLogResponse>, Status> {
        let tenant = self.tenant(&RequestContext::of(&request)?).await?;
        let report = crate::verify::verify(&self.db, &tenant).await?;
        Ok(Response::new(pb::VerifyLogResponse {
            checked: report.checked,
            ok: report.first_mismatch.is_none(),
            first_mismatch_seq: report.first_mismatch.map_or(0, |m| m.0),
            mismatch: report.first_mismatch.map(|m| m.1.to_owned()).unwrap_or_default(),
        }))
    }
}
