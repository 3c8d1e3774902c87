//! The hosted login page of a tenant's OpenID Connect provider (`/t/<slug>/oauth/authorize`),
//! the discovery document, UserInfo and RP-initiated logout, over the real gateway.
//!
//! First by a relying party nobody on the project wrote: Authlib (Python) runs the code flow with
//! PKCE, the login page driven by Debian's Chromium (playwright-core), checks the ID token with its
//! own JOSE, reads UserInfo, refreshes, introspects, revokes and logs out; with a password, and
//! with a password and TOTP. Then the page's defences, by plain HTTP: an unregistered redirect URI
//! is never redirected to, a form from another site or without the page's token is refused, the
//! CSP allows no script and no inline style; and its other steps: enrolment when the role requires
//! a second factor, a suspended user's reason and appeal, cancel, `prompt=none`.

use e2e::Constellation;
use http::Method;
use serde_json::{Value, json};

const REDIRECT: &str = "http://127.0.0.1:48123/cb";
const AFTER_LOGOUT: &str = "http://127.0.0.1:48123/bye";
const PASSWORD: &str = "a long enough password";

struct Fx {
    c: Constellation,
    owner: String,
    client_id: String,
    client_secret: String,
}

async fn call(c: &Constellation, token: &str, method: Method, path: &str, body: Value) -> (u16, Value) {
    let bearer = format!("Bearer {token}");
    let headers =
        [("x-strongroom-tenant", "alpha"), ("authorization", bearer.as_str()), ("content-type", "application/json")];
    let bytes = if body.is_null() { Vec::new() } else { serde_json::to_vec(&body).expect("json") };
    let (status, _, json) = c.gateway_request(method, path, &headers, bytes).await.expect("request");
    (status.as_u16(), json)
}

/// A request to the gateway whose answer is a page (or a redirect): (status, headers, body text).
async fn page(
    c: &Constellation,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, http::HeaderMap, String) {
    let ca = std::fs::read(c.pki.path("ca.pem")).expect("ca");
    let cfg = kit::tls::ca_only_client_config(&ca, &[b"http/1.1"]).expect("tls");
    let url = format!("{}{path}", c.gateway_url());
    let (status, headers, body) =
        kit::tls::https_request(cfg, method, &url, headers, body.as_bytes().to_vec()).await.expect("request");
    (status.as_u16(), headers, String::from_utf8(body).expect("utf-8"))
}

impl Fx {
    async fn new() -> Self {
        let _ = kit::telemetry::init("e2e", &kit::config::TelemetryConfig { otlp_endpoint: None, log: "error".into() });
        let c = Constellation::start_with_room_to_sign_in().await;
        let (_, _, owner_password) = c.create_tenant_with_owner("alpha", "owner@alpha.example").await;
        let (owner, _) =
            crate::identity_http::owner_session_and_secret(&c, "alpha", "owner@alpha.example", &owner_password).await;
        let (st, client) = call(
            &c,
            &owner,
            Method::POST,
            "/v1/oauth/clients",
            json!({
                "kind": "confidential",
                "name": "Partner Portal",
                "redirect_uris": [REDIRECT],
                "post_logout_redirect_uris": [AFTER_LOGOUT],
                "allowed_scopes": ["openid", "profile", "email", "offline_access"],
                "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
                "permissions": ["users.read"],
                "first_party": false
            }),
        )
        .await;
        assert_eq!(st, 200, "{client}");
        let client_id = client["client"]["id"].as_str().expect("id").to_owned();
        let client_secret = client["client_secret"].as_str().expect("secret").to_owned();
        Self { c, owner, client_id, client_secret }
    }

    async fn user(&self, email: &str, roles: &[&str]) -> String {
        let body = json!({ "email": email, "display_name": "Pat Member", "password": PASSWORD, "roles": roles });
        let (st, user) = call(&self.c, &self.owner, Method::POST, "/v1/users", body).await;
        assert_eq!(st, 200, "{user}");
        user["id"].as_str().expect("id").to_owned()
    }

    /// A user with a confirmed TOTP second factor: their id and TOTP secret.
    async fn totp_user(&self, email: &str) -> (String, String) {
        let id = self.user(email, &[]).await;
        let body = json!({ "tenant": "alpha", "email": email, "password": PASSWORD });
        let bytes = serde_json::to_vec(&body).expect("json");
        let headers = [("content-type", "application/json")];
        let (st, _, login) =
            self.c.gateway_request(Method::POST, "/v1/auth/login", &headers, bytes).await.expect("login");
        assert_eq!(st.as_u16(), 200, "{login}");
        let token = login["access_token"].as_str().expect("token");
        let (st, enrol) = call(&self.c, token, Method::POST, "/v1/me/mfa/totp", Value::Null).await;
        assert_eq!(st, 200, "{enrol}");
        let secret = enrol["secret"].as_str().expect("secret").to_owned();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
        let seed = totp_rs::Secret::Encoded(secret.clone()).to_bytes().expect("base32");
        let totp = totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 1, 30, seed, None, "x".into()).expect("totp");
        let body = json!({ "code": totp.generate(now) });
        let (st, confirmed) = call(&self.c, token, Method::POST, "/v1/me/mfa/totp/confirm", body).await;
        assert_eq!(st, 200, "{confirmed}");
        (id, secret)
    }

    /// The path of an authorization request with `extra` parameters.
    fn authorize_path(&self, redirect: &str, extra: &[(&str, &str)]) -> String {
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.extend_pairs([
            ("client_id", self.client_id.as_str()),
            ("redirect_uri", redirect),
            ("response_type", "code"),
            ("scope", "openid email"),
            ("state", "s-123"),
            ("nonce", "n-456"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ]);
        q.extend_pairs(extra);
        format!("/t/alpha/oauth/authorize?{}", q.finish())
    }

    /// Opens the login page; its form cookie and the form's hidden fields.
    async fn open(&self, extra: &[(&str, &str)]) -> (String, Vec<(String, String)>) {
        let (st, headers, body) = page(&self.c, Method::GET, &self.authorize_path(REDIRECT, extra), &[], "").await;
        assert_eq!(st, 200, "{body}");
        let cookie = headers["set-cookie"].to_str().expect("cookie").split(';').next().expect("pair").to_owned();
        (cookie, hidden_fields(&body))
    }

    /// Posts a step of the login page (as the page's own origin would).
    async fn post(
        &self,
        cookie: &str,
        hidden: &[(String, String)],
        fields: &[(&str, &str)],
    ) -> (u16, http::HeaderMap, String) {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        let given = |name: &str| fields.iter().any(|(k, _)| *k == name);
        form.extend_pairs(hidden.iter().filter(|(k, _)| !given(k)).map(|(k, v)| (k.as_str(), v.as_str())));
        form.extend_pairs(fields);
        let headers = [
            ("content-type", "application/x-www-form-urlencoded"),
            ("cookie", cookie),
            ("sec-fetch-site", "same-origin"),
        ];
        page(&self.c, Method::POST, "/t/alpha/oauth/authorize", &headers, &form.finish()).await
    }

    async fn run_client(&self, email: &str, password: &str, totp_secret: Option<&str>) -> Value {
        let python = std::env::var("STRONGROOM_BROWSER_PYTHON")
            .unwrap_or_else(|_| format!("{}/../target/browser-venv/bin/python", env!("CARGO_MANIFEST_DIR")));
        assert!(
            std::path::Path::new(&python).exists(),
            "no Authlib environment at {python}: run `bash deploy/browser.sh` (deploy/test.sh does)"
        );
        let task = json!({
            "gateway": self.c.gateway_url(),
            "ca": self.c.pki.path("ca.pem"),
            "tenant": "alpha",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "redirect_uri": REDIRECT,
            "post_logout_redirect_uri": AFTER_LOGOUT,
            "email": email,
            "password": password,
            "totp_secret": totp_secret,
        });
        let script = e2e::browser_tools().join("oidc_client.py");
        let limit = std::time::Duration::from_secs(300);
        e2e::run_json_tool(&python, &[script.to_str().expect("path")], &task, limit).await
    }
}

/// The hidden fields of the first form of a page.
fn hidden_fields(body: &str) -> Vec<(String, String)> {
    body.split("<input type=\"hidden\" ")
        .skip(1)
        .filter_map(|rest| {
            let name = rest.split("name=\"").nth(1)?.split('"').next()?;
            let value = rest.split("value=\"").nth(1)?.split('"').next()?;
            Some((name.to_owned(), unescape(value)))
        })
        .collect()
}

/// HTML's character references as the pages' escaping writes them (named or numeric).
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let Some(end) = rest[at..].find(';') else { break };
        let entity = &rest[at + 1..at + end];
        let named = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity.strip_prefix('#').and_then(|n| n.parse::<u32>().ok()).and_then(char::from_u32),
        };
        out.push(named.expect("a known character reference"));
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
    out
}

/// The text of the element with `id` (its first text, unescaped).
fn text_of(body: &str, id: &str) -> String {
    let after = body.split(&format!("id=\"{id}\"")).nth(1).unwrap_or_default();
    unescape(after.split('>').nth(1).unwrap_or_default().split('<').next().unwrap_or_default())
}

fn query_of(location: &str) -> std::collections::HashMap<String, String> {
    url::Url::parse(location).expect("location").query_pairs().into_owned().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn authlib_signs_in_through_the_hosted_page_in_chromium() {
    let f = Fx::new().await;
    f.user("pat@alpha.example", &[]).await;
    let report = f.run_client("pat@alpha.example", PASSWORD, None).await;
    assert_eq!(report["issuer"], format!("{}/t/alpha", kit::testing::TEST_ISSUER), "{report}");
    assert_eq!(report["userinfo"]["email"], "pat@alpha.example", "{report}");
    assert_eq!(report["id_token"]["amr"], json!(["pwd"]), "{report}");
    assert_eq!(report["logged_out"], true);
    assert_eq!(report["machine"]["scope"], "users.read", "{report}");

    // A user with TOTP: the browser passes the second step too, and the ID token says so.
    let member = "totp@alpha.example";
    let (id, secret) = f.totp_user(member).await;
    let report = f.run_client(member, PASSWORD, Some(&secret)).await;
    assert_eq!(report["id_token"]["amr"], json!(["pwd", "otp"]), "{report}");
    assert_eq!(report["titles"], json!(["Sign in", "Second factor"]), "{report}");
    assert_eq!(report["userinfo"]["sub"], id.as_str());
    f.c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hosted_page_refuses_what_it_must_and_walks_every_step() {
    let f = Fx::new().await;

    // The discovery document names the tenant's issuer and what is implemented.
    let (st, _, doc) = f.c.gateway_get("/t/alpha/.well-known/openid-configuration", &[]).await.expect("discovery");
    assert_eq!(st, 200);
    assert_eq!(doc["issuer"], format!("{}/t/alpha", kit::testing::TEST_ISSUER));
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    assert!(doc["authorization_endpoint"].as_str().expect("endpoint").ends_with("/t/alpha/oauth/authorize"));

    // A single-page app on its own origin may call the relying-party endpoints (CORS, no
    // credentials), and nothing else.
    let spa = [
        ("origin", "https://spa.example"),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "content-type"),
    ];
    let (st, headers, _) = page(&f.c, Method::OPTIONS, "/t/alpha/oauth/token", &spa, "").await;
    assert_eq!(st, 200);
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert!(headers.get("access-control-allow-credentials").is_none());
    let (_, headers, _) = page(&f.c, Method::GET, "/t/alpha/.well-known/openid-configuration", &spa[..1], "").await;
    assert_eq!(headers["access-control-allow-origin"], "*");
    let (_, headers, _) = page(&f.c, Method::GET, "/v1/users", &spa[..1], "").await;
    assert!(headers.get("access-control-allow-origin").is_none(), "the API itself is not shared");

    // An unregistered redirect URI (exact match: a longer path is another URI) is never sent to.
    for bad in ["http://127.0.0.1:48123/cb/evil", "https://attacker.example/cb"] {
        let (st, headers, body) = page(&f.c, Method::GET, &f.authorize_path(bad, &[]), &[], "").await;
        assert_eq!(st, 400, "{body}");
        assert!(headers.get("location").is_none());
        assert!(body.contains("redirect_uri is not registered"), "{body}");
    }
    // Any other fault goes back to the client, with its state and the issuer.
    let (st, headers, _) = page(
        &f.c,
        Method::GET,
        &f.authorize_path(REDIRECT, &[("code_challenge_method", "plain")]).replace("code_challenge_method=S256&", ""),
        &[],
        "",
    )
    .await;
    assert_eq!(st, 303);
    let q = query_of(headers["location"].to_str().expect("location"));
    assert_eq!((q["error"].as_str(), q["state"].as_str()), ("invalid_request", "s-123"), "{q:?}");
    assert_eq!(q["iss"], format!("{}/t/alpha", kit::testing::TEST_ISSUER));
    let (st, headers, _) = page(&f.c, Method::GET, &f.authorize_path(REDIRECT, &[("prompt", "none")]), &[], "").await;
    assert_eq!(st, 303);
    assert_eq!(query_of(headers["location"].to_str().expect("location"))["error"], "login_required");

    // The page: no script, styles only from the gateway, forms only to itself and the client.
    let (st, headers, body) = page(&f.c, Method::GET, &f.authorize_path(REDIRECT, &[]), &[], "").await;
    assert_eq!(st, 200);
    let csp = headers["content-security-policy"].to_str().expect("csp");
    assert!(csp.starts_with("default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self';"), "{csp}");
    assert!(
        csp.contains("form-action 'self' http://127.0.0.1:48123;") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(body.matches("<script").count(), 1, "one script, the gateway's own file: {body}");
    assert!(body.contains("<script src=\"/oauth/assets/hosted.js\" defer>") && !body.contains("style="), "{body}");
    assert!(body.contains("<label for=\"email\">") && body.contains("Partner Portal"), "{body}");
    assert!(body.contains("see your email address"), "the consent list: {body}");

    // Another site sends its users here: a cross-site navigation is welcome, a cross-site post is not.
    let navigation =
        [("sec-fetch-site", "cross-site"), ("sec-fetch-mode", "navigate"), ("origin", "https://spa.example")];
    let (st, _, body) = page(&f.c, Method::GET, &f.authorize_path(REDIRECT, &[]), &navigation, "").await;
    assert_eq!(st, 200, "{body}");

    // A form from another site, or without the page's token, is refused before anything is read.
    let (cookie, hidden) = f.open(&[]).await;
    let creds = [("step", "password"), ("action", "allow"), ("email", "owner@alpha.example"), ("password", "x")];
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.extend_pairs(hidden.iter().filter(|(k, _)| k != "step").map(|(k, v)| (k.as_str(), v.as_str())));
    form.extend_pairs(creds);
    let form = form.finish();
    let cross = [
        ("content-type", "application/x-www-form-urlencoded"),
        ("cookie", cookie.as_str()),
        ("sec-fetch-site", "cross-site"),
    ];
    let (st, _, _) = page(&f.c, Method::POST, "/t/alpha/oauth/authorize", &cross, &form).await;
    assert_eq!(st, 403);
    let (other_cookie, _) = f.open(&[]).await;
    let (st, _, _) = f.post(&other_cookie, &hidden, &creds).await;
    assert_eq!(st, 403, "a token bound to another page's cookie");

    // A wrong password is shown on the page.
    let (st, _, body) = f.post(&cookie, &hidden, &creds).await;
    assert_eq!(st, 401);
    assert_eq!(text_of(&body, "error"), "The email address or the password is wrong.");

    // A member signs in: the browser goes back with a code, the state and the issuer.
    let member = f.user("sam@alpha.example", &[]).await;
    let ok = [("step", "password"), ("action", "allow"), ("email", "sam@alpha.example"), ("password", PASSWORD)];
    let (st, headers, body) = f.post(&cookie, &hidden, &ok).await;
    assert_eq!(st, 303, "{body}");
    let q = query_of(headers["location"].to_str().expect("location"));
    assert!(q["code"].len() >= 43 && q["state"] == "s-123", "{q:?}");
    // Cancel: access_denied.
    let cancel = [("step", "password"), ("action", "cancel")];
    let (st, headers, _) = f.post(&cookie, &hidden, &cancel).await;
    assert_eq!(st, 303);
    assert_eq!(query_of(headers["location"].to_str().expect("location"))["error"], "access_denied");

    // A suspended user learns the reason and may appeal.
    let path = format!("/v1/users/{member}/suspend");
    let (st, e) = call(&f.c, &f.owner, Method::POST, &path, json!({ "reason": "chargeback review" })).await;
    assert_eq!(st, 200, "{e}");
    let (st, _, body) = f.post(&cookie, &hidden, &ok).await;
    assert_eq!(st, 403);
    assert_eq!(text_of(&body, "suspension-reason"), "chargeback review");
    let appeal = [
        ("step", "appeal"),
        ("action", "allow"),
        ("email", "sam@alpha.example"),
        ("password", PASSWORD),
        ("statement", "It was my card."),
    ];
    let (st, _, body) = f.post(&cookie, &hidden, &appeal).await;
    assert_eq!(st, 200, "{body}");
    assert!(text_of(&body, "notice").starts_with("Your appeal was sent"), "{body}");
    let (st, appeals) = call(&f.c, &f.owner, Method::GET, "/v1/appeals", Value::Null).await;
    assert_eq!(st, 200, "{appeals}");
    assert_eq!(appeals["appeals"].as_array().expect("appeals").len(), 1, "{appeals}");

    // An admin whose role requires a second factor enrols on the page, gets backup codes, and
    // goes on to the client.
    let admin = "ada@alpha.example";
    f.user(admin, &["admin"]).await;
    let enrol = [("step", "password"), ("action", "allow"), ("email", admin), ("password", PASSWORD)];
    let (st, headers, body) = f.post(&cookie, &hidden, &enrol).await;
    assert_eq!(st, 200, "{body}");
    let enrol_cookie = headers["set-cookie"].to_str().expect("cookie").split(';').next().expect("pair").to_owned();
    let secret = text_of(&body, "totp-secret");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let seed = totp_rs::Secret::Encoded(secret.clone()).to_bytes().expect("base32");
    let code =
        totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 1, 30, seed, None, "x".into()).expect("totp").generate(now);
    let hidden_enrol = hidden_fields(&body);
    let both = format!("{cookie}; {enrol_cookie}");
    let (st, _, body) = f.post(&both, &hidden_enrol, &[("action", "allow"), ("code", "000000")]).await;
    assert_eq!(st, 401, "a wrong code: {body}");
    assert_eq!(text_of(&body, "totp-secret"), secret, "the same secret again");
    let (st, headers, body) = f.post(&both, &hidden_enrol, &[("action", "allow"), ("code", &code)]).await;
    assert_eq!(st, 200, "{body}");
    assert!(body.matches("<li><code>").count() == 10, "ten backup codes: {body}");
    let next = body.split("id=\"continue\"").next().expect("link").rsplit("href=\"").next().expect("href");
    let q = query_of(&unescape(next.split('"').next().expect("href")));
    assert!(q.contains_key("code") && q["state"] == "s-123", "{q:?}");
    assert!(headers["set-cookie"].to_str().expect("cookie").contains("Max-Age=0"), "the enrolment cookie is cleared");

    // UserInfo without a token, and RP-initiated logout without an ID token hint: refused.
    let (st, headers, _) = page(&f.c, Method::GET, "/t/alpha/oauth/userinfo", &[], "").await;
    assert_eq!(st, 401);
    assert_eq!(headers["www-authenticate"], "Bearer error=\"invalid_token\"");
    let (st, _, body) = page(
        &f.c,
        Method::GET,
        "/t/alpha/oauth/logout?post_logout_redirect_uri=http%3A%2F%2F127.0.0.1%3A48123%2Fbye",
        &[],
        "",
    )
    .await;
    assert_eq!(st, 400, "{body}");
    f.c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_machine_client_acts_for_itself_with_the_permissions_it_was_given() {
    let f = Fx::new().await;
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{}:{}", f.client_id, f.client_secret)
        )
    );
    let token = |form: &'static str| {
        let basic = basic.clone();
        let c = &f.c;
        async move {
            let headers = [("content-type", "application/x-www-form-urlencoded"), ("authorization", basic.as_str())];
            let (st, h, body) = c
                .gateway_request(Method::POST, "/t/alpha/oauth/token", &headers, form.as_bytes().to_vec())
                .await
                .expect("token");
            (st.as_u16(), h, body)
        }
    };
    let (st, headers, t) = token("grant_type=client_credentials").await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(
        (t["scope"].as_str(), t.get("refresh_token"), t.get("id_token")),
        (Some("users.read"), None, None),
        "{t}"
    );
    let access = t["access_token"].as_str().expect("token").to_owned();
    let claims = e2e::jwt_part(&access, 1);
    assert_eq!(claims["sub"], format!("oauth_client/{}", f.client_id));
    assert_eq!(claims["client_id"], f.client_id.as_str());
    assert!(claims.get("sid").is_none(), "no session: {claims}");

    // It may do what it was given, and nothing else; it is nobody's session.
    let (st, users) = call(&f.c, &access, Method::GET, "/v1/users", Value::Null).await;
    assert_eq!(st, 200, "{users}");
    let body = json!({ "email": "x@alpha.example", "password": PASSWORD });
    let (st, e) = call(&f.c, &access, Method::POST, "/v1/users", body).await;
    assert_eq!((st, e["error"]["reason"].as_str()), (403, Some("MISSING_PERMISSION")), "{e}");
    let (st, e) = call(&f.c, &access, Method::GET, "/v1/me", Value::Null).await;
    assert!((400..500).contains(&st), "{st} {e}");

    // A permission it was not given, in `scope`: invalid_scope, audited.
    let (st, _, e) = token("grant_type=client_credentials&scope=users.write").await;
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_scope")), "{e}");
    // Introspection knows the client's own token.
    let form = format!("token={access}");
    let headers = [("content-type", "application/x-www-form-urlencoded"), ("authorization", basic.as_str())];
    let (st, _, i) =
        f.c.gateway_request(Method::POST, "/t/alpha/oauth/introspect", &headers, form.into_bytes())
            .await
            .expect("introspect");
    assert_eq!(st.as_u16(), 200);
    assert_eq!(
        (i["active"].as_bool(), i["sub"].as_str()),
        (Some(true), Some(format!("oauth_client/{}", f.client_id).as_str())),
        "{i}"
    );

    // A client registered with a permission nobody has, or a public one with the grant: refused.
    let refused = |body: Value| call(&f.c, &f.owner, Method::POST, "/v1/oauth/clients", body);
    let (st, e) = refused(json!({
        "kind": "confidential", "name": "Robot", "grant_types": ["client_credentials"], "permissions": ["no.such.permission"]
    }))
    .await;
    assert_eq!(st, 400, "{e}");
    let (st, e) = refused(json!({ "kind": "public", "name": "Robot", "grant_types": ["client_credentials"] })).await;
    assert_eq!(st, 400, "{e}");
    // A machine-only client needs no redirect URI or scope.
    let (st, robot) = refused(json!({
        "kind": "confidential", "name": "Robot", "grant_types": ["client_credentials"], "permissions": ["users.read"]
    }))
    .await;
    assert_eq!(st, 200, "{robot}");
    f.c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_spa_with_oidc_client_ts_on_its_own_origin_signs_in_renews_and_signs_out() {
    let f = Fx::new().await;
    let sub = f.user("ivy@alpha.example", &[]).await;
    let tools = e2e::browser_tools();
    let read = |path: &str| std::fs::read(tools.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let index = read("spa/index.html");
    let files: e2e::ServedFiles = Default::default();
    {
        let mut f = files.write().expect("files");
        f.insert("/".to_owned(), ("text/html; charset=utf-8", index.clone()));
        f.insert("/callback".to_owned(), ("text/html; charset=utf-8", index));
        f.insert("/app.js".to_owned(), ("text/javascript", read("spa/app.js")));
        let bundle = read("node_modules/oidc-client-ts/dist/browser/oidc-client-ts.min.js");
        f.insert("/oidc-client-ts.min.js".to_owned(), ("text/javascript", bundle));
    }
    // The app's origin is its address; its client is registered once it listens.
    let origin = format!("http://{}", e2e::serve_files(files.clone()).await);
    let body = json!({
        "kind": "public",
        "name": "Ivy's SPA",
        "redirect_uris": [format!("{origin}/callback")],
        "post_logout_redirect_uris": [format!("{origin}/")],
        "allowed_scopes": ["openid", "email", "profile", "offline_access"],
        "grant_types": ["authorization_code", "refresh_token"],
        "first_party": true
    });
    let (st, client) = call(&f.c, &f.owner, Method::POST, "/v1/oauth/clients", body).await;
    assert_eq!(st, 200, "{client}");
    // The exact discovery URL docs/identity.md gives: the gateway, then /t/<slug>.
    let config = json!({
        "authority": format!("{}/t/alpha", f.c.gateway_url().replace("127.0.0.1", "localhost")),
        "client_id": client["client"]["id"],
    });
    let script = format!("window.config = {config};").into_bytes();
    files.write().expect("files").insert("/config.js".to_owned(), ("text/javascript", script));

    let driver = tools.join("spa.mjs");
    let task = json!({ "app": origin, "email": "ivy@alpha.example", "password": PASSWORD });
    let r =
        e2e::run_json_tool("node", &[driver.to_str().expect("path")], &task, std::time::Duration::from_secs(180)).await;
    let signed_in = &r["signed_in"];
    assert_eq!(
        (signed_in["sub"].as_str(), signed_in["email"].as_str()),
        (Some(sub.as_str()), Some("ivy@alpha.example")),
        "{r}"
    );
    assert_eq!(signed_in["has_refresh_token"], true, "{r}");
    assert_eq!(r["renewed"]["sub"], sub.as_str(), "{r}");
    assert_ne!(r["renewed"]["access_token"], signed_in["access_token"], "a new access token: {r}");
    assert!(r["signed_out_at"].as_str().is_some_and(|u| u.starts_with(&format!("{origin}/"))), "{r}");
    // The renewed session was revoked by the app: its access token is refused once the revocation
    // reached the verifiers (within a second of Redis taking it).
    let token = r["renewed"]["access_token"].as_str().expect("token");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (st, e) = call(&f.c, token, Method::GET, "/v1/me", Value::Null).await;
        if st == 401 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the revoked session's token still works: {st} {e}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    f.c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hosted_pages_pass_an_automated_accessibility_check() {
    let f = Fx::new().await;
    f.totp_user("tia@alpha.example").await;
    f.user("ada@alpha.example", &["admin"]).await;
    let base = f.c.gateway_url();
    let task = json!({
        "authorize_url": format!("{base}{}", f.authorize_path(REDIRECT, &[])),
        "error_url": format!("{base}{}", f.authorize_path("https://attacker.example/cb", &[])),
        "totp_user": { "email": "tia@alpha.example", "password": PASSWORD },
        "enrolling_user": { "email": "ada@alpha.example", "password": PASSWORD },
    });
    let driver = e2e::browser_tools().join("a11y.mjs");
    let r =
        e2e::run_json_tool("node", &[driver.to_str().expect("path")], &task, std::time::Duration::from_secs(180)).await;
    for (page, title) in [
        ("sign_in", "Sign in"),
        ("error", "This sign-in request cannot be used"),
        ("second_factor", "Second factor"),
        ("enrolment", "Set up a second factor"),
    ] {
        assert_eq!(r[page]["title"], title, "{page}: {r}");
        assert_eq!(r[page]["violations"], json!([]), "{page}: serious accessibility violations: {}", r[page]);
        assert!(r[page]["passes"].as_u64().unwrap_or(0) > 5, "{page}: axe ran: {}", r[page]);
    }
    f.c.stop().await;
}
