-- Retention classes and their period keys: crypto-deletion by time (docs/vault.md). A class
-- (`messages`, 730 days, monthly) gets one key per period on first use, stored only sealed by a
-- tenant key version: nonce (12) ‖ AES-256-GCM(tenant key, key material) ‖ tag. Once the whole
-- period is past the class's retention the retention job removes the sealed key; the row stays
-- as a tombstone (`destroyed_at`) so the period's ciphertexts answer RETENTION_EXPIRED.

CREATE TABLE retention_classes (
    tenant_id      uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    name           text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_-]{0,63}$'),
    retention_days integer NOT NULL CHECK (retention_days BETWEEN 1 AND 36500),
    period         text NOT NULL CHECK (period IN ('day', 'month')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

-- `id` is the key's number, written into each ciphertext's envelope: decryption finds the key by
-- it. `period` (`2026-12`, `2026-12-24`) and its bounds say what the key covers.
CREATE TABLE period_keys (
    tenant_id          uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    id                 integer GENERATED ALWAYS AS IDENTITY,
    class              text NOT NULL,
    period             text NOT NULL,
    period_start       timestamptz NOT NULL,
    period_end         timestamptz NOT NULL,
    tenant_key_version integer NOT NULL,
    wrapped            bytea,
    created_at         timestamptz NOT NULL DEFAULT now(),
    destroyed_at       timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, class, period),
    FOREIGN KEY (tenant_id, class) REFERENCES retention_classes (tenant_id, name),
    FOREIGN KEY (tenant_id, tenant_key_version) REFERENCES tenant_keys (tenant_id, version),
    CHECK (period_end > period_start),
    CHECK ((destroyed_at IS NULL) = (wrapped IS NOT NULL))
);
-- The retention job's range: a class's live keys by the end of their period.
CREATE INDEX period_keys_live_by_end ON period_keys (tenant_id, class, period_end) WHERE wrapped IS NOT NULL;
-- What a rewrap still has to move (as 0004 for the other sealed tables).
CREATE INDEX period_keys_by_key ON period_keys (tenant_id, tenant_key_version) WHERE wrapped IS NOT NULL;

ALTER TABLE retention_classes ENABLE ROW LEVEL SECURITY;
ALTER TABLE retention_classes FORCE ROW LEVEL SECURITY;
ALTER TABLE period_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE period_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON retention_classes
    USING (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid));
CREATE POLICY tenant_isolation ON period_keys
    USING (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid));

-- No DELETE: a destroyed key's row is its tombstone.
GRANT SELECT, INSERT, UPDATE ON retention_classes, period_keys TO strongroom_vault;
