-- The currencies and assets a tenant keeps accounts in, with their scale (USD: 2 decimals).
CREATE TABLE ledgers (
    tenant_id   uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    code        text NOT NULL CHECK (code ~ '^[A-Z0-9_]{1,16}$'),
    scale       smallint NOT NULL CHECK (scale BETWEEN 0 AND 18),
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, code)
);

ALTER TABLE ledgers ENABLE ROW LEVEL SECURITY;
ALTER TABLE ledgers FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON ledgers
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);

GRANT SELECT, INSERT, UPDATE ON ledgers TO strongroom_ledger;
