-- Every service caches the tenant registry (a few seconds): a change of a tenant's status
-- (suspension, reactivation, termination), by auth-svc or by hand, is announced on
-- `strongroom_tenant_registry` (payload: the slug) at commit, so that every replica drops its
-- cached entry at once and refuses a suspended or terminated tenant within the second.
CREATE FUNCTION control.tenant_registry_notify() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('strongroom_tenant_registry', OLD.slug);
    RETURN NULL;
END
$$;
CREATE TRIGGER tenant_registry_notify AFTER UPDATE OR DELETE ON control.tenants
    FOR EACH ROW EXECUTE FUNCTION control.tenant_registry_notify();
