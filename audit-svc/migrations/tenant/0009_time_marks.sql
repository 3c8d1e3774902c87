-- Time-filtered queries and pruning no longer walk the log from its start.
--
-- `ListEntries` with `start_time`/`end_time` returns the entries whose `occurred_at` falls in the
-- window, in sequence order. `occurred_at` comes from the producer and is not ordered by `seq`
-- (a record can wait in an outbox while later ones are logged), so the time index alone cannot
-- page in sequence order: each page walked the log in `seq` order from its start (or read the
-- whole window and sorted it), and the page after the window's last match walked to the log's end.
--
-- Now each append transaction has a batch time: the database clock, but never earlier than the
-- previous batch's (so it never decreases along `seq`). audit_clock keeps, per tenant, the latest
-- batch time and how far `occurred_at` has ever been ahead of (max_lead) or behind (max_lag) the
-- batch time of its entry. audit_time_marks keeps a sparse map from batch time to `seq` (a mark
-- per 1,000 entries at most): a mark (at, seq) says that the entries before `seq` have batch times <= at, and the entries from `seq` on
-- have batch times >= at. So for a window [start, end):
--   * an entry before the last mark with at < start - max_lead has occurred_at < start;
--   * an entry from the first mark with at >= end + max_lag on has occurred_at >= end;
-- and a query reads only the sequence range between those marks (exactly, whatever the clocks of
-- the producers did: a producer whose clock runs an hour ahead widens max_lead by an hour).

CREATE TABLE audit_clock (
    tenant_id uuid PRIMARY KEY DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    last_at   timestamptz NOT NULL,
    max_lead  interval NOT NULL,
    max_lag   interval NOT NULL
);

CREATE TABLE audit_time_marks (
    tenant_id uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    at        timestamptz NOT NULL,
    seq       bigint NOT NULL CHECK (seq >= 0),
    PRIMARY KEY (tenant_id, at)
);

-- The bounds only widen and the marks only grow: shrinking either would hide entries from
-- time-filtered queries.
CREATE FUNCTION audit_clock_only_widens() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.tenant_id <> OLD.tenant_id OR NEW.last_at < OLD.last_at
       OR NEW.max_lead < OLD.max_lead OR NEW.max_lag < OLD.max_lag THEN
        RAISE EXCEPTION 'audit_clock only moves forward and widens' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_clock_only_widens BEFORE UPDATE ON audit_clock
    FOR EACH ROW EXECUTE FUNCTION audit_clock_only_widens();
CREATE TRIGGER audit_clock_no_delete BEFORE DELETE ON audit_clock
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_clock_no_truncate BEFORE TRUNCATE ON audit_clock
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_time_marks_append_only BEFORE UPDATE OR DELETE ON audit_time_marks
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_time_marks_no_truncate BEFORE TRUNCATE ON audit_time_marks
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

ALTER TABLE audit_clock ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_clock FORCE ROW LEVEL SECURITY;
ALTER TABLE audit_time_marks ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_time_marks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_clock
    USING (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid));
CREATE POLICY tenant_isolation ON audit_time_marks
    USING (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid));
GRANT SELECT, INSERT, UPDATE ON audit_clock TO strongroom_audit;
GRANT SELECT, INSERT ON audit_time_marks TO strongroom_audit;

-- The log already stored: its batch time is the running maximum of `recorded_at` (the start of
-- the transaction that appended it), which never decreases along `seq`. A mark every 1,000
-- entries, as audit-svc writes them (entries appended by one transaction share a time: one mark
-- per time). One pass over the log in this migration's transaction (appends wait for it): about
-- 2.5 s per million entries.
CREATE TEMPORARY TABLE audit_history ON COMMIT DROP AS
    SELECT seq, occurred_at, max(recorded_at) OVER (ORDER BY seq) AS at FROM audit_log;
INSERT INTO audit_clock (last_at, max_lead, max_lag)
    SELECT max(at), greatest(max(occurred_at - at), interval '0'), greatest(max(at - occurred_at), interval '0')
    FROM audit_history HAVING count(*) > 0;
INSERT INTO audit_time_marks (at, seq)
    SELECT DISTINCT ON (at) at, seq FROM (
        SELECT DISTINCT ON (seq / 1000) at, seq FROM audit_history ORDER BY seq / 1000, seq) AS every_thousand
    ORDER BY at, seq;

-- audit_prune() looked for the first entry within retention with `min(seq) … WHERE recorded_at
-- >= cutoff`, which walks every entry beyond retention still stored: each batch of a large prune
-- walked the whole backlog again. It prunes at most `max_entries` anyway, so the search now stops
-- there. Otherwise unchanged from migration 0008.
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
    -- Every entry before the first one recorded within retention is beyond it (by definition of
    -- min); when none of the next `max_entries` is within retention, all of them are beyond it.
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
