//! Revoked sessions and API keys. auth-svc lists them in Redis the moment they are revoked;
//! every token verifier (gateway and services) checks the list on each request, so a revocation
//! takes effect everywhere at once rather than at token expiry. A verifier that cannot reach
//! Redis refuses tokens (fail closed) and says so in a log line and a metric.
//!
//! Redis may lose the list (a restart without persistence, a flush). The list therefore carries a
//! marker, [`LOADED_KEY`], which auth-svc sets once it has listed every revocation the database
//! holds from the last hour ([`Revocations::begin_loading`], [`Revocations::finish_loading`]). A
//! verifier that finds no marker has no complete list and refuses tokens too, until auth-svc has
//! listed them again (within a second or so). A Redis that keeps the marker but loses some
//! listings (a failover to a lagging replica, eviction) is mended by auth-svc listing every kept
//! revocation again every half minute.
//!
//! Each check of the marker sets `strongroom_revocation_list_complete` (1 present, 0 missing);
//! each check that finds it missing also counts `strongroom_events_total{event="revocation_list_incomplete"}`.

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::OnceCell;

use crate::error::ApiError;

/// How long a listing is kept: longer than any access token lives (15 minutes) and than the
/// API-key introspection cache.
pub const LISTING_TTL: Duration = Duration::from_secs(24 * 3600);
const TIMEOUT: Duration = Duration::from_secs(2);

/// How long a tenant's last permission change is remembered: longer than verifiers cache a
/// resolved API key (30 s).
pub const ACCESS_CHANGE_TTL: Duration = Duration::from_secs(120);

/// Marks a permission change at Redis's time, never moving the mark back (two auth-svc replicas
/// may mark one tenant at once).
const ACCESS_CHANGED: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = tonumber(redis.call('GET', KEYS[1]) or '0')
if now > old then
    redis.call('SET', KEYS[1], now, 'EX', ARGV[1])
else
    redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return now
";

fn access_key(tenant: uuid::Uuid) -> String {
    format!("strongroom:access_changed:{tenant}")
}

/// Present while Redis holds every recent revocation (see the module's documentation).
pub const LOADED_KEY: &str = "strongroom:revocations:loaded";
/// The token of the load in progress: gone if Redis restarted meanwhile, replaced if another
/// auth-svc replica started one.
const LOADING_KEY: &str = "strongroom:revocations:loading";
/// Sets the marker only if the load that began is still the one Redis knows.
const FINISH_LOADING: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('SET', KEYS[2], ARGV[2])
    redis.call('DEL', KEYS[1])
    return 1
end
return 0
";

/// Logs that the list is incomplete at most once per this long (every request is refused then).
const INCOMPLETE_LOG_EVERY_SECS: u64 = 10;
static INCOMPLETE_LOGGED_AT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn incomplete() -> ApiError {
    crate::metrics::Metrics::global().event("revocation_list_incomplete");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let last = INCOMPLETE_LOGGED_AT.load(std::sync::atomic::Ordering::Relaxed);
    if now >= last + INCOMPLETE_LOG_EVERY_SECS
        && INCOMPLETE_LOGGED_AT
            .compare_exchange(last, now, std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            marker = LOADED_KEY,
            "the revocation list is incomplete (Redis lost it, or auth-svc has not loaded it yet); refusing tokens until auth-svc has"
        );
    }
    ApiError::unavailable("REVOCATION_CHECK_UNAVAILABLE", "cannot check token revocation, retry later")
}

/// Notes what a check of the marker found (`strongroom_revocation_list_complete`). A check that
/// could not reach Redis notes nothing: it counts `revocation_check_failed` instead.
fn marker_checked(present: bool) {
    crate::metrics::Metrics::global().revocation_marker_checked(present);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    Session,
    ApiKey,
}

impl Revoked {
    /// The name the database uses for this kind (`control.revocations.kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            Revoked::Session => "session",
            Revoked::ApiKey => "api_key",
        }
    }

    /// The kind the database names `name`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "session" => Some(Revoked::Session),
            "api_key" => Some(Revoked::ApiKey),
            _ => None,
        }
    }

    fn key(self, id: &str) -> String {
        match self {
            Revoked::Session => format!("strongroom:revoked:session:{id}"),
            Revoked::ApiKey => format!("strongroom:revoked:api_key:{id}"),
        }
    }
}

/// The Redis list of revocations; cheap to clone.
#[derive(Clone)]
pub struct Revocations {
    client: redis::Client,
    conn: std::sync::Arc<OnceCell<ConnectionManager>>,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Revocations")
    }
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "revocation list unreachable; refusing tokens until it answers");
    crate::metrics::Metrics::global().event("revocation_check_failed");
    ApiError::unavailable("REVOCATION_CHECK_UNAVAILABLE", "cannot check token revocation, retry later")
}

impl Revocations {
    /// The list in the Redis at `url`; `ca` verifies a `rediss://` server ([`crate::redis::client`]).
    pub fn new(url: &SecretString, ca: Option<&std::path::Path>) -> Result<Self, String> {
        let client = crate::redis::client(url.expose_secret(), ca)
            .map_err(|e| format!("the revocation list's Redis URL cannot be used: {e}"))?;
        Ok(Self { client, conn: Default::default() })
    }

    async fn conn(&self) -> Result<ConnectionManager, ApiError> {
        let conn = tokio::time::timeout(
            2 * TIMEOUT,
            self.conn.get_or_try_init(|| async {
                // The crate's defaults (500 ms per response) are too tight for a loaded host.
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_response_timeout(Some(TIMEOUT))
                    .set_connection_timeout(Some(TIMEOUT));
                ConnectionManager::new_with_config(self.client.clone(), cfg).await
            }),
        )
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
        Ok(conn.clone())
    }

    /// Whether `id` has been revoked; refused while the list is not complete (no [`LOADED_KEY`]).
    pub async fn is_revoked(&self, kind: Revoked, id: &str) -> Result<bool, ApiError> {
        let mut conn = self.conn().await?;
        let (listed, loaded): (Option<i64>, Option<String>) =
            tokio::time::timeout(TIMEOUT, redis::cmd("MGET").arg(kind.key(id)).arg(LOADED_KEY).query_async(&mut conn))
                .await
                .map_err(unavailable)?
                .map_err(unavailable)?;
        marker_checked(loaded.is_some());
        if loaded.is_none() {
            return Err(incomplete());
        }
        Ok(listed.is_some())
    }

    /// Whether API key `id` of `tenant` has been revoked, and when (Unix milliseconds) the tenant's
    /// permissions last shrank ([`Self::access_changed`]); refused while the list is not complete.
    pub async fn api_key_state(&self, id: &str, tenant: uuid::Uuid) -> Result<(bool, Option<i64>), ApiError> {
        let mut conn = self.conn().await?;
        let mut mget = redis::cmd("MGET");
        mget.arg(Revoked::ApiKey.key(id)).arg(LOADED_KEY).arg(access_key(tenant));
        let query = mget.query_async(&mut conn);
        let (listed, loaded, changed): (Option<i64>, Option<String>, Option<i64>) =
            tokio::time::timeout(TIMEOUT, query).await.map_err(unavailable)?.map_err(unavailable)?;
        marker_checked(loaded.is_some());
        if loaded.is_none() {
            return Err(incomplete());
        }
        Ok((listed.is_some(), changed))
    }

    /// Says that permissions in `tenant` shrank now (a role revoked or deleted, a group member
    /// removed): verifiers resolve the tenant's API keys again at their next use instead of
    /// trusting what they resolved before (for up to [`ACCESS_CHANGE_TTL`]). Best effort: without
    /// it a key's permissions follow its creator's within the introspection cache's 30 s.
    pub async fn access_changed(&self, tenant: uuid::Uuid) -> Result<(), ApiError> {
        let mut conn = self.conn().await?;
        let script = redis::Script::new(ACCESS_CHANGED);
        let mut invocation = script.key(access_key(tenant));
        invocation.arg(ACCESS_CHANGE_TTL.as_secs());
        tokio::time::timeout(TIMEOUT, invocation.invoke_async::<i64>(&mut conn))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)
            .map(|_| ())
    }

    /// Redis's clock (Unix milliseconds): the one clock that resolutions of API keys and
    /// [`Self::access_changed`] marks are both read from, whatever the hosts' clocks say.
    pub async fn now_ms(&self) -> Result<i64, ApiError> {
        let mut conn = self.conn().await?;
        let (secs, micros): (i64, i64) = tokio::time::timeout(TIMEOUT, redis::cmd("TIME").query_async(&mut conn))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)?;
        Ok(secs * 1000 + micros / 1000)
    }

    /// Whether the list is complete (auth-svc loads it again when not).
    pub async fn is_loaded(&self) -> Result<bool, ApiError> {
        let mut conn = self.conn().await?;
        let loaded = tokio::time::timeout(TIMEOUT, conn.exists::<_, bool>(LOADED_KEY))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)?;
        marker_checked(loaded);
        Ok(loaded)
    }

    /// Lists `ids` as revoked.
    pub async fn revoke(&self, kind: Revoked, ids: &[String]) -> Result<(), ApiError> {
        let entries: Vec<(Revoked, String)> = ids.iter().map(|id| (kind, id.clone())).collect();
        self.revoke_each(&entries).await
    }

    /// Lists each `(kind, id)` as revoked.
    pub async fn revoke_each(&self, entries: &[(Revoked, String)]) -> Result<(), ApiError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        for (kind, id) in entries {
            pipe.set_ex(kind.key(id), 1, LISTING_TTL.as_secs()).ignore();
        }
        tokio::time::timeout(TIMEOUT, pipe.query_async::<()>(&mut conn))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)
    }

    /// Starts loading the whole list; returns the load's token for [`Self::finish_loading`].
    pub async fn begin_loading(&self) -> Result<String, ApiError> {
        let token = uuid::Uuid::new_v4().to_string();
        let mut conn = self.conn().await?;
        tokio::time::timeout(TIMEOUT, conn.set_ex::<_, _, ()>(LOADING_KEY, &token, 300))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)?;
        Ok(token)
    }

    /// Sets [`LOADED_KEY`] when the load `token` began is still Redis's: false when Redis
    /// restarted since (it lost part of what was listed) or another load began.
    pub async fn finish_loading(&self, token: &str) -> Result<bool, ApiError> {
        let mut conn = self.conn().await?;
        let script = redis::Script::new(FINISH_LOADING);
        let mut invocation = script.key(LOADING_KEY);
        invocation.key(LOADED_KEY).arg(token).arg(chrono::Utc::now().to_rfc3339());
        let done: i64 = tokio::time::timeout(TIMEOUT, invocation.invoke_async(&mut conn))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)?;
        Ok(done == 1)
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    /// A Redis database of this test's own (13 of the shared server's 16), so that removing the
    /// marker touches no other test.
    fn own_database() -> SecretString {
        let mut url = url::Url::parse(&crate::testing::redis_url()).expect("redis url");
        url.set_path("/13");
        url.to_string().into()
    }

    #[tokio::test]
    async fn nothing_counts_as_not_revoked_until_the_list_is_complete() {
        let list = Revocations::new(&own_database(), None).expect("revocations");
        let mut conn = list.conn().await.expect("redis");
        let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.expect("flush");
        let refused = list.is_revoked(Revoked::Session, "s1").await.expect_err("no marker");
        assert_eq!(refused.reason, "REVOCATION_CHECK_UNAVAILABLE");
        assert!(!list.is_loaded().await.expect("exists"));
        let complete = || {
            let text = crate::metrics::Metrics::global().encode();
            text.lines().find_map(|l| l.strip_prefix("strongroom_revocation_list_complete ")).map(str::to_owned)
        };
        assert_eq!(complete().as_deref(), Some("0"));

        // A load Redis forgot (it restarted meanwhile) or another replica took over sets no marker.
        let lost = list.begin_loading().await.expect("begin");
        let _: () = redis::cmd("DEL").arg(LOADING_KEY).query_async(&mut conn).await.expect("restart");
        assert!(!list.finish_loading(&lost).await.expect("finish"));
        let overtaken = list.begin_loading().await.expect("begin");
        let load = list.begin_loading().await.expect("begin");
        assert!(!list.finish_loading(&overtaken).await.expect("finish"));
        assert!(!list.is_loaded().await.expect("exists"));

        list.revoke_each(&[(Revoked::Session, "s1".into()), (Revoked::ApiKey, "k1".into())]).await.expect("list");
        assert!(list.finish_loading(&load).await.expect("finish"));
        assert!(list.is_loaded().await.expect("exists"));
        assert!(list.is_revoked(Revoked::Session, "s1").await.expect("listed"));
        assert_eq!(complete().as_deref(), Some("1"));
        assert!(list.is_revoked(Revoked::ApiKey, "k1").await.expect("listed"));
        assert!(!list.is_revoked(Revoked::Session, "k1").await.expect("kinds are apart"));
        assert!(!list.is_revoked(Revoked::Session, "s2").await.expect("not listed"));
        list.revoke_each(&[(Revoked::Session, "s2".into())]).await.expect("revoke");
        assert!(list.is_revoked(Revoked::Session, "s2").await.expect("listed"));
        let ttl: i64 = redis::cmd("TTL").arg(Revoked::Session.key("s2")).query_async(&mut conn).await.expect("ttl");
        assert!(ttl > 0 && ttl <= LISTING_TTL.as_secs() as i64, "{ttl}");
        let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.expect("flush");
    }

    #[test]
    fn kinds_have_their_database_names() {
        for kind in [Revoked::Session, Revoked::ApiKey] {
            assert_eq!(Revoked::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Revoked::parse("user"), None);
    }
}
