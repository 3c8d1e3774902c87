//! The dashboards against a real Prometheus: `strongroom dev up --observability` from nothing,
//! some load through the gateway (a sign-in, state-changing requests, refused sign-ins), and then
//! every panel query of every dashboard in `deploy/grafana/dashboards/` must answer something. A
//! panel that matches nothing is a panel on a metric, label or value no process emits. Runs the
//! binaries built by `cargo build --workspace --bins`; talks to 127.0.0.1 only.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::Method;
use serde_json::{Value, json};

/// Every process `dev up` starts and Prometheus scrapes.
const TARGETS: [&str; 5] = ["auth-svc", "vault-svc", "audit-svc", "ledger-svc", "gateway"];

fn pid_alive(pid: i64) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// A running `strongroom dev up --observability`; stopped (and waited for) when dropped, so a
/// failing assertion leaves no process behind either.
struct ObservedDevUp {
    dir: tempfile::TempDir,
    child: Child,
}

impl ObservedDevUp {
    /// Starts it from nothing (no database, Redis or Strongroom settings of ours) and waits for
    /// `ready`.
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let mut cmd = Command::new(e2e::binary("strongroom"));
        cmd.args(["dev", "up", "--observability", "--dir"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars() {
            if key.starts_with("STRONGROOM_") || key == "DATABASE_URL" || key == "REDIS_URL" {
                cmd.env_remove(key);
            }
        }
        let mut child = cmd.spawn().expect("spawn strongroom dev up");
        let stdout = child.stdout.take().expect("stdout");
        let mut dev = Self { dir, child };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(240);
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(line) if line == "ready" => return dev,
                Ok(line) => seen.push(line),
                Err(_) => {
                    if let Some(status) = dev.child.try_wait().expect("wait") {
                        let mut err = String::new();
                        let _ = std::io::Read::read_to_string(&mut dev.child.stderr.take().expect("stderr"), &mut err);
                        panic!("dev up exited early ({status}): {err} {seen:?}");
                    }
                    assert!(Instant::now() < deadline, "no `ready` after 240 s: {seen:?}");
                }
            }
        }
    }

    fn json(&self, name: &str) -> Value {
        let path = self.dir.path().join(name);
        serde_json::from_str(&std::fs::read_to_string(&path).expect(name)).expect("json")
    }

    /// SIGTERM, then up to 60 s for dev up to stop everything it started; its exit status.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for ObservedDevUp {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// The gateway of a dev up, over TLS under its CA.
struct Gateway {
    url: String,
    tls: rustls::ClientConfig,
}

impl Gateway {
    fn of(endpoints: &Value) -> Self {
        let ca = std::fs::read(endpoints["ca"].as_str().expect("ca")).expect("ca file");
        let url = endpoints["gateway"].as_str().expect("gateway").to_owned();
        assert!(url.starts_with("https://127.0.0.1:"), "{url}");
        Self { url, tls: kit::tls::ca_only_client_config(&ca, &[b"http/1.1"]).expect("tls") }
    }

    /// One JSON request; its status and JSON answer (`null` when empty).
    async fn call(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Value) -> (u16, Value) {
        let mut h = headers.to_vec();
        let bytes = if body.is_null() { Vec::new() } else { serde_json::to_vec(&body).expect("json") };
        if !bytes.is_empty() {
            h.push(("content-type", "application/json"));
        }
        let url = format!("{}{path}", self.url);
        let (status, _, answer) =
            kit::tls::https_request(self.tls.clone(), method, &url, &h, bytes).await.expect("gateway request");
        (status.as_u16(), serde_json::from_slice(&answer).unwrap_or(Value::Null))
    }
}

fn totp_now(secret_b32: &str) -> String {
    let seed = totp_rs::Secret::Encoded(secret_b32.to_owned()).to_bytes().expect("base32");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 1, 30, seed, None, "x".into()).expect("totp").generate(now)
}

/// What a first morning looks like: the demo owner signs in, enrols TOTP, takes a full session,
/// writes secrets, opens a ledger and moves money; someone else guesses a password twice.
async fn drive_load(gateway: &Gateway, owner: &Value) {
    let (tenant, email, password) = (
        owner["tenant"].as_str().expect("tenant"),
        owner["email"].as_str().expect("email"),
        owner["password"].as_str().expect("password"),
    );
    for guess in ["wrong-password-1", "wrong-password-2"] {
        let (s, e) = gateway
            .call(Method::POST, "/v1/auth/login", &[], json!({ "tenant": tenant, "email": email, "password": guess }))
            .await;
        assert_eq!(s, 401, "{e}");
    }
    let (s, t) = gateway
        .call(Method::POST, "/v1/auth/login", &[], json!({ "tenant": tenant, "email": email, "password": password }))
        .await;
    assert_eq!(s, 200, "{t}");
    let bearer = format!("Bearer {}", t["access_token"].as_str().expect("token"));
    let auth = [("authorization", bearer.as_str()), ("x-strongroom-tenant", tenant)];
    let (s, e) = gateway.call(Method::POST, "/v1/me/mfa/totp", &auth, Value::Null).await;
    assert_eq!(s, 200, "{e}");
    let code = totp_now(e["secret"].as_str().expect("secret"));
    let (s, b) = gateway.call(Method::POST, "/v1/me/mfa/totp/confirm", &auth, json!({ "code": code })).await;
    assert_eq!(s, 200, "{b}");
    let (s, full) =
        gateway.call(Method::POST, "/v1/auth/refresh", &[], json!({ "refresh_token": t["refresh_token"] })).await;
    assert_eq!(s, 200, "{full}");
    let bearer = format!("Bearer {}", full["access_token"].as_str().expect("token"));
    let auth = [("authorization", bearer.as_str()), ("x-strongroom-tenant", tenant)];
    for (i, path) in ["/v1/secrets/app/db-password", "/v1/secrets/app/api-token"].iter().enumerate() {
        let (s, w) = gateway.call(Method::PUT, path, &auth, json!({ "value": format!("value-{i}") })).await;
        assert_eq!(s, 200, "{path}: {w}");
    }
    let ledger_auth = [auth[0], auth[1], ("x-request-id", "observability-ledger-usd")];
    let (s, l) =
        gateway.call(Method::POST, "/v1/ledger/ledgers", &ledger_auth, json!({ "code": "USD", "scale": 2 })).await;
    assert_eq!(s, 200, "{l}");
    // Two accounts and a transfer between them: a committed batch for the ledger's panels.
    let mut accounts = Vec::new();
    for _ in 0..2 {
        let (s, a) =
            gateway.call(Method::POST, "/v1/ledger/accounts", &auth, json!({ "ledger": "USD", "code": 1 })).await;
        assert_eq!(s, 200, "{a}");
        accounts.push(a["id"].as_str().expect("account id").to_owned());
    }
    let transfer = json!({ "id": uuid::Uuid::new_v4(), "debit_account_id": accounts[0], "credit_account_id": accounts[1],
                           "amount": "1000", "ledger": "USD", "code": 1 });
    let (s, t) = gateway.call(Method::POST, "/v1/ledger/transfers", &auth, transfer).await;
    assert_eq!(s, 200, "{t}");
}

/// Percent-encodes a query parameter's value (everything but RFC 3986's unreserved characters).
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET path` on Prometheus's HTTP API (HTTP/1.0: the whole answer, then the connection closes).
async fn prometheus_get(addr: SocketAddr, path: &str) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("prometheus");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: prometheus\r\n\r\n").as_bytes()).await.expect("write");
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.expect("read");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {path}: {e}: {answer}"))
}

/// Waits until Prometheus scrapes every process and the last scrape of each succeeded.
async fn wait_all_targets_up(prometheus: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let targets = prometheus_get(prometheus, "/api/v1/targets?state=active").await;
        let active = targets["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
        let up: Vec<&str> =
            active.iter().filter(|t| t["health"] == "up").filter_map(|t| t["labels"]["instance"].as_str()).collect();
        if TARGETS.iter().all(|t| up.contains(t)) {
            return;
        }
        assert!(Instant::now() < deadline, "targets not all up after 60 s: {active:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One panel query of a dashboard.
#[derive(Debug)]
struct PanelQuery {
    dashboard: String,
    title: String,
    expr: String,
}

/// Grafana's variables made concrete: `$__rate_interval` 1m, `$__interval` 15s, and every template
/// variable (`$x`, `${x}`) its "All" value `.*`.
fn substitute_variables(expr: &str) -> String {
    let expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "15s");
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr.as_str();
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let name_len = if let Some(braced) = after.strip_prefix('{') {
            braced.find('}').map_or(0, |end| end + 2)
        } else {
            after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len())
        };
        if name_len == 0 {
            out.push('$');
        } else {
            out.push_str(".*");
        }
        rest = &after[name_len..];
    }
    out.push_str(rest);
    out
}

fn collect_panels(dashboard: &str, panels: &[Value], into: &mut Vec<PanelQuery>) {
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                into.push(PanelQuery {
                    dashboard: dashboard.to_owned(),
                    title: title.to_owned(),
                    expr: substitute_variables(expr),
                });
            }
        }
        collect_panels(dashboard, panel["panels"].as_array().map_or(&[], Vec::as_slice), into);
    }
}

/// Every target `expr` of every panel (rows' panels included) of every dashboard.
fn dashboard_queries(dir: &Path) -> Vec<PanelQuery> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("dashboards")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut queries = Vec::new();
    for file in &files {
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(file).expect("read")).expect("dashboard json");
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        collect_panels(&name, doc["panels"].as_array().map_or(&[], Vec::as_slice), &mut queries);
    }
    queries
}

/// Queries every panel until each answers a non-empty result, or until the deadline; returns the
/// panels still empty, each with Prometheus's last answer. A query Prometheus refuses (a syntax
/// error) is not asked again.
async fn empty_panels(
    prometheus: SocketAddr,
    mut pending: Vec<PanelQuery>,
    within: Duration,
) -> Vec<(PanelQuery, Value)> {
    let deadline = Instant::now() + within;
    let mut refused = Vec::new();
    loop {
        let mut still = Vec::new();
        for panel in pending {
            let answer =
                prometheus_get(prometheus, &format!("/api/v1/query?query={}", percent_encode(&panel.expr))).await;
            let answered =
                answer["status"] == "success" && answer["data"]["result"].as_array().is_some_and(|r| !r.is_empty());
            if answer["status"] == "error" {
                refused.push((panel, answer));
            } else if !answered {
                still.push((panel, answer));
            }
        }
        if still.is_empty() || Instant::now() > deadline {
            refused.extend(still);
            return refused;
        }
        pending = still.into_iter().map(|(panel, _)| panel).collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn every_dashboard_panel_answers_from_a_real_prometheus() {
    let started = Instant::now();
    let mut dev = ObservedDevUp::start();
    let endpoints = dev.json("endpoints.json");
    let prometheus: SocketAddr = endpoints["prometheus"]
        .as_str()
        .and_then(|u| u.strip_prefix("http://"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no prometheus in endpoints.json: {endpoints}"));
    assert!(prometheus.ip().is_loopback(), "{prometheus}");

    drive_load(&Gateway::of(&endpoints), &dev.json("demo-owner.json")).await;
    wait_all_targets_up(prometheus).await;

    let dashboards = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/dashboards");
    let queries = dashboard_queries(&dashboards);
    assert!(queries.len() >= 3, "dashboards hold panel queries: {}", dashboards.display());
    let total = queries.len();
    // audit-svc's per-tenant jobs (pipeline signals, integrity passes) publish their first series
    // only once the tenant's log has been sequenced, up to a minute after start on a loaded host:
    // the panels get up to three minutes to answer (the wait ends as soon as every panel does).
    let empty = empty_panels(prometheus, queries, Duration::from_secs(180)).await;
    let report: Vec<String> =
        empty.iter().map(|(p, answer)| format!("{} / {}: {}\n    -> {answer}", p.dashboard, p.title, p.expr)).collect();
    assert!(report.is_empty(), "{} of {total} panel queries answered nothing:\n{}", report.len(), report.join("\n"));

    let state = dev.json("dev-state.json");
    let mut pids: Vec<i64> = state["pids"].as_array().expect("pids").iter().filter_map(|p| p["pid"].as_i64()).collect();
    pids.extend(state["redis_pid"].as_i64());
    assert!(state["pids"].as_array().expect("pids").iter().any(|p| p["name"] == "prometheus"), "{state}");
    let status = dev.stop().expect("dev up did not stop within 60 s");
    assert!(status.success(), "{status}");
    for pid in pids {
        assert!(!pid_alive(pid), "process {pid} left behind");
    }
    eprintln!("{total} panel queries answered; {:.1} s in all", started.elapsed().as_secs_f64());
}
