-- Indexes for the lookups by holder. The effective roles of a user (every login, refresh grant
-- and permission check) read the user's direct grants and the grants of the user's groups; the
-- unique indexes of 0002 lead with the role and the group, so each of those lookups scanned every
-- grant and every membership of the tenant. The others serve a user's API keys and MFA
-- challenges (listed, revoked or spent by user) and a group's grants.
CREATE INDEX role_grants_by_user ON role_grants (tenant_id, user_id, role_id) WHERE user_id IS NOT NULL;
CREATE INDEX role_grants_by_group ON role_grants (tenant_id, group_id, role_id) WHERE group_id IS NOT NULL;
CREATE INDEX group_members_by_user ON group_members (tenant_id, user_id);
CREATE INDEX api_keys_by_user ON api_keys (tenant_id, user_id);
CREATE INDEX mfa_challenges_by_user ON mfa_challenges (tenant_id, user_id);
