//! Request input: JSON bodies, query strings and path parameters. Every body that cannot be read
//! as the operation's type is a 400 in the gateway's error shape (`INVALID_FIELD`, naming the
//! field at fault, e.g. `flags.history` or `scopes[0]`), and a body without a JSON content type a
//! 415, on every route alike.
//!
//! The message never repeats the value that was sent: a password, TOTP code or secret of the wrong
//! type must not come back in an error, nor reach a log or a trace through one. serde's "invalid
//! type: string \"…\", expected u32" is cut to "invalid type, expected u32".
//!
//! Query strings and path parameters that do not parse are 400 `INVALID_FIELD` on `query` or
//! `path` with the framework's explanation (they travel in the URL, which is logged anyway).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Request};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderMap, StatusCode, header};
use kit::error::ApiError;
use serde::de::DeserializeOwned;

use crate::http_layer::{JsonError, RequestId};

/// A JSON request body of type `T`: the gateway's `axum::Json`, with the errors above.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let request_id = RequestId::of(req.extensions());
        // The framework's statuses (this 415, a 413 over the body limit) get the JSON error shape
        // from the outer layer (`http_layer::observe`).
        if !is_json(req.headers()) {
            return Err(StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response());
        }
        let bytes = Bytes::from_request(req, state).await.map_err(IntoResponse::into_response)?;
        parse(&bytes).map(JsonBody).map_err(|e| JsonError(e, request_id).into_response())
    }
}

/// An optional body (`Option<JsonBody<T>>`): none without a `Content-Type`; with one, as above.
impl<T: DeserializeOwned, S: Send + Sync> OptionalFromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Response> {
        if !req.headers().contains_key(header::CONTENT_TYPE) {
            return Ok(None);
        }
        <Self as FromRequest<S>>::from_request(req, state).await.map(Some)
    }
}

/// A query string of type `T` (`axum::extract::Query`, with the gateway's errors).
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(QueryParams(v)),
            Err(rejection) => Err(unparsable(parts, "query", &rejection.body_text())),
        }
    }
}

/// Path parameters of type `T` (`axum::extract::Path`, with the gateway's errors).
#[derive(Debug)]
pub struct PathParams<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathParams<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(PathParams(v)),
            Err(rejection) => Err(unparsable(parts, "path", &rejection.body_text())),
        }
    }
}

/// The framework's "Failed to deserialize query string: page_size: invalid digit" without its
/// preamble.
fn unparsable(parts: &Parts, field: &str, text: &str) -> Response {
    let request_id = RequestId::of(&parts.extensions);
    let detail = text.split_once(": ").map_or(text, |(_, rest)| rest);
    JsonError(ApiError::invalid_field(field, detail), request_id).into_response()
}

/// `application/json`, or any `application/*+json`, with or without parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Reads `bytes` as one JSON document of type `T`.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = field_of(&e.path().to_string());
        refusal(&field, e.inner())
    })?;
    // Trailing characters after the document.
    de.end().map_err(|e| refusal("body", &e))?;
    Ok(value)
}

/// serde_path_to_error names the document itself `.`.
fn field_of(path: &str) -> String {
    if path.is_empty() || path == "." { "body".to_owned() } else { path.to_owned() }
}

fn refusal(field: &str, e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let description = match e.classify() {
        Category::Syntax | Category::Eof => format!("not valid JSON (line {}, column {})", e.line(), e.column()),
        Category::Io => "unreadable".to_owned(),
        Category::Data => without_value(&e.to_string(), e.line()),
    };
    ApiError::invalid_field(field, description)
}

/// serde's data errors without the value they quote and without the position (the field is named).
fn without_value(message: &str, line: usize) -> String {
    let message = match message.rfind(" at line ") {
        Some(at) if line > 0 => &message[..at],
        _ => message,
    };
    for kind in ["invalid type", "invalid value"] {
        if message.starts_with(kind) {
            return match message.rfind(", expected ") {
                Some(at) => format!("{kind}{}", &message[at..]),
                None => kind.to_owned(),
            };
        }
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        password: String,
        #[serde(default)]
        flags: Flags,
        #[serde(default)]
        scopes: Vec<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[allow(dead_code)]
    struct Flags {
        #[serde(default)]
        history: bool,
        #[serde(default)]
        limit: u32,
    }

    fn refused(json: &str) -> (String, String) {
        let e = parse::<Body>(json.as_bytes()).expect_err(json);
        assert_eq!(e.code, kit::ErrorCode::InvalidArgument, "{json}");
        assert_eq!(e.reason, "INVALID_FIELD", "{json}");
        (e.violations[0].field.clone(), e.violations[0].description.clone())
    }

    #[test]
    fn errors_name_the_field_and_never_repeat_the_value() {
        let (field, why) = refused(r#"{"password": 1234567890123}"#);
        assert_eq!((field.as_str(), why.as_str()), ("password", "invalid type, expected a string"));
        let (field, why) = refused(r#"{"password": "correct horse", "scopes": ["a", {"s3cr3t": 1}]}"#);
        assert_eq!(field, "scopes[1]");
        assert!(!why.contains("s3cr3t"), "{why}");
        let (field, why) = refused(r#"{"password": "x", "flags": {"history": "hunter2hunter2"}}"#);
        assert_eq!(field, "flags.history");
        assert!(why.starts_with("invalid type") && !why.contains("hunter2"), "{why}");
        let (field, why) = refused(r#"{"password": "x", "flags": {"limit": -5}}"#);
        assert_eq!(field, "flags.limit");
        assert!(why.starts_with("invalid value") && !why.contains('5'), "{why}");
        let (field, why) = refused(r#"{"flags": {}}"#);
        assert_eq!((field.as_str(), why.as_str()), ("body", "missing field `password`"));
        let (field, why) = refused(r#"{"password": "x", "role": "owner"}"#);
        assert_eq!(field, "role");
        assert!(why.starts_with("unknown field `role`"), "{why}");
    }

    #[test]
    fn malformed_json_and_trailing_data_are_refused_with_their_position() {
        // A syntax error names the field it interrupted.
        let (field, why) = refused(r#"{"password": "#);
        assert_eq!(field, "password");
        assert!(why.starts_with("not valid JSON (line 1"), "{why}");
        let (field, why) = refused(r#"{"password": "x"} {"#);
        assert_eq!(field, "body");
        assert!(why.starts_with("not valid JSON"), "{why}");
        let (_, why) = refused("3\u{fffd}");
        assert!(why.starts_with("invalid type") || why.starts_with("not valid JSON"), "{why}");
        assert!(parse::<Body>(br#"{"password": "x"}  "#).is_ok(), "trailing whitespace is fine");
    }

    #[test]
    fn json_content_types_are_recognised() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, v.parse().expect("header"));
            is_json(&h)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/jsonx"));
        assert!(!with("multipart/form-data; boundary=x"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
