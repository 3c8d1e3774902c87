//! The principal the rate-limit middleware already verified for the current request, so that the
//! handler's `authenticate` does not verify the same token a second time. Bound to the exact token
//! string, holds only successful verifications, and lives only as long as the request's task.

use std::future::Future;
use std::sync::Arc;

use kit::principal::Principal;

#[derive(Debug)]
struct Verified {
    token: String,
    principal: Principal,
}

tokio::task_local! {
    static VERIFIED: Option<Arc<Verified>>;
}

/// Runs `request` with `verified` (a token and the principal it proved) known to [`lookup`].
pub(crate) async fn scope<F: Future>(verified: Option<(String, Principal)>, request: F) -> F::Output {
    let verified = verified.map(|(token, principal)| Arc::new(Verified { token, principal }));
    VERIFIED.scope(verified, request).await
}

/// The principal `token` proved earlier in this request, if it was verified then.
pub(crate) fn lookup(token: &str) -> Option<Principal> {
    VERIFIED.try_with(|v| v.as_ref().filter(|v| v.token == token).map(|v| v.principal.clone())).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal() -> Principal {
        Principal {
            tenant_id: kit::tenancy::TenantId(uuid::Uuid::nil()),
            tenant: None,
            subject: "alice".into(),
            session_id: None,
            token_id: "j".into(),
            permissions: vec![],
            roles: vec![],
            amr: vec![],
            expires_at: 0,
            mfa_time: None,
            enrollment_only: false,
        }
    }

    #[tokio::test]
    async fn only_the_same_token_in_the_same_request() {
        assert!(lookup("t").is_none(), "outside any request");
        scope(Some(("t".into(), principal())), async {
            assert_eq!(lookup("t").map(|p| p.subject), Some("alice".into()));
            assert!(lookup("other").is_none());
            assert!(tokio::spawn(async { lookup("t") }).await.expect("join").is_none(), "another task");
        })
        .await;
        scope(None, async { assert!(lookup("t").is_none()) }).await;
    }
}
