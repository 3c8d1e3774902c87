//! audit-svc's sequencer and log integrity against real PostgreSQL: contiguous sequence numbers,
//! exactly-once entries, append-only storage, tamper detection, replicas sharing a tenant.

use std::time::Duration;

use audit_svc::domain::merkle;
use e2e::Constellation;
use kit::outbox::{Actor, AuditRecord, Outcome};
use kit::{Db, Tenant, TenantSlug};

async fn tenant(db: &Db, slug: &str) -> Tenant {
    db.tenant(&TenantSlug::parse(slug).expect("slug")).await.expect("tenant")
}

/// Writes `n` records as vault-svc would, in one transaction; returns their event ids in order.
async fn write_records(c: &Constellation, slug: &str, n: usize, tag: &str) -> Vec<uuid::Uuid> {
    write_records_with(&vault_db(c), slug, n, tag).await
}

/// A pool of vault-svc's login role, to write records as it would.
fn vault_db(c: &Constellation) -> Db {
    Db::connect_lazy(&c.db.runtime_url("vault"), 2).expect("pool")
}

/// [`write_records`] through `db` (a test writing many times keeps one pool and its connection).
async fn write_records_with(db: &Db, slug: &str, n: usize, tag: &str) -> Vec<uuid::Uuid> {
    let t = tenant(db, slug).await;
    let mut tx = db.begin(&t).await.expect("tx");
    let mut ids = Vec::new();
    for i in 0..n {
        let r =
            AuditRecord::new("vault", Actor::User("u1".into()), "test.event", &format!("{tag}/{i}"), Outcome::Success)
                .detail("i", i);
        ids.push(r.event_id);
        tx.record(r).await.expect("record");
    }
    tx.commit().await.expect("commit");
    ids
}

async fn log_len(c: &Constellation, schema: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {schema}.audit_log"))
        .fetch_one(&c.db.admin_pool().await)
        .await
        .expect("count")
}

/// How many log entries carry one of `ids` (each should, once).
async fn logged_once(c: &Constellation, ids: &[uuid::Uuid]) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM t_alpha.audit_log WHERE event_id = ANY($1)")
        .bind(ids)
        .fetch_one(&c.db.admin_pool().await)
        .await
        .expect("count")
}

async fn wait_drained(c: &Constellation, schema: &str, want: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let outbox: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {schema}.audit_outbox"))
            .fetch_one(&c.db.admin_pool().await)
            .await
            .expect("outbox");
        let log = log_len(c, schema).await;
        if outbox == 0 && log >= want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "not drained: outbox {outbox}, log {log}, want {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn verify(c: &Constellation, slug: &str) -> audit_svc::verify::Report {
    let db = Db::connect_lazy(&c.db.runtime_url("audit"), 2).expect("pool");
    let t = tenant(&db, slug).await;
    audit_svc::verify::verify(&db, &t).await.expect("verify")
}

async fn assert_contiguous(c: &Constellation, schema: &str) -> i64 {
    let admin = c.db.admin_pool().await;
    let (n, min, max, distinct): (i64, Option<i64>, Option<i64>, i64) = sqlx::query_as(&format!(
        "SELECT count(*), min(seq), max(seq), count(DISTINCT event_id) FROM {schema}.audit_log"
    ))
    .fetch_one(&admin)
    .await
    .expect("stats");
    assert_eq!(min, Some(0));
    assert_eq!(max, Some(n - 1), "sequence numbers are contiguous");
    assert_eq!(distinct, n, "each event once");
    n
}

#[tokio::test]
async fn the_outbox_drains_into_a_contiguous_verifiable_log() {
    let c = Constellation::start(false).await;
    c.create_tenant("alpha").await;
    let before = log_len(&c, "t_alpha").await;
    write_records(&c, "alpha", 300, "a").await;
    wait_drained(&c, "t_alpha", before + 300).await;
    let n = assert_contiguous(&c, "t_alpha").await;
    assert!(n >= 300);
    let report = verify(&c, "alpha").await;
    assert_eq!(report.first_mismatch, None);
    assert_eq!(report.checked, n as u64);

    // Only the levels from `STORED_FROM` up are stored, and they are the hashes of the leaves;
    // with the lower levels recomputed from the leaves' blocks, they give the RFC 9162 root.
    let admin = c.db.admin_pool().await;
    let leaves: Vec<Vec<u8>> = sqlx::query_scalar("SELECT leaf_hash FROM t_alpha.audit_log ORDER BY seq")
        .fetch_all(&admin)
        .await
        .expect("leaves");
    let nodes: Vec<(i16, i64, Vec<u8>)> =
        sqlx::query_as("SELECT level, idx, hash FROM t_alpha.merkle_nodes").fetch_all(&admin).await.expect("nodes");
    let leaf_hashes: Vec<merkle::Hash> = leaves.into_iter().map(|h| h.try_into().expect("32")).collect();
    let mut map: std::collections::HashMap<(u8, u64), merkle::Hash> = std::collections::HashMap::new();
    for (b, block) in leaf_hashes.chunks(merkle::BLOCK as usize).enumerate() {
        map.extend(merkle::block_nodes(b as u64 * merkle::BLOCK, block).into_iter().map(|(l, i, h)| ((l, i), h)));
    }
    let n_leaves = leaf_hashes.len() as u64;
    assert!(n_leaves >= merkle::BLOCK, "the test needs a complete block");
    let upper: u64 = (merkle::STORED_FROM..64).map(|l| n_leaves >> l).sum();
    assert_eq!(nodes.len() as u64, upper, "levels from {} up, nothing below", merkle::STORED_FROM);
    for (l, i, h) in nodes {
        let (l, i) = (l as u8, i as u64);
        assert!(l >= merkle::STORED_FROM, "node ({l}, {i}) is below the stored levels");
        if l == merkle::STORED_FROM {
            assert_eq!(map.get(&(l, i)).map(|w| w.as_slice()), Some(h.as_slice()), "node ({l}, {i})");
        }
        map.insert((l, i), h.try_into().expect("32"));
    }
    let get = |l: u8, i: u64| map.get(&(l, i)).copied();
    for size in [1u64, 2, 7, 64, 100, n as u64] {
        let root = merkle::root(size, &get).expect("root");
        for index in [0, size / 2, size - 1] {
            let proof = merkle::inclusion_proof(index, size, &get).expect("proof");
            merkle::verify_inclusion(index, size, &leaf_hashes[index as usize], &proof, &root).expect("inclusion");
        }
    }
    c.stop().await;
}

#[tokio::test]
async fn nobody_updates_or_deletes_an_entry() {
    let c = Constellation::start(false).await;
    c.create_tenant("alpha").await;
    // A whole block of entries, so that a Merkle node is stored for the DELETE below.
    write_records(&c, "alpha", merkle::BLOCK as usize + 4, "x").await;
    wait_drained(&c, "t_alpha", merkle::BLOCK as i64 + 4).await;
    // audit-svc's own role holds no UPDATE/DELETE grant.
    let audit = Db::connect_lazy(&c.db.runtime_url("audit"), 1).expect("pool");
    let t = tenant(&audit, "alpha").await;
    let mut tx = audit.begin(&t).await.expect("tx");
    let err = sqlx::query("UPDATE audit_log SET actor = 'someone else'").execute(tx.conn()).await.expect_err("update");
    assert!(err.to_string().contains("permission denied"), "{err}");
    tx.rollback().await.expect("rollback");
    // Even a superuser is refused by the triggers.
    let admin = c.db.admin_pool().await;
    for stmt in [
        "UPDATE t_alpha.audit_log SET actor = 'x' WHERE seq = 0",
        "DELETE FROM t_alpha.audit_log WHERE seq = 0",
        "TRUNCATE t_alpha.audit_log",
        "DELETE FROM t_alpha.merkle_nodes",
        "TRUNCATE t_alpha.merkle_nodes",
    ] {
        let err = sqlx::query(stmt).execute(&admin).await.expect_err(stmt);
        assert!(err.to_string().contains("append-only"), "{stmt}: {err}");
    }
    c.stop().await;
}

/// Edits `alpha`'s entry for `resource` as a superuser can, behind the append-only trigger's back
/// (its outcome becomes `failure`); returns the entry's sequence number.
async fn edit_behind_the_triggers(c: &Constellation, resource: &str) -> i64 {
    let admin = c.db.admin_pool().await;
    let target: i64 = sqlx::query_scalar("SELECT seq FROM t_alpha.audit_log WHERE resource = $1")
        .bind(resource)
        .fetch_one(&admin)
        .await
        .expect("seq");
    let mut conn = admin.acquire().await.expect("conn");
    sqlx::query("ALTER TABLE t_alpha.audit_log DISABLE TRIGGER audit_log_append_only")
        .execute(&mut *conn)
        .await
        .expect("disable");
    sqlx::query("UPDATE t_alpha.audit_log SET outcome = 'failure' WHERE seq = $1")
        .bind(target)
        .execute(&mut *conn)
        .await
        .expect("edit");
    sqlx::query("ALTER TABLE t_alpha.audit_log ENABLE TRIGGER audit_log_append_only")
        .execute(&mut *conn)
        .await
        .expect("enable");
    target
}

#[tokio::test]
async fn a_superuser_edit_is_found_at_its_sequence_number() {
    let c = Constellation::start(false).await;
    c.create_tenant("alpha").await;
    write_records(&c, "alpha", 20, "t").await;
    wait_drained(&c, "t_alpha", 20).await;
    let target = edit_behind_the_triggers(&c, "t/11").await;
    let report = verify(&c, "alpha").await;
    assert_eq!(report.first_mismatch.map(|m| m.0), Some(target as u64));
    c.stop().await;
}

#[tokio::test]
async fn replicas_share_a_tenant_and_backlogs_drain_in_order() {
    let mut c = Constellation::start(false).await;
    c.create_tenant("alpha").await;
    // A backlog built while audit-svc is down.
    let audit = c.services.remove("audit").expect("audit");
    audit.stop().await.expect("stop");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let logged: i64 = log_len(&c, "t_alpha").await;
    // Records already waiting (e.g. provisioning) are part of the backlog too.
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM t_alpha.audit_outbox")
        .fetch_one(&c.db.admin_pool().await)
        .await
        .expect("outbox");
    let before = logged + waiting;
    let mut ids = Vec::new();
    for round in 0..5 {
        ids.extend(write_records(&c, "alpha", 40, &format!("r{round}")).await);
    }
    assert_eq!(log_len(&c, "t_alpha").await, logged, "nothing is sequenced while audit-svc is down");
    // Two replicas come up and drain while more records arrive.
    let a = c.start_replica("audit").await;
    let b = c.start_replica("audit").await;
    let tags: Vec<String> = (0..4).map(|w| format!("w{w}")).collect();
    let writers: Vec<_> = tags.iter().map(|tag| write_records(&c, "alpha", 50, tag)).collect();
    for more in futures::future::join_all(writers).await {
        ids.extend(more);
    }
    wait_drained(&c, "t_alpha", before + ids.len() as i64).await;
    let n = assert_contiguous(&c, "t_alpha").await;
    // Each record once. Other services' records (vault-svc's signing-key creation, say) may join
    // the log meanwhile, so the whole log is counted only as a lower bound.
    assert!(n >= before + ids.len() as i64);
    assert_eq!(logged_once(&c, &ids).await, ids.len() as i64);
    // The backlog came out in the order it went in.
    let order: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT event_id FROM t_alpha.audit_log WHERE resource LIKE 'r%' ORDER BY seq")
            .fetch_all(&c.db.admin_pool().await)
            .await
            .expect("order");
    assert_eq!(order, ids[..200].to_vec());
    assert_eq!(verify(&c, "alpha").await.first_mismatch, None);

    // A record delivered twice (at-least-once) is logged once.
    let dup = ids[0];
    sqlx::query("INSERT INTO t_alpha.audit_outbox (event_id, tenant_id, occurred_at, service, actor, action, resource, outcome) \
                 SELECT event_id, tenant_id, occurred_at, service, actor, action, resource, outcome FROM t_alpha.audit_log WHERE event_id = $1")
        .bind(dup)
        .execute(&c.db.admin_pool().await)
        .await
        .expect("redeliver");
    wait_drained(&c, "t_alpha", n).await;
    assert!(assert_contiguous(&c, "t_alpha").await >= n);
    assert_eq!(logged_once(&c, &ids).await, ids.len() as i64, "the redelivered record is logged once");
    let _ = a.stop().await;
    let _ = b.stop().await;
    c.stop().await;
}

/// A record whose wake-up was lost (its writer killed between the commit and the `NOTIFY`; here
/// written with no wake-up at all) is found by the sweep, which looks at every tenant at least
/// once per `service.sweep_interval_ms` (10 s by default).
#[tokio::test]
async fn a_record_whose_wake_up_was_lost_is_found_by_the_sweep() {
    let c = Constellation::start(false).await;
    let alpha = c.create_tenant("alpha").await;
    let before = {
        write_records(&c, "alpha", 1, "first").await;
        wait_drained(&c, "t_alpha", 1).await;
        log_len(&c, "t_alpha").await
    };
    let event_id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO t_alpha.audit_outbox (event_id, tenant_id, occurred_at, service, actor, action, resource, outcome) \
         VALUES ($1, $2, now(), 'vault', 'user:u1', 'test.event', 'unwoken/1', 'success')",
    )
    .bind(event_id)
    .bind(alpha)
    .execute(&c.db.admin_pool().await)
    .await
    .expect("a record without a wake-up");
    wait_drained(&c, "t_alpha", before + 1).await;
    let logged: i64 = sqlx::query_scalar("SELECT count(*) FROM t_alpha.audit_log WHERE event_id = $1")
        .bind(event_id)
        .fetch_one(&c.db.admin_pool().await)
        .await
        .expect("count");
    assert_eq!(logged, 1);
    assert_eq!(verify(&c, "alpha").await.first_mismatch, None);
    c.stop().await;
}

/// The log indexes each entry's request id, and an index entry holds at most about 2.7 kB. An
/// oversized request id used to reach a tenant's outbox and then fail every drain of it, so no
/// later record of any service reached the log. Now every service refuses it, and the outbox
/// itself refuses a row the log could not index.
#[tokio::test]
async fn an_oversized_request_id_is_refused_and_never_stalls_the_log() {
    use proto::audit::v1 as pb;
    use proto::audit::v1::audit_retention_service_client::AuditRetentionServiceClient;
    let c = Constellation::start(false).await;
    let alpha = c.create_tenant("alpha").await;
    let long: String = (0..250).map(|_| uuid::Uuid::new_v4().simple().to_string()).collect();
    let mut retention = AuditRetentionServiceClient::new(c.channel_as("operator", "audit"));
    let set = |request_id: &str| pb::SetRetentionPolicyRequest { retention_days: 3650, request_id: request_id.into() };

    // In the `x-request-id` metadata (a header any direct caller sets) and in the body's field.
    let mut by_header = req("alpha", None, set(""));
    by_header.metadata_mut().insert("x-request-id", long.parse().expect("ascii"));
    let err = retention.set_retention_policy(by_header).await.expect_err("oversized metadata");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("x-request-id: 1 to 128"), "{}", err.message());
    let err = retention.set_retention_policy(req("alpha", None, set(&long))).await.expect_err("oversized field");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("request_id: 1 to 128"), "{}", err.message());
    let err = retention.set_retention_policy(req("alpha", None, set("a b"))).await.expect_err("a space");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    // The same on a direct call to another service.
    let mut keys = proto::vault::v1::key_management_service_client::KeyManagementServiceClient::new(
        c.channel_as("operator", "vault"),
    );
    let mut by_header = req("alpha", None, proto::vault::v1::ListTenantKeysRequest {});
    by_header.metadata_mut().insert("x-request-id", long.parse().expect("ascii"));
    let err = keys.list_tenant_keys(by_header).await.expect_err("oversized metadata");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // A writer that skipped the check (a bug, a hand-written row) fails its own transaction.
    let err = sqlx::query(
        "INSERT INTO t_alpha.audit_outbox (event_id, tenant_id, occurred_at, service, actor, action, resource, outcome, request_id) \
         VALUES ($1, $2, now(), 'vault', 'user:u1', 'test.event', 'oversized/1', 'success', $3)",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(alpha)
    .bind(&long)
    .execute(&c.db.admin_pool().await)
    .await
    .expect_err("an oversized request id in the outbox");
    assert_eq!(err.as_database_error().and_then(|d| d.code()).as_deref(), Some("23514"), "{err}");

    // Nothing was written, and records still reach the log.
    let refused: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM t_alpha.audit_log WHERE action = 'audit.retention.set' OR resource = 'oversized/1'",
    )
    .fetch_one(&c.db.admin_pool().await)
    .await
    .expect("count");
    assert_eq!(refused, 0);
    retention.set_retention_policy(req("alpha", None, set("ok-1"))).await.expect("a valid request id");
    let before = log_len(&c, "t_alpha").await;
    write_records(&c, "alpha", 1, "after").await;
    wait_drained(&c, "t_alpha", before + 1).await;
    let logged: i64 = sqlx::query_scalar("SELECT count(*) FROM t_alpha.audit_log WHERE request_id = 'ok-1'")
        .fetch_one(&c.db.admin_pool().await)
        .await
        .expect("count");
    assert_eq!(logged, 1);
    c.stop().await;
}

async fn latest_checkpoint(c: &Constellation, at_least: u64) -> proto::audit::v1::Checkpoint {
    let mut client =
        proto::audit::v1::audit_log_service_client::AuditLogServiceClient::new(c.channel_as("operator", "audit"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let req = kit::client::with_context(
            tonic::Request::new(proto::audit::v1::GetLatestCheckpointRequest {}),
            Some("alpha"),
            None,
            None,
        );
        if let Ok(cp) = client.get_latest_checkpoint(req).await {
            let cp = cp.into_inner();
            if cp.tree_size >= at_least {
                return cp;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no checkpoint of size {at_least}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_trickle_of_records_is_checkpointed_once_per_interval() {
    let c = Constellation::start(false).await;
    c.create_tenant("alpha").await;
    write_records(&c, "alpha", 1, "first").await;
    latest_checkpoint(&c, log_len(&c, "t_alpha").await as u64).await;
    let admin = c.db.admin_pool().await;
    let checkpoints = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM t_alpha.checkpoints").fetch_one(&admin).await.expect("count")
    };
    let before = checkpoints().await;
    let start = tokio::time::Instant::now();
    // One record every 50 ms for three seconds: the sequencer gathers them into up to ten rounds a
    // second, and used to sign a checkpoint after each.
    let mut total = log_len(&c, "t_alpha").await;
    let vault = vault_db(&c);
    for i in 0..60 {
        write_records_with(&vault, "alpha", 1, &format!("trickle/{i}")).await;
        total += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_drained(&c, "t_alpha", total).await;
    // Other services' records (vault-svc's signing-key creation, say) may join the log at any
    // time, so the checkpoint covers at least the trickle rather than exactly it (a count taken
    // while something else still writes failed once under a full parallel run: 65 for 64).
    let last = latest_checkpoint(&c, total as u64).await;
    assert!(last.tree_size >= total as u64, "the trickle's end is checkpointed");
    let made = checkpoints().await - before;
    let interval = audit_svc::AuditSettings::default().checkpoint_interval();
    // At most one per interval since the trickle began, plus the one that covers its end.
    let bound = (start.elapsed().as_secs_f64() / interval.as_secs_f64()).ceil() as i64 + 1;
    assert!((1..=bound).contains(&made), "{made} checkpoints in {:?} (at most {bound})", start.elapsed());
    c.stop().await;
}

fn req<T>(tenant: &str, token: Option<&str>, msg: T) -> tonic::Request<T> {
    kit::client::with_context(tonic::Request::new(msg), Some(tenant), None, token)
}

#[tokio::test]
async fn checkpoints_are_signed_and_proofs_verify_independently() {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;
    use proto::audit::v1 as pb;

    let c = Constellation::start(false).await;
    let alpha = c.create_tenant("alpha").await;
    c.create_tenant("bravo").await;
    write_records(&c, "alpha", 50, "c").await;
    let n = log_len(&c, "t_alpha").await as u64;
    wait_drained(&c, "t_alpha", n as i64).await;
    let first = latest_checkpoint(&c, log_len(&c, "t_alpha").await as u64).await;

    // The note: origin, size, base64 root; the signature verifies with ring (not the signer's library).
    let (body, sigs) = audit_svc::domain::note::parse(&first.signed_note).expect("note");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(
        lines,
        vec!["strongroom.audit/alpha".to_owned(), first.tree_size.to_string(), B64.encode(&first.root_hash)]
    );
    let mut vault = proto::vault::v1::signing_service_client::SigningServiceClient::new(c.channel_as("audit", "vault"));
    let public = vault
        .get_public_key(req(
            "alpha",
            None,
            proto::vault::v1::GetPublicKeyRequest { key_name: "audit".into(), version: 0 },
        ))
        .await
        .expect("public key")
        .into_inner()
        .public_key;
    assert_eq!(sigs.len(), 1);
    let (name, id, sig) = &sigs[0];
    assert_eq!(name, "strongroom.audit/alpha");
    assert_eq!(*id, audit_svc::domain::note::key_id(name, &public));
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public)
        .verify(body.as_bytes(), sig)
        .expect("signature verifies");

    let mut log =
        proto::audit::v1::audit_log_service_client::AuditLogServiceClient::new(c.channel_as("operator", "audit"));
    let vk = log
        .get_verifier_key(req("alpha", None, pb::GetVerifierKeyRequest {}))
        .await
        .expect("verifier key")
        .into_inner()
        .verifier_key;
    assert!(vk.starts_with(&format!("strongroom.audit/alpha+{}+", hex_of(id))), "{vk}");

    // An entry with its inclusion proof in that checkpoint.
    let got = log.get_entry(req("alpha", None, pb::GetEntryRequest { seq: 10 })).await.expect("entry").into_inner();
    let entry = got.entry.expect("entry");
    let leaf = merkle::leaf_hash(&entry.canonical);
    assert_eq!(leaf.to_vec(), entry.leaf_hash);
    let fields: serde_json::Value = serde_json::from_slice(&entry.canonical).expect("canonical JSON");
    assert_eq!(fields["seq"], 10);
    let proof: Vec<merkle::Hash> = got.inclusion_proof.iter().map(|h| h.as_slice().try_into().expect("32")).collect();
    let root: merkle::Hash = first.root_hash.as_slice().try_into().expect("32");
    merkle::verify_inclusion(10, first.tree_size, &leaf, &proof, &root).expect("inclusion");

    // The log grows; the two checkpoints are consistent.
    write_records(&c, "alpha", 30, "d").await;
    let second = latest_checkpoint(&c, first.tree_size + 30).await;
    let cp = log
        .get_consistency_proof(req(
            "alpha",
            None,
            pb::GetConsistencyProofRequest { from_size: first.tree_size, to_size: second.tree_size },
        ))
        .await
        .expect("consistency")
        .into_inner();
    let proof: Vec<merkle::Hash> = cp.proof.iter().map(|h| h.as_slice().try_into().expect("32")).collect();
    let root2: merkle::Hash = second.root_hash.as_slice().try_into().expect("32");
    merkle::verify_consistency(first.tree_size, second.tree_size, &root, &root2, &proof).expect("consistent");
    let verified = log.verify_log(req("alpha", None, pb::VerifyLogRequest {})).await.expect("verify").into_inner();
    assert!(verified.ok, "{verified:?}");

    // Reading needs audit.events.read in this tenant.
    let signer = kit::testing::TestSigner::generate();
    signer.publish(&c.db.admin_pool().await).await;
    let mut gateway =
        proto::audit::v1::audit_log_service_client::AuditLogServiceClient::new(c.channel_as("gateway", "audit"));
    let mut claims = kit::testing::TestSigner::claims(alpha, "auditor");
    claims["permissions"] = serde_json::json!(["vault.secrets.read"]);
    let no_perm = signer.sign(&claims);
    let err = gateway
        .get_latest_checkpoint(req("alpha", Some(&no_perm), pb::GetLatestCheckpointRequest {}))
        .await
        .expect_err("no permission");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    claims["permissions"] = serde_json::json!(["audit.events.read"]);
    let auditor = signer.sign(&claims);
    gateway
        .get_latest_checkpoint(req("alpha", Some(&auditor), pb::GetLatestCheckpointRequest {}))
        .await
        .expect("auditor reads");
    let err = gateway
        .get_latest_checkpoint(req("bravo", Some(&auditor), pb::GetLatestCheckpointRequest {}))
        .await
        .expect_err("other tenant");
    assert_eq!(e2e::reason(&err), "TENANT_MISMATCH");
    let err = gateway
        .get_latest_checkpoint(req("alpha", None, pb::GetLatestCheckpointRequest {}))
        .await
        .expect_err("anonymous");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    c.stop().await;
}

fn hex_of(id: &[u8; 4]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn the_gateway_serves_the_audit_trail() {
    let c = Constellation::start(true).await;
    let alpha = c.create_tenant("alpha").await;
    write_records(&c, "alpha", 12, "g").await;
    let n = log_len(&c, "t_alpha").await;
    wait_drained(&c, "t_alpha", n).await;
    let total = log_len(&c, "t_alpha").await as u64;
    latest_checkpoint(&c, total).await;
    let signer = kit::testing::TestSigner::generate();
    signer.publish(&c.db.admin_pool().await).await;
    let mut claims = kit::testing::TestSigner::claims(alpha, "auditor");
    claims["permissions"] = serde_json::json!(["audit.events.read"]);
    let auditor = format!("Bearer {}", signer.sign(&claims));
    claims["permissions"] = serde_json::json!(["vault.secrets.read"]);
    let other = format!("Bearer {}", signer.sign(&claims));
    let get = |path: &'static str, token: &str| {
        let token = token.to_owned();
        let c = &c;
        async move {
            c.gateway_get(path, &[("x-strongroom-tenant", "alpha"), ("authorization", &token)]).await.expect("request")
        }
    };

    let (status, _, cp) = get("/v1/audit/checkpoint", &auditor).await;
    assert_eq!(status, 200, "{cp}");
    assert!(cp["signed_note"].as_str().expect("note").starts_with("strongroom.audit/alpha\n"));
    let (status, _, page) = get("/v1/audit/events?from=0&page_size=5", &auditor).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"].as_array().expect("events").len(), 5);
    assert_eq!(page["next_from"], 5);
    assert_eq!(page["events"][0]["fields"]["seq"], 0);
    let (status, _, entry) = get("/v1/audit/events/3", &auditor).await;
    assert_eq!(status, 200, "{entry}");
    assert_eq!(entry["inclusion_proof"]["leaf_index"], 3);
    assert!(entry["inclusion_proof"]["hashes"].as_array().is_some_and(|h| !h.is_empty()));
    assert_eq!(entry["checkpoint"]["signed_note"], cp["signed_note"]);
    let (status, _, vk) = get("/v1/audit/verifier-key", &auditor).await;
    assert_eq!(status, 200, "{vk}");
    assert!(vk["verifier_key"].as_str().expect("key").starts_with("strongroom.audit/alpha+"));
    let (status, _, proof) = get("/v1/audit/proofs/consistency?from=1&to=3", &auditor).await;
    assert_eq!(status, 200, "{proof}");
    let (status, _, body) = get("/v1/audit/proofs/consistency?from=3&to=1", &auditor).await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = get("/v1/audit/checkpoint", &other).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["reason"], "MISSING_PERMISSION");
    c.stop().await;
}

// Multi-threaded: the CLI runs as a blocking child process while this process serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_verifies_offline_and_tampering_is_found() {
    let _ = kit::telemetry::init("e2e", &kit::config::TelemetryConfig { otlp_endpoint: None, log: "error".into() });
    let c = Constellation::start(false).await;
    c.create_tenant("alpha").await;
    write_records(&c, "alpha", 25, "e").await;
    let n = log_len(&c, "t_alpha").await;
    wait_drained(&c, "t_alpha", n).await;
    latest_checkpoint(&c, log_len(&c, "t_alpha").await as u64).await;
    let mut log =
        proto::audit::v1::audit_log_service_client::AuditLogServiceClient::new(c.channel_as("operator", "audit"));
    let vk = log
        .get_verifier_key(req("alpha", None, proto::audit::v1::GetVerifierKeyRequest {}))
        .await
        .expect("verifier key")
        .into_inner()
        .verifier_key;

    let exe = std::env::current_exe().expect("exe");
    let cli = exe.parent().and_then(|p| p.parent()).expect("target").join("strongroom");
    assert!(cli.is_file(), "build the binaries first (cargo build --workspace --bins)");
    let dir = tempfile::tempdir().expect("tmp");
    let export = dir.path().join("alpha.jsonl");
    let url = |name: &str| kit::testing::https(c.addr(name));
    let out = std::process::Command::new(&cli)
        .args(["--ca"])
        .arg(c.pki.path("ca.pem"))
        .args(["--cert"])
        .arg(c.pki.path("operator.pem"))
        .args(["--key"])
        .arg(c.pki.path("operator-key.pem"))
        .args(["--auth", &url("auth"), "--vault", &url("vault"), "--audit", &url("audit"), "--ledger", &url("ledger")])
        .args(["audit", "export", "--tenant", "alpha", "--out"])
        .arg(&export)
        .output()
        .expect("export");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let verify = |file: &std::path::Path| {
        std::process::Command::new(&cli)
            .args(["audit", "verify", "--export"])
            .arg(file)
            .args(["--verifier-key", &vk])
            .output()
            .expect("verify")
    };
    let ok = verify(&export);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("valid"));

    // Rewrite one entry's canonical bytes (and even its hashes): the chain breaks at that entry.
    let text = std::fs::read_to_string(&export).expect("read");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut entry: serde_json::Value = serde_json::from_str(&lines[4]).expect("json");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut canonical: serde_json::Value =
        serde_json::from_slice(&b64.decode(entry["canonical"].as_str().expect("c")).expect("b64")).expect("json");
    canonical["outcome"] = serde_json::json!("failure");
    let bytes = serde_json::to_vec(&canonical).expect("json");
    entry["canonical"] = serde_json::json!(b64.encode(&bytes));
    entry["leaf_hash"] = serde_json::json!(b64.encode(merkle::leaf_hash(&bytes)));
    lines[4] = entry.to_string();
    let tampered = dir.path().join("tampered.jsonl");
    std::fs::write(&tampered, lines.join("\n")).expect("write");
    let bad = verify(&tampered);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("first mismatch at seq 4"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // Another tenant's verifier key does not verify this export.
    let other = vk.replace("alpha", "bravo");
    let out = std::process::Command::new(&cli)
        .args(["audit", "verify", "--export"])
        .arg(&export)
        .args(["--verifier-key", &other])
        .output()
        .expect("verify");
    assert!(!out.status.success());
    c.stop().await;
}

/// The value of the sample `name{labels}` in a `/metrics` exposition (0 when absent).
fn sample(metrics: &str, name_and_labels: &str) -> u64 {
    let prefix = format!("{name_and_labels} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

/// The `integrity.mismatch` entries of `alpha`'s log naming `resource`, read through audit-svc at
/// `grpc` as the operator.
async fn mismatch_records(c: &Constellation, grpc: std::net::SocketAddr, resource: &str) -> Vec<serde_json::Value> {
    let channel = kit::testing::channel(&c.pki, "operator", grpc, "audit");
    let mut log = proto::audit::v1::audit_log_service_client::AuditLogServiceClient::new(channel);
    let list = proto::audit::v1::ListEntriesRequest {
        action: audit_svc::integrity::MISMATCH_ACTION.into(),
        resource: resource.into(),
        page_size: 100,
        ..Default::default()
    };
    let entries = log.list_entries(req("alpha", None, list)).await.expect("reads still answer").into_inner().entries;
    entries.iter().map(|e| serde_json::from_slice(&e.canonical).expect("canonical json")).collect()
}

/// Continuous verification (issue 33): an edit behind the triggers' back is found without anyone
/// asking. The background job counts it in `/metrics` and records it in the log once, at the first
/// bad sequence number, while the log goes on answering reads and taking writes.
#[tokio::test]
async fn a_superuser_edit_is_found_by_the_continuous_verification_and_recorded_once() {
    let mut c = Constellation::start(false).await;
    c.create_tenant("alpha").await;
    write_records(&c, "alpha", 20, "t").await;
    wait_drained(&c, "t_alpha", 20).await;
    // One audit-svc, verifying every 200 ms and fully every second: records counted exactly.
    c.services.remove("audit").expect("audit").stop().await.expect("stop");
    let ((grpc_listener, grpc), (admin_listener, admin)) =
        (kit::testing::listener().await, kit::testing::listener().await);
    let upstream = |name: &str| Some(kit::testing::https(c.addr(name)));
    let upstreams = kit::config::UpstreamsConfig {
        auth: upstream("auth"),
        vault: upstream("vault"),
        audit: Some(kit::testing::https(grpc)),
        ledger: upstream("ledger"),
        timeout_ms: 10_000,
    };
    let mut cfg = kit::testing::service_config("audit", grpc, admin, &c.db, &c.pki, upstreams);
    cfg.jwt.revocations_url = Some(c.redis.clone().into());
    let settings =
        audit_svc::AuditSettings { integrity_interval_ms: 200, integrity_full_interval_ms: 1000, ..Default::default() };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listeners = kit::server::Listeners { grpc: grpc_listener, admin: admin_listener };
    let mut audit = tokio::spawn(audit_svc::run(cfg.with_settings(settings), listeners, async move {
        let _ = stopped.await;
    }));
    let operator = kit::testing::channel(&c.pki, "operator", grpc, "audit");
    tokio::select! {
        r = kit::testing::wait_serving(operator, "", Duration::from_secs(60)) => r.expect("audit-svc serving"),
        r = &mut audit => panic!("audit-svc stopped: {r:?}"),
    }

    // Entries appended after the first full pass are verified incrementally, from its last link.
    let failures = "strongroom_integrity_failures_total{chain=\"audit_log\"}";
    let incremental = "strongroom_integrity_checked_entries_total{chain=\"audit_log\",pass=\"incremental\"}";
    // A batch appended just before a full pass is due is verified by that full pass instead (both
    // run on the same ticks): another batch then, until one is verified incrementally.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut batch = 0;
    'verified: loop {
        write_records(&c, "alpha", 5, &format!("late{batch}")).await;
        batch += 1;
        let this_batch = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < this_batch {
            if sample(&e2e::scrape_metrics(admin).await, incremental) >= 5 {
                break 'verified;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(tokio::time::Instant::now() < deadline, "new entries were not verified incrementally");
    }
    assert_eq!(sample(&e2e::scrape_metrics(admin).await, failures), 0, "an intact log has no mismatch");

    let target = edit_behind_the_triggers(&c, "t/11").await;

    let full_checked = "strongroom_integrity_checked_entries_total{chain=\"audit_log\",pass=\"full\"}";
    let resource = format!("audit_log/{target}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (metrics, record) = loop {
        let metrics = e2e::scrape_metrics(admin).await;
        if sample(&metrics, failures) >= 1
            && let Some(record) = mismatch_records(&c, grpc, &resource).await.pop()
        {
            break (metrics, record);
        }
        assert!(tokio::time::Instant::now() < deadline, "the edit at seq {target} was not found: {metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("{}", metrics.lines().filter(|l| l.starts_with("strongroom_integrity")).collect::<Vec<_>>().join("\n"));
    eprintln!("{record}");
    assert_eq!(record["outcome"], "failure");
    assert_eq!(record["service"], "audit");
    assert_eq!(record["details"]["first_bad_seq"], target);
    assert_eq!(record["details"]["chain"], "audit_log");

    // Writes go on, and further passes find the same mismatch without recording it again.
    let n = log_len(&c, "t_alpha").await;
    write_records(&c, "alpha", 3, "after").await;
    wait_drained(&c, "t_alpha", n + 3).await;
    let (mut passes, mut last) = (0, sample(&metrics, full_checked));
    while passes < 2 {
        let now = sample(&e2e::scrape_metrics(admin).await, full_checked);
        passes += u32::from(now > last);
        last = now;
        assert!(tokio::time::Instant::now() < deadline + Duration::from_secs(30), "no further full pass");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(mismatch_records(&c, grpc, &resource).await.len(), 1, "one record per mismatch");
    assert_eq!(sample(&e2e::scrape_metrics(admin).await, failures), 1);
    let report = verify(&c, "alpha").await;
    assert_eq!(report.first_mismatch.map(|m| m.0), Some(target as u64));

    let _ = stop.send(());
    audit.await.expect("join").expect("audit-svc stopped cleanly");
    c.stop().await;
}
