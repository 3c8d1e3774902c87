//! Access-token attacks against a service (auth-svc's WhoAmI) and the gateway: forged, `none`,
//! HMAC-confused, expired, mis-addressed, unknown-key and cross-tenant tokens all fail.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use e2e::{Constellation, reason};
use kit::testing::TestSigner;
use proto::auth::v1::WhoAmIRequest;
use proto::auth::v1::identity_service_client::IdentityServiceClient;

async fn who_am_i(
    c: &Constellation,
    tenant: &str,
    token: &str,
) -> Result<proto::auth::v1::WhoAmIResponse, tonic::Status> {
    let mut client = IdentityServiceClient::new(c.channel_as("gateway", "auth"));
    let req = kit::client::with_context(tonic::Request::new(WhoAmIRequest {}), Some(tenant), None, Some(token));
    client.who_am_i(req).await.map(tonic::Response::into_inner)
}

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
}

async fn assert_refused(c: &Constellation, token: &str, expected_reason: &str) {
    let err = who_am_i(c, "alpha", token).await.expect_err(expected_reason);
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{expected_reason}: {err:?}");
    assert_eq!(reason(&err), expected_reason);
}

#[tokio::test]
async fn forged_and_misaddressed_tokens_are_refused() {
    let c = Constellation::start(true).await;
    let alpha = c.create_tenant("alpha").await;
    let bravo = c.create_tenant("bravo").await;
    let signer = TestSigner::generate();
    signer.publish(&c.db.admin_pool().await).await;

    // The genuine token works.
    let good = signer.sign(&TestSigner::claims(alpha, "user-1"));
    let me = who_am_i(&c, "alpha", &good).await.expect("valid token");
    assert_eq!(me.subject, "user-1");
    assert_eq!(me.tenant_id, alpha.to_string());

    // alg=none, unsigned.
    let none = format!(
        "{}.{}.",
        b64(&serde_json::json!({ "alg": "none", "typ": "at+jwt", "kid": signer.kid })),
        b64(&TestSigner::claims(alpha, "user-1"))
    );
    assert_refused(&c, &none, "MALFORMED_TOKEN").await;

    // HS256 "signed" with the public key as the HMAC secret (algorithm confusion).
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(signer.kid.clone());
    header.typ = Some("at+jwt".into());
    let hs = jsonwebtoken::encode(
        &header,
        &TestSigner::claims(alpha, "user-1"),
        &jsonwebtoken::EncodingKey::from_secret(signer.public_x.as_bytes()),
    )
    .expect("hs256");
    assert_refused(&c, &hs, "ALGORITHM_NOT_ALLOWED").await;

    // Expired, not yet valid, wrong audience, wrong issuer.
    let mut claims = TestSigner::claims(alpha, "user-1");
    claims["exp"] = serde_json::json!(chrono::Utc::now().timestamp() - 3600);
    assert_refused(&c, &signer.sign(&claims), "TOKEN_EXPIRED").await;
    let mut claims = TestSigner::claims(alpha, "user-1");
    claims["nbf"] = serde_json::json!(chrono::Utc::now().timestamp() + 3600);
    assert_refused(&c, &signer.sign(&claims), "TOKEN_NOT_YET_VALID").await;
    let mut claims = TestSigner::claims(alpha, "user-1");
    claims["aud"] = serde_json::json!("somebody-else");
    assert_refused(&c, &signer.sign(&claims), "WRONG_AUDIENCE").await;
    let mut claims = TestSigner::claims(alpha, "user-1");
    claims["iss"] = serde_json::json!("https://evil.example");
    assert_refused(&c, &signer.sign(&claims), "WRONG_ISSUER").await;

    // A key nobody published, and a forged signature under a published kid.
    let stranger = TestSigner::generate();
    assert_refused(&c, &stranger.sign(&TestSigner::claims(alpha, "user-1")), "UNKNOWN_SIGNING_KEY").await;
    let forged = {
        let genuine = signer.sign(&TestSigner::claims(alpha, "user-1"));
        let other = stranger.sign(&TestSigner::claims(alpha, "user-1"));
        let (head, _) = genuine.rsplit_once('.').expect("jwt");
        let (_, sig) = other.rsplit_once('.').expect("jwt");
        format!("{head}.{sig}")
    };
    assert_refused(&c, &forged, "BAD_SIGNATURE").await;

    // A tampered payload under a genuine signature.
    let tampered = {
        let parts: Vec<&str> = good.split('.').collect();
        format!("{}.{}.{}", parts[0], b64(&TestSigner::claims(alpha, "admin")), parts[2])
    };
    assert_refused(&c, &tampered, "BAD_SIGNATURE").await;

    // A plain JWT (typ JWT) is not an access token.
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(signer.kid.clone());
    header.typ = Some("JWT".into());
    assert!(
        who_am_i(
            &c,
            "alpha",
            &good.replace(&good[..good.find('.').expect("dot")], &b64(&serde_json::to_value(&header).expect("h")))
        )
        .await
        .is_err()
    );

    // Tenant A's genuine token against tenant B.
    let err = who_am_i(&c, "bravo", &good).await.expect_err("cross-tenant");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert_eq!(reason(&err), "TENANT_MISMATCH");

    // A tenant-bound key cannot sign another tenant's tokens.
    let bound = TestSigner::generate();
    bound.publish(&c.db.admin_pool().await).await;
    sqlx::query("UPDATE control.signing_keys SET tenant_id = $1 WHERE kid = $2")
        .bind(bravo)
        .bind(&bound.kid)
        .execute(&c.db.admin_pool().await)
        .await
        .expect("bind key");
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_refused(&c, &bound.sign(&TestSigner::claims(alpha, "user-1")), "KEY_TENANT_MISMATCH").await;
    who_am_i(&c, "bravo", &bound.sign(&TestSigner::claims(bravo, "user-9"))).await.expect("own tenant");

    // A token holder cannot tell unknown tenants from foreign ones.
    let err = who_am_i(&c, "nosuchtenant", &good).await.expect_err("unknown tenant");
    assert_eq!(reason(&err), "TENANT_MISMATCH");

    // A suspended tenant's tokens stop working.
    let charlie = c.create_tenant("charlie").await;
    sqlx::query("UPDATE control.tenants SET status = 'suspended' WHERE id = $1")
        .bind(charlie)
        .execute(&c.db.admin_pool().await)
        .await
        .expect("suspend");
    let err =
        who_am_i(&c, "charlie", &signer.sign(&TestSigner::claims(charlie, "user-3"))).await.expect_err("suspended");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert_eq!(reason(&err), "TENANT_SUSPENDED");

    // A key published after the verifier cached the JWKS is found (refresh on unknown kid).
    let next = TestSigner::generate();
    next.publish(&c.db.admin_pool().await).await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    who_am_i(&c, "alpha", &next.sign(&TestSigner::claims(alpha, "user-2"))).await.expect("rotated key accepted");
    c.stop().await;
}

#[tokio::test]
async fn the_gateway_authenticates_before_forwarding() {
    let c = Constellation::start(true).await;
    let alpha = c.create_tenant("alpha").await;
    c.create_tenant("bravo").await;
    let signer = TestSigner::generate();
    signer.publish(&c.db.admin_pool().await).await;
    let good = signer.sign(&TestSigner::claims(alpha, "user-1"));
    let bearer = format!("Bearer {good}");

    let (status, headers, body) = c
        .gateway_get("/v1/whoami", &[("x-strongroom-tenant", "alpha"), ("authorization", &bearer)])
        .await
        .expect("request");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["subject"], "user-1");
    assert!(headers.contains_key("x-request-id"));

    let (status, headers, body) =
        c.gateway_get("/v1/whoami", &[("x-strongroom-tenant", "alpha")]).await.expect("request");
    assert_eq!(status, 401);
    assert_eq!(body["error"]["reason"], "TOKEN_REQUIRED");
    assert_eq!(headers["www-authenticate"], "Bearer");

    let expired = {
        let mut claims = TestSigner::claims(alpha, "user-1");
        claims["exp"] = serde_json::json!(chrono::Utc::now().timestamp() - 3600);
        format!("Bearer {}", signer.sign(&claims))
    };
    let (status, _, body) = c
        .gateway_get("/v1/whoami", &[("x-strongroom-tenant", "alpha"), ("authorization", &expired)])
        .await
        .expect("request");
    assert_eq!(status, 401);
    assert_eq!(body["error"]["reason"], "TOKEN_EXPIRED");
    assert_eq!(body["error"]["code"], "UNAUTHENTICATED");
    assert!(body["error"]["request_id"].is_string());

    let (status, _, body) = c
        .gateway_get("/v1/whoami", &[("x-strongroom-tenant", "bravo"), ("authorization", &bearer)])
        .await
        .expect("request");
    assert_eq!(status, 403);
    assert_eq!(body["error"]["reason"], "TENANT_MISMATCH");

    let (status, _, body) = c
        .gateway_get("/v1/whoami", &[("x-strongroom-tenant", "a; drop schema control"), ("authorization", &bearer)])
        .await
        .expect("request");
    assert_eq!(status, 400);
    assert_eq!(body["error"]["reason"], "INVALID_FIELD");

    let (status, _, body) = c
        .gateway_get("/v1/whoami", &[("x-strongroom-tenant", "alpha"), ("authorization", "Basic dXNlcjpwYXNz")])
        .await
        .expect("request");
    assert_eq!(status, 401);
    assert_eq!(body["error"]["reason"], "MALFORMED_AUTHORIZATION");
    c.stop().await;
}
