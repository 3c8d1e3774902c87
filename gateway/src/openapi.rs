//! The OpenAPI 3.1 document served at `/openapi.json`. It grows with each capability; a test
//! checks that every documented operation is routed and that no route is undocumented.

use serde_json::{Value, json};

/// `(method, path)` of every operation the gateway serves.
pub const OPERATIONS: [(&str, &str); 27] = [
    ("get", "/v1/audit/events"),
    ("get", "/v1/audit/events/{seq}"),
    ("get", "/v1/audit/checkpoint"),
    ("get", "/v1/audit/proofs/consistency"),
    ("get", "/v1/audit/verifier-key"),
    ("get", "/v1/audit/export"),
    ("get", "/v1/audit/stream"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/openapi.json"),
    ("get", "/v1/whoami"),
    ("get", "/v1/secrets"),
    ("get", "/v1/secrets/{path}"),
    ("put", "/v1/secrets/{path}"),
    ("delete", "/v1/secrets/{path}"),
    ("post", "/v1/secrets/{path}:reveal"),
    ("get", "/v1/ledger/ledgers"),
    ("post", "/v1/ledger/ledgers"),
    ("post", "/v1/ledger/accounts"),
    ("get", "/v1/ledger/accounts/{id}"),
    ("get", "/v1/ledger/accounts/{id}/balances"),
    ("get", "/v1/ledger/accounts/{id}/transfers"),
    ("post", "/v1/ledger/transfers"),
    ("get", "/v1/ledger/transfers/{id}"),
    ("post", "/v1/ledger/transfers/{id}:post"),
    ("post", "/v1/ledger/transfers/{id}:void"),
    ("get", "/v1/ledger/receipts/verify"),
];

/// Every operation of the document: the ones above and the identity ones.
pub fn operations() -> Vec<(&'static str, &'static str)> {
    OPERATIONS.iter().chain(crate::openapi_identity::OPERATIONS.iter()).copied().collect()
}

/// The audit export and live stream's own 429 (`crate::streams`).
const TOO_MANY_STREAMS: &str = "TOO_MANY_STREAMS: the caller (or the gateway) has as many exports and streams open as allowed (Retry-After); or RATE_LIMITED";

fn error_response(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

pub fn document() -> Value {
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Strongroom gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "HTTP/JSON API of Strongroom. Errors always have the shape of `Error`. Every response carries `x-request-id`; send your own to correlate.",
        },
        "paths": {
            "/healthz": { "get": {
                "operationId": "healthz", "summary": "Liveness of the gateway process", "security": [],
                "responses": { "200": { "description": "alive", "content": { "application/json": { "schema": { "type": "object", "properties": { "status": { "const": "ok" } } } } } } }
            }},
            "/readyz": { "get": {
                "operationId": "readyz", "summary": "Readiness: every upstream service reports SERVING over mTLS", "security": [],
                "responses": {
                    "200": { "description": "ready", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Readiness" } } } },
                    "503": { "description": "an upstream is not serving", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Readiness" } } } }
                }
            }},
            "/openapi.json": { "get": {
                "operationId": "openapi", "summary": "This document", "security": [],
                "responses": { "200": { "description": "OpenAPI 3.1 document" } }
            }},
            "/v1/whoami": { "get": {
                "operationId": "whoami", "summary": "The verified principal of the bearer token",
                "parameters": [ { "$ref": "#/components/parameters/Tenant" } ],
                "responses": {
                    "200": { "description": "the principal", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Principal" } } } },
                    "400": error_response("missing or malformed tenant"),
                    "401": error_response("missing, malformed, expired or forged token"),
                    "403": error_response("token of another tenant"),
                    "404": error_response("unknown tenant")
                }
            }},
            "/v1/audit/events": { "get": {
                "operationId": "listAuditEvents", "summary": "Audit entries in sequence order; requires audit.events.read",
                "parameters": [
                    { "$ref": "#/components/parameters/Tenant" },
                    { "name": "from", "in": "query", "schema": { "type": "integer", "minimum": 0 } },
                    { "name": "page_size", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000 } },
                    { "name": "start", "in": "query", "description": "occurred_at ≥ start", "schema": { "type": "string", "format": "date-time" } },
                    { "name": "end", "in": "query", "description": "occurred_at < end", "schema": { "type": "string", "format": "date-time" } },
                    { "name": "actor", "in": "query", "schema": { "type": "string" } },
                    { "name": "action", "in": "query", "schema": { "type": "string" } },
                    { "name": "resource", "in": "query", "schema": { "type": "string" } },
                    { "name": "outcome", "in": "query", "schema": { "enum": ["success", "failure", "denied"] } },
                    { "name": "request_id", "in": "query", "schema": { "type": "string" } }
                ],
                "responses": {
                    "200": { "description": "a page", "content": { "application/json": { "schema": { "type": "object", "properties": {
                        "events": { "type": "array", "items": { "$ref": "#/components/schemas/AuditEntry" } },
                        "next_from": { "type": ["integer", "null"] } } } } } },
                    "401": error_response("not authenticated"), "403": error_response("missing permission or other tenant")
                }
            }},
            "/v1/audit/events/{seq}": { "get": {
                "operationId": "getAuditEvent", "summary": "One entry with its inclusion proof in the latest checkpoint",
                "parameters": [ { "$ref": "#/components/parameters/Tenant" }, { "name": "seq", "in": "path", "required": true, "schema": { "type": "integer", "minimum": 0 } } ],
                "responses": {
                    "200": { "description": "the entry", "content": { "application/json": { "schema": { "allOf": [ { "$ref": "#/components/schemas/AuditEntry" }, { "type": "object", "properties": {
                        "inclusion_proof": { "$ref": "#/components/schemas/Proof" }, "checkpoint": { "$ref": "#/components/schemas/Checkpoint" } } } ] } } } },
                    "401": error_response("not authenticated"), "403": error_response("missing permission"), "404": error_response("no such entry in the latest checkpoint"),
                    "412": error_response("no checkpoint yet")
                }
            }},
            "/v1/audit/checkpoint": { "get": {
                "operationId": "getAuditCheckpoint", "summary": "The latest signed checkpoint (C2SP signed note)",
                "parameters": [ { "$ref": "#/components/parameters/Tenant" } ],
                "responses": { "200": { "description": "checkpoint", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Checkpoint" } } } },
                    "401": error_response("not authenticated"), "403": error_response("missing permission"), "412": error_response("no checkpoint yet") }
            }},
            "/v1/audit/proofs/consistency": { "get": {
                "operationId": "getAuditConsistencyProof", "summary": "RFC 9162 consistency proof between two tree sizes",
                "parameters": [ { "$ref": "#/components/parameters/Tenant" },
                    { "name": "from", "in": "query", "required": true, "schema": { "type": "integer", "minimum": 1 } },
                    { "name": "to", "in": "query", "required": true, "schema": { "type": "integer", "minimum": 1 } } ],
                "responses": { "200": { "description": "proof", "content": { "application/json": { "schema": { "type": "object", "properties": {
                        "from_size": { "type": "integer" }, "tree_size": { "type": "integer" }, "hashes": { "type": "array", "items": { "type": "string", "contentEncoding": "base64" } } } } } } },
                    "400": error_response("bad sizes"), "401": error_response("not authenticated"), "403": error_response("missing permission") }
            }},
            "/v1/audit/verifier-key": { "get": {
                "operationId": "getAuditVerifierKey", "summary": "The C2SP verifier key of the tenant's checkpoints",
                "parameters": [ { "$ref": "#/components/parameters/Tenant" } ],
                "responses": { "200": { "description": "key", "content": { "application/json": { "schema": { "type": "object", "properties": { "verifier_key": { "type": "string" } } } } } },
                    "401": error_response("not authenticated"), "403": error_response("missing permission") }
            }},
            "/v1/audit/export": { "get": {
                "operationId": "exportAudit", "summary": "Entries [from, to) as JSON Lines, then the checkpoint line (the format `strongroom audit verify` reads)",
                "parameters": [ { "$ref": "#/components/parameters/Tenant" },
                    { "name": "from", "in": "query", "schema": { "type": "integer", "minimum": 0 } },
                    { "name": "to", "in": "query", "description": "exclusive; default the latest checkpoint's size", "schema": { "type": "integer", "minimum": 1 } } ],
                "responses": { "200": { "description": "JSON Lines", "content": { "application/jsonl": { "schema": { "type": "string" } } } },
                    "400": error_response("bad range"), "401": error_response("not authenticated"), "403": error_response("missing permission"), "412": error_response("no checkpoint yet"),
                    "429": error_response(TOO_MANY_STREAMS) }
            }},
            "/v1/audit/stream": { "get": {
                "operationId": "streamAudit", "summary": "Live Server-Sent Events: `entry` events (id = seq) and `checkpoint` events; resumes after `Last-Event-ID`",
                "parameters": [ { "$ref": "#/components/parameters/Tenant" },
                    { "name": "from", "in": "query", "schema": { "type": "integer", "minimum": 0 } },
                    { "name": "Last-Event-ID", "in": "header", "schema": { "type": "string" } } ],
                "responses": { "200": { "description": "event stream", "content": { "text/event-stream": { "schema": { "type": "string" } } } },
                    "401": error_response("not authenticated"), "403": error_response("missing permission"),
                    "429": error_response(TOO_MANY_STREAMS) }
            }},
            "/v1/secrets": { "get": {
                "operationId": "listSecrets", "summary": "List secrets (metadata) by path prefix, in byte order of their paths; requires vault.secrets.read",
                "parameters": [
                    { "$ref": "#/components/parameters/Tenant" },
                    { "name": "prefix", "in": "query", "schema": { "type": "string" } },
                    { "name": "page_size", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000 } },
                    { "name": "page_token", "in": "query", "schema": { "type": "string" } }
                ],
                "responses": {
                    "200": { "description": "a page", "content": { "application/json": { "schema": { "type": "object", "properties": {
                        "secrets": { "type": "array", "items": { "$ref": "#/components/schemas/SecretMetadata" } },
                        "next_page_token": { "type": "string" } } } } } },
                    "400": error_response("bad prefix, page size or token"), "401": error_response("not authenticated"), "403": error_response("missing permission or other tenant")
                }
            }},
            "/v1/secrets/{path}": {
                "parameters": [ { "$ref": "#/components/parameters/Tenant" }, { "$ref": "#/components/parameters/SecretPath" } ],
                "get": {
                    "operationId": "getSecret", "summary": "A secret's metadata (never its value); requires vault.secrets.read",
                    "responses": { "200": { "description": "metadata", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/SecretMetadata" } } } },
                        "401": error_response("not authenticated"), "403": error_response("missing permission"), "404": error_response("no such secret") }
                },
                "put": {
                    "operationId": "putSecret", "summary": "Write a new version; requires vault.secrets.write",
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/PutSecret" } } } },
                    "responses": {
                        "200": { "description": "written", "content": { "application/json": { "schema": { "type": "object", "properties": {
                            "version": { "type": "integer" }, "secret": { "$ref": "#/components/schemas/SecretMetadata" } } } } } },
                        "400": error_response("bad path, value, labels or timestamps"), "401": error_response("not authenticated"),
                        "403": error_response("missing permission"), "409": error_response("VERSION_CONFLICT or REQUEST_ID_REUSED"),
                        "413": error_response("body too large")
                    }
                },
                "delete": {
                    "operationId": "deleteSecret", "summary": "Soft-delete; requires vault.secrets.write",
                    "responses": { "200": { "description": "deleted", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/SecretMetadata" } } } },
                        "401": error_response("not authenticated"), "403": error_response("missing permission"), "404": error_response("no such secret") }
                }
            },
            "/v1/secrets/{path}:reveal": {
                "parameters": [ { "$ref": "#/components/parameters/Tenant" }, { "$ref": "#/components/parameters/SecretPath" } ],
                "post": {
                    "operationId": "revealSecret", "summary": "The plaintext of a version; requires vault.secrets.reveal and a reason. Audited.",
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["reason"], "additionalProperties": false, "properties": {
                        "reason": { "type": "string", "minLength": 1, "maxLength": 500 }, "version": { "type": "integer", "minimum": 0, "description": "0: current" } } } } } },
                    "responses": {
                        "200": { "description": "the value", "content": { "application/json": { "schema": { "type": "object", "properties": {
                            "path": { "type": "string" }, "version": { "type": "integer" },
                            "value": { "type": ["string", "null"], "description": "UTF-8 text, null when binary" }, "value_base64": { "type": "string" } } } } } },
                        "400": error_response("missing reason"), "401": error_response("not authenticated"), "403": error_response("missing permission"),
                        "404": error_response("no such secret or version"), "412": error_response("SECRET_VERSION_DESTROYED or KEY_DESTROYED")
                    }
                }
            }
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT (at+jwt, EdDSA or ES256)" } },
            "parameters": {
                "Tenant": { "name": "X-Strongroom-Tenant", "in": "header", "required": false, "description": "Tenant slug. Needed only when the credential does not name its tenant (access tokens carry it in their `tenant` claim, API keys resolve to theirs); when given with such a credential, it must name the same tenant (403 TENANT_MISMATCH).", "schema": { "type": "string", "pattern": "^[a-z][a-z0-9_]{2,39}$" } },
                "SecretPath": { "name": "path", "in": "path", "required": true, "description": "segments of [A-Za-z0-9._-] joined by '/', ≤ 256 characters", "schema": { "type": "string" } }
            },
            "schemas": {
                "Error": {
                    "type": "object", "required": ["error"],
                    "properties": { "error": { "type": "object", "required": ["code", "reason", "message", "request_id"], "properties": {
                        "code": { "type": "string", "description": "canonical gRPC code name, e.g. PERMISSION_DENIED" },
                        "reason": { "type": "string", "description": "stable UPPER_SNAKE_CASE reason, e.g. TENANT_MISMATCH" },
                        "message": { "type": "string" },
                        "request_id": { "type": "string" }
                    } } }
                },
                "Readiness": {
                    "type": "object", "required": ["status", "upstreams"],
                    "properties": {
                        "status": { "enum": ["ready", "not_ready"] },
                        "upstreams": { "type": "object", "additionalProperties": { "enum": ["serving", "not_serving", "unreachable"] } },
                        "redis": { "enum": ["ok", "unavailable"] }
                    }
                },
                "AuditEntry": {
                    "type": "object",
                    "properties": {
                        "seq": { "type": "integer" },
                        "fields": { "type": "object", "description": "the entry's fields (event_id, occurred_at, service, actor, action, resource, outcome, request_id, trace_id, details)" },
                        "canonical": { "type": "string", "contentEncoding": "base64", "description": "RFC 8785 bytes; the Merkle leaf is SHA-256(0x00 ‖ canonical)" },
                        "leaf_hash": { "type": "string", "contentEncoding": "base64" }, "chain_hash": { "type": "string", "contentEncoding": "base64" }
                    }
                },
                "Proof": { "type": "object", "properties": { "leaf_index": { "type": "integer" }, "tree_size": { "type": "integer" },
                    "hashes": { "type": "array", "items": { "type": "string", "contentEncoding": "base64" } } } },
                "Checkpoint": { "type": "object", "properties": { "tree_size": { "type": "integer" }, "root_hash": { "type": "string", "contentEncoding": "base64" },
                    "signed_note": { "type": "string", "description": "C2SP tlog-checkpoint signed note" } } },
                "SecretMetadata": {
                    "type": "object",
                    "properties": {
                        "path": { "type": "string" }, "current_version": { "type": "integer" },
                        "labels": { "type": "object", "additionalProperties": { "type": "string" } },
                        "rotate_after": { "type": ["string", "null"], "format": "date-time" }, "expires_at": { "type": ["string", "null"], "format": "date-time" },
                        "created_at": { "type": "string", "format": "date-time" }, "updated_at": { "type": "string", "format": "date-time" },
                        "deleted_at": { "type": ["string", "null"], "format": "date-time" }
                    }
                },
                "PutSecret": {
                    "type": "object", "additionalProperties": false,
                    "description": "exactly one of value and value_base64",
                    "properties": {
                        "value": { "type": "string" }, "value_base64": { "type": "string", "contentEncoding": "base64" },
                        "labels": { "type": "object", "additionalProperties": { "type": "string" } },
                        "rotate_after": { "type": "string", "format": "date-time" }, "expires_at": { "type": "string", "format": "date-time" },
                        "expected_version": { "type": "integer", "minimum": 0, "description": "check-and-set; 0: must not exist" },
                        "request_id": { "type": "string", "format": "uuid", "description": "a repeat returns the original response" }
                    }
                },
                "Principal": {
                    "type": "object", "required": ["tenant_id", "subject"],
                    "properties": {
                        "tenant_id": { "type": "string", "format": "uuid" },
                        "subject": { "type": "string" },
                        "session_id": { "type": "string" },
                        "permissions": { "type": "array", "items": { "type": "string" } },
                        "amr": { "type": "array", "items": { "type": "string" } }
                    }
                }
            }
        },
        "security": [ { "bearer": [] } ]
    });
    crate::openapi_identity::paths(&mut doc);
    crate::ledger::document(&mut doc);
    browser_and_rate_limits(&mut doc);
    bad_input(&mut doc);
    doc
}

/// The refusals of input that every operation with input shares (`crate::input`): 400 for a
/// header, path parameter, query string or body that does not parse or validate; and for a JSON
/// body, 413 over the body limit and 415 without a JSON content type (ledger routes read their
/// body whatever its declared type, so they have no 415).
fn bad_input(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object_mut() else { return };
    for (path, ops) in paths.iter_mut() {
        let Some(ops) = ops.as_object_mut() else { continue };
        for (_, op) in ops.iter_mut().filter(|(m, _)| m.as_str() != "parameters") {
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
            for (method, op) in ops.iter_mut().filter(|(m, _)| m.as_str() != "parameters") {
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

    #[test]
    fn every_operation_is_documented_and_nothing_else() {
        let doc = document();
        let paths = doc["paths"].as_object().expect("paths");
        let mut documented: Vec<(String, String)> = paths
            .iter()
            .flat_map(|(p, ops)| ops.as_object().into_iter().flatten().map(move |(m, _)| (m.clone(), p.clone())))
            .filter(|(m, _)| m != "parameters")
            .collect();
        documented.sort();
        let mut listed: Vec<(String, String)> =
            operations().iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
        listed.sort();
        assert_eq!(documented, listed);
        assert_eq!(doc["openapi"], "3.1.0");
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
