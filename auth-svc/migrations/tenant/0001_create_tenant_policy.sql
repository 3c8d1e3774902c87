-- The tenant's identity policy: lockout thresholds, token lifetimes, roles that require MFA.
CREATE TABLE tenant_policy (
    tenant_id              uuid PRIMARY KEY DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    lockout_threshold      integer NOT NULL DEFAULT 5 CHECK (lockout_threshold BETWEEN 1 AND 100),
    lockout_window_secs    integer NOT NULL DEFAULT 900 CHECK (lockout_window_secs > 0),
    access_token_ttl_secs  integer NOT NULL DEFAULT 600 CHECK (access_token_ttl_secs BETWEEN 300 AND 900),
    refresh_token_ttl_secs integer NOT NULL DEFAULT 2592000 CHECK (refresh_token_ttl_secs > 0),
    mfa_required_roles     text[] NOT NULL DEFAULT ARRAY['owner', 'admin', 'security_admin'],
    updated_at             timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE tenant_policy ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_policy FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_policy
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);

GRANT SELECT, INSERT, UPDATE ON tenant_policy TO strongroom_auth;

INSERT INTO tenant_policy DEFAULT VALUES;
