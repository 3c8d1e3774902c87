//! The gRPC adapters of auth-svc, one file per tonic service: decode, authorize (`kit::authz`),
//! call the rules and the store, encode.

pub mod access;
pub mod appeals;
pub mod authn;
pub mod oauth;
pub mod passkeys;
pub mod privacy;
pub mod sessions;
pub mod tenants;
pub mod users;

/// A page of a listing read as `size + 1` rows: the first `size`, and the next page's token (made
/// from the last row kept by `token`) when there were more, else empty.
pub(crate) fn page<T>(mut rows: Vec<T>, size: i64, token: impl Fn(&T) -> String) -> (Vec<T>, String) {
    let more = rows.len() as i64 > size;
    rows.truncate(usize::try_from(size).unwrap_or_default());
    let next = match rows.last() {
        Some(last) if more => token(last),
        _ => String::new(),
    };
    (rows, next)
}

/// Where a page of rows listed newest first (API keys, OAuth clients) ends: the last row's creation
/// time and id, so a row deleted meanwhile does not lose the place.
pub(crate) struct CreatedCursor {
    pub(crate) created_at: chrono::DateTime<chrono::Utc>,
    pub(crate) id: uuid::Uuid,
}

impl CreatedCursor {
    pub(crate) fn parse(token: &str) -> Result<Self, kit::ApiError> {
        if token.is_empty() {
            // Later than any key (9999-12-31): the first page.
            let end = chrono::DateTime::from_timestamp(253_402_300_799, 0).unwrap_or_default();
            return Ok(Self { created_at: end, id: uuid::Uuid::max() });
        }
        let bad = || kit::ApiError::invalid_field("page_token", "must be a next_page_token of this listing");
        let (micros, id) = token.split_once('.').ok_or_else(bad)?;
        let created_at = micros
            .parse::<i64>()
            .ok()
            .and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_micros)
            .ok_or_else(bad)?;
        Ok(Self { created_at, id: uuid::Uuid::parse_str(id).map_err(|_| bad())? })
    }

    pub(crate) fn token(&self) -> String {
        format!("{}.{}", self.created_at.timestamp_micros(), self.id)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_page_names_its_successor_only_when_there_is_one() {
        assert_eq!(super::page(vec![1, 2, 3], 2, ToString::to_string), (vec![1, 2], "2".to_owned()));
        assert_eq!(super::page(vec![1, 2], 2, ToString::to_string), (vec![1, 2], String::new()));
        assert_eq!(super::page(Vec::<i32>::new(), 2, ToString::to_string), (vec![], String::new()));
    }
}
