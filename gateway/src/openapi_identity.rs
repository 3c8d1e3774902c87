//! The identity part of the OpenAPI document: logins and sessions, the caller's own account, and
//! the administration of users, roles, groups and API keys.

use serde_json::{Value, json};

fn err(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn body(schema: Value) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": schema } } })
}

fn ok(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

fn obj(required: &[&str], properties: Value) -> Value {
    json!({ "type": "object", "required": required, "properties": properties, "additionalProperties": false })
}

fn any_object() -> Value {
    json!({ "type": "object" })
}

/// An authenticated operation on the caller's tenant.
/// `o` with the query parameters of a paged listing.
fn paged(mut o: Value, max: u32) -> Value {
    if let Some(params) = o["parameters"].as_array_mut() {
        params.push(json!({ "name": "page_size", "in": "query", "description": "0 or absent: the default page",
                            "schema": { "type": "integer", "minimum": 0, "maximum": max } }));
        params
            .push(json!({ "name": "page_token", "in": "query", "description": "next_page_token of the previous page",
                            "schema": { "type": "string" } }));
    }
    o
}

fn op(id: &str, summary: &str, request: Option<Value>, response: Value, path_params: &[&str]) -> Value {
    let mut params = vec![json!({ "$ref": "#/components/parameters/Tenant" })];
    for p in path_params {
        params.push(json!({ "name": p, "in": "path", "required": true, "schema": { "type": "string" } }));
    }
    let mut o = json!({
        "operationId": id, "summary": summary, "parameters": params,
        "responses": {
            "200": response,
            "400": err("bad input"),
            "401": err("not authenticated, or the session or key was revoked"),
            "403": err("missing permission, another tenant, or PRIVILEGE_ESCALATION"),
            "404": err("not found")
        }
    });
    if let Some(r) = request {
        o["requestBody"] = body(r);
    }
    o
}

/// A pre-session operation (no token; the tenant is in the body).
fn public(id: &str, summary: &str, request: Value, response: Value) -> Value {
    json!({
        "operationId": id, "summary": summary, "security": [], "requestBody": body(request),
        "responses": {
            "200": response,
            "400": err("bad input"),
            "401": err("INVALID_CREDENTIALS, INVALID_MFA, INVALID_REFRESH_TOKEN, REFRESH_TOKEN_REUSED (the session is ended) or SESSION_ENDED"),
            "403": err("USER_SUSPENDED (after the right password; the message carries the reason) or CROSS_SITE_REQUEST"),
            "429": err("LOGIN_LOCKED (this account from this address), ACCOUNT_UNDER_ATTACK (this account from every address) or TOO_MANY_LOGINS, with Retry-After; or RATE_LIMITED")
        }
    })
}

pub fn paths(doc: &mut Value) {
    let tokens = json!({ "$ref": "#/components/schemas/Tokens" });
    let user = json!({ "$ref": "#/components/schemas/User" });
    let group = json!({ "$ref": "#/components/schemas/Group" });
    let s = |v: &str| json!({ "type": "string", "description": v });
    let strings = json!({ "type": "array", "items": { "type": "string" } });
    let policy = obj(
        &[
            "lockout_threshold",
            "lockout_window_secs",
            "access_token_ttl_secs",
            "refresh_token_ttl_secs",
            "mfa_required_roles",
        ],
        json!({
            "lockout_threshold": { "type": "integer", "minimum": 1, "maximum": 100 },
            "lockout_window_secs": { "type": "integer", "minimum": 60, "maximum": 86400 },
            "access_token_ttl_secs": { "type": "integer", "minimum": 300, "maximum": 900 },
            "refresh_token_ttl_secs": { "type": "integer", "minimum": 3600, "maximum": 7776000 },
            "mfa_required_roles": { "type": "array", "items": { "type": "string" } },
            "privileged_permissions": { "type": "array", "items": { "type": "string" },
                "description": "holders of any of these must use a second factor, and an API key carrying one needs a recent one; absent or empty keeps the current list" }
        }),
    );
    let login_answer = json!({ "oneOf": [
        tokens.clone(),
        obj(&["mfa_required", "mfa_token"], json!({ "mfa_required": { "const": true }, "mfa_token": { "type": "string" }, "expires_in": { "type": "integer" }, "methods": strings })),
        obj(&["session_id", "csrf_token"], json!({ "session_id": { "type": "string" }, "expires_in": { "type": "integer" }, "mfa_enrollment_required": { "type": "boolean" }, "csrf_token": { "type": "string", "description": "send as X-CSRF-Token on unsafe requests (cookie sessions)" } }))
    ]});
    let p = json!({
        "/.well-known/jwks.json": { "get": {
            "operationId": "jwks", "summary": "Public keys that verify access tokens (RFC 7517)", "security": [],
            "responses": { "200": ok("JWKS", json!({ "type": "object", "properties": { "keys": { "type": "array", "items": any_object() } } })) }
        }},
        "/.well-known/openid-configuration": { "get": {
            "operationId": "openidConfiguration", "summary": "Issuer and JWKS location", "security": [],
            "responses": { "200": ok("discovery document", obj(&["issuer", "jwks_uri"], json!({ "issuer": { "type": "string" }, "jwks_uri": { "type": "string" } }))) }
        }},
        "/v1/auth/login": { "post": public("login",
            "Password login. Answers tokens, an MFA challenge, or (with `cookie: true`) sets `__Host-` session cookies",
            obj(&["tenant", "email", "password"], json!({ "tenant": s("tenant slug"), "email": { "type": "string" }, "password": { "type": "string", "writeOnly": true }, "cookie": { "type": "boolean" } })),
            ok("tokens, challenge or cookie session", login_answer.clone())) },
        "/v1/auth/mfa": { "post": public("verifyMfa", "Second step of a login: a TOTP code or a backup code",
            obj(&["mfa_token", "code"], json!({ "tenant": { "type": "string", "description": "optional: the MFA token names its tenant" }, "mfa_token": { "type": "string" }, "code": { "type": "string" }, "cookie": { "type": "boolean" } })),
            ok("tokens or cookie session", login_answer)) },
        "/v1/auth/refresh": { "post": public("refresh",
            "Single-use refresh token for new tokens; a retry within the grace window gets the same successor, a later reuse ends the session. Browsers omit refresh_token (cookie).",
            obj(&[], json!({ "tenant": { "type": "string", "description": "optional: the refresh token names its tenant" }, "refresh_token": { "type": "string" } })),
            ok("tokens", tokens.clone())) },
        "/v1/auth/logout": { "post": {
            "operationId": "logout", "summary": "Ends the session (revoked at once everywhere) and clears cookies",
            "parameters": [ { "$ref": "#/components/parameters/Tenant" } ],
            "requestBody": { "required": false, "content": { "application/json": { "schema": obj(&[], json!({ "refresh_token": { "type": "string" } })) } } },
            "responses": { "204": { "description": "ended" }, "401": err("not authenticated") }
        }},
        "/v1/auth/step-up": { "post": op("stepUp", "A fresh second factor for the current session (sensitive operations)",
            Some(obj(&["code"], json!({ "code": { "type": "string" } }))), ok("a new access token", tokens.clone()), &[]) },
        "/v1/me": { "get": op("me", "The caller's account, permissions and session", None,
            ok("me", obj(&[], json!({ "user": user, "permissions": strings, "session_id": { "type": "string" }, "amr": strings, "tenant": { "type": "string" } }))), &[]) },
        "/v1/me/export": { "get": op("exportMe", "Everything held about the caller (JSON download)", None, ok("export", any_object()), &[]) },
        "/v1/me/mfa/totp": { "post": op("enrollTotp", "Starts TOTP enrolment: the otpauth:// URI and secret, once", None,
            ok("enrolment", obj(&["otpauth_uri", "secret"], json!({ "otpauth_uri": { "type": "string" }, "secret": { "type": "string" } }))), &[]) },
        "/v1/me/mfa/totp/confirm": { "post": op("confirmTotp", "Confirms TOTP with a first code; answers ten single-use backup codes once; refresh afterwards for a full session",
            Some(obj(&["code"], json!({ "code": { "type": "string" } }))), ok("backup codes", obj(&["backup_codes"], json!({ "backup_codes": strings, "refresh_required": { "type": "boolean" } }))), &[]) },
        "/v1/me/sessions": { "get": op("listMySessions", "The caller's sessions", None, ok("sessions", any_object()), &[]) },
        "/v1/me/sessions/{id}": { "delete": op("revokeMySession", "Revokes one of the caller's sessions (another's with sessions.revoke)", None, ok("revoked", any_object()), &["id"]) },
        "/v1/users": {
            "get": paged(op("listUsers", "Users; requires users.read", None, ok("a page of users", obj(&["users"], json!({ "users": { "type": "array", "items": user }, "next_page_token": { "type": "string" } }))), &[]), 500),
            "post": op("createUser", "Creates a user (password of 12+ characters); granting roles requires roles.grant and only roles whose permissions the caller holds; requires users.write",
                Some(obj(&["email", "password"], json!({ "email": { "type": "string" }, "display_name": { "type": "string" }, "password": { "type": "string", "writeOnly": true, "minLength": 12 }, "roles": strings, "request_id": { "type": "string", "deprecated": true, "description": "ignored: send the X-Request-Id header" } }))),
                ok("the user", user.clone()), &[])
        },
        "/v1/users/{id}": {
            "get": op("getUser", "One user; requires users.read", None, ok("the user", user.clone()), &["id"]),
            "patch": op("updateUser", "Changes the display name; requires users.write", Some(obj(&["display_name"], json!({ "display_name": { "type": "string" } }))), ok("the user", user.clone()), &["id"]),
            "delete": op("deleteUser", "Removes the user's personal data and shreds their subject key; the audit trail stays verifiable; requires users.delete", None, ok("deleted", any_object()), &["id"])
        },
        "/v1/users/{id}/suspend": { "post": op("suspendUser", "Suspends (sessions end at once); the user sees the reason only after the right password; requires users.suspend",
            Some(obj(&["reason"], json!({ "reason": { "type": "string", "maxLength": 500 } }))), ok("the user", user.clone()), &["id"]) },
        "/v1/users/{id}/reactivate": { "post": op("reactivateUser", "Lifts a suspension; requires users.suspend", None, ok("the user", user), &["id"]) },
        "/v1/roles": {
            "get": paged(op("listRoles", "Built-in and custom roles by name, with their permissions; requires roles.read", None,
                ok("a page of roles", obj(&["roles", "next_page_token"], json!({ "roles": { "type": "array", "items": any_object() }, "next_page_token": { "type": "string", "description": "empty on the last page" } }))), &[]), 500),
            "post": op("createRole", "A custom role of known permissions the caller holds; requires roles.write",
                Some(obj(&["name", "permissions"], json!({ "name": { "type": "string" }, "description": { "type": "string" }, "permissions": strings }))), ok("the role", any_object()), &[])
        },
        "/v1/roles/{id}": { "delete": op("deleteRole", "Deletes a custom role; requires roles.write", None, ok("deleted", any_object()), &["id"]) },
        "/v1/roles/{id}/grant": { "post": op("grantRole", "Grants the role (by name) to a user or a group; only roles whose permissions the caller holds; requires roles.grant",
            Some(obj(&[], json!({ "user_id": { "type": "string" }, "group_id": { "type": "string" } }))), ok("granted", any_object()), &["id"]) },
        "/v1/roles/{id}/revoke": { "post": op("revokeRole", "Revokes the role (by name) from a user or a group; requires roles.grant",
            Some(obj(&[], json!({ "user_id": { "type": "string" }, "group_id": { "type": "string" } }))), ok("revoked", any_object()), &["id"]) },
        "/v1/groups": {
            "get": paged(op("listGroups", "Groups by name, with their roles and member count (members: /v1/groups/{id}/members); requires groups.read", None,
                ok("a page of groups", obj(&["groups"], json!({ "groups": { "type": "array", "items": group.clone() }, "next_page_token": { "type": "string" } }))), &[]), 500),
            "post": op("createGroup", "Creates a group; requires groups.write", Some(obj(&["name"], json!({ "name": { "type": "string" }, "description": { "type": "string" } }))), ok("the group", group.clone()), &[])
        },
        "/v1/groups/{id}": { "delete": op("deleteGroup", "Deletes a group; requires groups.write", None, ok("deleted", any_object()), &["id"]) },
        "/v1/groups/{id}/members": { "get": paged(op("listGroupMembers", "A group's member ids in id order; requires groups.read", None,
            ok("a page of member ids", obj(&["member_ids"], json!({ "member_ids": strings, "next_page_token": { "type": "string" } }))), &["id"]), 1000) },
        "/v1/groups/{id}/members/{user_id}": {
            "put": op("addGroupMember", "Adds a member (the caller must hold every permission the group confers); requires groups.write", None, ok("the group", group.clone()), &["id", "user_id"]),
            "delete": op("removeGroupMember", "Removes a member; requires groups.write", None, ok("the group", group.clone()), &["id", "user_id"])
        },
        "/v1/api-keys": {
            "get": paged(op("listApiKeys", "The caller's API keys, newest first (all of the tenant's with api_keys.read)", None,
                ok("a page of keys", obj(&["api_keys", "next_page_token"], json!({ "api_keys": { "type": "array", "items": any_object() }, "next_page_token": { "type": "string", "description": "empty on the last page" } }))), &[]), 500),
            "post": op("createApiKey", "An API key for a machine agent, scoped to a subset of the caller's permissions, 1–365 days; the key is in the answer once; requires api_keys.create",
                Some(obj(&["name", "scopes"], json!({ "name": { "type": "string" }, "scopes": strings, "ttl_days": { "type": "integer", "minimum": 1, "maximum": 365 } }))), ok("the key", any_object()), &[])
        },
        "/v1/api-keys/{id}": { "delete": op("revokeApiKey", "Revokes a key at once (another's with api_keys.revoke)", None, ok("revoked", any_object()), &["id"]) },
        "/v1/tenant/policy": {
            "get": op("getPolicy", "The tenant's identity policy", None, ok("policy", policy.clone()), &[]),
            "put": op("putPolicy", "Changes the policy; dropping a role from mfa_required_roles needs every permission of that role; requires tenant.policy.write", Some(policy.clone()), ok("policy", policy), &[])
        }
    });
    if let (Some(paths), Some(new)) = (doc["paths"].as_object_mut(), p.as_object()) {
        for (k, v) in new {
            paths.insert(k.clone(), v.clone());
        }
    }
    doc["components"]["schemas"]["Tokens"] = obj(
        &["access_token", "token_type", "expires_in", "refresh_token", "session_id"],
        json!({
            "access_token": { "type": "string", "description": "JWT (typ at+jwt, EdDSA), 5–15 minutes" },
            "token_type": { "const": "Bearer" },
            "expires_in": { "type": "integer" },
            "refresh_token": { "type": "string", "description": "opaque, single use" },
            "refresh_expires_in": { "type": "integer" },
            "session_id": { "type": "string" },
            "mfa_enrollment_required": { "type": "boolean", "description": "the session may only enrol TOTP (privileged role without a second factor)" }
        }),
    );
    doc["components"]["schemas"]["User"] = json!({ "type": "object", "properties": {
        "id": { "type": "string" }, "email": { "type": "string" }, "display_name": { "type": "string" },
        "status": { "enum": ["active", "suspended", "deleted"] }, "suspension_reason": { "type": ["string", "null"] },
        "mfa_enabled": { "type": "boolean" }, "roles": { "type": "array", "items": { "type": "string" } },
        "created_at": { "type": "string", "format": "date-time" }
    }});
    doc["components"]["schemas"]["Group"] = json!({ "type": "object", "properties": {
        "id": { "type": "string" }, "name": { "type": "string" }, "description": { "type": "string" },
        "member_count": { "type": "integer", "minimum": 0 }, "roles": { "type": "array", "items": { "type": "string" } }
    }});
    // The refusals of state: 409 for a name or email taken, 412 for an operation the current
    // state does not allow (auth-svc's FAILED_PRECONDITION reasons).
    let refusals: [(&str, &str, &str, &str); 15] = [
        ("post", "/v1/users", "409", "EMAIL_TAKEN"),
        ("post", "/v1/roles", "409", "ROLE_EXISTS"),
        ("post", "/v1/groups", "409", "GROUP_EXISTS"),
        ("post", "/v1/users/{id}/suspend", "412", "CANNOT_SUSPEND_SELF"),
        ("post", "/v1/users/{id}/reactivate", "412", "NOT_SUSPENDED"),
        ("delete", "/v1/users/{id}", "412", "CANNOT_DELETE_SELF"),
        ("delete", "/v1/roles/{id}", "412", "BUILTIN_ROLE"),
        ("post", "/v1/me/mfa/totp", "412", "TOTP_ALREADY_ENROLLED"),
        ("post", "/v1/me/mfa/totp/confirm", "412", "NO_PENDING_TOTP (start enrolment first)"),
        ("post", "/v1/auth/logout", "412", "NO_SESSION (an API key has no session to end)"),
        ("post", "/v1/auth/step-up", "412", "NO_SESSION (an API key has no session to step up)"),
        (
            "post",
            "/v1/auth/step-up",
            "429",
            "MFA_LOCKED: too many wrong second-factor codes on this account (login challenges and step-ups count together), with Retry-After",
        ),
        (
            "post",
            "/v1/auth/mfa",
            "429",
            "MFA_LOCKED: too many wrong second-factor codes on this account, with Retry-After; or RATE_LIMITED",
        ),
        (
            "post",
            "/v1/api-keys",
            "412",
            "STEP_UP_REQUIRED: a key carrying a privileged or step-up permission needs a second factor within 10 minutes",
        ),
        (
            "post",
            "/v1/auth/refresh",
            "401",
            "INVALID_REFRESH_TOKEN, REFRESH_TOKEN_REUSED, SESSION_ENDED, or MFA_REQUIRED (the user became privileged without a second factor: the session is ended, log in again)",
        ),
    ];
    for (method, path, status, reason) in refusals {
        doc["paths"][path][method]["responses"][status] = err(reason);
    }
    // Calls whose purpose is a revocation say when it is saved but not yet in force everywhere.
    for (method, path) in
        [("delete", "/v1/me/sessions/{id}"), ("delete", "/v1/api-keys/{id}"), ("post", "/v1/users/{id}/suspend")]
    {
        doc["paths"][path][method]["responses"]["503"] = err(
            "REVOCATION_PENDING: saved, but the revocation list (Redis) did not take it yet; it is in force within a second of Redis answering, and repeating the call is safe",
        );
    }
}
