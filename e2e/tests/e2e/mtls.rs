//! Attacks on the internal mTLS ports: each must fail; only the declared identity gets through.

use std::sync::Arc;
use std::time::Duration;

use e2e::{Constellation, reason};
use kit::testing::{TestPki, https};
use proto::vault::v1::ListTenantKeysRequest;
use proto::vault::v1::key_management_service_client::KeyManagementServiceClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

async fn health(channel: kit::client::Channel) -> Result<(), tonic::Status> {
    HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await.map(|_| ())
}

/// An operator-only call (vault's key management) for tenant `slug`.
fn keys_req(slug: &str) -> tonic::Request<ListTenantKeysRequest> {
    kit::client::with_context(tonic::Request::new(ListTenantKeysRequest {}), Some(slug), None, None)
}

#[tokio::test]
async fn only_declared_identities_with_our_ca_get_through() {
    let c = Constellation::start(false).await;
    c.create_tenant("acme").await;
    let vault = https(c.addr("vault"));

    // The allowed identity succeeds.
    let mut operator = KeyManagementServiceClient::new(c.channel_as("operator", "vault"));
    operator.list_tenant_keys(keys_req("acme")).await.expect("operator may list tenant keys");

    // A valid certificate of an identity not allowed for this RPC.
    let mut gateway = KeyManagementServiceClient::new(c.channel_as("gateway", "vault"));
    let err = gateway.list_tenant_keys(keys_req("acme")).await.expect_err("gateway may not list tenant keys");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert_eq!(reason(&err), "CALLER_NOT_ALLOWED");
    // ... while the same identity may use health (declared for any peer).
    health(c.channel_as("gateway", "vault")).await.expect("health for any peer");

    // No client certificate at all: the handshake is refused.
    let anonymous = c.pki.certs("operator").anonymous_client_config(&[b"h2"]).expect("config");
    let ch = kit::client::channel_with_config(anonymous, &vault, Duration::from_secs(5)).expect("channel");
    assert!(health(ch).await.is_err(), "a client without certificate must be refused");

    // A certificate from another CA, even with the right identity.
    let other = TestPki::new();
    // The foreign client trusts our CA, so only its certificate is wrong.
    std::fs::copy(c.pki.path("ca.pem"), other.path("ca.pem")).expect("swap trust anchor");
    let ch = kit::testing::channel(&other, "operator", c.addr("vault"), "vault");
    let err =
        KeyManagementServiceClient::new(ch).list_tenant_keys(keys_req("acme")).await.expect_err("foreign CA refused");
    assert_ne!(err.code(), tonic::Code::Ok);
    assert_ne!(err.code(), tonic::Code::PermissionDenied, "refused at the handshake, not by policy");

    // A certificate of our CA without a strongroom identity, and one with two.
    for (label, sans) in [
        ("no uri san", vec![rcgen::SanType::DnsName("localhost".try_into().expect("dns"))]),
        (
            "two uri sans",
            vec![
                rcgen::SanType::URI("spiffe://strongroom/operator".try_into().expect("uri")),
                rcgen::SanType::URI("spiffe://strongroom/vault".try_into().expect("uri")),
            ],
        ),
    ] {
        let issued = c.pki.ca.issue_with_sans("odd", sans).expect("issue");
        kit::pki::write_issued(c.pki.dir.path(), "odd", &issued).expect("write");
        let ch = kit::testing::channel(&c.pki, "odd", c.addr("vault"), "vault");
        let err =
            KeyManagementServiceClient::new(ch.clone()).list_tenant_keys(keys_req("acme")).await.expect_err(label);
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{label}");
        assert_eq!(reason(&err), "NO_PEER_IDENTITY", "{label}");
        assert!(health(ch).await.is_err(), "{label}: even health needs an identity");
    }
    c.stop().await;
}

#[tokio::test]
async fn tls12_only_clients_are_refused() {
    let c = Constellation::start(false).await;
    // Same certificate and trust, but a client that only speaks TLS 1.2.
    let ca = std::fs::read(c.pki.path("ca.pem")).expect("ca");
    let mut roots = rustls::RootCertStore::empty();
    for der in rustls_pki_types::pem::PemObject::pem_slice_iter(&ca) {
        roots.add(der.expect("pem")).expect("root");
    }
    let chain: Vec<rustls_pki_types::CertificateDer<'static>> =
        rustls_pki_types::pem::PemObject::pem_file_iter(c.pki.path("operator.pem"))
            .expect("pem")
            .map(|c| c.expect("cert"))
            .collect();
    let key = rustls_pki_types::pem::PemObject::from_pem_file(c.pki.path("operator-key.pem")).expect("key");
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("tls12")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client auth");
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(c.addr("vault")).await.expect("tcp");
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let handshake = tokio_rustls::TlsConnector::from(Arc::new(cfg.clone())).connect(name, tcp).await;
    assert!(handshake.is_err(), "a TLS 1.2 handshake must fail");
    let ch = kit::client::channel_with_config(cfg, &https(c.addr("vault")), Duration::from_secs(5)).expect("channel");
    assert!(health(ch).await.is_err());
    c.stop().await;
}

#[tokio::test]
async fn clients_check_the_server_identity() {
    let c = Constellation::start(false).await;
    // Expecting vault but reaching audit's port: audit's valid certificate is not vault's.
    let ch = kit::testing::channel(&c.pki, "operator", c.addr("audit"), "vault");
    assert!(health(ch).await.is_err(), "a valid certificate of another workload must not pass for vault");
    c.stop().await;
}

fn leaf_of(pem: &[u8]) -> Vec<u8> {
    let der: rustls_pki_types::CertificateDer<'static> =
        rustls_pki_types::pem::PemObject::from_pem_slice(pem).expect("pem");
    der.to_vec()
}

async fn presented_certificate(c: &Constellation) -> Vec<u8> {
    let cfg = c.pki.certs("operator").client_config(None, &[b"h2"]).expect("config");
    let tcp = tokio::net::TcpStream::connect(c.addr("vault")).await.expect("tcp");
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await.expect("handshake");
    tls.get_ref().1.peer_certificates().expect("certs")[0].to_vec()
}

#[tokio::test]
async fn rotated_certificates_are_picked_up_without_restart() {
    let c = Constellation::start(false).await;
    let before = presented_certificate(&c).await;
    assert_eq!(before, leaf_of(&std::fs::read(c.pki.path("vault.pem")).expect("read")));

    let renewed = c.pki.ca.issue(&kit::Identity::new("vault").expect("id")).expect("issue");
    kit::pki::write_issued(c.pki.dir.path(), "vault", &renewed).expect("write");
    let expected = leaf_of(renewed.cert_pem.as_bytes());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if presented_certificate(&c).await == expected {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the renewed certificate was not picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Calls keep working with the new certificate.
    health(c.channel_as("operator", "vault")).await.expect("health after rotation");

    // Rotating the CA: the old operator certificate stops working once the new CA is in place.
    let new_ca = kit::pki::Ca::generate("rotated CA").expect("ca");
    for name in ["vault", "operator"] {
        kit::pki::write_issued(
            c.pki.dir.path(),
            name,
            &new_ca.issue(&kit::Identity::new(name).expect("id")).expect("issue"),
        )
        .expect("write");
    }
    let old_operator = kit::tls::CertStore::load(&c.pki.tls("operator")).expect("store");
    new_ca.write(c.pki.dir.path()).expect("write ca");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = kit::testing::channel(&c.pki, "operator", c.addr("vault"), "vault");
        if health(fresh).await.is_ok() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the rotated CA was not picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(old_operator);
    c.stop().await;
}

/// Security review item 16: `rediss://` was accepted but could not work (the redis crate had no
/// TLS), and nothing ever reached PostgreSQL over TLS. Here the whole constellation runs on a Redis
/// that speaks TLS only and a PostgreSQL with `ssl=on`, reached with `sslmode=verify-full`, both
/// with certificates of the constellation's CA; a client trusting another CA is refused.
#[tokio::test(flavor = "multi_thread")]
async fn redis_and_postgres_are_reached_over_verified_tls() {
    kit::tls::install_crypto_provider();
    let pki = TestPki::new();
    for name in ["redis", "postgres"] {
        let identity = kit::tls::Identity::new(name).expect("name");
        kit::pki::write_issued(pki.dir.path(), name, &pki.ca.issue(&identity).expect("issue")).expect("write");
    }
    let redis = e2e::PrivateRedis::start_tls(&pki, "redis").await;
    assert!(redis.url().starts_with("rediss://"));

    // PostgreSQL reads its key only if it owns it (the cluster runs as `postgres` under root).
    let files = tempfile::tempdir().expect("dir");
    for file in ["postgres.pem", "postgres-key.pem"] {
        std::fs::copy(pki.path(file), files.path().join(file)).expect("copy");
    }
    let is_root = std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if is_root {
        let id = |flag: &str| {
            let out = std::process::Command::new("id").args([flag, "postgres"]).output().expect("id");
            String::from_utf8_lossy(&out.stdout).trim().parse::<u32>().expect("postgres user")
        };
        let (uid, gid) = (id("-u"), id("-g"));
        for path in [files.path().to_owned(), files.path().join("postgres.pem"), files.path().join("postgres-key.pem")]
        {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown");
        }
    }
    let pg = kit::localpg::LocalPostgres::start(&format!(
        "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
        files.path().join("postgres.pem").display(),
        files.path().join("postgres-key.pem").display()
    ))
    .expect("postgres with ssl");
    let base = format!("{}?sslmode=verify-full&sslrootcert={}", pg.url(), pki.path("ca.pem").display());
    let db = kit::testing::TestDb::create_on(&base).await;
    let c = Constellation::start_with_pki(db, redis.url(), true, pki).await;

    // A login (the throttle and the revocation list in Redis, the tenant in PostgreSQL), through
    // the gateway (its rate limits in Redis too).
    let (_, _, password) = c.create_tenant_with_owner("alpha", "owner@alpha.example").await;
    let login = serde_json::json!({ "tenant": "alpha", "email": "owner@alpha.example", "password": password });
    let (status, _, body) = c
        .gateway_request(
            http::Method::POST,
            "/v1/auth/login",
            &[("content-type", "application/json")],
            serde_json::to_vec(&login).expect("json"),
        )
        .await
        .expect("login");
    assert_eq!(status, 200, "{body}");
    let mut conn = c.redis_client().get_multiplexed_async_connection().await.expect("redis over tls");
    let loaded: bool = redis::AsyncCommands::exists(&mut conn, kit::revocation::LOADED_KEY).await.expect("exists");
    assert!(loaded, "auth-svc listed the revocations over TLS");

    // Every connection of every service to PostgreSQL is encrypted.
    let (plain, encrypted): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE NOT s.ssl), count(*) FILTER (WHERE s.ssl)
           FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.usename LIKE 'strongroom_%'",
    )
    .fetch_one(&c.db.admin_pool().await)
    .await
    .expect("connections");
    assert_eq!(plain, 0, "a service connected without TLS");
    assert!(encrypted > 0, "no service connection seen");

    // Trusting another CA, neither accepts the connection.
    let stranger = TestPki::new();
    let foreign = kit::redis::client(&redis.url(), Some(&stranger.path("ca.pem"))).expect("client");
    assert!(foreign.get_multiplexed_async_connection().await.is_err(), "Redis's certificate checked");
    let foreign_pg = format!("{}?sslmode=verify-full&sslrootcert={}", pg.url(), stranger.path("ca.pem").display());
    assert!(sqlx::PgPool::connect(&foreign_pg).await.is_err(), "PostgreSQL's certificate checked");
    c.stop().await;
}
