-- The deployment's floor under every tenant's audit retention: no tenant policy, and nobody holding
-- audit-svc's database role, keeps a log for less. Seven years unless the deployment sets another
-- value, as the migration owner (the administrative step, never a running service):
--   UPDATE control.audit_retention_floor SET days = …, updated_at = now();
CREATE TABLE audit_retention_floor (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    days       integer NOT NULL CHECK (days >= 1),
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO audit_retention_floor (days) VALUES (2557);
GRANT SELECT ON audit_retention_floor TO strongroom_audit;
