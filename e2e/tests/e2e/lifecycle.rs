//! Server lifecycle: graceful shutdown drains in-flight calls; health follows the database.

use std::time::Duration;

use e2e::Constellation;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn graceful_shutdown_finishes_an_in_flight_call() {
    let c = Constellation::start(false).await;
    c.create_tenant("slow").await;

    // Hold the tenant's registry row so auth's SuspendTenant stays in flight.
    let admin = c.db.admin_pool().await;
    let mut holder = admin.begin().await.expect("transaction");
    sqlx::query("SELECT 1 FROM control.tenants WHERE slug = 'slow' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .expect("row lock");
    let channel = c.channel_as("operator", "auth");
    let call = tokio::spawn(async move {
        let mut client = proto::auth::v1::tenant_service_client::TenantServiceClient::new(channel);
        client
            .suspend_tenant(proto::auth::v1::SuspendTenantRequest { slug: "slow".into(), reason: "drain test".into() })
            .await
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&admin)
        .await
        .expect("locks");
        if waiting > 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the call never reached the lock");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut services = c.services;
    let mut auth = services.remove("auth").expect("auth");
    auth.trigger_stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!auth.is_finished(), "the server must wait for the in-flight call");
    assert!(!call.is_finished());

    holder.rollback().await.expect("unlock");
    let response = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("call finished")
        .expect("join")
        .expect("call succeeded");
    let tenant = response.into_inner().tenant.expect("tenant");
    assert_eq!(tenant.status, proto::auth::v1::TenantStatus::Suspended as i32);
    tokio::time::timeout(Duration::from_secs(10), auth.stop()).await.expect("server stopped").expect("clean stop");
    for (_, s) in services {
        let _ = s.stop().await;
    }
}

async fn status(c: &Constellation) -> Option<i32> {
    let mut client = HealthClient::new(c.channel_as("operator", "vault"));
    client
        .check(HealthCheckRequest { service: "strongroom.vault.v1.KeyManagementService".into() })
        .await
        .ok()
        .map(|r| r.into_inner().status)
}

#[tokio::test]
async fn health_is_not_serving_while_the_database_is_unreachable() {
    let c = Constellation::start(false).await;
    assert_eq!(status(&c).await, Some(ServingStatus::Serving as i32));
    let base = sqlx::PgPool::connect(&kit::testing::base_database_url()).await.expect("base");
    let name = c.db.name.clone();
    sqlx::query(&format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false")).execute(&base).await.expect("block");
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&name)
    .execute(&base)
    .await
    .expect("terminate");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while status(&c).await != Some(ServingStatus::NotServing as i32) {
        assert!(tokio::time::Instant::now() < deadline, "still serving without a database");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sqlx::query(&format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true")).execute(&base).await.expect("unblock");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while status(&c).await != Some(ServingStatus::Serving as i32) {
        assert!(tokio::time::Instant::now() < deadline, "did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.stop().await;
}

#[tokio::test]
async fn a_service_refuses_to_serve_through_a_role_that_bypasses_rls() {
    let c = Constellation::start(false).await;
    let (grpc, grpc_addr) = kit::testing::listener().await;
    let (admin, admin_addr) = kit::testing::listener().await;
    let mut cfg = kit::testing::service_config("vault", grpc_addr, admin_addr, &c.db, &c.pki, Default::default());
    cfg.upstreams.auth = Some(kit::testing::https(c.addr("auth")));
    // The operator's slip: the superuser URL as the runtime URL.
    cfg.database.url = c.db.admin_url();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(vault_svc::run(
        cfg.with_settings(c.hsm.vault_settings()),
        kit::server::Listeners { grpc, admin },
        async move {
            let _ = rx.await;
        },
    ));
    let channel = kit::testing::channel(&c.pki, "operator", grpc_addr, "vault");
    let err = kit::testing::wait_serving(channel, "", Duration::from_secs(3)).await.expect_err("must not serve");
    assert!(err.contains("status 2"), "{err}");
    let _ = stop.send(());
    let _ = task.await;
    c.stop().await;
}

/// The pool pings only connections idle for a second or more. A pooled connection the server
/// ended a moment ago fails its next statement as DATABASE_UNAVAILABLE (retryable, never a 500)
/// and leaves the pool; the retry gets a new connection. One idle longer is pinged and replaced
/// before use, and the statement succeeds.
#[tokio::test]
async fn a_connection_the_server_ended_fails_once_as_unavailable() {
    let db = kit::testing::TestDb::create().await;
    let admin = db.admin_pool().await;
    let pool = kit::Db::connect_lazy(&db.admin_url(), 1).expect("pool");
    let end_pooled_connection = || async {
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(pool.control_pool()).await.expect("pid");
        // sqlx pings a connection as it returns it to the pool; end it only once it is back.
        while pool.control_pool().num_idle() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let idle_since = std::time::Instant::now();
        sqlx::query("SELECT pg_terminate_backend($1)").bind(pid).execute(&admin).await.expect("terminate");
        for _ in 0..100 {
            let alive: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
                .bind(pid)
                .fetch_one(&admin)
                .await
                .expect("activity");
            if !alive {
                return idle_since;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("backend {pid} did not end");
    };

    // A busy machine may take most of a second to end the backend; then the pool would ping the
    // connection, which is the other case. Try again until it is ended well within the second.
    let mut seen = false;
    for _ in 0..5 {
        if end_pooled_connection().await.elapsed() > Duration::from_millis(700) {
            sqlx::query("SELECT 1").execute(pool.control_pool()).await.expect("pinged and replaced");
            continue;
        }
        let e = sqlx::query("SELECT 1").execute(pool.control_pool()).await.expect_err("the ended connection is used");
        let raw = format!("{e}");
        let e = kit::tenancy::db_error(e);
        assert_eq!((e.code, e.reason.as_ref()), (kit::ErrorCode::Unavailable, "DATABASE_UNAVAILABLE"), "{raw}");
        sqlx::query("SELECT 1").execute(pool.control_pool()).await.expect("the retry gets a new connection");
        seen = true;
        break;
    }
    assert!(seen, "the backend never ended within 0.7 s of its connection's return to the pool");

    end_pooled_connection().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    sqlx::query("SELECT 1").execute(pool.control_pool()).await.expect("an idle connection is pinged first");
}
