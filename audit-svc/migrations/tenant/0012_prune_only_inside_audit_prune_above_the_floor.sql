-- Append-only was a convention (security review item 12):
-- 1. The append-only trigger let a DELETE of log rows through whenever the session setting
--    strongroom.audit_prune was 'on', which any session can set. Now it must also run as the log's
--    owner, which only audit_prune() (SECURITY DEFINER) does for audit-svc: no service's login
--    role can become the owner role (the administrative step can, as it owns the tables anyway).
-- 2. audit_prune() ran with `search_path FROM CURRENT` (the tenant schema, with pg_temp
--    implicitly first): a temporary table named prune_marks shadowed the real one and chose where
--    pruning starts. The search path is now the tenant schema, then pg_temp last.
-- 3. audit-svc's role could lower the retention to one day. It can no longer write
--    retention_policy: audit_set_retention() does, and refuses anything below the deployment's
--    floor (control.audit_retention_floor); audit_prune() never prunes within the floor either.
-- (The catalog is named in full: the trigger runs with the caller's search path, where a temporary
-- table could otherwise stand in for pg_class.)
CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_log'
       AND current_setting('strongroom.audit_prune', true) = 'on'
       AND current_user = (SELECT r.rolname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_roles r
                            ON r.oid = c.relowner WHERE c.oid = TG_RELID) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE OR REPLACE FUNCTION audit_prune(max_entries bigint) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    days       integer;
    below      bigint;
    keep_from  bigint;
    last_seq   bigint;
    link       bytea;
BEGIN
    SELECT retention_days INTO days FROM retention_policy;
    days := greatest(coalesce(days, 2557), coalesce((SELECT f.days FROM control.audit_retention_floor f), 2557));
    SELECT coalesce(max(pruned_below), 0) INTO below FROM prune_marks;
    SELECT max(seq) INTO last_seq FROM audit_log;
    IF last_seq IS NULL THEN
        RETURN below;
    END IF;
    SELECT min(seq) INTO keep_from FROM audit_log
        WHERE seq >= below AND seq < below + greatest(max_entries, 1)
          AND recorded_at >= now() - make_interval(days => days);
    keep_from := least(coalesce(keep_from, last_seq), last_seq, below + greatest(max_entries, 1));
    IF keep_from <= below THEN
        RETURN below;
    END IF;
    SELECT chain_hash INTO link FROM audit_log WHERE seq = keep_from - 1;
    INSERT INTO merkle_nodes (level, idx, hash)
        SELECT 0, seq, leaf_hash FROM audit_log WHERE seq >= below AND seq < keep_from
        ON CONFLICT DO NOTHING;
    PERFORM set_config('strongroom.audit_prune', 'on', true);
    DELETE FROM audit_log WHERE seq >= below AND seq < keep_from;
    PERFORM set_config('strongroom.audit_prune', 'off', true);
    INSERT INTO prune_marks (pruned_below, chain_hash, retention_days) VALUES (keep_from, link, days);
    RETURN keep_from;
END
$$;

-- Sets the tenant's retention; refuses days below the deployment's floor. Returns the previous
-- value (NULL when none was set).
CREATE FUNCTION audit_set_retention(new_days integer) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    floor_days integer;
    previous   integer;
BEGIN
    SELECT f.days INTO floor_days FROM control.audit_retention_floor f;
    IF new_days < coalesce(floor_days, 2557) THEN
        RAISE EXCEPTION 'retention below the deployment floor of % days', coalesce(floor_days, 2557)
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT retention_days INTO previous FROM retention_policy;
    INSERT INTO retention_policy (retention_days) VALUES (new_days)
        ON CONFLICT (tenant_id) DO UPDATE SET retention_days = EXCLUDED.retention_days, updated_at = now();
    RETURN previous;
END
$$;
REVOKE ALL ON FUNCTION audit_set_retention(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_set_retention(integer) TO strongroom_audit;
REVOKE INSERT, UPDATE ON retention_policy FROM strongroom_audit;

DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION audit_prune(bigint) SET search_path = %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION audit_set_retention(integer) SET search_path = %I, pg_temp', current_schema());
END
$$;
