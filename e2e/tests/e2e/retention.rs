//! The tenant's retention policy: set and read over HTTP (values out of bounds refused with the
//! field named, every change audited with its previous and new values, only with
//! `tenant.policy.write`), and enforced by auth-svc's housekeeping: what ended longer ago than the
//! policy says is removed — sessions with their tokens, deleted users with every row that referred
//! to them — and what is younger stays; the run is audited once and counted in the retention
//! metrics. Retention classes of vault-svc over HTTP. Time is moved by backdating rows, never by
//! sleeping.

use e2e::Constellation;
use http::Method;
use serde_json::{Value, json};

async fn call(c: &Constellation, method: Method, path: &str, token: &str, body: Value) -> (u16, Value) {
    let bytes = if body.is_null() { Vec::new() } else { serde_json::to_vec(&body).expect("json") };
    let bearer = format!("Bearer {token}");
    let mut headers = vec![("authorization", bearer.as_str()), ("x-strongroom-tenant", "alpha")];
    if !bytes.is_empty() {
        headers.push(("content-type", "application/json"));
    }
    let (status, _, json) = c.gateway_request(method, path, &headers, bytes).await.expect("request");
    (status.as_u16(), json)
}

async fn login(c: &Constellation, email: &str, password: &str) -> Value {
    let body = json!({ "tenant": "alpha", "email": email, "password": password });
    let bytes = serde_json::to_vec(&body).expect("json");
    let (status, _, t) = c
        .gateway_request(Method::POST, "/v1/auth/login", &[("content-type", "application/json")], bytes)
        .await
        .expect("login");
    assert_eq!(status.as_u16(), 200, "{t}");
    t
}

/// The owner's full session of tenant `alpha`: enrolled in TOTP, then refreshed.
async fn owner(c: &Constellation) -> String {
    let (_, _, password) = c.create_tenant_with_owner("alpha", "owner@alpha.example").await;
    let t = login(c, "owner@alpha.example", &password).await;
    let enrolment = t["access_token"].as_str().expect("token");
    let (s, e) = call(c, Method::POST, "/v1/me/mfa/totp", enrolment, Value::Null).await;
    assert_eq!(s, 200, "{e}");
    let seed = totp_rs::Secret::Encoded(e["secret"].as_str().expect("secret").to_owned()).to_bytes().expect("base32");
    let totp = totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 1, 30, seed, None, "x".into()).expect("totp");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let code = totp.generate(now);
    let (s, b) = call(c, Method::POST, "/v1/me/mfa/totp/confirm", enrolment, json!({ "code": code })).await;
    assert_eq!(s, 200, "{b}");
    let refresh = serde_json::to_vec(&json!({ "refresh_token": t["refresh_token"] })).expect("json");
    let (s, _, full) = c
        .gateway_request(Method::POST, "/v1/auth/refresh", &[("content-type", "application/json")], refresh)
        .await
        .expect("refresh");
    assert_eq!(s.as_u16(), 200, "{full}");
    full["access_token"].as_str().expect("token").to_owned()
}

/// Creates a user of `alpha` with `roles` over HTTP; returns their id.
async fn create_user(c: &Constellation, owner: &str, email: &str, roles: &[&str]) -> String {
    let body = json!({ "email": email, "password": "a long enough password", "roles": roles });
    let (s, u) = call(c, Method::POST, "/v1/users", owner, body).await;
    assert_eq!(s, 200, "{u}");
    u["id"].as_str().expect("id").to_owned()
}

fn sid(t: &Value) -> uuid::Uuid {
    let claims = e2e::jwt_part(t["access_token"].as_str().expect("token"), 1);
    uuid::Uuid::parse_str(claims["sid"].as_str().expect("sid")).expect("uuid")
}

/// The details of every audit record of `action` in `alpha`, waiting or logged.
async fn audited(admin: &sqlx::PgPool, action: &str) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT details FROM t_alpha.audit_outbox WHERE action = $1
         UNION ALL SELECT details FROM t_alpha.audit_log WHERE action = $1",
    )
    .bind(action)
    .fetch_all(admin)
    .await
    .expect("audit")
}

/// The value of the series named exactly `series` (name and labels), if exposed.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_policy_round_trips_over_http_refuses_values_out_of_bounds_and_is_audited() {
    let c = Constellation::start(true).await;
    let owner = owner(&c).await;
    let (s, p) = call(&c, Method::GET, "/v1/tenant/retention", &owner, Value::Null).await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(
        (&p["ended_sessions_days"], &p["mfa_challenges_days"], &p["erased_users_days"], &p["privacy_requests_days"]),
        (&json!(365), &json!(1), &json!(30), &json!(1095)),
        "the defaults: {p}"
    );

    let wanted = json!({ "ended_sessions_days": 90, "mfa_challenges_days": 2, "erased_users_days": 30 });
    let (s, p) = call(&c, Method::PUT, "/v1/tenant/retention", &owner, wanted.clone()).await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["ended_sessions_days"], 90);
    assert!(p["updated_at"].is_string(), "{p}");
    let (s, read) = call(&c, Method::GET, "/v1/tenant/retention", &owner, Value::Null).await;
    assert_eq!((s, &read), (200, &p), "read back as written");

    // Left out, the retention of request records stays; given, it changes.
    assert_eq!(p["privacy_requests_days"], 1095, "{p}");
    let mut longer = wanted.clone();
    longer["privacy_requests_days"] = json!(2000);
    let (s, p) = call(&c, Method::PUT, "/v1/tenant/retention", &owner, longer).await;
    assert_eq!((s, &p["privacy_requests_days"]), (200, &json!(2000)), "{p}");

    // Out of bounds, each named; unknown fields and missing ones refused; nothing changes.
    for (field, days) in [
        ("ended_sessions_days", 0),
        ("mfa_challenges_days", 3651),
        ("erased_users_days", 0),
        ("privacy_requests_days", 0),
        ("privacy_requests_days", 3651),
    ] {
        let mut body = wanted.clone();
        body[field] = json!(days);
        let (s, e) = call(&c, Method::PUT, "/v1/tenant/retention", &owner, body).await;
        assert_eq!((s, e["error"]["reason"].as_str()), (400, Some("INVALID_FIELD")), "{field}: {e}");
        assert!(e["error"]["message"].as_str().is_some_and(|m| m.starts_with(field)), "{e}");
    }
    let mut unknown = wanted.clone();
    unknown["legal_hold"] = json!(true);
    let (s, e) = call(&c, Method::PUT, "/v1/tenant/retention", &owner, unknown).await;
    assert_eq!(s, 400, "{e}");
    let (s, e) = call(&c, Method::PUT, "/v1/tenant/retention", &owner, json!({ "ended_sessions_days": 30 })).await;
    assert_eq!(s, 400, "{e}");
    let (_, read) = call(&c, Method::GET, "/v1/tenant/retention", &owner, Value::Null).await;
    assert_eq!(read, p);

    // A viewer reads it and may not change it.
    create_user(&c, &owner, "vera@alpha.example", &["viewer"]).await;
    let vera = login(&c, "vera@alpha.example", "a long enough password").await;
    let vera = vera["access_token"].as_str().expect("token");
    let (s, read) = call(&c, Method::GET, "/v1/tenant/retention", vera, Value::Null).await;
    assert_eq!((s, &read["ended_sessions_days"]), (200, &json!(90)), "{read}");
    let (s, e) = call(&c, Method::PUT, "/v1/tenant/retention", vera, wanted.clone()).await;
    assert_eq!(s, 403, "{e}");

    // One record of each change, with what changed before and after (not what stayed).
    let admin = c.db.admin_pool().await;
    // In the outbox or the log, whichever order the drain left them in.
    let mut records = audited(&admin, "tenant.retention_update").await;
    records.sort_by_key(Value::to_string);
    assert_eq!(
        records,
        [
            json!({
                "ended_sessions_days": { "previous": 365, "new": 90 },
                "mfa_challenges_days": { "previous": 1, "new": 2 },
            }),
            json!({ "privacy_requests_days": { "previous": 1095, "new": 2000 } }),
        ]
    );

    // Retention classes of vault-svc, under the same permission.
    let class = json!({ "retention_days": 730, "period": "month" });
    let (s, k) = call(&c, Method::PUT, "/v1/vault/retention-classes/messages", &owner, class).await;
    assert_eq!(s, 200, "{k}");
    assert_eq!((&k["name"], &k["retention_days"], &k["period"]), (&json!("messages"), &json!(730), &json!("month")));
    let (s, page) = call(&c, Method::GET, "/v1/vault/retention-classes", &owner, Value::Null).await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["retention_classes"][0]["name"], "messages", "{page}");
    let changed = json!({ "retention_days": 365, "period": "day" });
    let (s, e) = call(&c, Method::PUT, "/v1/vault/retention-classes/messages", &owner, changed).await;
    assert_eq!((s, e["error"]["reason"].as_str()), (412, Some("RETENTION_PERIOD_FIXED")), "{e}");
    let (s, k) =
        call(&c, Method::PUT, "/v1/vault/retention-classes/messages", &owner, json!({ "retention_days": 365 })).await;
    assert_eq!((s, &k["retention_days"], &k["period"]), (200, &json!(365), &json!("month")), "{k}");
    let (s, e) = call(&c, Method::GET, "/v1/vault/retention-classes", vera, Value::Null).await;
    assert_eq!(s, 403, "{e}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn housekeeping_removes_what_ended_longer_ago_than_the_policy_and_keeps_the_rest() {
    let c = Constellation::start(true).await;
    let owner = owner(&c).await;
    let policy = json!({ "ended_sessions_days": 30, "mfa_challenges_days": 1, "erased_users_days": 30,
                         "privacy_requests_days": 365 });
    let (s, p) = call(&c, Method::PUT, "/v1/tenant/retention", &owner, policy).await;
    assert_eq!(s, 200, "{p}");

    // Gina's sessions: one ended 31 days ago (removed), one 29 days ago (kept), one live (kept).
    create_user(&c, &owner, "gina@alpha.example", &["viewer"]).await;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(sid(&login(&c, "gina@alpha.example", "a long enough password").await));
    }
    let (old, recent, live) = (sessions[0], sessions[1], sessions[2]);
    let admin = c.db.admin_pool().await;
    for (session, age) in [(old, "31 days"), (recent, "29 days")] {
        for sql in [
            "UPDATE t_alpha.sessions SET expires_at = now() - $2::interval WHERE id = $1",
            "UPDATE t_alpha.refresh_tokens SET expires_at = now() - $2::interval WHERE session_id = $1",
        ] {
            sqlx::query(sql).bind(session).bind(age).execute(&admin).await.expect("age");
        }
    }

    // Erin (deleted 31 days ago: removed, with her session, its token and her API key) and Finn
    // (deleted 10 days ago: kept).
    let erin = create_user(&c, &owner, "erin@alpha.example", &["member"]).await;
    let t = login(&c, "erin@alpha.example", "a long enough password").await;
    let erin_token = t["access_token"].as_str().expect("token");
    let key = json!({ "name": "ci", "scopes": ["vault.secrets.read"], "ttl_days": 30 });
    let (s, k) = call(&c, Method::POST, "/v1/api-keys", erin_token, key).await;
    assert_eq!(s, 200, "{k}");
    let finn = create_user(&c, &owner, "finn@alpha.example", &["viewer"]).await;
    for (user, age) in [(&erin, "31 days"), (&finn, "10 days")] {
        let (s, e) = call(&c, Method::DELETE, &format!("/v1/users/{user}"), &owner, Value::Null).await;
        assert_eq!(s, 200, "{e}");
        sqlx::query("UPDATE t_alpha.users SET deleted_at = now() - $2::interval WHERE id = $1::uuid")
            .bind(user)
            .bind(age)
            .execute(&admin)
            .await
            .expect("age deletion");
    }
    let tenant_id: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM control.tenants WHERE slug = 'alpha'").fetch_one(&admin).await.expect("id");
    let indexed_keys = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM control.api_key_index WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_one(&admin)
            .await
            .expect("key index")
    };
    assert_eq!(indexed_keys().await, 1, "erin's revoked key");

    // Data-subject requests about an external contact: one closed 366 days ago (removed with its
    // steps), one closed 364 days ago and one still open since long ago (both kept).
    let officer = json!({ "type": "erasure", "external_subject": "contact:5" });
    let mut requests = Vec::new();
    for _ in 0..3 {
        let (s, r) = call(&c, Method::POST, "/v1/privacy/requests", &owner, officer.clone()).await;
        assert_eq!(s, 200, "{r}");
        requests.push(r["id"].as_str().expect("id").to_owned());
    }
    for id in &requests[..2] {
        let body = json!({ "status": "rejected", "note": "not our data" });
        let (s, r) = call(&c, Method::POST, &format!("/v1/privacy/requests/{id}/update"), &owner, body).await;
        assert_eq!(s, 200, "{r}");
    }
    for (id, age) in [(&requests[0], "366 days"), (&requests[1], "364 days"), (&requests[2], "900 days")] {
        sqlx::query(
            "UPDATE t_alpha.privacy_requests SET closed_at = closed_at - $2::interval,
                    created_at = created_at - $2::interval WHERE id = $1::uuid",
        )
        .bind(id)
        .bind(age)
        .execute(&admin)
        .await
        .expect("age request");
    }

    let db = kit::Db::connect_lazy(&c.db.runtime_url("auth"), 2).expect("pool");
    let tenant = db.tenant(&kit::TenantSlug::parse("alpha").expect("slug")).await.expect("tenant");
    let purged = auth_svc::housekeeping::purge(&db, &tenant).await.expect("purge");
    assert_eq!(
        purged,
        auth_svc::housekeeping::Purged {
            refresh_tokens: 1,
            sessions: 1,
            erased_users: 1,
            // Her session, its refresh token, her API key and its index row.
            erased_user_rows: 4,
            privacy_requests: 1,
            ..Default::default()
        }
    );
    let kept: Vec<String> = sqlx::query_scalar(
        "SELECT id::text FROM t_alpha.privacy_requests WHERE subject_id = 'contact:5' ORDER BY created_at DESC",
    )
    .fetch_all(&admin)
    .await
    .expect("requests");
    assert_eq!(kept, requests[1..], "the request closed 366 days ago is gone, the others stay");
    let steps: i64 =
        sqlx::query_scalar("SELECT count(*) FROM t_alpha.privacy_request_steps WHERE request_id = $1::uuid")
            .bind(&requests[0])
            .fetch_one(&admin)
            .await
            .expect("steps");
    assert_eq!(steps, 0, "with its steps");
    let left: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM t_alpha.sessions WHERE id = ANY($1)")
        .bind(vec![old, recent, live])
        .fetch_all(&admin)
        .await
        .expect("sessions");
    assert!(!left.contains(&old) && left.contains(&recent) && left.contains(&live), "{left:?}");
    let users: Vec<String> =
        sqlx::query_scalar("SELECT id::text FROM t_alpha.users WHERE status = 'deleted' ORDER BY id")
            .fetch_all(&admin)
            .await
            .expect("deleted users");
    assert_eq!(users, std::slice::from_ref(&finn), "erin is gone, finn stays until his 30 days are over");
    let erin_rows: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM t_alpha.sessions WHERE user_id = $1::uuid)
              + (SELECT count(*) FROM t_alpha.api_keys WHERE user_id = $1::uuid)",
    )
    .bind(&erin)
    .fetch_one(&admin)
    .await
    .expect("erin's rows");
    assert_eq!(erin_rows, 0);
    assert_eq!(indexed_keys().await, 0);
    let (s, e) = call(&c, Method::GET, &format!("/v1/users/{erin}"), &owner, Value::Null).await;
    assert_eq!(s, 404, "{e}");
    let (s, f) = call(&c, Method::GET, &format!("/v1/users/{finn}"), &owner, Value::Null).await;
    assert_eq!((s, &f["status"]), (200, &json!("deleted")), "{f}");

    // One audit record of the run, with the policy it applied; nothing left to do.
    assert_eq!(
        audited(&admin, "auth.purge_expired").await,
        [json!({
            "refreshes": 1, "sessions": 1, "mfa_challenges": 0, "signing_keys": 0, "erased_users": 1,
            "erased_user_rows": 4, "privacy_requests": 1,
            "retention_days": { "ended_sessions_days": 30, "mfa_challenges_days": 1, "erased_users_days": 30,
                                "privacy_requests_days": 365 },
        })]
    );
    assert_eq!(auth_svc::housekeeping::purge(&db, &tenant).await.expect("again"), Default::default());
    assert_eq!(audited(&admin, "auth.purge_expired").await.len(), 1, "a run that removed nothing is not audited");

    // The metrics on auth-svc's admin port: what was removed, by kind, and when the job last ran.
    let text = e2e::scrape_metrics(c.services["auth"].admin).await;
    for (data_type, n) in [
        ("refresh_tokens", 1.0),
        ("sessions", 1.0),
        ("mfa_challenges", 0.0),
        ("erased_users", 1.0),
        ("erased_user_rows", 4.0),
        ("privacy_requests", 1.0),
    ] {
        let series = format!("strongroom_retention_rows_removed_total{{service=\"auth\",data_type=\"{data_type}\"}}");
        assert_eq!(sample(&text, &series), Some(n), "{series} in:\n{text}");
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
    let ran = sample(&text, "strongroom_retention_last_run_timestamp_seconds{service=\"auth\"}");
    assert!(ran.is_some_and(|t| (now - 600.0..=now + 1.0).contains(&t)), "{ran:?}");
    assert!(text.contains("# TYPE strongroom_retention_last_run_timestamp_seconds gauge"), "{text}");
    // vault-svc's job runs at start: its series are there once it has.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let text = e2e::scrape_metrics(c.services["vault"].admin).await;
        let destroyed =
            sample(&text, "strongroom_retention_rows_removed_total{service=\"vault\",data_type=\"period_keys\"}");
        if destroyed == Some(0.0)
            && sample(&text, "strongroom_retention_last_run_timestamp_seconds{service=\"vault\"}").is_some()
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "vault-svc's retention job never reported:\n{text}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    c.stop().await;
}
