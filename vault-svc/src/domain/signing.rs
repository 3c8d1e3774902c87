//! Rules of workload signing keys: what a key may be called, which workload owns it, how large a
//! signed message may be, and the associated data its sealed private half is bound to. No I/O.
//!
//! A key belongs to the workload its name starts with (`audit`, `audit-…` to audit-svc): only that
//! workload signs with it or creates it, so ledger-svc cannot forge audit checkpoints nor audit-svc
//! ledger receipts.

use kit::ApiError;

use crate::domain::crypto::Aad;

/// Largest message a signature covers.
pub const MAX_MESSAGE: usize = 1024 * 1024;

/// Refuses a key name that is not `[a-z][a-z0-9-]{0,31}`.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    let mut b = name.bytes();
    let ok = matches!(b.next(), Some(c) if c.is_ascii_lowercase())
        && name.len() <= 32
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    if ok { Ok(()) } else { Err(ApiError::invalid_field("key_name", "[a-z][a-z0-9-]{0,31}")) }
}

/// Refuses a message larger than [`MAX_MESSAGE`].
pub fn check_message(message: &[u8]) -> Result<(), ApiError> {
    if message.len() > MAX_MESSAGE {
        return Err(ApiError::invalid_field("message", "at most 1 MiB"));
    }
    Ok(())
}

/// The workload a key belongs to: its name up to the first `-`.
pub fn owner(key_name: &str) -> &str {
    key_name.split('-').next().unwrap_or(key_name)
}

/// Whether workload `caller` may use key `key_name`: its owner may, and the operator too where
/// `operator_too`.
pub fn may_use(caller: &str, key_name: &str, operator_too: bool) -> bool {
    caller == owner(key_name) || (operator_too && caller == kit::tls::Identity::OPERATOR)
}

/// Associated data of version `version` of signing key `name`'s private half, sealed by a tenant
/// key: a sealed key copied to another tenant, name or version does not open.
pub fn seal_aad(tenant: uuid::Uuid, name: &str, version: u32) -> Aad {
    Aad::new("strongroom.vault.signing-key")
        .with("tenant", tenant.as_bytes())
        .with("name", name.as_bytes())
        .with("version", &version.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names() {
        for good in ["a", "audit", "audit-checkpoints", "ledger-2", &"a".repeat(32)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Audit", "1audit", "-audit", "audit_x", "audit.x", "é", &"a".repeat(33)] {
            let e = check_name(bad).expect_err(bad);
            assert_eq!(e.message, "key_name: [a-z][a-z0-9-]{0,31}", "{bad}");
        }
    }

    #[test]
    fn messages_up_to_one_mib() {
        assert!(check_message(&[]).is_ok());
        assert!(check_message(&vec![0; MAX_MESSAGE]).is_ok());
        assert!(check_message(&vec![0; MAX_MESSAGE + 1]).is_err());
    }

    #[test]
    fn a_key_belongs_to_the_workload_its_name_starts_with() {
        assert_eq!(owner("audit"), "audit");
        assert_eq!(owner("audit-checkpoints"), "audit");
        assert_eq!(owner("ledger-receipts-2"), "ledger");
        assert!(may_use("audit", "audit-checkpoints", false));
        assert!(!may_use("ledger", "audit-checkpoints", false));
        assert!(!may_use("ledger", "ledgerx", false));
        assert!(!may_use(kit::tls::Identity::OPERATOR, "audit", false));
        assert!(may_use(kit::tls::Identity::OPERATOR, "audit", true));
        assert!(!may_use("gateway", "audit", true));
    }

    #[test]
    fn the_sealed_private_half_is_bound_to_tenant_name_and_version() {
        let tenant = uuid::Uuid::from_u128(1);
        let aad = seal_aad(tenant, "audit", 1);
        assert_eq!(aad.bytes(), seal_aad(tenant, "audit", 1).bytes());
        assert_ne!(aad.bytes(), seal_aad(uuid::Uuid::from_u128(2), "audit", 1).bytes());
        assert_ne!(aad.bytes(), seal_aad(tenant, "ledger", 1).bytes());
        assert_ne!(aad.bytes(), seal_aad(tenant, "audit", 2).bytes());
    }
}
