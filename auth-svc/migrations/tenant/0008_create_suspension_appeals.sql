-- Appeals against a user's suspension, and their messages (the user's statement and answers,
-- staff's requests for information). Message bodies are personal data: sealed under the user's
-- subject key like the user's email (deleting the user shreds them). At most one appeal of a user
-- is waiting (open or awaiting the user) at a time.
CREATE TABLE appeals (
    tenant_id         uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    id                uuid NOT NULL,
    user_id           uuid NOT NULL,
    status            text NOT NULL DEFAULT 'open'
                      CHECK (status IN ('open', 'information_requested', 'lifted', 'upheld')),
    suspension_reason text NOT NULL CHECK (length(suspension_reason) <= 500),
    decision_reason   text CHECK (decision_reason IS NULL OR length(decision_reason) <= 2000),
    decided_by        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    decided_at        timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id),
    CHECK ((status IN ('lifted', 'upheld')) = (decided_at IS NOT NULL AND decision_reason IS NOT NULL))
);
CREATE UNIQUE INDEX appeals_one_waiting ON appeals (tenant_id, user_id) WHERE status IN ('open', 'information_requested');
CREATE INDEX appeals_waiting ON appeals (tenant_id, updated_at) WHERE status IN ('open', 'information_requested');
CREATE INDEX appeals_user ON appeals (tenant_id, user_id, created_at DESC);

CREATE TABLE appeal_messages (
    tenant_id   uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    id          uuid NOT NULL,
    appeal_id   uuid NOT NULL,
    author      text NOT NULL CHECK (author IN ('user', 'staff')),
    -- Who wrote it: the user, or the staff member's subject (not shown to the user).
    author_id   text NOT NULL,
    body_sealed text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, appeal_id) REFERENCES appeals (tenant_id, id)
);
CREATE INDEX appeal_messages_appeal ON appeal_messages (tenant_id, appeal_id, created_at);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['appeals', 'appeal_messages'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
            USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
            WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)$p$, t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO strongroom_auth', t);
    END LOOP;
END
$$;
