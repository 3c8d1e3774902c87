-- Tenants are registered (and their schemas created) by the operator's step that holds the
-- administrative URL (`strongroom tenant create`), in one transaction with the schema; no running
-- service may add a tenant. auth-svc keeps UPDATE for suspension and reactivation.
REVOKE INSERT ON control.tenants FROM strongroom_auth;
