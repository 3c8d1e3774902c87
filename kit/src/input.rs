//! Checks of client input that several services share.

use chrono::{DateTime, Utc};

use crate::error::ApiError;

/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, the range of `google.protobuf.Timestamp`.
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;

/// A `google.protobuf.Timestamp` from a request as a time, refusing what the type's own
/// definition excludes (years outside 1 to 9999, nanos outside 0 to 999,999,999). PostgreSQL
/// stores every such time, so none reaches it as an out-of-range error.
pub fn timestamp(field: &str, t: &prost_types::Timestamp) -> Result<DateTime<Utc>, ApiError> {
    let nanos = u32::try_from(t.nanos).ok().filter(|n| *n <= 999_999_999);
    (MIN_SECONDS..=MAX_SECONDS)
        .contains(&t.seconds)
        .then_some(nanos)
        .flatten()
        .and_then(|n| DateTime::from_timestamp(t.seconds, n))
        .ok_or_else(|| ApiError::invalid_field(field, "a time from year 1 to 9999, nanos 0 to 999999999"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64, nanos: i32) -> Result<DateTime<Utc>, ApiError> {
        timestamp("t", &prost_types::Timestamp { seconds, nanos })
    }

    #[test]
    fn timestamps_outside_the_protobuf_range_are_refused() {
        assert_eq!(at(0, 0).expect("epoch").timestamp(), 0);
        assert!(at(MIN_SECONDS, 0).is_ok());
        assert!(at(MAX_SECONDS, 999_999_999).is_ok());
        for (s, n) in
            [(MIN_SECONDS - 1, 0), (MAX_SECONDS + 1, 0), (i64::MIN, 0), (i64::MAX, 0), (0, -1), (0, 1_000_000_000)]
        {
            let e = at(s, n).expect_err("out of range");
            assert_eq!(e.code, crate::ErrorCode::InvalidArgument);
            assert!(e.message.starts_with("t: "), "{}", e.message);
        }
    }
}
