//! `strongroom ledger verify` (the receipt chain of a tenant, recomputed by ledger-svc from the
//! stored transfers, signatures checked against vault-svc's public key; or offline, from the
//! ledger part of a terminated tenant's export bundle, [`verify_bundle`]) and `strongroom bench
//! ledger`: transfers/s and latency over gRPC and over the gateway, single transfers from 64
//! clients and 8,190-transfer batches, uniform and hot-account, next to a `pgbench` simple-update
//! ceiling measured on the same PostgreSQL in the same run. Traffic goes only to the endpoints of
//! a running `strongroom dev up`; every phase is bounded in time.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use kit::Identity;
use kit::config::TlsConfig;
use kit::tls::CertStore;
use proto::ledger::v1 as pb;
use proto::ledger::v1::ledger_service_client::LedgerServiceClient;
use serde_json::json;
use uuid::Uuid;

use crate::ops::Endpoints;

type Client = LedgerServiceClient<kit::client::Channel>;

fn status(s: tonic::Status) -> anyhow::Error {
    anyhow!("ledger: {}", kit::ApiError::from_status(&s))
}

/// Verifies a tenant's receipts as the operator; an error names the first bad receipt.
pub async fn verify(endpoints: &Endpoints, tenant: &str, from_seq: u64) -> anyhow::Result<()> {
    let certs = CertStore::load(&endpoints.tls).context("operator certificate")?;
    let channel = kit::client::channel(&certs, &endpoints.ledger, &Identity::new("ledger")?, Duration::from_secs(300))?;
    let v = LedgerServiceClient::new(channel)
        .verify_receipts(kit::client::with_context(
            tonic::Request::new(pb::VerifyReceiptsRequest { from_seq }),
            Some(tenant),
            None,
            None,
        ))
        .await
        .map_err(status)?
        .into_inner();
    if !v.ok {
        bail!("receipt {} does not verify: {} ({} receipts checked before it)", v.first_bad_seq, v.problem, v.checked);
    }
    println!(
        "valid: {} receipts recomputed from the stored transfers; chain head {}; {} newest not yet signed",
        v.checked,
        hex::encode(&v.head_hash),
        v.unsigned
    );
    Ok(())
}

/// What [`verify_bundle`] verified of a bundle's ledger part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleReport {
    /// The tenant the manifest names.
    pub tenant: String,
    pub files: usize,
    pub ledgers: u64,
    pub accounts: u64,
    pub transfers: u64,
    pub resolutions: u64,
    /// Receipts recomputed from the transfers and resolutions, chain and signatures checked.
    pub receipts: u64,
    /// The newest receipts, left unsigned when the tenant was terminated.
    pub unsigned: u64,
    pub head_hash: Vec<u8>,
    /// The versions of the receipt signing key the bundle holds.
    pub key_versions: Vec<i32>,
}

impl std::fmt::Display for BundleReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "valid: {} receipts of tenant {} recomputed from {} transfers and {} resolutions ({} files); \
             {} accounts balance with their transfers and every ledger's debits equal its credits; chain head {}; \
             {} newest not signed",
            self.receipts,
            self.tenant,
            self.transfers,
            self.resolutions,
            self.files,
            self.accounts,
            hex::encode(&self.head_hash),
            self.unsigned
        )
    }
}

/// Verifies the ledger part of a terminated tenant's export bundle offline, in `dir` as fetched
/// (`manifest.json`, `ledger/<seq>-<kind>.jsonl.age`): each file's SHA-256 and line count against
/// the manifest, each file decrypted with `identity`, then every receipt recomputed from the
/// transfers and checked as `VerifyReceipts` checks the stored chain (signatures with the
/// bundle's receipt keys), and every account's balances replayed from its transfers
/// (`ledger_svc::export::verify`). The manifest's own signature is checked by
/// [`crate::audit::verify_bundle`], which should run first.
pub fn verify_bundle(dir: &Path, identity: &age::x25519::Identity) -> anyhow::Result<BundleReport> {
    use ledger_svc::export::{PART, verify::PartVerifier};

    // Canonical and of the bundle format; its signature is checked by `audit::verify_bundle`.
    let (_, manifest) = crate::audit::bundle_manifest(dir)?;
    let mut files: Vec<&kit::export::FileEntry> = manifest.files.iter().filter(|f| f.part == PART).collect();
    files.sort_by_key(|f| f.seq);
    if files.is_empty() {
        bail!("the manifest lists no file of the {PART} part");
    }
    let mut part = PartVerifier::new();
    for (expected, file) in (1..).zip(&files) {
        if file.seq != expected {
            bail!("{PART} file {expected} is missing from the manifest");
        }
        // The manifest names a file, never a path: nothing outside the bundle is read.
        let safe = !file.name.is_empty()
            && !file.name.starts_with('.')
            && file.name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !safe {
            bail!("the manifest names a file outside the bundle: {PART}/{}", file.name);
        }
        let path = dir.join(PART).join(&file.name);
        let sealed = std::fs::read(&path).with_context(|| format!("{}", path.display()))?;
        if kit::export::sha256_hex(&sealed) != file.sha256 {
            bail!("{PART}/{} does not match its SHA-256 in the manifest", file.name);
        }
        let body = kit::export::open(identity, &sealed).map_err(|e| anyhow!("{PART}/{}: {e}", file.name))?;
        let rows = part.file(&file.name, &body)?;
        if i64::try_from(rows).ok() != Some(file.rows) {
            bail!("{PART}/{} holds {rows} lines, the manifest says {}", file.name, file.rows);
        }
    }
    let v = part.finish()?;
    Ok(BundleReport {
        tenant: manifest.slug,
        files: v.files,
        ledgers: v.ledgers,
        accounts: v.accounts,
        transfers: v.transfers,
        resolutions: v.resolutions,
        receipts: v.receipts,
        unsigned: v.unsigned,
        head_hash: v.head_hash,
        key_versions: v.key_versions,
    })
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub dev_dir: std::path::PathBuf,
    pub tenant: String,
    pub concurrency: usize,
    pub duration: Duration,
    pub accounts: usize,
    pub phases: Vec<BenchPhase>,
}

/// The phases `strongroom bench ledger --phases` can pick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchPhase {
    /// Single transfers over mTLS gRPC.
    Grpc,
    /// Single transfers over the gateway (HTTPS, JSON).
    Gateway,
    /// 8,190-transfer batches over gRPC.
    Batches,
    /// The `pgbench -N` ceiling.
    Pgbench,
}

/// Waits (at most a minute) until audit-svc has sequenced every audit record the previous phase
/// left in the tenant's outbox, so that no phase pays for the one before it.
async fn audit_drained(admin_url: &str, tenant: &str) -> anyhow::Result<()> {
    let slug = kit::TenantSlug::parse(tenant).map_err(|e| anyhow!("{e}"))?;
    let pool = sqlx::PgPool::connect(admin_url).await.context("dev database")?;
    let sql = format!("SELECT count(*) FROM {}.audit_outbox", slug.schema());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (left,): (i64,) = sqlx::query_as(&sql).fetch_one(&pool).await.context("audit outbox")?;
        if left == 0 || std::time::Instant::now() > deadline {
            if left > 0 {
                println!("(audit outbox still holds {left} records after a minute; measuring anyway)");
            }
            pool.close().await;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

struct Phase {
    name: String,
    transfers: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    errors: u64,
}

impl Phase {
    fn report(&mut self) -> serde_json::Value {
        self.latencies.sort_unstable();
        let pct = |p: f64| {
            if self.latencies.is_empty() {
                return 0.0;
            }
            let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
            self.latencies[i].as_secs_f64() * 1000.0
        };
        let rate = self.transfers as f64 / self.elapsed.as_secs_f64();
        println!(
            "{:<44} {:>9.0} transfers/s   p50 {:>8.2} ms   p99 {:>8.2} ms   ({} transfers, {} errors, {:.1} s)",
            self.name,
            rate,
            pct(0.50),
            pct(0.99),
            self.transfers,
            self.errors,
            self.elapsed.as_secs_f64()
        );
        json!({ "phase": self.name, "transfers_per_sec": rate.round(), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
                "transfers": self.transfers, "errors": self.errors })
    }
}

fn tls(pki: &Path, name: &str) -> TlsConfig {
    TlsConfig {
        ca: pki.join("ca.pem"),
        cert: pki.join(format!("{name}.pem")),
        key: pki.join(format!("{name}-key.pem")),
        reload_interval_ms: 60_000,
    }
}

/// Which accounts a transfer moves money between.
#[derive(Clone, Copy)]
enum Workload {
    Uniform,
    /// One account on one side of every transfer.
    Hot,
}

#[derive(Clone)]
struct Accounts {
    ids: Arc<Vec<String>>,
    hot: String,
    counter: Arc<AtomicU64>,
}

impl Accounts {
    fn pick(&self, w: Workload) -> (String, String) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // A cheap spread over the accounts (splitmix64 of a counter); no randomness needed.
        let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let len = self.ids.len() as u64;
        let a = (z % len) as usize;
        let b = ((z / len) % (len - 1)) as usize;
        let b = if b >= a { b + 1 } else { b };
        match w {
            Workload::Uniform => (self.ids[a].clone(), self.ids[b].clone()),
            Workload::Hot if n.is_multiple_of(2) => (self.ids[a].clone(), self.hot.clone()),
            Workload::Hot => (self.hot.clone(), self.ids[a].clone()),
        }
    }

    fn transfer(&self, w: Workload) -> pb::Transfer {
        let (dr, cr) = self.pick(w);
        pb::Transfer {
            id: Uuid::now_v7().to_string(),
            debit_account_id: dr,
            credit_account_id: cr,
            amount: "1".into(),
            ledger: "BENCH".into(),
            code: 1,
            ..Default::default()
        }
    }
}

fn req<T>(tenant: &str, token: &str, msg: T) -> tonic::Request<T> {
    kit::client::with_context(tonic::Request::new(msg), Some(tenant), None, Some(token))
}

/// A token for the bench, minted with a key published in the development database (`dev up`
/// only: the admin URL comes from the file it keeps).
async fn bench_token(opts: &BenchOptions) -> anyhow::Result<(String, String)> {
    let admin_url = crate::migrate::dev_admin_url(&opts.dev_dir)?;
    let pool = sqlx::PgPool::connect(&admin_url).await.context("dev database")?;
    let (tenant_id,): (Uuid,) = sqlx::query_as("SELECT id FROM control.tenants WHERE slug = $1")
        .bind(&opts.tenant)
        .fetch_one(&pool)
        .await
        .context("tenant")?;
    let signer = kit::testing::TestSigner::generate();
    sqlx::query("INSERT INTO control.signing_keys (kid, alg, public_jwk, expires_at) VALUES ($1, 'EdDSA', $2, now() + interval '1 hour')")
        .bind(&signer.kid)
        .bind(signer.jwk())
        .execute(&pool)
        .await
        .context("publish bench key")?;
    pool.close().await;
    let mut claims = kit::testing::TestSigner::claims(tenant_id, "bench");
    claims["exp"] = json!(chrono::Utc::now().timestamp() + 1800);
    claims["permissions"] = json!([
        "ledger.ledgers.create",
        "ledger.accounts.create",
        "ledger.accounts.read",
        "ledger.transfers.create",
        "ledger.receipts.verify"
    ]);
    Ok((signer.sign(&claims), admin_url))
}

async fn setup(client: &mut Client, opts: &BenchOptions, token: &str) -> anyhow::Result<Accounts> {
    let ledger = pb::Ledger { code: "BENCH".into(), scale: 2, description: "benchmark".into() };
    client
        .create_ledger(req(
            &opts.tenant,
            token,
            pb::CreateLedgerRequest { ledger: Some(ledger), request_id: String::new() },
        ))
        .await
        .map_err(status)?;
    let mut ids = Vec::new();
    for _ in 0..=opts.accounts {
        let id = Uuid::new_v4().to_string();
        let account = pb::Account { id: id.clone(), ledger: "BENCH".into(), code: 1, ..Default::default() };
        client
            .create_account(req(
                &opts.tenant,
                token,
                pb::CreateAccountRequest { account: Some(account), request_id: String::new() },
            ))
            .await
            .map_err(status)?;
        ids.push(id);
    }
    let hot = ids.pop().ok_or_else(|| anyhow!("no accounts"))?;
    Ok(Accounts { ids: Arc::new(ids), hot, counter: Arc::default() })
}

/// Runs `op` from `concurrency` workers until the phase's time is up; `op` returns how many
/// transfers it applied.
async fn run<F, Fut>(name: String, concurrency: usize, duration: Duration, op: F) -> Phase
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<u64>> + Send,
{
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let op = op.clone();
        workers.push(tokio::spawn(async move {
            let (mut lat, mut n, mut errors) = (Vec::new(), 0u64, 0u64);
            while Instant::now() < deadline {
                let t = Instant::now();
                match op(w).await {
                    Ok(k) => {
                        lat.push(t.elapsed());
                        n += k;
                    }
                    Err(e) => {
                        if errors == 0 {
                            eprintln!("  first error: {e:#}");
                        }
                        errors += 1;
                    }
                }
            }
            (lat, n, errors)
        }));
    }
    let mut phase = Phase { name, transfers: 0, elapsed: Duration::ZERO, latencies: Vec::new(), errors: 0 };
    for w in workers {
        if let Ok((lat, n, errors)) = w.await {
            phase.latencies.extend(lat);
            phase.transfers += n;
            phase.errors += errors;
        }
    }
    phase.elapsed = started.elapsed();
    phase
}

/// `pgbench` simple-update (`-N`) with the same number of clients, on a scratch database of the
/// same server: what PostgreSQL itself commits per second on this machine.
fn pgbench(admin_url: &str, concurrency: usize, duration: Duration) -> anyhow::Result<Phase> {
    let url = url::Url::parse(admin_url)?;
    let db = "strongroom_pgbench";
    let mut scratch = url.clone();
    scratch.set_path(&format!("/{db}"));
    let psql = |sql: &str| std::process::Command::new("psql").arg(url.as_str()).args(["-qAt", "-c", sql]).output();
    psql(&format!("DROP DATABASE IF EXISTS {db}")).context("psql")?;
    psql(&format!("CREATE DATABASE {db}")).context("psql")?;
    let init = std::process::Command::new("pgbench").args(["-q", "-i", "-s", "10"]).arg(scratch.as_str()).output()?;
    if !init.status.success() {
        bail!("pgbench -i: {}", String::from_utf8_lossy(&init.stderr));
    }
    let out = std::process::Command::new("pgbench")
        .args(["-N", "-c", &concurrency.to_string(), "-j", "2", "-T", &duration.as_secs().max(1).to_string(), "-r"])
        .arg(scratch.as_str())
        .output()?;
    let _ = psql(&format!("DROP DATABASE IF EXISTS {db}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("pgbench: {}", String::from_utf8_lossy(&out.stderr));
    }
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps ="))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| anyhow!("cannot read tps from pgbench: {text}"))?;
    let latency = text
        .lines()
        .find(|l| l.starts_with("latency average"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    let transfers = (tps * duration.as_secs_f64()) as u64;
    let mut phase = Phase {
        name: format!("pgbench simple-update ({concurrency} clients)"),
        transfers,
        elapsed: duration,
        latencies: vec![Duration::from_secs_f64(latency / 1000.0)],
        errors: 0,
    };
    phase.name.push_str(" [tx/s; avg latency]");
    Ok(phase)
}

pub async fn bench(opts: &BenchOptions) -> anyhow::Result<()> {
    let endpoints: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(opts.dev_dir.join("endpoints.json"))
            .context("endpoints.json: is `strongroom dev up` running?")?,
    )?;
    let ledger_url = endpoints["ledger"].as_str().ok_or_else(|| anyhow!("no ledger endpoint"))?.to_owned();
    let gateway = endpoints["gateway"].as_str().ok_or_else(|| anyhow!("no gateway endpoint"))?.to_owned();
    let pki = opts.dev_dir.join("pki");
    let ca = std::fs::read(pki.join("ca.pem"))?;
    // As the gateway would call it: the gateway's certificate and an end user's token.
    let certs = CertStore::load(&tls(&pki, "gateway"))?;
    let (token, admin_url) = bench_token(opts).await?;
    let channels: Vec<_> = (0..4)
        .map(|_| {
            kit::client::channel(&certs, &ledger_url, &Identity::new("ledger")?, Duration::from_secs(60))
                .map_err(|e| anyhow!("{e}"))
        })
        .collect::<Result<_, _>>()?;
    let client = |i: usize| {
        LedgerServiceClient::new(channels[i % channels.len()].clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    };
    let accounts = setup(&mut client(0), opts, &token).await?;
    println!(
        "strongroom bench ledger: {} clients, {} accounts (+1 hot), {} s per phase, tenant {}",
        opts.concurrency,
        opts.accounts,
        opts.duration.as_secs(),
        opts.tenant
    );
    let mut report = Vec::new();
    let token = Arc::new(token);
    let tenant = Arc::new(opts.tenant.clone());
    let wanted = |p: BenchPhase| opts.phases.contains(&p);
    let workloads = [("uniform", Workload::Uniform), ("hot account", Workload::Hot)];
    for (label, w) in workloads.into_iter().filter(|_| wanted(BenchPhase::Grpc)) {
        audit_drained(&admin_url, &opts.tenant).await?;
        let (accounts, token, tenant) = (accounts.clone(), token.clone(), tenant.clone());
        let clients: Arc<Vec<Client>> = Arc::new((0..opts.concurrency).map(client).collect());
        let mut phase = run(format!("single, gRPC, {label}"), opts.concurrency, opts.duration, move |i| {
            let (accounts, token, tenant, clients) = (accounts.clone(), token.clone(), tenant.clone(), clients.clone());
            async move {
                let msg = pb::CreateTransferRequest { transfer: Some(accounts.transfer(w)), request_id: String::new() };
                clients[i].clone().create_transfer(req(&tenant, &token, msg)).await.map_err(status)?;
                Ok(1)
            }
        })
        .await;
        report.push(phase.report());
    }
    for (label, w) in workloads.into_iter().filter(|_| wanted(BenchPhase::Gateway)) {
        audit_drained(&admin_url, &opts.tenant).await?;
        let (accounts, token, tenant) = (accounts.clone(), token.clone(), tenant.clone());
        let mut conns = Vec::new();
        for _ in 0..opts.concurrency {
            conns.push(Arc::new(tokio::sync::Mutex::new(crate::bench::KeptAlive::connect(&gateway, &ca).await?)));
        }
        let conns = Arc::new(conns);
        let mut phase = run(format!("single, gateway HTTPS, {label}"), opts.concurrency, opts.duration, move |i| {
            let (accounts, token, tenant, conns) = (accounts.clone(), token.clone(), tenant.clone(), conns.clone());
            async move {
                let t = accounts.transfer(w);
                let body = serde_json::to_vec(&json!({
                    "id": t.id, "debit_account_id": t.debit_account_id, "credit_account_id": t.credit_account_id,
                    "amount": t.amount, "ledger": t.ledger, "code": t.code,
                }))?;
                let bearer = format!("Bearer {token}");
                let headers = [
                    ("authorization", bearer.as_str()),
                    ("x-strongroom-tenant", tenant.as_str()),
                    ("content-type", "application/json"),
                ];
                let status =
                    conns[i].lock().await.request(http::Method::POST, "/v1/ledger/transfers", &headers, body).await?;
                if status != http::StatusCode::OK {
                    bail!("gateway answered {status}");
                }
                Ok(1)
            }
        })
        .await;
        report.push(phase.report());
    }
    let batchers = 4.min(opts.concurrency);
    for (label, w) in workloads.into_iter().filter(|_| wanted(BenchPhase::Batches)) {
        audit_drained(&admin_url, &opts.tenant).await?;
        let (accounts, token, tenant) = (accounts.clone(), token.clone(), tenant.clone());
        let clients: Arc<Vec<Client>> = Arc::new((0..batchers).map(client).collect());
        let mut phase =
            run(format!("batches of 8190, gRPC, {label} ({batchers} clients)"), batchers, opts.duration, move |i| {
                let (accounts, token, tenant, clients) =
                    (accounts.clone(), token.clone(), tenant.clone(), clients.clone());
                async move {
                    let transfers: Vec<pb::Transfer> = (0..8190).map(|_| accounts.transfer(w)).collect();
                    let msg = pb::CreateTransfersRequest { transfers, request_id: String::new() };
                    let r = clients[i]
                        .clone()
                        .create_transfers(req(&tenant, &token, msg))
                        .await
                        .map_err(status)?
                        .into_inner();
                    let created = r.results.iter().filter(|r| r.outcome == pb::TransferOutcome::Created as i32).count();
                    if created != r.results.len() {
                        bail!("{} of {} transfers failed", r.results.len() - created, r.results.len());
                    }
                    Ok(created as u64)
                }
            })
            .await;
        report.push(phase.report());
    }
    if wanted(BenchPhase::Pgbench) {
        audit_drained(&admin_url, &opts.tenant).await?;
        match tokio::task::spawn_blocking({
            let (url, c, d) = (admin_url.clone(), opts.concurrency, opts.duration);
            move || pgbench(&url, c, d)
        })
        .await?
        {
            Ok(mut phase) => report.push(phase.report()),
            Err(e) => println!("pgbench ceiling: skipped ({e:#})"),
        }
    }
    println!("{}", json!({ "bench": "ledger", "concurrency": opts.concurrency, "results": report }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ed25519_dalek::{Signer, SigningKey};
    use ledger_svc::domain::receipt::{self, Receipt};
    use ledger_svc::domain::{Account, Balances, Transfer, TransferState};
    use ledger_svc::export::Kind;
    use ledger_svc::export::format::{AccountLine, HeadLine, KeyLine, LedgerLine, ReceiptLine, TransferLine};
    use ledger_svc::store::ReceiptRecord;

    use super::*;

    fn jsonl<T: serde::Serialize>(rows: &[T]) -> Vec<u8> {
        rows.iter().flat_map(|r| [serde_json::to_vec(r).expect("json"), b"\n".to_vec()].concat()).collect()
    }

    fn account(n: u128, balances: Balances) -> AccountLine {
        AccountLine::from(&Account {
            id: Uuid::from_u128(n),
            ledger: "USD".into(),
            code: 1,
            owner: String::new(),
            flags: 0,
            metadata: BTreeMap::new(),
            balances,
            ts: 1,
        })
    }

    /// Writes a bundle whose ledger part holds one transfer of 250 from account 1 to account 2,
    /// under one receipt signed with `key`; `stored` is the transfer as the bundle holds it.
    fn write_bundle(dir: &Path, identity: &age::x25519::Identity, key: &SigningKey, stored: impl Fn(&mut Transfer)) {
        let mut transfer = Transfer {
            id: Uuid::from_u128(10),
            debit_account_id: Uuid::from_u128(1),
            credit_account_id: Uuid::from_u128(2),
            amount: 250,
            pending_id: None,
            timeout_seconds: 0,
            ledger: "USD".into(),
            code: 1,
            flags: 0,
            metadata: BTreeMap::new(),
            ts: 1_700_000_000_000_000_000,
            state: TransferState::Posted,
            expires_at: None,
            receipt_seq: 1,
        };
        let content = receipt::content_hash(std::slice::from_ref(&transfer), &[]);
        let hash = receipt::chain_hash(1, &receipt::GENESIS, &content);
        let signature = key.sign(&receipt::signed_message(&hash)).to_bytes().to_vec();
        stored(&mut transfer);
        let record = ReceiptRecord {
            receipt: Receipt {
                seq: 1,
                prev_hash: receipt::GENESIS.to_vec(),
                content_hash: content,
                hash: hash.clone(),
                entries: 1,
                signature: Some(signature),
                key_version: Some(1),
            },
            first_ts: transfer.ts,
            last_ts: transfer.ts,
            created_at: chrono::Utc::now(),
        };
        let debit = Balances { debits_posted: 250, ..Balances::default() };
        let credit = Balances { credits_posted: 250, ..Balances::default() };
        let ledger =
            LedgerLine { code: "USD".into(), scale: 2, description: String::new(), created_at: chrono::Utc::now() };
        let bodies: Vec<(Kind, Vec<u8>, i64)> = vec![
            (Kind::Ledgers, jsonl(&[ledger]), 1),
            (Kind::Accounts, jsonl(&[account(1, debit), account(2, credit)]), 2),
            (Kind::BalanceHistory, Vec::new(), 0),
            (Kind::Transfers, jsonl(&[TransferLine::from(&transfer)]), 1),
            (Kind::Resolutions, Vec::new(), 0),
            (Kind::Receipts, jsonl(&[ReceiptLine::from(&record)]), 1),
            (Kind::ReceiptHead, jsonl(&[HeadLine { seq: 1, hash, last_ts: transfer.ts }]), 1),
            (Kind::ReceiptKeys, jsonl(&[KeyLine::new(1, &key.verifying_key())]), 1),
        ];
        let recipient = identity.to_public();
        std::fs::create_dir_all(dir.join("ledger")).expect("dir");
        let mut files = Vec::new();
        for (seq, (kind, body, rows)) in (1..).zip(bodies) {
            let name = format!("{seq:04}-{}.age", kind.file_name());
            let sealed = kit::export::seal(&recipient, &body).expect("seal");
            std::fs::write(dir.join("ledger").join(&name), &sealed).expect("write");
            let sha256 = kit::export::sha256_hex(&sealed);
            files.push(kit::export::FileEntry { part: "ledger".into(), seq, name, rows, sha256 });
        }
        let manifest = kit::export::Manifest {
            format: kit::export::FORMAT.into(),
            tenant_id: Uuid::from_u128(7),
            slug: "acme".into(),
            created_at: chrono::Utc::now(),
            terminated_at: chrono::Utc::now(),
            terminated_by: "operator".into(),
            recipient: recipient.to_string(),
            files,
            final_checkpoint: String::new(),
            verifier_key: String::new(),
        };
        std::fs::write(dir.join("manifest.json"), manifest.canonical().expect("canonical")).expect("manifest");
    }

    #[test]
    fn a_bundles_ledger_part_verifies_offline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let identity = age::x25519::Identity::generate();
        let key = SigningKey::from_bytes(&[3; 32]);
        write_bundle(dir.path(), &identity, &key, |_| {});
        let report = verify_bundle(dir.path(), &identity).expect("verifies");
        assert_eq!((report.files, report.accounts, report.transfers, report.receipts), (8, 2, 1, 1));
        assert_eq!(
            (report.unsigned, report.key_versions.as_slice(), report.tenant.as_str()),
            (0, [1].as_slice(), "acme")
        );
        let other = age::x25519::Identity::generate();
        assert!(verify_bundle(dir.path(), &other).is_err(), "another identity opens nothing");
    }

    #[test]
    fn a_bundle_with_an_edited_transfer_or_file_does_not_verify() {
        let dir = tempfile::tempdir().expect("tempdir");
        let identity = age::x25519::Identity::generate();
        let key = SigningKey::from_bytes(&[3; 32]);
        write_bundle(dir.path(), &identity, &key, |t| {
            t.metadata.insert("note".into(), "edited".into());
        });
        let err = verify_bundle(dir.path(), &identity).expect_err("edited");
        assert!(err.to_string().contains("receipt 1 does not verify: stored transfers do not match"), "{err}");

        write_bundle(dir.path(), &identity, &key, |_| {});
        std::fs::write(dir.path().join("ledger/0004-transfers.jsonl.age"), b"swapped").expect("write");
        let err = verify_bundle(dir.path(), &identity).expect_err("swapped");
        assert!(err.to_string().contains("does not match its SHA-256"), "{err}");
    }
}
