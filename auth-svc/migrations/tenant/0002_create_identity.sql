-- Identity: users, roles and groups, sessions and refresh tokens, MFA, API keys and the keys
-- that sign the tenant's access tokens. Secrets are stored only as hashes (passwords: argon2id
-- or a legacy bcrypt hash; refresh tokens, API keys, backup codes: SHA-256 of high-entropy
-- values) or sealed by vault-svc (TOTP seeds, token signing keys).

CREATE TABLE users (
    tenant_id           uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    id                  uuid NOT NULL DEFAULT gen_random_uuid(),
    -- Lower-cased; NULL once the user is deleted (personal data removed).
    email               text CHECK (email IS NULL OR (length(email) BETWEEN 3 AND 254 AND email = lower(email))),
    display_name        text CHECK (display_name IS NULL OR length(display_name) <= 200),
    status              text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'deleted')),
    suspension_reason   text CHECK (suspension_reason IS NULL OR length(suspension_reason) <= 500),
    password_hash       text,
    password_changed_at timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz,
    PRIMARY KEY (tenant_id, id),
    CHECK ((status = 'suspended') = (suspension_reason IS NOT NULL)),
    CHECK ((status = 'deleted') = (email IS NULL))
);
CREATE UNIQUE INDEX users_email ON users (tenant_id, email) WHERE email IS NOT NULL;

CREATE TABLE roles (
    tenant_id   uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_.-]{1,62}$'),
    description text NOT NULL DEFAULT '' CHECK (length(description) <= 500),
    permissions text[] NOT NULL,
    builtin     boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);

CREATE TABLE groups (
    tenant_id   uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_.-]{1,62}$'),
    description text NOT NULL DEFAULT '' CHECK (length(description) <= 500),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);

CREATE TABLE group_members (
    tenant_id  uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    group_id   uuid NOT NULL,
    user_id    uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, group_id, user_id),
    FOREIGN KEY (tenant_id, group_id) REFERENCES groups (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);

-- A role granted to a user directly or to a group (exactly one of the two).
CREATE TABLE role_grants (
    tenant_id  uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    id         uuid NOT NULL DEFAULT gen_random_uuid(),
    role_id    uuid NOT NULL,
    user_id    uuid,
    group_id   uuid,
    granted_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, role_id) REFERENCES roles (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id),
    FOREIGN KEY (tenant_id, group_id) REFERENCES groups (tenant_id, id) ON DELETE CASCADE,
    CHECK ((user_id IS NULL) <> (group_id IS NULL))
);
CREATE UNIQUE INDEX role_grants_user ON role_grants (tenant_id, role_id, user_id) WHERE user_id IS NOT NULL;
CREATE UNIQUE INDEX role_grants_group ON role_grants (tenant_id, role_id, group_id) WHERE group_id IS NOT NULL;

CREATE TABLE sessions (
    tenant_id       uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    id              uuid NOT NULL DEFAULT gen_random_uuid(),
    user_id         uuid NOT NULL,
    ip              text NOT NULL DEFAULT '' CHECK (length(ip) <= 64),
    user_agent      text NOT NULL DEFAULT '' CHECK (length(user_agent) <= 512),
    amr             text[] NOT NULL,
    -- When the session last passed a second factor (step-up for sensitive operations).
    mfa_at          timestamptz,
    -- A privileged user without TOTP may only enrol.
    enrollment_only boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    revoke_reason   text,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);
CREATE INDEX sessions_user ON sessions (tenant_id, user_id, created_at DESC);

-- Refresh tokens: SHA-256 of the opaque token. Single use; `successor_sealed` is the successor
-- token sealed under a key derived from this token (HKDF-SHA256), so a retry within the grace
-- window gets the same successor and nobody without this token can read it.
CREATE TABLE refresh_tokens (
    tenant_id        uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    token_hash       bytea NOT NULL CHECK (length(token_hash) = 32),
    session_id       uuid NOT NULL,
    generation       integer NOT NULL CHECK (generation >= 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    used_at          timestamptz,
    successor_sealed bytea,
    PRIMARY KEY (tenant_id, token_hash),
    FOREIGN KEY (tenant_id, session_id) REFERENCES sessions (tenant_id, id)
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (tenant_id, session_id);

CREATE TABLE mfa_totp (
    tenant_id    uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    user_id      uuid NOT NULL,
    -- The seed, sealed by vault-svc transit under the user's subject key.
    sealed_seed  text NOT NULL,
    confirmed_at timestamptz,
    -- The last accepted time step: that step and older ones are refused (replay).
    last_step    bigint NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);

CREATE TABLE backup_codes (
    tenant_id uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    user_id   uuid NOT NULL,
    code_hash bytea NOT NULL CHECK (length(code_hash) = 32),
    used_at   timestamptz,
    PRIMARY KEY (tenant_id, user_id, code_hash),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);

-- The second step of a login: password accepted, second factor pending.
CREATE TABLE mfa_challenges (
    tenant_id  uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    token_hash bytea NOT NULL CHECK (length(token_hash) = 32),
    user_id    uuid NOT NULL,
    ip         text NOT NULL DEFAULT '',
    user_agent text NOT NULL DEFAULT '',
    attempts   integer NOT NULL DEFAULT 0,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    PRIMARY KEY (tenant_id, token_hash),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);

CREATE TABLE api_keys (
    tenant_id    uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    user_id      uuid NOT NULL,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    -- The first characters of the key, to recognise it in lists.
    display      text NOT NULL,
    key_hash     bytea NOT NULL CHECK (length(key_hash) = 32),
    scopes       text[] NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (key_hash),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);

-- The private halves of the keys that sign this tenant's access tokens, sealed by vault-svc.
-- The public halves are in control.signing_keys (the JWKS). A key signs from `activates_at`
-- (it is published before); the newest active key signs.
CREATE TABLE token_signing_keys (
    tenant_id      uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    kid            text NOT NULL,
    sealed_private text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    activates_at   timestamptz NOT NULL,
    retired_at     timestamptz,
    PRIMARY KEY (tenant_id, kid)
);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['users', 'roles', 'groups', 'group_members', 'role_grants', 'sessions',
                             'refresh_tokens', 'mfa_totp', 'backup_codes', 'mfa_challenges', 'api_keys',
                             'token_signing_keys'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
            USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
            WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)$p$, t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO strongroom_auth', t);
    END LOOP;
END
$$;

-- The seven built-in roles (docs/identity.md lists their permissions).
INSERT INTO roles (name, description, permissions, builtin) VALUES
    ('owner', 'Everything, including granting any role', ARRAY[
        'users.read', 'users.write', 'users.suspend', 'users.delete', 'roles.read', 'roles.write', 'roles.grant',
        'groups.read', 'groups.write', 'sessions.read', 'sessions.revoke', 'api_keys.create', 'api_keys.read',
        'api_keys.revoke', 'tenant.policy.write', 'audit.events.read', 'vault.secrets.read', 'vault.secrets.write',
        'vault.secrets.reveal', 'vault.secrets.destroy', 'ledger.accounts.create', 'ledger.accounts.read',
        'ledger.transfers.create', 'ledger.transfers.read', 'ledger.receipts.verify'], true),
    ('admin', 'Manages users, groups, roles, API keys, secrets and the ledger', ARRAY[
        'users.read', 'users.write', 'users.suspend', 'users.delete', 'roles.read', 'roles.write', 'roles.grant',
        'groups.read', 'groups.write', 'sessions.read', 'sessions.revoke', 'api_keys.create', 'api_keys.read',
        'api_keys.revoke', 'vault.secrets.read', 'vault.secrets.write', 'vault.secrets.reveal',
        'ledger.accounts.create', 'ledger.accounts.read', 'ledger.transfers.create', 'ledger.transfers.read',
        'ledger.receipts.verify'], true),
    ('security_admin', 'Suspends users, revokes sessions and keys, reads the audit trail', ARRAY[
        'users.read', 'users.suspend', 'roles.read', 'groups.read', 'sessions.read', 'sessions.revoke',
        'api_keys.read', 'api_keys.revoke', 'tenant.policy.write', 'audit.events.read'], true),
    ('auditor', 'Reads the audit trail and verifies receipts', ARRAY[
        'audit.events.read', 'users.read', 'roles.read', 'groups.read', 'ledger.accounts.read',
        'ledger.transfers.read', 'ledger.receipts.verify'], true),
    ('operator', 'Runs the business: ledger transfers and secrets', ARRAY[
        'vault.secrets.read', 'vault.secrets.write', 'vault.secrets.reveal', 'ledger.accounts.create',
        'ledger.accounts.read', 'ledger.transfers.create', 'ledger.transfers.read', 'api_keys.create'], true),
    ('member', 'Uses the platform', ARRAY[
        'vault.secrets.read', 'ledger.accounts.read', 'ledger.transfers.read', 'ledger.transfers.create',
        'api_keys.create'], true),
    ('viewer', 'Reads', ARRAY['vault.secrets.read', 'ledger.accounts.read', 'ledger.transfers.read'], true);
