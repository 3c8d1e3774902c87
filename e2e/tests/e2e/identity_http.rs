//! The identity routes over the gateway's HTTPS: bearer and browser (cookie + CSRF) sessions,
//! MFA enrolment, the JWKS and discovery documents, and another tenant's token on every route.

use base64::Engine;
use e2e::Constellation;
use http::Method;
use serde_json::{Value, json};

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

fn code_at(secret_b32: &str, at: u64) -> String {
    let seed = totp_rs::Secret::Encoded(secret_b32.to_owned()).to_bytes().expect("base32");
    totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 1, 30, seed, None, "x".into()).expect("totp").generate(at)
}

async fn call(
    c: &Constellation,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> (u16, http::HeaderMap, Value) {
    let bytes = if body.is_null() { Vec::new() } else { serde_json::to_vec(&body).expect("json") };
    let mut h: Vec<(&str, &str)> = headers.to_vec();
    if !bytes.is_empty() {
        h.push(("content-type", "application/json"));
    }
    let (status, headers, json) = c.gateway_request(method, path, &h, bytes).await.expect("request");
    (status.as_u16(), headers, json)
}

/// The owner's full (MFA-enrolled) bearer session of `tenant`.
async fn owner_session(c: &Constellation, tenant: &str, email: &str, password: &str) -> String {
    owner_session_and_secret(c, tenant, email, password).await.0
}

/// The owner's full session (after TOTP enrolment) and their TOTP secret.
pub(crate) async fn owner_session_and_secret(
    c: &Constellation,
    tenant: &str,
    email: &str,
    password: &str,
) -> (String, String) {
    let (s, _, t) =
        call(c, Method::POST, "/v1/auth/login", &[], json!({ "tenant": tenant, "email": email, "password": password }))
            .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["mfa_enrollment_required"], true);
    let bearer = format!("Bearer {}", t["access_token"].as_str().expect("token"));
    let auth = [("authorization", bearer.as_str()), ("x-strongroom-tenant", tenant)];
    // The enrolment-only session can do nothing else.
    let (s, _, _) = call(c, Method::GET, "/v1/users", &auth, Value::Null).await;
    assert_eq!(s, 403);
    let (s, _, e) = call(c, Method::POST, "/v1/me/mfa/totp", &auth, Value::Null).await;
    assert_eq!(s, 200, "{e}");
    let secret = e["secret"].as_str().expect("secret").to_owned();
    let code = code_at(&secret, now());
    let (s, _, b) = call(c, Method::POST, "/v1/me/mfa/totp/confirm", &auth, json!({ "code": code })).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["backup_codes"].as_array().expect("codes").len(), 10);
    // The refresh token names its tenant: another tenant is refused (and spends nothing), none is needed.
    let wrong = if tenant == "bravo" { "alpha" } else { "bravo" };
    let (s, _, e) =
        call(c, Method::POST, "/v1/auth/refresh", &[], json!({ "tenant": wrong, "refresh_token": t["refresh_token"] }))
            .await;
    assert_eq!((s, e["error"]["reason"].as_str()), (401, Some("INVALID_REFRESH_TOKEN")), "{e}");
    let (s, _, full) =
        call(c, Method::POST, "/v1/auth/refresh", &[], json!({ "refresh_token": t["refresh_token"] })).await;
    assert_eq!(s, 200, "{full}");
    assert_eq!(full["mfa_enrollment_required"], false);
    (full["access_token"].as_str().expect("token").to_owned(), secret)
}

/// A documented path with its parameters filled in (ids that exist nowhere).
fn fill_path(path: &str) -> String {
    path.replace("{id}", "00000000-0000-0000-0000-000000000001")
        .replace("{user_id}", "00000000-0000-0000-0000-000000000002")
        .replace("{seq}", "0")
        .replace("{path}", "a/b")
        .replace("{tenant}", "alpha")
}

/// A valid request (path with query, and body) for each documented operation whose path
/// parameters are filled in.
fn valid_request(method: &Method, path: String) -> (String, Value) {
    let uuid = "00000000-0000-0000-0000-000000000003";
    match (method.as_str(), path.as_str()) {
        ("GET", "/v1/audit/proofs/consistency") => (format!("{path}?from=1&to=2"), Value::Null),
        ("PUT", p) if p.starts_with("/v1/secrets/") => (path, json!({ "value": "v1" })),
        ("POST", p) if p.ends_with(":reveal") => (path, json!({ "reason": "incident 42" })),
        ("POST", "/v1/ledger/accounts") => (path, json!({ "ledger": "USD", "code": 1 })),
        ("POST", "/v1/ledger/ledgers") => (path, json!({ "code": "EUR", "scale": 2 })),
        ("POST", "/v1/ledger/transfers") => (
            path,
            json!({ "id": uuid, "debit_account_id": uuid, "credit_account_id": uuid, "amount": "1", "ledger": "USD", "code": 1 }),
        ),
        ("POST", "/v1/auth/step-up" | "/v1/me/mfa/totp/confirm") => (path, json!({ "code": "123456" })),
        ("POST", "/v1/auth/step-up/passkey") => {
            (path, json!({ "ceremony_id": "00000000-0000-0000-0000-000000000003", "credential": {} }))
        }
        ("POST", "/v1/me/passkeys") => {
            (path, json!({ "ceremony_id": "00000000-0000-0000-0000-000000000003", "credential": {}, "name": "Laptop" }))
        }
        ("POST", "/v1/users") => (
            path,
            json!({ "email": "mallory@alpha.example", "password": "a long enough password", "roles": ["viewer"] }),
        ),
        ("PATCH", _) => (path, json!({ "display_name": "Mallory" })),
        ("POST", p) if p.ends_with("/request-information") => (path, json!({ "message": "Which device?" })),
        ("POST", p) if p.ends_with("/decide") => (path, json!({ "decision": "uphold", "reason": "because" })),
        ("POST", "/v1/me/email") => {
            (path, json!({ "new_email": "mallory@alpha.example", "current_password": "a long enough password" }))
        }
        ("POST", "/v1/me/password") => {
            (path, json!({ "current_password": "a long enough password", "new_password": "another long password" }))
        }
        ("POST", p) if p.ends_with("/suspend") => (path, json!({ "reason": "because" })),
        ("POST", "/v1/roles") => (path, json!({ "name": "spy", "permissions": ["users.read"] })),
        ("POST", p) if p.ends_with("/grant") || p.ends_with("/revoke") => (path, json!({ "user_id": uuid })),
        ("POST", "/v1/groups") => (path, json!({ "name": "spies" })),
        ("POST", "/v1/api-keys") => (path, json!({ "name": "k", "scopes": ["users.read"], "ttl_days": 1 })),
        ("POST", "/v1/oauth/clients") => (
            path,
            json!({ "kind": "public", "name": "spa", "redirect_uris": ["https://mallory.example/cb"],
                    "allowed_scopes": ["openid"], "grant_types": ["authorization_code"] }),
        ),
        ("PUT", p) if p.starts_with("/v1/oauth/clients/") => (
            path,
            json!({ "name": "spa", "redirect_uris": ["https://mallory.example/cb"], "allowed_scopes": ["openid"],
                    "grant_types": ["authorization_code"] }),
        ),
        ("PUT", "/v1/tenant/policy") => (
            path,
            json!({ "lockout_threshold": 5, "lockout_window_secs": 900, "access_token_ttl_secs": 600,
                    "refresh_token_ttl_secs": 86400, "mfa_required_roles": ["owner"] }),
        ),
        ("PUT", "/v1/tenant/retention") => {
            (path, json!({ "ended_sessions_days": 365, "mfa_challenges_days": 1, "erased_users_days": 30 }))
        }
        ("POST", "/v1/me/requests") => (path, json!({ "type": "access", "details": "everything you hold" })),
        ("POST", "/v1/privacy/requests") => (path, json!({ "type": "erasure", "external_subject": "contact:123" })),
        ("POST", p) if p.starts_with("/v1/privacy/requests/") && p.ends_with("/update") => {
            (path, json!({ "status": "completed", "note": "done" }))
        }
        ("POST", "/v1/privacy/holds") => (path, json!({ "scope": "tenant", "reason": "case 42" })),
        ("POST", p) if p.starts_with("/v1/privacy/holds/") && p.ends_with("/release") => {
            (path, json!({ "note": "matter closed" }))
        }
        ("PUT", "/v1/vault/retention-classes/{name}") => {
            ("/v1/vault/retention-classes/messages".to_owned(), json!({ "retention_days": 730, "period": "month" }))
        }
        _ => (path, json!({})),
    }
}

fn set_cookies(headers: &http::HeaderMap) -> Vec<String> {
    headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect()
}

fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().expect("pair").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_and_cookie_sessions_over_https() {
    let c = Constellation::start(true).await;
    let (_, _, password) = c.create_tenant_with_owner("alpha", "owner@alpha.example").await;
    let (owner, secret) = owner_session_and_secret(&c, "alpha", "owner@alpha.example", &password).await;
    // A login with TOTP completes over HTTP with just the challenge token and a code, as documented.
    let login = json!({ "tenant": "alpha", "email": "owner@alpha.example", "password": password });
    let (s, _, challenge) = call(&c, Method::POST, "/v1/auth/login", &[], login).await;
    assert_eq!((s, &challenge["mfa_required"]), (200, &json!(true)), "{challenge}");
    let token = challenge["mfa_token"].as_str().expect("mfa token").to_owned();
    // The next step's code: newer than the enrolment's, and within the ±1 step window.
    let wrong_tenant = json!({ "tenant": "bravo", "mfa_token": token, "code": code_at(&secret, now() + 30) });
    let (s, _, e) = call(&c, Method::POST, "/v1/auth/mfa", &[], wrong_tenant).await;
    assert_eq!(s, 401, "another tenant than the token's: {e}");
    let (s, _, t) = call(
        &c,
        Method::POST,
        "/v1/auth/mfa",
        &[],
        json!({ "mfa_token": token, "code": code_at(&secret, now() + 30) }),
    )
    .await;
    assert_eq!(s, 200, "{t}");
    assert!(t["access_token"].is_string(), "{t}");
    let bearer = format!("Bearer {owner}");
    let auth = [("authorization", bearer.as_str()), ("x-strongroom-tenant", "alpha")];
    let (s, _, me) = call(&c, Method::GET, "/v1/me", &auth, Value::Null).await;
    assert_eq!(s, 200, "{me}");
    assert!(me["permissions"].as_array().expect("perms").iter().any(|p| p == "users.write"));
    // auth-svc keeps profiles briefly; a change through it shows at once.
    let path = format!("/v1/users/{}", me["user"]["id"].as_str().expect("my id"));
    let (s, _, u) = call(&c, Method::PATCH, &path, &auth, json!({ "display_name": "Renamed Owner" })).await;
    assert_eq!(s, 200, "{u}");
    let (s, _, me) = call(&c, Method::GET, "/v1/me", &auth, Value::Null).await;
    assert_eq!((s, me["user"]["display_name"].as_str()), (200, Some("Renamed Owner")), "{me}");
    let (s, _, u) = call(
        &c,
        Method::POST,
        "/v1/users",
        &auth,
        json!({ "email": "web@alpha.example", "password": "browser password 1", "roles": ["operator"] }),
    )
    .await;
    assert_eq!(s, 200, "{u}");
    let (s, _, e) =
        call(&c, Method::POST, "/v1/users", &auth, json!({ "email": "short@alpha.example", "password": "short" }))
            .await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["reason"], "INVALID_FIELD");

    // Browser login: cookies, not tokens, in the answer.
    let (s, headers, body) = call(
        &c,
        Method::POST,
        "/v1/auth/login",
        &[("sec-fetch-site", "same-origin")],
        json!({ "tenant": "alpha", "email": "web@alpha.example", "password": "browser password 1", "cookie": true }),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert!(body.get("access_token").is_none() && body.get("refresh_token").is_none());
    let cookies = set_cookies(&headers);
    assert_eq!(cookies.len(), 3, "{cookies:?}");
    for c in &cookies {
        assert!(
            c.starts_with("__Host-") && c.contains("Secure") && c.contains("SameSite=Strict") && c.contains("Path=/"),
            "{c}"
        );
    }
    assert!(cookies.iter().filter(|c| c.contains("HttpOnly")).count() == 2);
    let jar = cookies.iter().map(|c| cookie_pair(c)).collect::<Vec<_>>().join("; ");
    let csrf = body["csrf_token"].as_str().expect("csrf").to_owned();
    let browser = [("cookie", jar.as_str()), ("x-strongroom-tenant", "alpha"), ("sec-fetch-site", "same-origin")];
    let (s, _, me) = call(&c, Method::GET, "/v1/me", &browser, Value::Null).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["user"]["email"], "web@alpha.example");
    // An unsafe request without the CSRF token is refused, with it it passes.
    let key = json!({ "name": "ci", "scopes": ["ledger.transfers.read"], "ttl_days": 7 });
    let (s, _, e) = call(&c, Method::POST, "/v1/api-keys", &browser, key.clone()).await;
    assert_eq!((s, e["error"]["reason"].as_str()), (403, Some("CSRF_TOKEN_INVALID")));
    let with_csrf = [browser[0], browser[1], browser[2], ("x-csrf-token", csrf.as_str())];
    let (s, _, k) = call(&c, Method::POST, "/v1/api-keys", &with_csrf, key).await;
    assert_eq!(s, 200, "{k}");
    assert!(k["api_key"].as_str().is_some_and(kit::apikey::well_formed));
    // A cross-site page cannot use the cookies even with a leaked CSRF token.
    let cross = [browser[0], browser[1], ("sec-fetch-site", "cross-site"), ("x-csrf-token", csrf.as_str())];
    let (s, _, e) = call(&c, Method::POST, "/v1/auth/logout", &cross, Value::Null).await;
    assert_eq!((s, e["error"]["reason"].as_str()), (403, Some("CROSS_SITE_REQUEST")));
    // The API key works as a bearer token at the gateway.
    let key_bearer = format!("Bearer {}", k["api_key"].as_str().expect("key"));
    let (s, _, me) = call(
        &c,
        Method::GET,
        "/v1/me",
        &[("authorization", &key_bearer), ("x-strongroom-tenant", "alpha")],
        Value::Null,
    )
    .await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["permissions"], json!(["ledger.transfers.read"]));
    // Logout clears the cookies and ends the session everywhere.
    let (s, headers, _) = call(&c, Method::POST, "/v1/auth/logout", &with_csrf, Value::Null).await;
    assert_eq!(s, 204);
    assert!(set_cookies(&headers).iter().all(|c| c.contains("Max-Age=0")));
    tokio::time::sleep(kit::principal::REVOCATION_RECHECK + std::time::Duration::from_millis(100)).await;
    let (s, _, e) = call(&c, Method::GET, "/v1/me", &browser, Value::Null).await;
    assert_eq!((s, e["error"]["reason"].as_str()), (401, Some("SESSION_REVOKED")));

    // Suspension and the reason, over HTTP.
    let id = u["id"].as_str().expect("id");
    let (s, _, _) =
        call(&c, Method::POST, &format!("/v1/users/{id}/suspend"), &auth, json!({ "reason": "chargeback review" }))
            .await;
    assert_eq!(s, 200);
    let (s, _, e) = call(
        &c,
        Method::POST,
        "/v1/auth/login",
        &[],
        json!({ "tenant": "alpha", "email": "web@alpha.example", "password": "browser password 1" }),
    )
    .await;
    assert_eq!((s, e["error"]["reason"].as_str()), (403, Some("USER_SUSPENDED")));
    assert!(e["error"]["message"].as_str().is_some_and(|m| m.contains("chargeback review")));
    c.stop().await;
}

/// A browser holds its session in cookies; it refreshes through the refresh cookie alone (the
/// refresh token names its tenant), with the CSRF token like any unsafe request, and gets new
/// cookies, never tokens in the body.
#[tokio::test(flavor = "multi_thread")]
async fn a_browser_session_refreshes_through_its_cookies() {
    let c = Constellation::start(true).await;
    let (_, _, password) = c.create_tenant_with_owner("alpha", "owner@alpha.example").await;
    let owner = format!("Bearer {}", owner_session(&c, "alpha", "owner@alpha.example", &password).await);
    let auth = [("authorization", owner.as_str()), ("x-strongroom-tenant", "alpha")];
    let user = json!({ "email": "web@alpha.example", "password": "browser password 1", "roles": ["member"] });
    let (s, _, u) = call(&c, Method::POST, "/v1/users", &auth, user).await;
    assert_eq!(s, 200, "{u}");
    let login =
        json!({ "tenant": "alpha", "email": "web@alpha.example", "password": "browser password 1", "cookie": true });
    let (s, headers, body) =
        call(&c, Method::POST, "/v1/auth/login", &[("sec-fetch-site", "same-origin")], login).await;
    assert_eq!(s, 200, "{body}");
    let jar = set_cookies(&headers).iter().map(|c| cookie_pair(c)).collect::<Vec<_>>().join("; ");
    let csrf = body["csrf_token"].as_str().expect("csrf").to_owned();

    let browser = [("cookie", jar.as_str()), ("sec-fetch-site", "same-origin")];
    let (s, _, e) = call(&c, Method::POST, "/v1/auth/refresh", &browser, json!({})).await;
    assert_eq!((s, e["error"]["reason"].as_str()), (403, Some("CSRF_TOKEN_INVALID")), "{e}");
    let with_csrf = [browser[0], browser[1], ("x-csrf-token", csrf.as_str())];
    let (s, headers, body) = call(&c, Method::POST, "/v1/auth/refresh", &with_csrf, json!({})).await;
    assert_eq!(s, 200, "{body}");
    assert!(body.get("access_token").is_none() && body.get("refresh_token").is_none(), "{body}");
    let renewed = set_cookies(&headers);
    assert_eq!(renewed.len(), 3, "{renewed:?}");
    let new_jar = renewed.iter().map(|c| cookie_pair(c)).collect::<Vec<_>>().join("; ");
    assert_ne!(new_jar, jar);
    let (s, _, me) = call(
        &c,
        Method::GET,
        "/v1/me",
        &[("cookie", new_jar.as_str()), ("x-strongroom-tenant", "alpha"), ("sec-fetch-site", "same-origin")],
        Value::Null,
    )
    .await;
    assert_eq!((s, me["user"]["email"].as_str()), (200, Some("web@alpha.example")), "{me}");
    c.stop().await;
}

/// Security review item 18: with the access cookie expired (a browser idle past ten minutes),
/// logout answered 401, cleared nothing and left the 30-day refresh token alive.
#[tokio::test(flavor = "multi_thread")]
async fn logging_out_after_the_access_cookie_expired_ends_the_session_and_clears_the_cookies() {
    let c = Constellation::start(true).await;
    let (_, _, password) = c.create_tenant_with_owner("alpha", "owner@alpha.example").await;
    let owner = format!("Bearer {}", owner_session(&c, "alpha", "owner@alpha.example", &password).await);
    let auth = [("authorization", owner.as_str()), ("x-strongroom-tenant", "alpha")];
    let user = json!({ "email": "kiosk@alpha.example", "password": "browser password 1", "roles": ["member"] });
    let (s, _, u) = call(&c, Method::POST, "/v1/users", &auth, user).await;
    assert_eq!(s, 200, "{u}");
    let login =
        json!({ "tenant": "alpha", "email": "kiosk@alpha.example", "password": "browser password 1", "cookie": true });
    let (s, headers, body) =
        call(&c, Method::POST, "/v1/auth/login", &[("sec-fetch-site", "same-origin")], login).await;
    assert_eq!(s, 200, "{body}");
    let csrf = body["csrf_token"].as_str().expect("csrf").to_owned();
    // The browser dropped the access cookie (its Max-Age is the access token's lifetime).
    let jar = set_cookies(&headers)
        .iter()
        .map(|c| cookie_pair(c))
        .filter(|c| !c.starts_with("__Host-strongroom_session="))
        .collect::<Vec<_>>()
        .join("; ");
    let browser = [("cookie", jar.as_str()), ("sec-fetch-site", "same-origin"), ("x-csrf-token", csrf.as_str())];
    let (s, headers, body) = call(&c, Method::POST, "/v1/auth/logout", &browser, Value::Null).await;
    assert_eq!(s, 204, "{body}");
    let cleared = set_cookies(&headers);
    for name in ["__Host-strongroom_session", "__Host-strongroom_refresh", "__Host-strongroom_csrf"] {
        assert!(
            cleared.iter().any(|c| c.starts_with(&format!("{name}=")) && c.contains("Max-Age=0")),
            "{name} cleared: {cleared:?}"
        );
    }
    // The refresh token of that session no longer works.
    let (s, _, e) = call(&c, Method::POST, "/v1/auth/refresh", &browser, json!({})).await;
    assert_eq!((s, e["error"]["reason"].as_str()), (401, Some("SESSION_ENDED")), "{e}");
    // A logout that fails clears the cookies all the same.
    let bogus = "__Host-strongroom_refresh=srr_alpha.not-a-token; __Host-strongroom_csrf=".to_owned() + &csrf;
    let stale = [("cookie", bogus.as_str()), ("sec-fetch-site", "same-origin"), ("x-csrf-token", csrf.as_str())];
    let (s, headers, e) = call(&c, Method::POST, "/v1/auth/logout", &stale, Value::Null).await;
    assert_eq!(s, 401, "{e}");
    assert_eq!(set_cookies(&headers).len(), 3, "cleared on failure too");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn jwks_discovery_and_another_tenants_token_on_every_route() {
    let c = Constellation::start(true).await;
    let (_, _, pa) = c.create_tenant_with_owner("alpha", "owner@alpha.example").await;
    let (_, _, pb) = c.create_tenant_with_owner("bravo", "owner@bravo.example").await;
    let alpha = owner_session(&c, "alpha", "owner@alpha.example", &pa).await;
    let bravo = owner_session(&c, "bravo", "owner@bravo.example", &pb).await;

    let (s, _, conf) = call(&c, Method::GET, "/.well-known/openid-configuration", &[], Value::Null).await;
    assert_eq!(s, 200);
    assert!(conf["jwks_uri"].as_str().is_some_and(|u| u.ends_with("/.well-known/jwks.json")));
    assert!(conf["issuer"].is_string());
    let (s, _, jwks) = call(&c, Method::GET, "/.well-known/jwks.json", &[], Value::Null).await;
    assert_eq!(s, 200);
    // Independent verification: the published JWK verifies the token with another JOSE library.
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = alpha.split('.').collect();
    let header = e2e::jwt_part(&alpha, 0);
    let key = jwks["keys"].as_array().expect("keys").iter().find(|k| k["kid"] == header["kid"]).expect("published");
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str(), key["alg"].as_str()),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
    );
    let claims = e2e::verify_with_jwk(&alpha, key).expect("verifies");
    // The public document is served from the gateway's copy: twenty more hits ask auth-svc at
    // most once more (when the copy's few seconds ran out in between), not twenty times.
    let get_jwks_calls = || async {
        e2e::scrape_metrics(c.services["auth"].admin)
            .await
            .lines()
            .filter(|l| {
                l.starts_with("rpc_server_call_duration_seconds_count{") && l.contains("rpc_method=\"GetJwks\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    let before = get_jwks_calls().await;
    for _ in 0..20 {
        let (s, _, again) = call(&c, Method::GET, "/.well-known/jwks.json", &[], Value::Null).await;
        assert_eq!((s, &again), (200, &jwks));
    }
    let asked = get_jwks_calls().await - before;
    assert!(asked <= 1, "20 JWKS hits asked auth-svc {asked} times");
    assert!(claims["sub"].is_string());
    let mut forged: Vec<u8> = b64.decode(parts[2]).expect("sig");
    forged[0] ^= 1;
    let forged = format!("{}.{}.{}", parts[0], parts[1], b64.encode(forged));
    assert!(e2e::verify_with_jwk(&forged, key).is_err(), "an altered signature does not verify");

    // bravo's owner token against alpha, on every documented route: never a success.
    let bearer = format!("Bearer {bravo}");
    let public = gateway::openapi::PUBLIC;
    for (method, path) in gateway::openapi::operations() {
        if public.contains(&path.as_str()) {
            continue;
        }
        let path = fill_path(&path);
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        // A valid request for each route, so that only the tenant check can refuse it.
        let (path, body) = valid_request(&method, path);
        let (s, _, answer) =
            call(&c, method.clone(), &path, &[("authorization", &bearer), ("x-strongroom-tenant", "alpha")], body)
                .await;
        assert_eq!(
            (s, answer["error"]["reason"].as_str()),
            (403, Some("TENANT_MISMATCH")),
            "{method} {path}: {s} {answer}"
        );
    }
    // Forged tokens at the gateway.
    let none = format!("{}.{}.", b64.encode(r#"{"alg":"none","typ":"at+jwt"}"#), parts[1]);
    let hs = format!("{}.{}.{}", b64.encode(r#"{"alg":"HS256","typ":"at+jwt","kid":"x"}"#), parts[1], parts[2]);
    for forged in [none, hs] {
        let b = format!("Bearer {forged}");
        let (s, _, e) =
            call(&c, Method::GET, "/v1/me", &[("authorization", &b), ("x-strongroom-tenant", "alpha")], Value::Null)
                .await;
        assert_eq!(s, 401, "{e}");
    }
    c.stop().await;
}

/// The JSON schema of an operation's request body, `$ref`s resolved and `oneOf` alternatives
/// merged: `(property, schema)` of every property.
fn body_properties(doc: &Value, op: &Value) -> Vec<(String, Value)> {
    let resolve = |v: &Value| match v["$ref"].as_str() {
        Some(r) => doc.pointer(r.trim_start_matches('#')).cloned().unwrap_or(Value::Null),
        None => v.clone(),
    };
    let schema = resolve(&op["requestBody"]["content"]["application/json"]["schema"]);
    let mut alternatives = vec![schema.clone()];
    for key in ["oneOf", "anyOf"] {
        alternatives.extend(schema[key].as_array().into_iter().flatten().map(resolve));
    }
    let mut props = Vec::new();
    for alt in alternatives {
        for (name, p) in alt["properties"].as_object().into_iter().flatten() {
            props.push((name.clone(), resolve(p)));
        }
    }
    props
}

/// A value of another type than `schema` allows (an array for text, text for the rest).
fn wrong_type(schema: &Value) -> Value {
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if types.contains(&"string") { json!([1]) } else { json!("not of this type") }
}

/// The same value with NUL (U+0000) in every place text can hide: text, items, keys and values.
fn with_nul(schema: &Value) -> Option<Value> {
    let nul = "a\u{0}b";
    let is = |t: &str| schema["type"] == t || schema["type"].as_array().is_some_and(|a| a.iter().any(|x| x == t));
    if is("string") {
        Some(json!(nul))
    } else if is("array") {
        Some(json!([nul]))
    } else if is("object") {
        Some(json!({ nul: nul }))
    } else {
        None
    }
}

/// Every documented operation, given bad input (no tenant, no JSON content type, malformed JSON,
/// each body field of a wrong type or holding NUL), answers a 4xx it documents, with the error body:
/// never a 5xx, never an undocumented status. (The fuzzer schemathesis found 500s here: NUL in a
/// group's description, an account code beyond PostgreSQL's `integer`, a NUL in ledger metadata.)
#[tokio::test(flavor = "multi_thread")]
async fn every_operation_answers_bad_input_with_a_documented_json_error() {
    let mut c = Constellation::start(false).await;
    c.start_gateway_with(|g| g.rate_limits.enabled = false).await;
    let (_, _, password) = c.create_tenant_with_owner("alpha", "owner@alpha.example").await;
    let owner = owner_session(&c, "alpha", "owner@alpha.example", &password).await;
    let bearer = format!("Bearer {owner}");
    let auth = [("authorization", bearer.as_str()), ("x-strongroom-tenant", "alpha")];
    let doc = gateway::openapi::document();
    let mut checked = 0;
    let mut problems: Vec<String> = Vec::new();
    let mut check = |what: &str, op: &Value, s: u16, answer: &Value| {
        if s >= 500 {
            problems.push(format!("{what}: {s} {answer}"));
        } else if op["responses"].get(s.to_string()).is_none() {
            problems.push(format!("{what}: {s} is not documented: {answer}"));
        } else if s >= 400
            && ["code", "reason", "message", "request_id"].iter().any(|k| !answer["error"][k].is_string())
        {
            problems.push(format!("{what}: {s} without the error shape: {answer}"));
        }
    };
    // The session must outlive the walk, and step-up codes count as MFA failures: leave them out.
    // The OAuth token endpoint answers RFC 6749's errors, not the API's (oauth_flow.rs tests them).
    let skip = [
        "/v1/auth/logout",
        "/v1/auth/step-up",
        "/v1/me/sessions/{id}",
        "/t/{tenant}/oauth/token",
        "/t/{tenant}/oauth/revoke",
        "/t/{tenant}/oauth/introspect",
    ];
    for (method, template) in gateway::openapi::operations() {
        if skip.contains(&template.as_str()) {
            continue;
        }
        let (method, template) = (method.as_str(), template.as_str());
        let op = &doc["paths"][template][method];
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let (path, valid) = valid_request(&method, fill_path(template));
        let tenant_param =
            op["parameters"].as_array().into_iter().flatten().any(|p| p["$ref"] == "#/components/parameters/Tenant");
        if tenant_param {
            // The token names its tenant, so the header is optional; a malformed one is refused.
            let what = format!("{method} {template} with a malformed tenant");
            let bad_tenant = [auth[0], ("x-strongroom-tenant", "Not A Slug")];
            let (s, _, answer) = call(&c, method.clone(), &path, &bad_tenant, valid.clone()).await;
            assert_eq!((s, answer["error"]["reason"].as_str()), (400, Some("INVALID_FIELD")), "{what}: {answer}");
            check(&what, op, s, &answer);
            checked += 1;
        }
        if op.get("requestBody").is_none() {
            continue;
        }
        let what = format!("{method} {template} as text/plain");
        let headers = [auth[0], auth[1], ("content-type", "text/plain")];
        let (s, _, answer) = c.gateway_request(method.clone(), &path, &headers, b"{}".to_vec()).await.expect("request");
        if !template.starts_with("/v1/ledger/") {
            let reason = answer["error"]["reason"].as_str();
            assert_eq!((s.as_u16(), reason), (415, Some("UNSUPPORTED_MEDIA_TYPE")), "{what}: {answer}");
        }
        check(&what, op, s.as_u16(), &answer);
        checked += 1;
        let what = format!("{method} {template} with malformed JSON");
        let headers = [auth[0], auth[1], ("content-type", "application/json")];
        let (s, _, answer) =
            c.gateway_request(method.clone(), &path, &headers, br#"{"a": "#.to_vec()).await.expect("request");
        assert_eq!((s.as_u16(), answer["error"]["reason"].as_str()), (400, Some("INVALID_FIELD")), "{what}: {answer}");
        check(&what, op, s.as_u16(), &answer);
        checked += 1;
        for (name, schema) in body_properties(&doc, op) {
            let mut bodies = vec![("of a wrong type", wrong_type(&schema))];
            bodies.extend(with_nul(&schema).map(|v| ("with NUL", v)));
            for (how, value) in bodies {
                let mut body = if valid.is_object() { valid.clone() } else { json!({}) };
                body[name.as_str()] = value;
                let what = format!("{method} {template} with {name} {how}");
                let (s, _, answer) = call(&c, method.clone(), &path, &auth, body).await;
                check(&what, op, s, &answer);
                if how == "of a wrong type" && schema.get("type").is_some() {
                    assert_eq!(s, 400, "{what}: {answer}");
                    assert!(!answer.to_string().contains("not of this type"), "{what}: the value came back: {answer}");
                }
                checked += 1;
            }
        }
    }
    assert!(problems.is_empty(), "{} of {checked} bad requests:\n{}", problems.len(), problems.join("\n"));
    assert!(checked > 200, "only {checked} bad requests were sent");

    // What the walk found, in detail. NUL in stored text: 400 and nothing written.
    let group = json!({ "name": "nul-group", "description": "a\u{0}b" });
    let (s, _, e) = call(&c, Method::POST, "/v1/groups", &auth, group).await;
    assert_eq!((s, e["error"]["reason"].as_str()), (400, Some("INVALID_TEXT")), "{e}");
    let (s, _, groups) = call(&c, Method::GET, "/v1/groups", &auth, Value::Null).await;
    assert_eq!(s, 200);
    assert!(!groups.to_string().contains("nul-group"), "{groups}");
    // An account code beyond PostgreSQL's integer.
    let (s, _, e) = call(&c, Method::POST, "/v1/ledger/ledgers", &auth, json!({ "code": "USD", "scale": 2 })).await;
    assert_eq!(s, 200, "{e}");
    let account = json!({ "id": "0190f1d2-0000-7000-8000-000000000001", "ledger": "USD", "code": 3_605_601_076u64 });
    let (s, _, e) = call(&c, Method::POST, "/v1/ledger/accounts", &auth, account).await;
    assert_eq!((s, e["error"]["message"].as_str()), (400, Some("account.code: 1 to 2147483647")), "{e}");
    // A wrong-typed field is named, and its value is not repeated.
    let path = "/v1/users/00000000-0000-0000-0000-000000000001/suspend";
    let (s, _, e) = call(&c, Method::POST, path, &auth, json!({ "reason": 31_337 })).await;
    assert_eq!((s, e["error"]["message"].as_str()), (400, Some("reason: invalid type, expected a string")), "{e}");
    c.stop().await;
}

/// The permission check exists once (`kit::authz`): the gateway and the service it calls answer
/// the same request the same way. A user reads themselves without `users.read` through the
/// gateway as through auth-svc, and a missing permission is `MISSING_PERMISSION` at the gateway and
/// at ledger-svc alike.
#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_and_the_services_decide_a_request_alike() {
    use proto::ledger::v1 as lpb;
    let c = Constellation::start(true).await;
    let (_, owner_id, password) = c.create_tenant_with_owner("alpha", "owner@alpha.example").await;
    let owner = format!("Bearer {}", owner_session(&c, "alpha", "owner@alpha.example", &password).await);
    let auth = [("authorization", owner.as_str()), ("x-strongroom-tenant", "alpha")];
    let user = json!({ "email": "mia@alpha.example", "password": "member password 1", "roles": ["member"] });
    let (s, _, u) = call(&c, Method::POST, "/v1/users", &auth, user).await;
    assert_eq!(s, 200, "{u}");
    let mia_id = u["id"].as_str().expect("id").to_owned();
    let login = json!({ "tenant": "alpha", "email": "mia@alpha.example", "password": "member password 1" });
    let (s, _, t) = call(&c, Method::POST, "/v1/auth/login", &[], login).await;
    assert_eq!(s, 200, "{t}");
    let token = t["access_token"].as_str().expect("token").to_owned();
    let bearer = format!("Bearer {token}");
    let mia = [("authorization", bearer.as_str()), ("x-strongroom-tenant", "alpha")];

    // Herself: allowed by auth-svc, so by the gateway too. Someone else: users.read is missing.
    let (s, _, me) = call(&c, Method::GET, &format!("/v1/users/{mia_id}"), &mia, Value::Null).await;
    assert_eq!((s, me["email"].as_str()), (200, Some("mia@alpha.example")), "{me}");
    let (s, _, e) = call(&c, Method::GET, &format!("/v1/users/{owner_id}"), &mia, Value::Null).await;
    assert_eq!((s, e["error"]["reason"].as_str()), (403, Some("MISSING_PERMISSION")), "{e}");
    assert!(e["error"]["message"].as_str().is_some_and(|m| m.contains("users.read")), "{e}");

    // A ledger she may not create: the gateway and ledger-svc give the same refusal.
    let body = json!({ "code": "USD", "scale": 2, "description": "US dollar" });
    let (s, _, at_gateway) = call(&c, Method::POST, "/v1/ledger/ledgers", &mia, body).await;
    assert_eq!(s, 403, "{at_gateway}");
    let mut ledger = lpb::ledger_service_client::LedgerServiceClient::new(c.channel_as("gateway", "ledger"));
    let msg = lpb::CreateLedgerRequest {
        ledger: Some(lpb::Ledger { code: "USD".into(), scale: 2, description: "US dollar".into() }),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    let at_service = ledger
        .create_ledger(kit::client::with_context(tonic::Request::new(msg), Some("alpha"), None, Some(&token)))
        .await
        .expect_err("no ledger.ledgers.create");
    assert_eq!(at_service.code(), tonic::Code::PermissionDenied);
    assert_eq!(e2e::reason(&at_service), "MISSING_PERMISSION");
    assert_eq!(at_gateway["error"]["reason"].as_str(), Some("MISSING_PERMISSION"), "{at_gateway}");
    assert_eq!(at_gateway["error"]["message"].as_str(), Some(at_service.message()), "{at_gateway}");
    c.stop().await;
}

/// A token or API key names its tenant: a frontend need not send `x-strongroom-tenant` with it,
/// the gateway records the request in that tenant's log, and a header naming another tenant is
/// refused (`TENANT_MISMATCH`), over HTTP and over gRPC alike.
#[tokio::test(flavor = "multi_thread")]
async fn the_credential_names_the_tenant() {
    let c = Constellation::start(true).await;
    let (_, _, password) = c.create_tenant_with_owner("alpha", "owner@alpha.example").await;
    c.create_tenant("bravo").await;
    let token = owner_session(&c, "alpha", "owner@alpha.example", &password).await;
    let bearer = format!("Bearer {token}");
    let only_token = [("authorization", bearer.as_str())];

    let (s, _, users) = call(&c, Method::GET, "/v1/users", &only_token, Value::Null).await;
    assert_eq!(s, 200, "{users}");
    let user = json!({ "email": "nia@alpha.example", "password": "a long enough password", "roles": ["viewer"] });
    let (s, headers, created) = call(&c, Method::POST, "/v1/users", &only_token, user).await;
    assert_eq!(s, 200, "{created}");
    let request_id = headers.get("x-request-id").and_then(|v| v.to_str().ok()).expect("request id").to_owned();

    // Another tenant in the header: refused by the service, whichever tenant exists.
    for other in ["bravo", "ghost"] {
        let mismatch = [("authorization", bearer.as_str()), ("x-strongroom-tenant", other)];
        let (s, _, e) = call(&c, Method::GET, "/v1/users", &mismatch, Value::Null).await;
        assert_eq!((s, e["error"]["reason"].as_str()), (403, Some("TENANT_MISMATCH")), "{other}: {e}");
    }
    // No credential and no header: nothing names a tenant.
    let (s, _, e) = call(&c, Method::GET, "/v1/users", &[], Value::Null).await;
    assert_eq!(s, 401, "{e}");

    // An API key names its tenant too.
    let key = json!({ "name": "ci", "scopes": ["users.read"], "ttl_days": 1 });
    let (s, _, k) = call(&c, Method::POST, "/v1/api-keys", &only_token, key).await;
    assert_eq!(s, 200, "{k}");
    let key_bearer = format!("Bearer {}", k["api_key"].as_str().expect("key"));
    let (s, _, listed) =
        call(&c, Method::GET, "/v1/users", &[("authorization", key_bearer.as_str())], Value::Null).await;
    assert_eq!(s, 200, "{listed}");

    // Over gRPC: no tenant metadata, the token's tenant.
    let mut users_client =
        proto::auth::v1::user_service_client::UserServiceClient::new(c.channel_as("gateway", "auth"));
    let listed = users_client
        .list_users(kit::client::with_context(
            tonic::Request::new(proto::auth::v1::ListUsersRequest::default()),
            None,
            None,
            Some(&token),
        ))
        .await
        .expect("the token's tenant")
        .into_inner();
    assert!(listed.users.iter().any(|u| u.email == "nia@alpha.example"));

    // The gateway recorded the state-changing request in the token's tenant's log.
    let path = format!("/v1/audit/events?request_id={request_id}&action=gateway.request");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (s, _, page) = call(&c, Method::GET, &path, &only_token, Value::Null).await;
        assert_eq!(s, 200, "{page}");
        if page["events"].as_array().is_some_and(|e| !e.is_empty()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the request was not recorded in alpha's log");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    c.stop().await;
}
