-- Indexes for the lookups by holder. The effective roles of a user (every login, refresh grant
-- and permission check) read the user's direct grants and the grants of the user's groups; the
-- unique indexes of 0002 lead with the role and the group, so each of those lookups scanned every
-- grant and every membership of the tenant. The others serve a user's API keys (newest first)
-- and MFA challenges (listed, revoked or spent by user), a group's grants, and the cascade of a
-- role's deletion to its grants (the unique indexes by role are partial, so the cascade's
-- `role_id = …` could use neither).
CREATE INDEX role_grants_by_user ON role_grants (tenant_id, user_id, role_id) WHERE user_id IS NOT NULL;
CREATE INDEX role_grants_by_group ON role_grants (tenant_id, group_id, role_id) WHERE group_id IS NOT NULL;
CREATE INDEX group_members_by_user ON group_members (tenant_id, user_id);
CREATE INDEX role_grants_by_role ON role_grants (tenant_id, role_id);
CREATE INDEX api_keys_by_user ON api_keys (tenant_id, user_id, created_at DESC);
CREATE INDEX api_keys_by_age ON api_keys (tenant_id, created_at DESC);
CREATE INDEX mfa_challenges_by_user ON mfa_challenges (tenant_id, user_id);

-- What housekeeping (auth-svc's `housekeeping`) removes, found by expiry rather than by a scan.
-- Sessions are not indexed by expiry: every refresh grant moves it, and an index on it would make
-- those updates rewrite every index of the row; a session goes with its last refresh token.
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (tenant_id, expires_at);
CREATE INDEX mfa_challenges_expiry ON mfa_challenges (tenant_id, expires_at);
