//! Boots the constellation in-process for cross-service tests: every service is the real `run`
//! on a loopback port 0 listener, over real mTLS, against a database of the test's own.

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

/// Runs service `name`'s real `run` on `listeners` in a task.
fn spawn_run(name: &'static str, cfg: kit::config::ServiceConfig, listeners: Listeners) -> Running {
    let (grpc, admin) = (cfg.grpc.listen, cfg.admin.listen);
    let (stop, shutdown) = shutdown_pair();
    let task = tokio::spawn(async move {
        let r = match name {
            "auth" => auth_svc::run(cfg, listeners, shutdown).await,
            "vault" => vault_svc::run(cfg, listeners, shutdown).await,
            "audit" => audit_svc::run(cfg, listeners, shutdown).await,
            _ => ledger_svc::run(cfg, listeners, shutdown).await,
        };
        r.map_err(|e| e.to_string())
    });
    Running { grpc, admin, stop: Some(stop), task }
}

/// The whole constellation (or a part of it).
pub struct Constellation {
    pub db: TestDb,
    pub pki: TestPki,
    pub services: HashMap<&'static str, Running>,
    pub gateway: Option<Running>,
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
        kit::tls::install_crypto_provider();
        let db = TestDb::create().await;
        let pki = TestPki::new();
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
        let mut c = Constellation { db, pki, services: HashMap::new(), gateway: None, upstreams };
        for (name, listeners, grpc, admin) in bound {
            c.spawn_service(name, listeners, grpc, admin);
        }
        for name in SERVICES {
            c.wait_serving(name).await;
        }
        if with_gateway {
            c.start_gateway().await;
        }
        c
    }

    fn spawn_service(&mut self, name: &'static str, listeners: Listeners, grpc: SocketAddr, admin: SocketAddr) {
        let cfg = service_config(name, grpc, admin, &self.db, &self.pki, self.upstreams.clone());
        self.services.insert(name, spawn_run(name, cfg, listeners));
    }

    /// Starts another replica of `name` on new ports (same database); returns it.
    pub async fn start_replica(&self, name: &'static str) -> Running {
        let (grpc, grpc_addr) = listener().await;
        let (admin, admin_addr) = listener().await;
        let cfg = service_config(name, grpc_addr, admin_addr, &self.db, &self.pki, self.upstreams.clone());
        let running = spawn_run(name, cfg, Listeners { grpc, admin });
        wait_serving(channel(&self.pki, "operator", grpc_addr, name), "", Duration::from_secs(60))
            .await
            .expect("replica serving");
        running
    }

    async fn start_gateway(&mut self) {
        let (http, http_addr) = listener().await;
        let (admin, admin_addr) = listener().await;
        let cfg = gateway::GatewayConfig {
            env: kit::config::Environment::Development,
            http: gateway::HttpConfig { listen: http_addr, body_limit_bytes: 64 * 1024 },
            admin: kit::config::ListenConfig { listen: admin_addr },
            tls: self.pki.tls("gateway"),
            upstreams: self.upstreams.clone(),
            redis: gateway::RedisConfig { url: kit::testing::redis_url().into() },
            telemetry: Default::default(),
            jwt: Default::default(),
            shutdown_grace_ms: 5_000,
        };
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

    /// Registers `slug` with auth-svc and provisions the other services; returns the tenant id.
    pub async fn create_tenant(&self, slug: &str) -> uuid::Uuid {
        let mut auth =
            proto::auth::v1::tenant_service_client::TenantServiceClient::new(self.channel_as("operator", "auth"));
        let created = auth
            .create_tenant(proto::auth::v1::CreateTenantRequest {
                slug: slug.into(),
                request_id: uuid::Uuid::new_v4().to_string(),
            })
            .await
            .expect("create tenant")
            .into_inner();
        for name in ["vault", "audit", "ledger"] {
            self.provision(name, slug).await.expect("provision");
        }
        uuid::Uuid::parse_str(&created.tenant.expect("tenant").id).expect("uuid")
    }

    pub async fn provision(
        &self,
        name: &str,
        slug: &str,
    ) -> Result<proto::common::v1::ProvisionTenantResponse, tonic::Status> {
        let mut client = proto::common::v1::tenant_provisioning_service_client::TenantProvisioningServiceClient::new(
            self.channel_as("operator", name),
        );
        client
            .provision_tenant(proto::common::v1::ProvisionTenantRequest {
                tenant_slug: slug.into(),
                request_id: uuid::Uuid::new_v4().to_string(),
            })
            .await
            .map(tonic::Response::into_inner)
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
        let (status, headers, body) =
            kit::tls::https_request(cfg, method, &format!("{}{path}", self.gateway_url()), headers, body).await?;
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
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
}

/// `ErrorInfo.reason` of a status.
pub fn reason(status: &tonic::Status) -> String {
    kit::ApiError::from_status(status).reason.to_string()
}
