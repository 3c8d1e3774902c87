//! The rules of data-subject requests, without I/O: their types, subjects and statuses, when each
//! is due, which status may follow which, and whose key seals a request's notes. Never reads a
//! clock itself: callers pass the filing time.

use chrono::{DateTime, Duration, Utc};
use kit::ApiError;
use sha2::{Digest, Sha256};

/// Days a request is due in, unless a rule below says otherwise.
pub const DEFAULT_DUE_DAYS: i64 = 30;

/// Days an erasure of an external subject's data (a messaging contact) is due in.
pub const EXTERNAL_ERASURE_DUE_DAYS: i64 = 7;

/// The longest note (and filing details) a step keeps.
pub const MAX_NOTE_CHARS: usize = 4000;

/// The longest external subject id.
pub const MAX_EXTERNAL_ID_CHARS: usize = 100;

/// What the subject asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestType {
    Access,
    Rectification,
    Erasure,
    Restriction,
}

impl RequestType {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Access => "access",
            Self::Rectification => "rectification",
            Self::Erasure => "erasure",
            Self::Restriction => "restriction",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Access, Self::Rectification, Self::Erasure, Self::Restriction].into_iter().find(|t| t.as_str() == s)
    }
}

/// Where a request stands. `Completed` and `Rejected` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Received,
    InProgress,
    Completed,
    Rejected,
}

impl Status {
    /// The statuses of a request still to be worked (and that can be overdue).
    pub const OPEN: [&'static str; 2] = ["received", "in_progress"];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Received, Self::InProgress, Self::Completed, Self::Rejected].into_iter().find(|t| t.as_str() == s)
    }

    pub const fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Rejected)
    }
}

/// Why a status change is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionError {
    /// The request is completed or rejected already.
    Final,
    /// Only forward: nothing goes back to `received`, nor stays where it is.
    Backwards,
    /// Completing or rejecting says why.
    NoteRequired,
}

/// Checks that a request in `from` may move to `to` with `note` (trimmed).
pub fn check_transition(from: Status, to: Status, note: &str) -> Result<(), TransitionError> {
    if from.is_final() {
        return Err(TransitionError::Final);
    }
    if to == Status::Received || to == from {
        return Err(TransitionError::Backwards);
    }
    if to.is_final() && note.trim().is_empty() {
        return Err(TransitionError::NoteRequired);
    }
    Ok(())
}

/// Whom a request is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A Strongroom user of the tenant.
    User(uuid::Uuid),
    /// An id the tenant uses for its own end users (e.g. `contact:123`), which Strongroom does not
    /// resolve.
    External(String),
}

impl Subject {
    /// An external subject id: 1 to [`MAX_EXTERNAL_ID_CHARS`] letters, digits and `:._@-`,
    /// starting with a letter or digit (no spaces or control characters: it names a key).
    pub fn external(raw: &str) -> Result<Self, ApiError> {
        let id = raw.trim();
        let ok = !id.is_empty()
            && id.chars().count() <= MAX_EXTERNAL_ID_CHARS
            && id.starts_with(|c: char| c.is_ascii_alphanumeric())
            && id.chars().all(|c| c.is_ascii_alphanumeric() || ":._@-".contains(c));
        if !ok {
            return Err(ApiError::invalid_field(
                "external_subject",
                format!("1 to {MAX_EXTERNAL_ID_CHARS} letters, digits and :._@- (e.g. contact:123)"),
            ));
        }
        Ok(Self::External(id.to_owned()))
    }

    /// `user` or `external`, as stored.
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::User(_) => "user",
            Self::External(_) => "external",
        }
    }

    /// The id as stored: the user's id, or the external id.
    pub fn id(&self) -> String {
        match self {
            Self::User(u) => u.to_string(),
            Self::External(e) => e.clone(),
        }
    }

    /// From its stored kind and id.
    pub fn stored(kind: &str, id: &str) -> Option<Self> {
        match kind {
            "user" => uuid::Uuid::parse_str(id).ok().map(Self::User),
            "external" => Some(Self::External(id.to_owned())),
            _ => None,
        }
    }

    /// The subject key that seals this request's notes: the user's own key, or for an external
    /// subject a key named after `external:<id>` (a UUID derived from SHA-256 of that name, as
    /// `crate::personal` names keys by UUID), so that erasing the external subject can shred it.
    pub fn key(&self) -> uuid::Uuid {
        match self {
            Self::User(u) => *u,
            Self::External(e) => {
                let digest = Sha256::digest(format!("external:{e}").as_bytes());
                let mut bytes = [0u8; 16];
                bytes.copy_from_slice(&digest[..16]);
                // RFC 9562 version 8 (custom), variant 10.
                bytes[6] = (bytes[6] & 0x0f) | 0x80;
                bytes[8] = (bytes[8] & 0x3f) | 0x80;
                uuid::Uuid::from_bytes(bytes)
            }
        }
    }
}

/// How long a request of `kind` about `subject` is due in.
pub fn due_in(kind: RequestType, subject: &Subject) -> Duration {
    match (kind, subject) {
        (RequestType::Erasure, Subject::External(_)) => Duration::days(EXTERNAL_ERASURE_DUE_DAYS),
        _ => Duration::days(DEFAULT_DUE_DAYS),
    }
}

/// When a request of `kind` about `subject` filed at `filed` is due.
pub fn due_at(kind: RequestType, subject: &Subject, filed: DateTime<Utc>) -> DateTime<Utc> {
    filed + due_in(kind, subject)
}

/// Whether a request in `status` due at `due` is overdue at `now`.
pub fn overdue(status: Status, due: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    !status.is_final() && due < now
}

/// A note or the filing details: trimmed, at most [`MAX_NOTE_CHARS`], may be empty.
pub fn check_note(field: &str, note: &str) -> Result<String, ApiError> {
    let note = note.trim();
    if note.chars().count() > MAX_NOTE_CHARS {
        return Err(ApiError::invalid_field(field, format!("at most {MAX_NOTE_CHARS} characters")));
    }
    Ok(note.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).unwrap_or_default()
    }

    #[test]
    fn requests_are_due_in_30_days_and_an_external_contacts_erasure_in_7() {
        let filed = at("2026-03-01T10:00:00Z");
        let user = Subject::User(uuid::Uuid::new_v4());
        let contact = Subject::external("contact:123").expect("valid");
        for kind in [RequestType::Access, RequestType::Rectification, RequestType::Erasure, RequestType::Restriction] {
            assert_eq!(due_at(kind, &user, filed), at("2026-03-31T10:00:00Z"), "{kind:?} of a user");
        }
        assert_eq!(due_at(RequestType::Erasure, &contact, filed), at("2026-03-08T10:00:00Z"));
        for kind in [RequestType::Access, RequestType::Rectification, RequestType::Restriction] {
            assert_eq!(due_at(kind, &contact, filed), at("2026-03-31T10:00:00Z"), "{kind:?} of a contact");
        }
    }

    #[test]
    fn statuses_only_move_forward_and_final_ones_need_a_note() {
        use Status::*;
        assert_eq!(check_transition(Received, InProgress, ""), Ok(()));
        assert_eq!(check_transition(Received, Completed, "sent the bundle"), Ok(()));
        assert_eq!(check_transition(InProgress, Rejected, "not the subject"), Ok(()));
        assert_eq!(check_transition(InProgress, Completed, "  "), Err(TransitionError::NoteRequired));
        assert_eq!(check_transition(Received, Rejected, ""), Err(TransitionError::NoteRequired));
        assert_eq!(check_transition(InProgress, Received, "back"), Err(TransitionError::Backwards));
        assert_eq!(check_transition(InProgress, InProgress, "again"), Err(TransitionError::Backwards));
        for from in [Completed, Rejected] {
            for to in [Received, InProgress, Completed, Rejected] {
                assert_eq!(check_transition(from, to, "note"), Err(TransitionError::Final), "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn only_open_requests_past_their_due_date_are_overdue() {
        let (due, now) = (at("2026-03-08T10:00:00Z"), at("2026-03-09T10:00:00Z"));
        assert!(overdue(Status::Received, due, now));
        assert!(overdue(Status::InProgress, due, now));
        assert!(!overdue(Status::Completed, due, now));
        assert!(!overdue(Status::Rejected, due, now));
        assert!(!overdue(Status::Received, now, due));
    }

    #[test]
    fn names_round_trip() {
        for t in [RequestType::Access, RequestType::Rectification, RequestType::Erasure, RequestType::Restriction] {
            assert_eq!(RequestType::parse(t.as_str()), Some(t));
        }
        for s in [Status::Received, Status::InProgress, Status::Completed, Status::Rejected] {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::OPEN, [Status::Received.as_str(), Status::InProgress.as_str()]);
        assert_eq!(RequestType::parse("delete"), None);
    }

    #[test]
    fn external_subjects_are_checked_and_keyed_apart_from_each_other() {
        let a = Subject::external(" contact:123 ").expect("valid");
        assert_eq!(a, Subject::External("contact:123".into()));
        assert_eq!(Subject::stored(a.kind(), &a.id()), Some(a.clone()));
        for bad in ["", ":x", "contact 1", "contact:\u{0}", "kontakt:é", &"a".repeat(101)] {
            assert!(Subject::external(bad).is_err(), "{bad:?}");
        }
        let b = Subject::external("contact:124").expect("valid");
        assert_eq!(a.key(), Subject::external("contact:123").expect("valid").key(), "the same name, the same key");
        assert_ne!(a.key(), b.key());
        assert_eq!(a.key().get_version_num(), 8);
        let user = uuid::Uuid::new_v4();
        assert_eq!(Subject::User(user).key(), user);
        assert_eq!(Subject::stored("user", &user.to_string()), Some(Subject::User(user)));
        assert_eq!(Subject::stored("robot", "x"), None);
    }

    #[test]
    fn notes_are_trimmed_and_bounded() {
        assert_eq!(check_note("note", "  done ").expect("ok"), "done");
        assert!(check_note("note", &"é".repeat(MAX_NOTE_CHARS)).is_ok());
        assert!(check_note("note", &"é".repeat(MAX_NOTE_CHARS + 1)).is_err());
    }
}
