//! Rules of tenant key management requests: the size of a rewrap batch, what names a data subject
//! to shred, and how the audit trail names that subject. No I/O.

use kit::ApiError;
use sha2::Digest;

/// The rows one rewrap batch moves: `requested`, or 500 for 0; at most 10 000.
pub fn rewrap_batch_size(requested: u32) -> Result<i64, ApiError> {
    match requested {
        0 => Ok(500),
        n @ 1..=10_000 => Ok(n.into()),
        _ => Err(ApiError::invalid_field("batch_size", "1–10000")),
    }
}

/// Refuses a data subject id that is empty or longer than 128 characters.
pub fn check_subject(subject: &str) -> Result<(), ApiError> {
    if subject.is_empty() || subject.chars().count() > 128 {
        return Err(ApiError::invalid_field("subject", "1–128 characters"));
    }
    Ok(())
}

/// How the audit trail names a shredded subject: the subject id may be personal data, so only the
/// first 8 bytes of its SHA-256, in hex.
pub fn subject_digest(subject: &str) -> String {
    hex::encode(&sha2::Sha256::digest(subject.as_bytes())[..8])
}

/// Refuses to shred a tenant unless the request repeats the tenant's slug: the whole tenant's
/// data becomes unreadable, so a mistyped tenant must not be enough.
pub fn check_shred_confirmation(confirm_slug: &str, tenant_slug: &str) -> Result<(), ApiError> {
    if confirm_slug != tenant_slug {
        return Err(ApiError::invalid_field("confirm_slug", "must equal the tenant's slug"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrap_batches_default_to_500_and_stop_at_10000() {
        assert_eq!(rewrap_batch_size(0).expect("default"), 500);
        assert_eq!(rewrap_batch_size(1).expect("one"), 1);
        assert_eq!(rewrap_batch_size(10_000).expect("most"), 10_000);
        let e = rewrap_batch_size(10_001).expect_err("too many");
        assert_eq!(e.message, "batch_size: 1–10000");
    }

    #[test]
    fn subjects_are_1_to_128_characters() {
        assert!(check_subject("user-1").is_ok());
        assert!(check_subject(&"é".repeat(128)).is_ok());
        assert!(check_subject("").is_err());
        assert_eq!(check_subject(&"é".repeat(129)).expect_err("long").message, "subject: 1–128 characters");
    }

    #[test]
    fn the_audit_trail_keeps_only_a_short_digest_of_a_subject() {
        let digest = subject_digest("alice@example.com");
        assert_eq!(digest.len(), 16);
        assert!(!digest.contains("alice"));
        assert_eq!(digest, subject_digest("alice@example.com"));
        assert_ne!(digest, subject_digest("bob@example.com"));
    }

    #[test]
    fn shredding_a_tenant_takes_its_slug_again() {
        assert!(check_shred_confirmation("acme", "acme").is_ok());
        let e = check_shred_confirmation("acm", "acme").expect_err("mistyped");
        assert_eq!(e.message, "confirm_slug: must equal the tenant's slug");
    }
}
