-- A NOTIFY in a transaction takes a database-wide lock at commit and holds it through the WAL
-- flush, so every transaction that wrote audit records committed one after another (pgbench, 32
-- clients, synchronous_commit on: 6,400 → 2,650 commits/s with a NOTIFY each). The services now
-- wake audit-svc after their commits, at most one NOTIFY per window for all the tenants written
-- meanwhile (kit::outbox::Waker); the sequencer's poll still covers a lost wake-up.
-- control.audit_outbox_notify() stays: migration 0002 of a new tenant still names it.
DROP TRIGGER audit_outbox_notify ON audit_outbox;
