//! Test harness (feature `testing`): a fresh PostgreSQL database per test, a throw-away PKI, a
//! token signer whose public key is published through auth-svc's JWKS, and helpers to wait for
//! health. Everything is real: real PostgreSQL, real TLS, real servers on loopback port 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use secrecy::SecretString;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;

use crate::config::{
    DatabaseConfig, Environment, JwtConfig, ListenConfig, ServiceConfig, TelemetryConfig, TlsConfig, UpstreamsConfig,
};
use crate::pki::{Ca, DEV_IDENTITIES, write_issued};
use crate::tls::{CertStore, Identity};

/// The server tests create their databases on.
pub fn base_database_url() -> String {
    std::env::var("STRONGROOM_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The Redis tests use.
pub fn redis_url() -> String {
    std::env::var("STRONGROOM_TEST_REDIS_URL")
        .or_else(|_| std::env::var("REDIS_URL"))
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A database of its own for one test, dropped afterwards.
#[derive(Debug)]
pub struct TestDb {
    pub name: String,
    base: url::Url,
}

#[allow(clippy::expect_used)]
impl TestDb {
    pub async fn create() -> Self {
        Self::create_on(&base_database_url()).await
    }

    /// A database of its own on the server `base` names (e.g. a [`crate::localpg::LocalPostgres`]).
    pub async fn create_on(base: &str) -> Self {
        let base = url::Url::parse(base).expect("test database url");
        let name = format!("sr_test_{}", uuid::Uuid::new_v4().simple());
        let pool =
            PgPoolOptions::new().max_connections(1).connect(base.as_str()).await.expect("connect to test postgres");
        sqlx::Executor::execute(&pool, format!("CREATE DATABASE {name}").as_str()).await.expect("create test database");
        pool.close().await;
        Self { name, base }
    }

    /// The database `name` that already exists on the server `base` names (e.g. one restored
    /// from a backup); dropped afterwards like one this made.
    pub fn existing_on(base: &str, name: &str) -> Self {
        Self { name: name.to_owned(), base: url::Url::parse(base).expect("test database url") }
    }

    fn url_for(&self, user: Option<&str>) -> url::Url {
        let mut url = self.base.clone();
        url.set_path(&format!("/{}", self.name));
        if let Some(user) = user {
            url.set_username(user).expect("set user");
            url.set_password(None).expect("clear password");
        }
        url
    }

    /// The administrative URL (the base server's superuser) of this database.
    pub fn admin_url(&self) -> SecretString {
        SecretString::from(self.url_for(None).to_string())
    }

    /// The URL a service logs in with (`strongroom_<service>`, trust auth in tests).
    pub fn runtime_url(&self, service: &str) -> SecretString {
        SecretString::from(self.url_for(Some(&crate::migrate::service_role(service))).to_string())
    }

    pub async fn admin_pool(&self) -> PgPool {
        PgPoolOptions::new().max_connections(2).connect(self.url_for(None).as_str()).await.expect("admin pool")
    }

    /// A pool logged in as `role` (e.g. `strongroom_vault`).
    pub async fn pool_as(&self, role: &str) -> PgPool {
        PgPoolOptions::new().max_connections(2).connect(self.url_for(Some(role)).as_str()).await.expect("role pool")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let base = self.base.to_string();
        let name = self.name.clone();
        // Drop may run inside a runtime; use a thread with its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                if let Ok(pool) = PgPoolOptions::new().max_connections(1).connect(&base).await {
                    let _ =
                        sqlx::Executor::execute(&pool, format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                            .await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}

/// A throw-away CA with a certificate for every development identity.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki").field("dir", &self.dir.path()).finish()
    }
}

#[allow(clippy::expect_used)]
impl TestPki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::generate("Strongroom test CA").expect("ca");
        ca.write(dir.path()).expect("write ca");
        for name in DEV_IDENTITIES {
            let identity = Identity::new(name).expect("identity");
            write_issued(dir.path(), name, &ca.issue(&identity).expect("issue")).expect("write");
        }
        Self { dir, ca }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// TLS settings of `name`, reloaded every 100 ms.
    pub fn tls(&self, name: &str) -> TlsConfig {
        TlsConfig {
            ca: self.path("ca.pem"),
            cert: self.path(&format!("{name}.pem")),
            key: self.path(&format!("{name}-key.pem")),
            reload_interval_ms: 100,
        }
    }

    pub fn certs(&self, name: &str) -> CertStore {
        CertStore::load(&self.tls(name)).expect("cert store")
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// A listener on a free loopback port.
#[allow(clippy::expect_used)]
pub async fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    (l, addr)
}

/// `https://127.0.0.1:<port>`.
pub fn https(addr: SocketAddr) -> String {
    format!("https://{addr}")
}

/// A backend service's configuration for tests.
pub fn service_config(
    name: &str,
    grpc: SocketAddr,
    admin: SocketAddr,
    db: &TestDb,
    pki: &TestPki,
    upstreams: UpstreamsConfig,
) -> ServiceConfig {
    ServiceConfig {
        env: Environment::Development,
        grpc: ListenConfig { listen: grpc },
        admin: ListenConfig { listen: admin },
        tls: pki.tls(name),
        database: DatabaseConfig { url: db.runtime_url(name), max_connections: 4 },
        telemetry: TelemetryConfig::default(),
        upstreams,
        jwt: JwtConfig { revocations_url: Some(redis_url().into()), ..Default::default() },
        shutdown_grace_ms: 10_000,
        service: Default::default(),
    }
}

/// An mTLS channel to `addr` as `as_identity`, expecting the server to be `server`.
#[allow(clippy::expect_used)]
pub fn channel(pki: &TestPki, as_identity: &str, addr: SocketAddr, server: &str) -> crate::client::Channel {
    crate::client::channel(
        &pki.certs(as_identity),
        &https(addr),
        &Identity::new(server).expect("id"),
        Duration::from_secs(10),
    )
    .expect("channel")
}

/// Waits until the health service at `channel` reports SERVING for `service` ("" = overall).
pub async fn wait_serving(channel: crate::client::Channel, service: &str, within: Duration) -> Result<(), String> {
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let deadline = tokio::time::Instant::now() + within;
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        match client.check(tonic_health::pb::HealthCheckRequest { service: service.to_owned() }).await {
            Ok(r) if r.get_ref().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 => {
                return Ok(());
            }
            Ok(r) => last = format!("status {}", r.get_ref().status),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{service:?} not serving: {last}"))
}

/// An Ed25519 access-token signer whose public key tests publish in auth-svc's JWKS.
pub struct TestSigner {
    pub kid: String,
    key: jsonwebtoken::EncodingKey,
    pub public_x: String,
}

impl std::fmt::Debug for TestSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestSigner").field("kid", &self.kid).finish_non_exhaustive()
    }
}

pub const TEST_ISSUER: &str = "https://auth.strongroom.local";
pub const TEST_AUDIENCE: &str = "strongroom";

#[allow(clippy::expect_used)]
impl TestSigner {
    pub fn generate() -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519 key");
        let key = jsonwebtoken::EncodingKey::from_ed_der(&pair.serialize_der());
        let public_x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key_raw());
        Self { kid: format!("test-{}", uuid::Uuid::new_v4().simple()), key, public_x }
    }

    /// The public JWK.
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": self.kid, "x": self.public_x, "use": "sig" })
    }

    /// Publishes the public key in `control.signing_keys` (auth-svc's JWKS source).
    pub async fn publish(&self, admin: &PgPool) {
        sqlx::query("INSERT INTO control.signing_keys (kid, alg, public_jwk) VALUES ($1, 'EdDSA', $2)")
            .bind(&self.kid)
            .bind(self.jwk())
            .execute(admin)
            .await
            .expect("publish test key");
    }

    /// Claims of a valid five-minute token for `subject` in `tenant_id`.
    /// Claims of a session that passed a second factor just now.
    pub fn claims(tenant_id: uuid::Uuid, subject: &str) -> serde_json::Value {
        let now = chrono::Utc::now().timestamp();
        serde_json::json!({
            "iss": TEST_ISSUER, "aud": TEST_AUDIENCE, "sub": subject, "tid": tenant_id.to_string(),
            "sid": uuid::Uuid::new_v4().to_string(), "jti": uuid::Uuid::new_v4().to_string(),
            "iat": now, "nbf": now, "exp": now + 300, "amr": ["pwd", "otp"], "mfa_time": now,
            "permissions": ["audit.events.read"],
        })
    }

    /// Signs `claims` as an `at+jwt`.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header.typ = Some("at+jwt".into());
        jsonwebtoken::encode(&header, claims, &self.key).expect("sign")
    }
}
