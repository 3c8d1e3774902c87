//! A tenant's end, with every service real (auth-svc, vault-svc, audit-svc, ledger-svc, the gateway,
//! PostgreSQL, Redis, SoftHSM2) and the operator's `strongroom` binary: a tenant terminated while
//! another one works is refused everywhere at once, its export bundle verifies offline and opens
//! only with the recipient's key, and the purge leaves nothing naming it but a tombstone. The other
//! tenant sees no error meanwhile.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use e2e::Constellation;
use http::Method;
use kit::testing::TestSigner;
use serde_json::{Value, json};

struct Fx {
    c: Constellation,
    signer: TestSigner,
    admin: sqlx::PgPool,
}

#[allow(clippy::expect_used)]
impl Fx {
    /// The operator CLI against this constellation; its stdout and stderr, or a failure's stderr.
    fn cli(&self, args: &[&str]) -> Result<(String, String), String> {
        let addr = |n: &str| kit::testing::https(self.c.addr(n));
        let out = Command::new(e2e::binary("strongroom"))
            .arg("--ca")
            .arg(self.c.pki.path("ca.pem"))
            .arg("--cert")
            .arg(self.c.pki.path("operator.pem"))
            .arg("--key")
            .arg(self.c.pki.path("operator-key.pem"))
            .args(["--auth", &addr("auth"), "--vault", &addr("vault"), "--audit", &addr("audit")])
            .args(["--ledger", &addr("ledger"), "--dev-dir", "/nonexistent"])
            .args(args)
            .env("STRONGROOM_DATABASE__ADMIN_URL", secrecy::ExposeSecret::expose_secret(&self.c.db.admin_url()))
            .env("STRONGROOM_REDIS_URL", &self.c.redis)
            .env("STRONGROOM_ERASURE_JOURNAL", self.c.journal_dir())
            .env("USER", "e2e-operator")
            .stdin(Stdio::null())
            .output()
            .expect("strongroom");
        let (stdout, stderr) =
            (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
        if out.status.success() { Ok((stdout, stderr)) } else { Err(stderr) }
    }

    fn cli_json(&self, args: &[&str]) -> Value {
        let (stdout, _) = self.cli(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
    }

    fn token(&self, tenant: uuid::Uuid, subject: &str, permissions: &[&str]) -> String {
        let mut claims = TestSigner::claims(tenant, subject);
        claims["permissions"] = json!(permissions);
        self.signer.sign(&claims)
    }

    async fn http(&self, tenant: &str, method: Method, path: &str, token: &str, body: Value) -> (u16, Value) {
        let bearer = format!("Bearer {token}");
        let mut headers = vec![("x-strongroom-tenant", tenant), ("authorization", bearer.as_str())];
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            headers.push(("content-type", "application/json"));
            serde_json::to_vec(&body).expect("json")
        };
        let (status, _, json) = self.c.gateway_request(method, path, &headers, bytes).await.expect("request");
        (status.as_u16(), json)
    }
}

fn reason(v: &Value) -> &str {
    v.pointer("/error/reason").and_then(Value::as_str).unwrap_or_default()
}

/// Every file of `part` in the bundle at `dir`, opened with `identity`, concatenated.
fn opened(dir: &Path, part: &str, identity: &age::x25519::Identity) -> String {
    let mut names: Vec<PathBuf> =
        std::fs::read_dir(dir.join(part)).expect("part dir").map(|e| e.expect("entry").path()).collect();
    names.sort();
    let mut text = String::new();
    for name in names {
        let bytes = std::fs::read(&name).expect("file");
        let plain = kit::export::open(identity, &bytes).expect("opens with the recipient's identity");
        text.push_str(std::str::from_utf8(&plain).expect("utf-8"));
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminated_tenant_is_refused_at_once_exported_verifiably_and_purged_to_a_tombstone() {
    let _ = kit::telemetry::init("e2e", &kit::config::TelemetryConfig { otlp_endpoint: None, log: "error".into() });
    let c = Constellation::start(true).await;
    let (victim, victim_owner, _) = c.create_tenant_with_owner("victim", "owner@victim.example").await;
    let (bystander, bystander_owner, _) = c.create_tenant_with_owner("bystander", "owner@bystander.example").await;
    let signer = TestSigner::generate();
    let admin = c.db.admin_pool().await;
    signer.publish(&admin).await;
    let f = Fx { c, signer, admin };

    // The victim's data in every service.
    let all = [
        "users.write",
        "users.read",
        "vault.secrets.write",
        "vault.secrets.read",
        "ledger.ledgers.create",
        "ledger.accounts.create",
        "ledger.transfers.create",
        "ledger.accounts.read",
    ];
    let owner = f.token(victim, &victim_owner, &all);
    let body =
        json!({ "email": "ana@victim.example", "password": "a long enough password", "display_name": "Ana Victim" });
    let (st, ana) = f.http("victim", Method::POST, "/v1/users", &owner, body).await;
    assert_eq!(st, 200, "{ana}");
    let secret_value = "broker key 7f3a-never-in-plaintext";
    let (st, e) =
        f.http("victim", Method::PUT, "/v1/secrets/brokers/main", &owner, json!({ "value": secret_value })).await;
    assert_eq!(st, 200, "{e}");
    let (st, e) =
        f.http("victim", Method::POST, "/v1/ledger/ledgers", &owner, json!({ "code": "USD", "scale": 2 })).await;
    assert_eq!(st, 200, "{e}");
    let (house, client) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    for id in [house, client] {
        let body = json!({ "id": id, "ledger": "USD", "code": 1 });
        let (st, e) = f.http("victim", Method::POST, "/v1/ledger/accounts", &owner, body).await;
        assert_eq!(st, 200, "{e}");
    }
    for amount in ["1250", "990", "7"] {
        let body = json!({ "id": uuid::Uuid::now_v7(), "debit_account_id": house, "credit_account_id": client,
                           "amount": amount, "ledger": "USD", "code": 1 });
        let (st, e) = f.http("victim", Method::POST, "/v1/ledger/transfers", &owner, body).await;
        assert_eq!(st, 200, "{e}");
    }

    // The bystander works throughout: secrets written to vault-svc as the gateway forwards them
    // (directly over gRPC, so that the gateway's per-principal rate limit is not what is measured).
    let by_token = f.token(bystander, &bystander_owner, &["vault.secrets.write", "vault.secrets.read"]);
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, token) = (stop.clone(), by_token.clone());
        let mut secrets =
            proto::vault::v1::secrets_service_client::SecretsServiceClient::new(f.c.channel_as("gateway", "vault"));
        tokio::spawn(async move {
            let (mut latencies, mut failures) = (Vec::new(), Vec::new());
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 20_000 {
                n += 1;
                let msg = proto::vault::v1::PutSecretRequest {
                    path: format!("app/config-{}", n % 16),
                    value: format!("value {n}").into_bytes(),
                    ..Default::default()
                };
                let req = kit::client::with_context(tonic::Request::new(msg), Some("bystander"), None, Some(&token));
                let started = Instant::now();
                match secrets.put_secret(req).await {
                    Ok(_) => latencies.push((started, started.elapsed())),
                    Err(s) => failures.push(format!("{:?}: {}", s.code(), s.message())),
                }
            }
            (latencies, failures)
        })
    };
    // Some load before the termination, to compare with.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let terminated_at = Instant::now();
    let t = f.cli_json(&[
        "tenant",
        "terminate",
        "victim",
        "--recipient",
        &recipient,
        "--reason",
        "contract ended",
        "--no-wait",
    ]);
    assert_eq!(t["recipient"], recipient.as_str(), "{t}");
    assert_eq!(t["terminated_by"], "e2e-operator", "{t}");

    // Refused everywhere: the gateway (token and login), and a service called directly.
    let refused_by_all = async {
        loop {
            let (st, e) = f.http("victim", Method::GET, "/v1/secrets/brokers/main", &owner, Value::Null).await;
            let (st2, e2) =
                f.http("victim", Method::GET, &format!("/v1/ledger/accounts/{house}"), &owner, Value::Null).await;
            if reason(&e) == "TENANT_TERMINATED" && reason(&e2) == "TENANT_TERMINATED" {
                assert!((400..500).contains(&st) && (400..500).contains(&st2), "{st} {st2}");
                return terminated_at.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let refused_after = tokio::time::timeout(Duration::from_secs(30), refused_by_all).await.expect("refused");
    eprintln!("victim refused by the gateway, vault-svc and ledger-svc {refused_after:?} after the CLI was started");
    let body = json!({ "tenant": "victim", "email": "ana@victim.example", "password": "a long enough password" });
    let (status, _, e) =
        f.c.gateway_request(
            Method::POST,
            "/v1/auth/login",
            &[("content-type", "application/json")],
            serde_json::to_vec(&body).expect("json"),
        )
        .await
        .expect("login");
    assert!(status.is_client_error() && reason(&e) == "TENANT_TERMINATED", "{status} {e}");
    // A second termination with another key is refused; with the same key it answers the same.
    let other = age::x25519::Identity::generate().to_public().to_string();
    let e = f
        .cli(&["tenant", "terminate", "victim", "--recipient", &other, "--reason", "again", "--no-wait"])
        .expect_err("other key");
    assert!(e.contains("TENANT_TERMINATED"), "{e}");
    let e =
        f.cli(&["tenant", "terminate", "victim", "--recipient", "age1notakey", "--reason", "x"]).expect_err("bad key");
    assert!(e.contains("age X25519"), "{e}");

    // The export: followed to its signed manifest, fetched, verified offline.
    let (stdout, progress) = f.cli(&["tenant", "status", "victim", "--wait"]).expect("status --wait");
    let status: Value = serde_json::from_str(stdout.trim()).expect("json");
    assert!(progress.contains("manifest signed"), "{progress}");
    assert_eq!(status["parts"].as_array().map(Vec::len), Some(4), "{status}");
    let manifest_sha256 = status["manifest_sha256"].as_str().expect("manifest digest").to_owned();
    assert_eq!(manifest_sha256.len(), 64);
    let dir = tempfile::tempdir().expect("tmp");
    let bundle = dir.path().join("bundle");
    let fetched = f.cli_json(&["tenant", "export", "victim", "--out", bundle.to_str().expect("path")]);
    assert_eq!(fetched["manifest_sha256"], manifest_sha256.as_str(), "{fetched}");
    let identity_file = dir.path().join("identity.txt");
    std::fs::write(&identity_file, secrecy::ExposeSecret::expose_secret(&identity.to_string())).expect("identity");
    let id = identity_file.to_str().expect("path");
    let b = bundle.to_str().expect("path");
    let (out, _) = f.cli(&["audit", "verify", "--bundle", b, "--identity", id]).expect("audit part verifies");
    assert!(out.contains("valid"), "{out}");
    let (report, _) = f.cli(&["ledger", "verify", "--bundle", b, "--identity", id]).expect("ledger part verifies");
    // The export signed the last receipts before writing the part: the chain verifies to its head.
    assert!(report.contains("; 0 newest not signed"), "{report}");

    // The parts hold what the tenant had; the secret opens only with the recipient's identity.
    let vault = opened(&bundle, "vault", &identity);
    assert!(vault.contains("brokers/main") && vault.contains(secret_value), "{vault}");
    let stranger = age::x25519::Identity::generate();
    for entry in std::fs::read_dir(bundle.join("vault")).expect("vault files") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("file");
        assert!(kit::export::open(&stranger, &bytes).is_err(), "a vault file opened without the recipient's key");
        assert!(!bytes.windows(secret_value.len()).any(|w| w == secret_value.as_bytes()), "plaintext in the bundle");
    }
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT data FROM control.tenant_export_files WHERE tenant_id = $1")
        .bind(victim)
        .fetch_all(&f.admin)
        .await
        .expect("stored files");
    assert!(stored.iter().all(|d| !d.windows(secret_value.len()).any(|w| w == secret_value.as_bytes())));
    let auth = opened(&bundle, "auth", &identity);
    assert!(auth.contains("ana@victim.example") && auth.contains("Ana Victim"), "{auth}");
    assert!(!auth.contains("$argon2"), "a password hash in the bundle");
    let ledger = opened(&bundle, "ledger", &identity);
    assert!(ledger.contains(&client.to_string()) && ledger.contains("1250"), "{ledger}");
    let audit = opened(&bundle, "audit", &identity);
    assert!(audit.contains("checkpoint"), "{audit}");

    // The purge: not before the window ends unless asked, then nothing names the tenant.
    let e = f.cli(&["tenant", "purge", "victim"]).expect_err("window open");
    assert!(e.contains("export window"), "{e}");
    let tombstone = f.cli_json(&["tenant", "purge", "victim", "--purge-now"]);
    assert_eq!(tombstone["slug"], "victim", "{tombstone}");
    assert_eq!(tombstone["manifest_sha256"], manifest_sha256.as_str(), "{tombstone}");
    assert_eq!(tombstone["terminated_by"], "e2e-operator");
    assert!(
        tombstone["final_checkpoint"].as_str().is_some_and(|c| c.starts_with("strongroom.audit/victim")),
        "{tombstone}"
    );
    assert_eq!(f.cli_json(&["tenant", "tombstone", "victim"])["tenant_id"], victim.to_string().as_str());
    // The termination (by auth-svc) and the purge (by the operator) are in the erasure journal,
    // the purge with its tombstone, so that no restore brings the tenant back.
    let ca = std::fs::read(f.c.pki.path("ca.pem")).expect("ca");
    let journal = kit::journal::read(&f.c.journal_dir(), &ca).expect("journal verifies");
    let victims: Vec<(&str, &str)> = journal
        .iter()
        .filter(|v| v.entry.tenant_id == victim)
        .map(|v| (v.entry.erasure.kind(), v.signer.name()))
        .collect();
    assert_eq!(victims, [("tenant_terminate", "auth"), ("tenant_purge", "operator")]);
    let kit::journal::Erasure::TenantPurge { manifest_sha256: journaled, .. } =
        &journal.iter().rfind(|v| v.entry.tenant_id == victim).expect("purge").entry.erasure
    else {
        panic!("not a purge")
    };
    assert_eq!(journaled.as_deref(), Some(manifest_sha256.as_str()));

    let schema: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 't_victim')")
        .fetch_one(&f.admin)
        .await
        .expect("schema");
    assert!(!schema, "the tenant's schema is still there");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', table_schema, table_name) FROM information_schema.columns
         WHERE column_name = 'tenant_id' AND table_schema NOT IN ('pg_catalog', 'information_schema')
           AND table_name <> 'tenant_tombstones'",
    )
    .fetch_all(&f.admin)
    .await
    .expect("tables");
    for table in tables {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE tenant_id = $1"))
            .bind(victim)
            .fetch_one(&f.admin)
            .await
            .unwrap_or_else(|e| panic!("{table}: {e}"));
        assert_eq!(n, 0, "{table} still names the purged tenant");
    }
    let named: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM control.tenants WHERE id = $1 OR slug = 'victim')
              + (SELECT count(*) FROM control.schema_migrations WHERE schema_name = 't_victim')
              + (SELECT count(*) FROM pg_roles WHERE rolname LIKE '%victim%')",
    )
    .bind(victim)
    .fetch_one(&f.admin)
    .await
    .expect("control");
    assert_eq!(named, 0);
    let mut redis = f.c.redis_client().get_multiplexed_async_connection().await.expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("*{victim}*")).query_async(&mut redis).await.expect("keys");
    assert!(keys.is_empty(), "Redis keys still name the tenant: {keys:?}");
    // A purged slug is not registered again.
    let again = f.c.register_tenant("victim").await.expect_err("purged slug");
    assert!(again.contains("purged"), "{again}");

    // The bystander saw no error while all this happened.
    stop.store(true, Ordering::Relaxed);
    let (latencies, failures) = load.await.expect("load");
    assert!(failures.is_empty(), "the other tenant saw errors: {failures:?}");
    assert!(latencies.len() > 10, "the load did not run: {}", latencies.len());
    // Latency before the termination and while the export and purge ran, for the report.
    let split = |during: bool| {
        let mut v: Vec<Duration> =
            latencies.iter().filter(|(at, _)| (*at >= terminated_at) == during).map(|(_, d)| *d).collect();
        v.sort();
        v
    };
    for (label, v) in [("before", split(false)), ("during", split(true))] {
        if v.is_empty() {
            continue;
        }
        let p = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
        eprintln!(
            "bystander {label} the termination: {} writes, p50 {:?}, p99 {:?}, max {:?}",
            v.len(),
            p(0.5),
            p(0.99),
            v[v.len() - 1]
        );
    }
}

/// A call for tenant `gone`, with a token or none.
fn call<T>(msg: T, bearer: Option<&str>) -> tonic::Request<T> {
    kit::client::with_context(tonic::Request::new(msg), Some("gone"), None, bearer)
}

/// Waits (bounded) until `check` holds.
async fn until<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_part_resumes_from_its_last_file_and_only_the_exporting_calls_get_through() {
    let _ = kit::telemetry::init("e2e", &kit::config::TelemetryConfig { otlp_endpoint: None, log: "error".into() });
    let c = Constellation::start(false).await;
    let (gone, owner, _) = c.create_tenant_with_owner("gone", "owner@gone.example").await;
    let admin = c.db.admin_pool().await;
    let signer = TestSigner::generate();
    signer.publish(&admin).await;
    let mut claims = TestSigner::claims(gone, &owner);
    claims["permissions"] = json!(["vault.secrets.write", "vault.secrets.read"]);
    let token = signer.sign(&claims);
    let mut secrets =
        proto::vault::v1::secrets_service_client::SecretsServiceClient::new(c.channel_as("gateway", "vault"));
    let msg = proto::vault::v1::PutSecretRequest {
        path: "db/password".into(),
        value: b"hunter2".to_vec(),
        ..Default::default()
    };
    secrets
        .put_secret(kit::client::with_context(tonic::Request::new(msg), Some("gone"), None, Some(&token)))
        .await
        .expect("put");

    // The ledger part is held back (its row locked) so the export stays under way.
    let mut hold = admin.begin().await.expect("tx");
    sqlx::query("SELECT 1 FROM control.tenants WHERE id = $1").bind(gone).execute(&mut *hold).await.expect("q");
    let mut tenants =
        proto::auth::v1::tenant_service_client::TenantServiceClient::new(c.channel_as("operator", "auth"));
    let recipient = age::x25519::Identity::generate().to_public().to_string();
    let terminate = proto::auth::v1::TerminateTenantRequest {
        slug: "gone".into(),
        recipient: recipient.clone(),
        reason: "test".into(),
        ..Default::default()
    };
    tenants.terminate_tenant(terminate.clone()).await.expect("terminate");
    sqlx::query("SELECT 1 FROM control.tenant_export_parts WHERE tenant_id = $1 AND part = 'ledger' FOR UPDATE")
        .bind(gone)
        .execute(&mut *hold)
        .await
        .expect("hold the ledger part");
    // The same termination again answers the same; the manifest is not signed while a part is open.
    let again = tenants.terminate_tenant(terminate).await.expect("idempotent").into_inner();
    assert_eq!(again.recipient, recipient);

    let auth_done = || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT completed_at IS NOT NULL FROM control.tenant_export_parts WHERE tenant_id = $1 AND part = 'auth'",
        )
        .bind(gone)
        .fetch_one(&admin)
        .await
        .expect("auth part")
    };
    until("the auth part", auth_done).await;
    let before: Vec<(i32, String, i64)> = sqlx::query_as(
        "SELECT seq, name, rows FROM control.tenant_export_files WHERE tenant_id = $1 AND part = 'auth' ORDER BY seq",
    )
    .bind(gone)
    .fetch_all(&admin)
    .await
    .expect("files");
    assert!(before.len() >= 4, "{before:?}");
    assert!(before[0].1.ends_with("users.jsonl.age") && before[0].2 >= 1, "{before:?}");

    // A replica died after its third file: its later files never committed and its lease ran out.
    sqlx::query("DELETE FROM control.tenant_export_files WHERE tenant_id = $1 AND part = 'auth' AND seq > 3")
        .bind(gone)
        .execute(&admin)
        .await
        .expect("delete");
    let kept: i64 = before.iter().take(3).map(|f| f.2).sum();
    sqlx::query(
        "UPDATE control.tenant_export_parts SET files = 3, rows_done = $2, resume_after = '3:0', completed_at = NULL,
                claimed_by = gen_random_uuid(), claimed_until = now() - interval '1 second'
         WHERE tenant_id = $1 AND part = 'auth'",
    )
    .bind(gone)
    .bind(kept)
    .execute(&admin)
    .await
    .expect("crash");
    until("the auth part again", auth_done).await;
    let after: Vec<(i32, String, i64)> = sqlx::query_as(
        "SELECT seq, name, rows FROM control.tenant_export_files WHERE tenant_id = $1 AND part = 'auth' ORDER BY seq",
    )
    .bind(gone)
    .fetch_all(&admin)
    .await
    .expect("files");
    assert_eq!(after, before, "the resumed part differs from the uninterrupted one");

    // While the export is under way: the exporters' own calls get through, nothing else does.
    let transit = |identity: &str| {
        proto::vault::v1::transit_service_client::TransitServiceClient::new(c.channel_as(identity, "vault"))
    };
    let batch = || proto::vault::v1::DecryptBatchRequest {
        items: vec![proto::vault::v1::DecryptRequest { ciphertext: "srv1:AAAA".into(), ..Default::default() }],
    };
    transit("auth").decrypt_batch(call(batch(), None)).await.expect("auth-svc opens personal fields for its part");
    for (identity, bearer) in [("auth", Some(token.as_str())), ("gateway", None), ("ledger", None), ("audit", None)] {
        let e = transit(identity).decrypt_batch(call(batch(), bearer)).await.expect_err("refused");
        // Workloads that may not use transit at all are refused before the tenant is looked at.
        let reason = e2e::reason(&e);
        assert!(matches!(reason.as_str(), "TENANT_TERMINATED" | "CALLER_NOT_ALLOWED"), "{identity} {reason}");
    }
    let encrypt = proto::vault::v1::EncryptRequest { plaintext: b"x".to_vec(), ..Default::default() };
    let e = transit("auth").encrypt(call(encrypt, None)).await.expect_err("no sealing");
    assert_eq!(e2e::reason(&e), "TENANT_TERMINATED");
    let sign = || proto::vault::v1::SignRequest { key_name: "ledger".into(), message: b"receipt".to_vec() };
    let mut ledger_signing =
        proto::vault::v1::signing_service_client::SigningServiceClient::new(c.channel_as("ledger", "vault"));
    // ledger-svc may still sign its last receipts with its own key (here it has none yet).
    if let Err(e) = ledger_signing.sign(call(sign(), None)).await {
        assert_ne!(e2e::reason(&e), "TENANT_TERMINATED", "ledger-svc's own key during the export");
    }
    let mut gateway_signing =
        proto::vault::v1::signing_service_client::SigningServiceClient::new(c.channel_as("gateway", "vault"));
    let e = gateway_signing.sign(call(sign(), None)).await.expect_err("the gateway signs nothing");
    assert!(matches!(e2e::reason(&e).as_str(), "TENANT_TERMINATED" | "CALLER_NOT_ALLOWED"), "{e:?}");
    let e = secrets
        .get_secret(call(proto::vault::v1::GetSecretRequest { path: "db/password".into() }, Some(&token)))
        .await
        .expect_err("the tenant's own token");
    assert_eq!(e2e::reason(&e), "TENANT_TERMINATED");

    // Released, the export completes and is signed; from then on even the exporters are refused.
    hold.rollback().await.expect("release");
    let signed = || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT manifest IS NOT NULL FROM control.tenant_terminations WHERE tenant_id = $1",
        )
        .bind(gone)
        .fetch_one(&admin)
        .await
        .expect("manifest")
    };
    until("the signed manifest", signed).await;
    let e = transit("auth").decrypt_batch(call(batch(), None)).await.expect_err("after the manifest");
    assert_eq!(e2e::reason(&e), "TENANT_TERMINATED");
    let e = ledger_signing.sign(call(sign(), None)).await.expect_err("after the manifest");
    assert_eq!(e2e::reason(&e), "TENANT_TERMINATED");
    let status = tenants
        .get_termination(proto::auth::v1::GetTenantRequest { slug: "gone".into() })
        .await
        .expect("status")
        .into_inner();
    assert!(status.parts.iter().all(|p| p.complete && p.files > 0), "{:?}", status.parts);
    assert_eq!(status.manifest_sha256.len(), 64);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_termination_with_bad_input_or_from_a_non_operator_is_refused_and_changes_nothing() {
    let c = Constellation::start(false).await;
    let keep = c.create_tenant("keep").await;
    let admin = c.db.admin_pool().await;
    let recipient = age::x25519::Identity::generate().to_public().to_string();
    let request = |slug: &str, recipient: &str, reason: &str, operator: &str| proto::auth::v1::TerminateTenantRequest {
        slug: slug.into(),
        recipient: recipient.into(),
        reason: reason.into(),
        operator: operator.into(),
        request_id: String::new(),
    };
    // Only the operator identity may call TenantService at all.
    for identity in ["gateway", "vault", "ledger"] {
        let mut client =
            proto::auth::v1::tenant_service_client::TenantServiceClient::new(c.channel_as(identity, "auth"));
        let e = client.terminate_tenant(request("keep", &recipient, "x", "")).await.expect_err("not the operator");
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{identity}: {e:?}");
    }
    let mut tenants =
        proto::auth::v1::tenant_service_client::TenantServiceClient::new(c.channel_as("operator", "auth"));
    let long_reason = "r".repeat(501);
    let long_operator = "o".repeat(101);
    let huge_key = format!("age1{}", "q".repeat(100_000));
    for (slug, key, reason, operator, field) in [
        ("keep", "age1notakey", "contract ended", "", "recipient"),
        ("keep", "", "contract ended", "", "recipient"),
        ("keep", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA", "contract ended", "", "recipient"),
        ("keep", huge_key.as_str(), "contract ended", "", "recipient"),
        ("keep", recipient.as_str(), "", "", "reason"),
        ("keep", recipient.as_str(), "   ", "", "reason"),
        ("keep", recipient.as_str(), long_reason.as_str(), "", "reason"),
        ("keep", recipient.as_str(), "ok", "bell\u{7}", "operator"),
        ("keep", recipient.as_str(), "ok", long_operator.as_str(), "operator"),
        ("Not A Slug", recipient.as_str(), "ok", "", "slug"),
    ] {
        let e = tenants.terminate_tenant(request(slug, key, reason, operator)).await.expect_err("bad input");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{field}: {e:?}");
        assert!(e.message().contains(field) || format!("{:?}", e.details()).contains(field), "{field}: {e:?}");
    }
    let e = tenants.terminate_tenant(request("nobody_here", &recipient, "ok", "")).await.expect_err("unknown");
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    // Nothing to read or fetch for a tenant that is not terminated.
    let get = || proto::auth::v1::GetTenantRequest { slug: "keep".into() };
    let e = tenants.get_termination(get()).await.expect_err("not terminated");
    assert_eq!(e2e::reason(&e), "TERMINATION_NOT_FOUND");
    let e = tenants.fetch_export(get()).await.expect_err("no bundle");
    assert_eq!(e2e::reason(&e), "EXPORT_NOT_READY");

    // No partial write anywhere.
    let (status, terminations, parts, recorded): (String, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT status FROM control.tenants WHERE id = $1),
                (SELECT count(*) FROM control.tenant_terminations),
                (SELECT count(*) FROM control.tenant_export_parts),
                (SELECT count(*) FROM t_keep.audit_outbox WHERE action = 'tenant.terminate')
                  + (SELECT count(*) FROM t_keep.audit_log WHERE action = 'tenant.terminate')",
    )
    .bind(keep)
    .fetch_one(&admin)
    .await
    .expect("state");
    assert_eq!((status.as_str(), terminations, parts, recorded), ("active", 0, 0, 0));
}
