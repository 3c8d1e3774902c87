//! `strongroom bench vault`: transit encrypt/decrypt of 1 KiB over mTLS gRPC against a running
//! constellation (`strongroom dev up`), with many concurrent callers, next to the in-process AEAD
//! rate on the same machine. Traffic goes only to the endpoints in `endpoints.json` (loopback for
//! `dev up`); every phase is bounded in time.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use kit::Identity;
use kit::config::TlsConfig;
use kit::tls::CertStore;
use proto::vault::v1 as pb;
use proto::vault::v1::transit_service_client::TransitServiceClient;
use serde_json::json;
use vault_svc::domain::crypto::{Aad, Key256};
use vault_svc::domain::envelope::{Envelope, KeyKind};

#[derive(Debug, Clone)]
pub struct Options {
    pub dev_dir: std::path::PathBuf,
    pub tenant: String,
    pub concurrency: usize,
    pub duration: Duration,
    pub size: usize,
}

pub(crate) struct Phase {
    pub(crate) name: &'static str,
    pub(crate) ops: usize,
    pub(crate) elapsed: Duration,
    pub(crate) latencies: Vec<Duration>,
    pub(crate) errors: usize,
}

impl Phase {
    pub(crate) fn new(name: &'static str) -> Self {
        Self { name, ops: 0, elapsed: Duration::ZERO, latencies: Vec::new(), errors: 0 }
    }

    pub(crate) fn report(&mut self) -> serde_json::Value {
        self.latencies.sort_unstable();
        let pct = |p: f64| {
            if self.latencies.is_empty() {
                return 0.0;
            }
            let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
            self.latencies[i].as_secs_f64() * 1000.0
        };
        let rate = self.ops as f64 / self.elapsed.as_secs_f64();
        println!(
            "{:<24} {:>10.0} ops/s   p50 {:>7.3} ms   p99 {:>7.3} ms   ({} ops, {} errors, {:.1} s)",
            self.name,
            rate,
            pct(0.50),
            pct(0.99),
            self.ops,
            self.errors,
            self.elapsed.as_secs_f64()
        );
        json!({ "phase": self.name, "ops_per_sec": rate.round(), "p50_ms": pct(0.50), "p99_ms": pct(0.99), "ops": self.ops, "errors": self.errors })
    }
}

/// In-process envelope encryption (fresh data key + two AES-256-GCM operations) on one core.
fn in_process(size: usize, duration: Duration) -> anyhow::Result<Phase> {
    let key = Key256::generate().map_err(|e| anyhow!("{e}"))?;
    let aad = Aad::new("strongroom.vault.transit").with("tenant", b"bench");
    let plaintext = vec![7u8; size];
    let started = Instant::now();
    let mut ops = 0;
    while started.elapsed() < duration {
        for _ in 0..256 {
            let env = Envelope::seal(KeyKind::Tenant, 1, &key, &aad, &plaintext).map_err(|e| anyhow!("{e}"))?;
            std::hint::black_box(env.encode());
            ops += 1;
        }
    }
    Ok(Phase { name: "in-process seal (1 core)", ops, elapsed: started.elapsed(), latencies: Vec::new(), errors: 0 })
}

pub async fn vault(opts: &Options) -> anyhow::Result<()> {
    let endpoints: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(opts.dev_dir.join("endpoints.json"))
            .context("endpoints.json: is `strongroom dev up` running?")?,
    )?;
    let url = endpoints["vault"].as_str().ok_or_else(|| anyhow!("no vault endpoint"))?.to_owned();
    let pki = opts.dev_dir.join("pki");
    // Transit is for services: the bench presents auth-svc's development certificate.
    let certs = CertStore::load(&tls(&pki, "auth"))?;
    println!(
        "strongroom bench vault: {} concurrent callers, {} B payloads, {} s per phase, tenant {}",
        opts.concurrency,
        opts.size,
        opts.duration.as_secs(),
        opts.tenant
    );
    let mut report = Vec::new();
    let seal = tokio::task::spawn_blocking({
        let (size, duration) = (opts.size, opts.duration.min(Duration::from_secs(5)));
        move || in_process(size, duration)
    })
    .await??;
    let mut seal = seal;
    report.push(seal.report());

    // A few HTTP/2 connections shared by the callers, as a service's client pool would.
    let channels: Vec<_> = (0..4)
        .map(|_| {
            kit::client::channel(&certs, &url, &Identity::new("vault")?, Duration::from_secs(10))
                .map_err(|e| anyhow!("{e}"))
        })
        .collect::<Result<_, _>>()?;
    let plaintext = Arc::new(vec![42u8; opts.size]);
    let (mut enc, ciphertexts) = run_phase("transit encrypt (gRPC)", opts, &channels, {
        let plaintext = plaintext.clone();
        move |mut client, tenant| {
            let plaintext = plaintext.clone();
            async move {
                let msg =
                    pb::EncryptRequest { plaintext: plaintext.to_vec(), context: HashMap::new(), ..Default::default() };
                let r = client
                    .encrypt(kit::client::with_context(tonic::Request::new(msg), Some(&tenant), None, None))
                    .await?;
                Ok(Some(r.into_inner().ciphertext))
            }
        }
    })
    .await;
    report.push(enc.report());
    let ciphertexts = Arc::new(ciphertexts);
    if ciphertexts.is_empty() {
        return Err(anyhow!("no ciphertext produced; is tenant {} provisioned?", opts.tenant));
    }
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (mut dec, _) = run_phase("transit decrypt (gRPC)", opts, &channels, {
        let ciphertexts = ciphertexts.clone();
        move |mut client, tenant| {
            let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % ciphertexts.len();
            let ct = ciphertexts[i].clone();
            async move {
                let msg = pb::DecryptRequest { ciphertext: ct, context: HashMap::new(), subject: String::new() };
                client.decrypt(kit::client::with_context(tonic::Request::new(msg), Some(&tenant), None, None)).await?;
                Ok(None)
            }
        }
    })
    .await;
    report.push(dec.report());

    match reveal_phase(opts, &pki, &url).await {
        Ok(mut phase) => report.push(phase.report()),
        Err(e) => println!("secret reveal: skipped ({e:#})"),
    }
    println!("{}", json!({ "bench": "vault", "concurrency": opts.concurrency, "size": opts.size, "results": report }));
    Ok(())
}

pub(crate) fn tls(pki: &Path, name: &str) -> TlsConfig {
    TlsConfig {
        ca: pki.join("ca.pem"),
        cert: pki.join(format!("{name}.pem")),
        key: pki.join(format!("{name}-key.pem")),
        reload_interval_ms: 60_000,
    }
}

type Client = TransitServiceClient<kit::client::Channel>;

async fn run_phase<F, Fut>(
    name: &'static str,
    opts: &Options,
    channels: &[kit::client::Channel],
    op: F,
) -> (Phase, Vec<String>)
where
    F: Fn(Client, String) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Option<String>, tonic::Status>> + Send,
{
    run_phase_with(name, opts, channels, TransitServiceClient::new, op).await
}

async fn run_phase_with<C, F, Fut>(
    name: &'static str,
    opts: &Options,
    channels: &[kit::client::Channel],
    make: fn(kit::client::Channel) -> C,
    op: F,
) -> (Phase, Vec<String>)
where
    C: Clone + Send + 'static,
    F: Fn(C, String) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Option<String>, tonic::Status>> + Send,
{
    let started = Instant::now();
    let deadline = started + opts.duration;
    let mut workers = Vec::new();
    for w in 0..opts.concurrency {
        let client = make(channels[w % channels.len()].clone());
        let op = op.clone();
        let tenant = opts.tenant.clone();
        workers.push(tokio::spawn(async move {
            let (mut lat, mut outs, mut errors) = (Vec::new(), Vec::new(), 0usize);
            while Instant::now() < deadline {
                let t = Instant::now();
                match op(client.clone(), tenant.clone()).await {
                    Ok(out) => {
                        lat.push(t.elapsed());
                        if outs.len() < 256 {
                            outs.extend(out);
                        }
                    }
                    Err(_) => errors += 1,
                }
            }
            (lat, outs, errors)
        }));
    }
    let mut phase = Phase { name, ops: 0, elapsed: Duration::ZERO, latencies: Vec::new(), errors: 0 };
    let mut outputs = Vec::new();
    for w in workers {
        if let Ok((lat, outs, errors)) = w.await {
            phase.ops += lat.len();
            phase.latencies.extend(lat);
            outputs.extend(outs);
            phase.errors += errors;
        }
    }
    phase.elapsed = started.elapsed();
    (phase, outputs)
}

/// Runs `op(worker)` in a loop on `opts.concurrency` workers until the phase's time is up.
pub(crate) async fn run_workers<F, Fut>(name: &'static str, opts: &Options, op: F) -> Phase
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send,
{
    let started = Instant::now();
    let deadline = started + opts.duration;
    let workers: Vec<_> = (0..opts.concurrency)
        .map(|w| {
            let op = op.clone();
            tokio::spawn(async move {
                let (mut lat, mut errors) = (Vec::new(), 0usize);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match op(w).await {
                        Ok(()) => lat.push(t.elapsed()),
                        Err(_) => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut phase = Phase::new(name);
    for w in workers {
        if let Ok((lat, errors)) = w.await {
            phase.ops += lat.len();
            phase.latencies.extend(lat);
            phase.errors += errors;
        }
    }
    phase.elapsed = started.elapsed();
    phase
}

/// Secret reveal through the secrets API, as the gateway calls it: each reveal reads, decrypts and
/// commits its audit record. The end-user token is minted with a key the bench publishes in the
/// development database (`dev up` only: it reads the admin URL from the file it keeps for the operator steps).
async fn reveal_phase(opts: &Options, pki: &Path, url: &str) -> anyhow::Result<Phase> {
    use proto::vault::v1::secrets_service_client::SecretsServiceClient;
    let admin_url = crate::migrate::dev_admin_url(&opts.dev_dir)?;
    let pool = sqlx::PgPool::connect(&admin_url).await.context("dev database")?;
    let (tenant_id,): (uuid::Uuid,) = sqlx::query_as("SELECT id FROM control.tenants WHERE slug = $1")
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
    claims["exp"] = json!(chrono::Utc::now().timestamp() + 600);
    claims["permissions"] = json!(["vault.secrets.write", "vault.secrets.reveal"]);
    let token = signer.sign(&claims);
    let certs = CertStore::load(&tls(pki, "gateway"))?;
    let channels: Vec<_> = (0..4)
        .map(|_| {
            kit::client::channel(&certs, url, &Identity::new("vault")?, Duration::from_secs(10))
                .map_err(|e| anyhow!("{e}"))
        })
        .collect::<Result<_, _>>()?;
    let mut setup = SecretsServiceClient::new(channels[0].clone());
    let put = pb::PutSecretRequest {
        path: "bench/broker-key".into(),
        value: vec![b'k'; opts.size.min(64 * 1024)],
        ..Default::default()
    };
    setup
        .put_secret(kit::client::with_context(tonic::Request::new(put), Some(&opts.tenant), None, Some(&token)))
        .await
        .map_err(|s| anyhow!("put: {}", kit::ApiError::from_status(&s)))?;
    let token = Arc::new(token);
    let (phase, _) = run_phase_with(
        "secret reveal (gRPC)",
        opts,
        &channels,
        SecretsServiceClient::new,
        move |mut client, tenant| {
            let token = token.clone();
            async move {
                let msg =
                    pb::RevealSecretRequest { path: "bench/broker-key".into(), version: 0, reason: "benchmark".into() };
                client
                    .reveal_secret(kit::client::with_context(
                        tonic::Request::new(msg),
                        Some(&tenant),
                        None,
                        Some(&token),
                    ))
                    .await?;
                Ok(None)
            }
        },
    )
    .await;
    Ok(phase)
}

/// A kept-alive HTTP/1.1 connection to the gateway (one per worker, as a browser would hold).
pub(crate) struct KeptAlive {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<hyper::body::Bytes>>,
    host: String,
}

impl KeptAlive {
    pub(crate) async fn connect(gateway: &str, ca: &[u8]) -> anyhow::Result<Self> {
        let url = url::Url::parse(gateway)?;
        let host = url.host_str().ok_or_else(|| anyhow::anyhow!("gateway url has no host"))?.to_owned();
        let port = url.port_or_known_default().unwrap_or(443);
        let config = kit::tls::ca_only_client_config(ca, &[b"http/1.1"]).map_err(|e| anyhow::anyhow!("{e}"))?;
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        tcp.set_nodelay(true)?;
        let name = rustls_pki_types::ServerName::try_from(host.clone())?;
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(Self { sender, host })
    }

    /// Sends one request and reads the whole answer; returns its status.
    pub(crate) async fn request(
        &mut self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> anyhow::Result<http::StatusCode> {
        use http_body_util::BodyExt;
        self.sender.ready().await?;
        let mut req = http::Request::builder().method(method).uri(path).header(http::header::HOST, &self.host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self.sender.send_request(req.body(http_body_util::Full::new(body.into()))?).await?;
        let status = resp.status();
        resp.into_body().collect().await?;
        Ok(status)
    }
}
