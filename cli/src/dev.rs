//! `strongroom dev up`: the whole constellation on this machine. It owns every process it starts
//! (a throw-away PostgreSQL cluster and Redis when none is configured, the five services, and with
//! `--observability` a Prometheus scraping them) and stops all of them, and removes the throw-away
//! cluster, on SIGINT/SIGTERM or on any failure.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use kit::config::TlsConfig;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

use crate::ops::{Endpoints, create_tenant};

/// The demo tenant's first owner; the generated password goes to `D/demo-owner.json` (0600).
const DEMO_OWNER: &str = "owner@demo.example";

const SERVICES: [&str; 4] = ["auth", "vault", "audit", "ledger"];

/// Everything `dev up` started; stopped in reverse order when dropped.
#[derive(Default)]
struct Stack {
    /// The five services, then Prometheus when asked for: any of them exiting stops everything.
    services: Vec<(String, Child)>,
    redis: Option<(Child, tempfile::TempDir)>,
    postgres: Option<kit::localpg::LocalPostgres>,
}

fn terminate(name: &str, child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("{name} did not stop within 15 s; killing it");
    let _ = child.kill();
    let _ = child.wait();
}

impl Stack {
    fn shutdown(&mut self) {
        while let Some((name, mut child)) = self.services.pop() {
            terminate(&name, &mut child);
        }
        if let Some((mut child, _dir)) = self.redis.take() {
            terminate("redis-server", &mut child);
        }
        // Stops the server and deletes the cluster.
        drop(self.postgres.take());
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A fresh `browser.csrf_key` for the gateway: standard base64 of 32 random bytes.
fn csrf_key() -> anyhow::Result<String> {
    use base64::Engine;
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| anyhow!("random csrf key: {e}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(key))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?)))
}

fn start_postgres(stack: &mut Stack, wal_spool: Option<&Path>) -> anyhow::Result<String> {
    // A development cluster: a commit may be lost if PostgreSQL itself crashes.
    let mut options = "-c max_connections=200 -c synchronous_commit=off -c autovacuum_naptime=10s".to_owned();
    if let Some(spool) = wal_spool {
        let command = crate::backup::archive_command(spool);
        options.push_str(&format!(" -c archive_mode=on -c 'archive_command={command}'"));
    }
    // Per-statement timings for whoever profiles the dev stack (`CREATE EXTENSION pg_stat_statements`),
    // when this PostgreSQL ships the module; a server without it must still start.
    if kit::localpg::LocalPostgres::has_module("pg_stat_statements") {
        options.push_str(" -c shared_preload_libraries=pg_stat_statements");
    }
    let cluster = kit::localpg::LocalPostgres::start(&options).map_err(|e| anyhow!(e))?;
    let url = cluster.url();
    stack.postgres = Some(cluster);
    Ok(url)
}

fn start_redis(stack: &mut Stack) -> anyhow::Result<String> {
    let dir = tempfile::Builder::new().prefix("strongroom-redis-").tempdir()?;
    let port = free_port()?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("redis-server not found: install Redis (deploy/setup.sh) or set REDIS_URL")?;
    stack.redis = Some((child, dir));
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(format!("redis://127.0.0.1:{port}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("redis-server did not start on port {port}")
}

fn with_user(admin_url: &str, user: &str) -> anyhow::Result<String> {
    let mut url = url::Url::parse(admin_url).context("DATABASE_URL")?;
    url.set_username(user).map_err(|()| anyhow!("DATABASE_URL cannot carry a user"))?;
    url.set_password(None).map_err(|()| anyhow!("DATABASE_URL cannot carry a password"))?;
    Ok(url.to_string())
}

fn tls(pki: &Path, name: &str) -> serde_json::Value {
    json!({
        "ca": pki.join("ca.pem"),
        "cert": pki.join(format!("{name}.pem")),
        "key": pki.join(format!("{name}-key.pem")),
    })
}

/// The SoftHSM2 library, if installed.
fn softhsm_module() -> Option<PathBuf> {
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// The vault's master key for development: a SoftHSM2 token under `dir/softhsm` (created once,
/// kept across runs), or — when SoftHSM2 is not installed — a local key file, with a warning.
/// Returns the `[service]` settings and the environment vault-svc needs.
fn vault_kms(dir: &Path) -> anyhow::Result<(serde_json::Value, Vec<(String, PathBuf)>)> {
    let hsm = dir.join("softhsm");
    let Some(module) = softhsm_module() else {
        eprintln!("warning: SoftHSM2 is not installed (deploy/setup.sh installs it); the vault uses a local key file");
        let settings =
            json!({ "kms": { "provider": "local", "key_file": dir.join("vault-master.key"), "create": true } });
        return Ok((settings, Vec::new()));
    };
    let conf = hsm.join("softhsm2.conf");
    let token_file = hsm.join("token.json");
    if !token_file.exists() {
        std::fs::create_dir_all(hsm.join("tokens"))?;
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                hsm.join("tokens").display()
            ),
        )?;
        let (pin, so_pin) = (uuid::Uuid::new_v4().simple().to_string(), uuid::Uuid::new_v4().simple().to_string());
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", "strongroom-dev", "--so-pin", &so_pin, "--pin", &pin])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .context("softhsm2-util")?;
        if !out.status.success() {
            bail!("softhsm2-util --init-token failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        kit::pki::write_private(&token_file, &json!({ "label": "strongroom-dev", "pin": pin }).to_string())?;
    }
    let token: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&token_file)?)?;
    let settings = json!({ "kms": {
        "provider": "pkcs11",
        "module": module,
        "token_label": token["label"],
        "pin": token["pin"],
        "key_label": "strongroom-master",
        "create_key": true,
    } });
    Ok((settings, vec![("SOFTHSM2_CONF".to_owned(), conf)]))
}

fn spawn(
    stack: &mut Stack,
    bin_dir: &Path,
    name: &str,
    config: &Path,
    logs: &Path,
    env: &[(String, PathBuf)],
) -> anyhow::Result<()> {
    let binary = bin_dir.join(if name == "gateway" { "gateway".to_owned() } else { format!("{name}-svc") });
    if !binary.is_file() {
        bail!("{} not found: build the workspace first (cargo build --workspace --bins)", binary.display());
    }
    let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
    let mut cmd = Command::new(&binary);
    cmd.arg("--config").arg(config).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    // Our own STRONGROOM_* variables (the CLI's, a test's) are no configuration of the services.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("STRONGROOM_") {
            cmd.env_remove(key);
        }
    }
    for (key, value) in env {
        cmd.env(key, value);
    }
    let child = cmd.spawn().with_context(|| format!("starting {}", binary.display()))?;
    stack.services.push((name.to_owned(), child));
    Ok(())
}

fn check_children(stack: &mut Stack) -> anyhow::Result<()> {
    for (name, child) in &mut stack.services {
        if let Some(status) = child.try_wait()? {
            bail!("{name} exited ({status}); see its log");
        }
    }
    Ok(())
}

/// Polls `ready` every 200 ms until it answers true; fails when a started process exits or after
/// `deadline`.
async fn poll_until<F, Fut>(stack: &mut Stack, what: &str, deadline: Instant, mut ready: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    loop {
        check_children(stack)?;
        if ready().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} is not ready after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_ready(
    stack: &mut Stack,
    endpoints: &Endpoints,
    gateway: &str,
    ca: &Path,
    prometheus: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let certs = kit::tls::CertStore::load(&endpoints.tls)?;
    for (name, url) in [
        ("auth", &endpoints.auth),
        ("vault", &endpoints.vault),
        ("audit", &endpoints.audit),
        ("ledger", &endpoints.ledger),
    ] {
        let channel = kit::client::channel(&certs, url, &kit::Identity::new(name)?, Duration::from_secs(5))?;
        let client = tonic_health::pb::health_client::HealthClient::new(channel);
        poll_until(stack, name, deadline, || {
            let mut client = client.clone();
            async move {
                client.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.is_ok_and(|r| {
                    r.get_ref().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                })
            }
        })
        .await?;
    }
    let config = kit::tls::ca_only_client_config(&std::fs::read(ca)?, &[b"http/1.1"])?;
    let readyz = format!("{gateway}/readyz");
    poll_until(stack, "gateway", deadline, || async {
        kit::tls::https_request(config.clone(), http::Method::GET, &readyz, &[], Vec::new())
            .await
            .is_ok_and(|(status, _, _)| status.is_success())
    })
    .await?;
    if let Some(addr) = prometheus {
        poll_until(stack, "prometheus", deadline, || crate::prometheus::ready(addr)).await?;
    }
    Ok(())
}

/// Runs the constellation from `dir` until SIGINT/SIGTERM; with `observability`, also a Prometheus
/// that scrapes every process and evaluates the alert rules.
/// With `--backups`: the WAL spool (writable by the cluster's server) and the backup settings
/// under the dev directory, sealed by the development HSM token.
fn backup_settings(dir: &Path, kms: &serde_json::Value, data_directory: &Path, port: &str) -> anyhow::Result<PathBuf> {
    let root = dir.join("backups");
    let spool = root.join("spool");
    std::fs::create_dir_all(&spool)?;
    let mut kms = kms["kms"].clone();
    if kms["provider"] == "pkcs11" {
        kms["key_label"] = json!("strongroom-backup");
    }
    let settings = json!({
        "backup": {
            "repository": root.join("repository"),
            "spool": spool,
            "data_directory": data_directory,
            "port": port.parse::<u16>()?,
            "socket_directory": data_directory.parent().unwrap_or(data_directory),
            "sealed_passphrase": root.join("passphrase.sealed"),
            "journal": root.join("journal"),
            "journal_ca": dir.join("pki").join("ca.pem"),
            "metrics_dir": root.join("metrics"),
        },
        "kms": kms,
    });
    let path = dir.join("backup.toml");
    kit::pki::write_private(&path, &toml::to_string(&settings)?)?;
    Ok(path)
}

/// Lets the cluster's server (`postgres` when dev up runs as root) write the WAL spool.
fn spool_for_postgres(spool: &Path) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let id = |flag: &str| -> anyhow::Result<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    };
    std::os::unix::fs::chown(spool, Some(id("-u")?), Some(id("-g")?))?;
    Ok(())
}

pub async fn up(dir: &Path, observability: bool, backups: bool) -> anyhow::Result<()> {
    // Installed before anything starts, so SIGTERM during start-up still stops what was started.
    let signal = kit::server::shutdown_signal();
    tokio::pin!(signal);
    // Before anything starts: a missing binary is one line, not a half-started stack.
    let prometheus_binary = if observability { Some(crate::prometheus::binary()?) } else { None };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let pki = dir.join("pki");
    kit::pki::init_dir(&pki).context("development PKI")?;
    let (configs, logs) = (dir.join("config"), dir.join("logs"));
    std::fs::create_dir_all(&configs)?;
    std::fs::create_dir_all(&logs)?;
    let bin_dir =
        std::env::current_exe()?.parent().map(Path::to_path_buf).ok_or_else(|| anyhow!("no binary directory"))?;

    let mut stack = Stack::default();
    let spool = dir.join("backups").join("spool");
    if backups {
        if std::env::var("DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
            bail!("--backups needs the cluster dev up starts itself (unset DATABASE_URL)");
        }
        std::fs::create_dir_all(&spool)?;
        spool_for_postgres(&spool)?;
    }
    let admin_url = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => start_postgres(&mut stack, backups.then_some(spool.as_path()))?,
    };
    let redis_url = match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => start_redis(&mut stack)?,
    };

    // The operator's step, as in production: the services get only their login roles.
    let admin = secrecy::SecretString::from(admin_url.clone());
    let migrated = tokio::select! {
        r = crate::migrate::run(&admin, &[]) => r.context("strongroom migrate")?,
        () = &mut signal => {
            stack.shutdown();
            return Err(anyhow!("interrupted during start-up"));
        }
    };
    println!("strongroom dev up: database migrated {migrated}");
    kit::pki::write_private(&crate::migrate::dev_admin_url_file(&dir), &admin_url)?;

    let mut grpc = Vec::new();
    for _ in SERVICES {
        grpc.push(free_port()?);
    }
    let url = |i: usize| format!("https://127.0.0.1:{}", grpc[i]);
    let upstreams = json!({ "auth": url(0), "vault": url(1), "audit": url(2), "ledger": url(3) });
    let telemetry = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) => json!({ "log": "info", "otlp_endpoint": endpoint }),
        Err(_) => json!({ "log": "info" }),
    };
    let (mut vault_settings, vault_env) = vault_kms(&dir)?;
    // With backups, erasures and terminations are journaled beside the repository.
    let journal = backups.then(|| dir.join("backups").join("journal"));
    if let Some(cluster) = stack.postgres.as_ref().filter(|_| backups) {
        let port = cluster.url().rsplit_once(':').and_then(|(_, p)| p.split('/').next()).unwrap_or("5432").to_owned();
        let config = backup_settings(&dir, &vault_settings, &cluster.dir().join("data"), &port)?;
        let strongroom = bin_dir.join("strongroom");
        let out = Command::new(&strongroom)
            .args(["backup", "--backup-config"])
            .arg(&config)
            .arg("init")
            .envs(vault_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .context("strongroom backup init")?;
        if !out.status.success() {
            stack.shutdown();
            bail!("strongroom backup init: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let log = std::fs::File::create(logs.join("backup-archive.log"))?;
        let child = Command::new(&strongroom)
            .args(["backup", "--backup-config"])
            .arg(&config)
            .args(["archive", "--watch", "5"])
            .envs(vault_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("strongroom backup archive")?;
        stack.services.push(("backup-archive".to_owned(), child));
        let env: Vec<String> = vault_env.iter().map(|(k, v)| format!("{k}={}", v.display())).collect();
        println!(
            "strongroom dev up: backups on: {} strongroom backup --backup-config {} run|list|verify|expire|restore",
            env.join(" "),
            config.display()
        );
    }
    if let Some(journal) = &journal {
        vault_settings["erasure_journal"] = json!(journal);
    }
    // Each process's admin listener, named as its binary: Prometheus's scrape targets.
    let mut admin_addrs = Vec::new();
    for (i, name) in SERVICES.iter().enumerate() {
        let admin_addr = free_addr()?;
        admin_addrs.push((format!("{name}-svc"), admin_addr));
        let mut config = json!({
            "env": "development",
            "grpc": { "listen": format!("127.0.0.1:{}", grpc[i]) },
            "admin": { "listen": admin_addr.to_string() },
            "tls": tls(&pki, name),
            "database": { "url": with_user(&admin_url, &format!("strongroom_{name}"))?, "max_connections": 5 },
            "upstreams": upstreams,
            "telemetry": telemetry,
            "jwt": { "revocations_url": redis_url },
        });
        let env = if *name == "vault" {
            config["service"] = vault_settings.clone();
            vault_env.clone()
        } else {
            if *name == "auth" {
                // Passkeys: browsers reach the gateway as https://localhost:<port>.
                let webauthn =
                    json!({ "rp_id": "localhost", "origins": ["https://localhost"], "allow_any_port": true });
                config["service"] = json!({ "redis_url": redis_url, "webauthn": webauthn });
                if let Some(journal) = &journal {
                    config["service"]["erasure_journal"] = json!(journal);
                }
            }
            Vec::new()
        };
        let path = configs.join(format!("{name}.toml"));
        kit::pki::write_private(&path, &toml::to_string(&config)?)?;
        spawn(&mut stack, &bin_dir, name, &path, &logs, &env)?;
    }
    let gateway_port = free_port()?;
    let gateway_admin = free_addr()?;
    admin_addrs.push(("gateway".to_owned(), gateway_admin));
    let gateway_config = json!({
        "env": "development",
        "http": { "listen": format!("127.0.0.1:{gateway_port}") },
        "admin": { "listen": gateway_admin.to_string() },
        "tls": tls(&pki, "gateway"),
        "browser": {
            "csrf_key": csrf_key()?,
            "allowed_origins": [format!("https://127.0.0.1:{gateway_port}"), format!("https://localhost:{gateway_port}")],
        },
        "upstreams": upstreams,
        "redis": { "url": redis_url },
        "telemetry": telemetry,
        "jwt": { "revocations_url": redis_url },
    });
    // Benchmarks from one loopback address would only measure the per-IP limits.
    let mut gateway_config = gateway_config;
    if std::env::var("STRONGROOM_DEV_RATE_LIMITS").is_ok_and(|v| v == "off") {
        gateway_config["rate_limits"] = json!({ "enabled": false });
        println!("strongroom dev up: gateway rate limits are OFF (STRONGROOM_DEV_RATE_LIMITS=off)");
    }
    let gateway_path = configs.join("gateway.toml");
    kit::pki::write_private(&gateway_path, &toml::to_string(&gateway_config)?)?;
    spawn(&mut stack, &bin_dir, "gateway", &gateway_path, &logs, &[])?;
    let prometheus = match prometheus_binary {
        Some(binary) => {
            let prom_dir = dir.join("prometheus");
            let config = crate::prometheus::write_config(&prom_dir, &admin_addrs)?;
            let addr = free_addr()?;
            let child = crate::prometheus::spawn(&binary, &config, &prom_dir, addr, &logs.join("prometheus.log"))?;
            stack.services.push(("prometheus".to_owned(), child));
            Some(addr)
        }
        None => None,
    };

    let endpoints = Endpoints {
        admin_url: Some(admin),
        tls: TlsConfig {
            ca: pki.join("ca.pem"),
            cert: pki.join("operator.pem"),
            key: pki.join("operator-key.pem"),
            reload_interval_ms: 60_000,
        },
        auth: url(0),
        vault: url(1),
        audit: url(2),
        ledger: url(3),
    };
    let gateway = format!("https://127.0.0.1:{gateway_port}");
    let ca = pki.join("ca.pem");
    let startup = async {
        wait_ready(&mut stack, &endpoints, &gateway, &ca, prometheus).await?;
        let demo = create_tenant(&endpoints, "demo", Some(DEMO_OWNER)).await.context("provisioning tenant demo")?;
        if let Some(password) = demo["owner"]["password"].as_str() {
            let owner = json!({ "tenant": "demo", "email": DEMO_OWNER, "password": password });
            kit::pki::write_private(&dir.join("demo-owner.json"), &serde_json::to_string_pretty(&owner)?)?;
        }
        let mut doc = json!({ "gateway": gateway, "auth": url(0), "vault": url(1), "audit": url(2), "ledger": url(3), "ca": ca,
                    "redis": redis_url });
        if let Some(addr) = prometheus {
            doc["prometheus"] = json!(format!("http://{addr}"));
        }
        if let Some(journal) = &journal {
            doc["journal"] = json!(journal);
        }
        std::fs::write(dir.join("endpoints.json"), serde_json::to_string_pretty(&doc)?)?;
        let state = json!({
            "pids": stack.services.iter().map(|(n, c)| json!({ "name": n, "pid": c.id() })).collect::<Vec<_>>(),
            "redis_pid": stack.redis.as_ref().map(|(c, _)| c.id()),
            "postgres_dir": stack.postgres.as_ref().map(|p| p.dir().to_path_buf()),
        });
        std::fs::write(dir.join("dev-state.json"), serde_json::to_string_pretty(&state)?)?;
        println!("strongroom dev up: tenant demo provisioned");
        println!("  gateway    {gateway}");
        for (i, name) in SERVICES.iter().enumerate() {
            println!("  {name:<10} {}", url(i));
        }
        if let Some(addr) = prometheus {
            println!("  prometheus http://{addr}");
        }
        println!("  ca         {}", ca.display());
        println!("  logs       {}", logs.display());
        println!("ready");
        use std::io::Write;
        std::io::stdout().flush()?;
        Ok::<_, anyhow::Error>(())
    };
    let result = tokio::select! {
        r = startup => r,
        () = &mut signal => Err(anyhow!("interrupted during start-up")),
    };
    if let Err(e) = result {
        stack.shutdown();
        return Err(e);
    }

    let outcome = loop {
        tokio::select! {
            () = &mut signal => break Ok(()),
            () = tokio::time::sleep(Duration::from_millis(500)) => {
                if let Err(e) = check_children(&mut stack) {
                    break Err(e);
                }
            }
        }
    };
    println!("stopping");
    stack.shutdown();
    let _ = std::fs::remove_file(dir.join("endpoints.json"));
    println!("stopped");
    outcome
}
