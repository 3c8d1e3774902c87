-- Tenant keys (wrapped by the master key), secrets and their versions, and idempotency records.
-- Nothing here is ever plaintext: a version's ciphertext is an envelope (docs/vault-ciphertext.md)
-- whose data key is wrapped by a tenant key, itself wrapped by the master key in the HSM.

CREATE TABLE tenant_keys (
    tenant_id     uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    version       integer NOT NULL CHECK (version > 0),
    state         text NOT NULL CHECK (state IN ('active', 'decrypt_only', 'destroyed')),
    master_key_id text NOT NULL,
    wrapped       bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    retired_at    timestamptz,
    destroyed_at  timestamptz,
    PRIMARY KEY (tenant_id, version),
    CHECK ((state = 'destroyed') = (wrapped IS NULL))
);
CREATE UNIQUE INDEX tenant_keys_one_active ON tenant_keys (tenant_id) WHERE state = 'active';

CREATE TABLE secrets (
    tenant_id       uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    path            text NOT NULL CHECK (length(path) BETWEEN 1 AND 256),
    current_version integer NOT NULL CHECK (current_version > 0),
    labels          jsonb NOT NULL DEFAULT '{}'::jsonb,
    rotate_after    timestamptz,
    expires_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz,
    PRIMARY KEY (tenant_id, path)
);

CREATE TABLE secret_versions (
    tenant_id    uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    path         text NOT NULL,
    version      integer NOT NULL CHECK (version > 0),
    key_version  integer NOT NULL,
    ciphertext   bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    destroyed_at timestamptz,
    PRIMARY KEY (tenant_id, path, version),
    FOREIGN KEY (tenant_id, path) REFERENCES secrets (tenant_id, path),
    FOREIGN KEY (tenant_id, key_version) REFERENCES tenant_keys (tenant_id, version),
    CHECK ((destroyed_at IS NULL) = (ciphertext IS NOT NULL))
);

CREATE TABLE idempotency_keys (
    tenant_id  uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    request_id uuid NOT NULL,
    operation  text NOT NULL,
    digest     bytea NOT NULL,
    response   bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, request_id)
);

ALTER TABLE tenant_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_keys FORCE ROW LEVEL SECURITY;
ALTER TABLE secrets ENABLE ROW LEVEL SECURITY;
ALTER TABLE secrets FORCE ROW LEVEL SECURITY;
ALTER TABLE secret_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE secret_versions FORCE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON tenant_keys
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON secrets
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON secret_versions
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON idempotency_keys
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);

GRANT SELECT, INSERT, UPDATE ON tenant_keys, secrets, secret_versions TO strongroom_vault;
GRANT SELECT, INSERT ON idempotency_keys TO strongroom_vault;
