//! `strongroom bench auth`: password logins/s next to the raw argon2id hash rate on the same
//! machine, refresh grants/s, and authenticated `GET /v1/me` and a 50-user page of `GET /v1/users`
//! through the gateway, with p50/p99.
//! It registers a tenant of its own (`bench_<random>`) with an owner, enrols the owner's TOTP,
//! creates one `viewer` user per caller, then measures. Traffic goes only to the endpoints of
//! `endpoints.json` (loopback for `dev up`); every phase is bounded in time. With `--directory N`
//! the tenant first gets N more users, as a directory of an established tenant holds them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use kit::Identity;
use kit::tls::CertStore;
use proto::auth::v1 as pb;
use proto::auth::v1::authentication_service_client::AuthenticationServiceClient;
use serde_json::{Value, json};

use crate::bench::{Options, Phase};
use crate::ops::Endpoints;

const PASSWORD: &str = "bench password 0123";

/// Raw argon2id (OWASP parameters) hashes per second on all cores, one thread per core, each
/// hashing into its own reused memory exactly as auth-svc's hashing threads do.
fn raw_hash_rate(duration: Duration) -> Phase {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let mut memory = auth_svc::passwords::Memory::new();
                let mut lat = Vec::new();
                while started.elapsed() < duration {
                    let t = Instant::now();
                    std::hint::black_box(auth_svc::passwords::hash_in(&mut memory, PASSWORD.as_bytes()).ok());
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut phase = Phase::new("raw argon2id (all cores)");
    for h in handles {
        if let Ok(lat) = h.join() {
            phase.ops += lat.len();
            phase.latencies.extend(lat);
        }
    }
    phase.elapsed = started.elapsed();
    phase
}

async fn http(
    gateway: &str,
    ca: &[u8],
    method: http::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let cfg = kit::tls::ca_only_client_config(ca, &[b"http/1.1"]).map_err(|e| anyhow!("{e}"))?;
    let mut h = headers.to_vec();
    let bytes = match body {
        Some(b) => {
            h.push(("content-type", "application/json"));
            serde_json::to_vec(&b)?
        }
        None => Vec::new(),
    };
    let (status, _, body) = kit::tls::https_request(cfg, method, &format!("{gateway}{path}"), &h, bytes)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    Ok((status.as_u16(), serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

fn totp_now(secret: &str) -> anyhow::Result<String> {
    let seed = totp_rs::Secret::Encoded(secret.to_owned()).to_bytes().map_err(|e| anyhow!("{e:?}"))?;
    let t = totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 1, 30, seed, None, "bench".into())?;
    Ok(t.generate_current()?)
}

/// Gives tenant `slug` `n` more users, each holding `viewer` directly and a member of one of
/// `n / 100` groups that hold `member`: the directory of an established tenant, against which
/// every login, refresh grant and permission check looks up the caller's grants. They are written
/// in PostgreSQL directly, as an import would (`dev up` only: the admin URL comes from the file
/// it keeps for the operator steps); they have no password and never log in.
async fn seed_directory(opts: &Options, slug: &str, n: usize) -> anyhow::Result<()> {
    let admin_url = crate::migrate::dev_admin_url(&opts.dev_dir)?;
    let pool = sqlx::PgPool::connect(&admin_url).await.context("dev database")?;
    let (tenant,): (uuid::Uuid,) = sqlx::query_as("SELECT id FROM control.tenants WHERE slug = $1")
        .bind(slug)
        .fetch_one(&pool)
        .await
        .context("tenant")?;
    let schema = kit::TenantSlug::parse(slug).map_err(|e| anyhow!("{e}"))?.schema();
    let groups = (n / 100).max(1) as i64;
    let mut tx = pool.begin().await?;
    sqlx::query(&format!("SET LOCAL search_path = {schema}")).execute(&mut *tx).await?;
    for sql in [
        "INSERT INTO groups (tenant_id, name) SELECT $1, 'directory_' || g FROM generate_series(1, $3) g",
        "INSERT INTO users (tenant_id, email, display_name) \
         SELECT $1, 'directory' || i || '@' || $4 || '.example', 'Directory user ' || i FROM generate_series(1, $2) i",
        "INSERT INTO role_grants (tenant_id, role_id, user_id, granted_by) \
         SELECT $1, (SELECT id FROM roles WHERE name = 'viewer'), u.id, 'bench' FROM users u WHERE u.email LIKE 'directory%'",
        "INSERT INTO role_grants (tenant_id, role_id, group_id, granted_by) \
         SELECT $1, (SELECT id FROM roles WHERE name = 'member'), g.id, 'bench' FROM groups g WHERE g.name LIKE 'directory\\_%'",
        "INSERT INTO group_members (tenant_id, group_id, user_id) \
         SELECT $1, g.id, u.id FROM (SELECT id, row_number() OVER (ORDER BY id) % $3 + 1 AS k FROM users \
                                      WHERE email LIKE 'directory%') u \
           JOIN groups g ON g.name = 'directory_' || u.k",
    ] {
        sqlx::query(sql).bind(tenant).bind(n as i64).bind(groups).bind(slug).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    // As autovacuum would, some time after an import.
    sqlx::query(&format!("ANALYZE {schema}.users, {schema}.role_grants, {schema}.group_members, {schema}.groups"))
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(())
}

pub async fn auth(opts: &Options, endpoints: &Endpoints, directory: usize) -> anyhow::Result<()> {
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(opts.dev_dir.join("endpoints.json"))
            .context("endpoints.json: is `strongroom dev up` running?")?,
    )?;
    let gateway = doc["gateway"].as_str().ok_or_else(|| anyhow!("no gateway endpoint"))?.to_owned();
    let ca = std::fs::read(opts.dev_dir.join("pki/ca.pem"))?;
    let slug = format!("bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let owner_email = format!("owner@{slug}.example");
    let created = crate::ops::create_tenant(endpoints, &slug, Some(&owner_email)).await?;
    let owner_password = created["owner"]["password"].as_str().ok_or_else(|| anyhow!("no owner password"))?.to_owned();
    println!(
        "strongroom bench auth: tenant {slug}, {} callers, {} s per phase, {directory} more users in the directory",
        opts.concurrency,
        opts.duration.as_secs()
    );
    if directory > 0 {
        seed_directory(opts, &slug, directory).await?;
    }

    // The owner: enrol TOTP, then a full session that can create users.
    let login = json!({ "tenant": slug, "email": owner_email, "password": owner_password });
    let (s, t) = http(&gateway, &ca, http::Method::POST, "/v1/auth/login", &[], Some(login)).await?;
    if s != 200 {
        bail!("owner login: {s} {t}");
    }
    let bearer = format!("Bearer {}", t["access_token"].as_str().unwrap_or_default());
    let hdr = [("authorization", bearer.as_str()), ("x-strongroom-tenant", slug.as_str())];
    let (_, e) = http(&gateway, &ca, http::Method::POST, "/v1/me/mfa/totp", &hdr, None).await?;
    let code = totp_now(e["secret"].as_str().unwrap_or_default())?;
    let (s, b) =
        http(&gateway, &ca, http::Method::POST, "/v1/me/mfa/totp/confirm", &hdr, Some(json!({ "code": code }))).await?;
    if s != 200 {
        bail!("totp confirm: {s} {b}");
    }
    let refresh = json!({ "tenant": slug, "refresh_token": t["refresh_token"] });
    let (_, full) = http(&gateway, &ca, http::Method::POST, "/v1/auth/refresh", &[], Some(refresh)).await?;
    let bearer = format!("Bearer {}", full["access_token"].as_str().unwrap_or_default());
    let hdr = [("authorization", bearer.as_str()), ("x-strongroom-tenant", slug.as_str())];
    let users: Vec<String> = (0..opts.concurrency).map(|i| format!("user{i}@{slug}.example")).collect();
    for email in &users {
        let body = json!({ "email": email, "password": PASSWORD, "roles": ["viewer"] });
        let (s, b) = http(&gateway, &ca, http::Method::POST, "/v1/users", &hdr, Some(body)).await?;
        if s != 200 {
            bail!("create user: {s} {b}");
        }
    }

    let mut report = Vec::new();
    let raw = tokio::task::spawn_blocking({
        let d = opts.duration.min(Duration::from_secs(5));
        move || raw_hash_rate(d)
    })
    .await?;
    let mut raw = raw;
    report.push(raw.report());

    // Logins and refreshes go to auth-svc over mTLS gRPC, as the gateway sends them (the gateway's
    // per-IP limits would otherwise measure themselves).
    let certs = CertStore::load(&crate::bench::tls(&opts.dev_dir.join("pki"), "gateway"))?;
    let channels: Vec<_> = (0..4)
        .map(|_| {
            kit::client::channel(&certs, &endpoints.auth, &Identity::new("auth")?, Duration::from_secs(10))
                .map_err(|e| anyhow!("{e}"))
        })
        .collect::<Result<_, _>>()?;
    let users = Arc::new(users);
    let refresh_tokens = Arc::new(tokio::sync::Mutex::new(Vec::<String>::new()));
    let mut logins = crate::bench::run_workers("password login (gRPC)", opts, {
        let (users, channels, slug, refresh_tokens) =
            (users.clone(), channels.clone(), slug.clone(), refresh_tokens.clone());
        move |w| {
            let email = users[w % users.len()].clone();
            let mut client = AuthenticationServiceClient::new(channels[w % channels.len()].clone());
            let (slug, refresh_tokens) = (slug.clone(), refresh_tokens.clone());
            async move {
                let msg = pb::LoginRequest { tenant: slug.clone(), email, password: PASSWORD.into(), client: None };
                let r =
                    client.login(kit::client::with_context(tonic::Request::new(msg), Some(&slug), None, None)).await?;
                if let Some(pb::login_response::Result::Tokens(t)) = r.into_inner().result {
                    let mut rt = refresh_tokens.lock().await;
                    if rt.len() < 4096 {
                        rt.push(t.refresh_token);
                    }
                }
                Ok(())
            }
        }
    })
    .await;
    report.push(logins.report());

    // Refresh grants: each caller rotates its own chain of refresh tokens.
    let seeds = std::mem::take(&mut *refresh_tokens.lock().await);
    if seeds.len() < opts.concurrency {
        bail!("only {} sessions for {} callers", seeds.len(), opts.concurrency);
    }
    let chains: Arc<Vec<tokio::sync::Mutex<String>>> =
        Arc::new(seeds.into_iter().map(tokio::sync::Mutex::new).collect());
    let mut refreshes = crate::bench::run_workers("refresh grant (gRPC)", opts, {
        let (chains, channels, slug) = (chains.clone(), channels.clone(), slug.clone());
        move |w| {
            let chains = chains.clone();
            let mut client = AuthenticationServiceClient::new(channels[w % channels.len()].clone());
            let slug = slug.clone();
            async move {
                let mut token = chains[w].lock().await;
                let msg = pb::RefreshRequest { tenant: slug.clone(), refresh_token: token.clone(), client: None };
                let r = client
                    .refresh(kit::client::with_context(tonic::Request::new(msg), Some(&slug), None, None))
                    .await?;
                *token = r.into_inner().refresh_token;
                Ok(())
            }
        }
    })
    .await;
    report.push(refreshes.report());

    // Authenticated reads through the gateway (HTTP/1.1 over TLS, one kept-alive connection per
    // caller, as a browser or an API client holds it).
    let tokens: Vec<String> = {
        let mut v = Vec::new();
        for email in users.iter().take(opts.concurrency) {
            let body = json!({ "tenant": slug, "email": email, "password": PASSWORD });
            let (s, t) = http(&gateway, &ca, http::Method::POST, "/v1/auth/login", &[], Some(body)).await?;
            if s != 200 {
                bail!("login for /v1/me: {s} {t} (start dev up with STRONGROOM_DEV_RATE_LIMITS=off)");
            }
            v.push(format!("Bearer {}", t["access_token"].as_str().unwrap_or_default()));
        }
        v
    };
    let tokens = Arc::new(tokens);
    let mut conns = Vec::with_capacity(opts.concurrency);
    for _ in 0..opts.concurrency {
        conns.push(tokio::sync::Mutex::new(crate::bench::KeptAlive::connect(&gateway, &ca).await?));
    }
    let conns = Arc::new(conns);
    let mut me = crate::bench::run_workers("GET /v1/me (gateway)", opts, {
        let (tokens, conns, slug) = (tokens.clone(), conns.clone(), slug.clone());
        move |w| {
            let (tokens, conns, slug) = (tokens.clone(), conns.clone(), slug.clone());
            async move {
                let hdr = [("authorization", tokens[w].as_str()), ("x-strongroom-tenant", slug.as_str())];
                match conns[w].lock().await.request(http::Method::GET, "/v1/me", &hdr, Vec::new()).await {
                    Ok(http::StatusCode::OK) => Ok(()),
                    _ => Err(tonic::Status::unavailable("not 200")),
                }
            }
        }
    })
    .await;
    report.push(me.report());

    // A directory page through the gateway as an administrator reads it: 50 users, each email and
    // display name opened by vault-svc (one transit call per page).
    let admin = Arc::new(bearer.clone());
    let mut list = crate::bench::run_workers("GET /v1/users?page_size=50 (gateway)", opts, {
        let (admin, conns, slug) = (admin.clone(), conns.clone(), slug.clone());
        move |w| {
            let (admin, conns, slug) = (admin.clone(), conns.clone(), slug.clone());
            async move {
                let hdr = [("authorization", admin.as_str()), ("x-strongroom-tenant", slug.as_str())];
                match conns[w].lock().await.request(http::Method::GET, "/v1/users?page_size=50", &hdr, Vec::new()).await
                {
                    Ok(http::StatusCode::OK) => Ok(()),
                    _ => Err(tonic::Status::unavailable("not 200")),
                }
            }
        }
    })
    .await;
    report.push(list.report());
    println!(
        "{}",
        json!({ "bench": "auth", "tenant": slug, "concurrency": opts.concurrency, "directory": directory, "results": report })
    );
    Ok(())
}
