-- Signed checkpoints (C2SP signed notes) of the tenant's log. Append-only like the log.
CREATE TABLE checkpoints (
    tenant_id   uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    tree_size   bigint NOT NULL CHECK (tree_size > 0),
    root_hash   bytea NOT NULL CHECK (length(root_hash) = 32),
    signed_note text NOT NULL,
    key_version integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, tree_size)
);
CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

ALTER TABLE checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE checkpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON checkpoints
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);

GRANT SELECT, INSERT ON checkpoints TO strongroom_audit;
