//! The OAuth authorization-code flow with PKCE, server side (`OAuthService`), over real gRPC: a
//! signed-in user gets a code for a registered client, the client exchanges it with its verifier
//! for a new session's tokens and an ID token that verifies against the JWKS with another JOSE
//! library. Then the attacks: an unregistered redirect URI (exact match), `plain` or missing PKCE,
//! a wrong verifier, a replayed code (which ends what its first use opened), a code of another
//! client, a wrong or unexpected client secret, a scope not allowed, no consent for a third-party
//! client, another tenant's user: each refused and audited. And the gateway's token endpoint
//! (`/t/<slug>/oauth/token`, RFC 6749 form posts and errors) in front of the exchange.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use e2e::Constellation;
use kit::testing::TestSigner;
use proto::auth::v1 as pb;
use serde_json::json;
use sha2::Digest;

const PASSWORD: &str = "correct horse battery staple";

fn req<T>(tenant: &str, token: Option<&str>, msg: T) -> tonic::Request<T> {
    kit::client::with_context(tonic::Request::new(msg), Some(tenant), None, token)
}

fn pkce() -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
        + &URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes());
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

struct Fx {
    c: Constellation,
    admin: String,
    alpha: uuid::Uuid,
    user: String,
    user_token: String,
    spa: String,
    backend: String,
    backend_secret: String,
}

impl Fx {
    async fn new() -> Self {
        let _ = kit::telemetry::init("e2e", &kit::config::TelemetryConfig { otlp_endpoint: None, log: "error".into() });
        let c = Constellation::start(true).await;
        let alpha = c.create_tenant("alpha").await;
        c.create_tenant("beta").await;
        let signer = TestSigner::generate();
        signer.publish(&c.db.admin_pool().await).await;
        let mut claims = TestSigner::claims(alpha, &uuid::Uuid::now_v7().to_string());
        claims["permissions"] = json!(["users.write", "oauth.clients.write", "oauth.clients.read"]);
        let admin = signer.sign(&claims);
        let auth = c.channel_as("gateway", "auth");
        let user = pb::user_service_client::UserServiceClient::new(auth.clone())
            .create_user(req(
                "alpha",
                Some(&admin),
                pb::CreateUserRequest {
                    email: "reader@alpha.example".into(),
                    display_name: "Reader".into(),
                    password: PASSWORD.into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("user")
            .into_inner()
            .id;
        let mut clients = pb::o_auth_client_service_client::OAuthClientServiceClient::new(auth.clone());
        let settings = |name: &str, uri: &str, first_party: bool| pb::ClientSettings {
            name: name.into(),
            redirect_uris: vec![uri.into()],
            post_logout_redirect_uris: Vec::new(),
            allowed_scopes: vec!["openid".into(), "email".into(), "offline_access".into()],
            grant_types: vec!["authorization_code".into(), "refresh_token".into()],
            first_party,
            permissions: Vec::new(),
        };
        let spa = clients
            .create_client(req(
                "alpha",
                Some(&admin),
                pb::CreateClientRequest {
                    kind: pb::ClientKind::Public.into(),
                    settings: Some(settings("Console", "https://app.alpha.example/cb", true)),
                },
            ))
            .await
            .expect("spa")
            .into_inner();
        let backend = clients
            .create_client(req(
                "alpha",
                Some(&admin),
                pb::CreateClientRequest {
                    kind: pb::ClientKind::Confidential.into(),
                    settings: Some(settings("Partner", "https://partner.example/oauth/cb", false)),
                },
            ))
            .await
            .expect("backend")
            .into_inner();
        let fx = Self {
            admin,
            user_token: String::new(),
            alpha,
            user,
            spa: spa.client.expect("client").id,
            backend: backend.client.expect("client").id,
            backend_secret: backend.client_secret,
            c,
        };
        let user_token = fx.login().await.access_token;
        Self { user_token, ..fx }
    }

    async fn login(&self) -> pb::Tokens {
        let msg = pb::LoginRequest {
            tenant: "alpha".into(),
            email: "reader@alpha.example".into(),
            password: PASSWORD.into(),
            client: Some(pb::ClientInfo { ip: "203.0.113.7".into(), user_agent: "e2e".into() }),
        };
        let answer =
            pb::authentication_service_client::AuthenticationServiceClient::new(self.c.channel_as("gateway", "auth"))
                .login(req("alpha", None, msg))
                .await
                .expect("login")
                .into_inner();
        match answer.result {
            Some(pb::login_response::Result::Tokens(t)) => t,
            other => panic!("expected tokens, got {other:?}"),
        }
    }

    fn flow(&self) -> pb::o_auth_service_client::OAuthServiceClient<kit::client::Channel> {
        pb::o_auth_service_client::OAuthServiceClient::new(self.c.channel_as("gateway", "auth"))
    }

    fn authorization(&self, client: &str, redirect: &str, challenge: &str) -> pb::AuthorizeRequest {
        pb::AuthorizeRequest {
            client_id: client.into(),
            redirect_uri: redirect.into(),
            response_type: "code".into(),
            scope: "openid email offline_access".into(),
            state: "af0ifjsldkj".into(),
            nonce: "n-0S6_WzA2Mj".into(),
            code_challenge: challenge.into(),
            code_challenge_method: "S256".into(),
            consent_given: false,
        }
    }

    async fn authorize(&self, msg: pb::AuthorizeRequest) -> Result<pb::AuthorizeResponse, tonic::Status> {
        self.flow().authorize(req("alpha", Some(&self.user_token), msg)).await.map(tonic::Response::into_inner)
    }

    async fn exchange(
        &self,
        client: &str,
        secret: &str,
        code: &str,
        redirect: &str,
        verifier: &str,
    ) -> Result<pb::OAuthTokens, tonic::Status> {
        let msg = pb::ExchangeCodeRequest {
            client_id: client.into(),
            client_secret: secret.into(),
            code: code.into(),
            redirect_uri: redirect.into(),
            code_verifier: verifier.into(),
        };
        self.flow().exchange_code(req("alpha", None, msg)).await.map(tonic::Response::into_inner)
    }

    async fn refresh(&self, refresh_token: &str) -> Result<pb::Tokens, tonic::Status> {
        let msg = pb::RefreshRequest { refresh_token: refresh_token.into(), ..Default::default() };
        pb::authentication_service_client::AuthenticationServiceClient::new(self.c.channel_as("gateway", "auth"))
            .refresh(req("alpha", None, msg))
            .await
            .map(tonic::Response::into_inner)
    }
}

const SPA_CB: &str = "https://app.alpha.example/cb";

#[tokio::test(flavor = "multi_thread")]
async fn a_code_with_pkce_becomes_tokens_and_a_verifiable_id_token_once() {
    let f = Fx::new().await;
    let (verifier, challenge) = pkce();
    let granted = f.authorize(f.authorization(&f.spa, SPA_CB, &challenge)).await.expect("authorize");
    let redirect = url::Url::parse(&granted.redirect_to).expect("redirect");
    assert_eq!(&redirect.as_str()[..SPA_CB.len()], SPA_CB);
    let query: std::collections::HashMap<String, String> = redirect.query_pairs().into_owned().collect();
    assert_eq!(query["code"], granted.code);
    assert_eq!(query["state"], "af0ifjsldkj");
    assert!(query["iss"].ends_with("/t/alpha"), "{query:?}");

    let tokens = f.exchange(&f.spa, "", &granted.code, SPA_CB, &verifier).await.expect("exchange");
    assert_eq!(tokens.token_type, "Bearer");
    assert_eq!(tokens.scope, "email offline_access openid");
    assert!(!tokens.refresh_token.is_empty(), "offline_access gives a refresh token");
    // The ID token verifies with the published key (another JOSE library) and says who, for whom.
    let jwks = pb::keys_service_client::KeysServiceClient::new(f.c.channel_as("gateway", "auth"))
        .get_jwks(pb::GetJwksRequest {})
        .await
        .expect("jwks")
        .into_inner();
    let header = e2e::jwt_part(&tokens.id_token, 0);
    let jwk = jwks.keys.iter().find(|k| k.kid == header["kid"]).expect("kid published");
    assert_eq!(jwk.tenant_id, f.alpha.to_string());
    let as_jwk = json!({ "kty": jwk.kty, "crv": jwk.crv, "x": jwk.x, "kid": jwk.kid, "alg": jwk.alg });
    let claims = e2e::verify_typed_with_jwk(&tokens.id_token, &as_jwk, "JWT").expect("id token verifies");
    assert_eq!(claims["aud"], f.spa.as_str());
    assert_eq!(claims["azp"], f.spa.as_str());
    assert_eq!(claims["sub"], f.user.as_str());
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(claims["iss"], query["iss"].as_str());
    // The access token is an ordinary one of a new session.
    let who = pb::identity_service_client::IdentityServiceClient::new(f.c.channel_as("ledger", "auth"))
        .who_am_i(req("alpha", Some(&tokens.access_token), pb::WhoAmIRequest {}))
        .await
        .expect("whoami")
        .into_inner();
    assert_eq!(who.subject, f.user);

    // Used twice: refused, and the session its first use opened ends (its refresh token too).
    let e = f.exchange(&f.spa, "", &granted.code, SPA_CB, &verifier).await.expect_err("replay");
    assert_eq!(e2e::reason(&e), "INVALID_GRANT");
    let e = f.refresh(&tokens.refresh_token).await.expect_err("the replayed code's session ended");
    assert!(e.code() == tonic::Code::Unauthenticated || e.code() == tonic::Code::PermissionDenied, "{e:?}");
    let admin = f.c.db.admin_pool().await;
    let replays: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM t_alpha.audit_outbox WHERE action = 'oauth.code.replay')
              + (SELECT count(*) FROM t_alpha.audit_log WHERE action = 'oauth.code.replay')",
    )
    .fetch_one(&admin)
    .await
    .expect("audit");
    assert_eq!(replays, 1);
    f.c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_attack_on_the_code_flow_is_refused_and_audited() {
    let f = Fx::new().await;
    let (verifier, challenge) = pkce();
    let refused = |r: Result<pb::AuthorizeResponse, tonic::Status>| e2e::reason(&r.expect_err("refused"));

    // The redirect URI matches exactly: not a trailing slash, not another path, not http.
    for uri in ["https://app.alpha.example/cb/", "https://app.alpha.example/cb2", "http://app.alpha.example/cb"] {
        assert_eq!(
            refused(f.authorize(f.authorization(&f.spa, uri, &challenge)).await),
            "INVALID_REDIRECT_URI",
            "{uri}"
        );
    }
    let mut plain = f.authorization(&f.spa, SPA_CB, &verifier);
    plain.code_challenge_method = "plain".into();
    assert_eq!(refused(f.authorize(plain).await), "INVALID_REQUEST");
    let mut none = f.authorization(&f.spa, SPA_CB, "");
    none.code_challenge_method = String::new();
    assert_eq!(refused(f.authorize(none).await), "INVALID_REQUEST");
    let mut scope = f.authorization(&f.spa, SPA_CB, &challenge);
    scope.scope = "openid profile".into();
    assert_eq!(refused(f.authorize(scope).await), "INVALID_SCOPE");
    let mut implicit = f.authorization(&f.spa, SPA_CB, &challenge);
    implicit.response_type = "token".into();
    assert_eq!(refused(f.authorize(implicit).await), "UNSUPPORTED_RESPONSE_TYPE");
    // A third-party client needs the user's consent.
    let partner = "https://partner.example/oauth/cb";
    assert_eq!(refused(f.authorize(f.authorization(&f.backend, partner, &challenge)).await), "CONSENT_REQUIRED");
    // Another tenant's user cannot authorize alpha's client.
    let mut beta = f.flow();
    let e = beta
        .authorize(req("beta", Some(&f.user_token), f.authorization(&f.spa, SPA_CB, &challenge)))
        .await
        .expect_err("another tenant");
    assert_eq!(e2e::reason(&e), "TENANT_MISMATCH");

    // A code for the SPA: not with another verifier, not by another client, not to another redirect.
    let code = f.authorize(f.authorization(&f.spa, SPA_CB, &challenge)).await.expect("code").code;
    let (other_verifier, _) = pkce();
    let grant = |r: Result<pb::OAuthTokens, tonic::Status>| e2e::reason(&r.expect_err("refused"));
    assert_eq!(grant(f.exchange(&f.spa, "", &code, SPA_CB, &other_verifier).await), "INVALID_GRANT");
    assert_eq!(grant(f.exchange(&f.spa, "", &code, SPA_CB, "").await), "INVALID_GRANT");
    assert_eq!(grant(f.exchange(&f.backend, &f.backend_secret, &code, SPA_CB, &verifier).await), "INVALID_GRANT");
    assert_eq!(
        grant(f.exchange(&f.spa, "", &code, "https://app.alpha.example/other", &verifier).await),
        "INVALID_GRANT"
    );
    // Client authentication: a public client has no secret; a confidential one needs its own.
    assert_eq!(grant(f.exchange(&f.spa, "made-up", &code, SPA_CB, &verifier).await), "INVALID_CLIENT");
    assert_eq!(grant(f.exchange(&f.backend, "wrong", &code, SPA_CB, &verifier).await), "INVALID_CLIENT");
    assert_eq!(grant(f.exchange(&f.backend, "", &code, SPA_CB, &verifier).await), "INVALID_CLIENT");
    // None of that used the code up: its own client, verifier and redirect still exchange it.
    f.exchange(&f.spa, "", &code, SPA_CB, &verifier).await.expect("the rightful exchange");

    // The confidential client with consent and its secret gets its tokens; without
    // offline_access no refresh token.
    let mut consented = f.authorization(&f.backend, partner, &challenge);
    consented.consent_given = true;
    consented.scope = "openid".into();
    let code = f.authorize(consented).await.expect("consented").code;
    let tokens = f.exchange(&f.backend, &f.backend_secret, &code, partner, &verifier).await.expect("exchange");
    assert!(tokens.refresh_token.is_empty() && !tokens.id_token.is_empty());

    // Each refusal is in the tenant's audit trail.
    let admin = f.c.db.admin_pool().await;
    let denied: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT action, details FROM t_alpha.audit_outbox WHERE action LIKE 'oauth.%' AND outcome = 'denied'
         UNION ALL SELECT action, details FROM t_alpha.audit_log WHERE action LIKE 'oauth.%' AND outcome = 'denied'",
    )
    .fetch_all(&admin)
    .await
    .expect("audit");
    let refusals: Vec<String> =
        denied.iter().map(|(_, d)| d["refused"].as_str().unwrap_or_default().to_owned()).collect();
    for expected in [
        "INVALID_REQUEST",
        "INVALID_SCOPE",
        "CONSENT_REQUIRED",
        "PKCE verifier mismatch",
        "code of another client",
        "redirect_uri mismatch",
        "INVALID_CLIENT",
    ] {
        assert!(refusals.iter().any(|r| r == expected), "{expected} not audited: {refusals:?}");
    }
    f.c.stop().await;
}

impl Fx {
    /// The tokens the SPA gets from the token endpoint for a fresh code (JSON).
    async fn spa_tokens(&self) -> serde_json::Value {
        let (verifier, challenge) = pkce();
        let code = self.authorize(self.authorization(&self.spa, SPA_CB, &challenge)).await.expect("code").code;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", SPA_CB),
            ("code_verifier", verifier.as_str()),
            ("client_id", self.spa.as_str()),
        ];
        let (st, _, tokens) = self.token_endpoint("alpha", &form, None).await;
        assert_eq!(st, 200, "{tokens}");
        tokens
    }

    /// A form post to the gateway's token endpoint of `tenant`; (status, headers, JSON).
    async fn token_endpoint(
        &self,
        tenant: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> (u16, http::HeaderMap, serde_json::Value) {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let authorization = basic.map(|(id, secret)| {
            let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", encode(id), encode(secret)))
            )
        });
        let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
        if let Some(value) = authorization.as_deref() {
            headers.push(("authorization", value));
        }
        let path = format!("/t/{tenant}/oauth/token");
        let (status, headers, json) =
            self.c.gateway_request(http::Method::POST, &path, &headers, body.into_bytes()).await.expect("request");
        (status.as_u16(), headers, json)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_endpoint_speaks_rfc_6749_over_the_gateway() {
    let f = Fx::new().await;
    let (verifier, challenge) = pkce();
    // A public client: client_id in the form, no secret.
    let code = f.authorize(f.authorization(&f.spa, SPA_CB, &challenge)).await.expect("code").code;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", SPA_CB),
        ("code_verifier", verifier.as_str()),
        ("client_id", f.spa.as_str()),
    ];
    let (st, headers, tokens) = f.token_endpoint("alpha", &form, None).await;
    assert_eq!(st, 200, "{tokens}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(tokens["token_type"], "Bearer");
    assert!(tokens["id_token"].is_string() && tokens["refresh_token"].is_string(), "{tokens}");
    // The same code again: invalid_grant, in RFC 6749's shape.
    let (st, _, e) = f.token_endpoint("alpha", &form, None).await;
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_grant")), "{e}");
    assert!(e["error_description"].is_string());

    // A confidential client with client_secret_basic; a wrong secret is 401 with a challenge.
    let partner = "https://partner.example/oauth/cb";
    let mut consented = f.authorization(&f.backend, partner, &challenge);
    consented.consent_given = true;
    consented.scope = "openid".into();
    let code = f.authorize(consented).await.expect("code").code;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", partner),
        ("code_verifier", verifier.as_str()),
    ];
    let (st, headers, e) = f.token_endpoint("alpha", &form, Some((&f.backend, "wrong"))).await;
    assert_eq!((st, e["error"].as_str()), (401, Some("invalid_client")), "{e}");
    assert_eq!(headers["www-authenticate"], "Basic realm=\"strongroom\"");
    // Both Basic and a secret in the form: refused, whatever they say.
    let mut both = form.to_vec();
    both.push(("client_secret", f.backend_secret.as_str()));
    let (st, _, e) = f.token_endpoint("alpha", &both, Some((&f.backend, &f.backend_secret))).await;
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_request")), "{e}");
    let (st, _, tokens) = f.token_endpoint("alpha", &form, Some((&f.backend, &f.backend_secret))).await;
    assert_eq!(st, 200, "{tokens}");
    assert!(tokens.get("refresh_token").is_none(), "no offline_access, no refresh token: {tokens}");

    // Another grant type, another body type, another tenant's issuer.
    let (st, _, e) = f.token_endpoint("alpha", &[("grant_type", "password")], None).await;
    assert_eq!((st, e["error"].as_str()), (400, Some("unsupported_grant_type")), "{e}");
    let (status, _, e) =
        f.c.gateway_request(
            http::Method::POST,
            "/t/alpha/oauth/token",
            &[("content-type", "application/json")],
            b"{}".to_vec(),
        )
        .await
        .expect("request");
    assert_eq!((status.as_u16(), e["error"].as_str()), (400, Some("invalid_request")), "{e}");
    let code = f.authorize(f.authorization(&f.spa, SPA_CB, &challenge)).await.expect("code").code;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", SPA_CB),
        ("code_verifier", verifier.as_str()),
        ("client_id", f.spa.as_str()),
    ];
    let (st, _, e) = f.token_endpoint("beta", &form, None).await;
    assert_eq!((st, e["error"].as_str()), (401, Some("invalid_client")), "alpha's client at beta's issuer: {e}");
    f.c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clients_refresh_token_is_rotated_only_for_that_client_and_dies_with_it() {
    let f = Fx::new().await;
    let (verifier, challenge) = pkce();
    let code = f.authorize(f.authorization(&f.spa, SPA_CB, &challenge)).await.expect("code").code;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", SPA_CB),
        ("code_verifier", verifier.as_str()),
        ("client_id", f.spa.as_str()),
    ];
    let (st, _, first) = f.token_endpoint("alpha", &form, None).await;
    assert_eq!(st, 200, "{first}");
    let refresh = first["refresh_token"].as_str().expect("refresh token").to_owned();

    // Not at the first-party refresh, not by another client: refused, and nothing rotated.
    let e = f.refresh(&refresh).await.expect_err("the OAuth session's token at /v1/auth/refresh");
    assert_eq!(e2e::reason(&e), "INVALID_REFRESH_TOKEN");
    let stolen = [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str())];
    let (st, _, e) = f.token_endpoint("alpha", &stolen, Some((&f.backend, &f.backend_secret))).await;
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_grant")), "{e}");

    // Its client rotates it.
    let own = [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str()), ("client_id", f.spa.as_str())];
    let (st, _, rotated) = f.token_endpoint("alpha", &own, None).await;
    assert_eq!(st, 200, "{rotated}");
    let next = rotated["refresh_token"].as_str().expect("successor").to_owned();
    assert_ne!(next, refresh);
    assert!(rotated["access_token"].is_string());

    // Deleting the client ends the session it was given.
    let mut clients =
        pb::o_auth_client_service_client::OAuthClientServiceClient::new(f.c.channel_as("gateway", "auth"));
    clients
        .delete_client(req("alpha", Some(&f.admin), pb::DeleteClientRequest { id: f.spa.clone() }))
        .await
        .expect("delete");
    let admin = f.c.db.admin_pool().await;
    let reasons: Vec<Option<String>> =
        sqlx::query_scalar("SELECT revoke_reason FROM t_alpha.sessions WHERE oauth_client_id = $1::uuid")
            .bind(&f.spa)
            .fetch_all(&admin)
            .await
            .expect("sessions");
    assert_eq!(reasons, [Some("oauth_client_deleted".to_owned())]);
    let after = [("grant_type", "refresh_token"), ("refresh_token", next.as_str()), ("client_id", f.spa.as_str())];
    let (st, _, e) = f.token_endpoint("alpha", &after, None).await;
    assert_eq!((st, e["error"].as_str()), (401, Some("invalid_client")), "{e}");
    f.c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_introspects_and_revokes_only_what_it_was_given() {
    let f = Fx::new().await;
    let tokens = f.spa_tokens().await;
    let access = tokens["access_token"].as_str().expect("access").to_owned();
    let refresh = tokens["refresh_token"].as_str().expect("refresh").to_owned();
    let post = async |path: &str, form: &[(&str, &str)], basic: Option<(&str, &str)>| {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let authorization = basic.map(|(id, secret)| {
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
        });
        let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
        if let Some(value) = authorization.as_deref() {
            headers.push(("authorization", value));
        }
        let (status, _, json) =
            f.c.gateway_request(http::Method::POST, path, &headers, body.into_bytes()).await.expect("request");
        (status.as_u16(), json)
    };
    let introspect = "/t/alpha/oauth/introspect";
    // Its client sees both tokens active, with whose they are.
    for (token, kind) in [(access.as_str(), "access_token"), (refresh.as_str(), "refresh_token")] {
        let (st, answer) = post(introspect, &[("token", token), ("client_id", f.spa.as_str())], None).await;
        assert_eq!(st, 200, "{answer}");
        assert_eq!((answer["active"].as_bool(), answer["token_type"].as_str()), (Some(true), Some(kind)), "{answer}");
        assert_eq!(answer["sub"], f.user.as_str());
        assert_eq!(answer["client_id"], f.spa.as_str());
    }
    // Another client learns nothing, and cannot revoke it; a wrong secret is invalid_client.
    let (st, answer) = post(introspect, &[("token", access.as_str())], Some((&f.backend, &f.backend_secret))).await;
    assert_eq!((st, answer), (200, json!({ "active": false })));
    let (st, _) =
        post("/t/alpha/oauth/revoke", &[("token", refresh.as_str())], Some((&f.backend, &f.backend_secret))).await;
    assert_eq!(st, 200, "answered like any revocation");
    let (st, e) = post(introspect, &[("token", access.as_str())], Some((&f.backend, "wrong"))).await;
    assert_eq!((st, e["error"].as_str()), (401, Some("invalid_client")), "{e}");
    let (st, answer) = post(introspect, &[("token", refresh.as_str()), ("client_id", f.spa.as_str())], None).await;
    assert_eq!(answer["active"], true, "{st} {answer}: another client's revocation changed nothing");
    // A first-party token is not the client's either.
    let first_party = f.login().await.access_token;
    let (_, answer) = post(introspect, &[("token", first_party.as_str()), ("client_id", f.spa.as_str())], None).await;
    assert_eq!(answer, json!({ "active": false }));

    // Its client revokes the refresh token: the session ends, both tokens are inactive.
    let (st, _) =
        post("/t/alpha/oauth/revoke", &[("token", refresh.as_str()), ("client_id", f.spa.as_str())], None).await;
    assert_eq!(st, 200);
    for token in [access.as_str(), refresh.as_str()] {
        let (_, answer) = post(introspect, &[("token", token), ("client_id", f.spa.as_str())], None).await;
        assert_eq!(answer, json!({ "active": false }));
    }
    let (st, e) = post("/t/alpha/oauth/revoke", &[("client_id", f.spa.as_str())], None).await;
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_request")), "{e}");
    f.c.stop().await;
}
