-- How long the tenant's audit trail is kept (seven years unless configured otherwise).
CREATE TABLE retention_policy (
    tenant_id      uuid PRIMARY KEY DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    retention_days integer NOT NULL DEFAULT 2557 CHECK (retention_days >= 1),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE retention_policy ENABLE ROW LEVEL SECURITY;
ALTER TABLE retention_policy FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON retention_policy
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);

GRANT SELECT, INSERT, UPDATE ON retention_policy TO strongroom_audit;

INSERT INTO retention_policy DEFAULT VALUES;
