//! The rules of OAuth client registration, without I/O: what a client's settings may say. Redirect
//! URIs follow OAuth 2.1 and RFC 8252 (native apps): exact strings, https, or http on a loopback
//! address, or a private-use scheme with a dot in it; never a fragment, user info or wildcard.

use kit::ApiError;
use proto::auth::v1 as pb;

/// The scopes a client may be allowed to ask for.
pub const SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// The grant types a client may use.
pub const GRANT_TYPES: [&str; 3] = ["authorization_code", "refresh_token", "client_credentials"];

/// At most this many redirect URIs (and post-logout ones) per client.
pub const MAX_URIS: usize = 10;

const MAX_URI_CHARS: usize = 2000;

/// A client's kind as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Public,
    Confidential,
}

impl Kind {
    pub fn from_pb(kind: i32) -> Result<Self, ApiError> {
        match pb::ClientKind::try_from(kind) {
            Ok(pb::ClientKind::Public) => Ok(Self::Public),
            Ok(pb::ClientKind::Confidential) => Ok(Self::Confidential),
            _ => Err(ApiError::invalid_field("kind", "public or confidential")),
        }
    }

    pub fn stored(kind: &str) -> Self {
        if kind == "confidential" { Self::Confidential } else { Self::Public }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Confidential => "confidential",
        }
    }

    pub const fn to_pb(self) -> pb::ClientKind {
        match self {
            Self::Public => pb::ClientKind::Public,
            Self::Confidential => pb::ClientKind::Confidential,
        }
    }
}

/// Settings that passed [`check`]: trimmed, de-duplicated, sorted where order means nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub allowed_scopes: Vec<String>,
    pub grant_types: Vec<String>,
    pub first_party: bool,
    /// What its client_credentials tokens may do (known permissions; whether the registrant holds
    /// them is checked with the registrant).
    pub permissions: Vec<String>,
}

/// Checks a client's settings for its kind; the first field at fault is named in the error.
pub fn check(kind: Kind, settings: Option<&pb::ClientSettings>) -> Result<Settings, ApiError> {
    let s = settings.ok_or_else(|| ApiError::invalid_field("settings", "required"))?;
    let name = s.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid_field("name", "1 to 100 printable characters"));
    }
    let grant_types = one_of("grant_types", &s.grant_types, &GRANT_TYPES)?;
    if grant_types.is_empty() {
        return Err(ApiError::invalid_field("grant_types", "at least one"));
    }
    let code_flow = grant_types.iter().any(|g| g == "authorization_code");
    if s.redirect_uris.is_empty() && code_flow {
        return Err(ApiError::invalid_field("redirect_uris", "at least one"));
    }
    let redirect_uris = uris("redirect_uris", &s.redirect_uris)?;
    let post_logout_redirect_uris = uris("post_logout_redirect_uris", &s.post_logout_redirect_uris)?;
    let allowed_scopes = one_of("allowed_scopes", &s.allowed_scopes, &SCOPES)?;
    if allowed_scopes.is_empty() && code_flow {
        return Err(ApiError::invalid_field(
            "allowed_scopes",
            "at least one of openid, profile, email, offline_access",
        ));
    }
    let mut permissions = s.permissions.clone();
    permissions.sort();
    permissions.dedup();
    if !permissions.is_empty() && !grant_types.iter().any(|g| g == "client_credentials") {
        return Err(ApiError::invalid_field("permissions", "only for a client with client_credentials"));
    }
    if permissions.len() > 100 {
        return Err(ApiError::invalid_field("permissions", "at most 100"));
    }
    if kind == Kind::Public && grant_types.iter().any(|g| g == "client_credentials") {
        return Err(ApiError::invalid_field("grant_types", "client_credentials needs a confidential client"));
    }
    if grant_types.iter().any(|g| g == "refresh_token") && !grant_types.iter().any(|g| g == "authorization_code") {
        return Err(ApiError::invalid_field("grant_types", "refresh_token comes with authorization_code"));
    }
    Ok(Settings {
        name,
        redirect_uris,
        post_logout_redirect_uris,
        allowed_scopes,
        grant_types,
        first_party: s.first_party,
        permissions,
    })
}

/// `values`, each one of `known`, sorted and without repeats.
fn one_of(field: &'static str, values: &[String], known: &[&str]) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    for v in values {
        if !known.contains(&v.as_str()) {
            return Err(ApiError::invalid_field(field, format!("{v:?} is not one of {}", known.join(", "))));
        }
        out.push(v.clone());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The URIs, each checked by [`redirect_uri`], in the order given, without repeats.
fn uris(field: &'static str, values: &[String]) -> Result<Vec<String>, ApiError> {
    if values.len() > MAX_URIS {
        return Err(ApiError::invalid_field(field, "at most 10"));
    }
    let mut out: Vec<String> = Vec::new();
    for v in values {
        redirect_uri(v).map_err(|why| ApiError::invalid_field(field, format!("{v:?}: {why}")))?;
        if !out.contains(v) {
            out.push(v.clone());
        }
    }
    Ok(out)
}

/// Why `uri` may not be a redirect URI, if it may not. It is kept as given (and matched exactly),
/// so it must already be in the form the URL parser would give it.
pub fn redirect_uri(uri: &str) -> Result<(), &'static str> {
    if uri.len() > MAX_URI_CHARS {
        return Err("longer than 2000 characters");
    }
    if uri.contains('*') {
        return Err("wildcards are not allowed: redirect URIs match exactly");
    }
    let parsed = url::Url::parse(uri).map_err(|_| "not an absolute URI")?;
    if parsed.fragment().is_some() {
        return Err("a redirect URI has no fragment");
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("a redirect URI has no user info");
    }
    match parsed.scheme() {
        "https" => {
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err("https needs a host");
            }
        }
        "http" => match parsed.host() {
            Some(url::Host::Ipv4(ip)) if ip.is_loopback() => {}
            Some(url::Host::Ipv6(ip)) if ip.is_loopback() => {}
            _ => return Err("http only on a loopback address (127.0.0.1 or [::1]); otherwise https"),
        },
        // A private-use scheme of a native app: reverse domain notation (RFC 8252, 7.1).
        scheme if scheme.contains('.') => {}
        "javascript" | "data" | "file" | "vbscript" | "blob" => return Err("not a redirect scheme"),
        _ => return Err("https, loopback http, or a private-use scheme with a dot (com.example.app)"),
    }
    if parsed.as_str() != uri {
        return Err("not in normal form (e.g. a trailing slash after the host, lower-case scheme and host)");
    }
    Ok(())
}

/// An OAuth error of the code flow: its reason (RFC 6749 error code, upper-cased) and message.
pub fn oauth_error(reason: &'static str, message: impl Into<String>) -> ApiError {
    let code = match reason {
        "INVALID_CLIENT" => kit::error::ErrorCode::Unauthenticated,
        "INVALID_GRANT" | "CONSENT_REQUIRED" | "UNAUTHORIZED_CLIENT" => kit::error::ErrorCode::FailedPrecondition,
        _ => kit::error::ErrorCode::InvalidArgument,
    };
    ApiError::new(code, reason, message)
}

/// Checks a PKCE challenge: S256 only (`plain` would hand the verifier to whoever sees the
/// authorization request), and 43 base64url characters (a SHA-256).
pub fn check_challenge(method: &str, challenge: &str) -> Result<(), ApiError> {
    match method {
        "S256" => {}
        "plain" => return Err(oauth_error("INVALID_REQUEST", "code_challenge_method plain is refused; use S256")),
        "" => return Err(oauth_error("INVALID_REQUEST", "PKCE is required: code_challenge_method S256")),
        _ => return Err(oauth_error("INVALID_REQUEST", "code_challenge_method must be S256")),
    }
    if challenge.len() != 43 || !challenge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(oauth_error("INVALID_REQUEST", "code_challenge must be BASE64URL(SHA-256(code_verifier))"));
    }
    Ok(())
}

/// Whether `verifier` (43–128 unreserved characters, RFC 7636) hashes to `challenge`.
pub fn verifier_matches(verifier: &str, challenge: &str) -> bool {
    use base64::Engine;
    use sha2::Digest;
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    well_formed
        && base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
            == challenge
}

/// The requested scopes (space-separated), each one the client may ask for; sorted, no repeats.
pub fn requested_scopes(scope: &str, allowed: &[String]) -> Result<Vec<String>, ApiError> {
    let mut scopes: Vec<String> = scope.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    if let Some(s) = scopes.iter().find(|s| !allowed.contains(s)) {
        return Err(oauth_error("INVALID_SCOPE", format!("scope {s:?} is not allowed to this client")));
    }
    scopes.sort();
    scopes.dedup();
    Ok(scopes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_is_s256_only_and_the_verifier_must_hash_to_the_challenge() {
        // RFC 7636, appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(check_challenge("S256", challenge).is_ok());
        assert!(verifier_matches(verifier, challenge));
        assert!(!verifier_matches(&verifier.replace('d', "e"), challenge));
        assert!(!verifier_matches("short", challenge));
        assert_eq!(check_challenge("plain", verifier).expect_err("plain").reason, "INVALID_REQUEST");
        assert!(check_challenge("", challenge).is_err());
        assert!(check_challenge("S256", "not+base64url/characters=====================").is_err());
        let allowed = vec!["openid".to_owned(), "email".to_owned()];
        assert_eq!(requested_scopes("openid  email openid", &allowed).expect("ok"), ["email", "openid"]);
        assert_eq!(requested_scopes("openid admin", &allowed).expect_err("admin").reason, "INVALID_SCOPE");
    }

    fn settings(uris: &[&str], grants: &[&str]) -> pb::ClientSettings {
        pb::ClientSettings {
            name: "  Console ".into(),
            redirect_uris: uris.iter().map(|u| (*u).to_owned()).collect(),
            post_logout_redirect_uris: Vec::new(),
            allowed_scopes: vec!["openid".into(), "email".into(), "openid".into()],
            grant_types: grants.iter().map(|g| (*g).to_owned()).collect(),
            first_party: true,
            permissions: Vec::new(),
        }
    }

    #[test]
    fn redirect_uris_are_exact_https_loopback_or_private_use() {
        for ok in [
            "https://app.example.com/callback",
            "https://app.example.com:8443/cb?x=1",
            "http://127.0.0.1:53412/callback",
            "http://[::1]:8080/cb",
            "com.example.app:/oauth2redirect",
        ] {
            assert_eq!(redirect_uri(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("https://app.example.com/cb#x", "fragment"),
            ("https://*.example.com/cb", "wildcards"),
            ("http://app.example.com/cb", "loopback"),
            ("http://localhost:8080/cb", "loopback"),
            ("https://user:pw@app.example.com/cb", "user info"),
            ("/callback", "absolute"),
            ("javascript:alert(1)", "not a redirect scheme"),
            ("myapp:/cb", "private-use"),
            ("HTTPS://App.example.com/cb", "normal form"),
            ("https://app.example.com", "normal form"),
        ] {
            let e = redirect_uri(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn settings_are_trimmed_sorted_and_checked_for_the_kind() {
        let s = check(Kind::Confidential, Some(&settings(&["https://a.example/cb"], &["client_credentials"])))
            .expect("confidential machine client");
        assert_eq!(s.name, "Console");
        assert_eq!(s.allowed_scopes, ["email", "openid"]);
        let e = check(Kind::Public, Some(&settings(&["https://a.example/cb"], &["client_credentials"])))
            .expect_err("public machine client");
        assert_eq!(e.message, "grant_types: client_credentials needs a confidential client");
        let e = check(Kind::Public, Some(&settings(&["https://a.example/cb"], &["refresh_token"]))).expect_err("rt");
        assert_eq!(e.message, "grant_types: refresh_token comes with authorization_code");
        let e = check(Kind::Public, Some(&settings(&[], &["authorization_code"]))).expect_err("no uri");
        assert_eq!(e.message, "redirect_uris: at least one");
        let e = check(Kind::Public, Some(&settings(&["https://a.example/cb"], &["implicit"]))).expect_err("implicit");
        assert!(e.message.starts_with("grant_types: \"implicit\" is not one of"), "{}", e.message);
        let mut many = settings(&["https://a.example/cb"], &["authorization_code"]);
        many.redirect_uris = (0..11).map(|i| format!("https://a.example/{i}")).collect();
        assert_eq!(check(Kind::Public, Some(&many)).expect_err("11").message, "redirect_uris: at most 10");
    }

    #[test]
    fn a_machine_client_needs_no_redirect_uri_and_only_it_has_permissions() {
        let mut machine = settings(&[], &["client_credentials"]);
        machine.allowed_scopes.clear();
        machine.permissions = vec!["users.read".into(), "audit.read".into(), "users.read".into()];
        let s = check(Kind::Confidential, Some(&machine)).expect("machine client");
        assert_eq!(s.permissions, ["audit.read", "users.read"]);
        let mut browser = settings(&["https://a.example/cb"], &["authorization_code"]);
        browser.permissions = vec!["users.read".into()];
        let e = check(Kind::Confidential, Some(&browser)).expect_err("permissions without the grant");
        assert_eq!(e.message, "permissions: only for a client with client_credentials");
        let mut no_scope = settings(&["https://a.example/cb"], &["authorization_code"]);
        no_scope.allowed_scopes.clear();
        assert!(check(Kind::Public, Some(&no_scope)).is_err(), "the code flow needs a scope");
    }
}
