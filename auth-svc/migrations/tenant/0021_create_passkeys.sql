-- Passkeys (WebAuthn, auth-svc api/passkeys.rs, docs/identity.md). `passkey` is webauthn-rs's
-- stored credential (public key, signature counter, backup flags): nothing secret, but the
-- user's, so an erased user's rows are deleted with the rest of their factors. A credential id is
-- unique in the tenant.
CREATE TABLE passkeys (
    tenant_id       uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    id              uuid NOT NULL,
    user_id         uuid NOT NULL,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    credential_id   bytea NOT NULL,
    passkey         jsonb NOT NULL,
    backup_eligible boolean NOT NULL,
    backed_up       boolean NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_used_at    timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, credential_id)
);
CREATE INDEX passkeys_by_user ON passkeys (tenant_id, user_id);

-- A WebAuthn ceremony between its two calls: webauthn-rs's state (the challenge), whose it is and
-- what for. Taken (deleted) by the second call; five minutes to live.
CREATE TABLE webauthn_ceremonies (
    tenant_id  uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    id         uuid NOT NULL,
    purpose    text NOT NULL CHECK (purpose IN ('register', 'login', 'second_factor', 'step_up')),
    user_id    uuid,
    session_id uuid,
    state      jsonb NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX webauthn_ceremonies_by_expiry ON webauthn_ceremonies (tenant_id, expires_at);

ALTER TABLE passkeys ENABLE ROW LEVEL SECURITY;
ALTER TABLE passkeys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON passkeys
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE, DELETE ON passkeys TO strongroom_auth;

ALTER TABLE webauthn_ceremonies ENABLE ROW LEVEL SECURITY;
ALTER TABLE webauthn_ceremonies FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webauthn_ceremonies
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE, DELETE ON webauthn_ceremonies TO strongroom_auth;
