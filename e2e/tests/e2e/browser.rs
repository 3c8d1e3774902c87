//! The gateway's browser security and rate limits over real TLS, against the real services,
//! real PostgreSQL and real Redis: cookie sessions and their CSRF defence, attacked; 429s with
//! `Retry-After`; the in-process limiter when Redis is unreachable.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use e2e::Constellation;
use gateway::ratelimit::{ClassLimits, Limit};
use hmac::{Hmac, Mac};
use kit::testing::TestSigner;

const SESSION: &str = "__Host-strongroom_session";
const CSRF: &str = "__Host-strongroom_csrf";

/// A CSRF token as docs/security.md specifies it, computed here independently of the gateway.
fn csrf_token(key: &[u8], sid: &str) -> String {
    let nonce: [u8; 16] = *uuid::Uuid::new_v4().as_bytes();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("key");
    mac.update(b"strongroom.csrf.v1\0");
    mac.update(sid.as_bytes());
    mac.update(&nonce);
    let tag = mac.finalize().into_bytes();
    format!("{}.{}.{}", URL_SAFE_NO_PAD.encode(sid), URL_SAFE_NO_PAD.encode(nonce), URL_SAFE_NO_PAD.encode(tag))
}

fn assert_refused(status: http::StatusCode, body: &serde_json::Value, reason: &str) {
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "PERMISSION_DENIED", "{body}");
    assert_eq!(body["error"]["reason"], reason, "{body}");
}

struct Browser<'a> {
    c: &'a Constellation,
    session: String,
    csrf: String,
}

impl Browser<'_> {
    /// A request as a browser page would send it; `extra` may override the defaults.
    async fn send(
        &self,
        method: http::Method,
        path: &str,
        csrf_header: Option<&str>,
        extra: &[(&str, &str)],
    ) -> (http::StatusCode, http::HeaderMap, serde_json::Value) {
        let cookies = format!("{SESSION}={}; {CSRF}={}", self.session, self.csrf);
        let mut headers: Vec<(&str, &str)> = vec![("x-strongroom-tenant", "alpha"), ("cookie", &cookies)];
        if !extra.iter().any(|(k, _)| *k == "sec-fetch-site" || *k == "no-sec-fetch-site") {
            headers.push(("sec-fetch-site", "same-origin"));
        }
        headers.extend(extra.iter().filter(|(k, _)| *k != "no-sec-fetch-site"));
        if let Some(t) = csrf_header {
            headers.push(("x-csrf-token", t));
        }
        let body = if method == http::Method::PUT {
            headers.push(("content-type", "application/json"));
            serde_json::to_vec(&serde_json::json!({ "value": "IB-123" })).expect("json")
        } else {
            Vec::new()
        };
        self.c.gateway_request(method, path, &headers, body).await.expect("request")
    }
}

#[tokio::test]
async fn cookie_sessions_need_a_csrf_token_bound_to_their_session() {
    let mut c = Constellation::start(false).await;
    let key_b64 = gateway::browser::generate_csrf_key().expect("key");
    let key = STANDARD.decode(&key_b64).expect("b64");
    c.start_gateway_with(|cfg| cfg.browser.csrf_key = Some(key_b64.clone().into())).await;
    let alpha = c.create_tenant("alpha").await;
    let signer = TestSigner::generate();
    signer.publish(&c.db.admin_pool().await).await;
    let mut claims = TestSigner::claims(alpha, "alice");
    claims["permissions"] = serde_json::json!(["vault.secrets.read", "vault.secrets.write"]);
    let sid = claims["sid"].as_str().expect("sid").to_owned();
    let session = signer.sign(&claims);
    let good = csrf_token(&key, &sid);
    let b = Browser { c: &c, session: session.clone(), csrf: good.clone() };
    let put = http::Method::PUT;
    let path = "/v1/secrets/brokers/ib";

    // No token, a wrong one, one of another key, one bound to another session: refused, and the
    // handler never ran (nothing written).
    let (status, _, body) = b.send(put.clone(), path, None, &[]).await;
    assert_refused(status, &body, "CSRF_TOKEN_INVALID");
    let (status, _, body) = b.send(put.clone(), path, Some("not-the-cookie"), &[]).await;
    assert_refused(status, &body, "CSRF_TOKEN_INVALID");
    let foreign_key = csrf_token(&[9u8; 32], &sid);
    let forged = Browser { c: &c, session: session.clone(), csrf: foreign_key.clone() };
    let (status, _, body) = forged.send(put.clone(), path, Some(&foreign_key), &[]).await;
    assert_refused(status, &body, "CSRF_TOKEN_INVALID");
    let other_session = csrf_token(&key, &uuid::Uuid::new_v4().to_string());
    let stolen = Browser { c: &c, session: session.clone(), csrf: other_session.clone() };
    let (status, _, body) = stolen.send(put.clone(), path, Some(&other_session), &[]).await;
    assert_refused(status, &body, "CSRF_TOKEN_INVALID");

    // The right token from another site: refused by Sec-Fetch-Site, or by Origin when a browser
    // sends no Sec-Fetch-Site, or when it sends neither.
    for site in ["cross-site", "same-site"] {
        let (status, _, body) = b.send(put.clone(), path, Some(&good), &[("sec-fetch-site", site)]).await;
        assert_refused(status, &body, "CROSS_SITE_REQUEST");
    }
    let no_fetch_site = ("no-sec-fetch-site", "");
    let (status, _, body) =
        b.send(put.clone(), path, Some(&good), &[no_fetch_site, ("origin", "https://evil.example")]).await;
    assert_refused(status, &body, "CROSS_SITE_REQUEST");
    let (status, _, body) = b.send(put.clone(), path, Some(&good), &[no_fetch_site]).await;
    assert_refused(status, &body, "CROSS_SITE_REQUEST");
    let (status, _, body) = b.send(http::Method::GET, path, None, &[]).await;
    assert_eq!(status, 404, "nothing was written by a refused request: {body}");

    // The right token from the page's own origin reaches the handler, which writes.
    let (status, _, body) = b.send(put.clone(), path, Some(&good), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 1);
    let origin = c.gateway_url();
    let (status, _, body) = b.send(put.clone(), path, Some(&good), &[no_fetch_site, ("origin", &origin)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 2);

    // Safe methods need no CSRF token; the cookie authenticates them.
    let (status, _, body) = b.send(http::Method::GET, path, None, &[("sec-fetch-site", "cross-site")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["current_version"], 2);

    // Bearer requests are not affected, even with cookies of someone else beside them.
    let bearer = format!("Bearer {session}");
    let (status, _, body) = b.send(put.clone(), path, None, &[("authorization", &bearer)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 3);

    // A forged session cookie is refused by the handler's verification (the CSRF check does not
    // vouch for the token).
    let mut forged_claims = claims.clone();
    forged_claims["permissions"] =
        serde_json::json!(["vault.secrets.read", "vault.secrets.write", "vault.secrets.destroy"]);
    let other_signer = TestSigner::generate();
    let forged = Browser { c: &c, session: other_signer.sign(&forged_claims), csrf: good.clone() };
    let (status, _, body) = forged.send(put.clone(), path, Some(&good), &[]).await;
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = forged.send(http::Method::GET, path, None, &[]).await;
    assert_eq!(status, 401, "{body}");

    // Login needs no CSRF token, but a browser's login must come from an allowed origin.
    let login =
        serde_json::to_vec(&serde_json::json!({ "tenant": "alpha", "email": "a@b.c", "password": "x" })).expect("json");
    let json = ("content-type", "application/json");
    for headers in [vec![json, ("sec-fetch-site", "cross-site")], vec![json, ("origin", "https://evil.example")]] {
        let (status, _, body) =
            c.gateway_request(http::Method::POST, "/v1/auth/login", &headers, login.clone()).await.expect("login");
        assert_refused(status, &body, "CROSS_SITE_REQUEST");
    }
    c.stop().await;
}

fn only_reads(limit: Limit, per_principal: bool) -> impl FnOnce(&mut gateway::GatewayConfig) {
    move |cfg| {
        cfg.rate_limits.read = if per_principal {
            ClassLimits { per_ip: None, per_principal: Some(limit) }
        } else {
            ClassLimits { per_ip: Some(limit), per_principal: None }
        };
    }
}

async fn assert_limited(c: &Constellation, headers: &[(&str, &str)], allowed: usize, retry_after: u64) {
    for i in 0..allowed {
        let (status, _, body) = c.gateway_get("/v1/whoami", headers).await.expect("request");
        assert_ne!(status, 429, "request {i}: {body}");
    }
    let (status, h, body) = c.gateway_get("/v1/whoami", headers).await.expect("request");
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "RESOURCE_EXHAUSTED", "{body}");
    assert_eq!(body["error"]["reason"], "RATE_LIMITED", "{body}");
    assert!(body["error"]["request_id"].is_string());
    let wait: u64 = h["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=retry_after).contains(&wait), "retry-after {wait}");
    assert_eq!(h["cache-control"], "no-store", "security headers on a 429 too");
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let mut c = Constellation::start(false).await;
    // Three at once, then one every 20 s.
    c.start_gateway_with(only_reads(Limit { requests: 3, period_secs: 60, burst: Some(3) }, false)).await;
    assert_limited(&c, &[], 3, 20).await;
    // Probes are never limited.
    for _ in 0..5 {
        let (status, _, _) = c.gateway_get("/healthz", &[]).await.expect("healthz");
        assert_eq!(status, 200);
    }
    c.stop().await;
}

#[tokio::test]
async fn principals_have_buckets_of_their_own() {
    let mut c = Constellation::start(false).await;
    c.start_gateway_with(only_reads(Limit { requests: 2, period_secs: 3600, burst: Some(2) }, true)).await;
    let alpha = c.create_tenant("alpha").await;
    let signer = TestSigner::generate();
    signer.publish(&c.db.admin_pool().await).await;
    let alice = format!("Bearer {}", signer.sign(&TestSigner::claims(alpha, "alice")));
    let bob = format!("Bearer {}", signer.sign(&TestSigner::claims(alpha, "bob")));
    let tenant = ("x-strongroom-tenant", "alpha");
    assert_limited(&c, &[tenant, ("authorization", &alice)], 2, 1800).await;
    // Same IP, another principal: its own bucket.
    let (status, _, body) = c.gateway_get("/v1/whoami", &[tenant, ("authorization", &bob)]).await.expect("bob");
    assert_ne!(status, 429, "{body}");
    // A forged token naming alice cannot drain or use her bucket: it is limited by IP only (none
    // configured here) and refused.
    let mut forged = TestSigner::claims(alpha, "bob");
    forged["sub"] = serde_json::json!("carol");
    let forged = format!("Bearer {}", TestSigner::generate().sign(&forged));
    for _ in 0..3 {
        let (status, _, body) = c.gateway_get("/v1/whoami", &[tenant, ("authorization", &forged)]).await.expect("x");
        assert_eq!(status, 401, "{body}");
    }
    c.stop().await;
}

fn fallback_count(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with("strongroom_events_total{event=\"rate_limit_fallback\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn without_redis_the_in_process_limiter_still_limits() {
    let mut c = Constellation::start(false).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("redis://{}", closed.local_addr().expect("addr"));
    drop(closed);
    c.start_gateway_with(|cfg| {
        cfg.redis.url = url.into();
        only_reads(Limit { requests: 3, period_secs: 60, burst: Some(3) }, false)(cfg);
    })
    .await;
    let admin = c.gateway.as_ref().expect("gateway").admin;
    let before = fallback_count(&e2e::scrape_metrics(admin).await);
    assert_limited(&c, &[], 3, 20).await;
    let after = fallback_count(&e2e::scrape_metrics(admin).await);
    assert!(after >= before + 4, "fallback decisions counted: {before} -> {after}");
    let (_, _, ready) = c.gateway_get("/readyz", &[]).await.expect("readyz");
    assert_eq!(ready["redis"], "unavailable", "{ready}");
    c.stop().await;
}

#[tokio::test]
async fn forwarded_for_counts_only_behind_a_trusted_proxy() {
    let limit = Limit { requests: 2, period_secs: 3600, burst: Some(2) };
    // Not trusted: a client cannot escape its bucket by writing X-Forwarded-For.
    let mut c = Constellation::start(false).await;
    c.start_gateway_with(only_reads(limit, false)).await;
    for (i, spoof) in ["203.0.113.1", "203.0.113.2"].iter().enumerate() {
        let (status, _, body) = c.gateway_get("/v1/whoami", &[("x-forwarded-for", spoof)]).await.expect("request");
        assert_ne!(status, 429, "request {i}: {body}");
    }
    let (status, _, _) = c.gateway_get("/v1/whoami", &[("x-forwarded-for", "203.0.113.3")]).await.expect("request");
    assert_eq!(status, 429, "the TCP peer is the client");

    // Behind a trusted proxy (the test's loopback peer), each forwarded client has its own bucket:
    // the right-most address that is not a trusted proxy. (A new gateway: new buckets.)
    c.gateway.take().expect("gateway").stop().await.expect("stop");
    c.start_gateway_with(|cfg| {
        only_reads(limit, false)(cfg);
        cfg.rate_limits.trusted_proxies = vec!["127.0.0.0/8".parse().expect("cidr")];
    })
    .await;
    let alice = [("x-forwarded-for", "6.6.6.6, 198.51.100.7, 127.0.0.2")];
    assert_limited(&c, &alice, 2, 1800).await;
    let (status, _, body) = c.gateway_get("/v1/whoami", &[("x-forwarded-for", "198.51.100.8")]).await.expect("bob");
    assert_ne!(status, 429, "another forwarded client: {body}");
    let (status, _, _) = c.gateway_get("/v1/whoami", &[("x-forwarded-for", "1.1.1.1, 198.51.100.7")]).await.expect("x");
    assert_eq!(status, 429, "a spoofed left part does not change the client");
    c.stop().await;
}
