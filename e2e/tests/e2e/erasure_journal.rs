//! The erasure journal (`kit::journal`): an erasure or termination that cannot be journaled does not
//! happen (so no restore can bring it back unrecorded), and replaying terminations and purges onto
//! a database that predates them terminates and deletes again, once, and audits it. The whole
//! restore with pgBackRest is in `backups.rs`.

use e2e::Constellation;
use kit::journal::{Entry, Erasure};
use proto::vault::v1 as vpb;

fn req<T>(tenant: &str, msg: T) -> tonic::Request<T> {
    kit::client::with_context(tonic::Request::new(msg), Some(tenant), None, None)
}

/// Replaces the journal directory with a file: nothing can be written there any more.
fn break_journal(c: &Constellation) -> std::path::PathBuf {
    let dir = c.journal_dir();
    let aside = dir.with_extension("aside");
    std::fs::rename(&dir, &aside).expect("move the journal aside");
    std::fs::write(&dir, b"not a directory").expect("file in its place");
    aside
}

fn mend_journal(c: &Constellation, aside: &std::path::Path) {
    std::fs::remove_file(c.journal_dir()).expect("rm");
    std::fs::rename(aside, c.journal_dir()).expect("journal back");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shred_or_termination_the_journal_cannot_record_is_refused_and_changes_nothing() {
    let c = Constellation::start(false).await;
    c.create_tenant("alpha").await;
    // A shred first, so the journal directory exists with an entry in it.
    let mut keys =
        vpb::key_management_service_client::KeyManagementServiceClient::new(c.channel_as("operator", "vault"));
    let shred = |subject: &str| vpb::ShredSubjectRequest { subject: subject.into(), request_id: String::new() };
    keys.shred_subject(req("alpha", shred("nobody"))).await.expect("journaled shred");
    let mut transit = vpb::transit_service_client::TransitServiceClient::new(c.channel_as("ledger", "vault"));
    let sealed = transit
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
    let open = |ciphertext: String| vpb::DecryptRequest { ciphertext, subject: "alice".into(), ..Default::default() };

    let aside = break_journal(&c);
    let e = keys.shred_subject(req("alpha", shred("alice"))).await.expect_err("shred without a journal");
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert_eq!(e2e::reason(&e), "ERASURE_JOURNAL_UNAVAILABLE");
    // Nothing was shredded and nothing audited as shredded.
    let plain = transit.decrypt(req("alpha", open(sealed.clone()))).await.expect("still opens").into_inner();
    assert_eq!(plain.plaintext, b"alice@example.com");
    let admin = c.db.admin_pool().await;
    let shreds: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM t_alpha.audit_outbox WHERE action = 'vault.subject.shred')
              + (SELECT count(*) FROM t_alpha.audit_log WHERE action = 'vault.subject.shred')",
    )
    .fetch_one(&admin)
    .await
    .expect("audit");
    assert_eq!(shreds, 1, "only the journaled shred is recorded");

    let mut tenants =
        proto::auth::v1::tenant_service_client::TenantServiceClient::new(c.channel_as("operator", "auth"));
    let terminate = proto::auth::v1::TerminateTenantRequest {
        slug: "alpha".into(),
        recipient: age::x25519::Identity::generate().to_public().to_string(),
        reason: "contract ended".into(),
        ..Default::default()
    };
    let e = tenants.terminate_tenant(terminate.clone()).await.expect_err("termination without a journal");
    assert_eq!(e2e::reason(&e), "ERASURE_JOURNAL_UNAVAILABLE", "{e:?}");
    let status: String = sqlx::query_scalar("SELECT status FROM control.tenants WHERE slug = 'alpha'")
        .fetch_one(&admin)
        .await
        .expect("s");
    assert_eq!(status, "active");

    // With the journal back, both go through and are there, signed by their writers.
    mend_journal(&c, &aside);
    keys.shred_subject(req("alpha", shred("alice"))).await.expect("shred");
    let e = transit.decrypt(req("alpha", open(sealed))).await.expect_err("shredded");
    assert_eq!(e2e::reason(&e), "KEY_DESTROYED");
    tenants.terminate_tenant(terminate).await.expect("terminate");
    let ca = std::fs::read(c.pki.path("ca.pem")).expect("ca");
    let journal = kit::journal::read(&c.journal_dir(), &ca).expect("verifies");
    let signed: Vec<(&str, &str)> = journal.iter().map(|v| (v.entry.erasure.kind(), v.signer.name())).collect();
    assert_eq!(signed, [("subject_shred", "vault"), ("subject_shred", "vault"), ("tenant_terminate", "auth")]);
    assert_eq!(
        journal[1].entry.erasure,
        Erasure::SubjectShred { subject_sha256: kit::journal::subject_sha256("alice") },
        "a subject is named by its digest only"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replaying_a_termination_and_a_purge_on_an_older_database_terminates_and_deletes_once() {
    let db = kit::testing::TestDb::create().await;
    let migrator = e2e::migrate(&db).await;
    let slug = kit::TenantSlug::parse("gone").expect("slug");
    let (tenant, _, _) = migrator.register(&slug, None).await.expect("register");
    let admin = db.admin_pool().await;
    let entry = |erasure: Erasure| Entry {
        format: kit::journal::FORMAT.into(),
        id: uuid::Uuid::now_v7(),
        time: chrono::Utc::now(),
        tenant_id: tenant.id.0,
        tenant_slug: "gone".into(),
        erasure,
    };
    let recipient = age::x25519::Identity::generate().to_public().to_string();
    let export_until = chrono::Utc::now() + chrono::Duration::days(30);
    let terminated = entry(Erasure::TenantTerminate {
        recipient: recipient.clone(),
        reason: "contract ended".into(),
        terminated_by: "ops".into(),
        export_until,
    });
    assert!(migrator.replay_termination(&terminated, "restore").await.expect("replay"));
    assert!(!migrator.replay_termination(&terminated, "restore").await.expect("again"), "terminated twice");
    let (status, stored_recipient, parts, logged): (String, String, i64, i64) = sqlx::query_as(
        "SELECT t.status, x.recipient,
                (SELECT count(*) FROM control.tenant_export_parts p WHERE p.tenant_id = t.id),
                (SELECT count(*) FROM t_gone.audit_outbox WHERE action = 'tenant.terminate.replay')
           FROM control.tenants t JOIN control.tenant_terminations x ON x.tenant_id = t.id WHERE t.slug = 'gone'",
    )
    .fetch_one(&admin)
    .await
    .expect("terminated");
    assert_eq!((status.as_str(), stored_recipient.as_str(), parts, logged), ("terminated", recipient.as_str(), 4, 1));

    // The purge replays whatever the export's state (the restored database never finished it).
    let created_at = tenant.created_at;
    let purge = entry(Erasure::TenantPurge {
        created_at,
        terminated_at: terminated.time,
        terminated_by: "ops".into(),
        purged_by: "ops".into(),
        final_checkpoint: Some("strongroom.audit/gone\n7\nabc=\n".into()),
        manifest_sha256: Some("ab".repeat(32)),
    });
    assert!(migrator.replay_purge(&purge).await.expect("purge"));
    assert!(!migrator.replay_purge(&purge).await.expect("again"), "purged twice");
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM control.tenants WHERE slug = 'gone')
              + (SELECT count(*) FROM control.tenant_terminations WHERE slug = 'gone')
              + (SELECT count(*) FROM pg_namespace WHERE nspname = 't_gone')",
    )
    .fetch_one(&admin)
    .await
    .expect("left");
    assert_eq!(left, 0, "the purged tenant is still there");
    let tombstone = migrator.tombstone(&slug).await.expect("tombstone").expect("kept");
    assert_eq!(tombstone.purged_at.timestamp_micros(), purge.time.timestamp_micros());
    assert_eq!(tombstone.manifest_sha256, Some("ab".repeat(32)));
    let again = migrator.register(&slug, None).await.expect_err("purged slug");
    assert!(again.to_string().contains("purged"), "{again}");

    // A purge of a tenant the older database never had still keeps its slug from coming back.
    let never = Entry { tenant_id: uuid::Uuid::now_v7(), tenant_slug: "later".into(), ..purge };
    assert!(migrator.replay_purge(&never).await.expect("tombstone only"));
    let later = kit::TenantSlug::parse("later").expect("slug");
    assert!(migrator.register(&later, None).await.is_err(), "a purged slug was registered");
}
