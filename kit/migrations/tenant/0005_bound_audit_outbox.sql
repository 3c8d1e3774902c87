-- audit-svc copies each outbox row into the tenant's log, which indexes actor, action, resource
-- and request_id, and a btree index entry holds at most about 2.7 kB. One oversized value was
-- accepted here and then failed every drain of the tenant's outbox, so no later record reached
-- the log. The bounds are those audit-svc's own Append accepts; a row beyond them now fails the
-- writer's transaction (the change it describes with it), never the drain. Rows already queued are
-- not checked (NOT VALID): they are drained or were stuck before this migration.
ALTER TABLE audit_outbox ADD CONSTRAINT audit_outbox_indexable CHECK (
    octet_length(actor) <= 256
    AND octet_length(action) <= 128
    AND octet_length(resource) <= 1024
    AND octet_length(request_id) <= 128
    AND octet_length(trace_id) <= 128
) NOT VALID;
