//! `strongroom bench audit`: against a running `strongroom dev up` (operator certificate, loopback),
//! with checkpoints on as in production:
//!
//! 1. sustained appends into one tenant: concurrent `AppendBatch` callers for a fixed time, then the
//!    time until the sequencer has logged and checkpointed all of it (end-to-end entries/s);
//! 2. the same spread over many tenants (created if missing);
//! 3. verification: server-side `VerifyLog`, the offline verifier on an export of the tenant, and
//!    the offline verifier on a generated, locally signed export of a million entries;
//! 4. proof latency: `GetEntry` (entry + inclusion proof) and `GetConsistencyProof`.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use audit_svc::domain::entry::Entry;
use audit_svc::domain::merkle::{self, Hash};
use audit_svc::domain::note;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kit::Identity;
use kit::tls::CertStore;
use proto::audit::v1 as pb;
use proto::audit::v1::audit_ingest_service_client::AuditIngestServiceClient;
use proto::audit::v1::audit_log_service_client::AuditLogServiceClient;
use serde_json::json;

use crate::ops::Endpoints;

#[derive(Debug, Clone)]
pub struct Options {
    pub endpoints: Endpoints,
    pub tenant: String,
    pub tenants: usize,
    pub concurrency: usize,
    pub batch: usize,
    pub duration: Duration,
    pub verify_entries: u64,
}

type Ingest = AuditIngestServiceClient<kit::client::Channel>;
type Log = AuditLogServiceClient<kit::client::Channel>;

fn req<T>(tenant: &str, msg: T) -> tonic::Request<T> {
    kit::client::with_context(tonic::Request::new(msg), Some(tenant), None, None)
}

fn status(s: tonic::Status) -> anyhow::Error {
    anyhow!("audit: {} ({:?}: {})", kit::ApiError::from_status(&s), s.code(), s.message())
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

/// A request as the gateway records it.
fn event(i: u64) -> pb::Event {
    pb::Event {
        event_id: uuid::Uuid::now_v7().to_string(),
        occurred_at: None,
        actor: format!("user:bench-{}", i % 50),
        action: "gateway.request".into(),
        resource: "route:PUT /v1/secrets/{*path}".into(),
        outcome: "success".into(),
        request_id: uuid::Uuid::new_v4().to_string(),
        trace_id: String::new(),
        details_json: json!({ "method": "PUT", "route": "/v1/secrets/{*path}", "status": 200, "description": "store a secret version" })
            .to_string(),
        personal: HashMap::new(),
    }
}

async fn log_size(log: &mut Log, tenant: &str) -> anyhow::Result<u64> {
    match log.get_latest_checkpoint(req(tenant, pb::GetLatestCheckpointRequest {})).await {
        Ok(c) => Ok(c.into_inner().tree_size),
        Err(s) if s.code() == tonic::Code::FailedPrecondition => Ok(0),
        Err(s) => Err(status(s)),
    }
}

/// Waits until every tenant's latest checkpoint covers `targets`; returns when the last one did.
async fn wait_checkpointed(log: &mut Log, targets: &HashMap<String, u64>) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut pending: Vec<(&String, &u64)> = targets.iter().collect();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for (t, want) in pending {
            if log_size(log, t).await? < *want {
                still.push((t, want));
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            return Err(anyhow!("the sequencer did not catch up within 300 s"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Instant::now())
}

struct Appended {
    events: u64,
    calls: Vec<Duration>,
    errors: u64,
    elapsed: Duration,
}

/// `concurrency` callers append batches round-robin over `tenants` for `duration`.
async fn append_phase(opts: &Options, channels: &[kit::client::Channel], tenants: &[String]) -> Appended {
    let started = Instant::now();
    let deadline = started + opts.duration;
    let counter = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..opts.concurrency {
        let mut client: Ingest = AuditIngestServiceClient::new(channels[w % channels.len()].clone());
        let tenant = tenants[w % tenants.len()].clone();
        let (batch, counter) = (opts.batch, counter.clone());
        workers.push(tokio::spawn(async move {
            let (mut calls, mut events, mut errors) = (Vec::new(), 0u64, 0u64);
            while Instant::now() < deadline {
                let base = counter.fetch_add(batch as u64, Ordering::Relaxed);
                let msg = pb::AppendBatchRequest {
                    events: (0..batch as u64).map(|i| event(base + i)).collect(),
                    request_id: String::new(),
                };
                let t = Instant::now();
                match client.append_batch(req(&tenant, msg)).await {
                    Ok(r) => {
                        calls.push(t.elapsed());
                        events += u64::from(r.into_inner().accepted);
                    }
                    Err(_) => errors += 1,
                }
            }
            (calls, events, errors)
        }));
    }
    let mut out = Appended { events: 0, calls: Vec::new(), errors: 0, elapsed: Duration::ZERO };
    for w in workers {
        if let Ok((calls, events, errors)) = w.await {
            out.calls.extend(calls);
            out.events += events;
            out.errors += errors;
        }
    }
    out.elapsed = started.elapsed();
    out.calls.sort_unstable();
    out
}

async fn sustained(
    name: &str,
    opts: &Options,
    channels: &[kit::client::Channel],
    log: &mut Log,
    tenants: &[String],
) -> anyhow::Result<serde_json::Value> {
    // Let a previous phase's backlog finish first.
    let mut before = HashMap::new();
    for t in tenants {
        before.insert(t.clone(), log_size(log, t).await?);
    }
    let started = Instant::now();
    let appended = append_phase(opts, channels, tenants).await;
    // Each tenant's share: what its callers got accepted (callers are assigned round-robin).
    let mut targets = HashMap::new();
    let mut total_before = 0;
    for t in tenants {
        total_before += before[t];
    }
    // The log sizes to wait for: the sum grows by exactly `appended.events`.
    let done = {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let mut total = 0;
            for t in tenants {
                total += log_size(log, t).await?;
            }
            if total >= total_before + appended.events {
                break Instant::now();
            }
            if Instant::now() > deadline {
                return Err(anyhow!("the sequencer did not catch up within 300 s"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    for t in tenants {
        targets.insert(t.clone(), log_size(log, t).await?);
    }
    wait_checkpointed(log, &targets).await?;
    let end_to_end = done.duration_since(started);
    let ingest_rate = appended.events as f64 / appended.elapsed.as_secs_f64();
    let rate = appended.events as f64 / end_to_end.as_secs_f64();
    println!(
        "{name:<34} {rate:>9.0} entries/s sequenced+checkpointed   (AppendBatch of {}: {ingest_rate:.0} events/s accepted, p50 {:.2} ms, p99 {:.2} ms; {} events, {} errors, {:.1} s to the last checkpoint)",
        opts.batch,
        pct(&appended.calls, 0.5),
        pct(&appended.calls, 0.99),
        appended.events,
        appended.errors,
        end_to_end.as_secs_f64()
    );
    Ok(json!({
        "phase": name, "tenants": tenants.len(), "entries": appended.events, "errors": appended.errors,
        "sequenced_per_sec": rate.round(), "accepted_per_sec": ingest_rate.round(),
        "append_batch_p50_ms": pct(&appended.calls, 0.5), "append_batch_p99_ms": pct(&appended.calls, 0.99),
        "seconds_to_last_checkpoint": end_to_end.as_secs_f64(),
    }))
}

/// Writes a synthetic export of `n` entries, signed with a throw-away key; returns its verifier key.
fn synthetic_export(path: &std::path::Path, n: u64) -> anyhow::Result<String> {
    use ed25519_dalek::Signer;
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut chain: Hash = [0u8; 32];
    let mut leaves = Vec::with_capacity(n as usize);
    let occurred = chrono::Utc::now();
    for seq in 0..n {
        let e = Entry {
            seq,
            event_id: uuid::Uuid::now_v7(),
            occurred_at: occurred,
            service: "gateway".into(),
            actor: format!("user:bench-{}", seq % 50),
            action: "gateway.request".into(),
            resource: "route:PUT /v1/secrets/{*path}".into(),
            outcome: "success".into(),
            request_id: Some(uuid::Uuid::new_v4().to_string()),
            trace_id: None,
            details: json!({ "method": "PUT", "route": "/v1/secrets/{*path}", "status": 200,
                "client_ip": "hmac-sha256:1:3q2-7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" }),
        };
        let (canonical, leaf, link) = e.seal(&chain);
        chain = link;
        writeln!(
            file,
            "{}",
            json!({ "seq": seq, "canonical": B64.encode(&canonical), "leaf_hash": B64.encode(leaf), "chain_hash": B64.encode(link) })
        )?;
        leaves.push(leaf);
    }
    let mut level = leaves;
    while level.len() > 1 {
        level = level.chunks(2).map(|p| if p.len() == 2 { merkle::node_hash(&p[0], &p[1]) } else { p[0] }).collect();
    }
    let root = level.first().copied().unwrap_or_else(merkle::empty_root);
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let public = key.verifying_key().to_bytes();
    let name = "strongroom.audit/bench";
    let body = note::body(name, n, &root);
    let sig = key.sign(body.as_bytes());
    writeln!(file, "{}", json!({ "checkpoint": note::signed_note(&body, name, &public, &sig.to_bytes()) }))?;
    file.flush()?;
    Ok(note::verifier_key(name, &public))
}

fn offline_verify(path: &std::path::Path, key: &str) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    match crate::audit::verify(path, key)? {
        crate::audit::Verdict::Valid { entries } => Ok((entries, started.elapsed())),
        crate::audit::Verdict::Mismatch { seq, reason } => Err(anyhow!("verification failed at {seq}: {reason}")),
    }
}

async fn proof_latency(log: &Log, tenant: &str, size: u64, duration: Duration) -> (Vec<Duration>, Vec<Duration>) {
    let deadline = Instant::now() + duration;
    let mut workers = Vec::new();
    for w in 0..8u64 {
        let (mut log, tenant) = (log.clone(), tenant.to_owned());
        workers.push(tokio::spawn(async move {
            let (mut inc, mut con) = (Vec::new(), Vec::new());
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ w;
            while Instant::now() < deadline {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let t = Instant::now();
                if log.get_entry(req(&tenant, pb::GetEntryRequest { seq: x % size })).await.is_ok() {
                    inc.push(t.elapsed());
                }
                let from = 1 + (x >> 20) % size;
                let t = Instant::now();
                let msg = pb::GetConsistencyProofRequest { from_size: from, to_size: size };
                if log.get_consistency_proof(req(&tenant, msg)).await.is_ok() {
                    con.push(t.elapsed());
                }
            }
            (inc, con)
        }));
    }
    let (mut inc, mut con) = (Vec::new(), Vec::new());
    for w in workers {
        if let Ok((i, c)) = w.await {
            inc.extend(i);
            con.extend(c);
        }
    }
    inc.sort_unstable();
    con.sort_unstable();
    (inc, con)
}

pub async fn run(opts: &Options) -> anyhow::Result<()> {
    let certs =
        CertStore::load(&opts.endpoints.tls).context("operator certificate (is `strongroom dev up` running?)")?;
    let channels: Vec<_> = (0..4)
        .map(|_| {
            kit::client::channel(&certs, &opts.endpoints.audit, &Identity::new("audit")?, Duration::from_secs(60))
                .map_err(|e| anyhow!("{e}"))
        })
        .collect::<Result<_, _>>()?;
    let mut log: Log = AuditLogServiceClient::new(channels[0].clone());
    println!(
        "strongroom bench audit: {} callers × AppendBatch of {} events, {} s per append phase, tenant {} and {} bench tenants; checkpoints on",
        opts.concurrency,
        opts.batch,
        opts.duration.as_secs(),
        opts.tenant,
        opts.tenants
    );
    let mut report = Vec::new();
    report.push(sustained("appends, one tenant", opts, &channels, &mut log, std::slice::from_ref(&opts.tenant)).await?);

    let mut many = Vec::new();
    for i in 1..=opts.tenants {
        let slug = format!("bench_{i:02}");
        crate::ops::create_tenant(&opts.endpoints, &slug, None)
            .await
            .with_context(|| format!("create tenant {slug}"))?;
        many.push(slug);
    }
    if !many.is_empty() {
        let name = format!("appends, {} tenants", many.len());
        report.push(sustained(&name, opts, &channels, &mut log, &many).await?);
    }

    // Verification.
    let size = log_size(&mut log, &opts.tenant).await?;
    let started = Instant::now();
    let verified = log.verify_log(req(&opts.tenant, pb::VerifyLogRequest {})).await.map_err(status)?.into_inner();
    let took = started.elapsed();
    if !verified.ok {
        return Err(anyhow!("VerifyLog found a mismatch at {}: {}", verified.first_mismatch_seq, verified.mismatch));
    }
    let rate = verified.checked as f64 / took.as_secs_f64();
    println!(
        "{:<34} {rate:>9.0} entries/s   ({} entries in {:.2} s)",
        "VerifyLog (server-side)",
        verified.checked,
        took.as_secs_f64()
    );
    report.push(json!({ "phase": "VerifyLog", "entries": verified.checked, "seconds": took.as_secs_f64(), "entries_per_sec": rate.round() }));

    let dir = tempfile::tempdir()?;
    let export = dir.path().join("export.jsonl");
    let started = Instant::now();
    let exported = crate::audit::export(&opts.endpoints, &opts.tenant, &export).await?;
    let export_took = started.elapsed();
    let key = log
        .get_verifier_key(req(&opts.tenant, pb::GetVerifierKeyRequest {}))
        .await
        .map_err(status)?
        .into_inner()
        .verifier_key;
    let (n, took) = tokio::task::spawn_blocking({
        let export = export.clone();
        move || offline_verify(&export, &key)
    })
    .await??;
    let rate = n as f64 / took.as_secs_f64();
    println!(
        "{:<34} {rate:>9.0} entries/s   ({n} entries in {:.2} s; the export streamed {exported} entries in {:.2} s)",
        "offline verify (export of tenant)",
        took.as_secs_f64(),
        export_took.as_secs_f64()
    );
    report.push(json!({ "phase": "offline verify, tenant export", "entries": n, "seconds": took.as_secs_f64(), "entries_per_sec": rate.round(), "export_seconds": export_took.as_secs_f64() }));

    if opts.verify_entries > 0 {
        let synthetic = dir.path().join("synthetic.jsonl");
        let count = opts.verify_entries;
        let (n, took, bytes) = tokio::task::spawn_blocking(move || {
            let key = synthetic_export(&synthetic, count)?;
            let bytes = std::fs::metadata(&synthetic)?.len();
            let (n, took) = offline_verify(&synthetic, &key)?;
            Ok::<_, anyhow::Error>((n, took, bytes))
        })
        .await??;
        let rate = n as f64 / took.as_secs_f64();
        println!(
            "{:<34} {rate:>9.0} entries/s   ({n} entries, {:.0} MB, in {:.2} s)",
            "offline verify (generated export)",
            bytes as f64 / 1e6,
            took.as_secs_f64()
        );
        report.push(json!({ "phase": "offline verify, generated export", "entries": n, "bytes": bytes, "seconds": took.as_secs_f64(), "entries_per_sec": rate.round() }));
    }

    if size > 1 {
        let (inc, con) = proof_latency(&log, &opts.tenant, size, Duration::from_secs(5)).await;
        println!(
            "{:<34} p50 {:.2} ms, p99 {:.2} ms ({} calls, 8 callers, tree size {size})",
            "GetEntry + inclusion proof",
            pct(&inc, 0.5),
            pct(&inc, 0.99),
            inc.len()
        );
        println!(
            "{:<34} p50 {:.2} ms, p99 {:.2} ms ({} calls)",
            "GetConsistencyProof",
            pct(&con, 0.5),
            pct(&con, 0.99),
            con.len()
        );
        report.push(json!({ "phase": "proofs", "tree_size": size,
            "inclusion_p50_ms": pct(&inc, 0.5), "inclusion_p99_ms": pct(&inc, 0.99), "inclusion_calls": inc.len(),
            "consistency_p50_ms": pct(&con, 0.5), "consistency_p99_ms": pct(&con, 0.99), "consistency_calls": con.len() }));
    }
    println!(
        "{}",
        json!({ "bench": "audit", "concurrency": opts.concurrency, "batch": opts.batch, "results": report })
    );
    Ok(())
}
