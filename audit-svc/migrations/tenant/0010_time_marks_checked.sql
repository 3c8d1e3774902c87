-- A time mark must match the log it describes (migration 0009 let marks only grow, not be true).
--
-- A mark (at, seq) says: the entries before `seq` have batch times <= at, the entries from `seq`
-- on have batch times >= at. A false one hides entries from time-filtered queries: a mark with a
-- seq too far on or an `at` too early raises a window's lower bound past entries inside it; one
-- with an `at` too late lowers its upper bound. Whoever holds audit-svc's database role can
-- insert rows, so each mark is checked against the log as it is inserted:
--   * `at` is the tenant's current batch time (`audit_clock.last_at`, which only moves forward):
--     every entry so far has a batch time <= at, and every later batch gets one >= at;
--   * `seq` is at most the log's size, and every entry from `seq` on was appended by this very
--     transaction (its batch, whose batch time is `at`).
-- The sequencer's marks always pass (`keep_time` moves the clock, then marks the start of the
-- batch it just inserted). A mark that fails is dropped, not raised: an append never fails for
-- want of a mark (a query then reads a little more of the log), and the warning goes to the
-- server log. The check reads at most one batch of entries per mark (a mark per 1,000 entries).

CREATE FUNCTION audit_time_mark_is_true() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.at IS DISTINCT FROM (SELECT c.last_at FROM audit_clock c WHERE c.tenant_id = NEW.tenant_id)
       OR NEW.seq > coalesce((SELECT l.seq + 1 FROM audit_log l WHERE l.tenant_id = NEW.tenant_id
                              ORDER BY l.seq DESC LIMIT 1), 0)
       OR EXISTS (SELECT 1 FROM audit_log l WHERE l.tenant_id = NEW.tenant_id AND l.seq >= NEW.seq
                    AND l.xmin <> pg_current_xact_id()::xid) THEN
        RAISE WARNING 'audit time mark (%, %) dropped: it does not match the log', NEW.at, NEW.seq;
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_time_marks_match_the_log BEFORE INSERT ON audit_time_marks
    FOR EACH ROW EXECUTE FUNCTION audit_time_mark_is_true();
