//! `/v1/oauth/clients` over the real gateway: a tenant's admins register OAuth / OpenID Connect
//! clients; a confidential client's secret is shown once and stored only as its SHA-256; redirect
//! URIs that would let a code leak (fragments, plain http off loopback, wildcards) are refused with
//! the field named; callers without the permission, and other tenants, see nothing; every change
//! is audited without the secret.

use e2e::Constellation;
use http::Method;
use kit::testing::TestSigner;
use serde_json::{Value, json};
use sha2::Digest;

struct Fx {
    c: Constellation,
    admin: String,
    reader: String,
    beta_admin: String,
}

async fn fx() -> Fx {
    let _ = kit::telemetry::init("e2e", &kit::config::TelemetryConfig { otlp_endpoint: None, log: "error".into() });
    let c = Constellation::start(true).await;
    let alpha = c.create_tenant("alpha").await;
    let beta = c.create_tenant("beta").await;
    let signer = TestSigner::generate();
    signer.publish(&c.db.admin_pool().await).await;
    let token = |tenant: uuid::Uuid, permissions: Value| {
        let mut claims = TestSigner::claims(tenant, &uuid::Uuid::now_v7().to_string());
        claims["permissions"] = permissions;
        signer.sign(&claims)
    };
    Fx {
        admin: token(alpha, json!(["oauth.clients.read", "oauth.clients.write"])),
        reader: token(alpha, json!(["users.read"])),
        beta_admin: token(beta, json!(["oauth.clients.read", "oauth.clients.write"])),
        c,
    }
}

impl Fx {
    async fn call(&self, tenant: &str, token: &str, method: Method, path: &str, body: Value) -> (u16, Value) {
        let bearer = format!("Bearer {token}");
        let headers =
            [("x-strongroom-tenant", tenant), ("authorization", bearer.as_str()), ("content-type", "application/json")];
        let bytes = if body.is_null() { Vec::new() } else { serde_json::to_vec(&body).expect("json") };
        let (status, _, json) = self.c.gateway_request(method, path, &headers, bytes).await.expect("request");
        (status.as_u16(), json)
    }

    async fn alpha(&self, method: Method, path: &str, body: Value) -> (u16, Value) {
        self.call("alpha", &self.admin, method, path, body).await
    }
}

fn spa() -> Value {
    json!({
        "kind": "public",
        "name": "Console",
        "redirect_uris": ["https://console.alpha.example/callback"],
        "post_logout_redirect_uris": ["https://console.alpha.example/"],
        "allowed_scopes": ["openid", "profile", "email", "offline_access"],
        "grant_types": ["authorization_code", "refresh_token"],
        "first_party": true
    })
}

fn backend() -> Value {
    json!({
        "kind": "confidential",
        "name": "Billing backend",
        "redirect_uris": ["https://billing.alpha.example/oauth/callback", "http://127.0.0.1:8765/cb"],
        "allowed_scopes": ["openid", "email"],
        "grant_types": ["authorization_code", "client_credentials"]
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn admins_register_clients_whose_secret_is_shown_once_and_stored_hashed() {
    let f = fx().await;
    let (st, public) = f.alpha(Method::POST, "/v1/oauth/clients", spa()).await;
    assert_eq!(st, 200, "{public}");
    assert_eq!(public["client_secret"], Value::Null, "a public client has no secret");
    assert_eq!(public["client"]["kind"], "public");
    assert_eq!(public["client"]["allowed_scopes"], json!(["email", "offline_access", "openid", "profile"]));
    let (st, confidential) = f.alpha(Method::POST, "/v1/oauth/clients", backend()).await;
    assert_eq!(st, 200, "{confidential}");
    let id = confidential["client"]["id"].as_str().expect("client_id").to_owned();
    let secret = confidential["client_secret"].as_str().expect("secret").to_owned();
    assert_eq!(secret.len(), 43, "256 bits, base64url");

    // Stored as its SHA-256 only; no answer and no audit record carries it again.
    let admin = f.c.db.admin_pool().await;
    let stored: Vec<u8> = sqlx::query_scalar("SELECT secret_hash FROM t_alpha.oauth_clients WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(&admin)
        .await
        .expect("hash");
    assert_eq!(stored, sha2::Sha256::digest(secret.as_bytes()).to_vec());
    let (st, got) = f.alpha(Method::GET, &format!("/v1/oauth/clients/{id}"), Value::Null).await;
    assert_eq!(st, 200, "{got}");
    assert!(got.get("client_secret").is_none() && !got.to_string().contains(&secret), "{got}");
    let (st, page) = f.alpha(Method::GET, "/v1/oauth/clients", Value::Null).await;
    assert_eq!(st, 200, "{page}");
    assert_eq!(page["clients"].as_array().map(Vec::len), Some(2), "{page}");
    assert!(!page.to_string().contains(&secret));

    // A new secret replaces the old one at once; a public client has none to rotate.
    let (st, rotated) = f.alpha(Method::POST, &format!("/v1/oauth/clients/{id}/secret"), Value::Null).await;
    assert_eq!(st, 200, "{rotated}");
    let second = rotated["client_secret"].as_str().expect("new secret").to_owned();
    assert_ne!(second, secret);
    let stored: Vec<u8> = sqlx::query_scalar("SELECT secret_hash FROM t_alpha.oauth_clients WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(&admin)
        .await
        .expect("hash");
    assert_eq!(stored, sha2::Sha256::digest(second.as_bytes()).to_vec());
    let public_id = public["client"]["id"].as_str().expect("id");
    let (st, e) = f.alpha(Method::POST, &format!("/v1/oauth/clients/{public_id}/secret"), Value::Null).await;
    assert_eq!((st, e["error"]["reason"].as_str()), (412, Some("PUBLIC_CLIENT")), "{e}");

    // Settings change as a whole; the kind stays.
    let mut changed = backend();
    changed.as_object_mut().expect("object").remove("kind");
    changed["name"] = json!("Billing");
    changed["grant_types"] = json!(["client_credentials"]);
    let (st, put) = f.alpha(Method::PUT, &format!("/v1/oauth/clients/{id}"), changed).await;
    assert_eq!(st, 200, "{put}");
    assert_eq!((put["name"].as_str(), put["kind"].as_str()), (Some("Billing"), Some("confidential")));

    let (st, _) = f.alpha(Method::DELETE, &format!("/v1/oauth/clients/{id}"), Value::Null).await;
    assert_eq!(st, 200);
    let (st, e) = f.alpha(Method::GET, &format!("/v1/oauth/clients/{id}"), Value::Null).await;
    assert_eq!((st, e["error"]["reason"].as_str()), (404, Some("OAUTH_CLIENT_NOT_FOUND")), "{e}");

    // Every change is in the tenant's audit trail, and no secret is.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let actions: Vec<(String, Value)> = loop {
        let rows: Vec<(String, Value)> = sqlx::query_as(
            "SELECT action, details FROM t_alpha.audit_log WHERE action LIKE 'oauth.client.%' ORDER BY seq",
        )
        .fetch_all(&admin)
        .await
        .expect("log");
        if rows.len() >= 5 || tokio::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let names: Vec<&str> = actions.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        names,
        [
            "oauth.client.create",
            "oauth.client.create",
            "oauth.client.rotate_secret",
            "oauth.client.update",
            "oauth.client.delete"
        ]
    );
    for (_, details) in &actions {
        let text = details.to_string();
        assert!(!text.contains(&secret) && !text.contains(&second), "{text}");
    }
    // The built-in owner and admin roles carry the new permissions.
    let granted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM t_alpha.roles WHERE name IN ('owner', 'admin') AND builtin
            AND permissions @> ARRAY['oauth.clients.read', 'oauth.clients.write']",
    )
    .fetch_one(&admin)
    .await
    .expect("roles");
    assert_eq!(granted, 2);
    f.c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unsafe_redirect_uris_bad_settings_missing_permissions_and_other_tenants_are_refused() {
    let f = fx().await;
    let with = |field: &str, value: Value| {
        let mut body = spa();
        body[field] = value;
        body
    };
    for (body, field) in [
        (with("redirect_uris", json!(["https://console.alpha.example/cb#token"])), "redirect_uris"),
        (with("redirect_uris", json!(["http://console.alpha.example/cb"])), "redirect_uris"),
        (with("redirect_uris", json!(["https://*.alpha.example/cb"])), "redirect_uris"),
        (with("redirect_uris", json!(["javascript:alert(1)"])), "redirect_uris"),
        (with("redirect_uris", json!([])), "redirect_uris"),
        (with("post_logout_redirect_uris", json!(["http://evil.example/"])), "post_logout_redirect_uris"),
        (with("grant_types", json!(["authorization_code", "client_credentials"])), "grant_types"),
        (with("grant_types", json!(["implicit"])), "grant_types"),
        (with("allowed_scopes", json!(["openid", "admin"])), "allowed_scopes"),
        (with("name", json!("")), "name"),
    ] {
        let (st, e) = f.alpha(Method::POST, "/v1/oauth/clients", body.clone()).await;
        assert_eq!(st, 400, "{body}: {e}");
        assert!(e["error"]["message"].as_str().is_some_and(|m| m.starts_with(field)), "{body}: {e}");
    }
    let (st, e) = f.alpha(Method::POST, "/v1/oauth/clients", with("client_secret", json!("chosen"))).await;
    assert_eq!(st, 400, "a caller does not choose the secret: {e}");
    let (st, page) = f.alpha(Method::GET, "/v1/oauth/clients", Value::Null).await;
    assert_eq!((st, page["clients"].as_array().map(Vec::len)), (200, Some(0)), "a refusal wrote nothing: {page}");

    // Without oauth.clients.*: refused; another tenant's admin: the client does not exist there.
    let (st, _) = f.call("alpha", &f.reader, Method::POST, "/v1/oauth/clients", spa()).await;
    assert_eq!(st, 403);
    let (st, _) = f.call("alpha", &f.reader, Method::GET, "/v1/oauth/clients", Value::Null).await;
    assert_eq!(st, 403);
    let (st, made) = f.alpha(Method::POST, "/v1/oauth/clients", spa()).await;
    assert_eq!(st, 200, "{made}");
    let id = made["client"]["id"].as_str().expect("id");
    let (st, _) = f.call("alpha", &f.beta_admin, Method::GET, &format!("/v1/oauth/clients/{id}"), Value::Null).await;
    assert_eq!(st, 403, "beta's token is refused at alpha");
    let (st, e) = f.call("beta", &f.beta_admin, Method::GET, &format!("/v1/oauth/clients/{id}"), Value::Null).await;
    assert_eq!((st, e["error"]["reason"].as_str()), (404, Some("OAUTH_CLIENT_NOT_FOUND")), "{e}");
    let (st, e) = f.call("beta", &f.beta_admin, Method::DELETE, &format!("/v1/oauth/clients/{id}"), Value::Null).await;
    assert_eq!(st, 404, "{e}");
    let (st, _) = f.alpha(Method::GET, &format!("/v1/oauth/clients/{id}"), Value::Null).await;
    assert_eq!(st, 200, "alpha's client survived beta's attempt");
    f.c.stop().await;
}
