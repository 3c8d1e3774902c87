//! Rate limits: GCRA buckets per client IP and per principal for each route class (`auth`,
//! `write`, `read`), shared by every gateway replica through one atomic Lua script in Redis. When
//! Redis is unreachable an in-process GCRA with the same parameters takes over (per replica), a
//! metric and a log line say so, and Redis is probed again until it answers.
//!
//! Never trusts `X-Forwarded-For` from a peer outside the configured proxy ranges (anyone could
//! then pick the IP they are limited as), and never keys a principal's bucket on an unverified
//! token (anyone could then drain another user's bucket).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method};
use kit::{ApiError, ErrorCode};
use serde::Deserialize;

use crate::AppState;
use crate::http_layer::{JsonError, RequestId};
use crate::upstream::Verification;

/// Routes that are never limited: probes are cheap and must keep answering under load.
pub const EXEMPT_ROUTES: [&str; 2] = ["/healthz", "/readyz"];

/// One GCRA limit: `requests` per `period_secs` on average, with bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub requests: u32,
    #[serde(default = "default_period")]
    pub period_secs: u32,
    /// Defaults to `requests`.
    #[serde(default)]
    pub burst: Option<u32>,
}

fn default_period() -> u32 {
    60
}

impl Limit {
    pub const fn per_minute(requests: u32, burst: u32) -> Self {
        Self { requests, period_secs: 60, burst: Some(burst) }
    }

    fn gcra(&self) -> Gcra {
        let interval_us = (u64::from(self.period_secs) * 1_000_000 / u64::from(self.requests.max(1))).max(1);
        Gcra { interval_us, burst: u64::from(self.burst.unwrap_or(self.requests).max(1)) }
    }

    fn validate(&self, key: &str) -> Result<(), String> {
        if self.requests == 0 || self.period_secs == 0 || self.burst == Some(0) {
            return Err(format!("rate_limits.{key}: requests, period_secs and burst must be positive"));
        }
        Ok(())
    }
}

/// The limits of one route class; a dimension left out is not limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassLimits {
    #[serde(default)]
    pub per_ip: Option<Limit>,
    #[serde(default)]
    pub per_principal: Option<Limit>,
}

/// `[rate_limits]` of the gateway configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Prefix of every Redis key, so that several deployments (or tests) can share one Redis.
    pub key_prefix: String,
    /// Peers (CIDR ranges) whose `X-Forwarded-For` is believed: the client is the right-most
    /// address not in these ranges.
    pub trusted_proxies: Vec<Cidr>,
    /// How long one Redis round trip may take before the in-process limiter decides.
    pub redis_timeout_ms: u64,
    /// While on the in-process limiter, how often Redis is probed again.
    pub redis_retry_ms: u64,
    /// Largest number of buckets the in-process limiter keeps.
    pub fallback_max_keys: usize,
    /// `/v1/auth/*` (login, MFA, refresh, logout): strict, against password guessing.
    pub auth: ClassLimits,
    /// Unsafe methods (POST, PUT, PATCH, DELETE) elsewhere.
    pub write: ClassLimits,
    /// Everything else.
    pub read: ClassLimits,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            key_prefix: "strongroom:rl:".into(),
            trusted_proxies: Vec::new(),
            redis_timeout_ms: 250,
            redis_retry_ms: 2_000,
            fallback_max_keys: 100_000,
            auth: ClassLimits {
                per_ip: Some(Limit::per_minute(30, 10)),
                per_principal: Some(Limit::per_minute(30, 10)),
            },
            write: ClassLimits {
                per_ip: Some(Limit::per_minute(600, 100)),
                per_principal: Some(Limit::per_minute(300, 60)),
            },
            read: ClassLimits {
                per_ip: Some(Limit::per_minute(3_000, 300)),
                per_principal: Some(Limit::per_minute(1_200, 200)),
            },
        }
    }
}

impl RateLimitConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (name, class) in [("auth", &self.auth), ("write", &self.write), ("read", &self.read)] {
            if let Some(l) = &class.per_ip {
                l.validate(&format!("{name}.per_ip"))?;
            }
            if let Some(l) = &class.per_principal {
                l.validate(&format!("{name}.per_principal"))?;
            }
        }
        if self.key_prefix.is_empty() || self.key_prefix.len() > 64 {
            return Err("rate_limits.key_prefix must have 1 to 64 characters".into());
        }
        if self.redis_timeout_ms == 0 || self.redis_retry_ms == 0 || self.fallback_max_keys == 0 {
            return Err("rate_limits.redis_timeout_ms, redis_retry_ms and fallback_max_keys must be positive".into());
        }
        Ok(())
    }
}

/// An IP range such as `10.0.0.0/8` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a CIDR range (e.g. 10.0.0.0/8)");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().map_err(|_| bad())?, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (s.parse::<IpAddr>().map_err(|_| bad())?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { addr, prefix })
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The client's address: the socket peer, or, when the peer is a trusted proxy, the right-most
/// `X-Forwarded-For` entry that is not itself a trusted proxy. A malformed entry stops the walk
/// (the hop that appended it is the last one believed).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip.to_canonical();
                if !is_trusted(client) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

/// The bucket name of a client address: IPv6 clients are limited per /64, the block one
/// subscriber usually gets (else a single host could rotate through 2^64 addresses).
fn ip_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let net = Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64));
            format!("{net}/64")
        }
    }
}

/// Which limits a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    Auth,
    Write,
    Read,
}

impl RouteClass {
    pub fn of(method: &Method, path: &str) -> Self {
        // The token endpoint is a sign-in; introspection and revocation are a client's ordinary calls.
        if path.starts_with("/v1/auth/")
            || (path.starts_with("/t/") && path.ends_with("/oauth/token"))
            || (path.starts_with("/t/") && path.ends_with("/oauth/authorize") && *method == Method::POST)
        {
            Self::Auth
        } else if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE) {
            Self::Read
        } else {
            Self::Write
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Write => "write",
            Self::Read => "read",
        }
    }
}

/// GCRA parameters: one request per `interval_us` on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gcra {
    interval_us: u64,
    burst: u64,
}

/// A bucket to charge: its key and its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bucket {
    key: String,
    gcra: Gcra,
}

/// What the limiter decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Limited { retry_after: Duration },
}

/// GCRA over several buckets at once: the request is allowed only if every bucket allows it, and
/// only then is every bucket charged. `tats` are the buckets' theoretical arrival times (µs); the
/// result is the new ones, or how long to wait. The Lua script below is this same function.
fn gcra(now_us: u64, tats: &[u64], limits: &[Gcra]) -> Result<Vec<u64>, u64> {
    let mut next = Vec::with_capacity(tats.len());
    let mut wait = 0u64;
    for (tat, g) in tats.iter().zip(limits) {
        let new_tat = (*tat).max(now_us).saturating_add(g.interval_us);
        let over = new_tat.saturating_sub(now_us).saturating_sub(g.interval_us.saturating_mul(g.burst));
        wait = wait.max(over);
        next.push(new_tat);
    }
    if wait > 0 { Err(wait) } else { Ok(next) }
}

/// KEYS: the buckets; ARGV: interval_us and burst of each. Uses the Redis server's clock, so
/// replicas with skewed clocks agree. Returns `{1, 0}` (allowed) or `{0, retry_after_ms}`.
const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local next_tats = {}
local wait = 0
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or '0') or 0
  if tat < now then tat = now end
  local new_tat = tat + interval
  local over = new_tat - now - interval * burst
  if over > wait then wait = over end
  next_tats[i] = new_tat
end
if wait > 0 then
  return {0, math.ceil(wait / 1000)}
end
for i, key in ipairs(KEYS) do
  local ttl = math.ceil((next_tats[i] - now) / 1000)
  if ttl < 1 then ttl = 1 end
  redis.call('SET', key, string.format('%.0f', next_tats[i]), 'PX', ttl)
end
return {1, 0}
";

/// The in-process fallback: the same GCRA over a bounded map.
#[derive(Debug)]
struct MemoryLimiter {
    epoch: Instant,
    tats: HashMap<String, u64>,
    max_keys: usize,
    next_sweep_us: u64,
}

impl MemoryLimiter {
    fn check(&mut self, buckets: &[Bucket]) -> Decision {
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        // Sweeping is O(n): at most once a second, or a flood of new clients would make every
        // request pay for it.
        if self.tats.len() + buckets.len() > self.max_keys && now >= self.next_sweep_us {
            self.tats.retain(|_, tat| *tat > now);
            self.next_sweep_us = now.saturating_add(1_000_000);
        }
        // Still full (a flood of distinct clients): new clients share one bucket per limit
        // rather than growing memory without bound.
        let keys: Vec<String> = buckets
            .iter()
            .map(|b| {
                if self.tats.contains_key(&b.key) || self.tats.len() < self.max_keys {
                    b.key.clone()
                } else {
                    format!("overflow:{}:{}", b.gcra.interval_us, b.gcra.burst)
                }
            })
            .collect();
        let tats: Vec<u64> = keys.iter().map(|k| self.tats.get(k).copied().unwrap_or(0)).collect();
        let limits: Vec<Gcra> = buckets.iter().map(|b| b.gcra).collect();
        match gcra(now, &tats, &limits) {
            Ok(next) => {
                for (key, tat) in keys.into_iter().zip(next) {
                    self.tats.insert(key, tat);
                }
                Decision::Allowed
            }
            Err(wait_us) => Decision::Limited { retry_after: Duration::from_micros(wait_us) },
        }
    }
}

/// The gateway's rate limiter; cheap to share.
pub struct RateLimiter {
    cfg: RateLimitConfig,
    redis: Arc<redis::Client>,
    conn: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    script: redis::Script,
    memory: Mutex<MemoryLimiter>,
    on_fallback: AtomicBool,
    /// While on the fallback: when Redis is next probed (one request probes, the others don't wait).
    next_probe: Mutex<Instant>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("enabled", &self.cfg.enabled)
            .field("on_fallback", &self.on_fallback.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
enum RedisFailure {
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("timed out")]
    Timeout,
    #[error("unexpected answer {0:?}")]
    Answer(Vec<i64>),
}

impl RateLimiter {
    /// The proxies whose `X-Forwarded-For` is believed.
    pub fn trusted_proxies(&self) -> &[Cidr] {
        &self.cfg.trusted_proxies
    }

    pub fn new(cfg: RateLimitConfig, redis: Arc<redis::Client>) -> Self {
        let memory = MemoryLimiter {
            epoch: Instant::now(),
            tats: HashMap::new(),
            max_keys: cfg.fallback_max_keys,
            next_sweep_us: 0,
        };
        Self {
            cfg,
            redis,
            conn: tokio::sync::Mutex::new(None),
            script: redis::Script::new(GCRA_LUA),
            memory: Mutex::new(memory),
            on_fallback: AtomicBool::new(false),
            next_probe: Mutex::new(Instant::now()),
        }
    }

    pub fn config(&self) -> &RateLimitConfig {
        &self.cfg
    }

    /// The buckets a request of `class` from `ip` (and `principal`, `tenant:subject`) is charged to.
    fn buckets(&self, class: RouteClass, ip: Option<IpAddr>, principal: Option<&str>) -> Vec<Bucket> {
        let limits = match class {
            RouteClass::Auth => &self.cfg.auth,
            RouteClass::Write => &self.cfg.write,
            RouteClass::Read => &self.cfg.read,
        };
        let prefix = &self.cfg.key_prefix;
        let mut out = Vec::with_capacity(2);
        if let (Some(l), Some(ip)) = (&limits.per_ip, ip) {
            out.push(Bucket { key: format!("{prefix}{}:ip:{}", class.name(), ip_key(ip)), gcra: l.gcra() });
        }
        if let (Some(l), Some(p)) = (&limits.per_principal, principal) {
            out.push(Bucket { key: format!("{prefix}{}:sub:{p}", class.name()), gcra: l.gcra() });
        }
        out
    }

    /// Charges one request of `class` from `ip` (by `principal`, `tenant:subject`, when verified).
    pub async fn check(&self, class: RouteClass, ip: IpAddr, principal: Option<&str>) -> Decision {
        self.decide(self.buckets(class, Some(ip), principal)).await
    }

    /// Charges one request of `class` to `principal` alone (its address was charged before its
    /// token was verified).
    pub async fn check_principal(&self, class: RouteClass, principal: &str) -> Decision {
        self.decide(self.buckets(class, None, Some(principal))).await
    }

    async fn decide(&self, buckets: Vec<Bucket>) -> Decision {
        if buckets.is_empty() {
            return Decision::Allowed;
        }
        if self.should_try_redis() {
            match self.check_redis(&buckets).await {
                Ok(decision) => {
                    if self.on_fallback.swap(false, Ordering::Relaxed) {
                        tracing::info!("rate limits back on redis");
                    }
                    return decision;
                }
                Err(e) => {
                    *self.conn.lock().await = None;
                    self.schedule_probe();
                    if !self.on_fallback.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "redis unreachable: rate limits fall back to the in-process limiter");
                    } else {
                        tracing::debug!(error = %e, "redis still unreachable");
                    }
                }
            }
        }
        kit::metrics::Metrics::global().event("rate_limit_fallback");
        self.memory.lock().unwrap_or_else(|p| p.into_inner()).check(&buckets)
    }

    fn should_try_redis(&self) -> bool {
        if !self.on_fallback.load(Ordering::Relaxed) {
            return true;
        }
        let mut next = self.next_probe.lock().unwrap_or_else(|p| p.into_inner());
        if Instant::now() < *next {
            return false;
        }
        *next = Instant::now() + Duration::from_millis(self.cfg.redis_retry_ms);
        true
    }

    fn schedule_probe(&self) {
        *self.next_probe.lock().unwrap_or_else(|p| p.into_inner()) =
            Instant::now() + Duration::from_millis(self.cfg.redis_retry_ms);
    }

    async fn check_redis(&self, buckets: &[Bucket]) -> Result<Decision, RedisFailure> {
        let timeout = Duration::from_millis(self.cfg.redis_timeout_ms);
        let call = async {
            let mut conn = self.connection().await?;
            let mut invocation = self.script.prepare_invoke();
            for b in buckets {
                invocation.key(&b.key).arg(b.gcra.interval_us).arg(b.gcra.burst);
            }
            let answer: Vec<i64> = invocation.invoke_async(&mut conn).await?;
            Ok::<_, RedisFailure>(answer)
        };
        let answer = tokio::time::timeout(timeout, call).await.map_err(|_| RedisFailure::Timeout)??;
        match answer.as_slice() {
            [1, _] => Ok(Decision::Allowed),
            [0, ms] if *ms >= 0 => Ok(Decision::Limited { retry_after: Duration::from_millis(*ms as u64) }),
            _ => Err(RedisFailure::Answer(answer)),
        }
    }

    async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, redis::RedisError> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let conn = self.redis.get_multiplexed_async_connection().await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }
}

/// The answer to a limited request: 429, `Retry-After` in whole seconds (at least 1).
fn limited(retry_after: Duration, request_id: String) -> Response {
    let secs = retry_after.as_millis().div_ceil(1000).max(1);
    let err = ApiError::new(ErrorCode::ResourceExhausted, "RATE_LIMITED", "too many requests, retry later");
    let mut resp = JsonError(err, request_id).into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(http::header::RETRY_AFTER, v);
    }
    resp
}

/// Routes a request with a body may reach without an access token.
const NO_TOKEN_ROUTES: [&str; 11] = [
    "/v1/auth/login",
    "/v1/auth/mfa",
    "/v1/auth/passkey/options",
    "/v1/auth/passkey",
    "/v1/auth/mfa/passkey/options",
    "/v1/auth/mfa/passkey",
    "/v1/auth/refresh",
    "/v1/auth/logout",
    "/v1/auth/appeal",
    "/v1/auth/appeal/status",
    "/v1/auth/appeal/answer",
];

/// Whether `path` is a route a client reaches without an access token: the sign-in routes, and a
/// tenant's OAuth token, revocation and introspection endpoints (`/t/<slug>/oauth/token|revoke|
/// introspect`, where a client authenticates itself, possibly with `Authorization: Basic`).
fn no_token_route(path: &str) -> bool {
    NO_TOKEN_ROUTES.contains(&path)
        || path.strip_prefix("/t/").and_then(|rest| rest.split_once('/')).is_some_and(|(slug, rest)| {
            !slug.is_empty() && matches!(rest, "oauth/token" | "oauth/revoke" | "oauth/introspect" | "oauth/authorize")
        })
}

/// Middleware: charges the request to its buckets (429 when one is empty), and refuses a request
/// that carries a body without a valid credential before the body is read. In that order: the
/// address's bucket before any token is verified (a flood of tokens, or of well-formed `srk_` keys,
/// costs one Redis call each and no introspection), the principal's once its token is.
pub async fn limit(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let limiter = &state.limits;
    if EXEMPT_ROUTES.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let class = RouteClass::of(req.method(), req.uri().path());
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let ip = client_ip(peer, req.headers(), &limiter.cfg.trusted_proxies);
    if limiter.cfg.enabled
        && let Decision::Limited { retry_after } = limiter.check(class, ip, None).await
    {
        return refuse(class, ip, retry_after, &req);
    }
    // Only a verified token names a principal; an invalid one is limited by IP alone (and
    // refused by the handler). The recorder learns who it named (or why none).
    let verification = match crate::browser::request_token(req.headers()) {
        Some(token) => {
            let result = state.verifier.verify(token).await;
            crate::recorder::Actor::note(req.extensions(), &result);
            Some(Verification { token: token.to_owned(), result })
        }
        None => None,
    };
    // A body is read only for a caller who proved who they are (or on the routes that prove it):
    // 16 MiB from anyone, buffered before the handler authenticated, was a cheap amplifier.
    if carries_body(&req) && !no_token_route(req.uri().path()) {
        let refusal =
            match (verification.as_ref().map(|v| &v.result), req.headers().contains_key(http::header::AUTHORIZATION)) {
                (Some(Ok(_)), _) => None,
                (Some(Err(e)), _) => Some(e.clone()),
                (None, true) => {
                    Some(ApiError::unauthenticated("MALFORMED_AUTHORIZATION", "authorization must be a bearer token"))
                }
                (None, false) => Some(ApiError::unauthenticated("TOKEN_REQUIRED", "an access token is required")),
            };
        if let Some(e) = refusal {
            return JsonError(e, RequestId::of(req.extensions())).into_response();
        }
    }
    if let (true, Some(Verification { result: Ok(p), .. })) = (limiter.cfg.enabled, &verification) {
        let principal = format!("{}:{}", p.tenant_id.0, p.subject);
        if let Decision::Limited { retry_after } = limiter.check_principal(class, &principal).await {
            return refuse(class, ip, retry_after, &req);
        }
    }
    // The handler's `upstream::Call` takes this verification instead of verifying the token again.
    if let Some(verification) = verification {
        req.extensions_mut().insert(verification);
    }
    next.run(req).await
}

/// Whether a request may carry a body: its body has not ended before it began (HTTP/2 needs
/// neither `Content-Length` nor `Transfer-Encoding` to send one).
fn carries_body(req: &Request) -> bool {
    !axum::body::HttpBody::is_end_stream(req.body())
}

fn refuse(class: RouteClass, ip: IpAddr, retry_after: Duration, req: &Request) -> Response {
    let metrics = kit::metrics::Metrics::global();
    metrics.event("rate_limited");
    metrics.rate_limited(class.name());
    // Debug: under a flood, one line per refused request would be the next flood.
    tracing::debug!(class = class.name(), client = %ip, "rate limited");
    limited(retry_after, RequestId::of(req.extensions()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_counted_under_its_route_class() {
        let refused = |class: RouteClass| {
            kit::metrics::Metrics::global()
                .gateway_rate_limited
                .get_or_create(&kit::metrics::RouteClassLabels { class: class.name().to_owned() })
                .get()
        };
        let before = refused(RouteClass::Auth);
        let req = http::Request::builder().uri("/v1/auth/login").body(axum::body::Body::empty()).expect("request");
        let resp = refuse(RouteClass::Auth, IP, Duration::from_secs(1), &req);
        assert_eq!(resp.status(), http::StatusCode::TOO_MANY_REQUESTS);
        assert!(refused(RouteClass::Auth) > before);
        assert_eq!(
            [RouteClass::Auth, RouteClass::Write, RouteClass::Read].map(RouteClass::name),
            ["auth", "write", "read"]
        );
    }

    #[test]
    fn a_body_is_seen_whatever_announces_it() {
        let with =
            |body: axum::body::Body| http::Request::builder().method("POST").uri("/v1/x").body(body).expect("request");
        // HTTP/2 sends a body with neither Content-Length nor Transfer-Encoding.
        assert!(carries_body(&with(axum::body::Body::from("{}"))));
        assert!(!carries_body(&with(axum::body::Body::empty())));
    }

    fn g(requests: u32, period_secs: u32, burst: u32) -> Gcra {
        Limit { requests, period_secs, burst: Some(burst) }.gcra()
    }

    #[test]
    fn gcra_allows_a_burst_then_the_rate() {
        let limit = g(60, 60, 3); // one a second, bursts of 3
        let mut tat = 0;
        let now = 10_000_000;
        for _ in 0..3 {
            tat = gcra(now, &[tat], &[limit]).expect("within burst")[0];
        }
        let wait = gcra(now, &[tat], &[limit]).expect_err("burst used up");
        assert_eq!(wait, 1_000_000);
        assert!(gcra(now + 999_999, &[tat], &[limit]).is_err());
        assert!(gcra(now + 1_000_000, &[tat], &[limit]).is_ok());
        // After a long pause the full burst is back, not more.
        let later = now + 3_600_000_000;
        let mut t = tat;
        for _ in 0..3 {
            t = gcra(later, &[t], &[limit]).expect("burst again")[0];
        }
        assert!(gcra(later, &[t], &[limit]).is_err());
    }

    #[test]
    fn gcra_charges_no_bucket_when_one_refuses() {
        let (loose, strict) = (g(600, 60, 100), g(60, 60, 1));
        let now = 5_000_000;
        let tats = gcra(now, &[0, 0], &[loose, strict]).expect("first");
        let wait = gcra(now, &tats, &[loose, strict]).expect_err("strict refuses");
        assert_eq!(wait, 1_000_000);
    }

    #[test]
    fn memory_limiter_limits_and_stays_bounded() {
        let mut m = MemoryLimiter { epoch: Instant::now(), tats: HashMap::new(), max_keys: 4, next_sweep_us: 0 };
        let b = |k: &str| Bucket { key: k.into(), gcra: g(1, 3600, 2) };
        assert_eq!(m.check(&[b("a")]), Decision::Allowed);
        assert_eq!(m.check(&[b("a")]), Decision::Allowed);
        assert!(matches!(m.check(&[b("a")]), Decision::Limited { .. }));
        for i in 0..100 {
            let _ = m.check(&[b(&format!("k{i}"))]);
        }
        assert!(m.tats.len() <= 5, "{}", m.tats.len());
    }

    #[test]
    fn cidr_ranges() {
        let c: Cidr = "10.0.0.0/8".parse().expect("cidr");
        assert!(c.contains("10.1.2.3".parse().expect("ip")));
        assert!(c.contains("::ffff:10.1.2.3".parse().expect("mapped")));
        assert!(!c.contains("11.0.0.1".parse().expect("ip")));
        let all: Cidr = "0.0.0.0/0".parse().expect("all");
        assert!(all.contains("1.2.3.4".parse().expect("ip")));
        let host: Cidr = "192.168.1.1".parse().expect("host");
        assert!(
            host.contains("192.168.1.1".parse().expect("ip")) && !host.contains("192.168.1.2".parse().expect("ip"))
        );
        let v6: Cidr = "fd00::/8".parse().expect("v6");
        assert!(v6.contains("fd12::1".parse().expect("ip")) && !v6.contains("fe80::1".parse().expect("ip")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense/8".parse::<Cidr>().is_err());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().expect("cidr")];
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6, 203.0.113.7, 10.0.0.2"));
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        // From an untrusted peer the header is ignored.
        assert_eq!(client_ip(ip("198.51.100.1"), &h, &trusted), ip("198.51.100.1"));
        // From a proxy: the right-most untrusted hop, not the spoofable left-most one.
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("203.0.113.7"));
        assert_eq!(client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted), ip("10.0.0.1"));
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7, garbage, 10.0.0.3"));
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.3"));
        assert_eq!(client_ip(ip("6.6.6.6"), &h, &[]), ip("6.6.6.6"));
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        assert_eq!(ip_key("2001:db8:1:2:aaaa::1".parse().expect("ip")), "2001:db8:1:2::/64");
        assert_eq!(ip_key("192.0.2.1".parse().expect("ip")), "192.0.2.1");
    }

    #[test]
    fn route_classes() {
        assert_eq!(RouteClass::of(&Method::POST, "/v1/auth/login"), RouteClass::Auth);
        assert_eq!(RouteClass::of(&Method::PUT, "/v1/secrets/a"), RouteClass::Write);
        assert_eq!(RouteClass::of(&Method::GET, "/v1/secrets/a"), RouteClass::Read);
        assert_eq!(RouteClass::of(&Method::POST, "/t/acme/oauth/token"), RouteClass::Auth);
        assert_eq!(RouteClass::of(&Method::POST, "/t/acme/oauth/authorize"), RouteClass::Auth, "a sign-in form");
        assert_eq!(RouteClass::of(&Method::GET, "/t/acme/oauth/authorize"), RouteClass::Read);
        assert_eq!(RouteClass::of(&Method::POST, "/t/acme/oauth/introspect"), RouteClass::Write);
    }

    #[test]
    fn only_sign_in_routes_and_token_endpoints_take_a_body_without_a_token() {
        for path in [
            "/v1/auth/login",
            "/t/acme/oauth/token",
            "/t/acme/oauth/revoke",
            "/t/acme/oauth/introspect",
            "/t/acme/oauth/authorize",
        ] {
            assert!(no_token_route(path), "{path}");
        }
        for path in
            ["/v1/users", "/t//oauth/token", "/t/acme/oauth/token/x", "/t/acme/oauth/clients", "/x/acme/oauth/token"]
        {
            assert!(!no_token_route(path), "{path}");
        }
    }

    #[test]
    fn defaults_validate() {
        RateLimitConfig::default().validate().expect("defaults");
        let mut bad = RateLimitConfig::default();
        bad.read.per_ip = Some(Limit { requests: 0, period_secs: 60, burst: None });
        assert!(bad.validate().is_err());
    }

    fn small(prefix: &str, requests: u32, burst: u32) -> RateLimitConfig {
        let l = Some(Limit { requests, period_secs: 3600, burst: Some(burst) });
        RateLimitConfig {
            key_prefix: prefix.into(),
            redis_retry_ms: 100,
            write: ClassLimits { per_ip: l, per_principal: l },
            ..Default::default()
        }
    }

    fn limiter(cfg: RateLimitConfig, url: &str) -> RateLimiter {
        RateLimiter::new(cfg, Arc::new(redis::Client::open(url).expect("redis url")))
    }

    fn fallback_count() -> u64 {
        let text = kit::metrics::Metrics::global().encode();
        text.lines()
            .find(|l| l.starts_with("strongroom_events_total{event=\"rate_limit_fallback\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    }

    fn prefix() -> String {
        format!("strongroom:test:{}:", uuid::Uuid::new_v4().simple())
    }

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));

    #[tokio::test]
    async fn replicas_share_buckets_in_redis_with_expiring_keys() {
        let url = kit::testing::redis_url();
        let p = prefix();
        let (a, b) = (limiter(small(&p, 4, 3), &url), limiter(small(&p, 4, 3), &url));
        assert_eq!(a.check(RouteClass::Write, IP, Some("t:alice")).await, Decision::Allowed);
        assert_eq!(b.check(RouteClass::Write, IP, Some("t:alice")).await, Decision::Allowed);
        assert_eq!(a.check(RouteClass::Write, IP, Some("t:alice")).await, Decision::Allowed);
        let Decision::Limited { retry_after } = b.check(RouteClass::Write, IP, Some("t:alice")).await else {
            panic!("the fourth request within the burst of three is refused");
        };
        // One request per 900 s: the next one is allowed 900 s after the first.
        assert!(retry_after > Duration::from_secs(890) && retry_after <= Duration::from_secs(900), "{retry_after:?}");
        assert!(!a.on_fallback.load(Ordering::Relaxed) && !b.on_fallback.load(Ordering::Relaxed));
        // Another principal from another IP is not affected; reads are another class.
        let other = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11));
        assert_eq!(a.check(RouteClass::Write, other, Some("t:bob")).await, Decision::Allowed);
        assert_eq!(a.check(RouteClass::Read, IP, Some("t:alice")).await, Decision::Allowed);
        // Same principal from another IP: its own bucket is empty.
        assert!(matches!(a.check(RouteClass::Write, other, Some("t:alice")).await, Decision::Limited { .. }));

        let client = redis::Client::open(url.as_str()).expect("client");
        let mut conn = client.get_multiplexed_async_connection().await.expect("redis");
        let key = format!("{p}write:sub:t:alice");
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.expect("pttl");
        assert!(ttl > 0 && ttl <= 3 * 900 * 1000, "{ttl}");
    }

    #[tokio::test]
    async fn an_unreachable_redis_falls_back_to_the_in_process_limiter() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("redis://{}", closed.local_addr().expect("addr"));
        drop(closed);
        let l = limiter(small(&prefix(), 4, 2), &url);
        let before = fallback_count();
        assert_eq!(l.check(RouteClass::Write, IP, None).await, Decision::Allowed);
        assert_eq!(l.check(RouteClass::Write, IP, None).await, Decision::Allowed);
        assert!(matches!(l.check(RouteClass::Write, IP, None).await, Decision::Limited { .. }));
        assert!(l.on_fallback.load(Ordering::Relaxed));
        assert!(fallback_count() >= before + 3);
    }

    /// A Redis of the test's own, which it can stop and start again on the same port.
    fn redis_server(port: u16) -> std::process::Child {
        std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (install redis)")
    }

    async fn wait_for(url: &str) {
        let client = redis::Client::open(url).expect("client");
        for _ in 0..100 {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING").query_async::<String>(&mut c).await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis at {url} did not start");
    }

    #[tokio::test]
    async fn the_limiter_returns_to_redis_when_it_is_back() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let url = format!("redis://127.0.0.1:{port}");
        let mut server = redis_server(port);
        wait_for(&url).await;
        let l = limiter(small(&prefix(), 1000, 1000), &url);
        assert_eq!(l.check(RouteClass::Write, IP, None).await, Decision::Allowed);
        assert!(!l.on_fallback.load(Ordering::Relaxed));

        server.kill().expect("kill");
        server.wait().expect("wait");
        assert_eq!(l.check(RouteClass::Write, IP, None).await, Decision::Allowed);
        assert!(l.on_fallback.load(Ordering::Relaxed), "redis is gone");

        let mut server = redis_server(port);
        wait_for(&url).await;
        tokio::time::sleep(Duration::from_millis(150)).await; // past redis_retry_ms
        assert_eq!(l.check(RouteClass::Write, IP, None).await, Decision::Allowed);
        assert!(!l.on_fallback.load(Ordering::Relaxed), "back on redis");
        server.kill().expect("kill");
        let _ = server.wait();
    }
}
