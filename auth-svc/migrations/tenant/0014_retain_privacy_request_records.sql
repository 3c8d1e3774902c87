-- How long a closed data-subject request (completed or rejected) is kept, with its steps, as the
-- record that it was honoured: three years by default (a regulator's usual look-back), 1 to 3,650
-- days. auth-svc's housekeeping removes it then, unless a legal hold covers its subject.
ALTER TABLE identity_retention_policy
    ADD COLUMN privacy_requests_days integer NOT NULL DEFAULT 1095
        CHECK (privacy_requests_days BETWEEN 1 AND 3650);
-- Closed requests, found by when they closed.
CREATE INDEX privacy_requests_closed ON privacy_requests (tenant_id, closed_at) WHERE closed_at IS NOT NULL;
