//! Personal data sealed from its first write, over real mTLS with real PostgreSQL, Redis, vault-svc
//! and SoftHSM2: a dump holds no email, name, address or user agent; logins and uniqueness go
//! through the keyed blind index; deleting a user makes every copy of their data unreadable; a
//! sealed value moved to another row does not open; reading a user costs one transit call; a
//! login is recorded on the user and the session holds its access token's `jti`; rows written
//! before sealing are sealed by auth-svc's sweep; the login throttle's Redis keys are no
//! brute-forceable pseudonym of an email or an address.

use std::collections::HashMap;

use e2e::{Constellation, reason};
use kit::testing::TestSigner;
use proto::auth::v1 as pb;
use proto::auth::v1::authentication_service_client::AuthenticationServiceClient;
use proto::auth::v1::session_service_client::SessionServiceClient;
use proto::auth::v1::user_service_client::UserServiceClient;
use proto::vault::v1 as vault;

const PASSWORD: &str = "correct horse battery staple";
const TRANSIT: &str = "strongroom.vault.v1.TransitService";

struct Fx {
    c: Constellation,
    signer: TestSigner,
    alpha: uuid::Uuid,
    owner: String,
}

fn req<T>(tenant: &str, token: Option<&str>, msg: T) -> tonic::Request<T> {
    kit::client::with_context(tonic::Request::new(msg), Some(tenant), Some(&uuid::Uuid::new_v4().to_string()), token)
}

#[allow(clippy::expect_used)]
impl Fx {
    async fn new() -> Self {
        Self::start(false).await
    }

    async fn start(with_gateway: bool) -> Self {
        Self::on(Constellation::start(with_gateway).await).await
    }

    /// On a constellation of the caller's (e.g. on a Redis of the test's own).
    async fn on(c: Constellation) -> Self {
        let _ = kit::telemetry::init("e2e", &kit::config::TelemetryConfig { otlp_endpoint: None, log: "error".into() });
        let (alpha, owner, _) = c.create_tenant_with_owner("alpha", "Owner.Quill@Alpha.example").await;
        let signer = TestSigner::generate();
        signer.publish(&c.db.admin_pool().await).await;
        Self { c, signer, alpha, owner }
    }

    /// An access token of `subject` in `tenant` with the directory permissions.
    fn admin(&self, tenant: uuid::Uuid, subject: &str) -> String {
        let mut claims = TestSigner::claims(tenant, subject);
        claims["permissions"] =
            serde_json::json!(["users.read", "users.write", "users.delete", "sessions.read", "roles.grant"]);
        self.signer.sign(&claims)
    }

    fn users(&self) -> UserServiceClient<kit::client::Channel> {
        UserServiceClient::new(self.c.channel_as("gateway", "auth"))
    }

    async fn create(&self, tenant: &str, token: &str, email: &str, name: &str) -> Result<pb::User, tonic::Status> {
        let msg = pb::CreateUserRequest {
            email: email.into(),
            display_name: name.into(),
            password: PASSWORD.into(),
            ..Default::default()
        };
        self.users().create_user(req(tenant, Some(token), msg)).await.map(tonic::Response::into_inner)
    }

    async fn get(&self, token: &str, id: &str) -> Result<pb::User, tonic::Status> {
        let msg = pb::GetUserRequest { id: id.into() };
        self.users().get_user(req("alpha", Some(token), msg)).await.map(tonic::Response::into_inner)
    }

    async fn login(&self, tenant: &str, email: &str, ip: &str, agent: &str) -> Result<pb::Tokens, tonic::Status> {
        self.login_with(tenant, email, PASSWORD, ip, agent).await
    }

    async fn login_with(
        &self,
        tenant: &str,
        email: &str,
        password: &str,
        ip: &str,
        agent: &str,
    ) -> Result<pb::Tokens, tonic::Status> {
        let msg = pb::LoginRequest {
            tenant: tenant.into(),
            email: email.into(),
            password: password.into(),
            client: Some(pb::ClientInfo { ip: ip.into(), user_agent: agent.into() }),
        };
        let answer = AuthenticationServiceClient::new(self.c.channel_as("gateway", "auth"))
            .login(req(tenant, None, msg))
            .await?
            .into_inner();
        match answer.result {
            Some(pb::login_response::Result::Tokens(t)) => Ok(t),
            other => panic!("expected tokens, got {other:?}"),
        }
    }

    async fn sessions(&self, token: &str, user: &str) -> Vec<pb::Session> {
        let msg = pb::ListSessionsRequest { user_id: user.into() };
        SessionServiceClient::new(self.c.channel_as("gateway", "auth"))
            .list_sessions(req("alpha", Some(token), msg))
            .await
            .expect("list sessions")
            .into_inner()
            .sessions
    }

    async fn admin_pool(&self) -> sqlx::PgPool {
        self.c.db.admin_pool().await
    }

    /// Transit calls vault-svc has served so far.
    async fn transit_calls(&self) -> u64 {
        e2e::rpc_calls(self.c.services["vault"].admin, TRANSIT).await
    }
}

/// A read a test makes twice.
type Read<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>;

/// Transit calls the second of two runs of `read` made (keys a replica loads on first use do not
/// count).
async fn calls_of<'a>(f: &Fx, read: &dyn Fn() -> Read<'a>) -> u64 {
    read().await;
    let before = f.transit_calls().await;
    read().await;
    f.transit_calls().await - before
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The first 16 bytes of SHA-256 of `tenant\0value`, in hex: how the login throttle named an
/// account or an address in Redis before its keys were keyed (anyone reading Redis could confirm
/// a guessed email, or run through the IPv4 space).
fn unkeyed_pseudonym(tenant: &str, value: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(format!("{tenant}\0{value}").as_bytes())[..16])
}

/// Also Redis (a dump, `MONITOR`, a replica): the login throttle's keys after failed logins,
/// of a known tenant and of an unknown one, hold no email or address, neither plain nor as an
/// unkeyed hash.
#[tokio::test]
async fn a_database_dump_holds_no_email_name_address_or_user_agent() {
    // A Redis of this test's own: every throttle key in it is this test's.
    let redis = e2e::PrivateRedis::start().await;
    let f = Fx::on(Constellation::start_with(kit::testing::TestDb::create().await, redis.url(), false).await).await;
    let admin = f.admin(f.alpha, &f.owner);
    let (email, name) = ("Zebedee.Quartermain@Probe.example", "Zebedee Quartermain-Probe");
    let (ip, agent) = ("198.51.100.213", "ProbeAgent/9.9 (dump-check)");
    let user = f.create("alpha", &admin, email, name).await.expect("create");
    assert_eq!((user.email.as_str(), user.display_name.as_str()), ("zebedee.quartermain@probe.example", name));
    let tokens = f.login("alpha", email, ip, agent).await.expect("login");
    // Everything reads back through the API.
    assert_eq!(f.get(&admin, &user.id).await.expect("get").display_name, name);
    let sessions = f.sessions(&admin, &user.id).await;
    let listed = sessions.iter().find(|s| s.id == tokens.session_id).expect("the new session is listed");
    assert_eq!((listed.ip.as_str(), listed.user_agent.as_str()), (ip, agent));

    let dump = e2e::pg_dump(&f.c.db);
    assert!(dump.contains("user_email_index") && dump.contains("email_sealed"), "the dump covers the auth tables");
    for plain in [email, &email.to_lowercase(), name, ip, agent, "owner.quill@alpha.example"] {
        assert!(!dump.contains(plain), "{plain:?} is in the dump");
        assert!(!dump.contains(&hex(plain)), "{plain:?} is in the dump as hex");
    }

    let ghost = "ghostalpha";
    for tenant in ["alpha", ghost] {
        let err = f.login_with(tenant, email, "a wrong password", ip, agent).await.expect_err("wrong password");
        assert_eq!(reason(&err), "INVALID_CREDENTIALS");
    }
    let mut conn = f.c.redis_client().get_multiplexed_async_connection().await.expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS").arg("strongroom:login:*").query_async(&mut conn).await.expect("keys");
    for kind in ["acct", "acctip", "ip"] {
        let n = keys.iter().filter(|k| k.split(':').nth(2) == Some(kind)).count();
        assert!(n >= 2, "the known and the unknown tenant's {kind} counters are kept: {keys:?}");
    }
    let (lower, alpha) = (email.to_lowercase(), f.alpha.to_string());
    let unknown = format!("unknown:{ghost}");
    let mut pseudonyms = Vec::new();
    for tenant in [alpha.as_str(), unknown.as_str()] {
        pseudonyms.extend([email, &lower, ip].map(|v| unkeyed_pseudonym(tenant, v)));
    }
    for key in &keys {
        for plain in [email, &lower, ip, &hex(&lower), &hex(ip)] {
            assert!(!key.contains(plain), "{plain:?} is in the Redis key {key}");
        }
        for old in &pseudonyms {
            assert!(!key.contains(old), "the unkeyed pseudonym {old} is in the Redis key {key}");
        }
    }
    f.c.stop().await;
}

#[tokio::test]
async fn logins_find_users_by_a_keyed_blind_index_and_emails_stay_unique() {
    let f = Fx::new().await;
    let admin = f.admin(f.alpha, &f.owner);
    let ada = f.create("alpha", &admin, "ada@example.com", "Ada").await.expect("create");
    // The address as typed differently still finds the user.
    let tokens = f.login("alpha", "  Ada@Example.COM ", "203.0.113.9", "e2e").await.expect("login");
    assert_eq!(e2e::jwt_part(&tokens.access_token, 1)["sub"], ada.id.as_str());
    let err = f.create("alpha", &admin, "ADA@example.com", "Other").await.expect_err("taken");
    assert_eq!(reason(&err), "EMAIL_TAKEN");
    // Two users creating the same address at once: one wins.
    let (a, b) = tokio::join!(
        f.create("alpha", &admin, "race@example.com", "A"),
        f.create("alpha", &admin, "Race@Example.com", "B")
    );
    assert!(a.is_ok() != b.is_ok(), "exactly one of two racing creations wins: {a:?} {b:?}");
    let loser = a.err().or(b.err()).expect("a loser");
    assert_eq!(reason(&loser), "EMAIL_TAKEN");

    // The same address in another tenant is another user, under another key: nothing links them.
    let bravo = f.c.create_tenant("bravo").await;
    f.create("bravo", &f.admin(bravo, &uuid::Uuid::new_v4().to_string()), "ada@example.com", "Ada B")
        .await
        .expect("another tenant's ada");
    let pool = f.admin_pool().await;
    let blind = |schema: &'static str| {
        let pool = pool.clone();
        async move {
            let sql =
                format!("SELECT blind FROM {schema}.user_email_index i JOIN {schema}.users u ON u.id = i.user_id");
            sqlx::query_scalar::<_, Vec<u8>>(&sql).fetch_all(&pool).await.expect("index")
        }
    };
    let (alpha_index, bravo_index) = (blind("t_alpha").await, blind("t_bravo").await);
    assert_eq!(alpha_index.len(), 3, "the owner, ada and the race's winner");
    assert!(alpha_index.iter().all(|b| b.len() == 32));
    assert!(bravo_index.iter().all(|b| !alpha_index.contains(b)), "a blind index is keyed per tenant");
    f.c.stop().await;
}

#[tokio::test]
async fn deleting_a_user_makes_every_copy_of_their_data_unreadable() {
    let f = Fx::new().await;
    let admin = f.admin(f.alpha, &f.owner);
    let user = f.create("alpha", &admin, "leaving@example.com", "Leaving User").await.expect("create");
    let tokens = f.login("alpha", "leaving@example.com", "192.0.2.44", "Leaver/1.0").await.expect("login");
    let id: uuid::Uuid = user.id.parse().expect("id");
    let pool = f.admin_pool().await;
    // What a backup taken now would hold.
    let (email, name): (String, String) =
        sqlx::query_as("SELECT email_sealed, display_name_sealed FROM t_alpha.users WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("sealed");
    let session: uuid::Uuid = tokens.session_id.parse().expect("session id");
    let ip: String = sqlx::query_scalar("SELECT ip_sealed FROM t_alpha.sessions WHERE id = $1")
        .bind(session)
        .fetch_one(&pool)
        .await
        .expect("sealed ip");
    // Until the deletion, the copies open (as auth-svc, where they are stored).
    let open = |ciphertext: String, table: &str, column: &str, row: uuid::Uuid| {
        let context = HashMap::from([
            ("table".to_owned(), table.to_owned()),
            ("column".to_owned(), column.to_owned()),
            ("row".to_owned(), row.to_string()),
        ]);
        let msg = vault::DecryptRequest { ciphertext, context, subject: id.to_string() };
        let mut transit = vault::transit_service_client::TransitServiceClient::new(f.c.channel_as("auth", "vault"));
        async move { transit.decrypt(req("alpha", None, msg)).await.map(|r| r.into_inner().plaintext) }
    };
    assert_eq!(open(email.clone(), "users", "email", id).await.expect("opens"), b"leaving@example.com");

    f.users()
        .delete_user(req("alpha", Some(&admin), pb::DeleteUserRequest { id: user.id.clone() }))
        .await
        .expect("delete");

    for (copy, table, column, row) in
        [(email, "users", "email", id), (name, "users", "display_name", id), (ip, "sessions", "ip", session)]
    {
        let err = open(copy, table, column, row).await.expect_err("shredded");
        assert_eq!(reason(&err), "KEY_DESTROYED", "{table}.{column}");
    }
    let left: (Option<String>, Option<String>, i64, Option<String>) = sqlx::query_as(
        "SELECT u.email_sealed, u.display_name_sealed,
                (SELECT count(*) FROM t_alpha.user_email_index i WHERE i.user_id = u.id),
                (SELECT s.ip_sealed FROM t_alpha.sessions s WHERE s.id = $2)
           FROM t_alpha.users u WHERE u.id = $1",
    )
    .bind(id)
    .bind(session)
    .fetch_one(&pool)
    .await
    .expect("row");
    assert_eq!(left, (None, None, 0, None), "nothing of the user is kept, not even the index of their email");
    let err = f.login("alpha", "leaving@example.com", "192.0.2.44", "Leaver/1.0").await.expect_err("gone");
    assert_eq!(reason(&err), "INVALID_CREDENTIALS");
    // The address is free again.
    f.create("alpha", &admin, "leaving@example.com", "Returning").await.expect("the address can be used again");
    f.c.stop().await;
}

#[tokio::test]
async fn a_sealed_value_moved_to_another_row_or_column_does_not_open() {
    let f = Fx::new().await;
    let admin = f.admin(f.alpha, &f.owner);
    let alice = f.create("alpha", &admin, "alice.secret@example.com", "Alice").await.expect("alice");
    let bob = f.create("alpha", &admin, "bob@example.com", "Bob").await.expect("bob");
    let pool = f.admin_pool().await;
    // An attacker with write access to the database copies alice's email onto bob's row.
    sqlx::query(
        "UPDATE t_alpha.users SET email_sealed = (SELECT email_sealed FROM t_alpha.users WHERE id = $1) WHERE id = $2",
    )
    .bind(uuid::Uuid::parse_str(&alice.id).expect("id"))
    .bind(uuid::Uuid::parse_str(&bob.id).expect("id"))
    .execute(&pool)
    .await
    .expect("tamper");
    // An integrity failure (an internal error to the caller, logged for the operator), never
    // alice's address shown as bob's.
    let unreadable = |err: tonic::Status| {
        assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
        assert!(err.message().contains("does not open") && !err.message().contains("alice"), "{}", err.message());
    };
    unreadable(f.get(&admin, &bob.id).await.expect_err("a moved value does not open"));
    // And into another column of alice's own row.
    sqlx::query("UPDATE t_alpha.users SET display_name_sealed = email_sealed WHERE id = $1")
        .bind(uuid::Uuid::parse_str(&alice.id).expect("id"))
        .execute(&pool)
        .await
        .expect("tamper");
    unreadable(f.get(&admin, &alice.id).await.expect_err("a moved value does not open"));
    f.c.stop().await;
}

#[tokio::test]
async fn reading_users_and_sessions_costs_one_transit_call() {
    let f = Fx::new().await;
    let admin = f.admin(f.alpha, &f.owner);
    let mut last = None;
    for i in 0..30 {
        last = Some(
            f.create("alpha", &admin, &format!("reader{i}@example.com"), &format!("Reader {i}")).await.expect("create"),
        );
    }
    let user = last.expect("a user");
    for i in 0..3 {
        f.login("alpha", "reader29@example.com", &format!("192.0.2.{i}"), "Reader/1.0").await.expect("login");
    }
    let user_token = {
        let mut claims = TestSigner::claims(f.alpha, &user.id);
        claims["permissions"] = serde_json::json!([]);
        f.signer.sign(&claims)
    };
    let get = || -> Read<'_> { Box::pin(async { f.get(&admin, &user.id).await.map(drop).expect("get") }) };
    let list = || -> Read<'_> {
        Box::pin(async {
            let msg = pb::ListUsersRequest { page_size: 500, page_token: String::new() };
            let listed = f.users().list_users(req("alpha", Some(&admin), msg)).await.expect("list").into_inner();
            assert_eq!(listed.users.len(), 31);
            assert!(listed.users.iter().all(|u| u.email.contains('@') && !u.display_name.is_empty()));
        })
    };
    let sessions = || -> Read<'_> {
        Box::pin(async {
            let sessions = f.sessions(&admin, &user.id).await;
            assert_eq!(sessions.len(), 3);
            assert!(sessions.iter().all(|s| s.user_agent == "Reader/1.0"));
        })
    };
    let export = || -> Read<'_> {
        Box::pin(async {
            let export = f.users().export_me(req("alpha", Some(&user_token), pb::ExportMeRequest {})).await;
            let doc: serde_json::Value =
                serde_json::from_str(&export.expect("export").into_inner().json).expect("json");
            assert_eq!(doc["user"]["email"], "reader29@example.com");
            assert_eq!(doc["sessions"].as_array().map(Vec::len), Some(3));
            assert_eq!(doc["sessions"][0]["user_agent"], "Reader/1.0");
        })
    };
    for (name, calls) in [
        ("GetUser", calls_of(&f, &get).await),
        ("ListUsers", calls_of(&f, &list).await),
        ("ListSessions", calls_of(&f, &sessions).await),
        ("ExportMe", calls_of(&f, &export).await),
    ] {
        assert!(calls <= 1, "{name} made {calls} transit calls");
    }
    f.c.stop().await;
}

#[tokio::test]
async fn a_login_is_recorded_and_the_session_holds_its_access_tokens_id() {
    let f = Fx::new().await;
    let admin = f.admin(f.alpha, &f.owner);
    let user = f.create("alpha", &admin, "clock@example.com", "Clock").await.expect("create");
    assert!(user.last_login_time.is_none(), "never logged in");
    let tokens = f.login("alpha", "clock@example.com", "192.0.2.8", "e2e").await.expect("login");
    let pool = f.admin_pool().await;
    let jti_of = |token: &str| e2e::jwt_part(token, 1)["jti"].as_str().expect("jti").to_owned();
    let stored = || async {
        sqlx::query_scalar::<_, uuid::Uuid>("SELECT access_jti FROM t_alpha.sessions WHERE id = $1::uuid")
            .bind(&tokens.session_id)
            .fetch_one(&pool)
            .await
            .expect("session")
            .to_string()
    };
    assert_eq!(stored().await, jti_of(&tokens.access_token));
    let logged_in = f.get(&admin, &user.id).await.expect("get").last_login_time.expect("login recorded");

    let msg = pb::RefreshRequest { tenant: "alpha".into(), refresh_token: tokens.refresh_token.clone(), client: None };
    let refreshed = AuthenticationServiceClient::new(f.c.channel_as("gateway", "auth"))
        .refresh(req("alpha", None, msg))
        .await
        .expect("refresh")
        .into_inner();
    assert_ne!(jti_of(&refreshed.access_token), jti_of(&tokens.access_token));
    assert_eq!(stored().await, jti_of(&refreshed.access_token), "the session holds its newest token's id");
    let after = f.get(&admin, &user.id).await.expect("get").last_login_time.expect("still recorded");
    assert_eq!(after, logged_in, "a refresh is not a login");
    f.c.stop().await;
}

#[tokio::test]
async fn rows_written_before_sealing_are_sealed_by_the_sweep_and_keep_working() {
    let f = Fx::new().await;
    let admin = f.admin(f.alpha, &f.owner);
    let template = f.create("alpha", &admin, "template@example.com", "Template").await.expect("create");
    let pool = f.admin_pool().await;
    // A user and a session as auth-svc wrote them before personal data was sealed.
    let old: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO t_alpha.users (tenant_id, email, display_name, password_hash)
         SELECT tenant_id, 'legacy.user@example.com', 'Legacy Person', password_hash FROM t_alpha.users WHERE id = $1
         RETURNING id",
    )
    .bind(uuid::Uuid::parse_str(&template.id).expect("id"))
    .fetch_one(&pool)
    .await
    .expect("legacy user");
    sqlx::query(
        "INSERT INTO t_alpha.sessions (tenant_id, user_id, ip, user_agent, amr, expires_at)
         SELECT tenant_id, id, '198.51.100.77', 'LegacyAgent/0.1', ARRAY['pwd'], now() + interval '1 day'
           FROM t_alpha.users WHERE id = $1",
    )
    .bind(old)
    .execute(&pool)
    .await
    .expect("legacy session");
    // Before the sweep, the legacy user logs in and reads as before, and its address is taken.
    f.login("alpha", "Legacy.User@example.com", "192.0.2.1", "e2e").await.expect("legacy login before sealing");
    assert_eq!(f.get(&admin, &old.to_string()).await.expect("get").email, "legacy.user@example.com");
    let err = f.create("alpha", &admin, "legacy.user@example.com", "Copy").await.expect_err("taken");
    assert_eq!(reason(&err), "EMAIL_TAKEN");

    // A replica that starts runs the sweep at once.
    let replica = f.c.start_auth_replica_with(|_| {}).await;
    let sealed = || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT u.email IS NULL AND u.display_name IS NULL AND u.email_sealed IS NOT NULL
                    AND NOT EXISTS (SELECT 1 FROM t_alpha.sessions s WHERE s.user_id = u.id AND s.ip <> '')
               FROM t_alpha.users u WHERE u.id = $1",
        )
        .bind(old)
        .fetch_one(&pool)
        .await
        .expect("state")
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while !sealed().await {
        assert!(tokio::time::Instant::now() < deadline, "the sweep did not seal the legacy rows");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    f.login("alpha", "legacy.user@example.com", "192.0.2.2", "e2e").await.expect("legacy login after sealing");
    let user = f.get(&admin, &old.to_string()).await.expect("get");
    assert_eq!((user.email.as_str(), user.display_name.as_str()), ("legacy.user@example.com", "Legacy Person"));
    assert!(f.sessions(&admin, &old.to_string()).await.iter().any(|s| s.user_agent == "LegacyAgent/0.1"));
    let dump = e2e::pg_dump(&f.c.db);
    for plain in ["legacy.user@example.com", "Legacy Person", "198.51.100.77", "LegacyAgent/0.1"] {
        assert!(!dump.contains(plain), "{plain:?} is in the dump after the sweep");
    }
    replica.stop().await.expect("replica stops");
    f.c.stop().await;
}

#[tokio::test]
async fn rotating_the_email_index_key_keeps_logins_and_uniqueness() {
    let f = Fx::new().await;
    let admin = f.admin(f.alpha, &f.owner);
    for email in ["ada@example.com", "bob@example.com"] {
        f.create("alpha", &admin, email, "Someone").await.expect("create");
    }
    let pool = f.admin_pool().await;
    let old_blinds: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT blind FROM t_alpha.user_email_index").fetch_all(&pool).await.expect("index");
    let mut tenants =
        proto::auth::v1::tenant_service_client::TenantServiceClient::new(f.c.channel_as("operator", "auth"));
    let rotate = pb::RotateEmailIndexKeyRequest { slug: "alpha".into(), request_id: uuid::Uuid::new_v4().to_string() };
    // A user created while the rotation runs is indexed under the new key too.
    let (rotated, carol) =
        tokio::join!(tenants.rotate_email_index_key(rotate), f.create("alpha", &admin, "carol@example.com", "Carol"));
    let rotated = rotated.expect("rotate").into_inner();
    carol.expect("created during the rotation");
    assert_eq!(rotated.key_version, 2);
    assert!(rotated.users_indexed >= 3, "{rotated:?}");

    let index: Vec<(i32, Vec<u8>)> = sqlx::query_as("SELECT key_version, blind FROM t_alpha.user_email_index")
        .fetch_all(&pool)
        .await
        .expect("index");
    assert_eq!(index.len(), 4, "the owner, ada, bob and carol, once each");
    assert!(index.iter().all(|(v, b)| *v == 2 && !old_blinds.contains(b)), "only the new version's rows are left");
    let retired: (Option<String>, bool) =
        sqlx::query_as("SELECT wrapped_key, retired_at IS NOT NULL FROM t_alpha.email_index_keys WHERE version = 1")
            .fetch_one(&pool)
            .await
            .expect("version 1");
    assert_eq!(retired, (None, true), "the old key is gone");
    for email in ["ada@example.com", "Bob@Example.com", "carol@example.com"] {
        f.login("alpha", email, "192.0.2.5", "e2e").await.expect("login after the rotation");
    }
    let err = f.create("alpha", &admin, "ADA@example.com", "Again").await.expect_err("still taken");
    assert_eq!(reason(&err), "EMAIL_TAKEN");
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT event_id) FROM (SELECT event_id, action FROM t_alpha.audit_outbox
          UNION ALL SELECT event_id, action FROM t_alpha.audit_log) a WHERE action = 'auth.email_index_rotate'",
    )
    .fetch_one(&pool)
    .await
    .expect("audit");
    assert_eq!(audited, 1, "one audit record of the rotation");
    f.c.stop().await;
}

/// A call to the gateway as the bearer of `token` in tenant alpha.
async fn http(f: &Fx, path: &str, token: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let bearer = format!("Bearer {token}");
    let headers =
        [("authorization", bearer.as_str()), ("x-strongroom-tenant", "alpha"), ("content-type", "application/json")];
    let body = serde_json::to_vec(&body).expect("json");
    let (status, _, json) = f.c.gateway_request(http::Method::POST, path, &headers, body).await.expect("request");
    (status.as_u16(), json)
}

#[tokio::test]
async fn users_change_their_email_and_password_over_http_and_other_sessions_end() {
    let f = Fx::start(true).await;
    let admin = f.admin(f.alpha, &f.owner);
    let user = f.create("alpha", &admin, "before@example.com", "Mover").await.expect("create");
    f.create("alpha", &admin, "taken@example.com", "Other").await.expect("create");
    let other = f.login("alpha", "before@example.com", "192.0.2.10", "Laptop/1").await.expect("another session");
    let mine = f.login("alpha", "before@example.com", "192.0.2.11", "Phone/1").await.expect("this session");

    let change = |email: &str, password: &str| serde_json::json!({ "new_email": email, "current_password": password });
    let (s, e) = http(&f, "/v1/me/email", &mine.access_token, change("after@example.com", "wrong password!")).await;
    assert_eq!((s, e["error"]["reason"].as_str()), (401, Some("INVALID_CREDENTIALS")), "{e}");
    let (s, e) = http(&f, "/v1/me/email", &mine.access_token, change("Taken@Example.com", PASSWORD)).await;
    assert_eq!((s, e["error"]["reason"].as_str()), (409, Some("EMAIL_TAKEN")), "{e}");
    let (s, e) = http(&f, "/v1/me/email", &mine.access_token, change("not an address", PASSWORD)).await;
    assert_eq!(s, 400, "{e}");
    let (s, changed) = http(&f, "/v1/me/email", &mine.access_token, change("After@Example.com", PASSWORD)).await;
    assert_eq!((s, changed["email"].as_str()), (200, Some("after@example.com")), "{changed}");
    assert_eq!(changed["id"], user.id.as_str());

    // The old address finds nobody and is free; the new one logs in.
    let err = f.login("alpha", "before@example.com", "192.0.2.12", "e2e").await.expect_err("old address");
    assert_eq!(reason(&err), "INVALID_CREDENTIALS");
    f.login("alpha", "after@example.com", "192.0.2.12", "e2e").await.expect("new address");
    // The other session ended with the old address; this one goes on.
    let msg = pb::RefreshRequest { tenant: "alpha".into(), refresh_token: other.refresh_token.clone(), client: None };
    let err = AuthenticationServiceClient::new(f.c.channel_as("gateway", "auth"))
        .refresh(req("alpha", None, msg))
        .await
        .expect_err("the other session ended");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");

    let password = |current: &str, new: &str| serde_json::json!({ "current_password": current, "new_password": new });
    let (s, e) =
        http(&f, "/v1/me/password", &mine.access_token, password("wrong password!", "a new passphrase 2")).await;
    assert_eq!((s, e["error"]["reason"].as_str()), (401, Some("INVALID_CREDENTIALS")), "{e}");
    let (s, e) = http(&f, "/v1/me/password", &mine.access_token, password(PASSWORD, "short")).await;
    assert_eq!(s, 400, "{e}");
    let (s, ok) = http(&f, "/v1/me/password", &mine.access_token, password(PASSWORD, "a new passphrase 2")).await;
    assert_eq!((s, ok["changed"].as_bool()), (200, Some(true)), "{ok}");
    let err = f.login("alpha", "after@example.com", "192.0.2.13", "e2e").await.expect_err("the old password");
    assert_eq!(reason(&err), "INVALID_CREDENTIALS");

    let pool = f.admin_pool().await;
    let audited: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT action, outcome FROM (SELECT action, outcome FROM t_alpha.audit_outbox
          UNION ALL SELECT action, outcome FROM t_alpha.audit_log) a
          WHERE action IN ('user.email_change', 'user.password_change') ORDER BY 1, 2",
    )
    .fetch_all(&pool)
    .await
    .expect("audit");
    let expected = [
        ("user.email_change", "denied"),
        ("user.email_change", "success"),
        ("user.password_change", "denied"),
        ("user.password_change", "success"),
    ];
    assert_eq!(audited, expected.map(|(a, o)| (a.to_owned(), o.to_owned())));
    f.c.stop().await;
}

/// A call to the gateway with `headers`.
async fn http_as(
    f: &Fx,
    method: http::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut headers = headers.to_vec();
    let body = if body.is_null() {
        Vec::new()
    } else {
        headers.push(("content-type", "application/json"));
        serde_json::to_vec(&body).expect("json")
    };
    let (status, _, json) = f.c.gateway_request(method, path, &headers, body).await.expect("request");
    (status.as_u16(), json)
}

#[tokio::test]
async fn a_suspended_user_appeals_is_asked_for_more_and_the_decision_lifts_the_suspension() {
    use http::Method;
    let f = Fx::start(true).await;
    let admin = {
        let mut claims = TestSigner::claims(f.alpha, &f.owner);
        claims["permissions"] = serde_json::json!(["users.read", "users.write", "users.suspend"]);
        f.signer.sign(&claims)
    };
    let bearer = format!("Bearer {admin}");
    let staff = [("authorization", bearer.as_str()), ("x-strongroom-tenant", "alpha")];
    let user = f.create("alpha", &admin, "appellant@example.com", "Appellant").await.expect("create");
    let statement = "I was travelling; the logins from abroad were mine. Ticket APPEAL-7781.";
    let creds = |text: Option<&str>| serde_json::json!({ "tenant": "alpha", "email": "Appellant@example.com", "password": PASSWORD, "text": text });
    // An active user has nothing to appeal.
    let (s, e) = http_as(&f, Method::POST, "/v1/auth/appeal", &[], creds(Some(statement))).await;
    assert_eq!((s, e["error"]["reason"].as_str()), (412, Some("NOT_SUSPENDED")), "{e}");

    let msg = pb::SuspendUserRequest { id: user.id.clone(), reason: "logins from an unusual country".into() };
    f.users().suspend_user(req("alpha", Some(&admin), msg)).await.expect("suspend");
    let wrong = serde_json::json!({ "tenant": "alpha", "email": "appellant@example.com", "password": "not the password", "text": statement });
    let (s, e) = http_as(&f, Method::POST, "/v1/auth/appeal", &[], wrong).await;
    assert_eq!((s, e["error"]["reason"].as_str()), (401, Some("INVALID_CREDENTIALS")), "{e}");

    let (s, filed) = http_as(&f, Method::POST, "/v1/auth/appeal", &[], creds(Some(statement))).await;
    assert_eq!(s, 200, "{filed}");
    assert_eq!(filed["status"], "open");
    assert_eq!(filed["suspension_reason"], "logins from an unusual country");
    assert_eq!(filed["messages"][0]["body"], statement);
    let id = filed["id"].as_str().expect("id").to_owned();
    let (s, e) = http_as(&f, Method::POST, "/v1/auth/appeal", &[], creds(Some("again"))).await;
    assert_eq!((s, e["error"]["reason"].as_str()), (412, Some("APPEAL_OPEN")), "{e}");

    let (s, page) = http_as(&f, Method::GET, "/v1/appeals", &staff, serde_json::Value::Null).await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["appeals"][0]["id"], id.as_str());
    assert_eq!(page["appeals"][0]["messages"][0]["body"], statement);
    let ask = serde_json::json!({ "message": "Which device did you use?" });
    let (s, asked) = http_as(&f, Method::POST, &format!("/v1/appeals/{id}/request-information"), &staff, ask).await;
    assert_eq!((s, asked["status"].as_str()), (200, Some("information_requested")), "{asked}");
    let decide = |decision: &str| serde_json::json!({ "decision": decision, "reason": "Confirmed with the ticket" });
    let (s, e) = http_as(&f, Method::POST, &format!("/v1/appeals/{id}/decide"), &staff, decide("lift")).await;
    assert_eq!((s, e["error"]["reason"].as_str()), (412, Some("APPEAL_NOT_OPEN")), "{e}");

    // The user sees the question, and answers it.
    let (s, seen) = http_as(&f, Method::POST, "/v1/auth/appeal/status", &[], creds(None)).await;
    assert_eq!(s, 200, "{seen}");
    assert_eq!(seen["messages"][1]["author"], "staff");
    assert_eq!(seen["messages"][1]["body"], "Which device did you use?");
    let (s, answered) = http_as(&f, Method::POST, "/v1/auth/appeal/answer", &[], creds(Some("My phone."))).await;
    assert_eq!((s, answered["status"].as_str()), (200, Some("open")), "{answered}");
    let (s, e) = http_as(&f, Method::POST, "/v1/auth/appeal/answer", &[], creds(Some("More."))).await;
    assert_eq!((s, e["error"]["reason"].as_str()), (412, Some("NO_INFORMATION_REQUESTED")), "{e}");

    // A member of staff without users.suspend cannot decide.
    let viewer = {
        let mut claims = TestSigner::claims(f.alpha, &f.owner);
        claims["permissions"] = serde_json::json!(["users.read"]);
        format!("Bearer {}", f.signer.sign(&claims))
    };
    let viewer = [("authorization", viewer.as_str()), ("x-strongroom-tenant", "alpha")];
    let (s, _) = http_as(&f, Method::POST, &format!("/v1/appeals/{id}/decide"), &viewer, decide("lift")).await;
    assert_eq!(s, 403);

    let (s, decided) = http_as(&f, Method::POST, &format!("/v1/appeals/{id}/decide"), &staff, decide("lift")).await;
    assert_eq!((s, decided["status"].as_str()), (200, Some("lifted")), "{decided}");
    assert_eq!(decided["decision_reason"], "Confirmed with the ticket");
    // Lifting reactivated the user: they log in, and their export holds the whole history.
    let tokens = f.login("alpha", "appellant@example.com", "192.0.2.50", "e2e").await.expect("login after lifting");
    let export = f
        .users()
        .export_me(req("alpha", Some(&tokens.access_token), pb::ExportMeRequest {}))
        .await
        .expect("export")
        .into_inner();
    let doc: serde_json::Value = serde_json::from_str(&export.json).expect("json");
    let history = &doc["appeals"][0];
    assert_eq!(history["status"], "lifted");
    assert_eq!(history["messages"].as_array().map(Vec::len), Some(3), "{history}");
    assert_eq!(history["decision_reason"], "Confirmed with the ticket");

    let pool = f.admin_pool().await;
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT action FROM (SELECT action FROM t_alpha.audit_outbox UNION ALL SELECT action FROM t_alpha.audit_log) a
          WHERE action LIKE 'appeal.%' OR action = 'user.reactivate' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .expect("audit");
    assert_eq!(
        actions,
        ["appeal.answer", "appeal.decide", "appeal.file", "appeal.information_request", "user.reactivate"]
    );
    let dump = e2e::pg_dump(&f.c.db);
    for plain in [
        statement,
        "Which device did you use?",
        "My phone.",
        "logins from an unusual country",
        "Confirmed with the ticket",
    ] {
        assert!(!dump.contains(plain), "{plain:?} is in the dump");
    }
    f.c.stop().await;
}
