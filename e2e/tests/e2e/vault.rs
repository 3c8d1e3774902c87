//! vault-svc against real PostgreSQL, a real SoftHSM2 token and real mTLS: stored secrets and
//! transit encryption, and the attacks on them.

use std::collections::HashMap;

use e2e::{Constellation, reason};
use kit::testing::TestSigner;
use proto::vault::v1 as pb;
use proto::vault::v1::secrets_service_client::SecretsServiceClient;
use proto::vault::v1::transit_service_client::TransitServiceClient;

const ALL: [&str; 4] = ["vault.secrets.read", "vault.secrets.write", "vault.secrets.reveal", "vault.secrets.destroy"];

struct Fixture {
    c: Constellation,
    signer: TestSigner,
    alpha: uuid::Uuid,
    bravo: uuid::Uuid,
}

impl Fixture {
    async fn new() -> Self {
        let _ = kit::telemetry::init("e2e", &kit::config::TelemetryConfig { otlp_endpoint: None, log: "error".into() });
        let c = Constellation::start(false).await;
        let alpha = c.create_tenant("alpha").await;
        let bravo = c.create_tenant("bravo").await;
        let signer = TestSigner::generate();
        signer.publish(&c.db.admin_pool().await).await;
        Self { c, signer, alpha, bravo }
    }

    fn token(&self, tenant: uuid::Uuid, permissions: &[&str]) -> String {
        let mut claims = TestSigner::claims(tenant, "alice");
        claims["permissions"] = serde_json::json!(permissions);
        self.signer.sign(&claims)
    }

    fn secrets(&self) -> SecretsServiceClient<kit::client::Channel> {
        SecretsServiceClient::new(self.c.channel_as("gateway", "vault"))
    }

    fn req<T>(&self, tenant: &str, token: &str, msg: T) -> tonic::Request<T> {
        kit::client::with_context(tonic::Request::new(msg), Some(tenant), Some("req-1"), Some(token))
    }

    async fn put(
        &self,
        tenant: &str,
        token: &str,
        path: &str,
        value: &[u8],
        expected: Option<u32>,
    ) -> Result<pb::PutSecretResponse, tonic::Status> {
        let msg = pb::PutSecretRequest {
            path: path.into(),
            value: value.to_vec(),
            expected_version: expected,
            ..Default::default()
        };
        self.secrets().put_secret(self.req(tenant, token, msg)).await.map(tonic::Response::into_inner)
    }

    async fn reveal(
        &self,
        tenant: &str,
        token: &str,
        path: &str,
        version: u32,
    ) -> Result<pb::RevealSecretResponse, tonic::Status> {
        let msg = pb::RevealSecretRequest { path: path.into(), version, reason: "support ticket 42".into() };
        self.secrets().reveal_secret(self.req(tenant, token, msg)).await.map(tonic::Response::into_inner)
    }

    async fn outbox_count(&self, schema: &str, action: &str, outcome: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM (SELECT action, outcome FROM {schema}.audit_outbox UNION ALL SELECT action, outcome FROM {schema}.audit_log) AS r WHERE action = $1 AND outcome = $2"))
            .bind(action)
            .bind(outcome)
            .fetch_one(&self.c.db.admin_pool().await)
            .await
            .expect("outbox")
    }
}

#[tokio::test]
async fn secrets_round_trip_with_one_audit_record_per_reveal() {
    let f = Fixture::new().await;
    let token = f.token(f.alpha, &ALL);
    let put = f.put("alpha", &token, "brokers/ib/api-key", b"IB-KEY-0123456789", Some(0)).await.expect("put");
    assert_eq!(put.version, 1);
    let put2 = f.put("alpha", &token, "brokers/ib/api-key", b"IB-KEY-second", Some(1)).await.expect("put v2");
    assert_eq!(put2.version, 2);

    let meta = f
        .secrets()
        .get_secret(f.req("alpha", &token, pb::GetSecretRequest { path: "brokers/ib/api-key".into() }))
        .await
        .expect("get")
        .into_inner()
        .secret
        .expect("metadata");
    assert_eq!(meta.current_version, 2);

    assert_eq!(f.reveal("alpha", &token, "brokers/ib/api-key", 0).await.expect("reveal").value, b"IB-KEY-second");
    assert_eq!(
        f.reveal("alpha", &token, "brokers/ib/api-key", 1).await.expect("reveal v1").value,
        b"IB-KEY-0123456789"
    );
    assert_eq!(f.outbox_count("t_alpha", "vault.secret.reveal", "success").await, 2, "one record per reveal");
    assert_eq!(f.outbox_count("t_alpha", "vault.secret.put", "success").await, 2);

    // Without the reveal permission: refused, and the refusal is audited.
    let reader = f.token(f.alpha, &["vault.secrets.read"]);
    let err = f.reveal("alpha", &reader, "brokers/ib/api-key", 0).await.expect_err("no permission");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert_eq!(f.outbox_count("t_alpha", "vault.secret.reveal", "denied").await, 1);
    assert_eq!(f.outbox_count("t_alpha", "vault.secret.reveal", "success").await, 2);

    // Step-up: a session whose second factor is older than ten minutes (or absent) must renew it.
    for mfa_time in [serde_json::json!(chrono::Utc::now().timestamp() - 3600), serde_json::Value::Null] {
        let mut claims = TestSigner::claims(f.alpha, "alice");
        claims["permissions"] = serde_json::json!(ALL);
        claims["mfa_time"] = mfa_time;
        let stale = f.signer.sign(&claims);
        let err = f.reveal("alpha", &stale, "brokers/ib/api-key", 0).await.expect_err("step-up required");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert_eq!(reason(&err), "STEP_UP_REQUIRED");
    }
    assert_eq!(f.outbox_count("t_alpha", "vault.secret.reveal", "denied").await, 3);
    assert_eq!(f.outbox_count("t_alpha", "vault.secret.reveal", "success").await, 2);

    // A reason is required.
    let msg = pb::RevealSecretRequest { path: "brokers/ib/api-key".into(), version: 0, reason: " ".into() };
    let err = f.secrets().reveal_secret(f.req("alpha", &token, msg)).await.expect_err("no reason");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // Audit details never carry the value.
    let details: Vec<serde_json::Value> = sqlx::query_scalar("SELECT details FROM (SELECT event_id, service, action, outcome, details FROM t_alpha.audit_outbox UNION ALL SELECT event_id, service, action, outcome, details FROM t_alpha.audit_log) AS records")
        .fetch_all(&f.c.db.admin_pool().await)
        .await
        .expect("details");
    assert!(details.iter().all(|d| !d.to_string().contains("IB-KEY")));
    f.c.stop().await;
}

#[tokio::test]
async fn other_tenants_and_services_are_refused() {
    let f = Fixture::new().await;
    let alpha_token = f.token(f.alpha, &ALL);
    f.put("alpha", &alpha_token, "crm/token", b"CRM-SECRET", None).await.expect("put");
    // Alpha's token against bravo.
    let err = f.reveal("bravo", &alpha_token, "crm/token", 0).await.expect_err("cross tenant");
    assert_eq!(reason(&err), "TENANT_MISMATCH");
    // Bravo's own token does not see alpha's secret.
    let bravo_token = f.token(f.bravo, &ALL);
    let err = f.reveal("bravo", &bravo_token, "crm/token", 0).await.expect_err("not bravo's");
    assert_eq!(err.code(), tonic::Code::NotFound);
    // A service identity that may not use the secrets API.
    let mut ledger = SecretsServiceClient::new(f.c.channel_as("ledger", "vault"));
    let msg = pb::RevealSecretRequest { path: "crm/token".into(), version: 0, reason: "x".into() };
    let err = ledger.reveal_secret(f.req("alpha", &alpha_token, msg)).await.expect_err("ledger refused");
    assert_eq!(reason(&err), "CALLER_NOT_ALLOWED");
    // No token at all.
    let msg = pb::GetSecretRequest { path: "crm/token".into() };
    let err = f
        .secrets()
        .get_secret(kit::client::with_context(tonic::Request::new(msg), Some("alpha"), None, None))
        .await
        .expect_err("anonymous");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    // Hostile paths.
    for path in ["../etc/passwd", "a//b", "", "x'; DROP TABLE secrets; --"] {
        let err = f.put("alpha", &alpha_token, path, b"v", None).await.expect_err(path);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{path}");
    }
    f.c.stop().await;
}

#[tokio::test]
async fn concurrent_check_and_set_writers_get_one_winner() {
    let f = Fixture::new().await;
    let token = f.token(f.alpha, &ALL);
    let attempts = (0..8).map(|i| {
        let token = token.clone();
        let f = &f;
        async move { f.put("alpha", &token, "race/key", format!("value-{i}").as_bytes(), Some(0)).await }
    });
    let results = futures::future::join_all(attempts).await;
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code(), tonic::Code::Aborted, "{r:?}");
        assert_eq!(reason(r), "VERSION_CONFLICT");
    }
    let versions: i64 = sqlx::query_scalar("SELECT count(*) FROM t_alpha.secret_versions WHERE path = 'race/key'")
        .fetch_one(&f.c.db.admin_pool().await)
        .await
        .expect("count");
    assert_eq!(versions, 1);
    // A stale expected version is a clean conflict too.
    let err = f.put("alpha", &token, "race/key", b"late", Some(0)).await.expect_err("stale");
    assert_eq!(reason(&err), "VERSION_CONFLICT");
    f.c.stop().await;
}

#[tokio::test]
async fn moved_tampered_or_copied_ciphertexts_do_not_decrypt() {
    let f = Fixture::new().await;
    let token = f.token(f.alpha, &ALL);
    f.put("alpha", &token, "a/one", b"ONE-PLAINTEXT", None).await.expect("put");
    f.put("alpha", &token, "a/two", b"TWO-PLAINTEXT", None).await.expect("put");
    let bravo_token = f.token(f.bravo, &ALL);
    f.put("bravo", &bravo_token, "a/one", b"BRAVO-ONE", None).await.expect("put");
    let admin = f.c.db.admin_pool().await;

    // Swap the ciphertexts of two rows.
    sqlx::query(
        "UPDATE t_alpha.secret_versions v SET ciphertext = o.ciphertext FROM t_alpha.secret_versions o \
         WHERE v.path = 'a/one' AND o.path = 'a/two'",
    )
    .execute(&admin)
    .await
    .expect("swap");
    let err = f.reveal("alpha", &token, "a/one", 1).await.expect_err("swapped row");
    assert_eq!(err.code(), tonic::Code::Internal);
    assert!(!err.message().contains("TWO-PLAINTEXT"));

    // Copy alpha's row into bravo (same path, same version).
    sqlx::query("UPDATE t_bravo.secret_versions SET ciphertext = (SELECT ciphertext FROM t_alpha.secret_versions WHERE path = 'a/two') WHERE path = 'a/one'")
        .execute(&admin)
        .await
        .expect("copy");
    assert!(
        f.reveal("bravo", &bravo_token, "a/one", 1).await.is_err(),
        "a ciphertext from another tenant must not decrypt"
    );

    // Flip one byte.
    sqlx::query("UPDATE t_alpha.secret_versions SET ciphertext = set_byte(ciphertext, length(ciphertext) - 1, get_byte(ciphertext, length(ciphertext) - 1) # 1) WHERE path = 'a/two'")
        .execute(&admin)
        .await
        .expect("tamper");
    assert!(f.reveal("alpha", &token, "a/two", 1).await.is_err(), "a tampered ciphertext must not decrypt");
    // Failed reveals leave no success record.
    assert_eq!(f.outbox_count("t_alpha", "vault.secret.reveal", "success").await, 0);
    f.c.stop().await;
}

#[tokio::test]
async fn a_database_dump_holds_no_plaintext_and_the_master_key_stays_in_the_token() {
    let f = Fixture::new().await;
    let token = f.token(f.alpha, &ALL);
    let value = "BROKER-SECRET-d41d8cd98f00b204e9800998ecf8427e";
    f.put("alpha", &token, "brokers/deribit", value.as_bytes(), None).await.expect("put");
    let mut transit = TransitServiceClient::new(f.c.channel_as("auth", "vault"));
    transit
        .encrypt(kit::client::with_context(
            tonic::Request::new(pb::EncryptRequest {
                plaintext: value.as_bytes().to_vec(),
                context: HashMap::new(),
                ..Default::default()
            }),
            Some("alpha"),
            None,
            None,
        ))
        .await
        .expect("transit encrypt");

    let text = e2e::pg_dump(&f.c.db);
    assert!(text.contains("secret_versions"), "the dump covers the vault tables");
    assert!(!text.contains(value), "plaintext in the dump");
    let hex_value = value.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    assert!(!text.contains(&hex_value), "hex plaintext in the dump");

    // The master key cannot leave the token.
    let provider = vault_svc::kms::Pkcs11Provider::open(
        &e2e::SoftHsm::module(),
        &f.c.hsm.label,
        &f.c.hsm.pin,
        "strongroom-master",
        false,
    )
    .expect("open token");
    assert!(!provider.is_extractable().expect("attributes"));
    f.c.stop().await;
}

#[tokio::test]
async fn idempotent_puts_soft_delete_and_destroy() {
    let f = Fixture::new().await;
    let token = f.token(f.alpha, &ALL);
    let id = uuid::Uuid::new_v4().to_string();
    let msg = || pb::PutSecretRequest {
        path: "idem/key".into(),
        value: b"v1".to_vec(),
        request_id: id.clone(),
        ..Default::default()
    };
    let first = f.secrets().put_secret(f.req("alpha", &token, msg())).await.expect("first").into_inner();
    let again = f.secrets().put_secret(f.req("alpha", &token, msg())).await.expect("repeat").into_inner();
    assert_eq!(first, again);
    let mut other = msg();
    other.value = b"different".to_vec();
    let err = f.secrets().put_secret(f.req("alpha", &token, other)).await.expect_err("reused id");
    assert_eq!(reason(&err), "REQUEST_ID_REUSED");
    let versions: i64 = sqlx::query_scalar("SELECT count(*) FROM t_alpha.secret_versions WHERE path = 'idem/key'")
        .fetch_one(&f.c.db.admin_pool().await)
        .await
        .expect("count");
    assert_eq!(versions, 1);

    // Soft delete hides it; undelete brings it back.
    f.secrets()
        .delete_secret(f.req(
            "alpha",
            &token,
            pb::DeleteSecretRequest { path: "idem/key".into(), request_id: String::new() },
        ))
        .await
        .expect("delete");
    assert_eq!(f.reveal("alpha", &token, "idem/key", 0).await.expect_err("deleted").code(), tonic::Code::NotFound);
    let list = f
        .secrets()
        .list_secrets(f.req("alpha", &token, pb::ListSecretsRequest { prefix: "idem/".into(), ..Default::default() }))
        .await
        .expect("list");
    assert!(list.into_inner().secrets.is_empty());
    f.secrets()
        .undelete_secret(f.req(
            "alpha",
            &token,
            pb::UndeleteSecretRequest { path: "idem/key".into(), request_id: String::new() },
        ))
        .await
        .expect("undelete");
    assert_eq!(f.reveal("alpha", &token, "idem/key", 0).await.expect("back").value, b"v1");

    // Destroying a version removes its ciphertext for good.
    let destroyed = f
        .secrets()
        .destroy_secret_versions(f.req(
            "alpha",
            &token,
            pb::DestroySecretVersionsRequest { path: "idem/key".into(), versions: vec![1], request_id: String::new() },
        ))
        .await
        .expect("destroy")
        .into_inner();
    assert_eq!(destroyed.destroyed, vec![1]);
    let err = f.reveal("alpha", &token, "idem/key", 1).await.expect_err("destroyed");
    assert_eq!(reason(&err), "SECRET_VERSION_DESTROYED");
    let left: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT ciphertext FROM t_alpha.secret_versions WHERE path = 'idem/key'")
            .fetch_one(&f.c.db.admin_pool().await)
            .await
            .expect("row");
    assert!(left.is_none());
    f.c.stop().await;
}

#[tokio::test]
async fn listing_paginates_by_prefix() {
    let f = Fixture::new().await;
    let token = f.token(f.alpha, &ALL);
    for i in 0..7 {
        f.put("alpha", &token, &format!("team/k{i}"), b"v", None).await.expect("put");
    }
    f.put("alpha", &token, "other/k", b"v", None).await.expect("put");
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = f
            .secrets()
            .list_secrets(f.req(
                "alpha",
                &token,
                pb::ListSecretsRequest { prefix: "team/".into(), page_size: 3, page_token: page_token.clone() },
            ))
            .await
            .expect("list")
            .into_inner();
        seen.extend(page.secrets.into_iter().map(|s| s.path));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen, (0..7).map(|i| format!("team/k{i}")).collect::<Vec<_>>());
    let err = f
        .secrets()
        .list_secrets(f.req(
            "alpha",
            &token,
            pb::ListSecretsRequest { prefix: "team/".into(), page_size: 3, page_token: "garbage!".into() },
        ))
        .await
        .expect_err("bad token");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // A secret's versions are listed oldest first, a page at a time.
    for v in 2..=5 {
        f.put("alpha", &token, "team/k0", format!("v{v}").as_bytes(), None).await.expect("new version");
    }
    let versions = |page_size: u32, page_token: String| {
        let msg = pb::ListSecretVersionsRequest { path: "team/k0".into(), page_size, page_token };
        let f = &f;
        let token = token.clone();
        async move { f.secrets().list_secret_versions(f.req("alpha", &token, msg)).await.map(|r| r.into_inner()) }
    };
    let (mut pages, mut page_token) = (Vec::new(), String::new());
    loop {
        let page = versions(2, page_token).await.expect("versions");
        pages.push(page.versions.iter().map(|v| v.version).collect::<Vec<_>>());
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(pages, vec![vec![1, 2], vec![3, 4], vec![5]]);
    assert_eq!(versions(0, String::new()).await.expect("default page").versions.len(), 5);
    for (page_size, page_token) in [(2, "0"), (2, "two"), (1001, "")] {
        let err = versions(page_size, page_token.into()).await.expect_err("bad page");
        assert_eq!(reason(&err), "INVALID_FIELD", "{page_size} {page_token}");
    }

    // A large tenant: 20,000 more secrets, a deleted one under the prefix, and a sibling that
    // sorts between "team/" and "team0" in no byte order but would in some collations.
    let admin = f.c.db.admin_pool().await;
    for sql in [
        "INSERT INTO t_alpha.secrets (tenant_id, path, current_version) \
         SELECT $1, 'bulk/' || lpad(i::text, 5, '0'), 1 FROM generate_series(1, 20000) i",
        "INSERT INTO t_alpha.secrets (tenant_id, path, current_version, deleted_at) VALUES ($1, 'team/k9', 1, now())",
        "INSERT INTO t_alpha.secrets (tenant_id, path, current_version) VALUES ($1, 'team-x/k', 1)",
        "ANALYZE t_alpha.secrets",
    ] {
        let q = sqlx::query(sql);
        let q = if sql.contains("$1") { q.bind(f.alpha) } else { q };
        q.execute(&admin).await.expect("seed");
    }
    let list = |prefix: &'static str, page_token: String| {
        let token = token.clone();
        let f = &f;
        async move {
            f.secrets()
                .list_secrets(f.req(
                    "alpha",
                    &token,
                    pb::ListSecretsRequest { prefix: prefix.into(), page_size: 1000, page_token },
                ))
                .await
                .expect("list")
                .into_inner()
        }
    };
    let team = list("team/", String::new()).await;
    assert_eq!(team.secrets.len(), 7, "no deleted secret, no sibling");
    let mut bulk = 0;
    let mut page_token = String::new();
    loop {
        let page = list("bulk/", page_token).await;
        bulk += page.secrets.len();
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(bulk, 20000);
    // Each page is one range of the listing index, as vault-svc reads it.
    let mut tx = admin.begin().await.expect("begin");
    e2e::act_as_service(&mut tx, "alpha", f.alpha, "vault").await;
    let (from, below) = vault_svc::store::listing_range("bulk/", Some("bulk/15000"));
    // The bounds as literals (both are paths and a control character, no quote).
    let sql = vault_svc::store::list_sql().replace("$1", &format!("'{from}'")).replace("$2", &format!("'{below}'"));
    let (plan,): (serde_json::Value,) = sqlx::query_as(&format!("EXPLAIN (FORMAT JSON) {}", sql.replace("$3", "1001")))
        .fetch_one(&mut *tx)
        .await
        .expect("explain");
    let plan = plan.to_string();
    assert!(plan.contains("secrets_listing") && !plan.contains("Seq Scan"), "{plan}");
    tx.rollback().await.expect("rollback");
    f.c.stop().await;
}

fn transit_req<T>(tenant: &str, msg: T) -> tonic::Request<T> {
    kit::client::with_context(tonic::Request::new(msg), Some(tenant), None, None)
}

/// The context auth-svc binds a TOTP seed to.
fn totp_context() -> HashMap<String, String> {
    [("user".to_owned(), "u-1".to_owned()), ("purpose".to_owned(), "totp".to_owned())].into()
}

fn transit_as(f: &Fixture, caller: &str) -> TransitServiceClient<kit::client::Channel> {
    TransitServiceClient::new(f.c.channel_as(caller, "vault"))
}

/// `plaintext` encrypted by auth-svc for alpha under `context`.
async fn encrypted_by_auth(f: &Fixture, plaintext: &[u8], context: &HashMap<String, String>) -> String {
    transit_as(f, "auth")
        .encrypt(transit_req(
            "alpha",
            pb::EncryptRequest { plaintext: plaintext.to_vec(), context: context.clone(), ..Default::default() },
        ))
        .await
        .expect("encrypt")
        .into_inner()
        .ciphertext
}

/// `caller` asks to decrypt `ciphertext` for `tenant` under `context`.
async fn decrypt_as(
    f: &Fixture,
    caller: &str,
    tenant: &str,
    ciphertext: &str,
    context: &HashMap<String, String>,
) -> Result<Vec<u8>, tonic::Status> {
    let msg = pb::DecryptRequest { ciphertext: ciphertext.into(), context: context.clone(), ..Default::default() };
    transit_as(f, caller).decrypt(transit_req(tenant, msg)).await.map(|r| r.into_inner().plaintext)
}

#[tokio::test]
async fn transit_decrypts_for_the_caller_tenant_and_context_it_encrypted_under() {
    let f = Fixture::new().await;
    let ctx = totp_context();
    let ct = encrypted_by_auth(&f, b"JBSWY3DPEHPK3PXP", &ctx).await;
    assert!(ct.starts_with("srv1:"));
    let back = decrypt_as(&f, "auth", "alpha", &ct, &ctx).await.expect("decrypt");
    assert_eq!(back, b"JBSWY3DPEHPK3PXP");
    f.c.stop().await;
}

#[tokio::test]
async fn a_ciphertext_does_not_decrypt_under_another_context_tenant_or_caller() {
    let f = Fixture::new().await;
    let ctx = totp_context();
    let ct = encrypted_by_auth(&f, b"JBSWY3DPEHPK3PXP", &ctx).await;
    let mut wrong_ctx = ctx.clone();
    wrong_ctx.insert("user".into(), "u-2".into());
    let err = decrypt_as(&f, "auth", "alpha", &ct, &wrong_ctx).await.expect_err("context");
    assert_eq!(reason(&err), "DECRYPTION_FAILED");
    let err = decrypt_as(&f, "auth", "bravo", &ct, &ctx).await.expect_err("tenant");
    assert_eq!(reason(&err), "DECRYPTION_FAILED");
    let err = decrypt_as(&f, "ledger", "alpha", &ct, &ctx).await.expect_err("caller");
    assert_eq!(reason(&err), "DECRYPTION_FAILED");
    let err = decrypt_as(&f, "gateway", "alpha", &ct, &ctx).await.expect_err("gateway");
    assert_eq!(reason(&err), "CALLER_NOT_ALLOWED");
    f.c.stop().await;
}

#[tokio::test]
async fn batches_keep_input_order_and_a_malformed_ciphertext_is_named_alone_or_in_place() {
    let f = Fixture::new().await;
    let err = decrypt_as(&f, "auth", "alpha", "srv1:AAAA", &totp_context()).await.expect_err("garbage");
    assert_eq!(reason(&err), "MALFORMED_CIPHERTEXT");

    let mut auth = transit_as(&f, "auth");
    let items: Vec<pb::EncryptRequest> = (0..5)
        .map(|i| pb::EncryptRequest { plaintext: vec![i; 8], context: HashMap::new(), ..Default::default() })
        .collect();
    let enc =
        auth.encrypt_batch(transit_req("alpha", pb::EncryptBatchRequest { items })).await.expect("batch").into_inner();
    let mut cts: Vec<String> = enc
        .results
        .into_iter()
        .map(|r| match r.result {
            Some(pb::encrypt_batch_result::Result::Ok(ok)) => ok.ciphertext,
            other => panic!("{other:?}"),
        })
        .collect();
    cts.insert(2, "not-a-ciphertext".into());
    let dec = auth
        .decrypt_batch(transit_req(
            "alpha",
            pb::DecryptBatchRequest {
                items: cts
                    .into_iter()
                    .map(|c| pb::DecryptRequest { ciphertext: c, context: HashMap::new(), ..Default::default() })
                    .collect(),
            },
        ))
        .await
        .expect("batch")
        .into_inner();
    let out: Vec<Result<Vec<u8>, String>> = dec
        .results
        .into_iter()
        .map(|r| match r.result {
            Some(pb::decrypt_batch_result::Result::Ok(ok)) => Ok(ok.plaintext),
            Some(pb::decrypt_batch_result::Result::Error(e)) => Err(e.reason),
            None => Err("none".into()),
        })
        .collect();
    assert_eq!(out.len(), 6);
    assert_eq!(out[2], Err("MALFORMED_CIPHERTEXT".to_owned()));
    assert_eq!(out[0], Ok(vec![0; 8]));
    assert_eq!(out[1], Ok(vec![1; 8]));
    assert_eq!(out[3], Ok(vec![2; 8]));
    assert_eq!(out[5], Ok(vec![4; 8]));
    f.c.stop().await;
}

#[tokio::test]
async fn a_wrapped_data_key_decrypts_back_to_its_plaintext_key() {
    let f = Fixture::new().await;
    let ctx = totp_context();
    let dk = transit_as(&f, "auth")
        .generate_data_key(transit_req(
            "alpha",
            pb::GenerateDataKeyRequest { context: ctx.clone(), ..Default::default() },
        ))
        .await
        .expect("data key")
        .into_inner();
    assert_eq!(dk.plaintext_key.len(), 32);
    let unwrapped = decrypt_as(&f, "auth", "alpha", &dk.wrapped_key, &ctx).await.expect("unwrap");
    assert_eq!(unwrapped, dk.plaintext_key);
    f.c.stop().await;
}

#[tokio::test]
async fn the_gateway_serves_secrets_over_http() {
    let c = Constellation::start(true).await;
    let alpha = c.create_tenant("alpha").await;
    let signer = TestSigner::generate();
    signer.publish(&c.db.admin_pool().await).await;
    let mut claims = TestSigner::claims(alpha, "alice");
    claims["permissions"] = serde_json::json!(ALL);
    let bearer = format!("Bearer {}", signer.sign(&claims));
    let h = |extra: &'static str| -> Vec<(&'static str, String)> {
        let mut v = vec![("x-strongroom-tenant", "alpha".to_owned()), ("content-type", "application/json".to_owned())];
        if !extra.is_empty() {
            v.push(("x-request-id", extra.to_owned()));
        }
        v
    };
    let headers = |v: &Vec<(&'static str, String)>, auth: &str| -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = v.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        out.push(("authorization".into(), auth.to_owned()));
        out
    };
    let call = |method: http::Method, path: &'static str, hs: Vec<(String, String)>, body: serde_json::Value| {
        let c = &c;
        async move {
            let refs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let body = if body.is_null() { Vec::new() } else { serde_json::to_vec(&body).expect("json") };
            c.gateway_request(method, path, &refs, body).await.expect("request")
        }
    };

    let (status, _, body) = call(
        http::Method::PUT,
        "/v1/secrets/brokers/ib",
        headers(&h("put-1"), &bearer),
        serde_json::json!({ "value": "IB-123", "labels": { "desk": "fx" } }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 1);
    assert_eq!(body["secret"]["labels"]["desk"], "fx");

    let (status, _, body) =
        call(http::Method::GET, "/v1/secrets/brokers/ib", headers(&h(""), &bearer), serde_json::Value::Null).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["current_version"], 1);
    assert!(!body.to_string().contains("IB-123"), "metadata never carries the value");

    let (status, _, body) = call(
        http::Method::POST,
        "/v1/secrets/brokers/ib:reveal",
        headers(&h(""), &bearer),
        serde_json::json!({ "reason": "reconcile" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"], "IB-123");

    let (status, _, body) =
        call(http::Method::GET, "/v1/secrets?prefix=brokers/", headers(&h(""), &bearer), serde_json::Value::Null).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["secrets"][0]["path"], "brokers/ib");

    // Conflicts, bad input and missing permissions get JSON errors.
    let (status, _, body) = call(
        http::Method::PUT,
        "/v1/secrets/brokers/ib",
        headers(&h(""), &bearer),
        serde_json::json!({ "value": "x", "expected_version": 0 }),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["reason"], "VERSION_CONFLICT");
    let (status, _, body) = call(
        http::Method::PUT,
        "/v1/secrets/brokers/ib",
        headers(&h(""), &bearer),
        serde_json::json!({ "value": "x", "surprise": 1 }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["reason"], "INVALID_FIELD");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.starts_with("surprise: unknown field")), "{body}");
    let (status, _, body) = call(
        http::Method::POST,
        "/v1/secrets/brokers/ib:reveal",
        headers(&h(""), &bearer),
        serde_json::json!({ "reason": "" }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let mut reader = TestSigner::claims(alpha, "bob");
    reader["permissions"] = serde_json::json!(["vault.secrets.read"]);
    let reader = format!("Bearer {}", signer.sign(&reader));
    let (status, _, body) = call(
        http::Method::POST,
        "/v1/secrets/brokers/ib:reveal",
        headers(&h(""), &reader),
        serde_json::json!({ "reason": "curious" }),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["reason"], "MISSING_PERMISSION");

    let (status, _, body) =
        call(http::Method::DELETE, "/v1/secrets/brokers/ib", headers(&h(""), &bearer), serde_json::Value::Null).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["deleted_at"].is_string());
    let (status, _, body) = call(
        http::Method::POST,
        "/v1/secrets/brokers/ib:reveal",
        headers(&h(""), &bearer),
        serde_json::json!({ "reason": "after delete" }),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    c.stop().await;
}

#[tokio::test]
async fn concurrent_first_use_creates_one_tenant_key() {
    let f = Fixture::new().await;
    let calls = (0..24).map(|i| {
        let mut client = TransitServiceClient::new(f.c.channel_as("auth", "vault"));
        async move {
            client.encrypt(transit_req("bravo", pb::EncryptRequest { plaintext: vec![i], ..Default::default() })).await
        }
    });
    let results = futures::future::join_all(calls).await;
    assert!(results.iter().all(Result::is_ok), "{:?}", results.iter().filter(|r| r.is_err()).collect::<Vec<_>>());
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM t_bravo.tenant_keys")
        .fetch_one(&f.c.db.admin_pool().await)
        .await
        .expect("count");
    assert_eq!(keys, 1);
    f.c.stop().await;
}

#[tokio::test]
async fn expired_secrets_are_not_revealed() {
    let f = Fixture::new().await;
    let token = f.token(f.alpha, &ALL);
    let past = prost_types::Timestamp { seconds: chrono::Utc::now().timestamp() - 60, nanos: 0 };
    let msg = pb::PutSecretRequest {
        path: "old/api-key".into(),
        value: b"stale".to_vec(),
        expires_at: Some(past),
        ..Default::default()
    };
    f.secrets().put_secret(f.req("alpha", &token, msg)).await.expect("put");
    let err = f.reveal("alpha", &token, "old/api-key", 0).await.expect_err("expired");
    assert_eq!(reason(&err), "SECRET_EXPIRED");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    f.c.stop().await;
}
