-- audit-svc no longer stores the Merkle nodes of levels 0–3 for entries still in the log: it
-- recomputes them from the leaf hashes of their block of 16 entries (`audit_log.leaf_hash`) when
-- a root or proof needs them. That was 30 of every 32 node rows (about two per entry, beside the
-- entry's own row in the log); one per eight entries is left. Nodes already stored stay, and are
-- used where present.
--
-- A pruned entry's leaf must outlive its row, so pruning now first keeps each leaf it deletes as
-- a level-0 node (as every leaf was stored before): every checkpoint, every inclusion proof of a
-- remaining entry, every consistency proof, `VerifyLog` and the export's pruned leaves stay as
-- they were. Otherwise audit_prune() is unchanged (migration 0005).
CREATE OR REPLACE FUNCTION audit_prune(max_entries bigint) RETURNS bigint
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
