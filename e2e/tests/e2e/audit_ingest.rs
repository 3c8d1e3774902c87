//! Audit ingestion and reading against real services: `AppendBatch` (idempotent, pseudonymized),
//! the gateway recording requests, filtered queries, JSON Lines export and the live stream (gRPC and
//! Server-Sent Events), and the pipeline's state on audit-svc's `/metrics` (outbox backlog,
//! checkpoint staleness).

use std::collections::HashMap;
use std::time::Duration;

use audit_svc::domain::merkle;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use e2e::Constellation;
use kit::testing::TestSigner;
use proto::audit::v1 as pb;
use proto::audit::v1::audit_ingest_service_client::AuditIngestServiceClient;
use proto::audit::v1::audit_log_service_client::AuditLogServiceClient;

fn req<T>(tenant: &str, token: Option<&str>, msg: T) -> tonic::Request<T> {
    kit::client::with_context(tonic::Request::new(msg), Some(tenant), None, token)
}

fn event(actor: &str, action: &str, resource: &str, outcome: &str, request_id: &str) -> pb::Event {
    pb::Event {
        event_id: uuid::Uuid::now_v7().to_string(),
        occurred_at: None,
        actor: actor.into(),
        action: action.into(),
        resource: resource.into(),
        outcome: outcome.into(),
        request_id: request_id.into(),
        trace_id: String::new(),
        details_json: r#"{"status":200}"#.into(),
        personal: HashMap::new(),
    }
}

async fn count(c: &Constellation, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&c.db.admin_pool().await).await.expect(sql)
}

async fn count_f64(c: &Constellation, sql: &str) -> f64 {
    sqlx::query_scalar(sql).fetch_one(&c.db.admin_pool().await).await.expect(sql)
}

/// Waits until `sql` (a count) reaches `want`.
async fn wait_count(c: &Constellation, sql: &str, want: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let n = count(c, sql).await;
        if n >= want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{sql}: {n} < {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn drained(c: &Constellation) -> i64 {
    wait_count(c, "SELECT (count(*) = 0)::int::int8 FROM t_alpha.audit_outbox", 1).await;
    count(c, "SELECT count(*) FROM t_alpha.audit_log").await
}

async fn checkpoint_at_least(c: &Constellation, size: i64) -> pb::Checkpoint {
    checkpoint_at_least_from(c.channel_as("operator", "audit"), size).await
}

/// Waits for a checkpoint of alpha's log of at least `size` entries, read as the operator through
/// `channel` (an audit-svc).
async fn checkpoint_at_least_from(channel: kit::client::Channel, size: i64) -> pb::Checkpoint {
    let mut log = AuditLogServiceClient::new(channel);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(cp) = log.get_latest_checkpoint(req("alpha", None, pb::GetLatestCheckpointRequest {})).await {
            let cp = cp.into_inner();
            if cp.tree_size as i64 >= size {
                return cp;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no checkpoint of size {size}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn append_batch_is_idempotent_sequenced_and_pseudonymized() {
    let c = Constellation::start(false).await;
    c.create_tenant("alpha").await;
    c.create_tenant("bravo").await;
    let mut ingest = AuditIngestServiceClient::new(c.channel_as("gateway", "audit"));
    let mut events = Vec::new();
    for i in 0..3 {
        let mut e = event("user:alice", "gateway.request", &format!("route:PUT /x/{i}"), "success", &format!("r{i}"));
        e.personal = HashMap::from([
            ("client_ip".to_owned(), "192.0.2.7".to_owned()),
            ("user_agent".to_owned(), format!("agent-{}", i % 2)),
        ]);
        events.push(e);
    }
    let batch = pb::AppendBatchRequest { events: events.clone(), request_id: "b1".into() };
    let first = ingest.append_batch(req("alpha", None, batch.clone())).await.expect("append").into_inner();
    assert_eq!(first.accepted, 3);
    // A retry with the same event ids, while queued and after sequencing, adds nothing.
    let again = ingest.append_batch(req("alpha", None, batch.clone())).await.expect("retry").into_inner();
    assert_eq!(again.accepted, 0);
    drained(&c).await;
    let again = ingest.append_batch(req("alpha", None, batch.clone())).await.expect("retry").into_inner();
    assert_eq!(again.accepted, 0);
    drained(&c).await;
    let ids: Vec<uuid::Uuid> = events.iter().map(|e| uuid::Uuid::parse_str(&e.event_id).expect("id")).collect();
    let rows: Vec<(String, serde_json::Value, Vec<u8>)> = sqlx::query_as(
        "SELECT service, details, canonical FROM t_alpha.audit_log WHERE event_id = ANY($1) ORDER BY seq",
    )
    .bind(&ids)
    .fetch_all(&c.db.admin_pool().await)
    .await
    .expect("rows");
    assert_eq!(rows.len(), 3, "each event exactly once");
    for (service, details, canonical) in &rows {
        // The verified caller's name, not audit-svc's.
        assert_eq!(service, "gateway");
        let ip = details["client_ip"].as_str().expect("ip pseudonym");
        assert!(ip.starts_with("hmac-sha256:1:"), "{ip}");
        assert!(!String::from_utf8_lossy(canonical).contains("192.0.2.7"), "the raw IP is never stored");
        assert!(!String::from_utf8_lossy(canonical).contains("agent-"), "the raw user agent is never stored");
        assert_eq!(details["status"], 200);
    }
    // Equal values give equal pseudonyms within the tenant; different values differ.
    assert_eq!(rows[0].1["client_ip"], rows[1].1["client_ip"]);
    assert_eq!(rows[0].1["user_agent"], rows[2].1["user_agent"]);
    assert_ne!(rows[0].1["user_agent"], rows[1].1["user_agent"]);
    // Another tenant's key gives another pseudonym of the same address.
    let mut e = event("user:bob", "gateway.request", "route:PUT /x", "success", "r");
    e.personal = HashMap::from([("client_ip".to_owned(), "192.0.2.7".to_owned())]);
    let bravo_id = uuid::Uuid::parse_str(&e.event_id).expect("id");
    ingest
        .append(req("bravo", None, pb::AppendRequest { event: Some(e), request_id: "b2".into() }))
        .await
        .expect("bravo");
    wait_count(&c, &format!("SELECT count(*) FROM t_bravo.audit_log WHERE event_id = '{bravo_id}'"), 1).await;
    let other: serde_json::Value =
        sqlx::query_scalar(&format!("SELECT details FROM t_bravo.audit_log WHERE event_id = '{bravo_id}'"))
            .fetch_one(&c.db.admin_pool().await)
            .await
            .expect("bravo row");
    assert_ne!(other["client_ip"], rows[0].1["client_ip"]);
    // The pseudonym key is stored only wrapped by vault-svc.
    let wrapped: String = sqlx::query_scalar("SELECT wrapped_key FROM t_alpha.pseudonym_keys")
        .fetch_one(&c.db.admin_pool().await)
        .await
        .expect("key");
    assert!(wrapped.starts_with("srv1:"), "{wrapped}");

    // Bad events are refused whole; a secret-looking detail key too; other services may not append.
    let mut bad = event("user:alice", "gateway.request", "r", "success", "");
    bad.details_json = r#"{"session_token":"x"}"#.into();
    let err = ingest
        .append_batch(req("alpha", None, pb::AppendBatchRequest { events: vec![bad], request_id: String::new() }))
        .await
        .expect_err("secret key");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    // NUL, which PostgreSQL cannot store, is refused before the event joins a batch (a database
    // error would fail every caller's events written with it); so are request and trace ids the
    // log could not index.
    for (k, mutate) in [
        ("actor", (|e: &mut pb::Event| e.actor = "user:a\0b".into()) as fn(&mut pb::Event)),
        ("resource", |e| e.resource = "doc/\0".into()),
        ("details_json", |e| e.details_json = r#"{"note":"a\u0000b"}"#.into()),
        ("details_json", |e| e.details_json = r#"{"list":[{"k\u0000":1}]}"#.into()),
        ("request_id", |e| e.request_id = "x".repeat(129)),
        ("trace_id", |e| e.trace_id = "a\0b".into()),
    ] {
        let mut e = event("user:alice", "gateway.request", "r", "success", "");
        mutate(&mut e);
        let err = ingest
            .append_batch(req("alpha", None, pb::AppendBatchRequest { events: vec![e], request_id: String::new() }))
            .await
            .expect_err(k);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{k}: {}", err.message());
        assert!(err.message().starts_with(&format!("events[0].{k}: ")), "{k}: {}", err.message());
    }
    let mut vault_as = AuditIngestServiceClient::new(c.channel_as("vault", "audit"));
    let err = vault_as.append_batch(req("alpha", None, batch)).await.expect_err("vault identity");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    c.stop().await;
}

#[tokio::test]
async fn filtered_queries_page_through_matching_entries() {
    let c = Constellation::start(true).await;
    let alpha = c.create_tenant("alpha").await;
    let mut ingest = AuditIngestServiceClient::new(c.channel_as("operator", "audit"));
    let mut events = Vec::new();
    for i in 0..30 {
        let actor = if i % 3 == 0 { "user:carol" } else { "user:dave" };
        let outcome = if i % 5 == 0 { "denied" } else { "success" };
        events.push(event(
            actor,
            if i % 2 == 0 { "x.write" } else { "x.read" },
            &format!("doc/{}", i % 4),
            outcome,
            &format!("req-{i}"),
        ));
    }
    let before = drained(&c).await;
    ingest
        .append_batch(req("alpha", None, pb::AppendBatchRequest { events, request_id: String::new() }))
        .await
        .expect("append");
    wait_count(&c, "SELECT count(*) FROM t_alpha.audit_log", before + 30).await;
    let log = AuditLogServiceClient::new(c.channel_as("operator", "audit"));
    let list = |r: pb::ListEntriesRequest| {
        let mut log = log.clone();
        async move { log.list_entries(req("alpha", None, r)).await.expect("list").into_inner() }
    };
    let fields = |e: &pb::Entry| -> serde_json::Value { serde_json::from_slice(&e.canonical).expect("json") };

    // actor AND action, paged by 3 with page tokens.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(pb::ListEntriesRequest {
            page_size: 3,
            page_token: token.clone(),
            actor: "user:carol".into(),
            action: "x.write".into(),
            ..Default::default()
        })
        .await;
        for e in &page.entries {
            let f = fields(e);
            assert_eq!(f["actor"], "user:carol");
            assert_eq!(f["action"], "x.write");
            seen.push(e.seq);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    // i ≡ 0 mod 6 in 0..30: 0, 6, 12, 18, 24.
    assert_eq!(seen.len(), 5);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    let denied =
        list(pb::ListEntriesRequest { outcome: "denied".into(), resource: "doc/0".into(), ..Default::default() }).await;
    // i ≡ 0 mod 5 and i ≡ 0 mod 4: 0, 20.
    assert_eq!(denied.entries.len(), 2);
    let one = list(pb::ListEntriesRequest { request_id: "req-17".into(), ..Default::default() }).await;
    assert_eq!(one.entries.len(), 1);
    assert_eq!(fields(&one.entries[0])["request_id"], "req-17");
    // A time window in the future matches nothing; one around now matches everything new.
    let now = chrono::Utc::now();
    let ts = |t: chrono::DateTime<chrono::Utc>| prost_types::Timestamp { seconds: t.timestamp(), nanos: 0 };
    let none =
        list(pb::ListEntriesRequest { start_time: Some(ts(now + chrono::Duration::hours(1))), ..Default::default() })
            .await;
    assert!(none.entries.is_empty());
    let recent = list(pb::ListEntriesRequest {
        start_time: Some(ts(now - chrono::Duration::minutes(5))),
        end_time: Some(ts(now + chrono::Duration::minutes(5))),
        actor: "user:dave".into(),
        page_size: 1000,
        ..Default::default()
    })
    .await;
    assert_eq!(recent.entries.len(), 20);

    // The same through the gateway's query parameters.
    let signer = TestSigner::generate();
    signer.publish(&c.db.admin_pool().await).await;
    let auditor = format!("Bearer {}", signer.sign(&TestSigner::claims(alpha, "auditor")));
    let (status, _, page) = c
        .gateway_get(
            "/v1/audit/events?actor=user:carol&action=x.write&page_size=2",
            &[("x-strongroom-tenant", "alpha"), ("authorization", &auditor)],
        )
        .await
        .expect("gateway");
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"].as_array().expect("events").len(), 2);
    assert_eq!(page["events"][0]["fields"]["actor"], "user:carol");
    assert!(page["next_from"].is_u64());
    let start = (now - chrono::Duration::minutes(5)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (status, _, page) = c
        .gateway_get(
            &format!("/v1/audit/events?outcome=denied&resource=doc/0&start={start}"),
            &[("x-strongroom-tenant", "alpha"), ("authorization", &auditor)],
        )
        .await
        .expect("gateway");
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"].as_array().expect("events").len(), 2);
    let (status, _, body) = c
        .gateway_get(
            "/v1/audit/events?start=yesterday",
            &[("x-strongroom-tenant", "alpha"), ("authorization", &auditor)],
        )
        .await
        .expect("gateway");
    assert_eq!(status, 400, "{body}");
    c.stop().await;
}

/// Pages through `ListEntries` for the window `[start, end)` and compares it with every entry of
/// the log whose `occurred_at` falls in it.
async fn window_is_exact(
    c: &Constellation,
    start: Option<chrono::DateTime<chrono::Utc>>,
    end: Option<chrono::DateTime<chrono::Utc>>,
) -> Vec<i64> {
    let ts = |t: chrono::DateTime<chrono::Utc>| prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    };
    let mut log = AuditLogServiceClient::new(c.channel_as("operator", "audit"));
    let (mut listed, mut token) = (Vec::new(), String::new());
    loop {
        let page = log
            .list_entries(req(
                "alpha",
                None,
                pb::ListEntriesRequest {
                    page_size: 300,
                    page_token: token.clone(),
                    start_time: start.map(ts),
                    end_time: end.map(ts),
                    ..Default::default()
                },
            ))
            .await
            .expect("list")
            .into_inner();
        listed.extend(page.entries.iter().map(|e| e.seq as i64));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let all: Vec<i64> = sqlx::query_scalar(
        "SELECT seq FROM t_alpha.audit_log WHERE ($1::timestamptz IS NULL OR occurred_at >= $1) \
         AND ($2::timestamptz IS NULL OR occurred_at < $2) ORDER BY seq",
    )
    .bind(start)
    .bind(end)
    .fetch_all(&c.db.admin_pool().await)
    .await
    .expect("brute force");
    assert_eq!(listed, all, "window {start:?}..{end:?}");
    listed
}

/// The sequence range a time window is read from, as audit-svc computes it.
async fn sequence_range(
    c: &Constellation,
    alpha: uuid::Uuid,
    start: Option<chrono::DateTime<chrono::Utc>>,
    end: Option<chrono::DateTime<chrono::Utc>>,
) -> (Option<i64>, Option<i64>) {
    let mut tx = c.db.admin_pool().await.begin().await.expect("begin");
    e2e::act_as_service(&mut tx, "alpha", alpha, "audit").await;
    let range = sqlx::query_as(audit_svc::api::SEQUENCE_RANGE_SQL)
        .bind(start)
        .bind(end)
        .fetch_one(&mut *tx)
        .await
        .expect("range");
    tx.rollback().await.expect("rollback");
    range
}

/// Appends `events` to tenant alpha's log in one `AppendBatch`.
async fn append_alpha(c: &Constellation, events: Vec<pb::Event>) -> Result<pb::AppendBatchResponse, tonic::Status> {
    let mut ingest = AuditIngestServiceClient::new(c.channel_as("operator", "audit"));
    ingest
        .append_batch(req("alpha", None, pb::AppendBatchRequest { events, request_id: String::new() }))
        .await
        .map(tonic::Response::into_inner)
}

/// Tenant alpha's log after three rounds of 1,000 entries, each appended by one transaction: a
/// time mark starts the second and the third.
struct Rounds {
    c: Constellation,
    alpha: uuid::Uuid,
    /// When each round started.
    starts: Vec<chrono::DateTime<chrono::Utc>>,
    /// The log's size before each round.
    firsts: Vec<i64>,
}

async fn three_rounds() -> Rounds {
    let c = Constellation::start(true).await;
    let alpha = c.create_tenant("alpha").await;
    let mut starts = Vec::new();
    let mut firsts = Vec::new();
    for round in 0..3 {
        firsts.push(drained(&c).await);
        starts.push(chrono::Utc::now());
        let events =
            (0..1000).map(|i| event("user:carol", "x.write", &format!("doc/{round}/{i}"), "success", "")).collect();
        append_alpha(&c, events).await.expect("append");
        wait_count(&c, "SELECT count(*) FROM t_alpha.audit_log", firsts[round] + 1000).await;
    }
    Rounds { c, alpha, starts, firsts }
}

#[tokio::test]
async fn time_windows_read_only_their_part_of_the_log_and_miss_nothing() {
    let Rounds { c, alpha, starts, firsts } = three_rounds().await;
    let (lo, hi) = sequence_range(&c, alpha, Some(starts[2]), None).await;
    let lo = lo.expect("a mark before the last round");
    // The window's first entry is not skipped, and at least the first round is (it ends at
    // firsts[0] + 1000; a record of another service may have joined the log after it).
    assert!(lo <= firsts[2] && lo >= firsts[0] + 1000, "lo {lo}, rounds start at {firsts:?}");
    assert_eq!(hi, None);
    assert!(window_is_exact(&c, Some(starts[2]), None).await.len() >= 1000);
    let (lo, hi) = sequence_range(&c, alpha, Some(starts[1]), Some(starts[2])).await;
    assert!(lo.expect("a mark") <= firsts[1]);
    if let Some(hi) = hi {
        assert!(hi >= firsts[2], "hi {hi}, rounds start at {firsts:?}");
    }
    assert!(window_is_exact(&c, Some(starts[1]), Some(starts[2])).await.len() >= 1000);
    c.stop().await;
}

/// Someone holding audit-svc's database role inserts false marks, committed: each would hide
/// entries from some window (a start too early or too late, a sequence number inside an earlier
/// batch or beyond the log). None is stored.
#[tokio::test]
async fn false_time_marks_laid_with_the_services_role_are_dropped() {
    let Rounds { c, alpha, firsts, .. } = three_rounds().await;
    let marks = "SELECT count(*) FROM t_alpha.audit_time_marks";
    let stored = count(&c, marks).await;
    let size = count(&c, "SELECT count(*) FROM t_alpha.audit_log").await;
    for (at, seq) in [
        ("now() + interval '1 day'", size),
        ("'2000-01-01'::timestamptz", size),
        ("(SELECT last_at FROM audit_clock)", firsts[2] + 10),
        ("(SELECT last_at FROM audit_clock)", size + 500),
    ] {
        let mut tx = c.db.admin_pool().await.begin().await.expect("begin");
        e2e::act_as_service(&mut tx, "alpha", alpha, "audit").await;
        let inserted = sqlx::query(&format!("INSERT INTO audit_time_marks (at, seq) VALUES ({at}, $1)"))
            .bind(seq)
            .execute(&mut *tx)
            .await
            .expect("a false mark is dropped, not an error");
        assert_eq!(inserted.rows_affected(), 0, "mark ({at}, {seq}) was stored");
        tx.commit().await.expect("commit");
    }
    // None of them (the sequencer may lay a true mark meanwhile, for a record of another service).
    let false_marks = format!(
        "SELECT count(*) FROM t_alpha.audit_time_marks
          WHERE at > now() + interval '1 hour' OR at < '2001-01-01' OR seq IN ({}, {})",
        firsts[2] + 10,
        size + 500
    );
    assert_eq!(count(&c, &false_marks).await, 0);
    assert!(count(&c, marks).await >= stored);
    c.stop().await;
}

/// A true mark is checked through the log's primary key, however many marks one session lays:
/// after five executions PostgreSQL may switch a cached plan to a generic one, and the generic
/// plan of the check was a sequential scan of the whole log (its match is the newest rows).
#[tokio::test]
async fn checking_a_true_time_mark_never_scans_the_whole_log() {
    let Rounds { c, alpha, .. } = three_rounds().await;
    // Ten batches of one entry, each with its mark, as the sequencer lays them, on a log with
    // statistics (as autovacuum keeps them); then rolled back.
    sqlx::query("ANALYZE t_alpha.audit_log").execute(&c.db.admin_pool().await).await.expect("analyze");
    let mut tx = c.db.admin_pool().await.begin().await.expect("begin");
    e2e::act_as_service(&mut tx, "alpha", alpha, "audit").await;
    // Sequencing waits for this transaction (the sequencer's own lock), and the entries go after
    // the log as it is now: a record of another service may have joined it meanwhile.
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtext('strongroom.audit.sequencer'), hashtext(current_setting('strongroom.tenant_id')))",
    )
    .execute(&mut *tx)
    .await
    .expect("the sequencer's lock");
    let next: i64 =
        sqlx::query_scalar("SELECT coalesce(max(seq) + 1, 0) FROM audit_log").fetch_one(&mut *tx).await.expect("next");
    for seq in next..next + 10 {
        sqlx::query(
            "INSERT INTO audit_clock (last_at, max_lead, max_lag) VALUES (clock_timestamp(), '0', '0')
             ON CONFLICT (tenant_id) DO UPDATE SET last_at = greatest(audit_clock.last_at, EXCLUDED.last_at)",
        )
        .execute(&mut *tx)
        .await
        .expect("move the clock");
        sqlx::query(
            "INSERT INTO audit_log (seq, event_id, occurred_at, service, actor, action, resource, outcome, details,
                                    canonical, leaf_hash, chain_hash)
             VALUES ($1, gen_random_uuid(), now(), 'test', 'user:test', 'x.write', 'doc/marked', 'success', '{}',
                     '\\x00', $2, $2)",
        )
        .bind(seq)
        .bind(vec![0u8; 32])
        .execute(&mut *tx)
        .await
        .expect("an entry");
        let laid = sqlx::query("INSERT INTO audit_time_marks (at, seq) SELECT last_at, $1 FROM audit_clock")
            .bind(seq)
            .execute(&mut *tx)
            .await
            .expect("a true mark");
        assert_eq!(laid.rows_affected(), 1, "true mark at {seq} dropped");
    }
    let scans: i64 =
        sqlx::query_scalar("SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relid = 't_alpha.audit_log'::regclass")
            .fetch_one(&mut *tx)
            .await
            .expect("scan count");
    assert_eq!(scans, 0, "checking a mark scanned the log sequentially");
    tx.rollback().await.expect("rollback");
    c.stop().await;
}

/// Producers' clocks: an event that waited two hours, one two minutes ahead (widening the bounds,
/// so both are still found), and one ten minutes ahead (refused); an event from long ago would
/// widen every later query's range for good: refused, and so is a time outside protobuf's (and
/// PostgreSQL's) range.
#[tokio::test]
async fn late_and_slightly_early_events_stay_in_their_windows_and_far_off_times_are_refused() {
    let Rounds { c, starts, .. } = three_rounds().await;
    let now = chrono::Utc::now();
    let at = |t: chrono::DateTime<chrono::Utc>| Some(prost_types::Timestamp { seconds: t.timestamp(), nanos: 0 });
    let mut late = event("user:late", "x.write", "doc/late", "success", "");
    late.occurred_at = at(now - chrono::Duration::hours(2));
    let mut ahead = event("user:ahead", "x.write", "doc/ahead", "success", "");
    ahead.occurred_at = at(now + chrono::Duration::minutes(2));
    let mut future = event("user:future", "x.write", "doc/future", "success", "");
    future.occurred_at = at(now + chrono::Duration::minutes(10));
    let err = append_alpha(&c, vec![future]).await.expect_err("ten minutes ahead");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("occurred_at"), "{}", err.message());
    let mut ancient = event("user:ancient", "x.write", "doc/ancient", "success", "");
    ancient.occurred_at = at(now - chrono::Duration::days(2));
    let err = append_alpha(&c, vec![ancient.clone()]).await.expect_err("two days behind");
    assert!(err.message().contains("24 hours behind"), "{}", err.message());
    ancient.occurred_at = Some(prost_types::Timestamp { seconds: -100_000_000_000, nanos: 0 });
    let err = append_alpha(&c, vec![ancient]).await.expect_err("before year 1");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("events[0].occurred_at: a time from year 1"), "{}", err.message());
    let before = drained(&c).await;
    append_alpha(&c, vec![late, ahead]).await.expect("append");
    wait_count(&c, "SELECT count(*) FROM t_alpha.audit_log", before + 2).await;
    let hour = chrono::Duration::hours(1);
    let lag: f64 = count_f64(&c, "SELECT extract(epoch FROM max_lag)::float8 FROM t_alpha.audit_clock").await;
    assert!(lag < 3.0 * 3600.0, "max_lag {lag} s: only the two-hour-old event widened it");
    assert_eq!(window_is_exact(&c, Some(now - hour * 3), Some(now - hour)).await.len(), 1);
    assert_eq!(
        window_is_exact(&c, Some(now + chrono::Duration::minutes(1)), Some(now + chrono::Duration::minutes(3)))
            .await
            .len(),
        1
    );
    assert!(window_is_exact(&c, Some(starts[2]), None).await.len() >= 1001);
    window_is_exact(&c, Some(starts[1]), Some(starts[2])).await;
    window_is_exact(&c, None, Some(starts[1])).await;
    c.stop().await;
}

/// A gateway in front of tenant alpha, and alice's tokens: `writer` may write and read secrets,
/// `reader` only read them.
struct Recorder {
    c: Constellation,
    signer: TestSigner,
    claims: serde_json::Value,
    writer: String,
    reader: String,
}

impl Recorder {
    async fn start() -> Self {
        let c = Constellation::start(true).await;
        let alpha = c.create_tenant("alpha").await;
        let signer = TestSigner::generate();
        signer.publish(&c.db.admin_pool().await).await;
        let mut claims = TestSigner::claims(alpha, "alice");
        claims["permissions"] = serde_json::json!(["vault.secrets.write", "vault.secrets.read"]);
        let writer = format!("Bearer {}", signer.sign(&claims));
        claims["permissions"] = serde_json::json!(["vault.secrets.read"]);
        let reader = format!("Bearer {}", signer.sign(&claims));
        Self { c, signer, claims, writer, reader }
    }

    /// `PUT /v1/secrets/app/db` with `auth` and request id `rid`, plus `extra` headers: the status.
    async fn put_with(&self, auth: &str, rid: &str, extra: &[(&str, &str)]) -> http::StatusCode {
        let mut headers = vec![
            ("x-strongroom-tenant", "alpha"),
            ("content-type", "application/json"),
            ("x-request-id", rid),
            ("authorization", auth),
        ];
        headers.extend_from_slice(extra);
        let body = serde_json::to_vec(&serde_json::json!({ "value": "v1" })).expect("json");
        self.c.gateway_request(http::Method::PUT, "/v1/secrets/app/db", &headers, body).await.expect("put").0
    }

    async fn put(&self, auth: &str, rid: &str) -> http::StatusCode {
        self.put_with(auth, rid, &[("user-agent", "e2e-agent/1.0")]).await
    }

    async fn get(&self, headers: &[(&str, &str)]) -> http::StatusCode {
        self.c.gateway_get("/v1/secrets/app/db", headers).await.expect("get").0
    }

    /// The gateway's records once `want` of them are in the log, in order: (actor, action,
    /// resource, outcome, request id, details).
    async fn records(&self, want: i64) -> Vec<GatewayRecord> {
        wait_count(&self.c, "SELECT count(*) FROM t_alpha.audit_log WHERE service = 'gateway'", want).await;
        sqlx::query_as(
            "SELECT actor, action, resource, outcome, request_id, details FROM t_alpha.audit_log WHERE service = 'gateway' ORDER BY seq",
        )
        .fetch_all(&self.c.db.admin_pool().await)
        .await
        .expect("rows")
    }
}

type GatewayRecord = (String, String, String, String, Option<String>, serde_json::Value);

/// The records by request id.
fn by_request_id(rows: &[GatewayRecord]) -> HashMap<String, &GatewayRecord> {
    rows.iter().map(|r| (r.4.clone().unwrap_or_default(), r)).collect()
}

/// A state change and a refusal of a proven caller are recorded one by one, with pseudonymised
/// client details; a successful read is not a state change.
#[tokio::test]
async fn the_gateway_records_state_changing_and_refused_requests() {
    let r = Recorder::start().await;
    assert_eq!(r.put(&r.writer, "rec-put-ok").await, 200);
    assert_eq!(r.put(&r.reader, "rec-put-403").await, 403);
    assert_eq!(
        r.get(&[("x-strongroom-tenant", "alpha"), ("x-request-id", "rec-get-ok"), ("authorization", &r.writer)]).await,
        200
    );
    let rows = r.records(2).await;
    let by_id = by_request_id(&rows);
    assert!(!by_id.contains_key("rec-get-ok"), "a successful read is not a state change");
    let ok = by_id.get("rec-put-ok").expect("recorded put");
    assert_eq!(ok.0, "user:alice");
    assert_eq!(ok.1, "gateway.request");
    assert_eq!(ok.2, "route:PUT /v1/secrets/{*path}");
    assert_eq!(ok.3, "success");
    assert_eq!(ok.5["status"], 200);
    assert_eq!(ok.5["method"], "PUT");
    assert_eq!(ok.5["route"], "/v1/secrets/{*path}");
    assert_eq!(ok.5["description"], "store a secret version");
    assert!(ok.5["client_ip"].as_str().is_some_and(|p| p.starts_with("hmac-sha256:")));
    assert!(ok.5["user_agent"].as_str().is_some_and(|p| p.starts_with("hmac-sha256:")));
    let denied = by_id.get("rec-put-403").expect("recorded 403");
    assert_eq!(
        (denied.0.as_str(), denied.1.as_str(), denied.3.as_str()),
        ("user:alice", "gateway.request.refused", "denied")
    );
    r.c.stop().await;
}

/// Refusals that proved no caller (a forged token, none at all) are summed up in one record, each
/// with why it named nobody (security review item 10).
#[tokio::test]
async fn refusals_that_prove_no_caller_are_summed_up_with_why_not_recorded_one_by_one() {
    let r = Recorder::start().await;
    let mut forger = TestSigner::generate();
    forger.kid = r.signer.kid.clone();
    assert_eq!(r.put(&format!("Bearer {}", forger.sign(&r.claims)), "rec-put-forged").await, 401);
    assert_eq!(r.get(&[("x-strongroom-tenant", "alpha"), ("x-request-id", "rec-get-401")]).await, 401);
    let summed = "SELECT coalesce(sum((details->>'count')::bigint), 0)::bigint FROM t_alpha.audit_log
                   WHERE service = 'gateway' AND action = 'gateway.request.refused_anonymous'";
    wait_count(&r.c, summed, 2).await;
    let rows = r.records(1).await;
    let summaries: Vec<&_> = rows.iter().filter(|r| r.1 == "gateway.request.refused_anonymous").collect();
    let (mut statuses, mut reasons) = (HashMap::<String, i64>::new(), HashMap::<String, i64>::new());
    for r in &summaries {
        assert_eq!((r.0.as_str(), r.3.as_str()), ("anonymous", "denied"));
        assert!(r.5["client_ip"].as_str().is_some_and(|p| p.starts_with("hmac-sha256:")), "{}", r.5);
        for (k, v) in r.5["statuses"].as_object().expect("statuses") {
            *statuses.entry(k.clone()).or_default() += v.as_i64().expect("n");
        }
        for (k, v) in r.5["authentication"].as_object().expect("reasons") {
            *reasons.entry(k.clone()).or_default() += v.as_i64().expect("n");
        }
    }
    assert_eq!(statuses, HashMap::from([("401".to_owned(), 2)]));
    assert_eq!(reasons, HashMap::from([("NO_TOKEN".to_owned(), 1), ("BAD_SIGNATURE".to_owned(), 1)]));
    let one_by_one = rows
        .iter()
        .filter(|r| r.1 != "gateway.request.refused_anonymous")
        .any(|r| matches!(r.4.as_deref(), Some("rec-put-forged" | "rec-get-401")));
    assert!(!one_by_one, "refusals that proved no caller are not recorded one by one");
    r.c.stop().await;
}

/// The actor is who the token proved at the request, not later: a session revoked right after (as
/// a logout revokes its own) still names its user.
#[tokio::test]
async fn a_request_is_recorded_with_its_caller_even_if_the_session_is_revoked_right_after() {
    let r = Recorder::start().await;
    let mut claims_later = r.claims.clone();
    claims_later["permissions"] = serde_json::json!(["vault.secrets.write"]);
    claims_later["sid"] = serde_json::json!(uuid::Uuid::new_v4().to_string());
    let revoked_later = format!("Bearer {}", r.signer.sign(&claims_later));
    assert_eq!(r.put(&revoked_later, "rec-put-then-revoked").await, 200);
    let revocations = kit::revocation::Revocations::new(&r.c.redis.clone().into(), None).expect("redis");
    let sid = claims_later["sid"].as_str().expect("sid").to_owned();
    revocations.revoke(kit::revocation::Revoked::Session, &[sid]).await.expect("revoke");
    let rows = r.records(1).await;
    let later = by_request_id(&rows).get("rec-put-then-revoked").copied().expect("recorded");
    assert_eq!((later.0.as_str(), later.3.as_str()), ("user:alice", "success"));
    r.c.stop().await;
}

/// Behind a trusted proxy (the test's loopback peer) the recorded client is the one
/// X-Forwarded-For names, as for the rate limiter: the same pseudonym as that address sent
/// directly, not the proxy's.
#[tokio::test]
async fn behind_a_trusted_proxy_the_gateway_records_the_forwarded_client() {
    let mut r = Recorder::start().await;
    assert_eq!(r.put(&r.writer, "rec-put-ok").await, 200);
    let rows = r.records(1).await;
    let peer = by_request_id(&rows).get("rec-put-ok").expect("recorded put").5["client_ip"]
        .as_str()
        .expect("peer pseudonym")
        .to_owned();
    r.c.gateway.take().expect("gateway").stop().await.expect("stop");
    r.c.start_gateway_with(|cfg| cfg.rate_limits.trusted_proxies = vec!["127.0.0.0/8".parse().expect("cidr")]).await;
    let status = r.put_with(&r.writer, "rec-put-proxied", &[("x-forwarded-for", "6.6.6.6, 198.51.100.7")]).await;
    assert_eq!(status, 200);
    let c = &r.c;
    let mut direct = event("user:alice", "gateway.request", "route:PUT /x", "success", "rec-direct");
    direct.personal = HashMap::from([("client_ip".to_owned(), "198.51.100.7".to_owned())]);
    AuditIngestServiceClient::new(c.channel_as("gateway", "audit"))
        .append(req("alpha", None, pb::AppendRequest { event: Some(direct), request_id: "rec-direct".into() }))
        .await
        .expect("direct append");
    // vault-svc records the same request id (the gateway forwards it): only the gateway's rows.
    let q = "SELECT count(*) FROM t_alpha.audit_log WHERE service = 'gateway' AND request_id IN ('rec-put-proxied', 'rec-direct')";
    wait_count(c, q, 2).await;
    let ip_of = |rid: &'static str| async move {
        let sql = format!(
            "SELECT details->>'client_ip' FROM t_alpha.audit_log WHERE service = 'gateway' AND request_id = '{rid}'"
        );
        let ip: String = sqlx::query_scalar(&sql).fetch_one(&c.db.admin_pool().await).await.expect(rid);
        ip
    };
    let proxied = ip_of("rec-put-proxied").await;
    assert_eq!(proxied, ip_of("rec-direct").await, "the forwarded client");
    assert_ne!(proxied, peer, "not the proxy");
    r.c.stop().await;
}

/// Reads a Server-Sent Events response until `done` says so (or 20 s pass); returns the raw text.
async fn read_sse(c: &Constellation, path: &str, headers: &[(&str, &str)], done: impl Fn(&str) -> bool) -> String {
    use tokio::io::AsyncReadExt;
    let mut headers = headers.to_vec();
    headers.push(("accept", "text/event-stream"));
    let mut tls = send_get(c, path, &headers, None).await;
    let mut text = String::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done(&text) {
        let n = tokio::time::timeout_at(deadline, tls.read(&mut buf)).await.expect("sse in time").expect("read");
        assert!(n > 0, "stream ended: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    text
}

fn sse_ids(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("id: ").or_else(|| l.strip_prefix("id:")))
        .filter_map(|v| v.trim().parse().ok())
        .collect()
}

/// Appends `batches` to tenant alpha's log; returns a checkpoint covering them.
async fn append_and_checkpoint(
    c: &Constellation,
    ingest: &mut AuditIngestServiceClient<kit::client::Channel>,
    batches: Vec<Vec<pb::Event>>,
) -> pb::Checkpoint {
    for events in batches {
        ingest
            .append_batch(req("alpha", None, pb::AppendBatchRequest { events, request_id: String::new() }))
            .await
            .expect("append");
    }
    let n = drained(c).await;
    checkpoint_at_least(c, n).await
}

/// Tenant alpha with 20 entries in its log, and a checkpoint covering them.
struct Exported {
    c: Constellation,
    alpha: uuid::Uuid,
    ingest: AuditIngestServiceClient<kit::client::Channel>,
    cp: pb::Checkpoint,
}

async fn twenty_entries() -> Exported {
    let c = Constellation::start(true).await;
    let alpha = c.create_tenant("alpha").await;
    let mut ingest = AuditIngestServiceClient::new(c.channel_as("operator", "audit"));
    let events: Vec<_> = (0..20).map(|i| event("user:eve", "x.write", &format!("d/{i}"), "success", "")).collect();
    let cp = append_and_checkpoint(&c, &mut ingest, vec![events]).await;
    Exported { c, alpha, ingest, cp }
}

/// Three more entries for tenant alpha.
fn three_late_entries() -> Vec<pb::Event> {
    (0..3).map(|i| event("user:eve", "x.write", &format!("late/{i}"), "success", "")).collect()
}

/// A bearer token of an auditor of tenant `alpha`.
async fn auditor(c: &Constellation, alpha: uuid::Uuid) -> String {
    let signer = TestSigner::generate();
    signer.publish(&c.db.admin_pool().await).await;
    format!("Bearer {}", signer.sign(&TestSigner::claims(alpha, "auditor")))
}

/// gRPC export of a range: the entries, then the checkpoint; a range past the newest checkpoint
/// is refused.
#[tokio::test]
async fn grpc_export_sends_a_range_then_its_checkpoint_and_refuses_one_beyond_it() {
    use futures::StreamExt;
    let Exported { c, cp, .. } = twenty_entries().await;
    let mut log = AuditLogServiceClient::new(c.channel_as("operator", "audit"));
    let mut items = log
        .export_entries(req("alpha", None, pb::ExportEntriesRequest { from_seq: 2, to_seq: 9 }))
        .await
        .expect("export")
        .into_inner();
    let mut seqs = Vec::new();
    let mut last_checkpoint = None;
    while let Some(item) = items.next().await {
        match item.expect("item").item.expect("some") {
            pb::stream_item::Item::Entry(e) => seqs.push(e.seq),
            pb::stream_item::Item::Checkpoint(c) => last_checkpoint = Some(c),
        }
    }
    assert_eq!(seqs, (2..9).collect::<Vec<_>>());
    assert!(last_checkpoint.is_some_and(|c| c.tree_size >= 9));
    let err = log
        .export_entries(req("alpha", None, pb::ExportEntriesRequest { from_seq: 0, to_seq: cp.tree_size + 1000 }))
        .await
        .expect_err("beyond the checkpoint");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    c.stop().await;
}

/// Gateway export: JSON Lines in the offline verifier's format, whose hashes chain and whose last
/// line is a checkpoint committing to the exported entries.
#[tokio::test]
async fn the_gateway_exports_json_lines_that_verify_against_their_checkpoint() {
    let Exported { c, alpha, cp, .. } = twenty_entries().await;
    let auditor = auditor(&c, alpha).await;
    let ca = std::fs::read(c.pki.path("ca.pem")).expect("ca");
    let cfg = kit::tls::ca_only_client_config(&ca, &[b"http/1.1"]).expect("tls");
    let (status, headers, body) = kit::tls::https_request(
        cfg,
        http::Method::GET,
        &format!("{}/v1/audit/export?from=0&to={}", c.gateway_url(), cp.tree_size),
        &[("x-strongroom-tenant", "alpha"), ("authorization", &auditor)],
        Vec::new(),
    )
    .await
    .expect("export");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "application/jsonl");
    let text = String::from_utf8(body).expect("utf8");
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    assert_eq!(lines.len() as u64, cp.tree_size + 1);
    let mut leaves = Vec::new();
    let mut chain = [0u8; 32];
    for (i, line) in lines[..lines.len() - 1].iter().enumerate() {
        assert_eq!(line["seq"], i as u64);
        let canonical = B64.decode(line["canonical"].as_str().expect("c")).expect("b64");
        let leaf = merkle::leaf_hash(&canonical);
        assert_eq!(B64.encode(leaf), line["leaf_hash"]);
        chain = merkle::chain_hash(&chain, &leaf);
        assert_eq!(B64.encode(chain), line["chain_hash"]);
        leaves.push(leaf);
    }
    let note = lines.last().expect("last")["checkpoint"].as_str().expect("checkpoint line").to_owned();
    let get = |l: u8, i: u64| -> Option<merkle::Hash> {
        // Perfect subtrees from the leaves (test-only, O(n)).
        let width = 1usize << l;
        let start = (i as usize) * width;
        let slice = leaves.get(start..start + width)?;
        let mut level: Vec<merkle::Hash> = slice.to_vec();
        while level.len() > 1 {
            level = level.chunks(2).map(|p| merkle::node_hash(&p[0], &p[1])).collect();
        }
        level.first().copied()
    };
    let root = merkle::root(cp.tree_size, &get).expect("root");
    assert!(note.contains(&B64.encode(root)), "the checkpoint commits to the exported entries");
    c.stop().await;
}

/// gRPC live stream: the backlog from 5, a checkpoint, then entries appended later, live, in
/// order and without gaps, and a checkpoint covering them.
#[tokio::test]
async fn the_grpc_live_stream_sends_the_backlog_a_checkpoint_then_new_entries_in_order() {
    use futures::StreamExt;
    let Exported { c, mut ingest, cp, .. } = twenty_entries().await;
    let mut log = AuditLogServiceClient::new(c.channel_as("operator", "audit"));
    let mut live = log
        .stream_entries(req("alpha", None, pb::StreamEntriesRequest { from_seq: 5 }))
        .await
        .expect("stream")
        .into_inner();
    let mut next = 5;
    let mut saw_checkpoint = false;
    while next < cp.tree_size || !saw_checkpoint {
        match tokio::time::timeout(Duration::from_secs(10), live.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("ok")
            .item
        {
            Some(pb::stream_item::Item::Entry(e)) => {
                assert_eq!(e.seq, next, "in order, no gaps");
                next += 1;
            }
            Some(pb::stream_item::Item::Checkpoint(c)) => {
                assert!(c.tree_size <= next, "a checkpoint comes after the entries it covers");
                saw_checkpoint = true;
            }
            None => {}
        }
    }
    ingest
        .append_batch(req(
            "alpha",
            None,
            pb::AppendBatchRequest { events: three_late_entries(), request_id: String::new() },
        ))
        .await
        .expect("append");
    let target = cp.tree_size + 3;
    let mut late_checkpoint = false;
    while next < target || !late_checkpoint {
        match tokio::time::timeout(Duration::from_secs(10), live.next())
            .await
            .expect("live in time")
            .expect("open")
            .expect("ok")
            .item
        {
            Some(pb::stream_item::Item::Entry(e)) => {
                assert_eq!(e.seq, next);
                next += 1;
            }
            Some(pb::stream_item::Item::Checkpoint(c)) => late_checkpoint = c.tree_size >= target,
            None => {}
        }
    }
    drop(live);
    c.stop().await;
}

/// Server-Sent Events: from a sequence number, then resumed with Last-Event-ID.
#[tokio::test]
async fn server_sent_events_stream_from_a_sequence_number_and_resume_after_last_event_id() {
    let Exported { c, alpha, mut ingest, .. } = twenty_entries().await;
    let target = append_and_checkpoint(&c, &mut ingest, vec![three_late_entries()]).await.tree_size;
    let auditor = auditor(&c, alpha).await;
    let auth = [("x-strongroom-tenant", "alpha"), ("authorization", auditor.as_str())];
    let text = read_sse(&c, "/v1/audit/stream?from=0", &auth, |t| {
        sse_ids(t).last().is_some_and(|l| *l + 1 >= target) && t.contains("event: checkpoint")
    })
    .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.to_ascii_lowercase().contains("content-type: text/event-stream"), "{text}");
    let ids = sse_ids(&text);
    assert_eq!(ids, (0..ids.len() as u64).collect::<Vec<_>>());
    assert!(text.contains("event: entry"));
    let resumed = read_sse(&c, "/v1/audit/stream", &[auth[0], auth[1], ("last-event-id", "10")], |t| {
        sse_ids(t).last().is_some_and(|l| *l + 1 >= target)
    })
    .await;
    assert_eq!(sse_ids(&resumed).first(), Some(&11), "resumes after Last-Event-ID");
    c.stop().await;
}

/// Concurrent `AppendBatch` calls for one tenant are grouped into shared transactions: calls that
/// carry the same event ids at the same moment log each event once, count it as new for one call
/// only, and the log stays contiguous and verifiable.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_appends_with_overlapping_ids_log_each_event_once() {
    let c = Constellation::start(false).await;
    c.create_tenant("alpha").await;
    let events: Vec<pb::Event> = (0..400)
        .map(|i| event("user:alice", "gateway.request", &format!("route:POST /y/{i}"), "success", "r"))
        .collect();
    // Sixteen callers: eight overlapping windows of 200 of the 400 events, each window sent twice.
    let mut calls = tokio::task::JoinSet::new();
    for caller in 0..16usize {
        let start = (caller % 8) * 25;
        let batch =
            pb::AppendBatchRequest { events: events[start..start + 200].to_vec(), request_id: format!("c{caller}") };
        let mut ingest = AuditIngestServiceClient::new(c.channel_as("gateway", "audit"));
        calls.spawn(async move {
            ingest.append_batch(req("alpha", None, batch)).await.expect("append").into_inner().accepted
        });
    }
    let mut accepted = 0;
    while let Some(n) = calls.join_next().await {
        accepted += n.expect("caller");
    }
    // Windows start at 0, 25, …, 175 and are 200 long: events 0..375 were sent.
    assert_eq!(accepted, 375, "each new event is counted for exactly one call");
    let (total, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT event_id) FROM t_alpha.audit_log WHERE action = 'gateway.request'",
    )
    .fetch_one(&c.db.admin_pool().await)
    .await
    .expect("log");
    assert_eq!((total, distinct), (375, 375), "each event logged exactly once");
    // One statement: a record of another service may join the log between two.
    let (all, max_seq): (i64, i64) = sqlx::query_as("SELECT count(*), max(seq) FROM t_alpha.audit_log")
        .fetch_one(&c.db.admin_pool().await)
        .await
        .expect("log");
    assert_eq!(max_seq + 1, all, "sequence numbers stay contiguous");
    let cp = checkpoint_at_least(&c, all).await;
    assert!(cp.tree_size as i64 >= all);
}

/// Sends `GET path` to the gateway over HTTP/1.1 (with a TCP receive buffer of `recv_buffer`
/// bytes, if given) and returns the connection, for the caller to read the response or not.
async fn send_get(
    c: &Constellation,
    path: &str,
    headers: &[(&str, &str)],
    recv_buffer: Option<u32>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let ca = std::fs::read(c.pki.path("ca.pem")).expect("ca");
    let cfg = kit::tls::ca_only_client_config(&ca, &[b"http/1.1"]).expect("tls");
    let addr = c.gateway.as_ref().expect("gateway").grpc;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).expect("buffer");
    }
    let tcp = socket.connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)).connect(name, tcp).await.expect("tls");
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    tls.write_all(head.as_bytes()).await.expect("write");
    tls
}

/// About 20 MB of export: 2,000 entries of 10 kB, in batches under gRPC's 4 MiB.
fn twenty_megabytes() -> Vec<Vec<pb::Event>> {
    let entry = |i: usize| {
        let mut e = event("user:eve", "x.write", &format!("d/{i}"), "success", "");
        e.details_json = serde_json::json!({ "pad": "p".repeat(10_000) }).to_string();
        e
    };
    (0..8).map(|_| (0..250).map(entry).collect()).collect()
}

/// The gateway reads a tenant's export or live stream from audit-svc as fast as its HTTP client
/// takes it. Clients that stop reading must not hold up anyone else's audit calls (the gateway's
/// queries, and its record of requests).
#[tokio::test]
async fn clients_that_stop_reading_exports_hold_up_no_other_audit_call() {
    let c = Constellation::start(true).await;
    let alpha = c.create_tenant("alpha").await;
    let mut ingest = AuditIngestServiceClient::new(c.channel_as("operator", "audit"));
    let cp = append_and_checkpoint(&c, &mut ingest, twenty_megabytes()).await;
    let signer = TestSigner::generate();
    signer.publish(&c.db.admin_pool().await).await;
    let auditor = format!("Bearer {}", signer.sign(&TestSigner::claims(alpha, "auditor")));
    let headers = [("x-strongroom-tenant", "alpha"), ("authorization", auditor.as_str())];
    let mut stalled = Vec::new();
    for _ in 0..6 {
        // A client that stops reading, with a small receive buffer.
        let path = format!("/v1/audit/export?from=0&to={}", cp.tree_size);
        stalled.push(send_get(&c, &path, &headers, Some(4096)).await);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..3 {
        let (status, _, body) = tokio::time::timeout(
            Duration::from_secs(30),
            c.gateway_get("/v1/audit/events?from=0&page_size=2", &headers),
        )
        .await
        .unwrap_or_else(|_| panic!("query {i} while six exports stall: no answer in 30 s"))
        .expect("request");
        assert_eq!(status, 200, "query {i} while six exports stall: {body}");
    }
    drop(stalled);
    c.stop().await;
}

/// Reads `conn` until the server ends it (end of stream or reset) or `within` passes; returns the
/// bytes read and whether it ended.
async fn read_until_closed(
    conn: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    within: Duration,
) -> (usize, bool) {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => return (total, false),
            Ok(Ok(0) | Err(_)) => return (total, true),
            Ok(Ok(n)) => total += n,
        }
    }
}

/// Reads until the response head has arrived; returns it.
async fn response_head(conn: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    use tokio::io::AsyncReadExt;
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while !text.contains("\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(20), conn.read(&mut buf))
            .await
            .expect("head in time")
            .expect("read");
        assert!(n > 0, "closed before the head: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    text
}

/// Exports and live streams hold a place each: a caller gets at most `max_streams_per_caller`,
/// a client that stops reading loses its connection after `write_timeout_ms` (and its place), and
/// a stream ends when its caller's session is revoked.
#[tokio::test]
async fn streams_are_limited_cut_off_when_unread_and_end_with_their_session() {
    let mut c = Constellation::start(false).await;
    let alpha = c.create_tenant("alpha").await;
    c.start_gateway_with(|cfg| {
        cfg.http.write_timeout_ms = 1_000;
        cfg.http.max_streams_per_caller = 2;
    })
    .await;
    let mut ingest = AuditIngestServiceClient::new(c.channel_as("operator", "audit"));
    let cp = append_and_checkpoint(&c, &mut ingest, twenty_megabytes()).await;
    let signer = TestSigner::generate();
    signer.publish(&c.db.admin_pool().await).await;
    let claims = TestSigner::claims(alpha, "auditor");
    let auditor = format!("Bearer {}", signer.sign(&claims));
    let headers = [("x-strongroom-tenant", "alpha"), ("authorization", auditor.as_str())];

    // A 20 MB export its client does not read: the gateway closes the connection.
    let path = format!("/v1/audit/export?from=0&to={}", cp.tree_size);
    let mut stalled = send_get(&c, &path, &headers, Some(4096)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (read, ended) = read_until_closed(&mut stalled, Duration::from_secs(20)).await;
    assert!(ended, "the unread export's connection is still open after {read} bytes");
    assert!(read < 20_000_000, "the whole export arrived ({read} bytes)");

    // Its place was given back: two streams open, a third is refused.
    let sse = [("x-strongroom-tenant", "alpha"), ("authorization", auditor.as_str()), ("accept", "text/event-stream")];
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut conn = send_get(&c, "/v1/audit/stream?from=0", &sse, None).await;
        let head = response_head(&mut conn).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        open.push(conn);
    }
    let (status, headers_3, body) = c.gateway_get("/v1/audit/stream?from=0", &sse).await.expect("third");
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["reason"], "TOO_MANY_STREAMS");
    assert!(headers_3.contains_key("retry-after"));

    // Revoking the session ends its streams.
    let revocations = kit::revocation::Revocations::new(&kit::testing::redis_url().into(), None).expect("redis");
    let sid = claims["sid"].as_str().expect("sid").to_owned();
    revocations.revoke(kit::revocation::Revoked::Session, &[sid]).await.expect("revoke");
    for conn in &mut open {
        let (_, ended) = read_until_closed(conn, Duration::from_secs(20)).await;
        assert!(ended, "a revoked session's stream goes on");
    }
    c.stop().await;
}

/// Security review item 14: audit-svc cached unwrapped pseudonym keys for ever, so after a tenant
/// was shredded every running replica went on making linkable pseudonyms with the key in memory.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_tenant_shred_no_audit_replica_makes_another_pseudonym() {
    let c = Constellation::start(false).await;
    c.create_tenant("alpha").await;
    let replica = c.start_replica("audit").await;
    let ingests = [
        AuditIngestServiceClient::new(c.channel_as("gateway", "audit")),
        AuditIngestServiceClient::new(kit::testing::channel(&c.pki, "gateway", replica.grpc, "audit")),
    ];
    let append = |which: usize| {
        let mut ingest = ingests[which].clone();
        let mut e = event("user:alice", "gateway.request", "route:PUT /x", "success", "");
        e.personal = HashMap::from([("client_ip".to_owned(), "192.0.2.7".to_owned())]);
        async move {
            ingest.append(req("alpha", None, pb::AppendRequest { event: Some(e), request_id: String::new() })).await
        }
    };
    // Both replicas unwrap and cache the tenant's pseudonym key.
    for which in 0..2 {
        append(which).await.expect("a pseudonym before the shred");
    }
    let mut keys = proto::vault::v1::key_management_service_client::KeyManagementServiceClient::new(
        c.channel_as("operator", "vault"),
    );
    let shred = proto::vault::v1::ShredTenantRequest { confirm_slug: "alpha".into(), request_id: String::new() };
    keys.shred_tenant(req("alpha", None, shred)).await.expect("shred");
    // Every replica drops the key as soon as vault-svc says so (not at some expiry).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for which in 0..2 {
        while append(which).await.is_ok() {
            assert!(tokio::time::Instant::now() < deadline, "replica {which} still makes pseudonyms after the shred");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // And none comes back.
    for which in 0..2 {
        assert!(append(which).await.is_err(), "replica {which}");
    }
    let _ = replica.stop().await;
    c.stop().await;
}

/// Security review item 10: each anonymous refusal naming a tenant was appended to that tenant's
/// seven-year log, one entry each, so a flood filled the victim's log (and the recorder's queue).
#[tokio::test(flavor = "multi_thread")]
async fn an_anonymous_flood_is_summed_up_not_logged_one_by_one() {
    let c = Constellation::start(true).await;
    c.create_tenant("alpha").await;
    let body = serde_json::to_vec(&serde_json::json!({ "value": "v" })).expect("json");
    let started = tokio::time::Instant::now();
    let flood = (0..200).map(|i| {
        let c = &c;
        let body = body.clone();
        async move {
            let rid = format!("flood-{i}");
            let headers = [
                ("x-strongroom-tenant", "alpha"),
                ("content-type", "application/json"),
                ("authorization", "Bearer junk"),
                ("x-request-id", rid.as_str()),
            ];
            c.gateway_request(http::Method::PUT, "/v1/secrets/app/db", &headers, body).await.expect("put").0
        }
    });
    for status in futures::future::join_all(flood).await {
        assert!(status == 401 || status == 429, "{status}");
    }
    // An authentication route naming the victim in a header (its handler names no tenant, or the
    // rate limiter answers first) is summed up too.
    for i in 0..50 {
        let rid = format!("flood-step-up-{i}");
        let headers = [
            ("x-strongroom-tenant", "alpha"),
            ("content-type", "application/json"),
            ("authorization", "Bearer junk"),
            ("x-request-id", rid.as_str()),
        ];
        let body = serde_json::to_vec(&serde_json::json!({ "code": "123456" })).expect("json");
        let (status, _, _) =
            c.gateway_request(http::Method::POST, "/v1/auth/step-up", &headers, body).await.expect("step-up");
        assert!(status == 401 || status == 429, "{status}");
    }
    let elapsed = started.elapsed();
    let summed = "SELECT coalesce(sum((details->>'count')::bigint), 0)::bigint FROM t_alpha.audit_log
                   WHERE service = 'gateway' AND action = 'gateway.request.refused_anonymous'";
    wait_count(&c, summed, 250).await;
    assert_eq!(count(&c, summed).await, 250, "each refusal counted once");
    let entries = count(&c, "SELECT count(*) FROM t_alpha.audit_log WHERE service = 'gateway'").await;
    // One entry per source and interval (1 s in tests) the flood lasted, not one per request.
    let bound = elapsed.as_secs() as i64 + 2;
    assert!(entries <= bound && entries < 250, "{entries} entries for a flood of {elapsed:?}");
    c.stop().await;
}

/// Security review item 11: logins, second factors and refreshes send no tenant header, so the
/// gateway recorded none of them. The handler names the tenant (the body, or the token).
#[tokio::test(flavor = "multi_thread")]
async fn authentication_requests_are_recorded_in_their_tenants_log() {
    let c = Constellation::start(true).await;
    let (_, _, password) = c.create_tenant_with_owner("alpha", "owner@alpha.example").await;
    let login = |password: String, rid: &'static str| {
        let c = &c;
        async move {
            let body = serde_json::to_vec(
                &serde_json::json!({ "tenant": "alpha", "email": "owner@alpha.example", "password": password }),
            )
            .expect("json");
            let headers =
                [("content-type", "application/json"), ("x-request-id", rid), ("user-agent", "e2e-login/1.0")];
            c.gateway_request(http::Method::POST, "/v1/auth/login", &headers, body).await.expect("login").0
        }
    };
    assert_eq!(login("a wrong password".into(), "login-wrong").await, 401);
    assert_eq!(login(password, "login-right").await, 200);
    let q = "SELECT count(*) FROM t_alpha.audit_log WHERE service = 'gateway' AND request_id IN ('login-wrong', 'login-right')";
    wait_count(&c, q, 2).await;
    let rows: Vec<(String, String, String, serde_json::Value)> = sqlx::query_as(
        "SELECT request_id, resource, outcome, details FROM t_alpha.audit_log
          WHERE service = 'gateway' AND request_id IN ('login-wrong', 'login-right') ORDER BY request_id",
    )
    .fetch_all(&c.db.admin_pool().await)
    .await
    .expect("rows");
    let got: Vec<(&str, &str, &str)> = rows.iter().map(|r| (r.0.as_str(), r.1.as_str(), r.2.as_str())).collect();
    assert_eq!(
        got,
        [
            ("login-right", "route:POST /v1/auth/login", "success"),
            ("login-wrong", "route:POST /v1/auth/login", "denied")
        ]
    );
    for r in &rows {
        assert!(r.3["client_ip"].as_str().is_some_and(|p| p.starts_with("hmac-sha256:")), "{}", r.3);
    }
    c.stop().await;
}

/// The value of the sample `name_and_labels` in a `/metrics` text, if it is exported.
fn gauge(metrics: &str, name_and_labels: &str) -> Option<f64> {
    let prefix = format!("{name_and_labels} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
}

/// Scrapes audit-svc's `/metrics` at `admin` until `holds`, within 30 s; returns the text and
/// prints its audit pipeline lines.
async fn wait_metrics(admin: std::net::SocketAddr, what: &str, holds: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = e2e::scrape_metrics(admin).await;
        if holds(&metrics) {
            let lines: Vec<&str> = metrics.lines().filter(|l| l.starts_with("strongroom_audit_")).collect();
            eprintln!("{what}:\n{}", lines.join("\n"));
            return metrics;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: not seen in {metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A sequencer that cannot drain a tenant's outbox (here: its advisory lock held by someone else)
/// shows as a backlog with an age, and a log that grew since its last signed checkpoint as an
/// unsigned age, per tenant, until the drain and the next checkpoint put both back to 0; a
/// tenant that goes away drops its series.
#[tokio::test(flavor = "multi_thread")]
async fn a_stuck_outbox_and_an_unsigned_log_show_on_metrics_until_drained_and_checkpointed() {
    let mut c = Constellation::start(false).await;
    let alpha = c.create_tenant("alpha").await;
    // One audit-svc measuring every 100 ms and checkpointing a tenant at most every 8 s.
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
        audit_svc::AuditSettings { signals_interval_ms: 100, checkpoint_interval_ms: 8000, ..Default::default() };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listeners = kit::server::Listeners { grpc: grpc_listener, admin: admin_listener };
    let mut audit = tokio::spawn(audit_svc::run(cfg.with_settings(settings), listeners, async move {
        let _ = stopped.await;
    }));
    let operator = kit::testing::channel(&c.pki, "operator", grpc, "audit");
    tokio::select! {
        r = kit::testing::wait_serving(operator.clone(), "", Duration::from_secs(60)) => r.expect("audit-svc serving"),
        r = &mut audit => panic!("audit-svc stopped: {r:?}"),
    }
    let backlog = "strongroom_audit_outbox_backlog{tenant=\"alpha\"}";
    let oldest = "strongroom_audit_outbox_oldest_age_seconds{tenant=\"alpha\"}";
    let unsigned = "strongroom_audit_unsigned_age_seconds{tenant=\"alpha\"}";

    // Idle and fully checkpointed: everything reads 0. This replica signed (or found signed) the
    // log at start-up, so its next checkpoint of alpha is at least 8 s away.
    let size = drained(&c).await;
    checkpoint_at_least_from(operator.clone(), size).await;
    wait_metrics(admin, "idle", |m| {
        gauge(m, backlog) == Some(0.0) && gauge(m, oldest) == Some(0.0) && gauge(m, unsigned) == Some(0.0)
    })
    .await;

    // The tenant's sequencer lock, held here: records written now wait in the outbox, and the
    // sequencer woken for them waits for the lock.
    let admin_pool = c.db.admin_pool().await;
    let mut held = admin_pool.begin().await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('strongroom.audit.sequencer'), hashtext($1))")
        .bind(alpha.to_string())
        .execute(&mut *held)
        .await
        .expect("sequencer lock");
    // What was sequenced before the lock (a count of signatures vault-svc flushed meanwhile, say).
    let size = count(&c, "SELECT count(*) FROM t_alpha.audit_log").await;
    sqlx::query(
        "INSERT INTO t_alpha.audit_outbox (event_id, tenant_id, occurred_at, service, actor, action, resource, outcome) \
         SELECT gen_random_uuid(), $1, now(), 'vault', 'user:u1', 'test.event', 'held/' || i, 'success' \
         FROM generate_series(1, 5) AS i",
    )
    .bind(alpha)
    .execute(&admin_pool)
    .await
    .expect("records");
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(kit::outbox::WAKE_CHANNEL)
        .bind(alpha.to_string())
        .execute(&admin_pool)
        .await
        .expect("wake-up");
    let stuck = wait_metrics(admin, "stuck", |m| {
        gauge(m, backlog).is_some_and(|n| n >= 5.0) && gauge(m, oldest).is_some_and(|age| age > 0.5)
    })
    .await;
    let waiting = count(&c, "SELECT count(*) FROM t_alpha.audit_outbox").await;
    assert_eq!(gauge(&stuck, backlog), Some(waiting as f64), "the gauge counts what waits");
    assert_eq!(count(&c, "SELECT count(*) FROM t_alpha.audit_log").await, size, "nothing was sequenced");

    // Released: drained at once, and unsigned until the next checkpoint.
    held.rollback().await.expect("release");
    let grown = wait_metrics(admin, "drained, not yet signed", |m| {
        gauge(m, backlog) == Some(0.0) && gauge(m, oldest) == Some(0.0) && gauge(m, unsigned).is_some_and(|a| a > 0.0)
    })
    .await;
    let logged = count(&c, "SELECT count(*) FROM t_alpha.audit_log").await;
    assert!(logged >= size + 5, "the held records were logged: {logged}");
    assert!(gauge(&grown, unsigned).is_some_and(|age| age < 30.0), "{grown}");
    wait_metrics(admin, "checkpointed", |m| gauge(m, unsigned) == Some(0.0) && gauge(m, backlog) == Some(0.0)).await;
    assert!(checkpoint_at_least_from(operator, logged).await.tree_size as i64 >= logged);

    // A tenant that goes away drops its series.
    sqlx::query("UPDATE control.tenants SET status = 'terminated' WHERE id = $1")
        .bind(alpha)
        .execute(&admin_pool)
        .await
        .expect("terminate");
    wait_metrics(admin, "gone", |m| gauge(m, backlog).is_none() && gauge(m, unsigned).is_none()).await;

    let _ = stop.send(());
    audit.await.expect("join").expect("audit-svc stopped cleanly");
    c.stop().await;
}
