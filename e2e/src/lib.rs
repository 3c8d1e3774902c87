//! Boots the constellation in-process for cross-service tests: every service is the real `run`
//! on a loopback port 0 listener, over real mTLS, against a database of the test's own.

pub mod conformance;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use kit::config::UpstreamsConfig;
use kit::server::Listeners;
use kit::testing::{TestDb, TestPki, channel, https, listener, service_config, wait_serving};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use kit::testing;

pub const SERVICES: [&str; 4] = ["auth", "vault", "audit", "ledger"];

/// Every service's migrations, as `strongroom migrate` applies them.
pub const MIGRATIONS: [kit::migrate::MigrationSet; 4] =
    [auth_svc::MIGRATIONS, vault_svc::MIGRATIONS, audit_svc::MIGRATIONS, ledger_svc::MIGRATIONS];

/// The operator's step on `db` (what `strongroom migrate` runs): roles, the `control` schema and
/// every registered tenant's schema. The services themselves hold no administrative URL.
#[allow(clippy::expect_used)]
pub async fn migrate(db: &TestDb) -> kit::migrate::Migrator {
    let migrator = kit::migrate::Migrator::connect_lazy(&db.admin_url(), &MIGRATIONS).expect("migrator");
    migrator.migrate(&[]).await.expect("migrate");
    migrator
}

/// A running service.
pub struct Running {
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), String>>,
}

impl Running {
    /// Triggers graceful shutdown without waiting.
    pub fn trigger_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Stops and waits for the server to finish.
    pub async fn stop(mut self) -> Result<(), String> {
        self.trigger_stop();
        self.task.await.map_err(|e| e.to_string())?
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// A SoftHSM2 token of the test's own (in the token store `SOFTHSM2_CONF` names, set for every
/// cargo command by `.cargo/config.toml`), deleted afterwards.
pub struct SoftHsm {
    pub label: String,
    pub pin: String,
}

#[allow(clippy::expect_used, clippy::panic)]
impl SoftHsm {
    /// The SoftHSM2 PKCS#11 library.
    pub fn module() -> std::path::PathBuf {
        for candidate in [
            "/usr/lib/softhsm/libsofthsm2.so",
            "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
            "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
            "/usr/local/lib/softhsm/libsofthsm2.so",
        ] {
            if std::path::Path::new(candidate).is_file() {
                return candidate.into();
            }
        }
        panic!("libsofthsm2.so not found: install softhsm2 (deploy/setup.sh)");
    }

    pub fn create() -> Self {
        let conf = std::path::PathBuf::from(
            std::env::var("SOFTHSM2_CONF").expect("SOFTHSM2_CONF (set by .cargo/config.toml)"),
        );
        let dir = conf.parent().expect("conf dir").to_path_buf();
        std::fs::create_dir_all(dir.join("tokens")).expect("token dir");
        if !conf.exists() {
            let tmp = dir.join(format!("softhsm2.conf.{}", std::process::id()));
            let text = format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.join("tokens").display()
            );
            std::fs::write(&tmp, text).expect("write conf");
            std::fs::rename(&tmp, &conf).expect("install conf");
        }
        let label = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..24]);
        let pin = uuid::Uuid::new_v4().simple().to_string();
        let so_pin = uuid::Uuid::new_v4().simple().to_string();
        // SoftHSM's file store is not safe against concurrent token creation by several
        // processes (tests run one per process): take a file lock, and retry a failed attempt.
        let _guard = store_lock(&dir);
        let mut last = String::new();
        for _ in 0..5 {
            let out = std::process::Command::new("softhsm2-util")
                .args(["--init-token", "--free", "--label", &label, "--so-pin", &so_pin, "--pin", &pin])
                .output()
                .expect("softhsm2-util (install softhsm2)");
            if out.status.success() {
                return Self { label, pin };
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("softhsm2-util: {last}");
    }

    /// The vault settings that use this token, generating the master key in it.
    pub fn vault_settings(&self) -> vault_svc::VaultSettings {
        vault_svc::VaultSettings {
            kms: Some(self.kms("strongroom-master")),
            previous_kms: Vec::new(),
            key_cache_ttl_secs: 300,
            key_cache_size: 1000,
            count_audit_interval_secs: 60,
            retention_interval_ms: 3_600_000,
            erasure_journal: None,
        }
    }

    /// The master key labelled `key_label` in this token (generated if missing).
    pub fn kms(&self, key_label: &str) -> vault_svc::KmsConfig {
        vault_svc::KmsConfig::Pkcs11 {
            module: Self::module(),
            token_label: self.label.clone(),
            pin: self.pin.clone().into(),
            key_label: key_label.into(),
            create_key: true,
        }
    }
}

/// An exclusive lock on the token store, released when dropped.
fn store_lock(dir: &std::path::Path) -> Option<std::fs::File> {
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(".lock")).ok()?;
    file.lock().ok()?;
    Some(file)
}

impl Drop for SoftHsm {
    fn drop(&mut self) {
        let dir = std::env::var("SOFTHSM2_CONF")
            .ok()
            .and_then(|c| std::path::Path::new(&c).parent().map(|p| p.to_path_buf()));
        let _guard = dir.as_deref().and_then(store_lock);
        let _ = std::process::Command::new("softhsm2-util")
            .args(["--delete-token", "--token", &self.label])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A PostgreSQL client program: from `PATH`, else the newest under `/usr/lib/postgresql`.
pub fn pg_binary(name: &str) -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join(name).is_file() {
                return dir.join(name);
            }
        }
    }
    let mut found: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path().join("bin").join(name)).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    found.sort();
    found.pop().unwrap_or_else(|| panic!("{name} not found"))
}

/// A plain-text `pg_dump` of the whole test database, as a backup would hold it.
pub fn pg_dump(db: &TestDb) -> String {
    let url = secrecy::ExposeSecret::expose_secret(&db.admin_url()).to_owned();
    let dump = std::process::Command::new(pg_binary("pg_dump")).arg("--dbname").arg(&url).output().expect("pg_dump");
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    String::from_utf8_lossy(&dump.stdout).into_owned()
}

/// Server-side calls of gRPC service `rpc_service` (e.g. `strongroom.vault.v1.TransitService`)
/// the process has counted, from the Prometheus text at `admin`.
pub async fn rpc_calls(admin: SocketAddr, rpc_service: &str) -> u64 {
    let label = format!("rpc_service=\"{rpc_service}\"");
    scrape_metrics(admin)
        .await
        .lines()
        .filter(|l| l.starts_with("rpc_server_call_duration_seconds_count{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// `GET /metrics` on a server's admin listener (plain HTTP/1.1): the Prometheus text.
pub async fn scrape_metrics(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("admin");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

/// auth-svc's settings in tests.
pub fn auth_settings() -> auth_svc::AuthSettings {
    auth_svc::AuthSettings {
        redis_url: Some(kit::testing::redis_url().into()),
        // Tests see keys rotate without waiting out the JWKS cache.
        signing_key_publish_ahead_secs: 0,
        // Only when a test asks (`start_auth_replica_with`).
        signing_key_rotate_after_secs: 0,
        // Short, so tests see a reuse after the grace window quickly.
        refresh_grace_secs: 2,
        // Browsers reach the gateway as https://localhost:<port> (an IP address is no RP id).
        webauthn: auth_svc::WebauthnSettings {
            rp_id: Some("localhost".into()),
            rp_name: None,
            origins: vec!["https://localhost".into()],
            allow_any_port: true,
        },
        ..Default::default()
    }
}

fn spawn_with(
    name: &'static str,
    cfg: kit::config::ServiceConfig,
    listeners: Listeners,
    vault_settings: vault_svc::VaultSettings,
    auth_settings: auth_svc::AuthSettings,
) -> Running {
    let (grpc, admin) = (cfg.grpc.listen, cfg.admin.listen);
    let (stop, shutdown) = shutdown_pair();
    let task = tokio::spawn(async move {
        let r = match name {
            "auth" => auth_svc::run(cfg.with_settings(auth_settings), listeners, shutdown).await,
            "vault" => vault_svc::run(cfg.with_settings(vault_settings), listeners, shutdown).await,
            "audit" => {
                audit_svc::run(cfg.with_settings(audit_svc::AuditSettings::default()), listeners, shutdown).await
            }
            _ => ledger_svc::run(cfg.with_settings(ledger_svc::LedgerSettings::default()), listeners, shutdown).await,
        };
        r.map_err(|e| e.to_string())
    });
    Running { grpc, admin, stop: Some(stop), task }
}

/// The whole constellation (or a part of it).
pub struct Constellation {
    pub db: TestDb,
    /// The operator's migration step on `db` (holds the administrative URL; no service does).
    pub migrator: kit::migrate::Migrator,
    pub pki: TestPki,
    pub services: HashMap<&'static str, Running>,
    pub gateway: Option<Running>,
    pub hsm: SoftHsm,
    /// The Redis of every service and the gateway.
    pub redis: String,
    upstreams: UpstreamsConfig,
}

fn shutdown_pair() -> (oneshot::Sender<()>, impl std::future::Future<Output = ()> + Send + 'static) {
    let (tx, rx) = oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

#[allow(clippy::expect_used)]
impl Constellation {
    /// Starts the four backend services (and the gateway when `with_gateway`), waits until all
    /// report SERVING.
    pub async fn start(with_gateway: bool) -> Self {
        Self::start_on(TestDb::create().await, with_gateway).await
    }

    /// The constellation on a database of the caller's, e.g. on a PostgreSQL of the test's own.
    pub async fn start_on(db: TestDb, with_gateway: bool) -> Self {
        Self::start_with(db, kit::testing::redis_url(), with_gateway).await
    }

    /// The constellation on a database and a Redis of the caller's (e.g. a [`PrivateRedis`]).
    pub async fn start_with(db: TestDb, redis: String, with_gateway: bool) -> Self {
        kit::tls::install_crypto_provider();
        Self::start_with_pki(db, redis, with_gateway, TestPki::new()).await
    }

    /// [`Self::start_with`] under the caller's PKI (whose CA also signed, say, the certificates of
    /// a Redis or a PostgreSQL reached over TLS).
    pub async fn start_with_pki(db: TestDb, redis: String, with_gateway: bool, pki: TestPki) -> Self {
        Self::start_with_keys(db, redis, with_gateway, pki, SoftHsm::create()).await
    }

    /// [`Self::start_with_pki`] with the master key in `hsm`: a constellation started again on
    /// data it wrote before (e.g. restored from a backup), see [`Self::stop_keeping_keys`].
    pub async fn start_with_keys(db: TestDb, redis: String, with_gateway: bool, pki: TestPki, hsm: SoftHsm) -> Self {
        kit::tls::install_crypto_provider();
        let migrator = migrate(&db).await;
        let mut bound = Vec::new();
        for name in SERVICES {
            let (grpc, grpc_addr) = listener().await;
            let (admin, admin_addr) = listener().await;
            bound.push((name, Listeners { grpc, admin }, grpc_addr, admin_addr));
        }
        let addr = |n: &str| bound.iter().find(|b| b.0 == n).map(|b| https(b.2));
        let upstreams = UpstreamsConfig {
            auth: addr("auth"),
            vault: addr("vault"),
            audit: addr("audit"),
            ledger: addr("ledger"),
            timeout_ms: 10_000,
        };
        let mut c = Constellation { db, migrator, pki, services: HashMap::new(), gateway: None, hsm, redis, upstreams };
        for (name, listeners, grpc, admin) in bound {
            c.spawn_service(name, listeners, grpc, admin);
        }
        for name in SERVICES {
            c.wait_serving(name).await;
        }
        c.wait_revocations_loaded().await;
        if with_gateway {
            c.start_gateway().await;
        }
        c
    }

    fn spawn_service(&mut self, name: &'static str, listeners: Listeners, grpc: SocketAddr, admin: SocketAddr) {
        let cfg = self.service_config(name, grpc, admin);
        let running = spawn_with(name, cfg, listeners, self.vault_settings(), self.auth_settings());
        self.services.insert(name, running);
    }

    /// A service's test configuration, on this constellation's Redis.
    fn service_config(&self, name: &str, grpc: SocketAddr, admin: SocketAddr) -> kit::config::ServiceConfig {
        let mut cfg = service_config(name, grpc, admin, &self.db, &self.pki, self.upstreams.clone());
        cfg.jwt.revocations_url = Some(self.redis.clone().into());
        cfg
    }

    /// A client of this constellation's Redis (over TLS for `rediss://`, trusting its CA).
    pub fn redis_client(&self) -> redis::Client {
        kit::redis::client(&self.redis, Some(&self.pki.path("ca.pem"))).expect("redis url")
    }

    /// auth-svc's test settings, on this constellation's Redis, journaling terminations.
    fn auth_settings(&self) -> auth_svc::AuthSettings {
        auth_svc::AuthSettings {
            redis_url: Some(self.redis.clone().into()),
            erasure_journal: Some(self.journal_dir()),
            ..auth_settings()
        }
    }

    /// vault-svc's test settings: the master key in this constellation's HSM token, journaling shreds.
    pub fn vault_settings(&self) -> vault_svc::VaultSettings {
        vault_svc::VaultSettings { erasure_journal: Some(self.journal_dir()), ..self.hsm.vault_settings() }
    }

    /// The erasure journal every service of this constellation writes (kept with the PKI, so a
    /// constellation started again with [`Self::start_with_keys`] writes the same one).
    pub fn journal_dir(&self) -> std::path::PathBuf {
        self.pki.path("erasure-journal")
    }

    /// Waits until auth-svc has marked the revocation list complete: until then every verifier
    /// refuses tokens (a Redis of the test's own starts without the marker).
    async fn wait_revocations_loaded(&self) {
        let client = self.redis_client();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && let Ok(true) = redis::AsyncCommands::exists::<_, bool>(&mut conn, kit::revocation::LOADED_KEY).await
            {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "auth-svc never loaded the revocation list");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts another replica of `name` on new ports (same database); returns it.
    pub async fn start_replica(&self, name: &'static str) -> Running {
        self.start_replica_with(name, self.vault_settings()).await
    }

    /// Starts another replica; a vault replica gets `vault_settings`.
    pub async fn start_replica_with(&self, name: &'static str, vault_settings: vault_svc::VaultSettings) -> Running {
        self.replica(name, vault_settings, self.auth_settings()).await
    }

    /// Starts another auth-svc replica with the test settings changed by `adjust`.
    pub async fn start_auth_replica_with(&self, adjust: impl FnOnce(&mut auth_svc::AuthSettings)) -> Running {
        let mut settings = self.auth_settings();
        adjust(&mut settings);
        self.replica("auth", self.vault_settings(), settings).await
    }

    async fn replica(
        &self,
        name: &'static str,
        vault_settings: vault_svc::VaultSettings,
        auth_settings: auth_svc::AuthSettings,
    ) -> Running {
        let (grpc, grpc_addr) = listener().await;
        let (admin, admin_addr) = listener().await;
        let cfg = self.service_config(name, grpc_addr, admin_addr);
        let mut running = spawn_with(name, cfg, Listeners { grpc, admin }, vault_settings, auth_settings);
        let serving = wait_serving(channel(&self.pki, "operator", grpc_addr, name), "", Duration::from_secs(60));
        tokio::select! {
            r = serving => r.expect("replica serving"),
            r = &mut running.task => panic!("replica {name} stopped: {r:?}"),
        }
        running
    }

    async fn start_gateway(&mut self) {
        self.start_gateway_with(|_| {}).await;
    }

    /// Starts the gateway with its test configuration changed by `adjust` (for a constellation
    /// started without one), and waits until it is ready.
    pub async fn start_gateway_with(&mut self, adjust: impl FnOnce(&mut gateway::GatewayConfig)) {
        let (http, http_addr) = listener().await;
        let (admin, admin_addr) = listener().await;
        let mut cfg = gateway::GatewayConfig {
            // Its own Redis keys, so that tests running in parallel do not share buckets.
            rate_limits: gateway::RateLimitConfig {
                key_prefix: format!("strongroom:test:{}:rl:", uuid::Uuid::new_v4().simple()),
                ..Default::default()
            },
            browser: gateway::BrowserConfig {
                csrf_key: Some(gateway::browser::generate_csrf_key().expect("csrf key").into()),
                allowed_origins: vec![https(http_addr)],
            },
            env: kit::config::Environment::Development,
            http: gateway::HttpConfig {
                listen: http_addr,
                body_limit_bytes: 64 * 1024,
                batch_body_limit_bytes: 4 * 1024 * 1024,
                public_url: Some(https(http_addr)),
                header_read_timeout_ms: 10_000,
                write_timeout_ms: 30_000,
                max_streams: 256,
                max_streams_per_caller: 4,
                // Tests see the summary of anonymous refusals without waiting a minute.
                refusal_summary_interval_ms: 1_000,
            },
            admin: kit::config::ListenConfig { listen: admin_addr },
            tls: self.pki.tls("gateway"),
            upstreams: self.upstreams.clone(),
            redis: gateway::RedisConfig { url: self.redis.clone().into() },
            telemetry: Default::default(),
            jwt: kit::config::JwtConfig { revocations_url: Some(self.redis.clone().into()), ..Default::default() },
            shutdown_grace_ms: 5_000,
        };
        adjust(&mut cfg);
        let (stop, shutdown) = shutdown_pair();
        let task = tokio::spawn(async move {
            gateway::run(cfg, gateway::GatewayListeners { http, admin }, shutdown).await.map_err(|e| e.to_string())
        });
        self.gateway = Some(Running { grpc: http_addr, admin: admin_addr, stop: Some(stop), task });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((status, _, _)) = self.gateway_get("/readyz", &[]).await
                && status == http::StatusCode::OK
            {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "gateway not ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A constellation whose gateway leaves room for many sign-in calls from one address (the
    /// hosted login page's steps and passkey ceremonies are in the sign-in rate class).
    pub async fn start_with_room_to_sign_in() -> Self {
        let mut c = Self::start(false).await;
        c.start_gateway_with(|cfg| {
            let room = Some(gateway::ratelimit::Limit::per_minute(600, 100));
            cfg.rate_limits.auth.per_ip = room;
            cfg.rate_limits.auth.per_principal = room;
        })
        .await;
        c
    }

    pub fn addr(&self, name: &str) -> SocketAddr {
        self.services[name].grpc
    }

    /// A channel to service `name` presenting `as_identity`'s certificate.
    pub fn channel_as(&self, as_identity: &str, name: &str) -> kit::client::Channel {
        channel(&self.pki, as_identity, self.addr(name), name)
    }

    pub async fn wait_serving(&self, name: &str) {
        wait_serving(self.channel_as("operator", name), "", Duration::from_secs(60)).await.expect("serving");
    }

    /// Registers `slug` as `strongroom tenant create` does; returns the tenant id.
    pub async fn create_tenant(&self, slug: &str) -> uuid::Uuid {
        self.register(slug, "").await.0
    }

    /// Registers `slug` with a first owner `email`; returns `(tenant id, owner id, password)`.
    pub async fn create_tenant_with_owner(&self, slug: &str, email: &str) -> (uuid::Uuid, String, String) {
        self.register(slug, email).await
    }

    async fn register(&self, slug: &str, owner_email: &str) -> (uuid::Uuid, String, String) {
        let (tenant, _) = self.register_tenant(slug).await.expect("register tenant");
        if owner_email.is_empty() {
            return (tenant.id.0, String::new(), String::new());
        }
        let mut auth =
            proto::auth::v1::tenant_service_client::TenantServiceClient::new(self.channel_as("operator", "auth"));
        let created = auth
            .create_tenant(proto::auth::v1::CreateTenantRequest {
                slug: slug.into(),
                request_id: uuid::Uuid::new_v4().to_string(),
                owner_email: owner_email.into(),
            })
            .await
            .expect("create owner")
            .into_inner();
        (tenant.id.0, created.owner_id, created.owner_password)
    }

    /// The operator step's registration of `slug` (schema and every service's tables in one
    /// transaction); returns the tenant and whether this call registered it.
    pub async fn register_tenant(&self, slug: &str) -> Result<(kit::Tenant, bool), String> {
        let slug = kit::TenantSlug::parse(slug).map_err(|e| e.to_string())?;
        let (tenant, created, _) = self
            .migrator
            .register(&slug, Some(kit::migrate::tenant_created(&slug)))
            .await
            .map_err(|e| e.to_string())?;
        Ok((tenant, created))
    }

    pub fn gateway_url(&self) -> String {
        https(self.gateway.as_ref().expect("gateway started").grpc)
    }

    /// An HTTPS request to the gateway, trusting the test CA like a browser would.
    pub async fn gateway_request(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(http::StatusCode, http::HeaderMap, serde_json::Value), String> {
        let ca = std::fs::read(self.pki.path("ca.pem")).map_err(|e| e.to_string())?;
        let cfg = kit::tls::ca_only_client_config(&ca, &[b"http/1.1"]).map_err(|e| e.to_string())?;
        let url = format!("{}{path}", self.gateway_url());
        let (status, headers, body) = kit::tls::https_request(cfg, method.clone(), &url, headers, body).await?;
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        conformance::check(&method, path, status, &headers, &json);
        Ok((status, headers, json))
    }

    /// [`Self::gateway_request`] with the body sent chunked (no `Content-Length`), in `chunks`.
    pub async fn gateway_request_chunked(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
        chunks: Vec<Vec<u8>>,
    ) -> Result<(http::StatusCode, http::HeaderMap, serde_json::Value), String> {
        let ca = std::fs::read(self.pki.path("ca.pem")).map_err(|e| e.to_string())?;
        let cfg = kit::tls::ca_only_client_config(&ca, &[b"http/1.1"]).map_err(|e| e.to_string())?;
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(hyper::body::Bytes::from(c))));
        let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
        let url = format!("{}{path}", self.gateway_url());
        let (status, headers, body) = kit::tls::https_request_with(cfg, method.clone(), &url, headers, body).await?;
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        conformance::check(&method, path, status, &headers, &json);
        Ok((status, headers, json))
    }

    pub async fn gateway_get(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(http::StatusCode, http::HeaderMap, serde_json::Value), String> {
        self.gateway_request(http::Method::GET, path, headers, Vec::new()).await
    }

    /// Stops everything gracefully.
    pub async fn stop(mut self) {
        if let Some(g) = self.gateway.take() {
            let _ = g.stop().await;
        }
        for (_, s) in self.services.drain() {
            let _ = s.stop().await;
        }
    }

    /// Stops everything and hands back the PKI and the HSM token with the master key, to start
    /// the services again on the same data ([`Self::start_with_keys`]).
    pub async fn stop_keeping_keys(mut self) -> (TestPki, SoftHsm) {
        if let Some(g) = self.gateway.take() {
            let _ = g.stop().await;
        }
        for (_, s) in self.services.drain() {
            let _ = s.stop().await;
        }
        (self.pki, self.hsm)
    }
}

/// The header (`part` 0) or the claims (`part` 1) of a JWT, decoded without verifying anything:
/// for tests that read what a token says (verification: [`verify_with_jwk`]).
pub fn jwt_part(token: &str, part: usize) -> serde_json::Value {
    use base64::Engine;
    let raw = token.split('.').nth(part).expect("a JWT part");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw).expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON")
}

/// Runs `program args…` with `task` as JSON on its stdin and answers what it printed on stdout,
/// as JSON: the real clients of the tests (e2e/browser: Chromium drivers, the Authlib client).
/// Panics, with its stderr, when it fails or outlives `limit` (it is killed then).
pub async fn run_json_tool(
    program: &str,
    args: &[&str],
    task: &serde_json::Value,
    limit: Duration,
) -> serde_json::Value {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(task.to_string().as_bytes()).await.expect("task");
    drop(stdin);
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not stop within {limit:?}"))
        .expect("output");
    assert!(out.status.success(), "{program} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

/// Files a test serves: path → (content type, body); the test may add some while they are served.
pub type ServedFiles = std::sync::Arc<std::sync::RwLock<std::collections::HashMap<String, (&'static str, Vec<u8>)>>>;

/// Serves `files` over plain HTTP on a free loopback port until the test ends; any other path is
/// 404. For the tests' stand-ins of a relying party's web app (an SPA's origin, a redirect URI
/// that must answer). Answers the request line's path, query ignored.
pub async fn serve_files(files: ServedFiles) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listener");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let files = files.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 65536 {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&request);
                let target = line.split(' ').nth(1).unwrap_or("/");
                let path = target.split('?').next().unwrap_or("/");
                let found = files.read().ok().and_then(|f| f.get(path).cloned());
                let (status, kind, body) = match found {
                    Some((kind, body)) => ("200 OK", kind, body),
                    None => ("404 Not Found", "text/plain", b"not found".to_vec()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body).await;
            });
        }
    });
    addr
}

/// The e2e/browser directory (the browser drivers and the Authlib client), checked to be set up.
pub fn browser_tools() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "no playwright-core in {}: run `bash deploy/browser.sh` (deploy/test.sh does)",
        dir.display()
    );
    dir
}

/// A binary of this workspace built next to the test executable (`cargo build --workspace --bins`
/// first; deploy/test.sh does).
#[allow(clippy::expect_used)]
pub fn binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().and_then(|p| p.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(path.is_file(), "{} missing: run `cargo build --workspace --bins` first", path.display());
    path
}

/// `ErrorInfo.reason` of a status.
/// Scopes the admin transaction `tx` as `service` sees tenant `slug` (`tenant`): its schema, its
/// tenant setting and its login role, so that row-level security applies (to EXPLAIN a service's
/// statement as it runs).
pub async fn act_as_service(tx: &mut sqlx::PgConnection, slug: &str, tenant: uuid::Uuid, service: &str) {
    for sql in [
        format!("SET LOCAL search_path = t_{slug}"),
        format!("SET LOCAL strongroom.tenant_id = '{tenant}'"),
        format!("SET LOCAL ROLE strongroom_{service}"),
    ] {
        sqlx::query(&sql).execute(&mut *tx).await.expect("scope the transaction");
    }
}

pub fn reason(status: &tonic::Status) -> String {
    kit::ApiError::from_status(status).reason.to_string()
}

/// Verifies an access token with `jwk` (one key of the published JWKS, as JSON) using jwt-compact,
/// a JOSE implementation independent of the one that signs (jsonwebtoken): the header names the
/// key and `at+jwt`, the EdDSA signature verifies, and the token has not expired. Returns the
/// claims.
pub fn verify_with_jwk(token: &str, jwk: &serde_json::Value) -> Result<serde_json::Value, String> {
    verify_typed_with_jwk(token, jwk, "at+jwt")
}

/// [`verify_with_jwk`] for a JWT whose header says `typ` (an ID token's is `JWT`).
pub fn verify_typed_with_jwk(token: &str, jwk: &serde_json::Value, typ: &str) -> Result<serde_json::Value, String> {
    use jwt_compact::{Algorithm, AlgorithmExt, TimeOptions, UntrustedToken, alg::Ed25519, jwk::JsonWebKey};
    let key: JsonWebKey<'_> = serde_json::from_value(jwk.clone()).map_err(|e| format!("jwk: {e}"))?;
    let key = <Ed25519 as Algorithm>::VerifyingKey::try_from(&key).map_err(|e| format!("jwk key: {e}"))?;
    let untrusted = UntrustedToken::new(token).map_err(|e| format!("token: {e}"))?;
    let header = untrusted.header();
    if header.key_id.as_deref() != jwk["kid"].as_str() {
        return Err(format!("kid {:?} is not the key's", header.key_id));
    }
    if header.token_type.as_deref() != Some(typ) {
        return Err(format!("typ {:?}", header.token_type));
    }
    let token: jwt_compact::Token<serde_json::Value> =
        Ed25519.validator(&key).validate(&untrusted).map_err(|e| format!("signature: {e}"))?;
    token.claims().validate_expiration(&TimeOptions::default()).map_err(|e| format!("expiry: {e}"))?;
    Ok(token.claims().custom.clone())
}

/// A `redis-server` of the test's own (no persistence) on a free loopback port: a test may crash,
/// restart or pause it without touching the Redis other tests share.
pub struct PrivateRedis {
    port: u16,
    child: Option<std::process::Child>,
    /// Listening with TLS only: (CA, certificate, key) files.
    tls: Option<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)>,
}

#[allow(clippy::expect_used)]
impl PrivateRedis {
    /// Starts one and waits until it answers.
    pub async fn start() -> Self {
        Self::start_maybe_tls(None).await
    }

    /// One that speaks TLS only (no plaintext port), with the certificate and key `name` of `pki`
    /// (`<name>.pem`, `<name>-key.pem`); clients must trust `pki`'s CA.
    pub async fn start_tls(pki: &TestPki, name: &str) -> Self {
        let files = (pki.path("ca.pem"), pki.path(&format!("{name}.pem")), pki.path(&format!("{name}-key.pem")));
        Self::start_maybe_tls(Some(files)).await
    }

    async fn start_maybe_tls(tls: Option<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)>) -> Self {
        for _ in 0..5 {
            let port =
                std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
            let mut redis = PrivateRedis { port, child: None, tls: tls.clone() };
            if redis.spawn().await {
                return redis;
            }
        }
        panic!("redis-server did not start (deploy/setup.sh installs it)");
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    fn client(&self) -> redis::Client {
        kit::redis::client(&self.url(), self.tls.as_ref().map(|(ca, _, _)| ca.as_path())).expect("url")
    }

    async fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let mut command = std::process::Command::new("redis-server");
        match &self.tls {
            None => command.args(["--port", &port]),
            Some((ca, cert, key)) => command
                .args(["--port", "0", "--tls-port", &port, "--tls-auth-clients", "no"])
                .arg("--tls-ca-cert-file")
                .arg(ca)
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key),
        };
        let child = command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (deploy/setup.sh installs it)");
        self.child = Some(child);
        let client = self.client();
        for _ in 0..100 {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(std::process::Child::try_wait) {
                self.child = None;
                return false; // the port was taken meanwhile
            }
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Kills it (SIGKILL, a crash) and starts an empty one on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        assert!(self.spawn().await, "redis-server did not start again on port {}", self.port);
    }

    /// Runs one command on it.
    pub async fn command(&self, args: &[&str]) -> redis::Value {
        let client = self.client();
        let mut conn = client.get_multiplexed_async_connection().await.expect("connect");
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut conn).await.expect("command")
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
