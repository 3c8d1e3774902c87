-- Data-subject requests (access, rectification, erasure, restriction) with their due dates, and
-- the history of each: who took which step when, with a note. A request is about a user of the
-- tenant or about an external subject (an id the tenant uses for its own end users, e.g.
-- `contact:123`). Notes are personal data: sealed under the subject's key (a user's own key, or
-- one named after `external:<id>`). No foreign key to users: a request outlives its subject's
-- erasure as the record that it was honoured.
CREATE TABLE privacy_requests (
    tenant_id    uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    id           uuid NOT NULL,
    request_type text NOT NULL CHECK (request_type IN ('access', 'rectification', 'erasure', 'restriction')),
    subject_kind text NOT NULL CHECK (subject_kind IN ('user', 'external')),
    subject_id   text NOT NULL CHECK (length(subject_id) BETWEEN 1 AND 100),
    status       text NOT NULL DEFAULT 'received'
                 CHECK (status IN ('received', 'in_progress', 'completed', 'rejected')),
    -- Who filed it: the subject themselves, or a privacy officer's subject.
    filed_by     text NOT NULL,
    due_at       timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    closed_at    timestamptz,
    PRIMARY KEY (tenant_id, id),
    CHECK ((status IN ('completed', 'rejected')) = (closed_at IS NOT NULL))
);
CREATE INDEX privacy_requests_open_due ON privacy_requests (tenant_id, due_at)
    WHERE status IN ('received', 'in_progress');
CREATE INDEX privacy_requests_subject ON privacy_requests (tenant_id, subject_kind, subject_id, created_at DESC);

CREATE TABLE privacy_request_steps (
    tenant_id   uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    id          uuid NOT NULL,
    request_id  uuid NOT NULL,
    actor       text NOT NULL,
    action      text NOT NULL CHECK (action IN ('file', 'update')),
    status      text NOT NULL CHECK (status IN ('received', 'in_progress', 'completed', 'rejected')),
    note_sealed text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, request_id) REFERENCES privacy_requests (tenant_id, id)
);
CREATE INDEX privacy_request_steps_request ON privacy_request_steps (tenant_id, request_id, created_at);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['privacy_requests', 'privacy_request_steps'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
            USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
            WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)$p$, t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO strongroom_auth', t);
    END LOOP;
END
$$;

-- The built-in privacy_officer role, in every tenant (migrations run for new tenants too); a
-- custom role of that name, made before, is left as it is. The owner holds every permission, so
-- it gains the new ones (and can grant privacy_officer).
INSERT INTO roles (name, description, permissions, builtin) VALUES
    ('privacy_officer', 'Works data-subject requests: files them, moves them on, sees overdue ones', ARRAY[
        'privacy.requests.read', 'privacy.requests.write', 'users.read'], true)
ON CONFLICT (tenant_id, name) DO NOTHING;
UPDATE roles SET permissions = permissions || ARRAY['privacy.requests.read', 'privacy.requests.write']
 WHERE name = 'owner' AND builtin AND NOT permissions @> ARRAY['privacy.requests.read', 'privacy.requests.write'];
