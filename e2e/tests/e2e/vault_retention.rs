//! Crypto-deletion by time (retention classes of vault-svc) and batches of subject keys: a period
//! past its class's retention loses its key and every ciphertext of it refuses to decrypt, while
//! newer periods' still decrypt; the job is audited once per run that destroyed something and
//! does nothing twice; a class is its tenant's alone; a batch over many subjects answers each item
//! in place. The same job deletes idempotency records older than ninety days, after which a retry
//! of such a request id is a new request. Time is moved by backdating a period's or a record's
//! row and by the job's `now`, never by sleeping.

use std::collections::HashMap;

use chrono::{Duration, Utc};
use e2e::{Constellation, reason};
use kit::testing::TestSigner;
use proto::vault::v1 as pb;
use proto::vault::v1::key_management_service_client::KeyManagementServiceClient;
use proto::vault::v1::retention_service_client::RetentionServiceClient;
use proto::vault::v1::transit_service_client::TransitServiceClient;

fn req<T>(tenant: &str, token: Option<&str>, msg: T) -> tonic::Request<T> {
    kit::client::with_context(tonic::Request::new(msg), Some(tenant), None, token)
}

struct F {
    c: Constellation,
    signer: TestSigner,
    alpha: uuid::Uuid,
    bravo: uuid::Uuid,
}

impl F {
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

    /// The retention service as the operator (no token).
    fn operator(&self) -> RetentionServiceClient<kit::client::Channel> {
        RetentionServiceClient::new(self.c.channel_as("operator", "vault"))
    }

    fn transit(&self) -> TransitServiceClient<kit::client::Channel> {
        TransitServiceClient::new(self.c.channel_as("auth", "vault"))
    }

    /// The job's database access, as vault-svc has it.
    fn vault_db(&self) -> kit::Db {
        kit::Db::connect_lazy(&self.c.db.runtime_url("vault"), 2).expect("pool")
    }

    async fn define(&self, tenant: &str, name: &str, days: u32) -> pb::RetentionClass {
        let msg = pb::PutRetentionClassRequest {
            name: name.into(),
            retention_days: days,
            period: pb::RetentionPeriod::Month as i32,
            request_id: String::new(),
        };
        let put = self.operator().put_retention_class(req(tenant, None, msg)).await.expect("define");
        put.into_inner().retention_class.expect("class")
    }

    async fn encrypt(&self, tenant: &str, plaintext: &[u8], class: &str) -> Result<pb::EncryptResponse, tonic::Status> {
        let msg = pb::EncryptRequest {
            plaintext: plaintext.to_vec(),
            context: messages_context(),
            retention_class: class.into(),
            ..Default::default()
        };
        self.transit().encrypt(req(tenant, None, msg)).await.map(tonic::Response::into_inner)
    }

    async fn decrypt(&self, tenant: &str, ciphertext: &str) -> Result<Vec<u8>, tonic::Status> {
        let msg =
            pb::DecryptRequest { ciphertext: ciphertext.into(), context: messages_context(), ..Default::default() };
        self.transit().decrypt(req(tenant, None, msg)).await.map(|r| r.into_inner().plaintext)
    }

    /// Pretends period key `number` of alpha covered January 2023 (long past any retention here).
    async fn backdate(&self, number: u32) {
        let moved = sqlx::query(
            "UPDATE t_alpha.period_keys SET period = '2023-01', period_start = '2023-01-01T00:00:00Z', \
             period_end = '2023-02-01T00:00:00Z' WHERE id = $1",
        )
        .bind(number as i32)
        .execute(&self.c.db.admin_pool().await)
        .await
        .expect("backdate");
        assert_eq!(moved.rows_affected(), 1);
    }

    /// The details of every record of `action` in alpha's outbox and log.
    async fn audited(&self, action: &str) -> Vec<serde_json::Value> {
        sqlx::query_scalar(
            "SELECT details FROM (SELECT action, details FROM t_alpha.audit_outbox \
             UNION ALL SELECT action, details FROM t_alpha.audit_log) AS r WHERE action = $1",
        )
        .bind(action)
        .fetch_all(&self.c.db.admin_pool().await)
        .await
        .expect("audit")
    }
}

/// The context a messaging platform binds a message to.
fn messages_context() -> HashMap<String, String> {
    [("conversation".to_owned(), "c-17".to_owned())].into()
}

fn request_records_removed() -> u64 {
    let label = kit::metrics::RetentionLabels { service: "vault".into(), data_type: "request_records".into() };
    kit::metrics::Metrics::global().retention_removed.get_or_create(&label).get()
}

fn destroyed_count() -> i64 {
    let label = kit::metrics::OperationLabels { operation: "period_key_destroyed".into() };
    kit::metrics::Metrics::global().vault_operations.get_or_create(&label).get() as i64
}

#[tokio::test]
async fn a_period_past_retention_refuses_to_decrypt_while_newer_periods_still_do() {
    let f = F::new().await;
    let class = f.define("alpha", "messages", 730).await;
    assert_eq!((class.retention_days, class.period), (730, pb::RetentionPeriod::Month as i32));

    let old = f.encrypt("alpha", b"hello from 2023", "messages").await.expect("encrypt");
    // Written under the key of this month, created on first use; the same month's key again.
    assert_eq!(f.encrypt("alpha", b"same month", "messages").await.expect("again").key_version, old.key_version);
    f.backdate(old.key_version).await;
    let new = f.encrypt("alpha", b"hello from now", "messages").await.expect("encrypt");
    assert_ne!(new.key_version, old.key_version, "this month has a key of its own");
    assert_eq!(f.decrypt("alpha", &old.ciphertext).await.expect("not destroyed yet"), b"hello from 2023");

    // Two replicas' jobs at once: the key is destroyed, counted and audited once.
    let (db, other_replica) = (f.vault_db(), f.vault_db());
    let metric_before = destroyed_count();
    let now = Utc::now();
    let (a, b) =
        tokio::join!(vault_svc::retention::run_once(&db, now), vault_svc::retention::run_once(&other_replica, now));
    assert_eq!(a.expect("run") + b.expect("run on the other replica"), 1);
    let err = f.decrypt("alpha", &old.ciphertext).await.expect_err("past retention");
    assert_eq!((err.code(), reason(&err).as_str()), (tonic::Code::FailedPrecondition, "RETENTION_EXPIRED"));
    assert_eq!(f.decrypt("alpha", &new.ciphertext).await.expect("newer period"), b"hello from now");
    assert_eq!(destroyed_count(), metric_before + 1);

    // The key is gone from the database; its row stays as the tombstone.
    let (wrapped, destroyed_at): (Option<Vec<u8>>, Option<chrono::DateTime<Utc>>) =
        sqlx::query_as("SELECT wrapped, destroyed_at FROM t_alpha.period_keys WHERE id = $1")
            .bind(old.key_version as i32)
            .fetch_one(&f.c.db.admin_pool().await)
            .await
            .expect("row");
    assert!(wrapped.is_none() && destroyed_at.is_some());

    // One audit record of the run: counts and class names only.
    let records = f.audited(vault_svc::retention::DESTROY_ACTION).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["destroyed"], 1);
    assert_eq!(records[0]["classes"], serde_json::json!({"messages": 1}));

    // Running it again destroys nothing more and writes nothing.
    assert_eq!(vault_svc::retention::run_once(&db, Utc::now()).await.expect("rerun"), 0);
    assert_eq!(f.audited(vault_svc::retention::DESTROY_ACTION).await.len(), 1);
    assert_eq!(destroyed_count(), metric_before + 1);

    // A batch answers each item in place, and the class works in batches too.
    let items = vec![
        pb::DecryptRequest { ciphertext: old.ciphertext.clone(), context: messages_context(), ..Default::default() },
        pb::DecryptRequest { ciphertext: new.ciphertext.clone(), context: messages_context(), ..Default::default() },
    ];
    let results =
        f.transit().decrypt_batch(req("alpha", None, pb::DecryptBatchRequest { items })).await.expect("batch");
    let results: Vec<_> = results.into_inner().results.into_iter().map(|r| r.result.expect("result")).collect();
    assert!(matches!(&results[0], pb::decrypt_batch_result::Result::Error(e) if e.reason == "RETENTION_EXPIRED"));
    assert!(matches!(&results[1], pb::decrypt_batch_result::Result::Ok(ok) if ok.plaintext == b"hello from now"));
    let item = pb::EncryptRequest {
        plaintext: b"batched".to_vec(),
        context: messages_context(),
        retention_class: "messages".into(),
        ..Default::default()
    };
    let sealed = f
        .transit()
        .encrypt_batch(req("alpha", None, pb::EncryptBatchRequest { items: vec![item] }))
        .await
        .expect("encrypt batch")
        .into_inner()
        .results;
    let Some(pb::encrypt_batch_result::Result::Ok(batched)) = sealed.into_iter().next().and_then(|r| r.result) else {
        panic!("the batch item was not sealed")
    };
    assert_eq!(batched.key_version, new.key_version);

    // A rewrap keeps a class's ciphertext under its period's key: it never extends retention.
    let msg =
        pb::RewrapRequest { ciphertext: new.ciphertext.clone(), context: messages_context(), subject: String::new() };
    let rewrapped = f.transit().rewrap(req("alpha", None, msg)).await.expect("rewrap").into_inner();
    assert_eq!(rewrapped.key_version, new.key_version);

    let listed = f
        .operator()
        .list_retention_classes(req("alpha", None, pb::ListRetentionClassesRequest::default()))
        .await
        .expect("list")
        .into_inner();
    let messages = &listed.retention_classes[0];
    assert_eq!((messages.live_period_keys, messages.destroyed_period_keys), (1, 1));

    // With the clock moved past this month's retention too, its key goes the same way.
    let later = Utc::now() + Duration::days(3 * 365);
    assert_eq!(vault_svc::retention::run_once(&db, later).await.expect("later run"), 1);
    for ct in [&new.ciphertext, &rewrapped.ciphertext, &batched.ciphertext] {
        assert_eq!(reason(&f.decrypt("alpha", ct).await.expect_err("expired")), "RETENTION_EXPIRED");
    }
    assert_eq!(f.audited(vault_svc::retention::DESTROY_ACTION).await.len(), 2);
    f.c.stop().await;
}

#[tokio::test]
async fn a_retention_class_is_its_tenants_alone() {
    let f = F::new().await;
    f.define("alpha", "messages", 730).await;
    let err = f.encrypt("bravo", b"x", "messages").await.expect_err("bravo has no such class");
    assert_eq!((err.code(), reason(&err).as_str()), (tonic::Code::NotFound, "RETENTION_CLASS_NOT_FOUND"));

    // Bravo's own class of the same name has keys of its own: alpha's ciphertext does not open there.
    let alphas = f.encrypt("alpha", b"alpha's message", "messages").await.expect("alpha");
    f.define("bravo", "messages", 30).await;
    let bravos = f.encrypt("bravo", b"bravo's message", "messages").await.expect("bravo");
    assert_eq!(reason(&f.decrypt("bravo", &alphas.ciphertext).await.expect_err("other tenant")), "DECRYPTION_FAILED");
    assert_eq!(reason(&f.decrypt("alpha", &bravos.ciphertext).await.expect_err("other tenant")), "DECRYPTION_FAILED");
    assert_eq!(f.decrypt("alpha", &alphas.ciphertext).await.expect("own"), b"alpha's message");

    // Only alpha's class is listed in alpha.
    let listed = f
        .operator()
        .list_retention_classes(req("alpha", None, pb::ListRetentionClassesRequest::default()))
        .await
        .expect("list")
        .into_inner();
    let days: Vec<u32> = listed.retention_classes.iter().map(|c| c.retention_days).collect();
    assert_eq!(days, vec![730]);

    // Through the gateway, a user needs `tenant.policy.write` of the tenant named.
    let mut gateway = RetentionServiceClient::new(f.c.channel_as("gateway", "vault"));
    let put = |name: &str| pb::PutRetentionClassRequest {
        name: name.into(),
        retention_days: 90,
        period: pb::RetentionPeriod::Day as i32,
        request_id: String::new(),
    };
    let reader = f.token(f.alpha, &["vault.secrets.read"]);
    let err = gateway.put_retention_class(req("alpha", Some(&reader), put("logs"))).await.expect_err("no permission");
    assert_eq!(reason(&err), "MISSING_PERMISSION");
    let bravo_admin = f.token(f.bravo, &["tenant.policy.write"]);
    let err = gateway.put_retention_class(req("alpha", Some(&bravo_admin), put("logs"))).await.expect_err("tenant");
    assert_eq!(reason(&err), "TENANT_MISMATCH");
    let err = gateway.put_retention_class(req("alpha", None, put("logs"))).await.expect_err("no token");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let admin = f.token(f.alpha, &["tenant.policy.write"]);
    let logs = gateway.put_retention_class(req("alpha", Some(&admin), put("logs"))).await.expect("admin");
    assert_eq!(logs.into_inner().retention_class.expect("class").period, pb::RetentionPeriod::Day as i32);
    // A workload that is not the operator or the gateway is refused.
    let err = RetentionServiceClient::new(f.c.channel_as("auth", "vault"))
        .put_retention_class(req("alpha", None, put("logs")))
        .await
        .expect_err("auth-svc");
    assert_eq!(reason(&err), "CALLER_NOT_ALLOWED");

    // A class keeps its period; its retention may change, audited with the previous one.
    let mut monthly = put("logs");
    monthly.period = pb::RetentionPeriod::Month as i32;
    let err = f.operator().put_retention_class(req("alpha", None, monthly)).await.expect_err("period change");
    assert_eq!(reason(&err), "RETENTION_PERIOD_FIXED");
    let mut longer = put("logs");
    longer.retention_days = 120;
    longer.period = 0;
    let changed = f.operator().put_retention_class(req("alpha", None, longer)).await.expect("retention change");
    assert_eq!(changed.into_inner().retention_class.expect("class").retention_days, 120);
    let puts = f.audited("vault.retention_class.put").await;
    assert_eq!(puts.len(), 3, "messages, logs, and the change of logs");
    assert!(puts.iter().any(|d| d["previous_retention_days"] == 90 && d["retention_days"] == 120));

    // A class and a subject do not go together.
    let msg = pb::EncryptRequest {
        plaintext: b"x".to_vec(),
        subject: "user-1".into(),
        retention_class: "messages".into(),
        ..Default::default()
    };
    let err = f.transit().encrypt(req("alpha", None, msg)).await.expect_err("both");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    f.c.stop().await;
}

#[tokio::test]
async fn period_keys_move_with_a_tenant_key_rewrap_and_outlive_the_retired_version() {
    let f = F::new().await;
    f.define("alpha", "messages", 730).await;
    let ct = f.encrypt("alpha", b"kept across rotations", "messages").await.expect("encrypt");
    let mut keys = KeyManagementServiceClient::new(f.c.channel_as("operator", "vault"));
    keys.rotate_tenant_key(req("alpha", None, pb::RotateTenantKeyRequest { request_id: String::new() }))
        .await
        .expect("rotate");
    // The period key is sealed under version 1: retiring it now would destroy the period's data.
    let err = keys
        .retire_tenant_keys(req("alpha", None, pb::RetireTenantKeysRequest { request_id: String::new() }))
        .await
        .expect_err("period key still under version 1");
    assert_eq!(reason(&err), "REWRAP_INCOMPLETE");
    let done = keys
        .rewrap_tenant(req("alpha", None, pb::RewrapTenantRequest { batch_size: 0 }))
        .await
        .expect("rewrap")
        .into_inner();
    assert_eq!(done.remaining, 0);
    let version: i32 = sqlx::query_scalar("SELECT tenant_key_version FROM t_alpha.period_keys WHERE id = $1")
        .bind(ct.key_version as i32)
        .fetch_one(&f.c.db.admin_pool().await)
        .await
        .expect("period key");
    assert_eq!(version, 2, "the period key moved to the active tenant key");
    let retired = keys
        .retire_tenant_keys(req("alpha", None, pb::RetireTenantKeysRequest { request_id: String::new() }))
        .await
        .expect("retire")
        .into_inner();
    assert_eq!(retired.retired, vec![1]);
    assert_eq!(f.decrypt("alpha", &ct.ciphertext).await.expect("still readable"), b"kept across rotations");
    // New data of the period keeps using the same period key.
    assert_eq!(f.encrypt("alpha", b"later", "messages").await.expect("encrypt").key_version, ct.key_version);
    f.c.stop().await;
}

#[tokio::test]
async fn a_decrypt_batch_over_a_hundred_subjects_answers_each_item_in_place() {
    let f = F::new().await;
    let subject = |i: usize| format!("user-{}", i % 100);
    let items: Vec<pb::EncryptRequest> = (0..200)
        .map(|i| pb::EncryptRequest {
            plaintext: format!("field {i}").into_bytes(),
            context: [("row".to_owned(), i.to_string())].into(),
            subject: subject(i),
            ..Default::default()
        })
        .collect();
    let sealed = f
        .transit()
        .encrypt_batch(req("alpha", None, pb::EncryptBatchRequest { items }))
        .await
        .expect("encrypt batch")
        .into_inner()
        .results;
    let ciphertexts: Vec<String> = sealed
        .into_iter()
        .map(|r| match r.result {
            Some(pb::encrypt_batch_result::Result::Ok(ok)) => ok.ciphertext,
            other => panic!("not sealed: {other:?}"),
        })
        .collect();
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM t_alpha.subject_keys")
        .fetch_one(&f.c.db.admin_pool().await)
        .await
        .expect("count");
    assert_eq!(keys, 100, "one key per subject, created once in the batch");

    KeyManagementServiceClient::new(f.c.channel_as("operator", "vault"))
        .shred_subject(req(
            "alpha",
            None,
            pb::ShredSubjectRequest { subject: "user-37".into(), request_id: String::new() },
        ))
        .await
        .expect("shred");

    let items: Vec<pb::DecryptRequest> = ciphertexts
        .iter()
        .enumerate()
        .map(|(i, c)| pb::DecryptRequest {
            ciphertext: c.clone(),
            context: [("row".to_owned(), i.to_string())].into(),
            subject: subject(i),
        })
        .collect();
    let results = f
        .transit()
        .decrypt_batch(req("alpha", None, pb::DecryptBatchRequest { items }))
        .await
        .expect("decrypt batch")
        .into_inner()
        .results;
    assert_eq!(results.len(), 200);
    for (i, r) in results.into_iter().enumerate() {
        match r.result.expect("result") {
            pb::decrypt_batch_result::Result::Ok(ok) if i % 100 != 37 => {
                assert_eq!(ok.plaintext, format!("field {i}").into_bytes(), "item {i}");
            }
            pb::decrypt_batch_result::Result::Error(e) if i % 100 == 37 => {
                assert_eq!((e.code.as_str(), e.reason.as_str()), ("FAILED_PRECONDITION", "KEY_DESTROYED"), "item {i}");
            }
            other => panic!("item {i} answered {other:?}"),
        }
    }
    f.c.stop().await;
}

#[tokio::test]
async fn request_records_older_than_ninety_days_are_removed_and_their_ids_act_anew() {
    let f = F::new().await;
    let admin = f.c.db.admin_pool().await;
    let keys = KeyManagementServiceClient::new(f.c.channel_as("operator", "vault"));
    let (old_id, new_id) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
    let rotate = |id: &str| {
        let msg = pb::RotateTenantKeyRequest { request_id: id.to_owned() };
        let mut keys = keys.clone();
        async move {
            keys.rotate_tenant_key(req("alpha", None, msg))
                .await
                .expect("rotate")
                .into_inner()
                .key
                .expect("key")
                .version
        }
    };
    assert_eq!(rotate(&old_id).await, 2);
    assert_eq!(rotate(&new_id).await, 3);
    assert_eq!(rotate(&old_id).await, 2, "a retry within ninety days is answered from its record");
    let records = || async {
        let ids: Vec<uuid::Uuid> =
            sqlx::query_scalar("SELECT request_id FROM t_alpha.idempotency_keys ORDER BY created_at")
                .fetch_all(&admin)
                .await
                .expect("records");
        ids.into_iter().map(|id| id.to_string()).collect::<Vec<_>>()
    };
    assert_eq!(records().await, vec![old_id.clone(), new_id.clone()]);
    let backdated = sqlx::query(
        "UPDATE t_alpha.idempotency_keys SET created_at = now() - interval '91 days' WHERE request_id = $1::uuid",
    )
    .bind(&old_id)
    .execute(&admin)
    .await
    .expect("backdate");
    assert_eq!(backdated.rows_affected(), 1);
    let db = f.vault_db();

    // Under a tenant-wide legal hold the record stays, and nothing is audited.
    let hold = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO t_alpha.legal_holds (tenant_id, id, scope, reason, placed_by) \
         VALUES ($1, $2, 'tenant', 'inquiry', 'test')",
    )
    .bind(f.alpha)
    .bind(hold)
    .execute(&admin)
    .await
    .expect("hold");
    vault_svc::retention::run_once(&db, Utc::now()).await.expect("held run");
    assert_eq!(records().await.len(), 2, "kept by the hold");
    assert!(f.audited(vault_svc::retention::REMOVE_REQUEST_RECORDS_ACTION).await.is_empty());
    sqlx::query("UPDATE t_alpha.legal_holds SET released_at = now(), released_by = 'test' WHERE id = $1")
        .bind(hold)
        .execute(&admin)
        .await
        .expect("release");

    // Released: the run removes exactly the old record, counted and audited with its count only.
    let metric_before = request_records_removed();
    assert_eq!(vault_svc::retention::run_once(&db, Utc::now()).await.expect("run"), 0, "no period key");
    assert_eq!(records().await, vec![new_id.clone()]);
    assert_eq!(request_records_removed(), metric_before + 1);
    let audited = f.audited(vault_svc::retention::REMOVE_REQUEST_RECORDS_ACTION).await;
    assert_eq!(audited.len(), 1);
    assert_eq!(audited[0]["request_records_removed"], 1);
    assert_eq!(audited[0]["older_than_days"], vault_svc::retention::REQUEST_RECORD_DAYS);
    assert!(!audited[0].to_string().contains(&old_id), "no request id in the record");

    // Again: nothing more to remove, nothing more audited.
    vault_svc::retention::run_once(&db, Utc::now()).await.expect("rerun");
    assert_eq!(records().await, vec![new_id.clone()]);
    assert_eq!(f.audited(vault_svc::retention::REMOVE_REQUEST_RECORDS_ACTION).await.len(), 1);

    // A backlog larger than one batch goes in several transactions, each audited with its count.
    let metric_before = request_records_removed();
    let backlog = vault_svc::retention::REQUEST_RECORD_BATCH + 1;
    sqlx::query(
        "INSERT INTO t_alpha.idempotency_keys (tenant_id, request_id, operation, digest, response, created_at) \
         SELECT $1, gen_random_uuid(), 'put_secret', '\\x', '\\x', now() - interval '100 days' \
         FROM generate_series(1, $2)",
    )
    .bind(f.alpha)
    .bind(backlog)
    .execute(&admin)
    .await
    .expect("backlog");
    vault_svc::retention::run_once(&db, Utc::now()).await.expect("backlog run");
    assert_eq!(records().await, vec![new_id.clone()]);
    assert_eq!(request_records_removed(), metric_before + backlog as u64);
    let counts: Vec<i64> = f
        .audited(vault_svc::retention::REMOVE_REQUEST_RECORDS_ACTION)
        .await
        .iter()
        .map(|d| d["request_records_removed"].as_i64().expect("count"))
        .collect();
    assert_eq!(counts.iter().sum::<i64>(), 1 + backlog);
    assert_eq!(counts.len(), 3, "one record, then a full batch and the rest: {counts:?}");

    // The old id now rotates anew; the recent one is still answered from its record.
    assert_eq!(rotate(&old_id).await, 4, "an id past ninety days is a new request");
    assert_eq!(rotate(&new_id).await, 3);
    f.c.stop().await;
}
