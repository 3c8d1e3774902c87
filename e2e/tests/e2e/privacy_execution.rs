//! Executing data-subject requests over HTTP, with every service real (auth-svc, vault-svc,
//! audit-svc, ledger-svc, the gateway, PostgreSQL, Redis, SoftHSM2): an access request's bundle
//! holds the subject's data from all four services and nothing of anyone else, its pseudonyms
//! resolved and its digest recorded; an erasure request erases a user or shreds an external
//! subject's keys, and under a legal hold waits in progress until the hold's release completes it;
//! a restriction suspends the user and hides their fields. Each execution is audited.

use e2e::Constellation;
use http::Method;
use kit::testing::TestSigner;
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

    /// A privacy officer's token (the built-in role's permissions).
    fn officer(&self) -> String {
        self.token(&[
            "privacy.requests.read",
            "privacy.requests.write",
            "users.read",
            "privacy.holds.write",
            "privacy.restricted.read",
        ])
    }

    async fn http_as(&self, method: Method, path: &str, token: Option<&str>, agent: &str, body: Value) -> (u16, Value) {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("x-strongroom-tenant", "alpha"), ("user-agent", agent)];
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

    async fn http(&self, method: Method, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.http_as(method, path, Some(token), "e2e-officer/1.0", body).await
    }

    /// Creates a user of alpha; returns their id.
    async fn create_user(&self, email: &str, display_name: &str) -> String {
        let body = json!({ "email": email, "password": PASSWORD, "display_name": display_name });
        let (s, u) = self.http(Method::POST, "/v1/users", &self.token(&["users.write"]), body).await;
        assert_eq!(s, 200, "{u}");
        u["id"].as_str().expect("id").to_owned()
    }

    /// Logs `email` in with the user agent `agent`: their access token.
    async fn login(&self, email: &str, agent: &str) -> String {
        let body = json!({ "tenant": "alpha", "email": email, "password": PASSWORD });
        let (s, t) = self.http_as(Method::POST, "/v1/auth/login", None, agent, body).await;
        assert_eq!(s, 200, "{t}");
        t["access_token"].as_str().expect("access token").to_owned()
    }

    /// Files a request for a user or an external subject as the officer; its id.
    async fn file(&self, body: Value) -> String {
        let (s, r) = self.http(Method::POST, "/v1/privacy/requests", &self.officer(), body).await;
        assert_eq!(s, 200, "{r}");
        r["id"].as_str().expect("id").to_owned()
    }

    async fn execute(&self, id: &str) -> (u16, Value) {
        self.http(Method::POST, &format!("/v1/privacy/requests/{id}/execute"), &self.officer(), Value::Null).await
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

    /// Waits until alpha's log holds an entry by `actor` and nothing waits in its outbox.
    async fn logged(&self, actor: &str) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (waiting, by): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM t_alpha.audit_outbox),
                        (SELECT count(*) FROM t_alpha.audit_log WHERE actor = $1)",
            )
            .bind(actor)
            .fetch_one(&self.admin)
            .await
            .expect("outbox");
            if waiting == 0 && by > 0 {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "alpha's log has nothing by {actor}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    async fn user_status(&self, id: &str) -> (String, Option<String>) {
        sqlx::query_as("SELECT status, suspension_reason FROM t_alpha.users WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&self.admin)
            .await
            .expect("user")
    }

    /// Live (not destroyed) versions of vault subject key `subject`.
    async fn live_subject_keys(&self, subject: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM t_alpha.subject_keys WHERE subject = $1 AND state <> 'destroyed'")
            .bind(subject)
            .fetch_one(&self.admin)
            .await
            .expect("subject keys")
    }
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_access_export_holds_the_subjects_data_from_all_four_services_and_nothing_of_anyone_else() {
    let f = Fx::start().await;
    let ana = f.create_user("ana.subject@alpha.example", "Ana Subject").await;
    let bob = f.create_user("bob.other@alpha.example", "Bob Other").await;
    let ana_token = f.login("ana.subject@alpha.example", "AnaPhone/7.1").await;
    f.login("bob.other@alpha.example", "BobDesk/3.3").await;

    // vault-svc: a secret labelled with each of them, and one of nobody.
    let writer = f.token(&["vault.secrets.write"]);
    for (path, subject) in [("brokers/ana-key", ana.as_str()), ("brokers/bob-key", bob.as_str()), ("shared/x", "")] {
        let labels = if subject.is_empty() { json!({}) } else { json!({ "subject": subject }) };
        let body = json!({ "value": format!("secret value of {path}"), "labels": labels });
        let (st, e) = f.http(Method::PUT, &format!("/v1/secrets/{path}"), &writer, body).await;
        assert_eq!(st, 200, "{e}");
    }
    // ledger-svc: an account each, funded from the tenant's.
    let banker = f.token(&["ledger.ledgers.create", "ledger.accounts.create", "ledger.transfers.create"]);
    let (st, e) = f.http(Method::POST, "/v1/ledger/ledgers", &banker, json!({ "code": "USD", "scale": 2 })).await;
    assert_eq!(st, 200, "{e}");
    let (ana_acct, bob_acct, house) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    for (id, owner) in [(ana_acct, ana.as_str()), (bob_acct, bob.as_str()), (house, "")] {
        let body = json!({ "id": id, "ledger": "USD", "code": 1, "owner": owner });
        let (st, e) = f.http(Method::POST, "/v1/ledger/accounts", &banker, body).await;
        assert_eq!(st, 200, "{e}");
    }
    let (to_ana, to_bob) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    for (id, to, amount) in [(to_ana, ana_acct, "1250"), (to_bob, bob_acct, "990")] {
        let body = json!({ "id": id, "debit_account_id": house, "credit_account_id": to, "amount": amount,
                           "ledger": "USD", "code": 1 });
        let (st, e) = f.http(Method::POST, "/v1/ledger/transfers", &banker, body).await;
        assert_eq!(st, 200, "{e}");
    }

    // Ana files her access request with her own session (the gateway records it, her address and
    // user agent as pseudonyms); Bob's activity is in the same log.
    let body = json!({ "type": "access", "details": "Everything you hold, please" });
    let (st, request) = f.http_as(Method::POST, "/v1/me/requests", Some(&ana_token), "AnaPhone/7.1", body).await;
    assert_eq!(st, 200, "{request}");
    let id = request["id"].as_str().expect("id").to_owned();
    f.logged(&format!("user:{ana}")).await;

    // A user without the privacy permissions cannot execute it.
    let (st, e) = f.http(Method::POST, &format!("/v1/privacy/requests/{id}/execute"), &ana_token, Value::Null).await;
    assert_eq!((st, s(&e, "/error/reason")), (403, "MISSING_PERMISSION"), "{e}");

    let (st, done) = f.execute(&id).await;
    assert_eq!(st, 200, "{done}");
    let bundle = &done["bundle"];
    assert_eq!(s(bundle, "/format"), "strongroom.subject-export.v1");
    assert_eq!((s(&done, "/request/status"), s(&done, "/request/execution")), ("completed", "exported"), "{done}");
    // The digest is of the bundle's RFC 8785 form, and the completing step records it.
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(serde_jcs::to_vec(bundle).expect("jcs")));
    assert_eq!(s(&done, "/bundle_sha256"), digest);
    let steps = done["request"]["steps"].as_array().expect("steps");
    assert_eq!(
        steps.last().and_then(|st| st["note"].as_str()),
        Some(format!("access bundle delivered; sha256:{digest}").as_str())
    );

    // auth-svc: her record, opened, her sessions with their addresses and agents, her requests.
    assert_eq!(
        (s(bundle, "/auth/user/id"), s(bundle, "/auth/user/email"), s(bundle, "/auth/user/display_name")),
        (ana.as_str(), "ana.subject@alpha.example", "Ana Subject")
    );
    let sessions = bundle["auth"]["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 1, "{bundle}");
    assert_eq!(s(&sessions[0], "/user_agent"), "AnaPhone/7.1");
    assert_eq!(bundle["auth"]["privacy_requests"][0]["id"], json!(id));
    // vault-svc: her key and her secret's metadata, never a value.
    let vault = &bundle["vault"]["subject_keys"][0];
    assert_eq!((s(vault, "/subject_key"), s(vault, "/key_versions/0/state")), (ana.as_str(), "active"), "{vault}");
    let paths: Vec<&str> = vault["secrets"].as_array().expect("secrets").iter().map(|x| s(x, "/path")).collect();
    assert_eq!(paths, ["brokers/ana-key"]);
    // audit-svc: entries by her or about her, her pseudonyms resolved.
    let entries = bundle["audit"]["entries"].as_array().expect("entries");
    assert!(!entries.is_empty());
    for e in entries {
        let about = [s(e, "/fields/actor"), s(e, "/fields/resource")];
        assert!(
            about.contains(&format!("user:{ana}").as_str())
                || about.contains(&format!("user/{ana}").as_str())
                || about.contains(&format!("privacy_request/{id}").as_str()),
            "{e}"
        );
    }
    let resolved: Vec<&str> = bundle["audit"]["resolved_pseudonyms"]
        .as_object()
        .expect("resolved")
        .values()
        .map(|v| s(v, "/value"))
        .collect();
    assert!(resolved.contains(&"AnaPhone/7.1"), "{resolved:?}");
    // ledger-svc: her account and the transfer to it.
    let accounts = bundle["ledger"]["accounts"].as_array().expect("accounts");
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    assert_eq!(s(&accounts[0], "/id"), ana_acct.to_string());
    let transfers = bundle["ledger"]["transfers"].as_array().expect("transfers");
    assert_eq!(transfers.iter().map(|t| s(t, "/id")).collect::<Vec<_>>(), [to_ana.to_string()]);

    // Nothing of anyone else: not Bob, not the tenant's shared secret, no secret value.
    let text = bundle.to_string();
    for other in [
        bob.as_str(),
        "bob.other@alpha.example",
        "Bob Other",
        "BobDesk/3.3",
        "brokers/bob-key",
        "shared/x",
        &bob_acct.to_string(),
        &to_bob.to_string(),
        "secret value of",
    ] {
        assert!(!text.contains(other), "the bundle holds {other}");
    }

    // Every service recorded its part, naming the request.
    for action in ["privacy.request.export", "vault.subject.describe", "audit.subject.export", "ledger.owner.export"] {
        assert_eq!(f.audited(action).await.len(), 1, "{action}");
    }
    assert_eq!(f.audited("vault.subject.describe").await[0]["privacy_request_id"], json!(id));
    // Done once: a completed request is not exported again.
    let (st, e) = f.execute(&id).await;
    assert_eq!((st, s(&e, "/error/reason")), (412, "REQUEST_FINAL"), "{e}");
    f.c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_erasure_request_waits_for_a_legal_hold_and_completes_at_its_release() {
    let f = Fx::start().await;
    let cleo = f.create_user("cleo@alpha.example", "Cleo").await;
    let dan = f.create_user("dan@alpha.example", "Dan").await;

    // A user's erasure under a hold on them: restricted, the request in progress.
    let held = f.file(json!({ "type": "erasure", "user_id": cleo, "details": "by email" })).await;
    let body = json!({ "scope": "subject", "subject_id": cleo, "reason": "matter 7" });
    let (st, hold) = f.http(Method::POST, "/v1/privacy/holds", &f.officer(), body).await;
    assert_eq!(st, 200, "{hold}");
    let (st, done) = f.execute(&held).await;
    assert_eq!(st, 200, "{done}");
    assert_eq!((s(&done, "/request/status"), s(&done, "/request/execution")), ("in_progress", "deferred"), "{done}");
    assert!(done["bundle"].is_null());
    assert_eq!(f.user_status(&cleo).await.0, "suspended");
    assert_eq!(f.live_subject_keys(&cleo).await, 1);

    // Without a hold, a user's erasure completes at once: erased, key shredded.
    let free = f.file(json!({ "type": "erasure", "user_id": dan })).await;
    let (st, done) = f.execute(&free).await;
    assert_eq!(st, 200, "{done}");
    assert_eq!((s(&done, "/request/status"), s(&done, "/request/execution")), ("completed", "erased"), "{done}");
    assert_eq!(f.user_status(&dan).await.0, "deleted");
    assert_eq!(f.live_subject_keys(&dan).await, 0);

    // An external contact's erasure under a tenant hold waits too; its notes still open.
    let tenant_hold = json!({ "scope": "tenant", "reason": "audit of 2026" });
    let (st, th) = f.http(Method::POST, "/v1/privacy/holds", &f.officer(), tenant_hold).await;
    assert_eq!(st, 200, "{th}");
    let contact =
        f.file(json!({ "type": "erasure", "external_subject": "contact:77", "details": "asked by SMS" })).await;
    let (st, done) = f.execute(&contact).await;
    assert_eq!(st, 200, "{done}");
    assert_eq!(s(&done, "/request/execution"), "deferred", "{done}");
    assert_eq!(s(&done, "/request/steps/0/note"), "asked by SMS");

    // Releasing Cleo's hold alone completes nothing: the tenant hold still covers her.
    let path = format!("/v1/privacy/holds/{}/release", s(&hold, "/id"));
    let (st, r) = f.http(Method::POST, &path, &f.officer(), json!({ "note": "closed" })).await;
    assert_eq!(st, 200, "{r}");
    let (st, now) = f.http(Method::GET, &format!("/v1/privacy/requests/{held}"), &f.officer(), Value::Null).await;
    assert_eq!((st, s(&now, "/status")), (200, "in_progress"), "{now}");
    // The tenant hold's release completes both: Cleo erased, the contact's keys shredded.
    let path = format!("/v1/privacy/holds/{}/release", s(&th, "/id"));
    let (st, r) = f.http(Method::POST, &path, &f.officer(), json!({ "note": "closed" })).await;
    assert_eq!(st, 200, "{r}");
    for id in [&held, &contact] {
        let (st, now) = f.http(Method::GET, &format!("/v1/privacy/requests/{id}"), &f.officer(), Value::Null).await;
        assert_eq!(st, 200, "{now}");
        assert_eq!((s(&now, "/status"), s(&now, "/execution")), ("completed", "erased"), "{now}");
    }
    assert_eq!(f.user_status(&cleo).await.0, "deleted");
    assert_eq!(f.live_subject_keys(&cleo).await, 0);
    // The key that seals the contact's notes, named as auth-svc names it.
    let contact_key = auth_svc::domain::privacy_requests::Subject::External("contact:77".into()).key().to_string();
    let versions: i64 = sqlx::query_scalar("SELECT count(*) FROM t_alpha.subject_keys WHERE subject = $1")
        .bind(&contact_key)
        .fetch_one(&f.admin)
        .await
        .expect("keys");
    assert!(versions > 0, "the contact's notes were sealed under their key");
    assert_eq!(f.live_subject_keys(&contact_key).await, 0);
    // The contact's notes are gone with their key; the request stays as the record it was honoured.
    let (_, now) = f.http(Method::GET, &format!("/v1/privacy/requests/{contact}"), &f.officer(), Value::Null).await;
    assert_eq!(s(&now, "/steps/0/note"), "", "{now}");
    let executed: Vec<String> =
        f.audited("privacy.request.execute").await.iter().map(|d| s(d, "/execution").to_owned()).collect();
    assert_eq!(executed.iter().filter(|e| *e == "erased").count(), 3, "{executed:?}");
    assert_eq!(executed.iter().filter(|e| *e == "deferred").count(), 2, "{executed:?}");
    f.c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restriction_suspends_the_user_and_hides_their_fields_and_other_kinds_are_not_executed() {
    let f = Fx::start().await;
    let eve = f.create_user("eve@alpha.example", "Eve").await;
    let eve_token = f.login("eve@alpha.example", "EvePad/1.0").await;
    let id = f.file(json!({ "type": "restriction", "user_id": eve })).await;
    let (st, done) = f.execute(&id).await;
    assert_eq!(st, 200, "{done}");
    assert_eq!((s(&done, "/request/status"), s(&done, "/request/execution")), ("completed", "restricted"), "{done}");
    assert_eq!(
        f.user_status(&eve).await,
        ("suspended".to_owned(), Some(auth_svc::api::privacy::RESTRICTED_AT_REQUEST.to_owned()))
    );
    // She can no longer log in, and an administrator without privacy.restricted.read sees no email.
    let body = json!({ "tenant": "alpha", "email": "eve@alpha.example", "password": PASSWORD });
    let (st, _) = f.http_as(Method::POST, "/v1/auth/login", None, "EvePad/1.0", body).await;
    assert_ne!(st, 200);
    let (st, shown) = f.http(Method::GET, &format!("/v1/users/{eve}"), &f.token(&["users.read"]), Value::Null).await;
    assert_eq!((st, s(&shown, "/email")), (200, ""), "{shown}");
    let _ = eve_token;

    // Rectification and an external subject's restriction are done by people, then noted.
    for body in [
        json!({ "type": "rectification", "user_id": eve }),
        json!({ "type": "restriction", "external_subject": "contact:8" }),
    ] {
        let other = f.file(body).await;
        let (st, e) = f.execute(&other).await;
        assert_eq!((st, s(&e, "/error/reason")), (412, "NOT_EXECUTABLE"), "{e}");
    }
    f.c.stop().await;
}
