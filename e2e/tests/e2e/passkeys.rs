//! Passkeys (WebAuthn) end to end: Debian's Chromium with its virtual authenticator registers a
//! passkey for the tenant's owner over the gateway's API, signs in with it alone, uses it as the
//! second factor of a password login, and steps up with it so that a secret reveal goes through
//! (e2e/browser/passkeys.mjs). Then the attacks, with what the browser answered: an assertion
//! replayed into a new ceremony, a ceremony answered twice, an assertion whose client data names
//! another origin, another user's login step answered with this ceremony: each refused, and the
//! refusals audited.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use e2e::Constellation;
use http::Method;
use serde_json::{Value, json};
use std::time::Duration;

async fn call(c: &Constellation, token: Option<&str>, method: Method, path: &str, body: Value) -> (u16, Value) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(b) = bearer.as_deref() {
        headers.push(("authorization", b));
    }
    let bytes = if body.is_null() { Vec::new() } else { serde_json::to_vec(&body).expect("json") };
    let (status, _, json) = c.gateway_request(method, path, &headers, bytes).await.expect("request");
    (status.as_u16(), json)
}

fn reason(e: &Value) -> &str {
    e["error"]["reason"].as_str().unwrap_or_default()
}

fn totp(secret: &str, at: u64) -> String {
    let seed = totp_rs::Secret::Encoded(secret.to_owned()).to_bytes().expect("base32");
    totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 1, 30, seed, None, "x".into()).expect("totp").generate(at)
}

#[tokio::test(flavor = "multi_thread")]
async fn passkeys_sign_in_alone_as_a_second_factor_and_for_step_up_in_chromium() {
    let _ = kit::telemetry::init("e2e", &kit::config::TelemetryConfig { otlp_endpoint: None, log: "error".into() });
    let c = Constellation::start_with_room_to_sign_in().await;
    let email = "owner@alpha.example";
    let (_, _, password) = c.create_tenant_with_owner("alpha", email).await;
    let (owner, _) = crate::identity_http::owner_session_and_secret(&c, "alpha", email, &password).await;
    let origin = c.gateway_url().replace("127.0.0.1", "localhost");
    // The client's redirect URI: something answers there, so the browser lands on it.
    let client_end = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listener");
    let redirect = format!("http://{}/cb", client_end.local_addr().expect("addr"));
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = client_end.accept().await {
            let mut request = [0u8; 8192];
            let _ = socket.read(&mut request).await;
            let answer =
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
            let _ = socket.write_all(answer).await;
        }
    });
    let client = json!({
        "kind": "public", "name": "Console", "redirect_uris": [&redirect], "allowed_scopes": ["openid"],
        "grant_types": ["authorization_code"], "first_party": true
    });
    let (st, client) = call(&c, Some(&owner), Method::POST, "/v1/oauth/clients", client).await;
    assert_eq!(st, 200, "{client}");
    let authorize_url = format!(
        "{origin}/t/alpha/oauth/authorize?client_id={}&redirect_uri={}&response_type=code&scope=openid&state=s-1\
         &code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
        client["client"]["id"].as_str().expect("id"),
        url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>(),
    );
    let task = json!({
        "origin": origin, "tenant": "alpha", "email": email, "password": password, "access_token": owner,
        "authorize_url": authorize_url, "redirect_uri": redirect,
    });
    let script = e2e::browser_tools().join("passkeys.mjs");
    let r = e2e::run_json_tool("node", &[script.to_str().expect("path")], &task, Duration::from_secs(180)).await;

    // The hosted page's passkey buttons sent the browser back to the client with a code, twice
    // (passwordless; after the password), and its CSP let its script and fetches through.
    assert_eq!(r["csp_violations"], json!([]), "{}", r["csp_violations"]);
    assert_eq!(r["mfa_page_title"], "Second factor");
    let callbacks = r["hosted_callbacks"].as_array().expect("callbacks");
    assert_eq!(callbacks.len(), 2, "{callbacks:?}");
    assert!(callbacks.iter().all(|u| u.as_str().is_some_and(|u| u.contains("code=") && u.contains("state=s-1"))));

    // Registration asked for a discoverable credential with user verification.
    let selection = &r["registration_options"]["publicKey"]["authenticatorSelection"];
    assert_eq!(
        (selection["residentKey"].as_str(), selection["userVerification"].as_str()),
        (Some("required"), Some("required")),
        "{selection}"
    );
    assert_eq!(r["registered"]["status"], 200, "{}", r["registered"]);
    assert_eq!(r["registered"]["body"]["name"], "Laptop");
    assert_eq!(r["listed"]["body"]["passkeys"].as_array().map(Vec::len), Some(1), "{}", r["listed"]);
    let passkey_id = r["listed"]["body"]["passkeys"][0]["id"].as_str().expect("id").to_owned();

    // Passwordless: a session with a second factor passed.
    assert_eq!(r["login"]["status"], 200, "{}", r["login"]);
    let claims = e2e::jwt_part(r["login"]["body"]["access_token"].as_str().expect("token"), 1);
    assert_eq!(claims["amr"], json!(["hwk", "user"]));
    assert!(claims["mfa_time"].is_i64(), "{claims}");
    // After the password, the passkey is offered and accepted as the second factor.
    assert!(r["password"]["methods"].as_array().expect("methods").contains(&json!("passkey")), "{}", r["password"]);
    assert_eq!(r["second_factor"]["status"], 200, "{}", r["second_factor"]);
    let claims = e2e::jwt_part(r["second_factor"]["body"]["access_token"].as_str().expect("token"), 1);
    assert_eq!(claims["amr"], json!(["pwd", "hwk"]));

    // A step-up by passkey, and a secret reveal (which needs a recent second factor) goes through.
    assert_eq!(r["step_up"]["status"], 200, "{}", r["step_up"]);
    let stepped = r["step_up"]["body"]["access_token"].as_str().expect("token").to_owned();
    assert!(e2e::jwt_part(&stepped, 1)["amr"].as_array().expect("amr").contains(&json!("hwk")));
    let (st, e) = call(&c, Some(&owner), Method::PUT, "/v1/secrets/app/db", json!({ "value": "s3cret" })).await;
    assert_eq!(st, 200, "{e}");
    let (st, revealed) =
        call(&c, Some(&stepped), Method::POST, "/v1/secrets/app/db:reveal", json!({ "reason": "incident 7" })).await;
    assert_eq!(st, 200, "{revealed}");
    assert_eq!(revealed["value"], "s3cret");

    // Attacks. An assertion replayed into a new ceremony: its challenge is another's.
    let replay = |ceremony: &str, credential: &Value| json!({ "tenant": "alpha", "ceremony_id": ceremony, "credential": credential });
    let fresh = || call(&c, None, Method::POST, "/v1/auth/passkey/options", json!({ "tenant": "alpha" }));
    let (_, options) = fresh().await;
    let ceremony = options["ceremony_id"].as_str().expect("ceremony").to_owned();
    let (st, e) = call(&c, None, Method::POST, "/v1/auth/passkey", replay(&ceremony, &r["login_assertion"])).await;
    assert_eq!((st, reason(&e)), (401, "PASSKEY_REJECTED"), "{e}");
    // The ceremony is spent by that answer, right or wrong.
    let (st, e) = call(&c, None, Method::POST, "/v1/auth/passkey", replay(&ceremony, &r["login_assertion"])).await;
    assert_eq!((st, reason(&e)), (412, "CEREMONY_NOT_FOUND"), "{e}");
    // The same assertion claiming another origin.
    let mut forged = r["login_assertion"].clone();
    let client_data =
        URL_SAFE_NO_PAD.decode(forged["response"]["clientDataJSON"].as_str().expect("client data")).expect("b64");
    let mut client_data: Value = serde_json::from_slice(&client_data).expect("client data json");
    client_data["origin"] = json!("https://evil.example");
    forged["response"]["clientDataJSON"] = json!(URL_SAFE_NO_PAD.encode(client_data.to_string()));
    let (_, options) = fresh().await;
    let ceremony = options["ceremony_id"].as_str().expect("ceremony").to_owned();
    let (st, e) = call(&c, None, Method::POST, "/v1/auth/passkey", replay(&ceremony, &forged)).await;
    assert_eq!((st, reason(&e)), (401, "PASSKEY_REJECTED"), "{e}");
    // Another user's login step answered with the owner's ceremony.
    let other = "mallory@alpha.example";
    let body = json!({ "email": other, "display_name": "Mallory", "password": "a long enough password" });
    let (st, e) = call(&c, Some(&owner), Method::POST, "/v1/users", body).await;
    assert_eq!(st, 200, "{e}");
    let (_, t) = call(
        &c,
        None,
        Method::POST,
        "/v1/auth/login",
        json!({ "tenant": "alpha", "email": other, "password": "a long enough password" }),
    )
    .await;
    let mallory = t["access_token"].as_str().expect("token").to_owned();
    let (_, enrol) = call(&c, Some(&mallory), Method::POST, "/v1/me/mfa/totp", Value::Null).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let code = totp(enrol["secret"].as_str().expect("secret"), now);
    let (st, e) = call(&c, Some(&mallory), Method::POST, "/v1/me/mfa/totp/confirm", json!({ "code": code })).await;
    assert_eq!(st, 200, "{e}");
    let (_, challenge) = call(
        &c,
        None,
        Method::POST,
        "/v1/auth/login",
        json!({ "tenant": "alpha", "email": other, "password": "a long enough password" }),
    )
    .await;
    let mallory_mfa = challenge["mfa_token"].as_str().expect("mfa token").to_owned();
    let (_, owner_challenge) = call(
        &c,
        None,
        Method::POST,
        "/v1/auth/login",
        json!({ "tenant": "alpha", "email": email, "password": password }),
    )
    .await;
    let owner_mfa = owner_challenge["mfa_token"].as_str().expect("mfa token").to_owned();
    let (st, options) =
        call(&c, None, Method::POST, "/v1/auth/mfa/passkey/options", json!({ "mfa_token": owner_mfa })).await;
    assert_eq!(st, 200, "{options}");
    let body = json!({
        "mfa_token": mallory_mfa,
        "ceremony_id": options["ceremony_id"],
        "credential": r["factor_assertion"],
    });
    let (st, e) = call(&c, None, Method::POST, "/v1/auth/mfa/passkey", body).await;
    assert_eq!((st, reason(&e)), (412, "CEREMONY_NOT_FOUND"), "{e}");
    // A user without a passkey has none to offer.
    let (st, e) =
        call(&c, None, Method::POST, "/v1/auth/mfa/passkey/options", json!({ "mfa_token": mallory_mfa })).await;
    assert_eq!((st, reason(&e)), (412, "NO_PASSKEY"), "{e}");
    // Another user cannot remove the owner's passkey; the owner can.
    let (st, e) = call(&c, Some(&mallory), Method::DELETE, &format!("/v1/me/passkeys/{passkey_id}"), Value::Null).await;
    assert!(st == 404 || st == 403, "{st} {e}");
    let (st, e) = call(&c, Some(&owner), Method::DELETE, &format!("/v1/me/passkeys/{passkey_id}"), Value::Null).await;
    assert_eq!(st, 204, "{e}");

    // The refusals are in the tenant's audit trail.
    let refused: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT action, outcome FROM t_alpha.audit_outbox
                               UNION ALL SELECT action, outcome FROM t_alpha.audit_log) AS r
          WHERE action = 'login.failure' AND outcome = 'denied'",
    )
    .fetch_one(&c.db.admin_pool().await)
    .await
    .expect("audit");
    assert!(refused >= 2, "passkey login refusals audited: {refused}");
    c.stop().await;
}
