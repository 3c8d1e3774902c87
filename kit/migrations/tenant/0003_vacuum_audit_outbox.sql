-- The outbox is a queue: every row is inserted once and deleted soon after by audit-svc. With the
-- default thresholds (20 % of the table) and cost-throttled autovacuum, dead rows pile up faster
-- than they are reclaimed under load, and every drain then walks them. Vacuum it early and
-- unthrottled; it is small once vacuumed.
ALTER TABLE audit_outbox SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_cost_delay = 0
);
