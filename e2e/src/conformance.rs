//! Every answer the tests get from the gateway is checked against the OpenAPI document the gateway
//! serves: a JSON body of a documented operation and status must match that status's schema
//! (JSON Schema 2020-12, as OpenAPI 3.1 uses it, checked with the `jsonschema` crate). So every
//! e2e test that talks to the gateway is also a conformance test of the document, and a response
//! that drifts from its schema fails the test that received it.

use std::sync::OnceLock;

use serde_json::Value;

/// A documented operation: its method, its path template as segments, and its answers.
struct Operation {
    method: String,
    template: Vec<String>,
    responses: Value,
}

struct Document {
    doc: Value,
    operations: Vec<Operation>,
}

fn document() -> &'static Document {
    static DOCUMENT: OnceLock<Document> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let doc = gateway::openapi::document();
        let mut operations = Vec::new();
        for (path, ops) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in ops.as_object().into_iter().flatten() {
                operations.push(Operation {
                    method: method.to_uppercase(),
                    template: path.split('/').map(str::to_owned).collect(),
                    responses: op["responses"].clone(),
                });
            }
        }
        Document { doc, operations }
    })
}

/// Whether the request path's segments match a template's: `{x}` is one segment, a segment
/// `{x}:verb` one ending in `:verb`, and a last `{path}` (a secret's path) one or more.
fn matches(template: &[String], path: &[&str]) -> bool {
    match (template.split_first(), path.split_first()) {
        (None, None) => true,
        (Some((t, [])), Some(_)) if t.starts_with("{path}") => {
            let last = path.last().copied().unwrap_or_default();
            segment_matches(&t.replacen("{path}", "{x}", 1), last)
        }
        (Some((t, rest_t)), Some((p, rest_p))) => segment_matches(t, p) && matches(rest_t, rest_p),
        _ => false,
    }
}

fn segment_matches(template: &str, segment: &str) -> bool {
    match (template.starts_with('{'), template.split_once("}:")) {
        (true, Some((_, verb))) => {
            segment.strip_suffix(verb).and_then(|s| s.strip_suffix(':')).is_some_and(|s| !s.is_empty())
        }
        (true, None) => !segment.is_empty() && !segment.contains(':'),
        (false, _) => template == segment,
    }
}

/// The schema the document gives for the JSON answer of `method path` with `status`, if any.
fn schema_for(method: &str, path: &str, status: u16) -> Option<Value> {
    let doc = document();
    let path = path.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.split('/').collect();
    let op = doc.operations.iter().find(|o| o.method == method && matches(&o.template, &segments))?;
    let mut answer = op.responses.get(status.to_string())?.clone();
    if let Some(r) = answer["$ref"].as_str() {
        answer = doc.doc.pointer(r.trim_start_matches('#'))?.clone();
    }
    let mut schema = answer["content"]["application/json"]["schema"].clone();
    let object = schema.as_object_mut()?;
    // `#/components/...` references resolve against the document's components.
    object.insert("components".into(), doc.doc["components"].clone());
    Some(schema)
}

/// Panics, naming the operation, the status and what does not match, when the gateway's JSON
/// answer to `method path` differs from the schema its document gives for that status.
pub fn check(method: &http::Method, path: &str, status: http::StatusCode, headers: &http::HeaderMap, body: &Value) {
    let json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return;
    }
    let Some(schema) = schema_for(method.as_str(), path, status.as_u16()) else { return };
    let validator = jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{method} {path}: bad schema: {e}"));
    let problems: Vec<String> =
        validator.iter_errors(body).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(
        problems.is_empty(),
        "{method} {path} answered {status} with a body its OpenAPI schema does not allow:\n{}\nbody: {body}",
        problems.join("\n")
    );
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{check, matches};

    fn json_headers() -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        h
    }

    #[test]
    fn an_answer_that_matches_its_schema_passes() {
        let ok = http::StatusCode::OK;
        check(&http::Method::GET, "/healthz", ok, &json_headers(), &json!({ "status": "ok" }));
        let denied = json!({ "error": { "code": "PERMISSION_DENIED", "reason": "MISSING_PERMISSION", "message": "m", "request_id": "r" } });
        check(&http::Method::GET, "/v1/secrets/a/b", http::StatusCode::FORBIDDEN, &json_headers(), &denied);
    }

    #[test]
    #[should_panic(expected = "does not allow")]
    fn an_answer_that_drifts_from_its_schema_fails_the_test() {
        let bad = json!({ "secrets": [{ "path": 7 }], "next_page_token": "" });
        check(&http::Method::GET, "/v1/secrets?prefix=a", http::StatusCode::OK, &json_headers(), &bad);
    }

    #[test]
    #[should_panic(expected = "does not allow")]
    fn an_error_without_the_error_shape_fails_the_test() {
        check(&http::Method::GET, "/v1/whoami", http::StatusCode::UNAUTHORIZED, &json_headers(), &json!({ "oops": 1 }));
    }

    fn m(template: &str, path: &str) -> bool {
        let t: Vec<String> = template.split('/').map(str::to_owned).collect();
        matches(&t, &path.split('/').collect::<Vec<_>>())
    }

    #[test]
    fn templates_match_their_paths_only() {
        assert!(m("/v1/users/{id}", "/v1/users/abc"));
        assert!(!m("/v1/users/{id}", "/v1/users/abc/suspend"));
        assert!(m("/v1/ledger/transfers/{id}:post", "/v1/ledger/transfers/abc:post"));
        assert!(!m("/v1/ledger/transfers/{id}:post", "/v1/ledger/transfers/abc:void"));
        assert!(!m("/v1/ledger/transfers/{id}", "/v1/ledger/transfers/abc:void"));
        assert!(m("/v1/secrets/{path}", "/v1/secrets/a/b/c"));
        assert!(m("/v1/secrets/{path}:reveal", "/v1/secrets/a/b:reveal"));
        assert!(!m("/v1/secrets/{path}", "/v1/secrets/a/b:reveal"));
    }
}
