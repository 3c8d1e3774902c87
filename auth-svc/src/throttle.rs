//! Login throttling in Redis. An attempt is reserved atomically (one Lua script increments the
//! per-account, per-IP and per-account+IP counters and decides) before the password hash runs, so
//! 100 parallel wrong passwords cannot exceed the limit. Each lockout doubles the next one (up to
//! 64 windows) for a day. A successful login clears the account's counters and gives its IP
//! attempt back. Redis keys hold hashes, never an email address.

use std::time::Duration;

use kit::ApiError;
use redis::aio::ConnectionManager;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

const RESERVE: &str = r#"
-- KEYS: counters (account, ip, account+ip); ARGV[1] = window seconds; ARGV[2..4] = limits.
local window = tonumber(ARGV[1])
local retry = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[i + 1])
  local count = redis.call('INCR', key)
  if count == 1 then
    redis.call('EXPIRE', key, window)
  end
  if count == limit + 1 then
    -- First refusal of this lockout: back off exponentially.
    local n = redis.call('INCR', key .. ':lockouts')
    redis.call('EXPIRE', key .. ':lockouts', 86400)
    redis.call('EXPIRE', key, window * math.min(2 ^ (n - 1), 64))
  end
  if count > limit then
    local ttl = redis.call('TTL', key)
    if ttl > retry then retry = ttl end
  end
end
return retry
"#;

/// The throttle; cheap to clone.
#[derive(Clone)]
pub struct Throttle {
    client: redis::Client,
    conn: std::sync::Arc<OnceCell<ConnectionManager>>,
    script: std::sync::Arc<redis::Script>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Throttle")
    }
}

/// The counters of one login attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    account: String,
    ip: String,
    account_ip: String,
}

impl Attempt {
    pub fn new(tenant: uuid::Uuid, email: &str, ip: &str) -> Self {
        let h = |s: &str| hex::encode(&Sha256::digest(s.as_bytes())[..16]);
        let account = h(&format!("{tenant}\0{email}"));
        let ip_h = h(&format!("{tenant}\0{ip}"));
        Self {
            account: format!("strongroom:login:acct:{account}"),
            ip: format!("strongroom:login:ip:{ip_h}"),
            account_ip: format!("strongroom:login:acctip:{account}:{ip_h}"),
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "login throttle unreachable; refusing logins until it answers");
    kit::metrics::Metrics::global().event("login_throttle_unavailable");
    ApiError::unavailable("THROTTLE_UNAVAILABLE", "logins are temporarily unavailable, retry shortly")
}

impl Throttle {
    pub fn new(url: &SecretString) -> Result<Self, String> {
        let client =
            redis::Client::open(url.expose_secret()).map_err(|_| "service.redis_url cannot be used".to_owned())?;
        Ok(Self { client, conn: Default::default(), script: std::sync::Arc::new(redis::Script::new(RESERVE)) })
    }

    async fn conn(&self) -> Result<ConnectionManager, ApiError> {
        let conn = tokio::time::timeout(
            Duration::from_secs(3),
            self.conn.get_or_try_init(|| async { ConnectionManager::new(self.client.clone()).await }),
        )
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
        Ok(conn.clone())
    }

    /// Reserves an attempt; `Err(RESOURCE_EXHAUSTED LOGIN_LOCKED)` with the wait when over a limit.
    pub async fn reserve(
        &self,
        attempt: &Attempt,
        window: Duration,
        account_limit: u32,
        ip_limit: u32,
    ) -> Result<(), ApiError> {
        let mut conn = self.conn().await?;
        let mut invocation = self.script.key(&attempt.account);
        let retry = invocation
            .key(&attempt.ip)
            .key(&attempt.account_ip)
            .arg(window.as_secs().max(1))
            .arg(account_limit)
            .arg(ip_limit)
            .arg(account_limit)
            .invoke_async(&mut conn);
        let retry: i64 =
            tokio::time::timeout(Duration::from_secs(3), retry).await.map_err(unavailable)?.map_err(unavailable)?;
        if retry > 0 {
            kit::metrics::Metrics::global().event("login_locked");
            return Err(ApiError::resource_exhausted("LOGIN_LOCKED", "too many failed logins, retry later")
                .with_retry_after(Duration::from_secs(retry.unsigned_abs())));
        }
        Ok(())
    }

    /// After a successful login: clears the account's counters and returns the IP's attempt.
    pub async fn succeeded(&self, attempt: &Attempt) -> Result<(), ApiError> {
        let mut conn = self.conn().await?;
        redis::pipe()
            .del(&attempt.account)
            .ignore()
            .del(&attempt.account_ip)
            .ignore()
            .decr(&attempt.ip, 1)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }
}
