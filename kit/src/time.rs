//! Times at the edges, converted one way everywhere: `google.protobuf.Timestamp` ↔ `chrono` (a
//! time from a request is validated against the type's range) and RFC 3339 for HTTP/JSON.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

use crate::error::ApiError;

/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, the range of `google.protobuf.Timestamp`.
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;

/// A time for a response.
pub fn to_pb(t: DateTime<Utc>) -> Timestamp {
    Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

/// An optional time for a response.
pub fn opt_to_pb(t: Option<DateTime<Utc>>) -> Option<Timestamp> {
    t.map(to_pb)
}

/// A `google.protobuf.Timestamp` from a request as a time, refusing what the type's own
/// definition excludes (years outside 1 to 9999, nanos outside 0 to 999,999,999). PostgreSQL
/// stores every such time, so none reaches it as an out-of-range error.
pub fn from_pb(field: &str, t: &Timestamp) -> Result<DateTime<Utc>, ApiError> {
    let nanos = u32::try_from(t.nanos).ok().filter(|n| *n <= 999_999_999);
    (MIN_SECONDS..=MAX_SECONDS)
        .contains(&t.seconds)
        .then_some(nanos)
        .flatten()
        .and_then(|n| DateTime::from_timestamp(t.seconds, n))
        .ok_or_else(|| ApiError::invalid_field(field, "a time from year 1 to 9999, nanos 0 to 999999999"))
}

/// [`from_pb`] of an optional field.
pub fn opt_from_pb(field: &str, t: Option<&Timestamp>) -> Result<Option<DateTime<Utc>>, ApiError> {
    t.map(|t| from_pb(field, t)).transpose()
}

/// A time of a gRPC response as RFC 3339 for JSON (`None` when absent or out of range).
pub fn rfc3339(t: &Option<Timestamp>) -> Option<String> {
    t.as_ref().and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)).map(|t| t.to_rfc3339())
}

/// An optional RFC 3339 time of an HTTP request, for a gRPC request (validated by the service).
pub fn parse_rfc3339(field: &str, raw: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    raw.map(|s| {
        DateTime::parse_from_rfc3339(s)
            .map(|t| to_pb(t.with_timezone(&Utc)))
            .map_err(|_| ApiError::invalid_field(field, "an RFC 3339 date-time"))
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64, nanos: i32) -> Result<DateTime<Utc>, ApiError> {
        from_pb("t", &Timestamp { seconds, nanos })
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

    #[test]
    fn rfc3339_round_trips_with_offsets_and_nanos() {
        let t = parse_rfc3339("at", Some("2026-12-07T08:30:00.123456789+02:00")).expect("valid").expect("some");
        assert_eq!(rfc3339(&Some(t)).as_deref(), Some("2026-12-07T06:30:00.123456789+00:00"));
        assert_eq!(from_pb("at", &t).expect("in range"), DateTime::from_timestamp(t.seconds, 123_456_789).expect("t"));
        assert!(parse_rfc3339("at", Some("yesterday")).expect_err("refused").message.starts_with("at: "));
        assert_eq!(parse_rfc3339("at", None).expect("absent"), None);
        assert_eq!(rfc3339(&None), None);
    }
}
