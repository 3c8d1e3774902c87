-- Audit records written by every service in the same transaction as the change they describe.
-- audit-svc drains them into the tenant's chained log (at-least-once, de-duplicated by event_id).
CREATE TABLE audit_outbox (
    position    bigint GENERATED ALWAYS AS IDENTITY,
    event_id    uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    occurred_at timestamptz NOT NULL,
    service     text NOT NULL,
    actor       text NOT NULL,
    action      text NOT NULL,
    resource    text NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    request_id  text,
    trace_id    text,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_outbox_position ON audit_outbox (position);

ALTER TABLE audit_outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_outbox FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_outbox
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);

-- A service writes records in its own name only: `service` is stamped from the login role.
CREATE TRIGGER audit_outbox_stamp_service BEFORE INSERT ON audit_outbox
    FOR EACH ROW EXECUTE FUNCTION control.audit_outbox_stamp_service();

GRANT INSERT ON audit_outbox TO strongroom_auth, strongroom_vault, strongroom_audit, strongroom_ledger;
GRANT SELECT, DELETE ON audit_outbox TO strongroom_audit;
