//! The OpenAPI 3.1 document served at `/openapi.json`, generated from the handlers' own types:
//! each handler's `#[utoipa::path]` (method, path, parameters, answers) and the `ToSchema` of its
//! request and response types. The router registers a route together with its documentation
//! (`crate::routes::api`, utoipa-axum), so a route cannot be served undocumented; the e2e test
//! `gateway_http::the_openapi_document_matches_the_routes` checks that every documented operation
//! is routed. What every operation shares is said once here: the tenant header, the refusals of
//! authentication, of input, of the rate limits, and cookie sessions with their CSRF defence.

use std::sync::OnceLock;

use serde_json::{Value, json};
use utoipa::{OpenApi, ToSchema};

/// The error body of every refusal, as `kit::ApiError::to_json` writes it.
#[derive(ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub error: ErrorFields,
}

/// What an error says.
#[derive(ToSchema)]
pub struct ErrorFields {
    /// Canonical gRPC code name, e.g. PERMISSION_DENIED.
    pub code: String,
    /// Stable UPPER_SNAKE_CASE reason, e.g. TENANT_MISMATCH.
    pub reason: String,
    pub message: String,
    pub request_id: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Strongroom gateway",
        description = "HTTP/JSON API of Strongroom. Errors always have the shape of `Error`. Every response carries `x-request-id`; send your own to correlate."
    ),
    paths(
        crate::secrets::get,
        crate::secrets::put,
        crate::secrets::delete,
        crate::secrets::post,
        crate::ledger::resolve,
        crate::ledger::void,
    ),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// The operations reached without a credential (`security: []`), and with no tenant header.
pub const PUBLIC: [&str; 19] = [
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/.well-known/jwks.json",
    "/.well-known/openid-configuration",
    "/v1/auth/login",
    "/v1/auth/mfa",
    "/v1/auth/passkey/options",
    "/v1/auth/passkey",
    "/v1/auth/mfa/passkey/options",
    "/v1/auth/mfa/passkey",
    "/v1/auth/refresh",
    "/v1/auth/appeal",
    "/v1/auth/appeal/status",
    "/v1/auth/appeal/answer",
    "/t/{tenant}/oauth/token",
    "/t/{tenant}/oauth/revoke",
    "/t/{tenant}/oauth/introspect",
    "/t/{tenant}/.well-known/openid-configuration",
];

/// The document (built once).
pub fn document() -> Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(build).clone()
}

fn build() -> Value {
    let (_, routed) = crate::routes::api().split_for_parts();
    let mut spec = ApiDoc::openapi();
    spec.merge(routed);
    spec.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut doc = serde_json::to_value(&spec).unwrap_or_else(|_| json!({}));
    doc["openapi"] = json!("3.1.0");
    authenticated(&mut doc);
    browser_and_rate_limits(&mut doc);
    bad_input(&mut doc);
    doc
}

/// `(method, path)` of every operation of the document.
pub fn operations() -> Vec<(String, String)> {
    let doc = document();
    let mut ops: Vec<(String, String)> = doc["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(path, ops)| {
            ops.as_object().into_iter().flatten().filter(|(m, _)| is_method(m)).map(|(m, _)| (m.clone(), path.clone()))
        })
        .collect();
    ops.sort();
    ops
}

fn is_method(key: &str) -> bool {
    matches!(key, "get" | "put" | "post" | "delete" | "patch" | "head" | "options")
}

/// The audit export and live stream's own 429 (`crate::streams`).
pub const TOO_MANY_STREAMS: &str = "TOO_MANY_STREAMS: the caller (or the gateway) has as many exports and streams open as allowed (Retry-After); or RATE_LIMITED";

fn error_response(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

/// Every operation but the public ones takes a credential, resolves the tenant from it or from
/// `X-Strongroom-Tenant`, and may be refused as unauthenticated or without the permission.
fn authenticated(doc: &mut Value) {
    doc["security"] = json!([ { "bearer": [] } ]);
    doc["components"]["securitySchemes"]["bearer"] =
        json!({ "type": "http", "scheme": "bearer", "bearerFormat": "JWT (at+jwt, EdDSA or ES256)" });
    doc["components"]["parameters"]["Tenant"] = json!({
        "name": "X-Strongroom-Tenant", "in": "header", "required": false,
        "description": "Tenant slug. Needed only when the credential does not name its tenant (access tokens carry it in their `tenant` claim, API keys resolve to theirs); when given with such a credential, it must name the same tenant (403 TENANT_MISMATCH).",
        "schema": { "type": "string", "pattern": "^[a-z][a-z0-9_]{2,39}$" }
    });
    let tenant = json!({ "$ref": "#/components/parameters/Tenant" });
    let Some(paths) = doc["paths"].as_object_mut() else { return };
    for (path, ops) in paths.iter_mut() {
        let Some(ops) = ops.as_object_mut() else { continue };
        let shared_tenant = ops.get("parameters").and_then(Value::as_array).is_some_and(|p| p.contains(&tenant));
        for (_, op) in ops.iter_mut().filter(|(m, _)| is_method(m)) {
            // Grouped by area: `/v1/<area>/…`; the probes, discovery and the document as `service`.
            let area = path.strip_prefix("/v1/").and_then(|p| p.split('/').next()).unwrap_or("service");
            op["tags"] = json!([area.trim_end_matches(":reveal")]);
            if PUBLIC.contains(&path.as_str()) {
                op["security"] = json!([]);
                continue;
            }
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            if !shared_tenant && !params.contains(&tenant) {
                op["parameters"] = Value::Array([vec![tenant.clone()], params].concat());
            }
            let responses = &mut op["responses"];
            if responses.get("401").is_none() {
                responses["401"] =
                    error_response("not authenticated: no, a malformed, an expired or a revoked credential");
            }
            if responses.get("403").is_none() {
                responses["403"] =
                    error_response("MISSING_PERMISSION, or TENANT_MISMATCH (a credential of another tenant)");
            }
        }
    }
}

/// The refusals of input that every operation with input shares (`crate::input`): 400 for a
/// header, path parameter, query string or body that does not parse or validate; and for a JSON
/// body, 413 over the body limit and 415 without a JSON content type (ledger routes read their
/// body whatever its declared type, so they have no 415).
fn bad_input(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object_mut() else { return };
    for (path, ops) in paths.iter_mut() {
        let Some(ops) = ops.as_object_mut() else { continue };
        for (_, op) in ops.iter_mut().filter(|(m, _)| is_method(m)) {
            let has_body = op.get("requestBody").is_some();
            let has_params = op.get("parameters").and_then(Value::as_array).is_some_and(|p| !p.is_empty());
            if !(has_body || has_params) {
                continue;
            }
            if op["responses"].get("400").is_none() {
                op["responses"]["400"] =
                    error_response("INVALID_FIELD (the field is named) or another INVALID_ARGUMENT");
            }
            if has_body {
                if op["responses"].get("413").is_none() {
                    op["responses"]["413"] = error_response("BODY_TOO_LARGE");
                }
                if !path.starts_with("/v1/ledger/") {
                    op["responses"]["415"] =
                        error_response("UNSUPPORTED_MEDIA_TYPE: send Content-Type: application/json");
                }
            }
        }
    }
}

/// What every operation shares and the document says once here, so it stays true as routes are
/// added: the 429 of the rate limits (except on the probes), and cookie sessions as an alternative
/// to bearer tokens, whose unsafe methods also need the CSRF token.
fn browser_and_rate_limits(doc: &mut Value) {
    let csrf_refusal = "CSRF_TOKEN_INVALID or CROSS_SITE_REQUEST (cookie sessions)";
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, ops) in paths.iter_mut() {
            let Some(ops) = ops.as_object_mut() else { continue };
            for (method, op) in ops.iter_mut().filter(|(m, _)| is_method(m)) {
                let public = op.get("security").is_some_and(|s| s.as_array().is_some_and(|a| a.is_empty()));
                // An operation with a 429 of its own names the rate limits in it.
                if !crate::ratelimit::EXEMPT_ROUTES.contains(&path.as_str()) && op["responses"].get("429").is_none() {
                    op["responses"]["429"] = json!({ "$ref": "#/components/responses/RateLimited" });
                }
                if !public && !matches!(method.as_str(), "get" | "head" | "options") {
                    op["security"] = json!([ { "bearer": [] }, { "cookie": [], "csrf": [] } ]);
                    match op["responses"]["403"]["description"].as_str() {
                        Some(d) => op["responses"]["403"] = error_response(&format!("{d}; {csrf_refusal}")),
                        None => op["responses"]["403"] = error_response(csrf_refusal),
                    }
                }
            }
        }
    }
    doc["security"] = json!([ { "bearer": [] }, { "cookie": [] } ]);
    doc["components"]["securitySchemes"]["cookie"] = json!({
        "type": "apiKey", "in": "cookie", "name": crate::browser::SESSION_COOKIE,
        "description": "Browser session: the access token in a `__Host-` cookie (Secure, HttpOnly, SameSite=Strict), set by a login with `\"cookie\": true`. Used only when no Authorization header is sent."
    });
    doc["components"]["securitySchemes"]["csrf"] = json!({
        "type": "apiKey", "in": "header", "name": "X-CSRF-Token",
        "description": "With a cookie session, POST/PUT/PATCH/DELETE must send the value of the `__Host-strongroom_csrf` cookie (also returned as `csrf_token` at login) in this header, and come from the page's own origin (`Sec-Fetch-Site: same-origin`, or an allowed `Origin`); else 403 CSRF_TOKEN_INVALID or CROSS_SITE_REQUEST."
    });
    doc["components"]["responses"]["RateLimited"] = json!({
        "description": "RATE_LIMITED: too many requests from this client IP or principal for this route class",
        "headers": { "Retry-After": { "description": "seconds to wait", "schema": { "type": "integer", "minimum": 1 } } },
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` of the document names something the document holds.
    fn refs(v: &Value, found: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    found.push(r.clone());
                }
                m.values().for_each(|v| refs(v, found));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, found)),
            _ => {}
        }
    }

    #[test]
    fn every_operation_is_complete_and_every_reference_resolves() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let ops = operations();
        assert!(ops.len() >= 63, "{} operations", ops.len());
        let mut ids = std::collections::BTreeSet::new();
        for (method, path) in &ops {
            let op = &doc["paths"][path][method];
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(
                !id.is_empty() && ids.insert(id.to_owned()),
                "{method} {path}: operationId {id:?} missing or twice"
            );
            let answers = op["responses"].as_object().expect("responses");
            assert!(answers.keys().any(|s| s.starts_with('2')), "{method} {path}: no success answer");
            if !PUBLIC.contains(&path.as_str()) {
                assert!(answers.contains_key("401") && answers.contains_key("403"), "{method} {path}");
            }
        }
        let mut found = Vec::new();
        refs(&doc, &mut found);
        for r in found {
            assert!(doc.pointer(r.trim_start_matches('#')).is_some(), "unresolved {r}");
        }
    }

    #[test]
    fn rate_limits_and_cookie_sessions_are_documented() {
        let doc = document();
        assert_eq!(
            doc["paths"]["/v1/secrets"]["get"]["responses"]["429"]["$ref"],
            "#/components/responses/RateLimited"
        );
        assert!(doc["paths"]["/healthz"]["get"]["responses"].get("429").is_none());
        for stream in ["/v1/audit/export", "/v1/audit/stream"] {
            let refusal = doc["paths"][stream]["get"]["responses"]["429"]["description"].as_str().unwrap_or_default();
            assert!(refusal.starts_with("TOO_MANY_STREAMS"), "{stream}: {refusal}");
        }
        assert!(doc["paths"]["/v1/audit/checkpoint"]["get"]["responses"]["429"].get("$ref").is_some());
        let put = &doc["paths"]["/v1/secrets/{path}"]["put"];
        assert_eq!(put["security"][1]["csrf"], json!([]));
        assert!(put["responses"]["403"]["description"].as_str().is_some_and(|d| d.contains("CSRF_TOKEN_INVALID")));
        assert_eq!(doc["components"]["securitySchemes"]["cookie"]["name"], "__Host-strongroom_session");
        assert!(doc["components"]["responses"]["RateLimited"]["headers"]["Retry-After"].is_object());
    }
}
