-- AppendBatch appends straight to the log now (with the verified caller's name as `service`), so
-- the outbox trigger that let audit-svc insert on a caller's behalf has no use left, while every
-- outbox row of every service still paid for it.
DROP TRIGGER audit_outbox_via_append ON audit_outbox;
DROP FUNCTION audit_outbox_appended_by();
