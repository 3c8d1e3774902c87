//! Login throttling in Redis. An attempt is reserved atomically (one Lua script increments the
//! per-account+IP, per-IP and per-account counters and decides) before the password hash runs, so
//! 100 parallel wrong passwords cannot exceed the limit. The hard lock is per account+IP (the
//! tenant's `lockout_threshold`): wrong passwords from one address do not lock the owner out from
//! everywhere. The per-account limit, across all addresses, is much higher
//! (`service.account_failure_factor` times the threshold) and answers `ACCOUNT_UNDER_ATTACK`: the
//! account is under a broad attack. Each lockout doubles the next one (up to 64 windows) for a day.
//! A successful login clears the account's counters and gives its IP attempt back.
//!
//! Redis keys hold keyed identifiers, never an email or an address, nor an unkeyed hash of one
//! (whoever reads Redis could confirm a guessed email or run through the IPv4 space): HMACs under
//! the tenant's email index key ([`crate::email_index::EmailIndex::throttle_ids`]), so also per
//! tenant. A rotation of that key gives every account and address fresh counters once. An
//! unknown or suspended tenant has no key: its attempts are counted under a random key of this
//! process ([`unknown_tenant_ids`]), so per replica; nothing real is protected there.

use std::time::Duration;

use kit::ApiError;
use redis::aio::ConnectionManager;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::OnceCell;
use zeroize::Zeroizing;

use crate::domain::email::{Throttled, normalized, throttle_id};
use crate::error::AuthError;

const RESERVE: &str = r#"
-- KEYS: counters (account+ip, ip, account); ARGV[1] = window seconds; ARGV[2..4] = their limits.
-- Returns {seconds to wait, index of the counter that refused} ({0, 0}: go ahead). The account
-- from every address counts only attempts that the account+IP and IP limits let through: an
-- address hammering one account is refused there, and cannot push the account over its limit
-- (at most its own threshold of attempts counts there). The address counts every attempt.
local window = tonumber(ARGV[1])
local function count(i)
  local key, limit = KEYS[i], tonumber(ARGV[i + 1])
  local n = redis.call('INCR', key)
  if n == 1 then
    redis.call('EXPIRE', key, window)
  end
  if n == limit + 1 then
    -- First refusal of this lockout: back off exponentially.
    local lockouts = redis.call('INCR', key .. ':lockouts')
    redis.call('EXPIRE', key .. ':lockouts', 86400)
    redis.call('EXPIRE', key, window * math.min(2 ^ (lockouts - 1), 64))
  end
  if n > limit then
    return math.max(redis.call('TTL', key), 1)
  end
  return 0
end
local retry, which = 0, 0
for i = 1, 2 do
  local wait = count(i)
  if wait > retry then
    retry, which = wait, i
  end
end
if retry > 0 then
  return {retry, which}
end
local wait = count(3)
if wait > 0 then
  return {wait, 3}
end
return {0, 0}
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
    account_ip: String,
    ip: String,
    account: String,
}

impl Attempt {
    /// The attempt on the account `account` from the address `address`: their keyed identifiers
    /// ([`crate::email_index::EmailIndex::throttle_ids`], [`unknown_tenant_ids`]).
    pub fn new(account: &str, address: &str) -> Self {
        Self {
            account_ip: format!("strongroom:login:acctip:{account}:{address}"),
            ip: format!("strongroom:login:ip:{address}"),
            account: format!("strongroom:login:acct:{account}"),
        }
    }
}

/// A random key of this process, for tenants that have none.
static UNKNOWN_TENANT_KEY: std::sync::OnceLock<Zeroizing<[u8; 32]>> = std::sync::OnceLock::new();

/// The (account, address) identifiers of an attempt on `email` from `ip` for a tenant that does not
/// exist or is suspended (`tenant_raw`, the name as given): throttled the same way as a known
/// tenant's, so that throttling tells no tenant from another, under a random key of this process
/// (there is no tenant key). Its counters are therefore per replica and start afresh at a
/// restart; no real account is behind them.
pub fn unknown_tenant_ids(tenant_raw: &str, email: &str, ip: &str) -> Result<(String, String), ApiError> {
    let key = match UNKNOWN_TENANT_KEY.get() {
        Some(key) => key,
        None => {
            let mut fresh = Zeroizing::new([0u8; 32]);
            getrandom::fill(fresh.as_mut()).map_err(|e| ApiError::internal(&e))?;
            // Two first attempts may race: both use the key that was set.
            UNKNOWN_TENANT_KEY.get_or_init(|| fresh)
        }
    };
    let scope = format!("unknown:{tenant_raw}\0");
    ids(key.as_slice(), &scope, email, ip)
}

/// The (account, address) identifiers of `email` (normalized here) from `ip` under `key`, their
/// values prefixed with `scope`.
pub(crate) fn ids(key: &[u8], scope: &str, email: &str, ip: &str) -> Result<(String, String), ApiError> {
    let id = |kind, value: String| throttle_id(key, kind, &value).map_err(|e| ApiError::internal(&e));
    let account = id(Throttled::Account, format!("{scope}{}", normalized(email)))?;
    let address = id(Throttled::Address, format!("{scope}{}", address(ip)))?;
    Ok((account, address))
}

/// Which limit refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lockout {
    /// This account from this address: the hard lock.
    AccountFromAddress,
    /// This address, all accounts.
    Address,
    /// This account from every address: a broad attack.
    Account,
}

impl Lockout {
    pub fn scope(self) -> &'static str {
        match self {
            Self::AccountFromAddress => "account_ip",
            Self::Address => "ip",
            Self::Account => "account",
        }
    }

    /// The refusal, with the wait.
    pub fn error(self, wait: Duration) -> ApiError {
        match self {
            Self::Account => AuthError::AccountUnderAttack(wait),
            _ => AuthError::LoginLocked(wait),
        }
        .into()
    }
}

/// The limits of one attempt.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub window: Duration,
    /// Per account+IP: the tenant's `lockout_threshold`.
    pub account_ip: u32,
    pub ip: u32,
    pub account: u32,
}

/// The address an attempt counts against: an IPv6 client by its /64 (one host holds a whole /64,
/// and would otherwise get a fresh lock per address), as the gateway's rate limiter counts it.
fn address(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", std::net::Ipv6Addr::from(prefix))
        }
        Ok(std::net::IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(|v4| v4.to_string()).unwrap_or_default(),
        _ => ip.to_owned(),
    }
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "login throttle unreachable; refusing logins until it answers");
    kit::metrics::Metrics::global().event("login_throttle_unavailable");
    AuthError::ThrottleUnavailable.into()
}

impl Throttle {
    /// The throttle in the Redis at `url` (`ca` verifies a `rediss://` server).
    pub fn new(url: &SecretString, ca: &std::path::Path) -> Result<Self, String> {
        let client = kit::redis::client(url.expose_secret(), Some(ca))
            .map_err(|e| format!("service.redis_url cannot be used: {e}"))?;
        Ok(Self { client, conn: Default::default(), script: std::sync::Arc::new(redis::Script::new(RESERVE)) })
    }

    async fn conn(&self) -> Result<ConnectionManager, ApiError> {
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            self.conn.get_or_try_init(|| async {
                // The crate's defaults (500 ms per response) are too tight for a loaded host.
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_response_timeout(Some(Duration::from_secs(2)))
                    .set_connection_timeout(Some(Duration::from_secs(2)));
                ConnectionManager::new_with_config(self.client.clone(), cfg).await
            }),
        )
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
        Ok(conn.clone())
    }

    /// Reserves an attempt: `Ok(None)` to go ahead, `Ok(Some((lockout, wait)))` when a limit
    /// refuses it.
    pub async fn reserve(&self, attempt: &Attempt, limits: Limits) -> Result<Option<(Lockout, Duration)>, ApiError> {
        let mut conn = self.conn().await?;
        let mut invocation = self.script.key(&attempt.account_ip);
        let answer = invocation
            .key(&attempt.ip)
            .key(&attempt.account)
            .arg(limits.window.as_secs().max(1))
            .arg(limits.account_ip)
            .arg(limits.ip)
            .arg(limits.account)
            .invoke_async(&mut conn);
        let (retry, which): (i64, i64) =
            tokio::time::timeout(Duration::from_secs(3), answer).await.map_err(unavailable)?.map_err(unavailable)?;
        if retry <= 0 {
            return Ok(None);
        }
        let lockout = match which {
            3 => Lockout::Account,
            2 => Lockout::Address,
            _ => Lockout::AccountFromAddress,
        };
        kit::metrics::Metrics::global().event(if lockout == Lockout::Account {
            "account_under_attack"
        } else {
            "login_locked"
        });
        Ok(Some((lockout, Duration::from_secs(retry.unsigned_abs()))))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_host_counts_as_its_64_and_a_mapped_v4_as_v4() {
        assert_eq!(address("2001:db8:1:2:aaaa::1"), address("2001:db8:1:2:bbbb::7"));
        assert_ne!(address("2001:db8:1:2::1"), address("2001:db8:1:3::1"));
        assert_eq!(address("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(address("192.0.2.7"), "192.0.2.7");
        let key = [7u8; 32];
        let attempt = |email: &str, ip: &str| {
            let (account, address) = ids(&key, "", email, ip).expect("ids");
            Attempt::new(&account, &address)
        };
        let a = attempt("bob@example.com", "2001:db8::1");
        let b = attempt(" Bob@Example.com", "2001:db8::2");
        assert_eq!((&a.ip, &a.account_ip, &a.account), (&b.ip, &b.account_ip, &b.account));
        let c = attempt("bob@example.com", "2001:db8:0:1::1");
        assert_ne!((&a.ip, &a.account_ip), (&c.ip, &c.account_ip));
        assert_eq!(a.account, c.account);
    }

    #[test]
    fn keys_name_no_email_or_address_and_unknown_tenants_are_apart() {
        let (email, ip) = ("bob@example.com", "192.0.2.7");
        let (account, address) = unknown_tenant_ids("ghost", email, ip).expect("ids");
        assert_eq!((account.clone(), address.clone()), unknown_tenant_ids("ghost", email, ip).expect("ids"));
        let a = Attempt::new(&account, &address);
        for key in [&a.account_ip, &a.ip, &a.account] {
            assert!(key.starts_with("strongroom:login:"), "{key}");
            assert!(!key.contains(email) && !key.contains(ip), "{key}");
        }
        let (other_account, other_address) = unknown_tenant_ids("phantom", email, ip).expect("ids");
        assert!(account != other_account && address != other_address, "per tenant name");
        let (known_account, known_address) = ids(&[7u8; 32], "", email, ip).expect("ids");
        assert!(account != known_account && address != known_address, "per key");
    }
}
