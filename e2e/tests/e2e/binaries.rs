//! The shipped binaries: bad configuration exits 64 with one line, and `strongroom dev up` brings
//! the whole constellation up from nothing and leaves nothing behind. These tests run the binaries
//! built by `cargo build --workspace --bins` (deploy/test.sh does that first).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn clean_command(name: &str) -> Command {
    let mut cmd = Command::new(e2e::binary(name));
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).stdin(Stdio::null());
    cmd
}

const VALID: &str = r#"
[grpc]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[tls]
ca = "/nonexistent/ca.pem"
cert = "/nonexistent/vault.pem"
key = "/nonexistent/vault-key.pem"
[database]
url = "postgres://strongroom_vault@127.0.0.1:5432/x"
[upstreams]
auth = "https://127.0.0.1:7101"
"#;

fn assert_bad_config(out: std::process::Output, mentions: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("bad config:"), "{stderr}");
    assert!(stderr.to_lowercase().contains(mentions), "{stderr} should mention {mentions}");
    assert!(!stderr.contains("hunter2"), "secrets never reach errors: {stderr}");
}

#[test]
fn bad_configuration_exits_64_with_one_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("vault.toml");
    std::fs::write(&file, VALID).expect("write");

    assert_bad_config(clean_command("vault-svc").output().expect("run"), "missing field");
    assert_bad_config(
        clean_command("vault-svc").args(["--config", "/nonexistent.toml"]).output().expect("run"),
        "does not exist",
    );
    assert_bad_config(
        clean_command("vault-svc").arg("--config").arg(&file).env("STRONGROOM_BOGUS", "1").output().expect("run"),
        "bogus",
    );
    assert_bad_config(
        clean_command("vault-svc")
            .arg("--config")
            .arg(&file)
            .env("STRONGROOM_UPSTREAMS__AUTH", "http://127.0.0.1:1")
            .output()
            .expect("run"),
        "upstreams.auth",
    );
    assert_bad_config(
        clean_command("vault-svc")
            .arg("--config")
            .arg(&file)
            .env("STRONGROOM_GRPC__LISTEN", "not-an-address")
            .output()
            .expect("run"),
        "listen",
    );
    // A service holds only its login role: an administrative URL in its configuration is refused
    // (migrations and provisioning are `strongroom migrate`'s and `strongroom tenant create`'s).
    assert_bad_config(
        clean_command("vault-svc")
            .arg("--config")
            .arg(&file)
            .env("STRONGROOM_DATABASE__ADMIN_URL", "postgres://postgres:hunter2@127.0.0.1:5432/x")
            .output()
            .expect("run"),
        "admin_url",
    );
    assert_bad_config(clean_command("gateway").output().expect("run"), "missing field");
    // The vault needs a master key, and a local key file is refused in production.
    assert_bad_config(clean_command("vault-svc").arg("--config").arg(&file).output().expect("run"), "service.kms");
    let local = dir.path().join("local.toml");
    std::fs::write(
        &local,
        format!("env = \"production\"\n{VALID}\n[service.kms]\nprovider = \"local\"\nkey_file = \"/tmp/x.key\"\n"),
    )
    .expect("write");
    assert_bad_config(clean_command("vault-svc").arg("--config").arg(&local).output().expect("run"), "production");
    assert_bad_config(clean_command("auth-svc").arg("--frobnicate").output().expect("run"), "unknown argument");
}

fn pid_alive(pid: i64) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// A running `strongroom dev up` and the directory it keeps its state in.
struct DevUp {
    dir: tempfile::TempDir,
    child: Child,
}

impl DevUp {
    /// Starts `strongroom dev up` from nothing (no database, no Redis, no Strongroom settings) and
    /// waits for it to print `ready`; returns it with how long that took.
    fn start_from_nothing() -> (Self, Duration) {
        Self::start_with(&[])
    }

    /// [`Self::start_from_nothing`] with more `dev up` flags.
    fn start_with(flags: &[&str]) -> (Self, Duration) {
        let dir = tempfile::tempdir().expect("tmp");
        let mut cmd = Command::new(e2e::binary("strongroom"));
        cmd.args(["dev", "up", "--dir"])
            .arg(dir.path())
            .args(flags)
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
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let started = Instant::now();
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(line) if line == "ready" => break,
                Ok(line) => seen.push(line),
                Err(_) => {
                    if let Some(status) = child.try_wait().expect("wait") {
                        let mut err = String::new();
                        let _ = std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err);
                        panic!("dev up exited early ({status}): {err} {seen:?}");
                    }
                    assert!(started.elapsed() < Duration::from_secs(240), "no `ready` after 240 s: {seen:?}");
                }
            }
        }
        (Self { dir, child }, started.elapsed())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn json(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.path(name)).expect(name)).expect("json")
    }

    /// The operator's certificates, from the PKI dev up made.
    fn operator_certs(&self) -> kit::tls::CertStore {
        let pki = self.path("pki");
        let tls = kit::config::TlsConfig {
            ca: pki.join("ca.pem"),
            cert: pki.join("operator.pem"),
            key: pki.join("operator-key.pem"),
            reload_interval_ms: 60_000,
        };
        kit::tls::CertStore::load(&tls).expect("operator certs")
    }

    /// Runs the operator CLI against this dev directory; returns its JSON answer.
    fn cli(&self, args: &[&str]) -> serde_json::Value {
        let out = Command::new(e2e::binary("strongroom"))
            .arg("--dev-dir")
            .arg(self.dir.path())
            .args(args)
            .env_remove("STRONGROOM_DATABASE__ADMIN_URL")
            .stdin(Stdio::null())
            .output()
            .expect("strongroom");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
    }
}

impl Drop for DevUp {
    /// A test that fails before it stops dev up still stops it (its cluster, Redis and services),
    /// before its directory goes.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn assert_owner_only(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", path.display());
}

/// The gateway answers `/readyz` over TLS under dev up's CA.
async fn assert_gateway_ready(endpoints: &serde_json::Value) {
    let ca = std::fs::read(endpoints["ca"].as_str().expect("ca")).expect("ca file");
    let gateway = endpoints["gateway"].as_str().expect("gateway");
    assert!(gateway.starts_with("https://127.0.0.1:"));
    let cfg = kit::tls::ca_only_client_config(&ca, &[b"http/1.1"]).expect("tls");
    let (status, _, body) =
        kit::tls::https_request(cfg, http::Method::GET, &format!("{gateway}/readyz"), &[], Vec::new())
            .await
            .expect("readyz");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

fn channel_to(certs: &kit::tls::CertStore, endpoints: &serde_json::Value, name: &str) -> kit::client::Channel {
    let url = endpoints[name].as_str().expect("url");
    kit::client::channel(certs, url, &kit::Identity::new(name).expect("id"), Duration::from_secs(10)).expect("channel")
}

/// Every service reports serving to the operator over mTLS.
async fn assert_services_serving(certs: &kit::tls::CertStore, endpoints: &serde_json::Value) {
    for name in ["auth", "vault", "audit", "ledger"] {
        kit::testing::wait_serving(channel_to(certs, endpoints, name), "", Duration::from_secs(10)).await.expect(name);
    }
}

/// The demo tenant exists; its owner's generated password is in D/demo-owner.json (0600), and it
/// logs in (to a session that must enrol a second factor first).
async fn assert_demo_owner_logs_in(dev: &DevUp, certs: &kit::tls::CertStore, endpoints: &serde_json::Value) {
    let tenant = proto::auth::v1::tenant_service_client::TenantServiceClient::new(channel_to(certs, endpoints, "auth"))
        .get_tenant(proto::auth::v1::GetTenantRequest { slug: "demo".into() })
        .await
        .expect("demo tenant");
    assert_eq!(tenant.into_inner().tenant.expect("tenant").slug, "demo");
    assert_owner_only(&dev.path("demo-owner.json"));
    let owner = dev.json("demo-owner.json");
    assert_eq!(owner["email"], "owner@demo.example");
    let login = proto::auth::v1::authentication_service_client::AuthenticationServiceClient::new(channel_to(
        certs, endpoints, "auth",
    ))
    .login(proto::auth::v1::LoginRequest {
        tenant: "demo".into(),
        email: "owner@demo.example".into(),
        password: owner["password"].as_str().expect("password").into(),
        client: None,
    })
    .await
    .expect("owner login")
    .into_inner();
    match login.result {
        Some(proto::auth::v1::login_response::Result::Tokens(t)) => assert!(t.mfa_enrollment_required),
        other => panic!("expected tokens, got {other:?}"),
    }
}

/// The services hold only their login roles: the administrative URL is in no configuration of
/// theirs, only in the operator steps' file (0600).
fn assert_admin_url_only_in_the_operator_file(dev: &DevUp) {
    let admin_file = dev.path("database-admin-url");
    assert_owner_only(&admin_file);
    let admin_url = std::fs::read_to_string(&admin_file).expect("admin url");
    for name in ["auth", "vault", "audit", "ledger", "gateway"] {
        let text = std::fs::read_to_string(dev.path(&format!("config/{name}.toml"))).expect("config");
        assert!(!text.contains("admin_url") && !text.contains(admin_url.trim()), "{name}: {text}");
    }
}

/// The operator steps, with that file: a second tenant with its owner (once), and a migrate that
/// finds everything current.
fn assert_operator_steps_work(dev: &DevUp) {
    let extra = dev.cli(&["tenant", "create", "extra", "--owner-email", "owner@extra.example"]);
    assert_eq!((extra["slug"].as_str(), extra["created"].as_bool()), (Some("extra"), Some(true)), "{extra}");
    assert!(extra["owner"]["password"].as_str().is_some_and(|p| p.len() >= 16), "{extra}");
    let again = dev.cli(&["tenant", "create", "extra"]);
    assert_eq!(again["created"].as_bool(), Some(false), "{again}");
    let migrated = dev.cli(&["migrate"]);
    assert_eq!(migrated["tenants_current"].as_u64(), Some(2), "{migrated}");
    assert_eq!(migrated["control_applied"].as_array().map(Vec::len), Some(0), "{migrated}");
}

/// What dev up started: its processes (its own Redis among them) and its throw-away cluster, all
/// running.
fn started_processes_and_cluster(dev: &DevUp) -> (Vec<i64>, PathBuf) {
    let state = dev.json("dev-state.json");
    let mut pids: Vec<i64> =
        state["pids"].as_array().expect("pids").iter().map(|p| p["pid"].as_i64().expect("pid")).collect();
    pids.push(state["redis_pid"].as_i64().expect("dev up started its own redis"));
    let cluster = PathBuf::from(state["postgres_dir"].as_str().expect("dev up made a throw-away cluster"));
    assert!(cluster.exists());
    assert!(pids.iter().all(|p| pid_alive(*p)));
    (pids, cluster)
}

/// SIGTERM stops dev up cleanly, and it leaves no process or cluster behind.
fn stop_and_assert_nothing_left(mut dev: DevUp, pids: Vec<i64>, cluster: &std::path::Path) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(dev.child.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .expect("sigterm");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = dev.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "dev up did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    for pid in pids {
        assert!(!pid_alive(pid), "process {pid} left behind");
    }
    assert!(!cluster.exists(), "temporary cluster {} left behind", cluster.display());
}

// One test: each `dev up` builds a cluster, Redis and five services from nothing.
#[tokio::test]
async fn dev_up_from_nothing_serves_and_cleans_up() {
    let (dev, up_after) = DevUp::start_from_nothing();
    let endpoints = dev.json("endpoints.json");
    assert_gateway_ready(&endpoints).await;
    let certs = dev.operator_certs();
    assert_services_serving(&certs, &endpoints).await;
    assert_demo_owner_logs_in(&dev, &certs, &endpoints).await;
    assert_admin_url_only_in_the_operator_file(&dev);
    assert_operator_steps_work(&dev);
    let (pids, cluster) = started_processes_and_cluster(&dev);
    stop_and_assert_nothing_left(dev, pids, &cluster);
    eprintln!("dev up reached `ready` in {:.1} s", up_after.as_secs_f64());
}

/// `dev up --backups`: the cluster archives WAL into an encrypted repository sealed by the dev HSM
/// token, a backup runs, vault-svc and auth-svc are set to journal into the journal beside it, and
/// a termination lands there, verifiable under dev up's CA.
#[tokio::test]
async fn dev_up_with_backups_backs_up_and_journals_erasures() {
    let (dev, _) = DevUp::start_with(&["--backups"]);
    let endpoints = dev.json("endpoints.json");
    let journal = PathBuf::from(endpoints["journal"].as_str().expect("journal in endpoints.json"));
    for service in ["vault", "auth"] {
        let config = std::fs::read_to_string(dev.path(&format!("config/{service}.toml"))).expect("config");
        assert!(config.contains(&format!("erasure_journal = \"{}\"", journal.display())), "{service}: {config}");
    }
    let backup = |args: &[&str]| {
        let out = Command::new(e2e::binary("strongroom"))
            .arg("backup")
            .arg("--backup-config")
            .arg(dev.path("backup.toml"))
            .args(args)
            .env("SOFTHSM2_CONF", dev.path("softhsm/softhsm2.conf"))
            .stdin(Stdio::null())
            .output()
            .expect("strongroom backup");
        assert!(out.status.success(), "backup {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
    };
    assert_eq!(backup(&["run", "--type", "full"])["type"], "full");
    assert_eq!(backup(&["list"])["backups"].as_array().map(Vec::len), Some(1));

    dev.cli(&["tenant", "create", "leaving"]);
    let recipient = age::x25519::Identity::generate().to_public().to_string();
    dev.cli(&["tenant", "terminate", "leaving", "--recipient", &recipient, "--reason", "trial over", "--no-wait"]);
    let ca = std::fs::read(dev.path("pki/ca.pem")).expect("ca");
    let entries = kit::journal::read(&journal, &ca).expect("the journal verifies");
    let signed: Vec<(&str, &str, &str)> =
        entries.iter().map(|v| (v.entry.erasure.kind(), v.signer.name(), v.entry.tenant_slug.as_str())).collect();
    assert_eq!(signed, [("tenant_terminate", "auth", "leaving")]);
    let (pids, cluster) = started_processes_and_cluster(&dev);
    stop_and_assert_nothing_left(dev, pids, &cluster);
}
