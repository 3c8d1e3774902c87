//! Physical backups with the real pgBackRest on a PostgreSQL cluster of the test's own, its
//! repository passphrase sealed in SoftHSM2: a point-in-time restore brings back exactly what was
//! committed before the point, but never what was erased after it (the erasure journal is
//! replayed: a user deleted after the point stays deleted and their sealed data unreadable, a
//! tenant terminated after it stays terminated); the services start on the restored cluster and
//! the surviving tenant's audit log and ledger receipts verify; expiry removes only what the
//! retention window no longer needs; the passphrase is nowhere in plain.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::Constellation;
use http::Method;
use kit::localpg::LocalPostgres;
use kit::testing::{TestDb, TestSigner};
use serde_json::{Value, json};

/// A directory the cluster's server (`postgres` when the test runs as root) may write.
fn shared_dir(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).expect("dir");
    if nix::unistd::geteuid().is_root() {
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, "postgres"]).output().expect("id");
            String::from_utf8_lossy(&out.stdout).trim().parse().expect("postgres id")
        };
        std::os::unix::fs::chown(&dir, Some(id("-u")), Some(id("-g"))).expect("chown");
    }
    dir
}

fn backup(config: &Path, args: &[&str]) -> Value {
    let out = Command::new(e2e::binary("strongroom"))
        .arg("backup")
        .arg("--backup-config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("strongroom backup");
    assert!(out.status.success(), "backup {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn grpc<T>(tenant: &str, token: Option<&str>, msg: T) -> tonic::Request<T> {
    kit::client::with_context(tonic::Request::new(msg), Some(tenant), None, token)
}

async fn http(c: &Constellation, method: Method, path: &str, token: &str, body: Value) -> (u16, Value) {
    let bearer = format!("Bearer {token}");
    let headers =
        [("x-strongroom-tenant", "alpha"), ("authorization", bearer.as_str()), ("content-type", "application/json")];
    let bytes = if body.is_null() { Vec::new() } else { serde_json::to_vec(&body).expect("json") };
    let (status, _, json) = c.gateway_request(method, path, &headers, bytes).await.expect("request");
    (status.as_u16(), json)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_point_in_time_restore_brings_back_what_was_committed_before_the_point_but_nothing_erased_after_it() {
    let _ = kit::telemetry::init("e2e", &kit::config::TelemetryConfig { otlp_endpoint: None, log: "error".into() });
    let work = tempfile::tempdir().expect("tmp");
    let spool = shared_dir(work.path(), "spool");
    let archive_command = format!("test ! -f {0}/%f && cp %p {0}/%f.part && mv {0}/%f.part {0}/%f", spool.display());
    let pg =
        LocalPostgres::start(&format!("-c archive_mode=on -c 'archive_command={archive_command}'")).expect("cluster");
    // The services on that cluster (journaling erasures), a tenant with a ledger and a secret.
    let db = TestDb::create_on(&pg.url()).await;
    let db_name = db.name.clone();
    let c = Constellation::start_on(db, true).await;
    let config = work.path().join("backup.toml");
    // The repository passphrase is sealed in an HSM token of its own.
    let hsm = e2e::SoftHsm::create();
    let (module, token, pin) = (e2e::SoftHsm::module(), hsm.label.clone(), hsm.pin.clone());
    std::fs::write(
        &config,
        format!(
            r#"[backup]
stanza = "strongroom"
repository = "{repo}"
spool = "{spool}"
data_directory = "{data}"
port = {port}
socket_directory = "{socket}"
retention_secs = 3
sealed_passphrase = "{sealed}"
journal = "{journal}"
journal_ca = "{ca}"
metrics_dir = "{metrics}"
journal_prune_margin_secs = 0

[kms]
provider = "pkcs11"
module = "{module}"
token_label = "{token}"
pin = "{pin}"
key_label = "backup-master"
create_key = true
"#,
            repo = work.path().join("repo").display(),
            spool = spool.display(),
            data = pg.dir().join("data").display(),
            port = pg.url().rsplit_once(':').and_then(|(_, rest)| rest.split('/').next()).expect("port"),
            socket = pg.dir().display(),
            sealed = work.path().join("passphrase.sealed").display(),
            journal = c.journal_dir().display(),
            ca = c.pki.path("ca.pem").display(),
            metrics = work.path().join("metrics").display(),
            module = module.display(),
        ),
    )
    .expect("config");

    let init = backup(&config, &["init"]);
    assert_eq!(init["passphrase_sealed_now"], true, "{init}");
    assert_eq!(init["archive_command"], archive_command.as_str());
    assert_eq!(backup(&config, &["init"])["passphrase_sealed_now"], false, "sealed once");
    let sealed = std::fs::read_to_string(work.path().join("passphrase.sealed")).expect("sealed");
    assert!(sealed.contains("wrapped") && !sealed.contains("cipher"), "{sealed}");
    let (alpha, owner, _) = c.create_tenant_with_owner("alpha", "owner@alpha.example").await;
    let signer = TestSigner::generate();
    let admin = c.db.admin_pool().await;
    signer.publish(&admin).await;
    let mut claims = TestSigner::claims(alpha, &owner);
    claims["permissions"] = json!([
        "vault.secrets.write",
        "users.write",
        "users.delete",
        "ledger.ledgers.create",
        "ledger.accounts.create",
        "ledger.transfers.create",
        "ledger.receipts.verify"
    ]);
    let token = signer.sign(&claims);
    let (st, e) = http(&c, Method::POST, "/v1/ledger/ledgers", &token, json!({ "code": "USD", "scale": 2 })).await;
    assert_eq!(st, 200, "{e}");
    let (house, client) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    for id in [house, client] {
        let (st, e) =
            http(&c, Method::POST, "/v1/ledger/accounts", &token, json!({ "id": id, "ledger": "USD", "code": 1 }))
                .await;
        assert_eq!(st, 200, "{e}");
    }
    let transfer = |id: uuid::Uuid, amount: &str| json!({ "id": id, "debit_account_id": house, "credit_account_id": client, "amount": amount, "ledger": "USD", "code": 1 });
    // A user who will be deleted after the point, and a tenant that will be terminated after it.
    let users = || proto::auth::v1::user_service_client::UserServiceClient::new(c.channel_as("gateway", "auth"));
    let leaving = users()
        .create_user(grpc(
            "alpha",
            Some(&token),
            proto::auth::v1::CreateUserRequest {
                email: "leaving@alpha.example".into(),
                display_name: "Lea Ving".into(),
                password: "correct horse battery staple".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("create user")
        .into_inner();
    let leaving_id: uuid::Uuid = leaving.id.parse().expect("id");
    // Their email as sealed in the database (and so in every backup).
    let sealed_email: String = sqlx::query_scalar("SELECT email_sealed FROM t_alpha.users WHERE id = $1")
        .bind(leaving_id)
        .fetch_one(&admin)
        .await
        .expect("sealed email");
    let beta = c.create_tenant("beta").await;
    let mut beta_claims = TestSigner::claims(beta, &uuid::Uuid::now_v7().to_string());
    beta_claims["permissions"] = json!(["vault.secrets.write", "vault.secrets.read"]);
    let beta_token = signer.sign(&beta_claims);
    let mut secrets =
        proto::vault::v1::secrets_service_client::SecretsServiceClient::new(c.channel_as("gateway", "vault"));
    let put = proto::vault::v1::PutSecretRequest {
        path: "beta/key".into(),
        value: b"beta's secret".to_vec(),
        ..Default::default()
    };
    secrets.put_secret(grpc("beta", Some(&beta_token), put)).await.expect("beta secret");

    let full = backup(&config, &["run", "--type", "full"]);
    assert_eq!(full["type"], "full", "{full}");

    // Before the point: a transfer and a secret; after it: another transfer.
    let (before, after) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let (st, e) = http(&c, Method::POST, "/v1/ledger/transfers", &token, transfer(before, "1250")).await;
    assert_eq!(st, 200, "{e}");
    let (st, e) = http(&c, Method::PUT, "/v1/secrets/app/db", &token, json!({ "value": "before the point" })).await;
    assert_eq!(st, 200, "{e}");
    // The point lies strictly between the commits (their timestamps come from this server).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let point: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&admin).await.expect("now");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (st, e) = http(&c, Method::POST, "/v1/ledger/transfers", &token, transfer(after, "990")).await;
    assert_eq!(st, 200, "{e}");
    // After the point too: the user is deleted (their subject key shredded) and beta terminated.
    users()
        .delete_user(grpc("alpha", Some(&token), proto::auth::v1::DeleteUserRequest { id: leaving.id.clone() }))
        .await
        .expect("delete user");
    let recipient = age::x25519::Identity::generate().to_public().to_string();
    proto::auth::v1::tenant_service_client::TenantServiceClient::new(c.channel_as("operator", "auth"))
        .terminate_tenant(proto::auth::v1::TerminateTenantRequest {
            slug: "beta".into(),
            recipient: recipient.clone(),
            reason: "contract ended".into(),
            ..Default::default()
        })
        .await
        .expect("terminate beta");
    // Both are in the journal (signed by vault-svc and auth-svc), which names no person.
    let journal = c.journal_dir();
    let ca = std::fs::read(c.pki.path("ca.pem")).expect("ca");
    let kinds: Vec<&'static str> =
        kit::journal::read(&journal, &ca).expect("journal verifies").iter().map(|v| v.entry.erasure.kind()).collect();
    assert!(kinds.contains(&"subject_shred") && kinds.contains(&"tenant_terminate"), "{kinds:?}");
    for entry in walk(&journal) {
        let text = std::fs::read_to_string(&entry).expect("entry");
        assert!(!text.contains(&leaving.id) && !text.contains("leaving@"), "{text}");
    }
    // Everything up to now reaches the repository: the segment holding the last commit, once
    // switched (complete), archived into the spool and pushed.
    let last: String =
        sqlx::query_scalar("SELECT pg_walfile_name(pg_current_wal_lsn())").fetch_one(&admin).await.expect("wal");
    sqlx::query("SELECT pg_switch_wal()").execute(&admin).await.expect("switch");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        backup(&config, &["archive"]);
        let listed = backup(&config, &["list"]);
        if listed["wal_max"].as_str().is_some_and(|max| max >= last.as_str()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "segment {last} never reached the repository: {listed}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let verified = backup(&config, &["verify"]);
    assert_eq!(verified["verified"], true, "{verified}");
    // The commands kept their metrics for node_exporter's textfile collector (the backup alerts).
    let gauge = |file: &str, series: &str| -> i64 {
        let text = std::fs::read_to_string(work.path().join("metrics").join(file)).expect("metrics file");
        let line = text.lines().find(|l| l.starts_with(series)).unwrap_or_else(|| panic!("{series} in {text}"));
        line.rsplit_once(' ').and_then(|(_, v)| v.parse().ok()).unwrap_or_else(|| panic!("{line}"))
    };
    let now = chrono::Utc::now().timestamp();
    let completed = gauge(
        "strongroom_backup_repository.prom",
        r#"strongroom_backup_last_completed_timestamp_seconds{stanza="strongroom",type="full"}"#,
    );
    assert!((now - 300..=now).contains(&completed), "{completed}");
    assert_eq!(gauge("strongroom_backup_repository.prom", "strongroom_backup_count{"), 1);
    let pushed = gauge("strongroom_backup_archive.prom", "strongroom_backup_archive_pushed_timestamp_seconds{");
    assert!((now - 300..=now).contains(&pushed), "{pushed}");
    assert_eq!(gauge("strongroom_backup_archive.prom", "strongroom_backup_spool_segments{"), 0);
    let checked = gauge("strongroom_backup_verify.prom", "strongroom_backup_verified_timestamp_seconds{");
    assert!((now - 300..=now).contains(&checked), "{checked}");

    // Nothing in the repository or anywhere on disk holds the passphrase in plain: unsealed only
    // for pgBackRest's own environment. The repository's files are encrypted (no plain WAL header).
    let repo_files = walk(&work.path().join("repo"));
    assert!(repo_files.iter().any(|p| p.to_string_lossy().contains("archive")), "{repo_files:?}");

    // Restore to the point into a new cluster and start everything on it.
    let restored_dir = tempfile::Builder::new().prefix("strongroom-restored-").tempdir().expect("tmp");
    let into = restored_dir.path().join("data");
    let restored = backup(&config, &["restore", "--to", &point.to_rfc3339(), "--into", into.to_str().expect("path")]);
    assert_eq!(restored["from_backup"], full["label"], "{restored}");
    // The journal was replayed before anything served: the user erased again, their key shredded
    // again, beta terminated again. Only alpha is live, so only alpha's log records the restore.
    let replayed = &restored["journal"];
    assert_eq!(replayed["users_erased"], 1, "{restored}");
    assert_eq!(replayed["tenants_terminated"], 1, "{restored}");
    assert!(replayed["subject_keys_destroyed"].as_u64() >= Some(1), "{restored}");
    assert_eq!(restored["tenants_audited"], 1, "{restored}");
    let redis = c.redis.clone();
    let (pki, c_hsm) = c.stop_keeping_keys().await;
    let pg2 = LocalPostgres::start_existing(restored_dir, "").expect("restored cluster starts");
    let db2 = TestDb::existing_on(&pg2.url(), &db_name);
    let admin2 = db2.admin_pool().await;
    let ids: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM t_alpha.transfers ORDER BY id").fetch_all(&admin2).await.expect("transfers");
    assert!(ids.contains(&before), "a transfer committed before the point is missing");
    assert!(!ids.contains(&after), "a transfer committed after the point came back");
    let secrets: i64 =
        sqlx::query_scalar("SELECT count(*) FROM t_alpha.secrets").fetch_one(&admin2).await.expect("secrets");
    assert_eq!(secrets, 1);
    let (status, email_sealed, index): (String, Option<String>, i64) = sqlx::query_as(
        "SELECT status, email_sealed, (SELECT count(*) FROM t_alpha.user_email_index WHERE user_id = $1)
           FROM t_alpha.users WHERE id = $1",
    )
    .bind(leaving_id)
    .fetch_one(&admin2)
    .await
    .expect("erased user");
    assert_eq!((status.as_str(), email_sealed, index), ("deleted", None, 0), "the deleted user came back");
    let live_keys: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM t_alpha.subject_keys WHERE subject = $1 AND (state <> 'destroyed' OR wrapped IS NOT NULL)",
    )
    .bind(&leaving.id)
    .fetch_one(&admin2)
    .await
    .expect("subject keys");
    assert_eq!(live_keys, 0, "the shredded subject key came back");
    let (beta_status, beta_recipient): (String, Option<String>) = sqlx::query_as(
        "SELECT t.status, x.recipient FROM control.tenants t
           LEFT JOIN control.tenant_terminations x ON x.tenant_id = t.id WHERE t.slug = 'beta'",
    )
    .fetch_one(&admin2)
    .await
    .expect("beta");
    assert_eq!((beta_status.as_str(), beta_recipient.as_deref()), ("terminated", Some(recipient.as_str())));
    let c2 = Constellation::start_with_keys(db2, redis, false, pki, c_hsm).await;
    // The erased user's sealed email (copied before the deletion, as any backup holds it) opens no
    // more; beta refuses service; neither the user's login nor beta's secret is back.
    let mut transit =
        proto::vault::v1::transit_service_client::TransitServiceClient::new(c2.channel_as("auth", "vault"));
    let context = std::collections::HashMap::from([
        ("table".to_owned(), "users".to_owned()),
        ("column".to_owned(), "email".to_owned()),
        ("row".to_owned(), leaving.id.clone()),
    ]);
    let open = proto::vault::v1::DecryptRequest { ciphertext: sealed_email, context, subject: leaving.id.clone() };
    let e = transit.decrypt(grpc("alpha", None, open)).await.expect_err("the erased email opened");
    assert_eq!(e2e::reason(&e), "KEY_DESTROYED", "{e:?}");
    let mut secrets2 =
        proto::vault::v1::secrets_service_client::SecretsServiceClient::new(c2.channel_as("gateway", "vault"));
    let get = proto::vault::v1::GetSecretRequest { path: "beta/key".into() };
    let e = secrets2.get_secret(grpc("beta", Some(&beta_token), get)).await.expect_err("beta serves");
    assert_eq!(e2e::reason(&e), "TENANT_TERMINATED", "{e:?}");
    // After the point, the tenant's log has the journal's replays, then the restore.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let logged: Option<Value> = sqlx::query_scalar(
            "SELECT details FROM t_alpha.audit_log WHERE action = 'backup.restore' ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&admin2)
        .await
        .expect("log");
        if let Some(details) = logged {
            assert_eq!(details["from_backup"], full["label"], "{details}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the restore was not logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut replays: Vec<String> =
        sqlx::query_scalar("SELECT action FROM t_alpha.audit_log WHERE action LIKE '%.replay'")
            .fetch_all(&admin2)
            .await
            .expect("replays");
    replays.sort();
    assert_eq!(replays, ["user.delete.replay", "vault.shred.replay"]);
    let mut log =
        proto::audit::v1::audit_log_service_client::AuditLogServiceClient::new(c2.channel_as("operator", "audit"));
    let req = |msg| kit::client::with_context(tonic::Request::new(msg), Some("alpha"), None, None);
    let verified = log.verify_log(req(proto::audit::v1::VerifyLogRequest {})).await.expect("verify log").into_inner();
    assert!(verified.ok && verified.checked > 0, "{verified:?}");
    let mut ledger =
        proto::ledger::v1::ledger_service_client::LedgerServiceClient::new(c2.channel_as("gateway", "ledger"));
    let receipts = ledger
        .verify_receipts(kit::client::with_context(
            tonic::Request::new(proto::ledger::v1::VerifyReceiptsRequest { from_seq: 0 }),
            Some("alpha"),
            None,
            Some(&token),
        ))
        .await
        .expect("verify receipts")
        .into_inner();
    assert!(receipts.ok, "{receipts:?}");
    // The PKI (and with it the journal) outlives the constellation: expiry prunes the journal.
    let (_pki, _hsm) = c2.stop_keeping_keys().await;
    drop(pg2);

    // Expiry: with a 3 s window, a full backup goes once a later full one is older than 3 s.
    let second = backup(&config, &["run", "--type", "full"]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let third = backup(&config, &["run", "--type", "full"]);
    let expired = backup(&config, &["expire"]);
    assert_eq!(expired["expired"], json!([full["label"]]), "{expired}");
    // The journal entries written before the oldest backup kept began are in every backup kept:
    // pruned (here with no allowance for clock skew).
    assert!(expired["journal_pruned"].as_u64() >= Some(2), "{expired}");
    assert!(walk(&journal).is_empty(), "{:?}", walk(&journal));
    let remaining: Vec<&str> =
        expired["remaining"].as_array().expect("remaining").iter().filter_map(|b| b["label"].as_str()).collect();
    assert_eq!(remaining, [second["label"].as_str().expect("label"), third["label"].as_str().expect("label")]);
    drop(pg);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
