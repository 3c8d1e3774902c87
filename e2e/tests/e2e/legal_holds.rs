//! Legal holds over HTTP, with real auth-svc, vault-svc, PostgreSQL and Redis: a user deleted
//! under a subject hold is restricted instead (no login, data still sealed, shown only to a holder
//! of `privacy.restricted.read`, with an audited reveal); housekeeping keeps what the hold covers;
//! the release completes the erasure and shreds the subject key. A tenant-wide hold defers a whole
//! purge, vault-svc's destruction of period keys past retention and audit-svc's pruning of its log,
//! each until the release. Time is moved by backdating rows and by the retention job's `now`,
//! never by sleeping.

use std::collections::HashMap;

use e2e::{Constellation, reason};
use http::Method;
use kit::testing::TestSigner;
use proto::vault::v1 as vault;
use serde_json::{Value, json};

const PASSWORD: &str = "a long enough password";

struct Fx {
    c: Constellation,
    signer: TestSigner,
    alpha: uuid::Uuid,
    owner: String,
    admin: sqlx::PgPool,
}

#[allow(clippy::expect_used)]
impl Fx {
    async fn start() -> Self {
        let _ = kit::telemetry::init("e2e", &kit::config::TelemetryConfig { otlp_endpoint: None, log: "error".into() });
        let c = Constellation::start(true).await;
        let (alpha, owner, _) = c.create_tenant_with_owner("alpha", "owner@alpha.example").await;
        let signer = TestSigner::generate();
        let admin = c.db.admin_pool().await;
        signer.publish(&admin).await;
        Self { c, signer, alpha, owner, admin }
    }

    /// An access token of the owner in alpha holding only `permissions`.
    fn token(&self, permissions: &[&str]) -> String {
        let mut claims = TestSigner::claims(self.alpha, &self.owner);
        claims["permissions"] = json!(permissions);
        self.signer.sign(&claims)
    }

    async fn http(&self, method: Method, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("x-strongroom-tenant", "alpha")];
        if let Some(b) = bearer.as_deref() {
            headers.push(("authorization", b));
        }
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            headers.push(("content-type", "application/json"));
            serde_json::to_vec(&body).expect("json")
        };
        let (status, _, json) = self.c.gateway_request(method, path, &headers, bytes).await.expect("request");
        (status.as_u16(), json)
    }

    /// Creates a user of alpha; returns their id.
    async fn create_user(&self, email: &str) -> uuid::Uuid {
        let body = json!({ "email": email, "password": PASSWORD });
        let (s, u) = self.http(Method::POST, "/v1/users", Some(&self.token(&["users.write"])), body).await;
        assert_eq!(s, 200, "{u}");
        u["id"].as_str().expect("id").parse().expect("uuid")
    }

    /// Logs `email` in: the HTTP status.
    async fn login(&self, email: &str) -> u16 {
        let body = json!({ "tenant": "alpha", "email": email, "password": PASSWORD });
        self.http(Method::POST, "/v1/auth/login", None, body).await.0
    }

    /// Ends `user`'s sessions and their tokens `days` ago.
    async fn backdate_sessions(&self, user: uuid::Uuid, days: i32) {
        for sql in [
            "UPDATE t_alpha.sessions SET expires_at = now() - make_interval(days => $2) WHERE user_id = $1",
            "UPDATE t_alpha.refresh_tokens t SET expires_at = now() - make_interval(days => $2)
               FROM t_alpha.sessions s WHERE s.id = t.session_id AND s.user_id = $1",
        ] {
            sqlx::query(sql).bind(user).bind(days).execute(&self.admin).await.expect("backdate");
        }
    }

    async fn sessions_of(&self, user: uuid::Uuid) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM t_alpha.sessions WHERE user_id = $1")
            .bind(user)
            .fetch_one(&self.admin)
            .await
            .expect("sessions")
    }

    /// The details of every audit record of `action` in alpha, waiting or logged.
    async fn audited(&self, action: &str) -> Vec<Value> {
        sqlx::query_scalar(
            "SELECT details FROM t_alpha.audit_outbox WHERE action = $1
             UNION ALL SELECT details FROM t_alpha.audit_log WHERE action = $1",
        )
        .bind(action)
        .fetch_all(&self.admin)
        .await
        .expect("audit")
    }

    async fn purge(&self) -> auth_svc::housekeeping::Purged {
        let db = kit::Db::connect_lazy(&self.c.db.runtime_url("auth"), 2).expect("pool");
        let tenant = db.tenant(&kit::TenantSlug::parse("alpha").expect("slug")).await.expect("tenant");
        auth_svc::housekeeping::purge(&db, &tenant).await.expect("purge")
    }

    async fn place(&self, body: Value) -> String {
        let (s, h) =
            self.http(Method::POST, "/v1/privacy/holds", Some(&self.token(&["privacy.holds.write"])), body).await;
        assert_eq!(s, 200, "{h}");
        h["id"].as_str().expect("id").to_owned()
    }

    /// Waits until every audit record of alpha waiting in the outbox is in the log.
    async fn drained(&self) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM t_alpha.audit_outbox")
                .fetch_one(&self.admin)
                .await
                .expect("outbox");
            if waiting == 0 {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "alpha's outbox was not drained");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    async fn release(&self, id: &str) -> (u16, Value) {
        let path = format!("/v1/privacy/holds/{id}/release");
        self.http(Method::POST, &path, Some(&self.token(&["privacy.holds.write"])), json!({ "note": "matter closed" }))
            .await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_deleted_under_a_hold_is_restricted_kept_from_the_purge_and_erased_at_release() {
    let f = Fx::start().await;
    let held = f.create_user("held@alpha.example").await;
    let other = f.create_user("other@alpha.example").await;
    for email in ["held@alpha.example", "other@alpha.example"] {
        assert_eq!(f.login(email).await, 200);
    }

    // A subject hold; the same one twice is refused; an officer lists it; a plain user may not.
    let hold = f.place(json!({ "scope": "subject", "subject_id": held, "reason": "case 42" })).await;
    let holder = f.token(&["privacy.holds.write"]);
    let again = json!({ "scope": "subject", "subject_id": held, "reason": "again" });
    let (s, e) = f.http(Method::POST, "/v1/privacy/holds", Some(&holder), again).await;
    assert_eq!((s, e["error"]["reason"].as_str()), (409, Some("HOLD_EXISTS")), "{e}");
    let (s, list) =
        f.http(Method::GET, "/v1/privacy/holds", Some(&f.token(&["privacy.requests.read"])), Value::Null).await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["holds"][0]["id"], hold.as_str(), "{list}");
    assert_eq!(list["holds"][0]["released_at"], Value::Null, "{list}");
    let (s, _) = f.http(Method::GET, "/v1/privacy/holds", Some(&f.token(&["users.read"])), Value::Null).await;
    assert_eq!(s, 403);

    // Deleting the held user restricts them: no login, their data still sealed in the database.
    let deleter = f.token(&["users.delete"]);
    let (s, e) = f.http(Method::DELETE, &format!("/v1/users/{held}"), Some(&deleter), Value::Null).await;
    assert_eq!(s, 200, "{e}");
    assert_ne!(f.login("held@alpha.example").await, 200, "a restricted user cannot log in");
    let (status, email, deferred): (String, Option<String>, bool) =
        sqlx::query_as("SELECT status, email_sealed, erasure_deferred_at IS NOT NULL FROM t_alpha.users WHERE id = $1")
            .bind(held)
            .fetch_one(&f.admin)
            .await
            .expect("user");
    assert_eq!((status.as_str(), deferred), ("suspended", true));
    let email = email.expect("still sealed");
    assert_eq!(f.audited("user.delete_deferred").await.len(), 1);
    assert!(f.audited("user.delete").await.is_empty());

    // A plain admin sees no personal field; a holder of privacy.restricted.read sees them, and
    // that request leaves one reveal record naming the user (no values).
    let path = format!("/v1/users/{held}");
    let (s, u) = f.http(Method::GET, &path, Some(&f.token(&["users.read"])), Value::Null).await;
    assert_eq!((s, &u["email"], &u["status"]), (200, &json!(""), &json!("suspended")), "{u}");
    assert!(f.audited("privacy.restricted.reveal").await.is_empty());
    let revealer = f.token(&["users.read", "privacy.restricted.read"]);
    let (s, u) = f.http(Method::GET, &path, Some(&revealer), Value::Null).await;
    assert_eq!((s, &u["email"]), (200, &json!("held@alpha.example")), "{u}");
    let reveals = f.audited("privacy.restricted.reveal").await;
    assert_eq!(reveals, [json!({ "user_ids": [held.to_string()] })]);
    let (s, page) = f.http(Method::GET, "/v1/users", Some(&f.token(&["users.read"])), Value::Null).await;
    assert_eq!(s, 200, "{page}");
    let listed = page["users"].as_array().expect("users").iter().find(|u| u["id"] == held.to_string()).cloned();
    assert_eq!(listed.expect("listed")["email"], "", "{page}");

    // Housekeeping removes the other user's ended session and keeps the held user's.
    f.backdate_sessions(held, 400).await;
    f.backdate_sessions(other, 400).await;
    let purged = f.purge().await;
    assert_eq!((purged.refresh_tokens, purged.sessions), (1, 1), "{purged:?}");
    assert!(purged.deferred_by_hold >= 1, "{purged:?}");
    assert_eq!((f.sessions_of(held).await, f.sessions_of(other).await), (1, 0));
    let runs = f.audited("auth.purge_expired").await;
    assert!(runs.iter().any(|r| r["deferred_by_hold"].as_u64().is_some_and(|n| n >= 1)), "{runs:?}");

    // The release completes the erasure: fields gone, the subject key shredded.
    let (s, r) = f.release(&hold).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!((&r["erasures_completed"], &r["erasures_still_held"]), (&json!(1), &json!(0)), "{r}");
    assert_eq!(r["hold"]["release_note"], "matter closed", "{r}");
    let (status, sealed): (String, Option<String>) =
        sqlx::query_as("SELECT status, email_sealed FROM t_alpha.users WHERE id = $1")
            .bind(held)
            .fetch_one(&f.admin)
            .await
            .expect("user");
    assert_eq!((status.as_str(), sealed), ("deleted", None));
    let deletes = f.audited("user.delete").await;
    assert_eq!(deletes.len(), 1);
    assert!(deletes[0]["deferred_since"].is_string(), "{deletes:?}");
    let context = HashMap::from([
        ("table".to_owned(), "users".to_owned()),
        ("column".to_owned(), "email".to_owned()),
        ("row".to_owned(), held.to_string()),
    ]);
    let msg = vault::DecryptRequest { ciphertext: email, context, subject: held.to_string() };
    let mut transit = vault::transit_service_client::TransitServiceClient::new(f.c.channel_as("auth", "vault"));
    let request = kit::client::with_context(tonic::Request::new(msg), Some("alpha"), None, None);
    let err = transit.decrypt(request).await.expect_err("shredded");
    assert_eq!(reason(&err), "KEY_DESTROYED");
    let (s, e) = f.release(&hold).await;
    assert_eq!((s, e["error"]["reason"].as_str()), (412, Some("HOLD_RELEASED")), "{e}");
    assert_eq!(f.audited("privacy.hold.release").await.len(), 1);
    f.c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_wide_hold_defers_the_whole_purge_until_released() {
    let f = Fx::start().await;
    let user = f.create_user("anyone@alpha.example").await;
    assert_eq!(f.login("anyone@alpha.example").await, 200);
    f.backdate_sessions(user, 400).await;
    let hold = f.place(json!({ "scope": "tenant", "reason": "regulator inquiry" })).await;
    let (s, e) = f
        .http(Method::POST, "/v1/privacy/holds", Some(&f.token(&["privacy.holds.write"])), json!({ "scope": "tenant" }))
        .await;
    assert_eq!(s, 400, "a hold needs a reason: {e}");

    let purged = f.purge().await;
    assert_eq!(purged.counts().iter().map(|(_, n)| n).sum::<u64>(), 0, "{purged:?}");
    assert!(purged.deferred_by_hold >= 1, "{purged:?}");
    assert_eq!(f.sessions_of(user).await, 1);
    assert_eq!(f.audited("privacy.hold.place").await, [json!({ "scope": "tenant" })]);

    let (s, r) = f.release(&hold).await;
    assert_eq!(s, 200, "{r}");
    let purged = f.purge().await;
    assert_eq!((purged.refresh_tokens, purged.sessions, purged.deferred_by_hold), (1, 1, 0), "{purged:?}");
    assert_eq!(f.sessions_of(user).await, 0);
    f.c.stop().await;
}

fn in_alpha<T>(msg: T) -> tonic::Request<T> {
    kit::client::with_context(tonic::Request::new(msg), Some("alpha"), None, None)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_wide_hold_keeps_period_keys_past_retention_until_released() {
    let f = Fx::start().await;
    let mut classes = vault::retention_service_client::RetentionServiceClient::new(f.c.channel_as("operator", "vault"));
    let class = vault::PutRetentionClassRequest {
        name: "messages".into(),
        retention_days: 730,
        period: vault::RetentionPeriod::Month as i32,
        request_id: String::new(),
    };
    classes.put_retention_class(in_alpha(class)).await.expect("class");
    let mut transit = vault::transit_service_client::TransitServiceClient::new(f.c.channel_as("auth", "vault"));
    let context: HashMap<String, String> = [("conversation".to_owned(), "c-17".to_owned())].into();
    let msg = vault::EncryptRequest {
        plaintext: b"kept for the inquiry".to_vec(),
        context: context.clone(),
        retention_class: "messages".into(),
        ..Default::default()
    };
    let sealed = transit.encrypt(in_alpha(msg)).await.expect("encrypt").into_inner();
    // The key's period was January 2023: long past two years' retention.
    let moved = sqlx::query(
        "UPDATE t_alpha.period_keys SET period = '2023-01', period_start = '2023-01-01T00:00:00Z', \
         period_end = '2023-02-01T00:00:00Z' WHERE id = $1",
    )
    .bind(sealed.key_version as i32)
    .execute(&f.admin)
    .await
    .expect("backdate");
    assert_eq!(moved.rows_affected(), 1);
    let decrypt = || {
        let msg = vault::DecryptRequest {
            ciphertext: sealed.ciphertext.clone(),
            context: context.clone(),
            ..Default::default()
        };
        let mut transit = transit.clone();
        async move { transit.decrypt(in_alpha(msg)).await.map(|r| r.into_inner().plaintext) }
    };

    // Under a tenant-wide hold the job destroys nothing, audits nothing and counts the deferral.
    let hold = f.place(json!({ "scope": "tenant", "reason": "regulator inquiry" })).await;
    let db = kit::Db::connect_lazy(&f.c.db.runtime_url("vault"), 2).expect("pool");
    let deferred = |m: &kit::metrics::Metrics| {
        let label = kit::metrics::EventLabels { event: vault_svc::retention::DEFERRED_EVENT.into() };
        m.events.get_or_create(&label).get()
    };
    let before = deferred(kit::metrics::Metrics::global());
    assert_eq!(vault_svc::retention::run_once(&db, chrono::Utc::now()).await.expect("run"), 0);
    assert_eq!(decrypt().await.expect("kept by the hold"), b"kept for the inquiry");
    assert!(deferred(kit::metrics::Metrics::global()) > before);
    assert!(f.audited(vault_svc::retention::DESTROY_ACTION).await.is_empty());

    // The contract auth-svc publishes: vault-svc's role reads whether a hold is active, nothing else.
    let vault_role = f.c.db.pool_as("strongroom_vault").await;
    for column in ["reason", "subject_id", "placed_by"] {
        let sql = format!("SELECT {column} FROM t_alpha.legal_holds");
        let err = sqlx::query(&sql).execute(&vault_role).await.expect_err(column);
        assert!(err.to_string().contains("permission denied"), "{column}: {err}");
    }

    // Released: the next run destroys the key, and its ciphertext answers RETENTION_EXPIRED.
    let (s, r) = f.release(&hold).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(vault_svc::retention::run_once(&db, chrono::Utc::now()).await.expect("run"), 1);
    let err = decrypt().await.expect_err("past retention");
    assert_eq!((err.code(), reason(&err).as_str()), (tonic::Code::FailedPrecondition, "RETENTION_EXPIRED"));
    assert_eq!(f.audited(vault_svc::retention::DESTROY_ACTION).await.len(), 1);
    f.c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_wide_hold_refuses_pruning_the_audit_log_until_released() {
    use proto::audit::v1 as audit;
    let f = Fx::start().await;
    let hold = f.place(json!({ "scope": "tenant", "reason": "regulator inquiry" })).await;
    f.drained().await;

    // Every entry logged so far was recorded ten days ago; the deployment (its administrative
    // step) lowers the floor to five days and the operator sets alpha's retention to five days.
    let aged: i64 =
        sqlx::query_scalar("SELECT max(seq) + 1 FROM t_alpha.audit_log").fetch_one(&f.admin).await.expect("size");
    assert!(aged > 1, "alpha's log has entries to prune");
    let age = format!("UPDATE t_alpha.audit_log SET recorded_at = now() - interval '10 days' WHERE seq < {aged}");
    let mut conn = f.admin.acquire().await.expect("conn");
    for stmt in [
        "ALTER TABLE t_alpha.audit_log DISABLE TRIGGER audit_log_append_only",
        age.as_str(),
        "ALTER TABLE t_alpha.audit_log ENABLE TRIGGER audit_log_append_only",
        "UPDATE control.audit_retention_floor SET days = 5",
    ] {
        sqlx::query(stmt).execute(&mut *conn).await.expect(stmt);
    }
    drop(conn);
    let mut retention =
        audit::audit_retention_service_client::AuditRetentionServiceClient::new(f.c.channel_as("operator", "audit"));
    let five = audit::SetRetentionPolicyRequest { retention_days: 5, request_id: String::new() };
    retention.set_retention_policy(in_alpha(five)).await.expect("retention");
    // The aged entries still stored, and the first seq stored (entries logged meanwhile do not count).
    let log = || async {
        let (n, first): (i64, Option<i64>) =
            sqlx::query_as("SELECT count(*) FILTER (WHERE seq < $1), min(seq) FROM t_alpha.audit_log")
                .bind(aged)
                .fetch_one(&f.admin)
                .await
                .expect("log");
        (n, first)
    };
    assert_eq!(log().await, (aged, Some(0)));

    // Held: refused with LEGAL_HOLD, nothing deleted, nothing written.
    let prune = || audit::PruneLogRequest { request_id: String::new() };
    let err = retention.prune_log(in_alpha(prune())).await.expect_err("held");
    assert_eq!((err.code(), reason(&err).as_str()), (tonic::Code::FailedPrecondition, "LEGAL_HOLD"));
    let audit_db = kit::Db::connect_lazy(&f.c.db.runtime_url("audit"), 2).expect("pool");
    let tenant = audit_db.tenant(&kit::TenantSlug::parse("alpha").expect("slug")).await.expect("tenant");
    let actor = kit::outbox::Actor::Service("audit".into());
    let err = audit_svc::retention::prune(&audit_db, &tenant, actor.clone(), None).await.expect_err("job held");
    assert_eq!(err.reason, "LEGAL_HOLD");
    assert_eq!(log().await, (aged, Some(0)));
    assert!(f.audited("audit.log.prune").await.is_empty());
    let policy = retention.get_retention_policy(in_alpha(audit::GetRetentionPolicyRequest {})).await.expect("policy");
    assert_eq!(policy.into_inner().pruned_below, 0);

    // Released: the next prune removes every aged entry.
    let (s, r) = f.release(&hold).await;
    assert_eq!(s, 200, "{r}");
    let pruned = retention.prune_log(in_alpha(prune())).await.expect("prune").into_inner();
    assert_eq!((pruned.pruned_below, pruned.pruned), (aged as u64, aged as u64));
    assert_eq!(log().await, (0, Some(aged)));
    assert_eq!(f.audited("audit.log.prune").await.len(), 1);
    f.c.stop().await;
}
