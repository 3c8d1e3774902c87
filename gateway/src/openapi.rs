//! The OpenAPI 3.1 document served at `/openapi.json`. It grows with each capability; a test
//! checks that every documented operation is routed and that no route is undocumented.

use serde_json::{Value, json};

/// `(method, path)` of every operation the gateway serves.
pub const OPERATIONS: [(&str, &str); 4] =
    [("get", "/healthz"), ("get", "/readyz"), ("get", "/openapi.json"), ("get", "/v1/whoami")];

fn error_response(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

pub fn document() -> Value {
    json!({
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
            }}
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT (at+jwt, EdDSA or ES256)" } },
            "parameters": {
                "Tenant": { "name": "X-Strongroom-Tenant", "in": "header", "required": true, "description": "Tenant slug", "schema": { "type": "string", "pattern": "^[a-z][a-z0-9_]{2,39}$" } }
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
    })
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
            .collect();
        documented.sort();
        let mut listed: Vec<(String, String)> =
            OPERATIONS.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
        listed.sort();
        assert_eq!(documented, listed);
        assert_eq!(doc["openapi"], "3.1.0");
    }
}
