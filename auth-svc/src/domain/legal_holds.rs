//! The rules of legal holds, without I/O: what a hold covers, which users a set of active holds
//! keeps from deletion, and what a placing or a release must say. A hold defers deletion; it never
//! deletes anything itself.

use kit::ApiError;

/// The longest reason of a hold and note of its release.
pub const MAX_TEXT_CHARS: usize = 1000;

/// What a hold covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything of the tenant.
    Tenant,
    /// One user.
    Subject(uuid::Uuid),
}

impl Scope {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::Subject(_) => "subject",
        }
    }

    /// The scope as stored; `None` for a row the migration's checks would refuse.
    pub fn stored(scope: &str, subject: Option<uuid::Uuid>) -> Option<Self> {
        match (scope, subject) {
            ("tenant", None) => Some(Self::Tenant),
            ("subject", Some(user)) => Some(Self::Subject(user)),
            _ => None,
        }
    }

    pub fn subject(self) -> Option<uuid::Uuid> {
        match self {
            Self::Tenant => None,
            Self::Subject(user) => Some(user),
        }
    }

    /// Whether a hold of this scope keeps `user` from deletion.
    pub fn covers(self, user: uuid::Uuid) -> bool {
        match self {
            Self::Tenant => true,
            Self::Subject(held) => held == user,
        }
    }
}

/// Whether any of the `active` holds keeps `user` from deletion.
pub fn held(active: &[Scope], user: uuid::Uuid) -> bool {
    active.iter().any(|s| s.covers(user))
}

/// Which of the `deferred` users (erasure asked for under a hold) may be erased now that only
/// the `active` holds remain.
pub fn freed(deferred: &[uuid::Uuid], active: &[Scope]) -> Vec<uuid::Uuid> {
    deferred.iter().copied().filter(|u| !held(active, *u)).collect()
}

/// A hold's reason: required, at most [`MAX_TEXT_CHARS`], trimmed.
pub fn check_reason(reason: &str) -> Result<String, ApiError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_TEXT_CHARS {
        return Err(ApiError::invalid_field("reason", format!("1 to {MAX_TEXT_CHARS} characters")));
    }
    Ok(reason.to_owned())
}

/// A release's note: optional, at most [`MAX_TEXT_CHARS`], trimmed.
pub fn check_note(note: &str) -> Result<String, ApiError> {
    let note = note.trim();
    if note.chars().count() > MAX_TEXT_CHARS {
        return Err(ApiError::invalid_field("note", format!("at most {MAX_TEXT_CHARS} characters")));
    }
    Ok(note.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_hold_covers_everyone_and_a_subject_hold_only_its_subject() {
        let (ann, bob) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        assert!(Scope::Tenant.covers(ann));
        assert!(Scope::Subject(ann).covers(ann));
        assert!(!Scope::Subject(ann).covers(bob));
        assert!(!held(&[], ann));
        assert!(held(&[Scope::Subject(bob), Scope::Tenant], ann));
    }

    #[test]
    fn a_release_frees_only_those_no_other_hold_covers() {
        let (ann, bob) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        assert_eq!(freed(&[ann, bob], &[]), [ann, bob]);
        assert_eq!(freed(&[ann, bob], &[Scope::Subject(bob)]), [ann]);
        assert!(freed(&[ann, bob], &[Scope::Tenant]).is_empty());
    }

    #[test]
    fn scopes_round_trip_as_stored_and_odd_rows_are_refused() {
        let ann = uuid::Uuid::new_v4();
        for scope in [Scope::Tenant, Scope::Subject(ann)] {
            assert_eq!(Scope::stored(scope.as_str(), scope.subject()), Some(scope));
        }
        assert_eq!(Scope::stored("tenant", Some(ann)), None);
        assert_eq!(Scope::stored("subject", None), None);
        assert_eq!(Scope::stored("planet", None), None);
    }

    #[test]
    fn a_reason_is_required_and_bounded_and_a_note_only_bounded() {
        assert_eq!(check_reason("  case 42 ").ok().as_deref(), Some("case 42"));
        assert!(check_reason("   ").is_err());
        assert!(check_reason(&"x".repeat(MAX_TEXT_CHARS + 1)).is_err());
        assert_eq!(check_note("").ok().as_deref(), Some(""));
        assert!(check_note(&"x".repeat(MAX_TEXT_CHARS + 1)).is_err());
    }
}
