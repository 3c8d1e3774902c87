-- Every session and API key revoked (or deleted while live) in the last hour, whoever did it (a
-- trigger on each tenant's sessions and api_keys writes the row in the same transaction). auth-svc lists them
-- in Redis (`kit::revocation`): at once after the change, again every second while `listed_at`
-- is empty (Redis did not take it), and all of them when Redis has lost its list. An hour is
-- longer than any access token lives (15 minutes) and than a verifier caches an API key (30 s);
-- older rows are removed.
CREATE TABLE control.revocations (
    kind       text NOT NULL CHECK (kind IN ('session', 'api_key')),
    id         uuid NOT NULL,
    tenant_id  uuid NOT NULL,
    revoked_at timestamptz NOT NULL DEFAULT now(),
    listed_at  timestamptz,
    PRIMARY KEY (kind, id)
);
CREATE INDEX revocations_unlisted ON control.revocations (tenant_id, revoked_at) WHERE listed_at IS NULL;
CREATE INDEX revocations_age ON control.revocations (revoked_at);

GRANT SELECT, INSERT, UPDATE, DELETE ON control.revocations TO strongroom_auth;

-- Trigger function of the tenant tables: TG_ARGV[0] is the kind. A revocation is written once
-- (revoking again keeps the first time); deleting a live row counts as revoking it.
CREATE FUNCTION control.record_revocation() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO control.revocations (kind, id, tenant_id)
        VALUES (TG_ARGV[0], OLD.id, OLD.tenant_id)
        ON CONFLICT (kind, id) DO NOTHING;
    ELSE
        INSERT INTO control.revocations (kind, id, tenant_id, revoked_at)
        VALUES (TG_ARGV[0], NEW.id, NEW.tenant_id, NEW.revoked_at)
        ON CONFLICT (kind, id) DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;
