//! auth-svc's own settings (`[service]` in its configuration, `STRONGROOM_SERVICE__*`).

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Redis for login throttling and for listing revoked sessions and API keys. Required.
    pub redis_url: Option<SecretString>,
    /// Password hashes computed at once (each takes 19 MiB); default: the number of cores.
    #[serde(default)]
    pub hash_workers: Option<usize>,
    /// Logins allowed to wait for a hash worker; beyond, RESOURCE_EXHAUSTED (HTTP 429).
    #[serde(default = "default_hash_queue")]
    pub hash_queue: usize,
    /// A refresh token presented again within this many seconds gets the same successor.
    #[serde(default = "default_refresh_grace")]
    pub refresh_grace_secs: u64,
    /// A new token signing key is published this long before it signs (longer than any
    /// verifier caches the JWKS: 300 s).
    #[serde(default = "default_publish_ahead")]
    pub signing_key_publish_ahead_secs: u64,
    /// Each tenant's token signing key is rotated once it has signed this long (default 30 days;
    /// 0: only when an operator asks, `strongroom tenant rotate-signing-key`).
    #[serde(default = "default_rotate_after")]
    pub signing_key_rotate_after_secs: u64,
    /// Failed logins per client IP (all accounts) within a tenant's lockout window.
    #[serde(default = "default_ip_threshold")]
    pub ip_failure_threshold: u32,
    /// Failed logins per account from every address within the lockout window, as a multiple of
    /// the tenant's `lockout_threshold` (which is the hard limit per account+IP): beyond it the
    /// account is under a broad attack and refuses every address (`ACCOUNT_UNDER_ATTACK`).
    #[serde(default = "default_account_factor")]
    pub account_failure_factor: u32,
    /// Every this many seconds, each tenant's long-expired refresh tokens, ended sessions and MFA
    /// challenges are removed (see `housekeeping`; 0: never).
    #[serde(default = "default_purge_every")]
    pub purge_every_secs: u64,
    /// Base URL of the gateway as browsers see it (the issuer's public face), for the
    /// otpauth:// issuer label.
    #[serde(default = "default_totp_issuer")]
    pub totp_issuer: String,
    /// Days a terminated tenant's export bundle is kept for fetching before the purge
    /// (`strongroom tenant purge --due`) deletes the tenant.
    #[serde(default = "default_export_window_days")]
    pub export_window_days: u32,
    /// The erasure journal's directory (`kit::journal`, docs/operations.md): every tenant
    /// termination is written there before it commits, so that a restore from a backup does not
    /// bring the tenant back. Shared by every replica, kept beside the backup repository.
    #[serde(default)]
    pub erasure_journal: Option<std::path::PathBuf>,
    /// Passkeys (WebAuthn): the relying party browsers see. Without `rp_id`, passkeys are off
    /// (`PASSKEYS_UNAVAILABLE`).
    #[serde(default)]
    pub webauthn: WebauthnSettings,
}

/// The WebAuthn relying party: the gateway's host as browsers reach it (docs/identity.md).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebauthnSettings {
    /// The relying party id: the gateway's host name (`auth.example.com`), never an IP address.
    #[serde(default)]
    pub rp_id: Option<String>,
    /// Shown by authenticators; default `Strongroom`.
    #[serde(default)]
    pub rp_name: Option<String>,
    /// The origins the browser may assert from (`https://auth.example.com`): the first one, and
    /// any further ones (the host or its subdomains).
    #[serde(default)]
    pub origins: Vec<String>,
    /// Accept an origin's host on any port (development only: the dev constellation's ports are
    /// chosen at start).
    #[serde(default)]
    pub allow_any_port: bool,
}

impl WebauthnSettings {
    /// The verifier, or none when passkeys are off.
    pub fn build(&self, env: kit::config::Environment) -> Result<Option<webauthn_rs::Webauthn>, String> {
        let Some(rp_id) = self.rp_id.as_deref() else { return Ok(None) };
        if self.allow_any_port && env == kit::config::Environment::Production {
            return Err("service.webauthn.allow_any_port is for development only".into());
        }
        let origins: Vec<url::Url> = self
            .origins
            .iter()
            .map(|o| url::Url::parse(o).map_err(|e| format!("service.webauthn.origins: {o}: {e}")))
            .collect::<Result<_, _>>()?;
        let first = origins.first().ok_or("service.webauthn.origins: at least one with rp_id")?;
        let mut builder = webauthn_rs::WebauthnBuilder::new(rp_id, first)
            .map_err(|e| format!("service.webauthn: {e}"))?
            .rp_name(self.rp_name.as_deref().unwrap_or("Strongroom"))
            .allow_any_port(self.allow_any_port);
        for origin in &origins[1..] {
            builder = builder.append_allowed_origin(origin);
        }
        builder.build().map(Some).map_err(|e| format!("service.webauthn: {e}"))
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            redis_url: None,
            hash_workers: None,
            hash_queue: default_hash_queue(),
            refresh_grace_secs: default_refresh_grace(),
            signing_key_publish_ahead_secs: default_publish_ahead(),
            signing_key_rotate_after_secs: default_rotate_after(),
            ip_failure_threshold: default_ip_threshold(),
            account_failure_factor: default_account_factor(),
            purge_every_secs: default_purge_every(),
            totp_issuer: default_totp_issuer(),
            export_window_days: default_export_window_days(),
            erasure_journal: None,
            webauthn: WebauthnSettings::default(),
        }
    }
}

fn default_export_window_days() -> u32 {
    30
}

fn default_account_factor() -> u32 {
    10
}

fn default_hash_queue() -> usize {
    64
}

fn default_refresh_grace() -> u64 {
    10
}

fn default_publish_ahead() -> u64 {
    360
}

fn default_rotate_after() -> u64 {
    30 * 24 * 3600
}

fn default_ip_threshold() -> u32 {
    50
}

fn default_purge_every() -> u64 {
    600
}

fn default_totp_issuer() -> String {
    "Strongroom".into()
}

impl kit::config::ServiceSettings for AuthSettings {
    fn validate(&self, env: kit::config::Environment) -> Result<(), String> {
        if env == kit::config::Environment::Production && self.erasure_journal.is_none() {
            return Err(
                "service.erasure_journal is required in production: without it a restore from a backup brings back terminated tenants".into()
            );
        }
        let Some(url) = &self.redis_url else {
            return Err("service.redis_url is required (login throttling and revocations)".into());
        };
        let parsed = url::Url::parse(url.expose_secret()).map_err(|_| "service.redis_url is not a URL")?;
        if !matches!(parsed.scheme(), "redis" | "rediss") {
            return Err("service.redis_url must be redis:// or rediss://".into());
        }
        if self.hash_workers == Some(0) {
            return Err("service.hash_workers must be positive".into());
        }
        if self.refresh_grace_secs > 120 {
            return Err("service.refresh_grace_secs must be at most 120".into());
        }
        if self.signing_key_rotate_after_secs != 0
            && self.signing_key_rotate_after_secs <= self.signing_key_publish_ahead_secs
        {
            return Err(
                "service.signing_key_rotate_after_secs must exceed signing_key_publish_ahead_secs (or be 0)".into()
            );
        }
        if self.account_failure_factor < 2 {
            return Err("service.account_failure_factor must be at least 2".into());
        }
        if self.ip_failure_threshold == 0 {
            return Err("service.ip_failure_threshold must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use kit::config::ServiceSettings;

    use super::*;

    #[test]
    fn keys_cannot_rotate_faster_than_they_are_published_ahead() {
        let mut s = AuthSettings {
            redis_url: Some("redis://127.0.0.1:6379".to_owned().into()),
            erasure_journal: Some("/var/lib/strongroom/erasure-journal".into()),
            ..Default::default()
        };
        assert!(s.validate(kit::config::Environment::Production).is_ok(), "defaults are valid");
        s.signing_key_rotate_after_secs = s.signing_key_publish_ahead_secs;
        assert!(s.validate(kit::config::Environment::Production).is_err());
        s.signing_key_rotate_after_secs = 0;
        assert!(s.validate(kit::config::Environment::Production).is_ok(), "0: only on request");
    }

    #[test]
    fn production_needs_the_erasure_journal() {
        let s = AuthSettings { redis_url: Some("redis://127.0.0.1:6379".to_owned().into()), ..Default::default() };
        assert!(s.validate(kit::config::Environment::Development).is_ok());
        let e = s.validate(kit::config::Environment::Production).expect_err("no journal");
        assert!(e.contains("service.erasure_journal"), "{e}");
    }
}
