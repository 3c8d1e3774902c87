-- Legal holds: a hold on the whole tenant or on one user (a subject) defers every deletion that
-- would touch it (docs/privacy.md, "Legal hold"). At most one active hold per scope and subject;
-- a released hold stays as the record of when and by whom it was lifted.
CREATE TABLE legal_holds (
    tenant_id    uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    id           uuid NOT NULL,
    scope        text NOT NULL CHECK (scope IN ('tenant', 'subject')),
    -- The held user, for a subject hold. No foreign key: the hold outlives the user's row.
    subject_id   uuid,
    reason       text NOT NULL CHECK (length(reason) BETWEEN 1 AND 1000),
    placed_by    text NOT NULL,
    placed_at    timestamptz NOT NULL DEFAULT now(),
    released_at  timestamptz,
    released_by  text,
    release_note text,
    PRIMARY KEY (tenant_id, id),
    CHECK ((scope = 'subject') = (subject_id IS NOT NULL)),
    CHECK ((released_at IS NULL) = (released_by IS NULL))
);
-- One active hold per (scope, subject): a tenant hold has no subject, hence the coalesce.
CREATE UNIQUE INDEX legal_holds_one_active ON legal_holds
    (tenant_id, scope, coalesce(subject_id, '00000000-0000-0000-0000-000000000000'::uuid))
    WHERE released_at IS NULL;

-- When a user's erasure was asked for while a hold covered them: they are restricted (suspended,
-- their sealed fields kept, shown only through an audited reveal) until the hold ends.
ALTER TABLE users ADD COLUMN erasure_deferred_at timestamptz;
CREATE INDEX users_erasure_deferred ON users (tenant_id, id) WHERE erasure_deferred_at IS NOT NULL;

ALTER TABLE legal_holds ENABLE ROW LEVEL SECURITY;
ALTER TABLE legal_holds FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON legal_holds
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE, DELETE ON legal_holds TO strongroom_auth;

-- The built-in privacy_officer and owner roles gain the new permissions (a custom role named
-- privacy_officer is left as it is).
UPDATE roles SET permissions = permissions || ARRAY['privacy.holds.write', 'privacy.restricted.read']
 WHERE name IN ('privacy_officer', 'owner') AND builtin
   AND NOT permissions @> ARRAY['privacy.holds.write', 'privacy.restricted.read'];
