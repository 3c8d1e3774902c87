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
    let db = Db::connect_lazy(&c.db.runtime_url("vault"), 2).expect("pool");
    let t = tenant(&db, slug).await;
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

    // The stored perfect-subtree nodes give the RFC 9162 root of the leaves.
    let admin = c.db.admin_pool().await;
    let leaves: Vec<Vec<u8>> = sqlx::query_scalar("SELECT leaf_hash FROM t_alpha.audit_log ORDER BY seq")
        .fetch_all(&admin)
        .await
        .expect("leaves");
    let nodes: Vec<(i16, i64, Vec<u8>)> =
        sqlx::query_as("SELECT level, idx, hash FROM t_alpha.merkle_nodes").fetch_all(&admin).await.expect("nodes");
    let map: std::collections::HashMap<(u8, u64), merkle::Hash> =
        nodes.into_iter().map(|(l, i, h)| ((l as u8, i as u64), h.try_into().expect("32"))).collect();
    let get = |l: u8, i: u64| map.get(&(l, i)).copied();
    let leaf_hashes: Vec<merkle::Hash> = leaves.into_iter().map(|h| h.try_into().expect("32")).collect();
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
    write_records(&c, "alpha", 3, "x").await;
    wait_drained(&c, "t_alpha", 3).await;
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
    ] {
        let err = sqlx::query(stmt).execute(&admin).await.expect_err(stmt);
        assert!(err.to_string().contains("append-only"), "{stmt}: {err}");
    }
    c.stop().await;
}

#[tokio::test]
async fn a_superuser_edit_is_found_at_its_sequence_number() {
    let c = Constellation::start(false).await;
    c.create_tenant("alpha").await;
    write_records(&c, "alpha", 20, "t").await;
    wait_drained(&c, "t_alpha", 20).await;
    let admin = c.db.admin_pool().await;
    let target: i64 = sqlx::query_scalar("SELECT seq FROM t_alpha.audit_log WHERE resource = 't/11'")
        .fetch_one(&admin)
        .await
        .expect("seq");
    let mut conn = admin.acquire().await.expect("conn");
    for stmt in [
        "ALTER TABLE t_alpha.audit_log DISABLE TRIGGER audit_log_append_only",
        "UPDATE t_alpha.audit_log SET outcome = 'failure' WHERE resource = 't/11'",
        "ALTER TABLE t_alpha.audit_log ENABLE TRIGGER audit_log_append_only",
    ] {
        sqlx::query(stmt).execute(&mut *conn).await.expect(stmt);
    }
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
    let before: i64 = log_len(&c, "t_alpha").await;
    let mut ids = Vec::new();
    for round in 0..5 {
        ids.extend(write_records(&c, "alpha", 40, &format!("r{round}")).await);
    }
    assert_eq!(log_len(&c, "t_alpha").await, before, "nothing is sequenced while audit-svc is down");
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
    assert_eq!(n, before + ids.len() as i64);
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
    assert_eq!(assert_contiguous(&c, "t_alpha").await, n);
    let _ = a.stop().await;
    let _ = b.stop().await;
    c.stop().await;
}
