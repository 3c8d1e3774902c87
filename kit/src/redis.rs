//! Redis clients for every process: `redis://` in the clear on a trusted network, `rediss://` over
//! TLS (rustls). A TLS connection verifies Redis's certificate against the constellation's CA
//! (`tls.ca`: Redis gets its certificate from the internal CA like every workload), or, when none
//! is given, against the system's roots. Certificate checks are never turned off.

use std::path::Path;

/// A client for `url` (from configuration); `ca` is a PEM file of the CAs that may sign Redis's
/// certificate. The error names the setting's problem, never the URL (it may hold a password).
pub fn client(url: &str, ca: Option<&Path>) -> Result<redis::Client, String> {
    let parsed = url::Url::parse(url).map_err(|_| "not a URL".to_owned())?;
    match parsed.scheme() {
        "redis" => redis::Client::open(url).map_err(|e| e.to_string()),
        "rediss" => {
            if parsed.fragment() == Some("insecure") {
                return Err("rediss://…#insecure turns certificate checks off; refused".into());
            }
            let root_cert = match ca {
                Some(path) => Some(std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?),
                None => None,
            };
            redis::Client::build_with_tls(url, redis::TlsCertificates { client_tls: None, root_cert })
                .map_err(|e| e.to_string())
        }
        other => Err(format!("scheme {other}: use redis:// or rediss://")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_and_insecure_tls_are_checked() {
        assert!(client("redis://127.0.0.1:6379", None).is_ok());
        assert!(client("rediss://127.0.0.1:6380", None).is_ok());
        assert!(client("rediss://127.0.0.1:6380/#insecure", None).expect_err("insecure").contains("refused"));
        assert!(client("http://127.0.0.1:6379", None).is_err());
        assert!(client("rediss://127.0.0.1:6380", Some(Path::new("/nonexistent/ca.pem"))).is_err());
    }
}
