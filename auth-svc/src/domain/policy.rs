//! The tenant's identity policy (`tenant_policy`) and its rules: who is privileged, which
//! permissions are sensitive, and the bounds an update must keep. Pure; read and written by
//! `store::policy`.

use kit::ApiError;
use kit::authz::Permission;
use proto::auth::v1 as pb;

/// The tenant's identity policy (`tenant_policy`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Policy {
    pub lockout_threshold: i32,
    pub lockout_window_secs: i32,
    pub access_token_ttl_secs: i32,
    pub refresh_token_ttl_secs: i32,
    pub mfa_required_roles: Vec<String>,
    /// Holding any of these makes a user privileged (auth tenant migration 0005).
    pub privileged_permissions: Vec<String>,
}

impl Default for Policy {
    /// The defaults of a new tenant (auth tenant migrations 0001 and 0005): what an unknown
    /// tenant's login is throttled with.
    fn default() -> Self {
        Self {
            lockout_threshold: 5,
            lockout_window_secs: 900,
            access_token_ttl_secs: 600,
            refresh_token_ttl_secs: 2_592_000,
            mfa_required_roles: vec!["owner".into(), "admin".into(), "security_admin".into()],
            privileged_permissions: Vec::new(),
        }
    }
}

impl Policy {
    /// Whether a user with these effective roles and permissions must use a second factor: by
    /// permission (a custom role carrying admin permissions is privileged too), or by a role the
    /// tenant names.
    pub fn privileged(&self, roles: &[String], permissions: &[String]) -> bool {
        permissions.iter().any(|p| self.privileged_permissions.contains(p))
            || roles.iter().any(|r| self.mfa_required_roles.contains(r))
    }

    /// Whether a credential carrying `permission` may only be minted with a recent second factor:
    /// a privileged permission, or one whose use needs step-up ([`Permission::needs_step_up`]).
    pub fn sensitive(&self, permission: &str) -> bool {
        self.privileged_permissions.iter().any(|p| p == permission)
            || Permission::parse(permission).is_some_and(Permission::needs_step_up)
    }
}

impl From<Policy> for pb::Policy {
    fn from(p: Policy) -> Self {
        pb::Policy {
            lockout_threshold: p.lockout_threshold.unsigned_abs(),
            lockout_window_secs: p.lockout_window_secs.unsigned_abs(),
            access_token_ttl_secs: p.access_token_ttl_secs.unsigned_abs(),
            refresh_token_ttl_secs: p.refresh_token_ttl_secs.unsigned_abs(),
            mfa_required_roles: p.mfa_required_roles,
            privileged_permissions: p.privileged_permissions,
        }
    }
}

/// Refuses a policy update whose numbers are out of bounds (lockout, token lifetimes) or that
/// names an unknown permission as privileged.
pub fn check_update(p: &pb::Policy) -> Result<(), ApiError> {
    let bounds: [(&str, u32, std::ops::RangeInclusive<u32>, &str); 4] = [
        ("lockout_threshold", p.lockout_threshold, 1..=100, "1 to 100"),
        ("lockout_window_secs", p.lockout_window_secs, 60..=86_400, "60 to 86400"),
        ("access_token_ttl_secs", p.access_token_ttl_secs, 300..=900, "300 to 900"),
        ("refresh_token_ttl_secs", p.refresh_token_ttl_secs, 3_600..=90 * 86_400, "3600 to 7776000"),
    ];
    if let Some((field, _, _, allowed)) = bounds.iter().find(|(_, value, range, _)| !range.contains(value)) {
        return Err(ApiError::invalid_field(field, *allowed));
    }
    crate::rbac::check_known(&p.privileged_permissions)
        .map_err(|_| ApiError::invalid_field("privileged_permissions", "only known permissions"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> pb::Policy {
        pb::Policy {
            lockout_threshold: 5,
            lockout_window_secs: 900,
            access_token_ttl_secs: 600,
            refresh_token_ttl_secs: 3_600,
            mfa_required_roles: vec![],
            privileged_permissions: vec!["users.delete".into()],
        }
    }

    #[test]
    fn an_update_out_of_bounds_names_its_field() {
        assert!(check_update(&valid()).is_ok());
        let field = |p: pb::Policy| check_update(&p).expect_err("refused").violations[0].field.clone();
        assert_eq!(field(pb::Policy { lockout_threshold: 0, ..valid() }), "lockout_threshold");
        assert_eq!(field(pb::Policy { lockout_window_secs: 59, ..valid() }), "lockout_window_secs");
        assert_eq!(field(pb::Policy { access_token_ttl_secs: 901, ..valid() }), "access_token_ttl_secs");
        assert_eq!(field(pb::Policy { refresh_token_ttl_secs: 90 * 86_400 + 1, ..valid() }), "refresh_token_ttl_secs");
        let unknown = pb::Policy { privileged_permissions: vec!["root.everything".into()], ..valid() };
        assert_eq!(field(unknown), "privileged_permissions");
    }

    #[test]
    fn privilege_comes_from_a_permission_or_a_named_role() {
        let policy = Policy { privileged_permissions: vec!["users.delete".into()], ..Policy::default() };
        assert!(policy.privileged(&[], &["users.delete".into()]));
        assert!(policy.privileged(&["owner".into()], &[]));
        assert!(!policy.privileged(&["viewer".into()], &["users.read".into()]));
        assert!(policy.sensitive("users.delete"));
    }
}
