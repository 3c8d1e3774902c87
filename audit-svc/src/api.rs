//! `strongroom.audit.v1.AuditLogService`: read-only access to a tenant's log, its checkpoints and
//! proofs. Callers: the gateway with a token holding `audit.events.read`, or the operator.

use kit::access::RequestContext;
use kit::authz::Permission;
use kit::tenancy::db_error;
use kit::time::opt_from_pb;
use kit::{ApiError, Db, ErrorCode, Tenant, TenantTx};
use proto::audit::v1 as pb;
use tonic::{Request, Response, Status};

use crate::checkpoint::{self, Signer};
use crate::domain::merkle;
use crate::domain::note;

pub const READ_PERMISSION: Permission = Permission::AuditEventsRead;

#[derive(Clone)]
pub struct AuditLog {
    pub db: Db,
    pub signer: Option<Signer>,
    pub wake: crate::stream::Wake,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

fn checkpoint_pb(c: &checkpoint::Stored) -> pb::Checkpoint {
    pb::Checkpoint { tree_size: c.tree_size as u64, root_hash: c.root_hash.clone(), signed_note: c.signed_note.clone() }
}

fn no_checkpoint() -> ApiError {
    ApiError::new(ErrorCode::FailedPrecondition, "NO_CHECKPOINT", "the log has no signed checkpoint yet")
}

impl AuditLog {
    /// A principal needs `audit.events.read` in this tenant; without one only the operator reads.
    async fn tenant(&self, ctx: &RequestContext) -> Result<Tenant, ApiError> {
        let tenant = self.db.authorize_tenant(&ctx.tenant_slug()?, ctx.principal.as_ref()).await?;
        match &ctx.principal {
            Some(p) => p.require(READ_PERMISSION).map(|()| tenant),
            None if ctx.caller.identity.name() == kit::Identity::OPERATOR => Ok(tenant),
            None => Err(ApiError::unauthenticated("TOKEN_REQUIRED", "an access token is required")),
        }
    }

    async fn begin(&self, ctx: &RequestContext) -> Result<(Tenant, TenantTx), ApiError> {
        let tenant = self.tenant(ctx).await?;
        let tx = self.db.begin(&tenant).await?;
        Ok((tenant, tx))
    }
}

#[derive(sqlx::FromRow)]
struct EntryRow {
    seq: i64,
    canonical: Vec<u8>,
    leaf_hash: Vec<u8>,
    chain_hash: Vec<u8>,
}

/// `(lo, hi)` for a time window `[$1, $2)` (either may be NULL): the last time mark before
/// `$1 - max_lead` and the first from `$2 + max_lag` on (tenant migration 0009). No row before the
/// tenant's first append since that migration; NULLs where no mark qualifies.
pub const SEQUENCE_RANGE_SQL: &str = "\
    SELECT (SELECT m.seq FROM audit_time_marks m WHERE m.at < $1 - c.max_lead ORDER BY m.at DESC LIMIT 1), \
           (SELECT m.seq FROM audit_time_marks m WHERE m.at >= $2 + c.max_lag ORDER BY m.at LIMIT 1) \
    FROM audit_clock c";

/// The optional filters of `ListEntries`: the text ones each served by an index in sequence
/// order, the time window by a sequence range (see [`Filter::sequence_range`]).
struct Filter {
    start: Option<chrono::DateTime<chrono::Utc>>,
    end: Option<chrono::DateTime<chrono::Utc>>,
    text: Vec<(&'static str, String)>,
}

impl Filter {
    fn of(req: &pb::ListEntriesRequest) -> Result<Self, ApiError> {
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
        Ok(Self {
            start: opt_from_pb("start_time", req.start_time.as_ref())?,
            end: opt_from_pb("end_time", req.end_time.as_ref())?,
            text,
        })
    }

    /// The sequence range `[lo, hi)` (`hi` open when `None`) that holds every entry whose
    /// `occurred_at` is in the time window, from two time marks (tenant migration 0009): a page
    /// walks the log from there, not from its start, and stops at `hi`, not at the log's end.
    async fn sequence_range(&self, tx: &mut kit::TenantTx) -> Result<(i64, Option<i64>), ApiError> {
        if self.start.is_none() && self.end.is_none() {
            return Ok((0, None));
        }
        let range: Option<(Option<i64>, Option<i64>)> = sqlx::query_as(SEQUENCE_RANGE_SQL)
            .bind(self.start)
            .bind(self.end)
            .fetch_optional(tx.conn())
            .await
            .map_err(db_error)?;
        // No clock yet: nothing was appended since migration 0009 on an empty log.
        let (lo, hi) = range.unwrap_or_default();
        Ok((lo.unwrap_or(0), hi))
    }

    fn push(&self, q: &mut sqlx::QueryBuilder<'_, sqlx::Postgres>) {
        if let Some(t) = self.start {
            q.push(" AND occurred_at >= ").push_bind(t);
        }
        if let Some(t) = self.end {
            q.push(" AND occurred_at < ").push_bind(t);
        }
        for (column, value) in &self.text {
            // `column` is one of five fixed names, never caller input.
            q.push(format!(" AND {column} = ")).push_bind(value.clone());
        }
    }
}

fn entry_pb(r: EntryRow) -> pb::Entry {
    pb::Entry {
        seq: r.seq as u64,
        canonical: r.canonical,
        leaf_hash: r.leaf_hash,
        chain_hash: r.chain_hash,
        pruned: false,
    }
}

#[tonic::async_trait]
impl pb::audit_log_service_server::AuditLogService for AuditLog {
    async fn get_latest_checkpoint(
        &self,
        request: Request<pb::GetLatestCheckpointRequest>,
    ) -> Result<Response<pb::Checkpoint>, Status> {
        let ctx = RequestContext::of(&request)?;
        let (_, mut tx) = self.begin(&ctx).await?;
        let latest = checkpoint::latest(&mut tx).await?.ok_or_else(no_checkpoint)?;
        tx.commit().await?;
        Ok(Response::new(checkpoint_pb(&latest)))
    }

    async fn get_entry(&self, request: Request<pb::GetEntryRequest>) -> Result<Response<pb::GetEntryResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let seq = request.get_ref().seq;
        let (_, mut tx) = self.begin(&ctx).await?;
        let latest = checkpoint::latest(&mut tx).await?.ok_or_else(no_checkpoint)?;
        let size = latest.tree_size as u64;
        if seq >= size {
            return Err(ApiError::not_found(
                "ENTRY_NOT_FOUND",
                format!("no entry {seq} in the latest checkpoint (size {size})"),
            )
            .into());
        }
        let row: EntryRow =
            sqlx::query_as("SELECT seq, canonical, leaf_hash, chain_hash FROM audit_log WHERE seq = $1")
                .bind(seq as i64)
                .fetch_optional(tx.conn())
                .await
                .map_err(db_error)?
                .ok_or_else(|| ApiError::not_found("ENTRY_NOT_FOUND", "no such entry"))?;
        let keys = merkle::required_nodes(|n| merkle::inclusion_proof(seq, size, &n));
        let nodes = checkpoint::load_nodes(&mut tx, &keys).await?;
        let proof = merkle::inclusion_proof(seq, size, &|l, i| nodes.get(&(l, i)).copied())
            .map_err(|e| ApiError::internal(&e))?;
        tx.commit().await?;
        Ok(Response::new(pb::GetEntryResponse {
            entry: Some(entry_pb(row)),
            checkpoint: Some(checkpoint_pb(&latest)),
            inclusion_proof: proof.iter().map(|h| h.to_vec()).collect(),
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
        let filter = Filter::of(&req)?;
        let (_, mut tx) = self.begin(&ctx).await?;
        let (lo, hi) = filter.sequence_range(&mut tx).await?;
        let mut q =
            sqlx::QueryBuilder::new("SELECT seq, canonical, leaf_hash, chain_hash FROM audit_log WHERE seq >= ");
        q.push_bind((from.min(i64::MAX as u64) as i64).max(lo));
        if let Some(hi) = hi {
            q.push(" AND seq < ").push_bind(hi);
        }
        filter.push(&mut q);
        q.push(" ORDER BY seq LIMIT ").push_bind(page + 1);
        // Planned for the values at hand: whether the time index or the sequence range serves a
        // page best depends on them.
        let mut rows: Vec<EntryRow> =
            q.build_query_as().persistent(false).fetch_all(tx.conn()).await.map_err(db_error)?;
        tx.commit().await?;
        let more = rows.len() as i64 > page;
        rows.truncate(page as usize);
        let next_seq = if more { rows.last().map_or(0, |r| r.seq as u64 + 1) } else { 0 };
        Ok(Response::new(pb::ListEntriesResponse {
            entries: rows.into_iter().map(entry_pb).collect(),
            next_seq,
            more,
            next_page_token: if more { next_seq.to_string() } else { String::new() },
        }))
    }

    type ExportEntriesStream = crate::stream::Items;

    async fn export_entries(
        &self,
        request: Request<pb::ExportEntriesRequest>,
    ) -> Result<Response<Self::ExportEntriesStream>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        let (tenant, mut tx) = self.begin(&ctx).await?;
        let latest = checkpoint::latest(&mut tx).await?.ok_or_else(no_checkpoint)?;
        tx.commit().await?;
        let size = latest.tree_size as u64;
        let to = if req.to_seq == 0 { size } else { req.to_seq };
        if req.from_seq >= to || to > size {
            return Err(ApiError::invalid_field(
                "to_seq",
                format!("need from_seq < to_seq ≤ {size} (latest checkpoint)"),
            )
            .into());
        }
        Ok(Response::new(crate::stream::export(self.db.clone(), tenant, req.from_seq, to, latest)))
    }

    type StreamEntriesStream = crate::stream::Items;

    async fn stream_entries(
        &self,
        request: Request<pb::StreamEntriesRequest>,
    ) -> Result<Response<Self::StreamEntriesStream>, Status> {
        let ctx = RequestContext::of(&request)?;
        let tenant = self.tenant(&ctx).await?;
        let from = request.get_ref().from_seq;
        Ok(Response::new(crate::stream::live(self.db.clone(), tenant, from, &self.wake)))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<pb::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::ConsistencyProof>, Status> {
        let ctx = RequestContext::of(&request)?;
        let req = request.into_inner();
        let (_, mut tx) = self.begin(&ctx).await?;
        let size = checkpoint::log_size(&mut tx).await?;
        if req.from_size == 0 || req.from_size > req.to_size || req.to_size > size {
            return Err(ApiError::invalid_field("from_size", format!("need 0 < from_size ≤ to_size ≤ {size}")).into());
        }
        let (from, to) = (req.from_size, req.to_size);
        let keys = merkle::required_nodes(|n| merkle::consistency_proof(from, to, &n));
        let nodes = checkpoint::load_nodes(&mut tx, &keys).await?;
        let proof = merkle::consistency_proof(from, to, &|l, i| nodes.get(&(l, i)).copied())
            .map_err(|e| ApiError::internal(&e))?;
        tx.commit().await?;
        Ok(Response::new(pb::ConsistencyProof {
            from_size: from,
            to_size: to,
            proof: proof.iter().map(|h| h.to_vec()).collect(),
        }))
    }

    async fn get_verifier_key(
        &self,
        request: Request<pb::GetVerifierKeyRequest>,
    ) -> Result<Response<pb::GetVerifierKeyResponse>, Status> {
        let ctx = RequestContext::of(&request)?;
        let tenant = self.tenant(&ctx).await?;
        let signer = self.signer.as_ref().ok_or_else(|| ApiError::unavailable("NO_SIGNER", "no vault configured"))?;
        let key = kit::signing::active_public_key(
            signer,
            tenant.slug.as_str(),
            checkpoint::KEY_NAME,
            ctx.request_id.as_deref(),
        )
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
        let ctx = RequestContext::of(&request)?;
        let tenant = self.tenant(&ctx).await?;
        let report = crate::verify::verify(&self.db, &tenant).await?;
        Ok(Response::new(pb::VerifyLogResponse {
            checked: report.checked,
            ok: report.first_mismatch.is_none(),
            first_mismatch_seq: report.first_mismatch.map_or(0, |m| m.0),
            mismatch: report.first_mismatch.map(|m| m.1.to_owned()).unwrap_or_default(),
        }))
    }
}
