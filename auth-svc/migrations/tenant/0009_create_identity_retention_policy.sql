-- The tenant's retention policy of identity data: how long auth-svc keeps each kind of data once
-- it has ended, enforced by its housekeeping (auth-svc's `housekeeping`). One row per tenant, like
-- `tenant_policy` (audit-svc's `retention_policy` is the audit log's); the defaults replace what
-- housekeeping hard-coded before (ended sessions and their refresh tokens 30 days, MFA challenges
-- a day).
CREATE TABLE identity_retention_policy (
    tenant_id           uuid PRIMARY KEY DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    -- An ended session and its refresh tokens, kept this long after they expired.
    ended_sessions_days integer NOT NULL DEFAULT 365 CHECK (ended_sessions_days BETWEEN 1 AND 3650),
    -- A second-factor challenge, kept this long after it expired.
    mfa_challenges_days integer NOT NULL DEFAULT 1 CHECK (mfa_challenges_days BETWEEN 1 AND 3650),
    -- What is left of a deleted user (the row, their ended sessions, revoked API keys and appeals),
    -- kept this long after the deletion.
    erased_users_days   integer NOT NULL DEFAULT 30 CHECK (erased_users_days BETWEEN 1 AND 3650),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE identity_retention_policy ENABLE ROW LEVEL SECURITY;
ALTER TABLE identity_retention_policy FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON identity_retention_policy
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);

GRANT SELECT, UPDATE ON identity_retention_policy TO strongroom_auth;

INSERT INTO identity_retention_policy DEFAULT VALUES;

-- Deleted users, found by when they were deleted rather than by a scan of every user.
CREATE INDEX users_by_deletion ON users (tenant_id, deleted_at) WHERE status = 'deleted';
-- An erased user's appeals' messages, and revoked API keys' index rows, go with them; both
-- lookups are served by existing indexes (appeal_messages_appeal, the key hash's primary key).
