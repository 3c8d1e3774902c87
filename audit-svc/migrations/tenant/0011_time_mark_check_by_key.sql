-- The time-mark check (0010) reads the log through its primary key, in every session.
--
-- Its last test, "no entry from NEW.seq on was written by another transaction", is an EXISTS over
-- `seq >= NEW.seq`. PL/pgSQL caches the plans of its statements; after five executions in a
-- session PostgreSQL may switch to a generic plan, built without NEW.seq's value. Under row-level
-- security the generic plan of that EXISTS is a sequential scan (cheap to its first row, the
-- planner thinks), and the rows it looks for are the newest, at the end of the heap: every mark
-- after a sequencer connection's fifth read the tenant's whole log. Measured on a 1.7-million-entry log:
-- 0.5 s per mark, a third of all database time in a batch benchmark, holding the tenant's
-- sequencing lock. A custom plan for the values at hand is a primary-key range scan of at most one
-- batch (0.6 ms there), and with sequential scans off no statistics (a new tenant's log has none)
-- can choose otherwise.
ALTER FUNCTION audit_time_mark_is_true()
    SET plan_cache_mode = force_custom_plan
    SET enable_seqscan = off;
