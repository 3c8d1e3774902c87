//! Browser sessions: `__Host-` cookies holding the access and refresh tokens, and the defence of
//! requests that authenticate by cookie against cross-site request forgery: a signed double-submit
//! token bound to the session id (`X-CSRF-Token` must equal the `__Host-strongroom_csrf` cookie and
//! carry a valid HMAC) plus a `Sec-Fetch-Site` / `Origin` check.
//!
//! Never sets a session cookie without `Secure; HttpOnly; SameSite=Strict`, and never lets an
//! unsafe request that authenticates by cookie reach a handler without both checks. Bearer-token
//! requests are not affected: a cross-site page cannot make a browser send an `Authorization` header.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue, Method, header};
use kit::ApiError;
use kit::config::Environment;
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::http_layer::{JsonError, RequestId};

/// Holds the access token (HttpOnly: page scripts never see it).
pub const SESSION_COOKIE: &str = "__Host-strongroom_session";
/// Holds the refresh token (HttpOnly).
pub const REFRESH_COOKIE: &str = "__Host-strongroom_refresh";
/// Holds the CSRF token; readable by the page's scripts, which echo it in [`CSRF_HEADER`].
pub const CSRF_COOKIE: &str = "__Host-strongroom_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Routes used before a session exists: no CSRF token to check, but a browser's request must come
/// from an allowed origin (login CSRF would log the victim into the attacker's account).
pub const PRE_SESSION_ROUTES: [&str; 6] = [
    "/v1/auth/login",
    "/v1/auth/mfa",
    "/v1/auth/passkey/options",
    "/v1/auth/passkey",
    "/v1/auth/mfa/passkey/options",
    "/v1/auth/mfa/passkey",
];

const NONCE_LEN: usize = 16;
const MIN_KEY_LEN: usize = 32;
/// Domain separation of the CSRF MAC from any other use of the key.
const CSRF_MAC_CONTEXT: &[u8] = b"strongroom.csrf.v1\0";

/// `[browser]` of the gateway configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrowserConfig {
    /// HMAC-SHA256 key of the CSRF tokens, standard base64 of at least 32 bytes; the same on every
    /// replica. Required in production; in development a random per-process key is used if absent.
    #[serde(default)]
    pub csrf_key: Option<SecretString>,
    /// Origins (e.g. `https://app.example.com`) accepted from browsers that send no
    /// `Sec-Fetch-Site` header.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

impl BrowserConfig {
    pub fn validate(&self, env: Environment) -> Result<(), String> {
        match &self.csrf_key {
            Some(key) => {
                decode_key(key)?;
            }
            None if env == Environment::Production => {
                return Err("browser.csrf_key is required in production (base64 of 32+ random bytes)".into());
            }
            None => {}
        }
        for origin in &self.allowed_origins {
            normalize_origin(origin)?;
        }
        Ok(())
    }
}

/// A new CSRF key in the form `browser.csrf_key` takes (standard base64 of 32 random bytes).
pub fn generate_csrf_key() -> Result<String, getrandom::Error> {
    let mut key = zeroize::Zeroizing::new([0u8; MIN_KEY_LEN]);
    getrandom::fill(key.as_mut())?;
    Ok(STANDARD.encode(key.as_ref()))
}

fn decode_key(key: &SecretString) -> Result<SecretSlice<u8>, String> {
    let bytes = STANDARD
        .decode(key.expose_secret().trim())
        .map_err(|_| "browser.csrf_key must be standard base64".to_owned())?;
    if bytes.len() < MIN_KEY_LEN {
        return Err(format!("browser.csrf_key must decode to at least {MIN_KEY_LEN} bytes"));
    }
    Ok(SecretSlice::from(bytes))
}

/// `scheme://host[:port]` as browsers serialize it in `Origin`.
fn normalize_origin(origin: &str) -> Result<String, String> {
    let bad = || format!("browser.allowed_origins: {origin:?} is not an https origin (https://host[:port])");
    let url = url::Url::parse(origin).map_err(|_| bad())?;
    if url.scheme() != "https" || !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(bad());
    }
    let origin = url.origin();
    origin.is_tuple().then(|| origin.ascii_serialization()).ok_or_else(bad)
}

fn csrf_invalid() -> ApiError {
    ApiError::permission_denied(
        "CSRF_TOKEN_INVALID",
        "missing or invalid CSRF token: send the value of the __Host-strongroom_csrf cookie as X-CSRF-Token",
    )
}

fn cross_site() -> ApiError {
    ApiError::permission_denied("CROSS_SITE_REQUEST", "cross-site request refused")
}

/// The browser-session settings in force; cheap to share.
pub struct Browser {
    key: SecretSlice<u8>,
    allowed_origins: Vec<String>,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").field("allowed_origins", &self.allowed_origins).finish_non_exhaustive()
    }
}

impl Browser {
    pub fn new(cfg: &BrowserConfig, env: Environment) -> Result<Self, String> {
        cfg.validate(env)?;
        let key = match &cfg.csrf_key {
            Some(key) => decode_key(key)?,
            None => {
                tracing::warn!(
                    "browser.csrf_key not set: using a random per-process key (development only; replicas will refuse each other's CSRF tokens)"
                );
                let mut bytes = vec![0u8; MIN_KEY_LEN];
                getrandom::fill(&mut bytes).map_err(|e| format!("random csrf key: {e}"))?;
                SecretSlice::from(bytes)
            }
        };
        let allowed_origins = cfg.allowed_origins.iter().map(|o| normalize_origin(o)).collect::<Result<_, _>>()?;
        Ok(Self { key, allowed_origins })
    }

    fn mac(&self, session_id: &str, nonce: &[u8]) -> Option<Hmac<Sha256>> {
        // HMAC takes keys of any length: this never fails.
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key.expose_secret()).ok()?;
        mac.update(CSRF_MAC_CONTEXT);
        mac.update(session_id.as_bytes());
        mac.update(nonce);
        Some(mac)
    }

    /// A fresh CSRF token for `session_id`:
    /// `b64url(session_id) "." b64url(nonce) "." b64url(HMAC-SHA256(key, ctx ‖ session_id ‖ nonce))`.
    pub fn csrf_token(&self, session_id: &str) -> Result<String, ApiError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| ApiError::internal(&e))?;
        let mac = self.mac(session_id, &nonce).ok_or_else(|| ApiError::internal(&"hmac key"))?;
        let tag = mac.finalize().into_bytes();
        Ok(format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(session_id),
            URL_SAFE_NO_PAD.encode(nonce),
            URL_SAFE_NO_PAD.encode(tag)
        ))
    }

    /// The session id a CSRF token was issued for, if its MAC is valid (checked in constant time).
    pub fn verify_csrf_token(&self, token: &str) -> Option<String> {
        let mut parts = token.split('.');
        let (sid, nonce, tag) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let sid = String::from_utf8(URL_SAFE_NO_PAD.decode(sid).ok()?).ok()?;
        let nonce = URL_SAFE_NO_PAD.decode(nonce).ok().filter(|n| n.len() == NONCE_LEN)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(&sid, &nonce)?.verify_slice(&tag).ok()?;
        Some(sid)
    }

    /// Sets the session, refresh and CSRF cookies of a browser login (or refresh) on a response,
    /// and returns the CSRF token, which the handler also puts in its JSON body as `csrf_token`.
    pub fn set_session_cookies(
        &self,
        headers: &mut HeaderMap,
        access_token: &str,
        refresh_token: &str,
        session_id: &str,
        access_ttl_secs: u64,
        refresh_ttl_secs: u64,
    ) -> Result<String, ApiError> {
        let csrf = self.csrf_token(session_id)?;
        // The CSRF cookie lives as long as the refresh cookie: a refresh request carries it.
        let cookies = [
            set_cookie(SESSION_COOKIE, access_token, access_ttl_secs, true)?,
            set_cookie(REFRESH_COOKIE, refresh_token, refresh_ttl_secs, true)?,
            set_cookie(CSRF_COOKIE, &csrf, refresh_ttl_secs, false)?,
        ];
        for c in cookies {
            headers.append(header::SET_COOKIE, c);
        }
        Ok(csrf)
    }

    /// For a request from a browser (one that sends `Sec-Fetch-Site` or `Origin`): refuses it
    /// unless it comes from the gateway's own origin or an allowed one. Requests without either
    /// header (API clients) pass. Login and MFA call this.
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if headers.get("sec-fetch-site").is_none() && headers.get(header::ORIGIN).is_none() {
            return Ok(());
        }
        self.require_same_origin(headers)
    }

    /// `Sec-Fetch-Site` must be `same-origin` or `none` (set by the browser, pages cannot forge
    /// it); without it, `Origin` must be one of the allowed origins; without both, refused.
    fn require_same_origin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if let Some(site) = headers.get("sec-fetch-site") {
            return match site.as_bytes() {
                b"same-origin" | b"none" => Ok(()),
                _ => Err(cross_site()),
            };
        }
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()).ok_or_else(cross_site)?;
        if self.allowed_origins.iter().any(|o| o == origin) { Ok(()) } else { Err(cross_site()) }
    }

    /// The double-submit check: the header equals the cookie, the MAC is valid, and the token is
    /// bound to the session of the session cookie (when that is present).
    fn require_csrf_token(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let mut sent = headers.get_all(CSRF_HEADER).iter();
        let header_token = sent.next().and_then(|v| v.to_str().ok()).ok_or_else(csrf_invalid)?;
        if sent.next().is_some() {
            return Err(csrf_invalid());
        }
        let cookie_token = cookie(headers, CSRF_COOKIE).ok_or_else(csrf_invalid)?;
        if !bool::from(header_token.as_bytes().ct_eq(cookie_token.as_bytes())) {
            return Err(csrf_invalid());
        }
        let token_sid = self.verify_csrf_token(header_token).ok_or_else(csrf_invalid)?;
        if has_cookie(headers, SESSION_COOKIE) {
            // The signature of the session token is verified by the handler; here only the binding.
            let session = cookie(headers, SESSION_COOKIE).and_then(unverified_session_id).ok_or_else(csrf_invalid)?;
            if session != token_sid {
                return Err(csrf_invalid());
            }
        }
        Ok(())
    }
}

/// Deletes the three cookies (logout).
pub fn clear_session_cookies(headers: &mut HeaderMap) {
    for (name, http_only) in [(SESSION_COOKIE, true), (REFRESH_COOKIE, true), (CSRF_COOKIE, false)] {
        let mut value = format!("{name}=; Max-Age=0; Path=/; Secure; SameSite=Strict");
        if http_only {
            value.push_str("; HttpOnly");
        }
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.append(header::SET_COOKIE, v);
        }
    }
}

/// `__Host-` cookies: Secure, Path=/, no Domain, so no other host (not even a subdomain) can set
/// or overwrite them.
fn set_cookie(name: &str, value: &str, max_age_secs: u64, http_only: bool) -> Result<HeaderValue, ApiError> {
    // cookie-octet of RFC 6265: no control characters, whitespace, DQUOTE, comma, semicolon, backslash.
    let valid = !value.is_empty()
        && value.bytes().all(|b| matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E));
    if !valid {
        return Err(ApiError::internal(&format!("{name}: value is not a valid cookie value")));
    }
    let mut cookie = format!("{name}={value}; Max-Age={max_age_secs}; Path=/; Secure; SameSite=Strict");
    if http_only {
        cookie.push_str("; HttpOnly");
    }
    HeaderValue::from_str(&cookie).map_err(|e| ApiError::internal(&e))
}

fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).filter_map(
        move |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim())
        },
    )
}

fn has_cookie(headers: &HeaderMap, name: &str) -> bool {
    cookie_values(headers, name).next().is_some()
}

/// The value of cookie `name`; `None` when absent, empty, or sent twice with different values
/// (then neither is believed).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &'a str) -> Option<&'a str> {
    let mut values = cookie_values(headers, name);
    let first = values.next().filter(|v| !v.is_empty())?;
    if values.any(|v| v != first) {
        return None;
    }
    Some(first)
}

/// The access token in the session cookie.
pub fn session_token(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, SESSION_COOKIE)
}

/// The refresh token in the refresh cookie (for `POST /v1/auth/refresh` and logout).
pub fn refresh_token(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, REFRESH_COOKIE)
}

/// The access token a request presents: the `Authorization: Bearer` token if that header is
/// present (even if malformed: `None` then, never a fallback to the cookie), else the session cookie.
pub fn request_token(headers: &HeaderMap) -> Option<&str> {
    match headers.get(header::AUTHORIZATION) {
        Some(value) => value.to_str().ok().and_then(kit::principal::bearer),
        None => session_token(headers),
    }
}

/// The `sid` claim of a JWT, read WITHOUT verifying it (only to bind the CSRF token; the handler
/// verifies the token).
fn unverified_session_id(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Sid {
        sid: Option<String>,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Sid>(&bytes).ok()?.sid.filter(|s| !s.is_empty())
}

fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

/// Middleware: the CSRF defence of cookie-authenticated unsafe requests, and the origin check of
/// pre-session routes.
pub async fn csrf(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let by_cookie = headers.get(header::AUTHORIZATION).is_none()
        && (has_cookie(headers, SESSION_COOKIE) || has_cookie(headers, REFRESH_COOKIE));
    // The hosted login page's forms (posts): before any session, like the sign-in routes (their
    // own form token is checked by the page). Its GET is where other sites send their users.
    let path = req.uri().path();
    let hosted_form = is_unsafe(req.method()) && path.starts_with("/t/") && path.ends_with("/oauth/authorize");
    let verdict = if PRE_SESSION_ROUTES.contains(&path) || hosted_form {
        state.browser.check_origin(headers)
    } else if by_cookie && is_unsafe(req.method()) {
        state.browser.require_same_origin(headers).and_then(|()| state.browser.require_csrf_token(headers))
    } else {
        Ok(())
    };
    match verdict {
        Ok(()) => next.run(req).await,
        Err(e) => {
            kit::metrics::Metrics::global().event("csrf_refused");
            tracing::info!(reason = %e.reason, "cookie request refused");
            let id = RequestId::of(req.extensions());
            JsonError(e, id).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn browser() -> Browser {
        let cfg = BrowserConfig {
            csrf_key: Some(STANDARD.encode([7u8; 32]).into()),
            allowed_origins: vec!["https://app.example.com/".into()],
        };
        Browser::new(&cfg, Environment::Production).expect("browser")
    }

    fn jwt_with_sid(sid: &str) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::json!({ "sub": "alice", "sid": sid }).to_string());
        format!("eyJhbGciOiJFZERTQSJ9.{payload}.c2ln")
    }

    fn cookie_request(session_sid: &str, csrf_cookie: &str, csrf_header: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        let cookies = format!("{SESSION_COOKIE}={}; {CSRF_COOKIE}={csrf_cookie}", jwt_with_sid(session_sid));
        h.insert(header::COOKIE, HeaderValue::from_str(&cookies).expect("cookie"));
        if let Some(t) = csrf_header {
            h.insert(CSRF_HEADER, HeaderValue::from_str(t).expect("header"));
        }
        h
    }

    #[test]
    fn keys_are_validated() {
        let short = BrowserConfig { csrf_key: Some(STANDARD.encode([1u8; 16]).into()), allowed_origins: vec![] };
        assert!(short.validate(Environment::Development).is_err());
        assert!(BrowserConfig::default().validate(Environment::Production).is_err());
        assert!(BrowserConfig::default().validate(Environment::Development).is_ok());
        let origins = BrowserConfig { csrf_key: None, allowed_origins: vec!["http://app.example.com".into()] };
        assert!(origins.validate(Environment::Development).is_err(), "plain http origin");
        let origins = BrowserConfig { csrf_key: None, allowed_origins: vec!["https://a.example/path".into()] };
        assert!(origins.validate(Environment::Development).is_err(), "origin with a path");
    }

    #[test]
    fn tokens_are_bound_to_the_session_and_the_key() {
        let b = browser();
        let t = b.csrf_token("s1").expect("token");
        assert_eq!(b.verify_csrf_token(&t).as_deref(), Some("s1"));
        assert_ne!(t, b.csrf_token("s1").expect("token"), "a fresh nonce each time");
        let other = Browser::new(
            &BrowserConfig { csrf_key: Some(STANDARD.encode([8u8; 32]).into()), allowed_origins: vec![] },
            Environment::Production,
        )
        .expect("other");
        assert_eq!(other.verify_csrf_token(&t), None, "another key");
        // Re-binding the token to another session id breaks the MAC.
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        parts[0] = URL_SAFE_NO_PAD.encode("s2");
        assert_eq!(b.verify_csrf_token(&parts.join(".")), None);
        assert_eq!(b.verify_csrf_token("garbage"), None);
        assert_eq!(b.verify_csrf_token(""), None);
    }

    #[test]
    fn the_double_submit_check() {
        let b = browser();
        let good = b.csrf_token("s1").expect("token");
        assert!(b.require_csrf_token(&cookie_request("s1", &good, Some(&good))).is_ok());
        let reason = |h: HeaderMap| b.require_csrf_token(&h).expect_err("refused").reason.to_string();
        assert_eq!(reason(cookie_request("s1", &good, None)), "CSRF_TOKEN_INVALID");
        let other = b.csrf_token("s1").expect("token");
        assert_eq!(reason(cookie_request("s1", &good, Some(&other))), "CSRF_TOKEN_INVALID", "header != cookie");
        let foreign = b.csrf_token("s2").expect("token");
        assert_eq!(reason(cookie_request("s1", &foreign, Some(&foreign))), "CSRF_TOKEN_INVALID", "other session");
    }

    #[test]
    fn the_origin_check() {
        let b = browser();
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        assert!(b.require_same_origin(&h(&[("sec-fetch-site", "same-origin")])).is_ok());
        assert!(b.require_same_origin(&h(&[("sec-fetch-site", "none")])).is_ok());
        assert!(b.require_same_origin(&h(&[("sec-fetch-site", "same-site")])).is_err());
        assert!(
            b.require_same_origin(&h(&[("sec-fetch-site", "cross-site"), ("origin", "https://app.example.com")]))
                .is_err()
        );
        assert!(b.require_same_origin(&h(&[("origin", "https://app.example.com")])).is_ok());
        assert!(b.require_same_origin(&h(&[("origin", "https://evil.example")])).is_err());
        assert!(b.require_same_origin(&h(&[("origin", "null")])).is_err());
        assert!(b.require_same_origin(&h(&[])).is_err());
        assert!(b.check_origin(&h(&[])).is_ok(), "API clients send neither");
        assert!(b.check_origin(&h(&[("origin", "https://evil.example")])).is_err());
    }

    #[test]
    fn cookies_are_set_and_cleared_with_host_prefix_attributes() {
        let b = browser();
        let mut h = HeaderMap::new();
        let csrf = b.set_session_cookies(&mut h, &jwt_with_sid("s1"), "rt_abc", "s1", 600, 86_400).expect("set");
        let set: Vec<&str> = h.get_all(header::SET_COOKIE).iter().map(|v| v.to_str().expect("ascii")).collect();
        assert_eq!(set.len(), 3);
        for c in &set {
            assert!(c.starts_with("__Host-") && c.contains("; Path=/; Secure; SameSite=Strict"), "{c}");
            assert!(!c.to_ascii_lowercase().contains("domain="), "{c}");
        }
        assert!(set[0].contains("Max-Age=600") && set[0].ends_with("HttpOnly"));
        assert!(set[1].starts_with("__Host-strongroom_refresh=rt_abc;") && set[1].ends_with("HttpOnly"));
        assert!(set[2].starts_with(&format!("__Host-strongroom_csrf={csrf};")) && !set[2].contains("HttpOnly"));
        // What the browser sends back passes the check.
        assert!(b.require_csrf_token(&cookie_request("s1", &csrf, Some(&csrf))).is_ok());
        assert!(b.set_session_cookies(&mut h, "a;b", "r", "s1", 1, 1).is_err(), "no cookie injection");

        let mut cleared = HeaderMap::new();
        clear_session_cookies(&mut cleared);
        let set: Vec<&str> = cleared.get_all(header::SET_COOKIE).iter().map(|v| v.to_str().expect("ascii")).collect();
        assert_eq!(set.len(), 3);
        assert!(set.iter().all(|c| c.contains("=; Max-Age=0; Path=/; Secure")));
    }

    #[test]
    fn cookie_parsing() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; __Host-strongroom_session=tok"));
        h.append(header::COOKIE, HeaderValue::from_static("__Host-strongroom_refresh=r1"));
        assert_eq!(session_token(&h), Some("tok"));
        assert_eq!(refresh_token(&h), Some("r1"));
        assert_eq!(request_token(&h), Some("tok"));
        h.append(header::COOKIE, HeaderValue::from_static("__Host-strongroom_session=other"));
        assert_eq!(session_token(&h), None, "conflicting duplicates are not believed");
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(request_token(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(request_token(&h), None, "a malformed Authorization never falls back to the cookie");
    }
}
