-- Per-row costs every audit record paid on its way through the outbox into the log (an
-- 8,190-transfer ledger batch writes 8,190 records). audit-svc trusts the outbox's `service` column
-- and drains the outbox, so these changes to kit's outbox table live here, as 0004 and 0006 did.

-- kit's stamp trigger (kit tenant migration 0001) ran a PL/pgSQL function for every outbox row,
-- although a service names itself in nearly every record it writes, and then the function changes
-- nothing. The same trigger now fires only when the record names a service other than the login
-- role's suffix (`strongroom_<service>`), which is the only case where the function can change
-- something. The function and its rule are untouched: a service still cannot write a record in
-- another service's name, and migrations (run as strongroom_owner) still keep the value they
-- give. The WHEN condition is evaluated by the executor, and no row is copied for a trigger that
-- does not fire.
DROP TRIGGER audit_outbox_stamp_service ON audit_outbox;
CREATE TRIGGER audit_outbox_stamp_service BEFORE INSERT ON audit_outbox
    FOR EACH ROW
    WHEN (NEW.service IS DISTINCT FROM substr(current_user, length('strongroom_') + 1))
    EXECUTE FUNCTION control.audit_outbox_stamp_service();

-- The tenant policies of the tables every record passes through read the tenant id once per
-- statement (a scalar subquery, planned as an initPlan) instead of once per row checked or
-- written (a setting lookup and a text-to-uuid parse each time). Same condition as before: the
-- setting cannot change within a statement.
ALTER POLICY tenant_isolation ON audit_outbox
    USING (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid));
ALTER POLICY tenant_isolation ON audit_log
    USING (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid));
ALTER POLICY tenant_isolation ON merkle_nodes
    USING (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid));
