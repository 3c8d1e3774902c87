-- Pruning beyond retention. Entries recorded longer ago than the tenant's retention are deleted
-- from the front of the log only, by audit_prune() (owned by the migration owner, executable by
-- audit-svc); nothing else may delete. The Merkle nodes (hashes only, no personal data) and every
-- checkpoint stay, so every checkpoint and every proof of what remains stays valid; a prune mark
-- keeps the chain link where the remaining log starts.

CREATE TABLE prune_marks (
    tenant_id      uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    -- The first sequence number still stored.
    pruned_below   bigint NOT NULL CHECK (pruned_below > 0),
    -- The chain link of entry pruned_below - 1, from which the remaining chain continues.
    chain_hash     bytea NOT NULL CHECK (length(chain_hash) = 32),
    retention_days integer NOT NULL,
    pruned_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, pruned_below)
);
CREATE TRIGGER prune_marks_append_only BEFORE UPDATE OR DELETE ON prune_marks
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER prune_marks_no_truncate BEFORE TRUNCATE ON prune_marks
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
ALTER TABLE prune_marks ENABLE ROW LEVEL SECURITY;
ALTER TABLE prune_marks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON prune_marks
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);
GRANT SELECT ON prune_marks TO strongroom_audit;

-- The append-only triggers let exactly one thing through: audit_prune() deleting log rows.
CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_log'
       AND current_setting('strongroom.audit_prune', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;

-- Deletes at most `max_entries` entries from the front of the log, all recorded before
-- now() - retention_days, always keeping the last entry (the chain head). Returns the first
-- sequence number still stored (0: nothing pruned yet).
CREATE FUNCTION audit_prune(max_entries bigint) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    days       integer;
    below      bigint;
    keep_from  bigint;
    last_seq   bigint;
    link       bytea;
BEGIN
    SELECT retention_days INTO days FROM retention_policy;
    IF days IS NULL THEN
        days := 2557;
    END IF;
    SELECT coalesce(max(pruned_below), 0) INTO below FROM prune_marks;
    SELECT max(seq) INTO last_seq FROM audit_log;
    IF last_seq IS NULL THEN
        RETURN below;
    END IF;
    -- Every entry before the first one recorded within retention is beyond it (by definition of min).
    SELECT min(seq) INTO keep_from FROM audit_log WHERE recorded_at >= now() - make_interval(days => days);
    keep_from := least(coalesce(keep_from, last_seq), last_seq, below + greatest(max_entries, 1));
    IF keep_from <= below THEN
        RETURN below;
    END IF;
    SELECT chain_hash INTO link FROM audit_log WHERE seq = keep_from - 1;
    PERFORM set_config('strongroom.audit_prune', 'on', true);
    DELETE FROM audit_log WHERE seq >= below AND seq < keep_from;
    PERFORM set_config('strongroom.audit_prune', 'off', true);
    INSERT INTO prune_marks (pruned_below, chain_hash, retention_days) VALUES (keep_from, link, days);
    RETURN keep_from;
END
$$;
REVOKE ALL ON FUNCTION audit_prune(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_prune(bigint) TO strongroom_audit;
