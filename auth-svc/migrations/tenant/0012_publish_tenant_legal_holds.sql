-- A contract published by auth-svc to other services: vault-svc (destroying period keys past
-- retention) and audit-svc (pruning the log) defer their deletions while the tenant is under a
-- tenant-wide legal hold (docs/privacy.md, "Legal holds"). They may read only whether one is
-- active (`scope = 'tenant' AND released_at IS NULL`): these three columns, never the reason, the
-- subject or who placed it, and row-level security keeps each read to its transaction's tenant.
-- auth-svc keeps these columns and their meaning; a change to them is a change of this contract.
GRANT SELECT (tenant_id, scope, released_at) ON legal_holds TO strongroom_vault, strongroom_audit;
