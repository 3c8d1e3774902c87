//! Data-subject requests over HTTP, with real auth-svc, vault-svc, PostgreSQL and Redis: a user
//! files and lists their own; a privacy officer files an external contact's erasure (due in 7
//! days) and works it to completion, each step noted and audited, while a user without the
//! permission is refused; an overdue request is listed first, counted in the listing and in
//! `strongroom_privacy_requests_overdue`; no note is in a database dump. Time is moved by
//! backdating rows, never by sleeping.

use e2e::Constellation;
use http::Method;
use kit::testing::TestSigner;
use serde_json::{Value, json};

struct Fx {
    c: Constellation,
    signer: TestSigner,
    alpha: uuid::Uuid,
    owner: String,
}

#[allow(clippy::expect_used)]
impl Fx {
    async fn start() -> Self {
        let _ = kit::telemetry::init("e2e", &kit::config::TelemetryConfig { otlp_endpoint: None, log: "error".into() });
        let c = Constellation::start(true).await;
        let (alpha, owner, _) = c.create_tenant_with_owner("alpha", "owner@alpha.example").await;
        let signer = TestSigner::generate();
        signer.publish(&c.db.admin_pool().await).await;
        Self { c, signer, alpha, owner }
    }

    /// An access token of `subject` in alpha holding `permissions`.
    fn token(&self, subject: &str, permissions: &[&str]) -> String {
        let mut claims = TestSigner::claims(self.alpha, subject);
        claims["permissions"] = json!(permissions);
        self.signer.sign(&claims)
    }

    /// A privacy officer's token (the built-in role's permissions).
    fn officer(&self) -> String {
        self.token(&self.owner, &["privacy.requests.read", "privacy.requests.write", "users.read"])
    }

    async fn http(&self, method: Method, path: &str, token: &str, body: Value) -> (u16, Value) {
        let bearer = format!("Bearer {token}");
        let mut headers = vec![("authorization", bearer.as_str()), ("x-strongroom-tenant", "alpha")];
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
    async fn create_user(&self, email: &str) -> String {
        let admin = self.token(&self.owner, &["users.read", "users.write"]);
        let body = json!({ "email": email, "password": "a long enough password" });
        let (s, u) = self.http(Method::POST, "/v1/users", &admin, body).await;
        assert_eq!(s, 200, "{u}");
        u["id"].as_str().expect("id").to_owned()
    }
}

/// Days from now until the RFC 3339 time `at`.
fn days_until(at: &Value) -> f64 {
    let at = chrono::DateTime::parse_from_rfc3339(at.as_str().expect("time")).expect("rfc3339");
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds() as f64 / 86_400.0
}

fn notes(request: &Value) -> Vec<&str> {
    request["steps"].as_array().expect("steps").iter().map(|s| s["note"].as_str().expect("note")).collect()
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The audit records of `action` in alpha, waiting or logged.
async fn audited(admin: &sqlx::PgPool, action: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM t_alpha.audit_outbox WHERE action = $1)
              + (SELECT count(*) FROM t_alpha.audit_log WHERE action = $1)",
    )
    .bind(action)
    .fetch_one(admin)
    .await
    .expect("audit")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_files_their_own_request_and_an_officer_completes_a_contacts_erasure_within_7_days() {
    let f = Fx::start().await;
    let admin = f.c.db.admin_pool().await;
    // Every tenant has the built-in role, and its owner can grant it.
    let role: Vec<String> =
        sqlx::query_scalar("SELECT unnest(permissions) FROM t_alpha.roles WHERE name = 'privacy_officer' AND builtin")
            .fetch_all(&admin)
            .await
            .expect("role");
    assert_eq!(
        role,
        [
            "privacy.requests.read",
            "privacy.requests.write",
            "users.read",
            "privacy.holds.write",
            "privacy.restricted.read"
        ]
    );

    // A user files an access request about themselves and lists it.
    let user = f.create_user("subject@alpha.example").await;
    let as_user = f.token(&user, &[]);
    let details = "Please send everything you hold about me, ref DSR-5521-QX";
    let body = json!({ "type": "access", "details": details });
    let (s, mine) = f.http(Method::POST, "/v1/me/requests", &as_user, body).await;
    assert_eq!(s, 200, "{mine}");
    assert_eq!(
        (&mine["type"], &mine["status"], &mine["user_id"]),
        (&json!("access"), &json!("received"), &json!(user))
    );
    assert!((29.9..=30.0).contains(&days_until(&mine["due_at"])), "{mine}");
    assert_eq!(notes(&mine), [details]);
    assert_eq!((&mine["steps"][0]["action"], &mine["steps"][0]["actor"]), (&json!("file"), &json!(user)));
    let (s, listed) = f.http(Method::GET, "/v1/me/requests", &as_user, Value::Null).await;
    assert_eq!(s, 200, "{listed}");
    assert_eq!(listed["requests"].as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!((&listed["requests"][0]["id"], &listed["overdue_count"]), (&mine["id"], &json!(0)));

    // Without the privacy permissions, a user can neither file for others nor work requests.
    let contact = json!({ "type": "erasure", "external_subject": "contact:123", "details": "Contact asked by SMS" });
    let (s, e) = f.http(Method::POST, "/v1/privacy/requests", &as_user, contact.clone()).await;
    assert_eq!((s, e["error"]["reason"].as_str()), (403, Some("MISSING_PERMISSION")), "{e}");
    let (s, e) = f.http(Method::GET, "/v1/privacy/requests", &as_user, Value::Null).await;
    assert_eq!((s, e["error"]["reason"].as_str()), (403, Some("MISSING_PERMISSION")), "{e}");
    let update = format!("/v1/privacy/requests/{}/update", mine["id"].as_str().expect("id"));
    let (s, e) = f.http(Method::POST, &update, &as_user, json!({ "status": "completed", "note": "x" })).await;
    assert_eq!((s, e["error"]["reason"].as_str()), (403, Some("MISSING_PERMISSION")), "{e}");

    // The officer files an external contact's erasure: due in 7 days.
    let officer = f.officer();
    let (s, filed) = f.http(Method::POST, "/v1/privacy/requests", &officer, contact).await;
    assert_eq!(s, 200, "{filed}");
    assert_eq!((&filed["external_subject"], &filed["user_id"]), (&json!("contact:123"), &Value::Null));
    assert!((6.9..=7.0).contains(&days_until(&filed["due_at"])), "{filed}");
    let id = filed["id"].as_str().expect("id");
    let update = format!("/v1/privacy/requests/{id}/update");
    let started = "Located contact 123 in the CRM export of 2026-03";
    let (s, r) = f.http(Method::POST, &update, &officer, json!({ "status": "in_progress", "note": started })).await;
    assert_eq!((s, &r["status"]), (200, &json!("in_progress")), "{r}");
    // Completing says why; nothing goes back.
    let (s, e) = f.http(Method::POST, &update, &officer, json!({ "status": "completed" })).await;
    assert_eq!((s, e["error"]["reason"].as_str()), (400, Some("INVALID_FIELD")), "{e}");
    let (s, e) = f.http(Method::POST, &update, &officer, json!({ "status": "received", "note": "again" })).await;
    assert_eq!((s, e["error"]["reason"].as_str()), (412, Some("INVALID_TRANSITION")), "{e}");
    let done = "Erased contact 123 from messages and backups, confirmation CX-88121";
    let (s, r) = f.http(Method::POST, &update, &officer, json!({ "status": "completed", "note": done })).await;
    assert_eq!((s, &r["status"], &r["overdue"]), (200, &json!("completed"), &json!(false)), "{r}");
    assert_eq!(notes(&r), ["Contact asked by SMS", started, done]);
    let statuses: Vec<&Value> = r["steps"].as_array().expect("steps").iter().map(|s| &s["status"]).collect();
    assert_eq!(statuses, [&json!("received"), &json!("in_progress"), &json!("completed")]);
    let (s, e) = f.http(Method::POST, &update, &officer, json!({ "status": "rejected", "note": "late" })).await;
    assert_eq!((s, e["error"]["reason"].as_str()), (412, Some("REQUEST_FINAL")), "{e}");
    let (s, got) = f.http(Method::GET, &format!("/v1/privacy/requests/{id}"), &officer, Value::Null).await;
    assert_eq!((s, &got), (200, &r));

    // Every step audited.
    assert_eq!(audited(&admin, "privacy.request.file").await, 2);
    assert_eq!(audited(&admin, "privacy.request.update").await, 2);
    // No note is in a dump, in text or in hex.
    let dump = e2e::pg_dump(&f.c.db);
    assert!(dump.contains("privacy_request_steps"), "the dump covers the requests");
    for plain in [details, "Contact asked by SMS", started, done] {
        assert!(!dump.contains(plain), "{plain:?} is in the dump");
        assert!(!dump.contains(&hex(plain)), "{plain:?} is in the dump as hex");
    }
    f.c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_overdue_request_is_listed_first_and_counted_in_the_listing_and_the_metric() {
    let f = Fx::start().await;
    let admin = f.c.db.admin_pool().await;
    let officer = f.officer();
    let mut ids = Vec::new();
    for (kind, subject) in
        [("access", "contact:1"), ("erasure", "contact:2"), ("access", "contact:3"), ("restriction", "contact:4")]
    {
        let body = json!({ "type": kind, "external_subject": subject });
        let (s, r) = f.http(Method::POST, "/v1/privacy/requests", &officer, body).await;
        assert_eq!(s, 200, "{r}");
        ids.push(r["id"].as_str().expect("id").to_owned());
    }
    let (a, b, c, d) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    // c and d fell due; d was completed in time: only c is overdue.
    for (id, days) in [(c, 1), (d, 2)] {
        sqlx::query(
            "UPDATE t_alpha.privacy_requests SET due_at = now() - make_interval(days => $2) WHERE id = $1::uuid",
        )
        .bind(id)
        .bind(days)
        .execute(&admin)
        .await
        .expect("backdate");
    }
    let update = format!("/v1/privacy/requests/{d}/update");
    let (s, r) = f.http(Method::POST, &update, &officer, json!({ "status": "completed", "note": "sent" })).await;
    assert_eq!(s, 200, "{r}");

    let (s, page) = f.http(Method::GET, "/v1/privacy/requests", &officer, Value::Null).await;
    assert_eq!(s, 200, "{page}");
    let listed: Vec<&str> =
        page["requests"].as_array().expect("requests").iter().map(|r| r["id"].as_str().expect("id")).collect();
    assert_eq!(listed, [c, d, b, a], "overdue first, then by due date");
    assert_eq!((&page["overdue_count"], &page["requests"][0]["overdue"]), (&json!(1), &json!(true)), "{page}");
    // Pages follow the same order; a filter keeps the count of the whole tenant.
    let (s, first) = f.http(Method::GET, "/v1/privacy/requests?page_size=3", &officer, Value::Null).await;
    assert_eq!((s, first["requests"].as_array().map(Vec::len)), (200, Some(3)), "{first}");
    let token = first["next_page_token"].as_str().expect("token");
    let (s, second) = f
        .http(Method::GET, &format!("/v1/privacy/requests?page_size=3&page_token={token}"), &officer, Value::Null)
        .await;
    assert_eq!((s, &second["requests"][0]["id"], &second["next_page_token"]), (200, &json!(a), &json!("")), "{second}");
    let (s, done) = f.http(Method::GET, "/v1/privacy/requests?status=completed", &officer, Value::Null).await;
    assert_eq!(s, 200, "{done}");
    assert_eq!((done["requests"].as_array().map(Vec::len), &done["overdue_count"]), (Some(1), &json!(1)), "{done}");

    // The job's one pass counts it, and auth-svc's admin port shows it.
    let db = kit::Db::connect_lazy(&f.c.db.runtime_url("auth"), 2).expect("pool");
    assert_eq!(auth_svc::privacy_signals::count_overdue(&db).await.expect("count"), 1);
    let text = e2e::scrape_metrics(f.c.services["auth"].admin).await;
    assert!(text.contains("# TYPE strongroom_privacy_requests_overdue gauge"), "{text}");
    assert!(text.lines().any(|l| l == "strongroom_privacy_requests_overdue 1"), "{text}");
    f.c.stop().await;
}
