//! Revoked sessions and API keys. auth-svc lists them in Redis the moment they are revoked;
//! every token verifier (gateway and services) checks the list on each request, so a revocation
//! takes effect everywhere at once rather than at token expiry. A verifier that cannot reach
//! Redis refuses tokens (fail closed) and says so in a log line and a metric.

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    Session,
    ApiKey,
}

impl Revoked {
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
    pub fn new(url: &SecretString) -> Result<Self, String> {
        let client =
            redis::Client::open(url.expose_secret()).map_err(|_| "revocations_url cannot be used".to_owned())?;
        Ok(Self { client, conn: Default::default() })
    }

    async fn conn(&self) -> Result<ConnectionManager, ApiError> {
        let conn = tokio::time::timeout(
            TIMEOUT,
            self.conn.get_or_try_init(|| async { ConnectionManager::new(self.client.clone()).await }),
        )
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
        Ok(conn.clone())
    }

    /// Whether `id` has been revoked.
    pub async fn is_revoked(&self, kind: Revoked, id: &str) -> Result<bool, ApiError> {
        let mut conn = self.conn().await?;
        tokio::time::timeout(TIMEOUT, conn.exists::<_, bool>(kind.key(id)))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)
    }

    /// Lists `ids` as revoked.
    pub async fn revoke(&self, kind: Revoked, ids: &[String]) -> Result<(), ApiError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.set_ex(kind.key(id), 1, LISTING_TTL.as_secs()).ignore();
        }
        tokio::time::timeout(TIMEOUT, pipe.query_async::<()>(&mut conn))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)
    }
}
