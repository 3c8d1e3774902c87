//! A tenant's end: `strongroom tenant terminate`, `status`, `export` and `purge`.
//!
//! Termination and the export go through auth-svc with the operator certificate; the purge, which
//! drops the tenant's schema, needs the administrative database URL (no running service holds it)
//! and the Redis URL (to remove the tenant's keys there).

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kit::TenantSlug;
use kit::tls::CertStore;
use proto::auth::v1 as pb;
use secrecy::{ExposeSecret, SecretString};

use crate::ops::{Endpoints, channel};

type Tenants = pb::tenant_service_client::TenantServiceClient<kit::client::Channel>;

fn tenants(endpoints: &Endpoints) -> anyhow::Result<Tenants> {
    let certs = CertStore::load(&endpoints.tls).context("operator certificate")?;
    Ok(Tenants::new(channel(&certs, &endpoints.auth, "auth")?).max_decoding_message_size(64 << 20))
}

fn status(s: &tonic::Status) -> anyhow::Error {
    anyhow!("auth: {}", kit::ApiError::from_status(s))
}

/// Who acts, as recorded: `$USER` on this machine, else the operator identity.
pub fn operator_name() -> String {
    std::env::var("USER").ok().filter(|u| !u.is_empty() && u.len() <= 100).unwrap_or_else(|| "operator".to_owned())
}

/// A termination as JSON.
pub fn termination_json(t: &pb::Termination) -> serde_json::Value {
    let time = |ts: &Option<prost_types::Timestamp>| {
        ts.as_ref()
            .and_then(|t| kit::time::from_pb("time", t).ok())
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    };
    serde_json::json!({
        "tenant": t.tenant.as_ref().map(|x| x.slug.clone()),
        "tenant_id": t.tenant.as_ref().map(|x| x.id.clone()),
        "recipient": t.recipient,
        "terminated_by": t.terminated_by,
        "terminated_at": time(&t.terminate_time),
        "export_until": time(&t.export_until),
        "parts": t.parts.iter().map(|p| serde_json::json!({
            "part": p.part, "rows_done": p.rows_done, "rows_total": p.rows_total, "files": p.files,
            "complete": p.complete,
        })).collect::<Vec<_>>(),
        "manifest_sha256": t.manifest_sha256,
        "exported_at": time(&t.export_time),
        "fetched_at": time(&t.fetch_time),
    })
}

/// `strongroom tenant terminate`: terminates the tenant, then (with `wait`) follows the export
/// until its manifest is signed.
pub async fn terminate(
    endpoints: &Endpoints,
    slug: &str,
    recipient: &str,
    reason: &str,
    wait: bool,
) -> anyhow::Result<serde_json::Value> {
    kit::export::parse_recipient(recipient)
        .map_err(|_| anyhow!("--recipient must be an age X25519 public key (age1…)"))?;
    let mut client = tenants(endpoints)?;
    let termination = client
        .terminate_tenant(pb::TerminateTenantRequest {
            slug: slug.to_owned(),
            recipient: recipient.to_owned(),
            reason: reason.to_owned(),
            operator: operator_name(),
            request_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .map_err(|s| status(&s))?
        .into_inner();
    if !wait {
        return Ok(termination_json(&termination));
    }
    follow(&mut client, slug).await
}

/// `strongroom tenant status`: the termination and its export's progress.
pub async fn termination(endpoints: &Endpoints, slug: &str, wait: bool) -> anyhow::Result<serde_json::Value> {
    let mut client = tenants(endpoints)?;
    if wait {
        return follow(&mut client, slug).await;
    }
    let t = client.get_termination(pb::GetTenantRequest { slug: slug.to_owned() }).await.map_err(|s| status(&s))?;
    Ok(termination_json(t.get_ref()))
}

/// Rows done and the estimate over every part, and how many parts are complete.
fn totals(t: &pb::Termination) -> (u64, u64, usize) {
    let done = t.parts.iter().map(|p| p.rows_done).sum();
    let total = t.parts.iter().map(|p| p.rows_total.max(p.rows_done)).sum();
    (done, total, t.parts.iter().filter(|p| p.complete).count())
}

/// Polls the export until the manifest is signed: a progress bar on a terminal, a plain line per
/// change otherwise (parts and rows done, the estimate and the time left).
async fn follow(client: &mut Tenants, slug: &str) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} rows, {msg}, about {eta} left")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(format!("export of {slug}"));
        bar
    });
    let mut last = None;
    loop {
        let t = client
            .get_termination(pb::GetTenantRequest { slug: slug.to_owned() })
            .await
            .map_err(|s| status(&s))?
            .into_inner();
        let (done, total, parts) = totals(&t);
        let signed = !t.manifest_sha256.is_empty();
        match &bar {
            Some(bar) => {
                bar.set_length(total);
                bar.set_position(done);
                bar.set_message(format!("{parts}/4 parts"));
            }
            None if last != Some((done, parts, signed)) => {
                let left = if done > 0 && total > done {
                    let secs = started.elapsed().as_secs_f64() * (total - done) as f64 / done as f64;
                    format!(", about {secs:.0} s left")
                } else {
                    String::new()
                };
                eprintln!("export of {slug}: {parts}/4 parts, {done}/{total} rows{left}");
                last = Some((done, parts, signed));
            }
            None => {}
        }
        if signed {
            if let Some(bar) = &bar {
                bar.finish_with_message("manifest signed");
            } else {
                eprintln!("export of {slug}: manifest signed ({})", t.manifest_sha256);
            }
            return Ok(termination_json(&t));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// What `strongroom tenant export` wrote.
#[derive(Debug, serde::Serialize)]
pub struct Fetched {
    pub files: usize,
    pub bytes: u64,
    pub manifest_sha256: String,
}

/// `strongroom tenant export`: writes the bundle under `out` (`manifest.json`, `manifest.sig`,
/// `<part>/<name>`), checking every file's digest against the manifest and the manifest's own.
/// The signature is checked by `strongroom audit verify --bundle`, with the verifier key.
pub async fn export(endpoints: &Endpoints, slug: &str, out: &Path) -> anyhow::Result<Fetched> {
    let mut client = tenants(endpoints)?;
    let mut items =
        client.fetch_export(pb::GetTenantRequest { slug: slug.to_owned() }).await.map_err(|s| status(&s))?.into_inner();
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    let mut manifest: Option<kit::export::Manifest> = None;
    let mut fetched = Fetched { files: 0, bytes: 0, manifest_sha256: String::new() };
    let mut seen = Vec::new();
    while let Some(item) = items.message().await.map_err(|s| status(&s))? {
        match item.item {
            Some(pb::export_item::Item::Manifest(m)) => {
                let digest = kit::export::sha256_hex(&m.canonical);
                if digest != m.sha256 {
                    bail!("the manifest does not match its digest");
                }
                B64.decode(&m.signature).context("the manifest's signature is not base64")?;
                let parsed: kit::export::Manifest =
                    serde_json::from_slice(&m.canonical).context("the manifest is not a bundle manifest")?;
                std::fs::write(out.join("manifest.json"), &m.canonical)?;
                std::fs::write(out.join("manifest.sig"), format!("{}\n", m.signature))?;
                fetched.manifest_sha256 = digest;
                manifest = Some(parsed);
            }
            Some(pb::export_item::Item::File(f)) => {
                let listed = manifest
                    .as_ref()
                    .and_then(|m| m.files.iter().find(|e| e.part == f.part && e.seq == f.seq))
                    .ok_or_else(|| anyhow!("file {}/{} is not in the manifest", f.part, f.name))?;
                if kit::export::sha256_hex(&f.data) != listed.sha256 || listed.name != f.name {
                    bail!("file {}/{} does not match the manifest", f.part, f.name);
                }
                if !kit::export::PARTS.contains(&f.part.as_str()) || f.name.contains('/') || f.name.starts_with('.') {
                    bail!("file {}/{} has an unexpected name", f.part, f.name);
                }
                let dir = out.join(&f.part);
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join(&f.name), &f.data)?;
                fetched.files += 1;
                fetched.bytes += f.data.len() as u64;
                seen.push((f.part, f.seq));
            }
            None => {}
        }
    }
    let manifest = manifest.ok_or_else(|| anyhow!("no manifest came"))?;
    if seen.len() != manifest.files.len() {
        bail!("{} of the manifest's {} files came", seen.len(), manifest.files.len());
    }
    Ok(fetched)
}

/// `strongroom tenant purge`: deletes a terminated tenant whose bundle is signed, after its
/// window (or with `early`, once fetched): its Redis keys, then, in one transaction, its rows in
/// `control` and its schema, keeping a tombstone, which goes into the erasure `journal` (signed
/// with the operator certificate) before the transaction commits.
pub async fn purge(
    admin_url: &SecretString,
    redis_url: Option<&SecretString>,
    slug: &str,
    early: bool,
    journal: Option<&kit::journal::Journal>,
) -> anyhow::Result<kit::migrate::Tombstone> {
    let slug = TenantSlug::parse(slug).map_err(|e| anyhow!("{e}"))?;
    let migrator = crate::migrate::migrator(admin_url)?;
    let tenant = migrator.registered_tenant(&slug).await.with_context(|| format!("tenant {slug}"))?;
    if tenant.status != kit::tenancy::TenantStatus::Terminated {
        bail!("tenant {slug} is not terminated (strongroom tenant terminate)");
    }
    let credentials = migrator.credential_ids(&slug).await?;
    match redis_url {
        Some(url) => {
            let removed = forget_in_redis(url, tenant.id.0, &credentials).await?;
            eprintln!("removed {removed} Redis keys of tenant {slug}");
        }
        None => bail!("the Redis URL is needed to remove the tenant's keys there: --redis-url or STRONGROOM_REDIS_URL"),
    }
    Ok(migrator.purge(&slug, &operator_name(), early, journal).await?)
}

/// The erasure journal a purge writes to: `--journal`, else `strongroom dev up --backups`'s,
/// signed with the operator's certificate. None, with a warning, when the deployment has none.
pub fn operator_journal(
    dir: Option<&Path>,
    tls: &kit::config::TlsConfig,
) -> anyhow::Result<Option<kit::journal::Journal>> {
    let Some(dir) = dir else {
        eprintln!(
            "warning: no erasure journal (--journal): a restore from a backup taken before this purge would bring the tenant back"
        );
        return Ok(None);
    };
    let certs = CertStore::load(tls).context("operator certificate (signs the journal entry)")?;
    Ok(Some(kit::journal::Journal::open(dir, certs)?))
}

/// Purges every tenant whose export window has ended (run daily, e.g. by a timer or CronJob).
pub async fn purge_due(
    admin_url: &SecretString,
    redis_url: Option<&SecretString>,
    journal: Option<&kit::journal::Journal>,
) -> anyhow::Result<Vec<String>> {
    let due = crate::migrate::migrator(admin_url)?.purge_due().await?;
    let mut purged = Vec::new();
    for slug in due {
        let tombstone = purge(admin_url, redis_url, slug.as_str(), false, journal).await?;
        purged.push(tombstone.slug);
    }
    Ok(purged)
}

/// Deletes every key naming the tenant (rate-limit buckets, access-change markers) and the
/// revocation markers of its sessions and API keys. Returns how many went.
async fn forget_in_redis(url: &SecretString, tenant: uuid::Uuid, credentials: &[uuid::Uuid]) -> anyhow::Result<usize> {
    let client = redis::Client::open(url.expose_secret()).context("the Redis URL")?;
    let mut conn = client.get_multiplexed_async_connection().await.context("Redis")?;
    let mut keys: Vec<String> = Vec::new();
    {
        use redis::AsyncCommands;
        let mut iter: redis::AsyncIter<String> =
            conn.scan_match(format!("strongroom:*{tenant}*")).await.context("Redis SCAN")?;
        while let Some(key) = iter.next_item().await {
            keys.push(key.context("Redis SCAN")?);
        }
    }
    for id in credentials {
        keys.push(format!("strongroom:revoked:session:{id}"));
        keys.push(format!("strongroom:revoked:api_key:{id}"));
    }
    let mut removed = 0;
    for batch in keys.chunks(500) {
        let n: usize = redis::cmd("DEL").arg(batch).query_async(&mut conn).await.context("Redis DEL")?;
        removed += n;
    }
    Ok(removed)
}
