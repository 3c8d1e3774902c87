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

-- Stamps audit_outbox.service with the inserting service's login role (strongroom_<service>), so a
-- compromised service cannot write records in another service's name. Migrations (run as the
-- owner) keep the value they give.
CREATE FUNCTION control.audit_outbox_stamp_service() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF current_user LIKE 'strongroom\_%' AND current_user <> 'strongroom_owner' THEN
        NEW.service := substr(current_user, length('strongroom_') + 1);
    END IF;
    RETURN NEW;
END
$$;
