-- A suspension's reason and an appeal's decision are free text staff write about a user, shown to
-- that user: personal data, sealed under the user's key like an email (contexts
-- users.suspension_reason, appeals.suspension_reason for the copy an appeal keeps, and
-- appeals.decision_reason). Deleting the user shreds the key. The plaintext columns stay for the
-- rows written before (and for the fixed reasons auth-svc itself writes when a legal hold or a
-- data-subject request restricts a user, which name no one); a later release drops what is left.
ALTER TABLE users ADD COLUMN suspension_reason_sealed text;
ALTER TABLE appeals ADD COLUMN suspension_reason_sealed text;
ALTER TABLE appeals ADD COLUMN decision_reason_sealed text;
ALTER TABLE appeals ALTER COLUMN suspension_reason DROP NOT NULL;
-- A suspended user has a reason, sealed or (written before, or by auth-svc itself) plain.
ALTER TABLE users DROP CONSTRAINT users_check;
ALTER TABLE users ADD CONSTRAINT users_suspended_with_a_reason
    CHECK ((status = 'suspended') = (suspension_reason IS NOT NULL OR suspension_reason_sealed IS NOT NULL));
-- A decided appeal has a decision time; its reason, sealed, goes with the user's erasure.
ALTER TABLE appeals DROP CONSTRAINT appeals_check;
ALTER TABLE appeals ADD CONSTRAINT appeals_decided_when CHECK ((status IN ('lifted', 'upheld')) = (decided_at IS NOT NULL));
