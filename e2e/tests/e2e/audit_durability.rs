//! The audit log survives its sequencer being killed (SIGKILL of the real audit-svc binary, several
//! times while it drains a backlog) without losing or doubling an entry, and a shredded data subject
//! leaves every proof, checkpoint and the chain valid.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use audit_svc::domain::merkle;
use e2e::Constellation;
use kit::outbox::{Actor, AuditRecord, Outcome};
use kit::{Db, TenantSlug};
use proto::audit::v1 as pb;
use secrecy::ExposeSecret;

fn binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let path = exe.parent().and_then(|p| p.parent()).expect("target dir").join(name);
    assert!(path.is_file(), "{} missing: run `cargo build --workspace --bins` first", path.display());
    path
}

async fn count(c: &Constellation, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&c.db.admin_pool().await).await.expect(sql)
}

fn spawn_audit(c: &Constellation, config: &std::path::Path) -> Child {
    let _ = c;
    Command::new(binary("audit-svc"))
        .arg("--config")
        .arg(config)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn audit-svc")
}

// Multi-threaded: the child process talks to vault-svc served by this process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_audit_svc_mid_batch_loses_and_duplicates_nothing() {
    let mut c = Constellation::start(false).await;
    c.create_tenant("alpha").await;
    let inproc = c.services.remove("audit").expect("audit");
    inproc.stop().await.expect("stop");
    let admin = c.db.admin_pool().await;
    // Whatever was waiting plus a backlog of 20,000 records written as vault-svc would.
    let vault = Db::connect_lazy(&c.db.runtime_url("vault"), 2).expect("pool");
    let tenant = vault.tenant(&TenantSlug::parse("alpha").expect("slug")).await.expect("tenant");
    for chunk in 0..20 {
        let mut tx = vault.begin(&tenant).await.expect("tx");
        for i in 0..1000 {
            let r = AuditRecord::new(
                "vault",
                Actor::User("u".into()),
                "test.event",
                &format!("k/{chunk}/{i}"),
                Outcome::Success,
            );
            tx.record(r).await.expect("record");
        }
        tx.commit().await.expect("commit");
    }
    let total = count(&c, "SELECT count(*) FROM t_alpha.audit_log").await
        + count(&c, "SELECT count(*) FROM t_alpha.audit_outbox").await;

    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("audit.toml");
    let text = format!(
        r#"env = "development"
[grpc]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"
[database]
url = "{url}"
max_connections = 4
[upstreams]
auth = "{auth}"
vault = "{vault}"
[telemetry]
log = "error"
"#,
        ca = c.pki.path("ca.pem").display(),
        cert = c.pki.path("audit.pem").display(),
        key = c.pki.path("audit-key.pem").display(),
        url = c.db.runtime_url("audit").expose_secret(),
        vault = kit::testing::https(c.addr("vault")),
        auth = kit::testing::https(c.addr("auth")),
    );
    std::fs::write(&config, text).expect("config");

    // Kill it three times while it drains, each time once it has made progress.
    let mut kills = 0;
    for delay_ms in [30u64, 100, 200] {
        let before = count(&c, "SELECT count(*) FROM t_alpha.audit_log").await;
        // Other services' records (vault-svc's signing-key creation, say) may join the log.
        if before >= total {
            break;
        }
        let mut child = spawn_audit(&c, &config);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while count(&c, "SELECT count(*) FROM t_alpha.audit_log").await == before {
            assert!(tokio::time::Instant::now() < deadline, "audit-svc made no progress");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        let logged = count(&c, "SELECT count(*) FROM t_alpha.audit_log").await;
        if logged < total {
            kills += 1;
        }
    }
    assert!(kills >= 1, "at least one kill happened before the backlog was drained");
    // The killed transactions are gone (the server aborts them when the connection drops).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while count(&c, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'strongroom_audit' AND state <> 'idle'")
        .await
        > 0
    {
        assert!(tokio::time::Instant::now() < deadline, "killed sessions linger");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A final run drains the rest.
    let mut child = spawn_audit(&c, &config);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while count(&c, "SELECT count(*) FROM t_alpha.audit_outbox").await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "backlog not drained");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().expect("kill");
    child.wait().expect("reaped");
    let (n, min, max, distinct): (i64, Option<i64>, Option<i64>, i64) =
        sqlx::query_as("SELECT count(*), min(seq), max(seq), count(DISTINCT event_id) FROM t_alpha.audit_log")
            .fetch_one(&admin)
            .await
            .expect("stats");
    // At least the backlog (records of other services may have joined it); the order below shows
    // each of the test's records exactly once.
    assert!(n >= total, "nothing lost");
    assert_eq!(distinct, n, "nothing doubled");
    assert_eq!((min, max), (Some(0), Some(n - 1)), "contiguous");
    // Outbox order survived the kills.
    let order: Vec<String> =
        sqlx::query_scalar("SELECT resource FROM t_alpha.audit_log WHERE resource LIKE 'k/%' ORDER BY seq")
            .fetch_all(&admin)
            .await
            .expect("order");
    let want: Vec<String> = (0..20).flat_map(|c| (0..1000).map(move |i| format!("k/{c}/{i}"))).collect();
    assert_eq!(order, want);
    let audit = Db::connect_lazy(&c.db.runtime_url("audit"), 2).expect("pool");
    let report = audit_svc::verify::verify(&audit, &tenant).await.expect("verify");
    assert_eq!(report.first_mismatch, None);
    assert_eq!(report.checked, n as u64);
    c.stop().await;
}

/// Makes alpha's first 30 entries recorded ten days ago (recorded_at is not part of the leaf), as
/// the superuser with the append-only trigger off.
async fn age_first_entries(admin: &sqlx::PgPool) {
    let mut conn = admin.acquire().await.expect("conn");
    for stmt in [
        "ALTER TABLE t_alpha.audit_log DISABLE TRIGGER audit_log_append_only",
        "UPDATE t_alpha.audit_log SET recorded_at = now() - interval '10 days' WHERE seq < 30",
        "ALTER TABLE t_alpha.audit_log ENABLE TRIGGER audit_log_append_only",
    ] {
        sqlx::query(stmt).execute(&mut *conn).await.expect(stmt);
    }
}

fn req<T>(tenant: &str, msg: T) -> tonic::Request<T> {
    kit::client::with_context(tonic::Request::new(msg), Some(tenant), None, None)
}

#[tokio::test]
async fn a_shredded_subject_leaves_proofs_and_the_chain_valid() {
    use proto::vault::v1 as vpb;
    let c = Constellation::start(false).await;
    c.create_tenant("alpha").await;
    // Personal data enters the entry only as ciphertext under the subject's key.
    let mut transit = vpb::transit_service_client::TransitServiceClient::new(c.channel_as("ledger", "vault"));
    let ct = transit
        .encrypt(req(
            "alpha",
            vpb::EncryptRequest {
                plaintext: b"alice@example.com".to_vec(),
                subject: "alice".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("encrypt")
        .into_inner()
        .ciphertext;
    let ledger = Db::connect_lazy(&c.db.runtime_url("ledger"), 2).expect("pool");
    let tenant = ledger.tenant(&TenantSlug::parse("alpha").expect("slug")).await.expect("tenant");
    let mut tx = ledger.begin(&tenant).await.expect("tx");
    let record =
        AuditRecord::new("ledger", Actor::User("alice".into()), "account.open", "account/a1", Outcome::Success)
            .detail("email_ciphertext", ct.clone());
    let event_id = record.event_id;
    tx.record(record).await.expect("record");
    tx.commit().await.expect("commit");

    let admin = c.db.admin_pool().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let seq: i64 = loop {
        if let Some(s) = sqlx::query_scalar("SELECT seq FROM t_alpha.audit_log WHERE event_id = $1")
            .bind(event_id)
            .fetch_optional(&admin)
            .await
            .expect("seq")
        {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "not sequenced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut log = log_client(&c);
    let proved = |log: &mut LogClient| {
        let mut log = log.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(r) = log.get_entry(req("alpha", pb::GetEntryRequest { seq: seq as u64 })).await {
                    return r.into_inner();
                }
                assert!(tokio::time::Instant::now() < deadline, "no checkpoint covering the entry");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let before = proved(&mut log).await;

    let mut keys =
        vpb::key_management_service_client::KeyManagementServiceClient::new(c.channel_as("operator", "vault"));
    keys.shred_subject(req("alpha", vpb::ShredSubjectRequest { subject: "alice".into(), request_id: String::new() }))
        .await
        .expect("shred");
    let err = transit
        .decrypt(req(
            "alpha",
            vpb::DecryptRequest { ciphertext: ct, context: Default::default(), subject: "alice".into() },
        ))
        .await
        .expect_err("shredded");
    assert_eq!(e2e::reason(&err), "KEY_DESTROYED");

    // The entry still proves into the old checkpoint and a newer one; the log still verifies.
    let after = proved(&mut log).await;
    let entry = after.entry.expect("entry");
    assert_eq!(entry.canonical, before.entry.expect("entry").canonical, "the entry is unchanged");
    let leaf = merkle::leaf_hash(&entry.canonical);
    let cp = after.checkpoint.expect("checkpoint");
    let root = hash(&cp.root_hash);
    merkle::verify_inclusion(seq as u64, cp.tree_size, &leaf, &hashes(&after.inclusion_proof), &root)
        .expect("inclusion after shredding");
    let old = before.checkpoint.expect("checkpoint");
    if cp.tree_size > old.tree_size {
        let p = log
            .get_consistency_proof(req(
                "alpha",
                pb::GetConsistencyProofRequest { from_size: old.tree_size, to_size: cp.tree_size },
            ))
            .await
            .expect("consistency")
            .into_inner();
        merkle::verify_consistency(old.tree_size, cp.tree_size, &hash(&old.root_hash), &root, &hashes(&p.proof))
            .expect("consistent");
    }
    let verified = log.verify_log(req("alpha", pb::VerifyLogRequest {})).await.expect("verify").into_inner();
    assert!(verified.ok, "{verified:?}");
    c.stop().await;
}

type LogClient = pb::audit_log_service_client::AuditLogServiceClient<kit::client::Channel>;
type RetentionClient = pb::audit_retention_service_client::AuditRetentionServiceClient<kit::client::Channel>;

fn log_client(c: &Constellation) -> LogClient {
    LogClient::new(c.channel_as("operator", "audit"))
}

fn retention_client(c: &Constellation) -> RetentionClient {
    RetentionClient::new(c.channel_as("operator", "audit"))
}

fn hash(raw: &[u8]) -> merkle::Hash {
    raw.try_into().expect("32")
}

fn hashes(raw: &[Vec<u8>]) -> Vec<merkle::Hash> {
    raw.iter().map(|h| hash(h)).collect()
}

/// alpha's tenant, as vault-svc and audit-svc open it.
async fn alpha(c: &Constellation) -> kit::Tenant {
    let vault = Db::connect_lazy(&c.db.runtime_url("vault"), 2).expect("pool");
    vault.tenant(&TenantSlug::parse("alpha").expect("slug")).await.expect("tenant")
}

/// Waits for a checkpoint of alpha's log covering at least `at_least` entries.
async fn checkpoint(log: &LogClient, at_least: u64) -> pb::Checkpoint {
    let mut log = log.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(cp) = log.get_latest_checkpoint(req("alpha", pb::GetLatestCheckpointRequest {})).await {
            let cp = cp.into_inner();
            if cp.tree_size >= at_least {
                return cp;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no checkpoint of size {at_least}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A constellation whose tenant alpha has fifty entries in its log, the first thirty recorded ten
/// days ago; returns it with the checkpoint covering them all.
async fn alpha_with_fifty_entries_thirty_aged() -> (Constellation, pb::Checkpoint) {
    let c = Constellation::start(false).await;
    c.create_tenant("alpha").await;
    let vault = Db::connect_lazy(&c.db.runtime_url("vault"), 2).expect("pool");
    let mut tx = vault.begin(&alpha(&c).await).await.expect("tx");
    for i in 0..50 {
        let r = AuditRecord::new("vault", Actor::User("u".into()), "test.event", &format!("p/{i}"), Outcome::Success);
        tx.record(r).await.expect("record");
    }
    tx.commit().await.expect("commit");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while count(&c, "SELECT count(*) FROM t_alpha.audit_outbox").await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "not drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let n = count(&c, "SELECT count(*) FROM t_alpha.audit_log").await as u64;
    let first = checkpoint(&log_client(&c), n).await;
    age_first_entries(&c.db.admin_pool().await).await;
    (c, first)
}

/// The deployment lowers its retention floor to five days (the administrative step, never a
/// running service), the operator sets alpha's retention to five days and prunes.
async fn prune_beyond_five_days(c: &Constellation) -> pb::PruneLogResponse {
    sqlx::query("UPDATE control.audit_retention_floor SET days = 5")
        .execute(&c.db.admin_pool().await)
        .await
        .expect("floor");
    let mut retention = retention_client(c);
    let five = pb::SetRetentionPolicyRequest { retention_days: 5, request_id: String::new() };
    retention.set_retention_policy(req("alpha", five)).await.expect("set");
    retention
        .prune_log(req("alpha", pb::PruneLogRequest { request_id: String::new() }))
        .await
        .expect("prune")
        .into_inner()
}

/// Waits until the prune is itself in the log; returns a checkpoint covering the whole log.
async fn checkpoint_after_prune(c: &Constellation) -> pb::Checkpoint {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while count(c, "SELECT count(*) FROM t_alpha.audit_log WHERE action = 'audit.log.prune'").await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "prune not recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let size = count(c, "SELECT max(seq) + 1 FROM t_alpha.audit_log").await as u64;
    checkpoint(&log_client(c), size).await
}

#[tokio::test]
async fn retention_is_seven_years_by_default_and_nothing_within_it_is_pruned() {
    let (c, _) = alpha_with_fifty_entries_thirty_aged().await;
    let mut retention = retention_client(&c);
    let policy = retention
        .get_retention_policy(req("alpha", pb::GetRetentionPolicyRequest {}))
        .await
        .expect("policy")
        .into_inner();
    assert_eq!((policy.retention_days, policy.pruned_below), (2557, 0), "seven years by default");
    let pruned =
        retention.prune_log(req("alpha", pb::PruneLogRequest { request_id: String::new() })).await.expect("prune");
    assert_eq!(pruned.into_inner().pruned, 0);
    c.stop().await;
}

#[tokio::test]
async fn a_retention_below_the_deployment_floor_is_refused_until_the_deployment_lowers_it() {
    let (c, _) = alpha_with_fifty_entries_thirty_aged().await;
    let five = pb::SetRetentionPolicyRequest { retention_days: 5, request_id: String::new() };
    let err = retention_client(&c).set_retention_policy(req("alpha", five)).await.expect_err("below the floor");
    assert_eq!(e2e::reason(&err), "RETENTION_BELOW_FLOOR");
    let pruned = prune_beyond_five_days(&c).await;
    assert_eq!((pruned.pruned_below, pruned.pruned), (30, 30));
    assert_eq!(count(&c, "SELECT min(seq) FROM t_alpha.audit_log").await, 30);
    c.stop().await;
}

#[tokio::test]
async fn after_a_prune_neither_the_superuser_nor_audit_svcs_role_deletes_an_entry() {
    let (c, _) = alpha_with_fifty_entries_thirty_aged().await;
    prune_beyond_five_days(&c).await;
    let admin = c.db.admin_pool().await;
    let err = sqlx::query("DELETE FROM t_alpha.audit_log WHERE seq = 31").execute(&admin).await.expect_err("delete");
    assert!(err.to_string().contains("append-only"), "{err}");
    let audit = Db::connect_lazy(&c.db.runtime_url("audit"), 2).expect("pool");
    let mut tx = audit.begin(&alpha(&c).await).await.expect("tx");
    let err = sqlx::query("DELETE FROM audit_log WHERE seq = 31").execute(tx.conn()).await.expect_err("delete");
    assert!(err.to_string().contains("permission denied"), "{err}");
    tx.rollback().await.expect("rollback");
    c.stop().await;
}

#[tokio::test]
async fn after_a_prune_what_remains_proves_into_the_old_and_the_new_checkpoint() {
    let (c, first) = alpha_with_fifty_entries_thirty_aged().await;
    prune_beyond_five_days(&c).await;
    let latest = checkpoint_after_prune(&c).await;
    let mut log = log_client(&c);
    let err = log.get_entry(req("alpha", pb::GetEntryRequest { seq: 10 })).await.expect_err("pruned");
    assert_eq!(err.code(), tonic::Code::NotFound);
    let got = log.get_entry(req("alpha", pb::GetEntryRequest { seq: 35 })).await.expect("entry").into_inner();
    let leaf = merkle::leaf_hash(&got.entry.expect("entry").canonical);
    let root = hash(&latest.root_hash);
    merkle::verify_inclusion(35, latest.tree_size, &leaf, &hashes(&got.inclusion_proof), &root)
        .expect("inclusion after pruning");
    let p = log
        .get_consistency_proof(req(
            "alpha",
            pb::GetConsistencyProofRequest { from_size: first.tree_size, to_size: latest.tree_size },
        ))
        .await
        .expect("consistency")
        .into_inner();
    merkle::verify_consistency(first.tree_size, latest.tree_size, &hash(&first.root_hash), &root, &hashes(&p.proof))
        .expect("consistent");
    let audit = Db::connect_lazy(&c.db.runtime_url("audit"), 2).expect("pool");
    let report = audit_svc::verify::verify(&audit, &alpha(&c).await).await.expect("verify");
    assert_eq!(report.first_mismatch, None);
    c.stop().await;
}

/// Runs `strongroom audit export` for alpha as the operator into `export`.
fn export_with_cli(c: &Constellation, export: &std::path::Path) {
    let url = |name: &str| kit::testing::https(c.addr(name));
    let out = Command::new(binary("strongroom"))
        .arg("--ca")
        .arg(c.pki.path("ca.pem"))
        .arg("--cert")
        .arg(c.pki.path("operator.pem"))
        .arg("--key")
        .arg(c.pki.path("operator-key.pem"))
        .args(["--auth", &url("auth"), "--vault", &url("vault"), "--audit", &url("audit"), "--ledger", &url("ledger")])
        .args(["audit", "export", "--tenant", "alpha", "--out"])
        .arg(export)
        .output()
        .expect("export");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

// Multi-threaded: the CLI runs as a blocking child process while this process serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_after_a_prune_holds_pruned_entries_as_leaves_and_verifies_offline() {
    let (c, _) = alpha_with_fifty_entries_thirty_aged().await;
    prune_beyond_five_days(&c).await;
    checkpoint_after_prune(&c).await;
    let vk = log_client(&c)
        .get_verifier_key(req("alpha", pb::GetVerifierKeyRequest {}))
        .await
        .expect("key")
        .into_inner()
        .verifier_key;
    let dir = tempfile::tempdir().expect("tmp");
    let export = dir.path().join("alpha.jsonl");
    export_with_cli(&c, &export);
    let text = std::fs::read_to_string(&export).expect("read");
    assert!(text.lines().next().is_some_and(|l| l.contains("\"pruned\":true")), "{text}");
    let out = Command::new(binary("strongroom"))
        .args(["audit", "verify", "--export"])
        .arg(&export)
        .args(["--verifier-key", &vk])
        .output()
        .expect("verify");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    c.stop().await;
}

/// Security review item 12: append-only was a convention. The trigger trusted a session setting
/// anyone can set, `audit_prune` (SECURITY DEFINER) let `pg_temp` shadow its tables, and
/// audit-svc's own role could lower the retention to one day.
#[tokio::test]
async fn a_compromised_audit_role_cannot_shorten_or_rewrite_the_log() {
    let c = Constellation::start(false).await;
    let alpha = c.create_tenant("alpha").await;
    let vault = Db::connect_lazy(&c.db.runtime_url("vault"), 2).expect("pool");
    let tenant = vault.tenant(&TenantSlug::parse("alpha").expect("slug")).await.expect("tenant");
    let mut tx = vault.begin(&tenant).await.expect("tx");
    for i in 0..40 {
        let r = AuditRecord::new("vault", Actor::User("u".into()), "test.event", &format!("q/{i}"), Outcome::Success);
        tx.record(r).await.expect("record");
    }
    tx.commit().await.expect("commit");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while count(&c, "SELECT count(*) FROM t_alpha.audit_log WHERE resource LIKE 'q/%'").await < 40 {
        assert!(tokio::time::Instant::now() < deadline, "not drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The first entries were recorded ten days ago.
    let admin = c.db.admin_pool().await;
    age_first_entries(&admin).await;
    let size = count(&c, "SELECT count(*) FROM t_alpha.audit_log").await;

    // As audit-svc's role: lower the retention to a day, directly or through the function.
    let mut tx = admin.begin().await.expect("tx");
    e2e::act_as_service(&mut tx, "alpha", alpha, "audit").await;
    let err = sqlx::query("UPDATE retention_policy SET retention_days = 1")
        .execute(&mut *tx)
        .await
        .expect_err("the audit role writes no retention");
    assert!(err.to_string().contains("permission denied"), "{err}");
    drop(tx);
    let mut tx = admin.begin().await.expect("tx");
    e2e::act_as_service(&mut tx, "alpha", alpha, "audit").await;
    let err = sqlx::query("SELECT audit_set_retention(1)").execute(&mut *tx).await.expect_err("below the floor");
    assert!(err.to_string().contains("floor"), "{err}");
    drop(tx);
    // Shadow prune_marks with a temporary table that starts pruning in the middle of the log.
    let mut tx = admin.begin().await.expect("tx");
    e2e::act_as_service(&mut tx, "alpha", alpha, "audit").await;
    for stmt in [
        "CREATE TEMP TABLE prune_marks (tenant_id uuid, pruned_below bigint, chain_hash bytea, retention_days integer, pruned_at timestamptz) ON COMMIT DROP",
        "INSERT INTO pg_temp.prune_marks VALUES (NULL, 10, NULL, 1, now())",
    ] {
        sqlx::query(stmt).execute(&mut *tx).await.expect(stmt);
    }
    let below: i64 = sqlx::query_scalar("SELECT audit_prune(1000000)").fetch_one(&mut *tx).await.expect("prune");
    assert_eq!(below, 0, "nothing is beyond the floor");
    tx.commit().await.expect("commit");
    // A superuser session that sets the prune switch deletes nothing either.
    let mut tx = admin.begin().await.expect("tx");
    sqlx::query("SET LOCAL strongroom.audit_prune = 'on'").execute(&mut *tx).await.expect("set");
    let err = sqlx::query("DELETE FROM t_alpha.audit_log WHERE seq = 31")
        .execute(&mut *tx)
        .await
        .expect_err("the switch alone opens nothing");
    assert!(err.to_string().contains("append-only"), "{err}");
    drop(tx);

    let (n, min, max): (i64, Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT count(*), min(seq), max(seq) FROM t_alpha.audit_log WHERE seq < $1")
            .bind(size)
            .fetch_one(&admin)
            .await
            .expect("stats");
    assert_eq!((n, min, max), (size, Some(0), Some(size - 1)), "the log is whole");
    c.stop().await;
}
