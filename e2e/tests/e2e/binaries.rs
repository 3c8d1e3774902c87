//! The shipped binaries: bad configuration exits 64 with one line, and `strongroom dev up` brings
//! the whole constellation up from nothing and leaves nothing behind. These tests run the binaries
//! built by `cargo build --workspace --bins` (deploy/test.sh does that first).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().and_then(|p| p.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(path.is_file(), "{} missing: run `cargo build --workspace --bins` first", path.display());
    path
}

fn clean_command(name: &str) -> Command {
    let mut cmd = Command::new(binary(name));
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

#[tokio::test]
async fn dev_up_from_nothing_serves_and_cleans_up() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cmd = Command::new(binary("strongroom"));
    cmd.args(["dev", "up", "--dir"]).arg(dir.path()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // From nothing: no database, no Redis, no Strongroom settings.
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
    let up_after = started.elapsed();

    let endpoints: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("endpoints.json")).expect("endpoints.json"))
            .expect("json");
    let ca = std::fs::read(endpoints["ca"].as_str().expect("ca")).expect("ca file");
    let gateway = endpoints["gateway"].as_str().expect("gateway");
    assert!(gateway.starts_with("https://127.0.0.1:"));
    let cfg = kit::tls::ca_only_client_config(&ca, &[b"http/1.1"]).expect("tls");
    let (status, _, body) =
        kit::tls::https_request(cfg, http::Method::GET, &format!("{gateway}/readyz"), &[], Vec::new())
            .await
            .expect("readyz");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    let pki = dir.path().join("pki");
    let tls = kit::config::TlsConfig {
        ca: pki.join("ca.pem"),
        cert: pki.join("operator.pem"),
        key: pki.join("operator-key.pem"),
        reload_interval_ms: 60_000,
    };
    let certs = kit::tls::CertStore::load(&tls).expect("operator certs");
    for name in ["auth", "vault", "audit", "ledger"] {
        let url = endpoints[name].as_str().expect("url");
        let channel =
            kit::client::channel(&certs, url, &kit::Identity::new(name).expect("id"), Duration::from_secs(10))
                .expect("channel");
        kit::testing::wait_serving(channel, "", Duration::from_secs(10)).await.expect(name);
    }
    // The demo tenant exists.
    let channel = kit::client::channel(
        &certs,
        endpoints["auth"].as_str().expect("auth"),
        &kit::Identity::new("auth").expect("id"),
        Duration::from_secs(10),
    )
    .expect("channel");
    let tenant = proto::auth::v1::tenant_service_client::TenantServiceClient::new(channel)
        .get_tenant(proto::auth::v1::GetTenantRequest { slug: "demo".into() })
        .await
        .expect("demo tenant");
    assert_eq!(tenant.into_inner().tenant.expect("tenant").slug, "demo");
    // Its owner's generated password is in D/demo-owner.json (0600), and it logs in.
    let owner_file = dir.path().join("demo-owner.json");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&owner_file).expect("demo-owner.json").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let owner: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&owner_file).expect("owner")).expect("json");
    assert_eq!(owner["email"], "owner@demo.example");
    let channel = kit::client::channel(
        &certs,
        endpoints["auth"].as_str().expect("auth"),
        &kit::Identity::new("auth").expect("id"),
        Duration::from_secs(10),
    )
    .expect("channel");
    let login = proto::auth::v1::authentication_service_client::AuthenticationServiceClient::new(channel)
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

    // The services hold only their login roles: the administrative URL is in no configuration of
    // theirs, only in the operator steps' file (0600).
    let admin_file = dir.path().join("database-admin-url");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&admin_file).expect("database-admin-url").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let admin_url = std::fs::read_to_string(&admin_file).expect("admin url");
    for name in ["auth", "vault", "audit", "ledger", "gateway"] {
        let text = std::fs::read_to_string(dir.path().join(format!("config/{name}.toml"))).expect("config");
        assert!(!text.contains("admin_url") && !text.contains(admin_url.trim()), "{name}: {text}");
    }
    // The operator steps, with that file: a second tenant with its owner, and a migrate that
    // finds everything current.
    let cli = |args: &[&str]| {
        let out = Command::new(binary("strongroom"))
            .arg("--dev-dir")
            .arg(dir.path())
            .args(args)
            .env_remove("STRONGROOM_DATABASE__ADMIN_URL")
            .stdin(Stdio::null())
            .output()
            .expect("strongroom");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
    };
    let extra = cli(&["tenant", "create", "extra", "--owner-email", "owner@extra.example"]);
    assert_eq!((extra["slug"].as_str(), extra["created"].as_bool()), (Some("extra"), Some(true)), "{extra}");
    assert!(extra["owner"]["password"].as_str().is_some_and(|p| p.len() >= 16), "{extra}");
    let again = cli(&["tenant", "create", "extra"]);
    assert_eq!(again["created"].as_bool(), Some(false), "{again}");
    let migrated = cli(&["migrate"]);
    assert_eq!(migrated["tenants_current"].as_u64(), Some(2), "{migrated}");
    assert_eq!(migrated["control_applied"].as_array().map(Vec::len), Some(0), "{migrated}");

    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("dev-state.json")).expect("state"))
            .expect("json");
    let mut pids: Vec<i64> =
        state["pids"].as_array().expect("pids").iter().map(|p| p["pid"].as_i64().expect("pid")).collect();
    pids.push(state["redis_pid"].as_i64().expect("dev up started its own redis"));
    let cluster = PathBuf::from(state["postgres_dir"].as_str().expect("dev up made a throw-away cluster"));
    assert!(cluster.exists());
    assert!(pids.iter().all(|p| pid_alive(*p)));

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .expect("sigterm");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
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
    eprintln!("dev up reached `ready` in {:.1} s", up_after.as_secs_f64());
}
