-- Wakes audit-svc's sequencer when a transaction adds audit records (delivered at commit; the
-- payload is the tenant id). The sequencer also polls, so a lost notification only delays.
CREATE FUNCTION control.audit_outbox_notify() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('strongroom_audit_outbox', coalesce(current_setting('strongroom.tenant_id', true), ''));
    RETURN NULL;
END
$$;
