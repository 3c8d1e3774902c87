-- Per-subject keys (crypto-shredding) and per-tenant Ed25519 signing keys. Both are stored only
-- wrapped by a tenant key version: nonce (12) ‖ AES-256-GCM(tenant key, key material) ‖ tag.

CREATE TABLE subject_keys (
    tenant_id          uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    subject            text NOT NULL CHECK (length(subject) BETWEEN 1 AND 128),
    version            integer NOT NULL CHECK (version > 0),
    state              text NOT NULL CHECK (state IN ('active', 'destroyed')),
    tenant_key_version integer NOT NULL,
    wrapped            bytea,
    created_at         timestamptz NOT NULL DEFAULT now(),
    destroyed_at       timestamptz,
    PRIMARY KEY (tenant_id, subject, version),
    FOREIGN KEY (tenant_id, tenant_key_version) REFERENCES tenant_keys (tenant_id, version),
    CHECK ((state = 'destroyed') = (wrapped IS NULL))
);
CREATE UNIQUE INDEX subject_keys_one_active ON subject_keys (tenant_id, subject) WHERE state = 'active';

CREATE TABLE signing_keys (
    tenant_id          uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    name               text NOT NULL CHECK (name ~ '^[a-z][a-z0-9-]{0,31}$'),
    version            integer NOT NULL CHECK (version > 0),
    state              text NOT NULL CHECK (state IN ('active', 'retired')),
    algorithm          text NOT NULL DEFAULT 'Ed25519' CHECK (algorithm = 'Ed25519'),
    public_key         bytea NOT NULL CHECK (length(public_key) = 32),
    tenant_key_version integer NOT NULL,
    wrapped_private    bytea NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    retired_at         timestamptz,
    PRIMARY KEY (tenant_id, name, version),
    FOREIGN KEY (tenant_id, tenant_key_version) REFERENCES tenant_keys (tenant_id, version)
);
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (tenant_id, name) WHERE state = 'active';

ALTER TABLE subject_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE subject_keys FORCE ROW LEVEL SECURITY;
ALTER TABLE signing_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE signing_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON subject_keys
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON signing_keys
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);

GRANT SELECT, INSERT, UPDATE ON subject_keys, signing_keys TO strongroom_vault;
