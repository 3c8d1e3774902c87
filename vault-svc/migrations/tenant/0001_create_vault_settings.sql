-- Per-tenant vault settings.
CREATE TABLE vault_settings (
    tenant_id           uuid PRIMARY KEY DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    reveal_requires_mfa boolean NOT NULL DEFAULT true,
    key_cache_ttl_secs  integer NOT NULL DEFAULT 300 CHECK (key_cache_ttl_secs BETWEEN 0 AND 3600),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE vault_settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE vault_settings FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON vault_settings
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);

GRANT SELECT, INSERT, UPDATE ON vault_settings TO strongroom_vault;

INSERT INTO vault_settings DEFAULT VALUES;
