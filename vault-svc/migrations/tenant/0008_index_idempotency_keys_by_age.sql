-- Idempotency records are kept ninety days (vault-svc's retention job, `REQUEST_RECORD_DAYS`;
-- docs/privacy.md "Retention"): the job finds those past it by age, oldest first in batches,
-- without scanning the table, and vault-svc's role may now delete them.
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (tenant_id, created_at);
GRANT DELETE ON idempotency_keys TO strongroom_vault;
