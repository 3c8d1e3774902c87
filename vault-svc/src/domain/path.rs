//! Secret paths: `[A-Za-z0-9][A-Za-z0-9._-]*` segments joined by `/`, 1–256 characters; no empty,
//! `.` or `..` segments; and the associated data a secret version is sealed with.

use kit::{ApiError, Tenant};

use crate::domain::crypto::Aad;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretPath(String);

impl SecretPath {
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let bad = || {
            ApiError::invalid_field(
                "path",
                "segments of [A-Za-z0-9._-] starting with a letter or digit, joined by '/', at most 256 characters",
            )
        };
        if raw.is_empty() || raw.len() > 256 {
            return Err(bad());
        }
        for seg in raw.split('/') {
            let mut bytes = seg.bytes();
            match bytes.next() {
                Some(b) if b.is_ascii_alphanumeric() => {}
                _ => return Err(bad()),
            }
            if !bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
                return Err(bad());
            }
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A list prefix: empty, or a path prefix with the same alphabet (may end in `/`).
pub fn parse_prefix(raw: &str) -> Result<String, ApiError> {
    if raw.is_empty() {
        return Ok(String::new());
    }
    let trimmed = raw.strip_suffix('/').unwrap_or(raw);
    SecretPath::parse(trimmed).map_err(|_| ApiError::invalid_field("prefix", "must be a path prefix"))?;
    Ok(raw.to_owned())
}

/// Associated data of a stored secret version: tenant, path and version.
pub fn secret_aad(tenant: &Tenant, path: &SecretPath, version: u32) -> Aad {
    Aad::new("strongroom.vault.secret")
        .with("tenant", tenant.id.0.as_bytes())
        .with("path", path.as_str().as_bytes())
        .with("version", &version.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        for good in ["a", "brokers/ib/api-key", "x.y_z-1/2"] {
            assert!(SecretPath::parse(good).is_ok(), "{good}");
        }
        let long = "a".repeat(257);
        for bad in ["", "/a", "a/", "a//b", "../x", "a/../b", ".hidden", "a b", "a;drop", long.as_str(), "é"] {
            assert!(SecretPath::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_prefix("brokers/").expect("prefix"), "brokers/");
        assert!(parse_prefix("../").is_err());
    }
}
