//! Validation of identity input that needs no state: ids, email addresses, role and group
//! names, descriptions. Pure, unit-tested here; the API layer calls it before anything is read.

use kit::ApiError;

pub fn parse_id(field: &str, raw: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(raw).map_err(|_| ApiError::invalid_field(field, "must be a UUID"))
}

pub fn normalize_email(raw: &str) -> Result<String, ApiError> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() >= 3
        && email.len() <= 254
        && email.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if !valid {
        return Err(ApiError::invalid_field("email", "must be an email address"));
    }
    Ok(email)
}

pub fn check_name(field: &str, name: &str) -> Result<(), ApiError> {
    let ok = name.len() >= 2
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c));
    if ok { Ok(()) } else { Err(ApiError::invalid_field(field, "must match ^[a-z][a-z0-9_.-]{1,62}$")) }
}

/// A role's or group's description: refused, not cut, when too long.
pub fn check_description(description: &str) -> Result<(), ApiError> {
    if description.chars().count() > 500 {
        return Err(ApiError::invalid_field("description", "at most 500 characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_lowercased_and_checked() {
        assert_eq!(normalize_email("  Ada@Example.COM ").expect("valid"), "ada@example.com");
        for bad in
            ["", "ada", "@example.com", "ada@", "ada@localhost", "ada@.com", "a da@example.com", "ada@exa\u{7}mple.com"]
        {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
        assert!(normalize_email(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn names_and_descriptions() {
        assert!(check_name("name", "billing.ops-2").is_ok());
        for bad in ["a", "Admin", "1ops", "ops!", &"a".repeat(64)] {
            assert!(check_name("name", bad).is_err(), "{bad:?}");
        }
        assert!(check_description(&"é".repeat(500)).is_ok());
        assert!(check_description(&"é".repeat(501)).is_err());
        assert!(parse_id("id", "not-a-uuid").is_err());
    }
}
