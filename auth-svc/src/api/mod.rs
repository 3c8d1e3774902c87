//! The gRPC adapters of auth-svc, one file per tonic service: decode, authorize (`kit::authz`),
//! call the rules and the store, encode.

pub mod access;
pub mod appeals;
pub mod authn;
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_page_names_its_successor_only_when_there_is_one() {
        assert_eq!(super::page(vec![1, 2, 3], 2, ToString::to_string), (vec![1, 2], "2".to_owned()));
        assert_eq!(super::page(vec![1, 2], 2, ToString::to_string), (vec![1, 2], String::new()));
        assert_eq!(super::page(Vec::<i32>::new(), 2, ToString::to_string), (vec![], String::new()));
    }
}
