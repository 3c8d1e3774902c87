-- A tenant's termination and its export bundle (`strongroom tenant terminate`).
--
-- auth-svc records the termination and one part row per service in the transaction that flips the
-- tenant to `terminated`. Each service then writes its part as files, every file encrypted with
-- age to the recipient's X25519 key inside the service that holds the data: nothing here is ever
-- readable without the recipient's identity. audit-svc signs the manifest (with the tenant's audit
-- key) once all four parts are complete. The purge (`strongroom tenant purge`, administrative URL)
-- removes all of it with the tenant's schema and keeps a tombstone.
CREATE TABLE control.tenant_terminations (
    tenant_id          uuid PRIMARY KEY,
    slug               text NOT NULL UNIQUE,
    recipient          text NOT NULL CHECK (recipient ~ '^age1[02-9ac-hj-np-z]{58}$'),
    reason             text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    terminated_by      text NOT NULL,
    terminated_at      timestamptz NOT NULL DEFAULT now(),
    export_until       timestamptz NOT NULL,
    -- The manifest exactly as signed (RFC 8785 JSON), its SHA-256 and Ed25519 signature (base64).
    manifest           text,
    manifest_sha256    text,
    manifest_signature text,
    exported_at        timestamptz,
    fetched_at         timestamptz,
    CHECK ((manifest IS NULL) = (exported_at IS NULL))
);

CREATE TABLE control.tenant_export_parts (
    tenant_id     uuid NOT NULL REFERENCES control.tenant_terminations ON DELETE CASCADE,
    part          text NOT NULL CHECK (part IN ('auth', 'vault', 'audit', 'ledger')),
    rows_done     bigint NOT NULL DEFAULT 0,
    -- The writer's estimate of the part's rows, when it starts (for progress and time left).
    rows_total    bigint,
    files         integer NOT NULL DEFAULT 0,
    -- Where the part's writer resumes (its own format); NULL before the first file.
    resume_after  text,
    -- The replica writing the part holds it until `claimed_until` and renews it with every file.
    claimed_by    uuid,
    claimed_until timestamptz,
    started_at    timestamptz,
    completed_at  timestamptz,
    PRIMARY KEY (tenant_id, part)
);

CREATE TABLE control.tenant_export_files (
    tenant_id  uuid NOT NULL,
    part       text NOT NULL,
    seq        integer NOT NULL CHECK (seq > 0),
    name       text NOT NULL CHECK (name ~ '^[a-z0-9_.-]{1,80}$'),
    rows       bigint NOT NULL CHECK (rows >= 0),
    -- SHA-256 (hex) of `data`, the age file as fetched.
    sha256     text NOT NULL,
    data       bytea NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, part, seq),
    UNIQUE (tenant_id, part, name),
    FOREIGN KEY (tenant_id, part) REFERENCES control.tenant_export_parts ON DELETE CASCADE
);

-- What stays of a purged tenant: the evidence of its deletion.
CREATE TABLE control.tenant_tombstones (
    tenant_id        uuid PRIMARY KEY,
    slug             text NOT NULL UNIQUE,
    created_at       timestamptz NOT NULL,
    terminated_at    timestamptz NOT NULL,
    terminated_by    text NOT NULL,
    purged_at        timestamptz NOT NULL DEFAULT now(),
    purged_by        text NOT NULL,
    -- The tenant log's last signed checkpoint (C2SP note) and the export manifest's SHA-256.
    final_checkpoint text,
    manifest_sha256  text
);

GRANT SELECT ON control.tenant_terminations, control.tenant_export_parts, control.tenant_export_files,
    control.tenant_tombstones TO strongroom_auth, strongroom_vault, strongroom_audit, strongroom_ledger;
GRANT INSERT ON control.tenant_terminations, control.tenant_export_parts TO strongroom_auth;
GRANT UPDATE (fetched_at) ON control.tenant_terminations TO strongroom_auth;
GRANT UPDATE (manifest, manifest_sha256, manifest_signature, exported_at) ON control.tenant_terminations
    TO strongroom_audit;
GRANT UPDATE (rows_done, rows_total, files, resume_after, claimed_by, claimed_until, started_at, completed_at)
    ON control.tenant_export_parts TO strongroom_auth, strongroom_vault, strongroom_audit, strongroom_ledger;
GRANT INSERT ON control.tenant_export_files TO strongroom_auth, strongroom_vault, strongroom_audit, strongroom_ledger;
