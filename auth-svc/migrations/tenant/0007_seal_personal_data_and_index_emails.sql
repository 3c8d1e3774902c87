-- Personal data is written only sealed (issue: privacy by construction). Each user's email and
-- display name, and each session's client address and user agent, are transit ciphertexts of
-- vault-svc under the user's subject key, bound to tenant, table, column and row: deleting the
-- user shreds that key, and every copy of the row (WAL, backups, dumps) becomes unreadable.
--
-- Logins and uniqueness use a keyed blind index of the normalized email: HMAC-SHA-256 under a
-- tenant key that auth-svc keeps wrapped by vault-svc (`email_index_keys`), one row per key
-- version. Unique per version, so the index stays unique while a rotation builds a new version
-- beside the old one; a retired version keeps its row (without its key) and loses its index.
--
-- Rows written before this migration keep their plaintext until auth-svc's sealing sweep seals
-- them (it runs at start and every `service.purge_every_secs`); the plaintext columns are
-- then empty and are dropped by a later migration. Until then, reads fall back to them.

CREATE TABLE email_index_keys (
    tenant_id   uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    version     integer NOT NULL CHECK (version >= 1),
    -- A 256-bit HMAC key, as a transit ciphertext that only auth-svc of this tenant can open;
    -- NULL once the version is retired.
    wrapped_key text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    retired_at  timestamptz,
    PRIMARY KEY (tenant_id, version),
    CHECK ((wrapped_key IS NULL) = (retired_at IS NOT NULL))
);

CREATE TABLE user_email_index (
    tenant_id   uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    key_version integer NOT NULL,
    blind       bytea NOT NULL CHECK (length(blind) = 32),
    user_id     uuid NOT NULL,
    PRIMARY KEY (tenant_id, key_version, blind),
    UNIQUE (tenant_id, key_version, user_id),
    FOREIGN KEY (tenant_id, key_version) REFERENCES email_index_keys (tenant_id, version),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);
CREATE INDEX user_email_index_user ON user_email_index (tenant_id, user_id);

ALTER TABLE users
    ADD COLUMN email_sealed text,
    ADD COLUMN display_name_sealed text,
    ADD COLUMN last_login_at timestamptz;

-- A user who is not deleted has an email: sealed, or (until the sweep) in plaintext.
DO $$
DECLARE c text;
BEGIN
    SELECT conname INTO c FROM pg_constraint
     WHERE conrelid = 'users'::regclass AND contype = 'c'
       AND pg_get_constraintdef(oid) LIKE '%''deleted''%email IS NULL%';
    IF c IS NOT NULL THEN
        EXECUTE format('ALTER TABLE users DROP CONSTRAINT %I', c);
    END IF;
END
$$;
ALTER TABLE users ADD CONSTRAINT users_identified
    CHECK (status = 'deleted' OR email_sealed IS NOT NULL OR email IS NOT NULL);
ALTER TABLE users ADD CONSTRAINT users_deleted_unnamed
    CHECK (status <> 'deleted' OR (email IS NULL AND email_sealed IS NULL AND display_name_sealed IS NULL));

ALTER TABLE sessions
    ADD COLUMN ip_sealed text,
    ADD COLUMN user_agent_sealed text,
    -- The `jti` of the newest access token issued for the session.
    ADD COLUMN access_jti uuid;

-- Nothing reads a pending login's client details; they are no longer written.
UPDATE mfa_challenges SET ip = '', user_agent = '';

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['email_index_keys', 'user_email_index'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
            USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
            WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)$p$, t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO strongroom_auth', t);
    END LOOP;
END
$$;

-- What the sealing sweep still has to seal (empty once it has).
CREATE INDEX users_unsealed ON users (tenant_id, id) WHERE email IS NOT NULL;
CREATE INDEX sessions_unsealed ON sessions (tenant_id, id) WHERE ip <> '' OR user_agent <> '';
