-- The tenant's audit log: contiguous sequence numbers from 0, each entry's canonical bytes
-- (RFC 8785 JSON of its fields), its RFC 9162 leaf hash and its hash-chain link; and the tree's
-- perfect-subtree nodes, from which roots and proofs are computed in O(log n) reads.
-- Append-only: audit-svc's role may INSERT and SELECT only, and triggers refuse UPDATE, DELETE and
-- TRUNCATE for everyone (a superuser who disables them is caught by verification).

CREATE TABLE audit_log (
    tenant_id   uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    seq         bigint NOT NULL CHECK (seq >= 0),
    event_id    uuid NOT NULL,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    service     text NOT NULL,
    actor       text NOT NULL,
    action      text NOT NULL,
    resource    text NOT NULL,
    outcome     text NOT NULL,
    request_id  text,
    trace_id    text,
    details     jsonb NOT NULL,
    canonical   bytea NOT NULL,
    leaf_hash   bytea NOT NULL CHECK (length(leaf_hash) = 32),
    chain_hash  bytea NOT NULL CHECK (length(chain_hash) = 32),
    PRIMARY KEY (tenant_id, seq),
    UNIQUE (tenant_id, event_id)
);
CREATE INDEX audit_log_time ON audit_log (tenant_id, occurred_at);

CREATE TABLE merkle_nodes (
    tenant_id uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    level     smallint NOT NULL CHECK (level BETWEEN 0 AND 63),
    idx       bigint NOT NULL CHECK (idx >= 0),
    hash      bytea NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (tenant_id, level, idx)
);

CREATE FUNCTION audit_refuse_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER merkle_nodes_append_only BEFORE UPDATE OR DELETE ON merkle_nodes
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER merkle_nodes_no_truncate BEFORE TRUNCATE ON merkle_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
ALTER TABLE merkle_nodes ENABLE ROW LEVEL SECURITY;
ALTER TABLE merkle_nodes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_log
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON merkle_nodes
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);

GRANT SELECT, INSERT ON audit_log, merkle_nodes TO strongroom_audit;
