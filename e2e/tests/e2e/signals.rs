//! The domain signals an on-call reads (issue 33): after logins that succeed, fail and are rate
//! limited, a transit encryption and decryption, and transfers (one pending, expiring within five
//! minutes), each service's families show their series on its admin `/metrics`, with the
//! saturation measured at each scrape (database pools, the process) and the revocation list's
//! marker.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use e2e::Constellation;
use gateway::ratelimit::{ClassLimits, Limit};
use kit::testing::TestSigner;
use ledger_svc::testing::transfer;
use proto::ledger::v1 as ledger_pb;
use proto::ledger::v1::ledger_service_client::LedgerServiceClient;
use proto::vault::v1 as vault_pb;
use proto::vault::v1::transit_service_client::TransitServiceClient;
use uuid::Uuid;

/// The value of `series` (name and labels, exactly) in a Prometheus text exposition.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
}

/// Waits (up to a minute) until `series` on `admin`'s `/metrics` satisfies `ok`; returns its value.
async fn until(admin: SocketAddr, series: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let text = e2e::scrape_metrics(admin).await;
        match sample(&text, series) {
            Some(v) if ok(v) => return v,
            seen => assert!(tokio::time::Instant::now() < deadline, "{series}: {seen:?} after a minute\n{text}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `msg` for alpha, with `token` when there is one.
fn alpha<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    kit::client::with_context(tonic::Request::new(msg), Some("alpha"), None, token)
}

async fn login(c: &Constellation, email: &str, password: &str) -> http::StatusCode {
    let body = serde_json::json!({ "tenant": "alpha", "email": email, "password": password });
    let (status, _, _) = c
        .gateway_request(
            http::Method::POST,
            "/v1/auth/login",
            &[("content-type", "application/json")],
            serde_json::to_vec(&body).expect("json"),
        )
        .await
        .expect("login");
    status
}

/// Creates a ledger and two accounts, then a transfer, a pending one expiring in a second (its
/// expiry wakes the sweep at once) and a pending one expiring in two minutes.
async fn transfer_and_hold(c: &Constellation, tenant: Uuid) {
    let signer = TestSigner::generate();
    signer.publish(&c.db.admin_pool().await).await;
    let mut claims = TestSigner::claims(tenant, "alice");
    claims["permissions"] =
        serde_json::json!(["ledger.ledgers.create", "ledger.accounts.create", "ledger.transfers.create"]);
    let token = signer.sign(&claims);
    let token = Some(token.as_str());
    let mut ledger = LedgerServiceClient::new(c.channel_as("gateway", "ledger"));
    let usd = ledger_pb::Ledger { code: "USD".into(), scale: 2, description: "US dollar".into() };
    let create = ledger_pb::CreateLedgerRequest { ledger: Some(usd), request_id: Uuid::new_v4().to_string() };
    ledger.create_ledger(alpha(create, token)).await.expect("ledger");
    let mut accounts = Vec::new();
    for _ in 0..2 {
        let id = Uuid::new_v4();
        let account = ledger_pb::Account { id: id.to_string(), ledger: "USD".into(), code: 1, ..Default::default() };
        let create = ledger_pb::CreateAccountRequest { account: Some(account), request_id: Uuid::new_v4().to_string() };
        ledger.create_account(alpha(create, token)).await.expect("account");
        accounts.push(id);
    }
    let (a, b) = (accounts[0], accounts[1]);
    let pending = |timeout_seconds| ledger_pb::Transfer {
        timeout_seconds,
        flags: Some(ledger_pb::TransferFlags { pending: true, ..Default::default() }),
        ..transfer(a, b, 10)
    };
    for t in [transfer(a, b, 100), pending(1), pending(120)] {
        let create = ledger_pb::CreateTransferRequest { transfer: Some(t), request_id: Uuid::new_v4().to_string() };
        ledger.create_transfer(alpha(create, token)).await.expect("transfer");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_service_exports_its_domain_signals() {
    let mut c = Constellation::start(false).await;
    // Two logins a client address, then 429.
    c.start_gateway_with(|cfg| {
        let limit = Limit { requests: 2, period_secs: 3600, burst: Some(2) };
        cfg.rate_limits.auth = ClassLimits { per_ip: Some(limit), per_principal: None };
    })
    .await;
    let (tenant, _, password) = c.create_tenant_with_owner("alpha", "owner@alpha.example").await;

    // auth-svc and the gateway: a login, a wrong password, then one the gateway refuses.
    assert_eq!(login(&c, "owner@alpha.example", &password).await, 200);
    assert_eq!(login(&c, "owner@alpha.example", "not the password").await, 401);
    assert_eq!(login(&c, "owner@alpha.example", &password).await, 429);
    let auth = c.services["auth"].admin;
    until(auth, "strongroom_auth_logins_total{outcome=\"success\"}", |v| v >= 1.0).await;
    until(auth, "strongroom_auth_logins_total{outcome=\"failure\"}", |v| v >= 1.0).await;
    let gateway = c.gateway.as_ref().expect("gateway").admin;
    until(gateway, "strongroom_gateway_rate_limited_total{class=\"auth\"}", |v| v >= 1.0).await;
    until(gateway, "strongroom_gateway_recorder_queue_depth", |v| v >= 0.0).await;

    // vault-svc: an encryption, then a decryption, which unwraps the tenant key created by the
    // encryption (not cached: its transaction could have rolled back).
    let mut transit = TransitServiceClient::new(c.channel_as("auth", "vault"));
    let plaintext = b"signal".to_vec();
    let encrypt =
        vault_pb::EncryptRequest { plaintext: plaintext.clone(), context: HashMap::new(), ..Default::default() };
    let ciphertext = transit.encrypt(alpha(encrypt, None)).await.expect("encrypt").into_inner().ciphertext;
    let decrypt = vault_pb::DecryptRequest { ciphertext, context: HashMap::new(), ..Default::default() };
    let decrypted = transit.decrypt(alpha(decrypt, None)).await.expect("decrypt").into_inner().plaintext;
    assert_eq!(decrypted, plaintext);
    let vault = c.services["vault"].admin;
    for operation in ["encrypt", "decrypt", "unwrap"] {
        until(vault, &format!("strongroom_vault_operations_total{{operation=\"{operation}\"}}"), |v| v >= 1.0).await;
    }
    until(vault, "strongroom_vault_kms_errors_total", |v| v == 0.0).await;

    // ledger-svc: batches committed, and the pending transfer expiring in two minutes counted by
    // the sweep that voids the one expiring in a second.
    transfer_and_hold(&c, tenant).await;
    let ledger = c.services["ledger"].admin;
    until(ledger, "strongroom_ledger_batch_size_count", |v| v >= 3.0).await;
    until(ledger, "strongroom_ledger_batch_size_bucket{le=\"1.0\"}", |v| v >= 3.0).await;
    until(ledger, "strongroom_ledger_commit_duration_seconds_count", |v| v >= 3.0).await;
    until(ledger, "strongroom_ledger_pending_expiring", |v| v == 1.0).await;

    // Saturation: every service's pool (the services of this test share one process, and so one
    // registry), no acquire timeout; the process's memory; the marker as auth-svc's sweep found it.
    for service in e2e::SERVICES {
        let admin = c.services[service].admin;
        until(admin, &format!("strongroom_db_pool_max_connections{{service=\"{service}\"}}"), |v| v >= 1.0).await;
        until(admin, &format!("strongroom_db_pool_connections{{service=\"{service}\",state=\"idle\"}}"), |v| v >= 0.0)
            .await;
        until(admin, &format!("strongroom_db_pool_timeouts_total{{service=\"{service}\"}}"), |v| v == 0.0).await;
    }
    until(auth, "process_resident_memory_bytes", |v| v > 0.0).await;
    until(auth, "strongroom_revocation_list_complete", |v| v == 1.0).await;
    c.stop().await;
}
