-- Authorization codes of the OAuth code flow (auth-svc api/oauth.rs): only their SHA-256 is kept;
-- one lives 60 seconds and is used once. A second use revokes the session the first one opened
-- (`issued_session`). Codes expired a day are deleted by housekeeping (with the MFA challenges),
-- an erased user's at once.
CREATE TABLE oauth_codes (
    tenant_id      uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    code_hash      bytea NOT NULL CHECK (length(code_hash) = 32),
    client_id      uuid NOT NULL,
    user_id        uuid NOT NULL,
    redirect_uri   text NOT NULL,
    scopes         text[] NOT NULL,
    nonce          text NOT NULL DEFAULT '',
    code_challenge text NOT NULL,
    amr            text[] NOT NULL,
    mfa            boolean NOT NULL,
    auth_time      timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    used_at        timestamptz,
    issued_session uuid,
    PRIMARY KEY (tenant_id, code_hash),
    FOREIGN KEY (tenant_id, client_id) REFERENCES oauth_clients (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX oauth_codes_by_expiry ON oauth_codes (tenant_id, expires_at);

ALTER TABLE oauth_codes ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_codes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON oauth_codes
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE, DELETE ON oauth_codes TO strongroom_auth;
