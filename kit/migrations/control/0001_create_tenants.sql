-- The tenant registry. auth-svc writes it; every service reads it.
CREATE TABLE control.tenants (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug          text NOT NULL UNIQUE CHECK (slug ~ '^[a-z][a-z0-9_]{2,39}$'),
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'terminated')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    terminated_at timestamptz
);

GRANT SELECT ON control.tenants TO strongroom_auth, strongroom_vault, strongroom_audit, strongroom_ledger;
GRANT INSERT, UPDATE ON control.tenants TO strongroom_auth;
