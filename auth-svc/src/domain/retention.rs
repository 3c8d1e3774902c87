//! The tenant's retention policy of identity data (`identity_retention_policy`, auth tenant
//! migration 0009): how long auth-svc keeps each kind of data once it has ended, and the bounds an
//! update must keep. Pure; read and written by `store::retention`, enforced by `housekeeping.rs`.

use chrono::{DateTime, Utc};
use kit::ApiError;
use proto::auth::v1 as pb;

/// The days a tenant may keep each kind of data: at least a day (a spent refresh token must
/// outlive its expiry, or presenting it again would not be recognised as reuse), at most ten
/// years.
pub const DAYS: std::ops::RangeInclusive<u32> = 1..=3_650;

/// The tenant's retention policy, in days per kind of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct RetentionPolicy {
    /// An ended session and its refresh tokens, after they expired.
    pub ended_sessions_days: i32,
    /// A second-factor challenge, after it expired.
    pub mfa_challenges_days: i32,
    /// What is left of a deleted user, after the deletion.
    pub erased_users_days: i32,
    /// A closed data-subject request with its steps, after it closed.
    pub privacy_requests_days: i32,
}

impl Default for RetentionPolicy {
    /// The defaults of a tenant (auth tenant migrations 0009 and 0014): sessions twelve months,
    /// challenges a day, a deleted user's residue thirty days, a closed request three years.
    fn default() -> Self {
        Self { ended_sessions_days: 365, mfa_challenges_days: 1, erased_users_days: 30, privacy_requests_days: 1095 }
    }
}

impl RetentionPolicy {
    /// Each kind of data by the name the API, the audit trail and the metrics give it, with its
    /// days.
    pub fn fields(&self) -> [(&'static str, i32); 4] {
        [
            ("ended_sessions_days", self.ended_sessions_days),
            ("mfa_challenges_days", self.mfa_challenges_days),
            ("erased_users_days", self.erased_users_days),
            ("privacy_requests_days", self.privacy_requests_days),
        ]
    }

    /// `(field, previous, new)` of each value `wanted` changes.
    pub fn changes(&self, wanted: &Self) -> Vec<(&'static str, i32, i32)> {
        self.fields()
            .into_iter()
            .zip(wanted.fields())
            .filter(|((_, old), (_, new))| old != new)
            .map(|((field, old), (_, new))| (field, old, new))
            .collect()
    }

    /// The policy as the API shows it, changed last at `updated_at`.
    pub fn to_pb(self, updated_at: DateTime<Utc>) -> pb::RetentionPolicy {
        pb::RetentionPolicy {
            ended_sessions_days: self.ended_sessions_days.unsigned_abs(),
            mfa_challenges_days: self.mfa_challenges_days.unsigned_abs(),
            erased_users_days: self.erased_users_days.unsigned_abs(),
            privacy_requests_days: self.privacy_requests_days.unsigned_abs(),
            update_time: Some(kit::time::to_pb(updated_at)),
        }
    }
}

/// The policy an update of `current` asks for, or the first value out of [`DAYS`] (named, so the
/// client knows which). `privacy_requests_days` came later: a client that does not send it (0)
/// keeps the current value.
pub fn check_update(p: &pb::RetentionPolicy, current: &RetentionPolicy) -> Result<RetentionPolicy, ApiError> {
    let privacy_requests_days = match p.privacy_requests_days {
        0 => current.privacy_requests_days.unsigned_abs(),
        days => days,
    };
    let fields = [
        ("ended_sessions_days", p.ended_sessions_days),
        ("mfa_challenges_days", p.mfa_challenges_days),
        ("erased_users_days", p.erased_users_days),
        ("privacy_requests_days", privacy_requests_days),
    ];
    if let Some((field, _)) = fields.iter().find(|(_, days)| !DAYS.contains(days)) {
        return Err(ApiError::invalid_field(field, format!("{} to {} days", DAYS.start(), DAYS.end())));
    }
    // In range, so each fits an i32.
    let days = |d: u32| i32::try_from(d).unwrap_or(i32::MAX);
    Ok(RetentionPolicy {
        ended_sessions_days: days(p.ended_sessions_days),
        mfa_challenges_days: days(p.mfa_challenges_days),
        erased_users_days: days(p.erased_users_days),
        privacy_requests_days: days(privacy_requests_days),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(ended_sessions_days: u32, mfa_challenges_days: u32, erased_users_days: u32) -> pb::RetentionPolicy {
        pb::RetentionPolicy {
            ended_sessions_days,
            mfa_challenges_days,
            erased_users_days,
            privacy_requests_days: 0,
            update_time: None,
        }
    }

    #[test]
    fn an_update_within_bounds_is_taken_as_asked() {
        let current = RetentionPolicy::default();
        assert_eq!(
            check_update(&asked(1, 3_650, 30), &current).expect("in bounds"),
            RetentionPolicy { ended_sessions_days: 1, mfa_challenges_days: 3_650, erased_users_days: 30, ..current }
        );
        assert_eq!(check_update(&current.to_pb(Utc::now()), &current).expect("defaults"), current);
        let longer = pb::RetentionPolicy { privacy_requests_days: 2_000, ..asked(365, 1, 30) };
        assert_eq!(check_update(&longer, &current).expect("in bounds").privacy_requests_days, 2_000);
    }

    #[test]
    fn a_client_that_does_not_know_request_records_keeps_their_retention() {
        let current = RetentionPolicy { privacy_requests_days: 400, ..RetentionPolicy::default() };
        assert_eq!(check_update(&asked(90, 1, 30), &current).expect("in bounds").privacy_requests_days, 400);
    }

    #[test]
    fn an_update_out_of_bounds_names_its_field() {
        let current = RetentionPolicy::default();
        let field =
            |p: pb::RetentionPolicy| check_update(&p, &current).expect_err("refused").violations[0].field.clone();
        assert_eq!(field(asked(0, 1, 30)), "ended_sessions_days");
        assert_eq!(field(asked(3_651, 1, 30)), "ended_sessions_days");
        assert_eq!(field(asked(365, 0, 30)), "mfa_challenges_days");
        assert_eq!(field(asked(365, 1, 0)), "erased_users_days");
        assert_eq!(field(asked(365, 1, u32::MAX)), "erased_users_days");
        assert_eq!(
            field(pb::RetentionPolicy { privacy_requests_days: 3_651, ..asked(365, 1, 30) }),
            "privacy_requests_days"
        );
    }

    #[test]
    fn changes_list_only_what_differs_with_both_values() {
        let old = RetentionPolicy::default();
        assert!(old.changes(&old).is_empty());
        let new = RetentionPolicy { ended_sessions_days: 90, erased_users_days: 7, ..old };
        assert_eq!(old.changes(&new), [("ended_sessions_days", 365, 90), ("erased_users_days", 30, 7)]);
    }
}
