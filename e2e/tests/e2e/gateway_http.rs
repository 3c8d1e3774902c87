//! The gateway's HTTP surface: security headers, one JSON error shape, body limits, request ids,
//! readiness that follows the upstreams, and an OpenAPI document that matches the routes.

use e2e::Constellation;

fn assert_security_headers(headers: &http::HeaderMap) {
    assert!(headers["strict-transport-security"].to_str().expect("hsts").contains("max-age="));
    assert!(headers["content-security-policy"].to_str().expect("csp").contains("default-src 'none'"));
    assert!(headers["content-security-policy"].to_str().expect("csp").contains("frame-ancestors 'none'"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
}

fn assert_error(body: &serde_json::Value, code: &str, reason: &str) {
    let e = &body["error"];
    assert_eq!(e["code"], code, "{body}");
    assert_eq!(e["reason"], reason, "{body}");
    assert!(e["message"].is_string() && e["request_id"].is_string(), "{body}");
}

#[tokio::test]
async fn errors_headers_limits_and_request_ids() {
    let c = Constellation::start(true).await;
    let (status, headers, body) = c.gateway_get("/healthz", &[]).await.expect("healthz");
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    assert_security_headers(&headers);

    let (status, headers, body) = c.gateway_get("/v1/nope", &[]).await.expect("404");
    assert_eq!(status, 404);
    assert_error(&body, "NOT_FOUND", "ROUTE_NOT_FOUND");
    assert_security_headers(&headers);

    let (status, _, body) = c.gateway_request(http::Method::DELETE, "/readyz", &[], Vec::new()).await.expect("405");
    assert_eq!(status, 405);
    assert_error(&body, "INVALID_ARGUMENT", "METHOD_NOT_ALLOWED");

    // (A route that needs no token: elsewhere a body without a credential is refused first, 401.)
    let big = vec![b'x'; 65 * 1024];
    let (status, _, body) = c
        .gateway_request(http::Method::POST, "/v1/auth/login", &[("content-type", "application/json")], big)
        .await
        .expect("413");
    assert_eq!(status, 413);
    assert_error(&body, "OUT_OF_RANGE", "BODY_TOO_LARGE");

    // An over-limit body sent chunked (no Content-Length to refuse it by) gets the same JSON 413
    // from a route that reads it, every time, and not a connection reset while still writing.
    for attempt in 0..5 {
        let chunks = vec![vec![b'x'; 16 * 1024]; 56];
        let (status, _, body) = c
            .gateway_request_chunked(
                http::Method::POST,
                "/v1/auth/login",
                &[("content-type", "application/json")],
                chunks,
            )
            .await
            .unwrap_or_else(|e| panic!("attempt {attempt}: the 413 arrives: {e}"));
        assert_eq!(status, 413, "{body}");
        assert_error(&body, "OUT_OF_RANGE", "BODY_TOO_LARGE");
    }
    // A chunked body within the limit reaches its handler whole: a login with a wrong password.
    let login = br#"{"tenant":"nosuchtenant","email":"a@example.com","password":"wrong password 123"}"#;
    let chunks: Vec<Vec<u8>> = login.chunks(7).map(<[u8]>::to_vec).collect();
    let (status, _, body) = c
        .gateway_request_chunked(http::Method::POST, "/v1/auth/login", &[("content-type", "application/json")], chunks)
        .await
        .expect("login");
    assert_eq!(status, 401, "{body}");

    let (_, headers, _) = c.gateway_get("/healthz", &[("x-request-id", "trace-me-42")]).await.expect("id");
    assert_eq!(headers["x-request-id"], "trace-me-42");
    let (_, headers, _) = c.gateway_get("/healthz", &[("x-request-id", "<script>")]).await.expect("id");
    assert_ne!(headers["x-request-id"], "<script>");
    let (_, _, body) =
        c.gateway_get("/v1/whoami", &[("x-request-id", "req-7"), ("x-strongroom-tenant", "acme")]).await.expect("401");
    assert_eq!(body["error"]["request_id"], "req-7");
    c.stop().await;
}

#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let c = Constellation::start(true).await;
    let (status, _, doc) = c.gateway_get("/openapi.json", &[]).await.expect("openapi");
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc, gateway::openapi_document());
    for (method, path) in gateway::openapi::operations() {
        let method = http::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let (status, _, body) = c.gateway_request(method, &path, &[], Vec::new()).await.expect("request");
        assert!(status != 404 && status != 405, "{path}: {status} {body}");
        assert!(doc["paths"][&path].is_object());
    }
    c.stop().await;
}

#[tokio::test]
async fn readiness_follows_the_upstreams() {
    let mut c = Constellation::start(true).await;
    let (status, _, body) = c.gateway_get("/readyz", &[]).await.expect("readyz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["upstreams"]["ledger"], "serving");
    let ledger = c.services.remove("ledger").expect("ledger");
    ledger.stop().await.expect("stop");
    // Readiness is recomputed at most once a second.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let (status, body) = loop {
        let (status, _, body) = c.gateway_get("/readyz", &[]).await.expect("readyz");
        if status == 503 || tokio::time::Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["upstreams"]["ledger"], "unreachable");
    assert_eq!(body["upstreams"]["vault"], "serving");
    c.stop().await;
}

/// A client that starts a request and sends its headers slowly (slowloris) is cut off after
/// `http.header_read_timeout_ms`, instead of holding its connection for ever.
#[tokio::test]
async fn a_client_that_never_finishes_its_headers_or_idles_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = Constellation::start(false).await;
    c.start_gateway_with(|cfg| cfg.http.header_read_timeout_ms = 1_000).await;
    let ca = std::fs::read(c.pki.path("ca.pem")).expect("ca");
    let cfg = kit::tls::ca_only_client_config(&ca, &[b"http/1.1"]).expect("tls");
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(c.gateway.as_ref().expect("gateway").grpc).await.expect("connect");
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg.clone())).connect(name, tcp).await.expect("tls")
    };
    // Everything the server sends until it closes the connection, or None if it is still open
    // after 20 s.
    let until_closed = |mut tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>| async move {
        let mut buf = [0u8; 1024];
        tokio::time::timeout(std::time::Duration::from_secs(20), async {
            let mut text = String::new();
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return text,
                    Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
        })
        .await
        .ok()
    };
    let mut tls = connect().await;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n").await.expect("part of the head");
    let answer = until_closed(tls).await.expect("the connection is still open 20 s after the unfinished head");
    // hyper answers 408 or just closes; either way, nothing was served.
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    // A keep-alive connection left idle after its answer is closed too.
    let mut tls = connect().await;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.expect("a whole request");
    let answer = until_closed(tls).await.expect("the idle keep-alive connection is still open after 20 s");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    c.stop().await;
}

/// Security review item 17: the gateway buffered up to 16 MiB of a body, and introspected any
/// well-formed `srk_` key (never remembering a failure), before it knew who was calling.
#[tokio::test]
async fn an_unauthenticated_caller_costs_no_body_read_and_no_repeated_introspection() {
    let c = Constellation::start(true).await;
    c.create_tenant("alpha").await;
    let ca = std::fs::read(c.pki.path("ca.pem")).expect("ca");
    let cfg = kit::tls::ca_only_client_config(&ca, &[b"http/1.1"]).expect("tls");
    // A body that never ends: the answer must come without reading it.
    let first = futures::stream::iter([Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
        hyper::body::Bytes::from(vec![b'['; 64 * 1024]),
    ))]);
    let endless = http_body_util::StreamBody::new(futures::StreamExt::chain(first, futures::stream::pending()));
    let url = format!("{}/v1/ledger/transfers", c.gateway_url());
    let headers = [("content-type", "application/json"), ("x-strongroom-tenant", "alpha")];
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        kit::tls::https_request_with(cfg, http::Method::POST, &url, &headers, endless),
    )
    .await
    .expect("answered before the body ended")
    .expect("request");
    let body: serde_json::Value = serde_json::from_slice(&answer.2).expect("json");
    assert_eq!(answer.0, 401, "{body}");
    assert_error(&body, "UNAUTHENTICATED", "TOKEN_REQUIRED");

    // A well-formed key auth-svc does not know is asked about once, not at every request.
    let bogus = format!("Bearer {}", kit::apikey::generate().expect("rng"));
    let introspections = || async {
        e2e::scrape_metrics(c.services["auth"].admin)
            .await
            .lines()
            .filter(|l| {
                l.starts_with("rpc_server_call_duration_seconds_count{")
                    && l.contains("rpc_method=\"IntrospectApiKey\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    let before = introspections().await;
    for _ in 0..20 {
        let (status, _, body) = c
            .gateway_get("/v1/secrets", &[("authorization", &bogus), ("x-strongroom-tenant", "alpha")])
            .await
            .expect("request");
        assert_eq!(status, 401, "{body}");
        assert_error(&body, "UNAUTHENTICATED", "UNKNOWN_API_KEY");
    }
    let asked = introspections().await - before;
    assert!(asked <= 1, "20 requests with one unknown key asked auth-svc {asked} times");
    c.stop().await;
}
