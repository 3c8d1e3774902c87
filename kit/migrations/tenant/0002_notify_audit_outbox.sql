-- Tells audit-svc that this tenant's outbox has new records (see control.audit_outbox_notify).
CREATE TRIGGER audit_outbox_notify AFTER INSERT ON audit_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION control.audit_outbox_notify();
