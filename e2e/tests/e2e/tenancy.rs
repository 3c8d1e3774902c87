//! Tenancy, proven in PostgreSQL itself: row-level security, per-service grants, the operator's
//! migration step (no service holds the administrative URL), concurrent registration and hostile
//! slugs.

use std::time::Duration;

use e2e::{Constellation, reason};
use kit::outbox::{Actor, AuditRecord, Outcome};
use kit::{Db, TenantSlug};

#[tokio::test]
async fn a_tenant_transaction_cannot_see_another_tenants_rows() {
    let c = Constellation::start(false).await;
    c.create_tenant("alpha").await;
    c.create_tenant("bravo").await;
    let db = Db::connect_lazy(&c.db.runtime_url("vault"), 2).expect("pool");
    let alpha = db.tenant(&TenantSlug::parse("alpha").expect("slug")).await.expect("alpha");

    let mut tx = db.begin(&alpha).await.expect("tx");
    let own: i64 =
        sqlx::query_scalar("SELECT count(*) FROM vault_settings").fetch_one(tx.conn()).await.expect("own rows");
    assert_eq!(own, 1, "the tenant sees its own row");
    // A hand-written query naming the other tenant's schema: the grant allows it, RLS hides every row.
    let other: i64 =
        sqlx::query_scalar("SELECT count(*) FROM t_bravo.vault_settings").fetch_one(tx.conn()).await.expect("query");
    assert_eq!(other, 0, "tenant B's rows are invisible inside tenant A's transaction");
    // Writing into B's table from A's scope is refused by the policy's WITH CHECK.
    let forged = uuid::Uuid::new_v4();
    let err = sqlx::query("INSERT INTO t_bravo.vault_settings (tenant_id) VALUES ($1)")
        .bind(forged)
        .execute(tx.conn())
        .await
        .expect_err("cross-tenant insert refused");
    assert!(err.to_string().contains("row-level security"), "{err}");
    tx.rollback().await.expect("rollback");

    // Outside any TenantTx (no tenant setting) nothing matches.
    let pool = c.db.pool_as("strongroom_vault").await;
    let none: i64 =
        sqlx::query_scalar("SELECT count(*) FROM t_alpha.vault_settings").fetch_one(&pool).await.expect("query");
    assert_eq!(none, 0, "a missing tenant setting matches no row");
    c.stop().await;
}

#[tokio::test]
async fn a_service_role_cannot_read_another_services_tables() {
    let c = Constellation::start(false).await;
    c.create_tenant("alpha").await;
    let vault = c.db.pool_as("strongroom_vault").await;
    for table in ["t_alpha.tenant_policy", "t_alpha.retention_policy", "t_alpha.ledgers", "control.signing_keys"] {
        let err = sqlx::query(&format!("SELECT 1 FROM {table}")).execute(&vault).await.expect_err(table);
        assert!(err.to_string().contains("permission denied"), "{table}: {err}");
    }
    // No service can register a tenant, create a schema or rewrite the migration bookkeeping:
    // those are the operator step's, which holds the administrative URL.
    for service in e2e::SERVICES {
        let pool = c.db.pool_as(&kit::migrate::service_role(service)).await;
        for stmt in [
            "INSERT INTO control.tenants (slug) VALUES ('intruder')",
            "CREATE SCHEMA t_intruder",
            "DELETE FROM control.schema_migrations",
            "CREATE TABLE control.intruder (x int)",
        ] {
            let err = sqlx::query(stmt).execute(&pool).await.expect_err(stmt);
            assert!(err.to_string().contains("permission denied"), "{service}: {stmt}: {err}");
        }
    }
    // Nobody but auth-svc writes the registry; vault's role may not.
    let err =
        sqlx::query("UPDATE control.tenants SET status = 'terminated'").execute(&vault).await.expect_err("update");
    assert!(err.to_string().contains("permission denied"), "{err}");
    // No service role owns a table or bypasses RLS.
    let admin = c.db.admin_pool().await;
    let owners: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT tableowner::text FROM pg_tables WHERE schemaname IN ('control', 't_alpha')",
    )
    .fetch_all(&admin)
    .await
    .expect("owners");
    assert_eq!(owners, vec!["strongroom_owner".to_owned()]);
    let bypass: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'strongroom_%' AND (rolbypassrls OR rolsuper)",
    )
    .fetch_one(&admin)
    .await
    .expect("roles");
    assert_eq!(bypass, 0);
    c.stop().await;
}

#[tokio::test]
async fn concurrent_registrations_apply_each_migration_once() {
    let c = Constellation::start(false).await;
    // Three operator steps at once, each with connections of its own.
    let migrators: Vec<kit::migrate::Migrator> = (0..3)
        .map(|_| kit::migrate::Migrator::connect_lazy(&c.db.admin_url(), &e2e::MIGRATIONS).expect("migrator"))
        .collect();
    let slug = TenantSlug::parse("gamma").expect("slug");
    let (a, b, d) = tokio::join!(
        migrators[0].register(&slug, None),
        migrators[1].register(&slug, None),
        migrators[2].register(&slug, None)
    );
    let results = [a.expect("first"), b.expect("second"), d.expect("third")];
    assert_eq!(results.iter().filter(|(_, created, _)| *created).count(), 1, "registered once");
    let ids: std::collections::HashSet<uuid::Uuid> = results.iter().map(|(t, _, _)| t.id.0).collect();
    assert_eq!(ids.len(), 1, "one tenant");
    let total: usize = results.iter().map(|(_, _, applied)| applied.len()).sum();
    let expected = kit::migrate::KIT.tenant.len() + e2e::MIGRATIONS.iter().map(|m| m.tenant.len()).sum::<usize>();
    assert_eq!(total, expected, "each migration applied exactly once");
    let admin = c.db.admin_pool().await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM control.schema_migrations WHERE schema_name = 't_gamma'")
        .fetch_one(&admin)
        .await
        .expect("bookkeeping");
    assert_eq!(rows as usize, expected);
    c.stop().await;
}

/// A service holds no administrative URL and never migrates: started on a schema older than its
/// build, it answers NOT_SERVING and says which migrations are missing, until the operator's
/// `strongroom migrate` step has run.
#[tokio::test]
async fn a_service_waits_for_the_migrate_step_before_serving() {
    let c = Constellation::start(false).await;
    // A tenant registered by an operator step that knew only auth-svc's migrations (an older
    // build's step, or one interrupted): its schema lacks the ledger's tables.
    let older = kit::migrate::Migrator::connect_lazy(&c.db.admin_url(), &[auth_svc::MIGRATIONS]).expect("migrator");
    older.register(&TenantSlug::parse("delta").expect("slug"), None).await.expect("register");
    let admin = c.db.admin_pool().await;
    let exists = || sqlx::query_scalar::<_, bool>("SELECT to_regclass('t_delta.ledgers') IS NOT NULL");
    assert!(!exists().fetch_one(&admin).await.expect("check"));
    let runtime = kit::Db::connect_lazy(&c.db.runtime_url("ledger"), 1).expect("pool");
    let pending = kit::migrate::pending(runtime.control_pool(), &ledger_svc::MIGRATIONS, 100).await.expect("pending");
    assert_eq!(pending.len(), ledger_svc::MIGRATIONS.tenant.len(), "{pending:?}");
    assert!(pending.iter().all(|p| p.starts_with("t_delta: ledger/") && p.ends_with("(missing)")), "{pending:?}");

    let (grpc, grpc_addr) = kit::testing::listener().await;
    let (admin_listener, admin_addr) = kit::testing::listener().await;
    let upstreams = kit::config::UpstreamsConfig {
        auth: Some(kit::testing::https(c.addr("auth"))),
        vault: Some(kit::testing::https(c.addr("vault"))),
        audit: Some(kit::testing::https(c.addr("audit"))),
        ledger: Some(kit::testing::https(c.addr("ledger"))),
        timeout_ms: 10_000,
    };
    let mut cfg = kit::testing::service_config("ledger", grpc_addr, admin_addr, &c.db, &c.pki, upstreams);
    cfg.jwt.revocations_url = Some(c.redis.clone().into());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(ledger_svc::run(
        cfg.with_settings(ledger_svc::LedgerSettings::default()),
        kit::server::Listeners { grpc, admin: admin_listener },
        async move {
            let _ = rx.await;
        },
    ));
    let channel = || kit::testing::channel(&c.pki, "operator", grpc_addr, "ledger");
    let err = kit::testing::wait_serving(channel(), "", Duration::from_secs(3)).await.expect_err("must not serve");
    assert!(err.contains("status 2"), "{err}");
    assert!(!exists().fetch_one(&admin).await.expect("check"), "the service migrated nothing itself");

    // The operator's step brings the schema up to date; the waiting service then serves.
    e2e::migrate(&c.db).await;
    assert!(exists().fetch_one(&admin).await.expect("check"));
    kit::testing::wait_serving(channel(), "", Duration::from_secs(60)).await.expect("serving after migrate");
    let _ = stop.send(());
    let _ = task.await;
    c.stop().await;
}

#[tokio::test]
async fn hostile_slugs_are_refused_before_sql() {
    let c = Constellation::start(false).await;
    let admin = c.db.admin_pool().await;
    let schemas_before: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_namespace").fetch_one(&admin).await.expect("count");
    let long = "a".repeat(41);
    let mut auth = proto::auth::v1::tenant_service_client::TenantServiceClient::new(c.channel_as("operator", "auth"));
    for slug in ["a; drop schema control", "../x", "Upper", long.as_str(), "x'); DROP TABLE control.tenants; --", ""] {
        let err = auth
            .create_tenant(proto::auth::v1::CreateTenantRequest {
                slug: slug.into(),
                request_id: String::new(),
                ..Default::default()
            })
            .await
            .expect_err(slug);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{slug}");
        assert_eq!(reason(&err), "INVALID_FIELD");
        c.register_tenant(slug).await.expect_err(slug);
    }
    let schemas_after: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_namespace").fetch_one(&admin).await.expect("count");
    assert_eq!(schemas_before, schemas_after);
    let tenants: i64 =
        sqlx::query_scalar("SELECT count(*) FROM control.tenants").fetch_one(&admin).await.expect("registry intact");
    assert_eq!(tenants, 0);
    // auth-svc cannot register a tenant: an unregistered (but well-formed) one is NOT_FOUND, and
    // nothing is created for it.
    let err = auth
        .create_tenant(proto::auth::v1::CreateTenantRequest {
            slug: "ghost".into(),
            owner_email: "owner@ghost.example".into(),
            ..Default::default()
        })
        .await
        .expect_err("unregistered");
    assert_eq!(err.code(), tonic::Code::NotFound);
    let ghost: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 't_ghost')")
        .fetch_one(&admin)
        .await
        .expect("q");
    assert!(!ghost);
    c.stop().await;
}

/// audit-svc is woken after a commit with audit records, by the writing process and outside the
/// transaction: a `NOTIFY` inside it would make every such commit wait for the previous one.
#[tokio::test]
async fn a_commit_with_audit_records_wakes_audit_svc_after_the_transaction() {
    let c = Constellation::start(false).await;
    c.create_tenant("alpha").await;
    let admin = c.db.admin_pool().await;
    let triggers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_trigger t JOIN pg_class r ON r.oid = t.tgrelid \
         JOIN pg_namespace n ON n.oid = r.relnamespace \
         WHERE n.nspname = 't_alpha' AND r.relname = 'audit_outbox' AND NOT t.tgisinternal AND t.tgfoid = \
         'control.audit_outbox_notify()'::regprocedure",
    )
    .fetch_one(&admin)
    .await
    .expect("triggers");
    assert_eq!(triggers, 0, "no NOTIFY inside the writing transaction");

    let mut listener = sqlx::postgres::PgListener::connect_with(&admin).await.expect("listener");
    listener.listen(kit::outbox::WAKE_CHANNEL).await.expect("listen");
    // One connection: the transaction's, then (after its commit) the wake-up's.
    let db = Db::connect_lazy(&c.db.runtime_url("vault"), 1).expect("pool");
    let alpha = db.tenant(&TenantSlug::parse("alpha").expect("slug")).await.expect("alpha");
    let mut tx = db.begin(&alpha).await.expect("tx");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(tx.conn()).await.expect("pid");
    let record =
        AuditRecord::new("vault", Actor::User("u1".into()), "settings.update", "vault_settings", Outcome::Success);
    tx.record(record).await.expect("record");
    tx.commit().await.expect("commit");
    let want = alpha.id.0.hyphenated().to_string();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let n = tokio::time::timeout_at(deadline, listener.recv())
            .await
            .expect("a wake-up from the writer's connection")
            .expect("notification");
        if n.payload() == want && n.process_id() == pid as u32 {
            break;
        }
    }
    c.stop().await;
}

/// The count of `event` in a `/metrics` exposition (every service of a test shares one process, so
/// any service's admin listener shows every service's events).
fn events(metrics: &str, event: &str) -> u64 {
    let prefix = format!("strongroom_events_total{{event=\"{event}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

/// Idle tenants cost audit-svc's outbox sweep and ledger-svc's expiry sweep one look each per
/// sweep interval (10 s and 30 s), spread over it. Both used to look at every tenant every second:
/// 500 idle tenants took two thirds of a core.
#[tokio::test]
async fn idle_tenants_are_swept_once_per_interval_not_every_second() {
    let c = Constellation::start(false).await;
    const TENANTS: u64 = 12;
    for i in 0..TENANTS {
        c.create_tenant(&format!("idle{i}")).await;
    }
    // Each new tenant is looked at once when first listed (ledger-svc lists every 5 s).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let admin = c.services["audit"].admin;
    let before = e2e::scrape_metrics(admin).await;
    let window = Duration::from_secs(4);
    tokio::time::sleep(window).await;
    let after = e2e::scrape_metrics(admin).await;
    for event in ["audit_outbox_drain", "ledger_expiry_scan"] {
        let looks = events(&after, event) - events(&before, event);
        // Every second, that would be about TENANTS × 4; once per interval, each tenant at most
        // once in a window shorter than the interval (twice for a tenant first listed in it).
        assert!(looks <= 2 * TENANTS, "{event}: {looks} looks at {TENANTS} idle tenants in {window:?}");
    }
    assert!(events(&after, "audit_outbox_drain") > 0 && events(&after, "ledger_expiry_scan") > 0, "both sweeps ran");
    c.stop().await;
}

#[tokio::test]
async fn audit_records_commit_with_the_change_and_stay_in_their_tenant() {
    let c = Constellation::start(false).await;
    c.create_tenant("alpha").await;
    c.create_tenant("bravo").await;
    let db = Db::connect_lazy(&c.db.runtime_url("vault"), 2).expect("pool");
    let alpha = db.tenant(&TenantSlug::parse("alpha").expect("slug")).await.expect("alpha");
    let bravo = db.tenant(&TenantSlug::parse("bravo").expect("slug")).await.expect("bravo");

    // Rolled back: the record disappears with the change.
    let mut tx = db.begin(&alpha).await.expect("tx");
    let dropped =
        AuditRecord::new("vault", Actor::User("u1".into()), "settings.update", "vault_settings", Outcome::Success);
    let dropped_id = dropped.event_id;
    tx.record(dropped).await.expect("record");
    sqlx::query("UPDATE vault_settings SET key_cache_ttl_secs = 60").execute(tx.conn()).await.expect("change");
    tx.rollback().await.expect("rollback");

    // Committed: both are there.
    let mut tx = db.begin(&alpha).await.expect("tx");
    let kept =
        AuditRecord::new("vault", Actor::User("u1".into()), "settings.update", "vault_settings", Outcome::Success)
            .detail("ttl", 60);
    let kept_id = kept.event_id;
    tx.record(kept).await.expect("record");
    sqlx::query("UPDATE vault_settings SET key_cache_ttl_secs = 60").execute(tx.conn()).await.expect("change");
    tx.commit().await.expect("commit");

    // A service writes in its own name only: the `service` column is stamped from the login role.
    let mut tx = db.begin(&alpha).await.expect("tx");
    let spoofed = AuditRecord::new("auth", Actor::User("u1".into()), "login.success", "user/u1", Outcome::Success);
    let spoofed_id = spoofed.event_id;
    tx.record(spoofed).await.expect("record");
    tx.commit().await.expect("commit");
    let admin = c.db.admin_pool().await;
    let stamped: String = sqlx::query_scalar("SELECT service FROM (SELECT event_id, service, action, outcome, details FROM t_alpha.audit_outbox UNION ALL SELECT event_id, service, action, outcome, details FROM t_alpha.audit_log) AS records WHERE event_id = $1")
        .bind(spoofed_id)
        .fetch_one(&admin)
        .await
        .expect("row");
    assert_eq!(stamped, "vault");

    // Secrets in details are refused.
    let mut tx = db.begin(&alpha).await.expect("tx");
    let leaky = AuditRecord::new("vault", Actor::Anonymous, "x", "y", Outcome::Success).detail("password", "hunter2");
    assert!(tx.record(leaky).await.is_err());
    tx.rollback().await.expect("rollback");

    let audit = Db::connect_lazy(&c.db.runtime_url("audit"), 2).expect("pool");
    let mut tx = audit.begin(&alpha).await.expect("tx");
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT event_id FROM (SELECT event_id, service, action, outcome, details FROM audit_outbox UNION ALL SELECT event_id, service, action, outcome, details FROM audit_log) AS records WHERE action = 'settings.update'")
        .fetch_all(tx.conn())
        .await
        .expect("q");
    assert_eq!(ids, vec![kept_id]);
    assert!(!ids.contains(&dropped_id));
    // The operator step's registration is audited once, in the same transaction, naming every
    // migration it applied.
    let created: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT service, details FROM (SELECT event_id, service, action, outcome, details FROM audit_outbox UNION ALL SELECT event_id, service, action, outcome, details FROM audit_log) AS records WHERE action = 'tenant.create'",
    )
    .fetch_all(tx.conn())
    .await
    .expect("q");
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0].0, kit::migrate::MIGRATE_SERVICE);
    let migrations = created[0].1["migrations"].as_array().map(Vec::len).unwrap_or_default();
    let expected = kit::migrate::KIT.tenant.len() + e2e::MIGRATIONS.iter().map(|m| m.tenant.len()).sum::<usize>();
    assert_eq!(migrations, expected, "{created:?}");
    tx.rollback().await.expect("rollback");
    let mut tx = audit.begin(&bravo).await.expect("tx");
    let leaked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM (SELECT event_id, service, action, outcome, details FROM t_alpha.audit_outbox UNION ALL SELECT event_id, service, action, outcome, details FROM t_alpha.audit_log) AS records").fetch_one(tx.conn()).await.expect("q");
    assert_eq!(leaked, 0);
    tx.rollback().await.expect("rollback");
    c.stop().await;
}
