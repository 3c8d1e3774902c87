-- What executing a data-subject request did, and when: `exported` (an access bundle was
-- produced), `erased`, `restricted`, or `deferred` (an erasure waiting for a legal hold to end;
-- the release of the last hold completes it). Not personal data: kept in plain.
ALTER TABLE privacy_requests
    ADD COLUMN execution   text CHECK (execution IN ('exported', 'erased', 'restricted', 'deferred')),
    ADD COLUMN executed_at timestamptz,
    ADD CONSTRAINT privacy_requests_execution_time CHECK ((execution IS NULL) = (executed_at IS NULL));
-- Deferred erasures, found by a hold's release without scanning every request.
CREATE INDEX privacy_requests_deferred ON privacy_requests (tenant_id, id) WHERE execution = 'deferred';

-- A user whose processing is restricted at their request (an executed restriction request): like a
-- user whose erasure waits for a hold, suspended, their sealed fields shown only through an audited
-- reveal; reactivating them lifts it.
ALTER TABLE users ADD COLUMN restricted_at timestamptz;
