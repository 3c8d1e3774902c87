//! Amounts: unsigned 128-bit integers in minor units, written as plain decimal strings. Floats,
//! signs, spaces, decimal points and exponents are refused, so no client can round money.

use kit::ApiError;

/// Parses a decimal u128 (`0` … `340282366920938463463374607431768211455`).
pub fn parse(field: &str, raw: &str) -> Result<u128, ApiError> {
    if raw.is_empty() || raw.len() > 39 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::invalid_field(
            field,
            "must be a decimal integer string of minor units (no sign, no decimals)",
        ));
    }
    raw.parse::<u128>().map_err(|_| ApiError::invalid_field(field, "exceeds 2^128 - 1"))
}

/// Parses an optional amount: empty means zero.
pub fn parse_or_zero(field: &str, raw: &str) -> Result<u128, ApiError> {
    if raw.is_empty() { Ok(0) } else { parse(field, raw) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_decimal_integers() {
        assert_eq!(parse("a", "0").ok(), Some(0));
        assert_eq!(parse("a", "1050").ok(), Some(1050));
        assert_eq!(parse("a", "340282366920938463463374607431768211455").ok(), Some(u128::MAX));
        for bad in ["", "-1", "+1", "1.5", "1e3", " 1", "1 ", "0x10", "340282366920938463463374607431768211456", "NaN"]
        {
            assert!(parse("a", bad).is_err(), "{bad}");
        }
        assert_eq!(parse_or_zero("a", "").ok(), Some(0));
    }
}
