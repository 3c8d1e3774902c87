-- Privilege follows permissions, not role names: a user holding any permission listed here is
-- privileged (a second factor is required at login and checked again at every refresh grant),
-- whatever role, built-in or custom, carries it. The defaults make owner, admin and
-- security_admin privileged, and operator, auditor, member and viewer not.
ALTER TABLE tenant_policy ADD COLUMN privileged_permissions text[] NOT NULL DEFAULT ARRAY[
    'users.write', 'users.suspend', 'users.delete', 'roles.write', 'roles.grant', 'groups.write',
    'sessions.revoke', 'api_keys.revoke', 'tenant.policy.write', 'vault.secrets.destroy',
    'ledger.ledgers.create'] CHECK (cardinality(privileged_permissions) > 0);

-- Second-factor failures are counted per account, across login challenges and step-ups, and a
-- correct password does not reset them: an attacker who knows the password cannot get fresh
-- guesses by starting a new challenge. After the policy's threshold the second factor is locked
-- for the policy's window, doubled at each further lockout (at most 64 windows).
ALTER TABLE users
    ADD COLUMN mfa_failures     integer NOT NULL DEFAULT 0 CHECK (mfa_failures >= 0),
    ADD COLUMN mfa_lockouts     integer NOT NULL DEFAULT 0 CHECK (mfa_lockouts >= 0),
    ADD COLUMN mfa_locked_until timestamptz;
