-- Accounts, transfers, balance history, pending resolutions and the receipt chain.
-- Amounts are unsigned 128-bit integers in minor units: NUMERIC(39,0) with a range check, never a
-- float. `strongroom.owner_subject`, when set by ledger-svc (SET LOCAL) for an owner-scoped caller,
-- narrows every read to the accounts that subject owns (and the transfers touching them).

CREATE DOMAIN u128 AS numeric(39, 0) CHECK (VALUE >= 0 AND VALUE <= 340282366920938463463374607431768211455);

CREATE TABLE accounts (
    tenant_id       uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    id              uuid NOT NULL,
    ledger          text NOT NULL,
    code            integer NOT NULL CHECK (code > 0),
    owner           text NOT NULL DEFAULT '',
    flags           integer NOT NULL DEFAULT 0,
    metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
    debits_pending  u128 NOT NULL DEFAULT 0,
    debits_posted   u128 NOT NULL DEFAULT 0,
    credits_pending u128 NOT NULL DEFAULT 0,
    credits_posted  u128 NOT NULL DEFAULT 0,
    ts              bigint NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, ledger) REFERENCES ledgers (tenant_id, code)
);
CREATE INDEX accounts_owner ON accounts (tenant_id, owner);

-- Every transfer that was applied. The columns covered by the receipt hash never change; only
-- `state` of a pending transfer moves (once) to posted, voided or expired.
CREATE TABLE transfers (
    tenant_id         uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    id                uuid NOT NULL,
    debit_account_id  uuid NOT NULL,
    credit_account_id uuid NOT NULL,
    amount            u128 NOT NULL,
    pending_id        uuid,
    timeout_seconds   integer NOT NULL DEFAULT 0,
    ledger            text NOT NULL,
    code              integer NOT NULL,
    flags             integer NOT NULL,
    metadata          jsonb NOT NULL DEFAULT '{}'::jsonb,
    ts                bigint NOT NULL,
    state             text NOT NULL CHECK (state IN ('posted', 'pending', 'pending_posted', 'pending_voided', 'pending_expired')),
    expires_at        bigint,
    receipt_seq       bigint NOT NULL,
    -- SHA-256 of the submitted content, for idempotent retries.
    content_hash      bytea NOT NULL,
    debit_owner       text NOT NULL,
    credit_owner      text NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX transfers_ts ON transfers (tenant_id, ts);
CREATE INDEX transfers_debit ON transfers (tenant_id, debit_account_id, ts);
CREATE INDEX transfers_credit ON transfers (tenant_id, credit_account_id, ts);
CREATE INDEX transfers_receipt ON transfers (tenant_id, receipt_seq, ts);
CREATE INDEX transfers_expiry ON transfers (tenant_id, expires_at) WHERE state = 'pending' AND expires_at IS NOT NULL;

-- Ids that failed, with the content and the reason, so a retry gets the same answer.
CREATE TABLE transfer_failures (
    tenant_id    uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    id           uuid NOT NULL,
    reason       text NOT NULL,
    content      jsonb NOT NULL,
    content_hash bytea NOT NULL,
    ts           bigint NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

-- A pending transfer resolves at most once (the primary key says so, whatever the code does).
CREATE TABLE pending_resolutions (
    tenant_id   uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    pending_id  uuid NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('posted', 'voided', 'expired')),
    transfer_id uuid,
    amount      u128 NOT NULL,
    ts          bigint NOT NULL,
    receipt_seq bigint NOT NULL,
    PRIMARY KEY (tenant_id, pending_id)
);
CREATE INDEX pending_resolutions_receipt ON pending_resolutions (tenant_id, receipt_seq, ts);

-- Balances after every change of an account with the `history` flag.
CREATE TABLE balance_history (
    tenant_id       uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    account_id      uuid NOT NULL,
    ts              bigint NOT NULL,
    transfer_id     uuid NOT NULL,
    debits_pending  u128 NOT NULL,
    debits_posted   u128 NOT NULL,
    credits_pending u128 NOT NULL,
    credits_posted  u128 NOT NULL,
    owner           text NOT NULL,
    PRIMARY KEY (tenant_id, account_id, ts)
);

-- One receipt per committed batch: hash = SHA-256(domain ‖ seq ‖ previous hash ‖ content hash),
-- signed (Ed25519, key `ledger` in vault-svc) shortly after commit.
CREATE TABLE receipts (
    tenant_id     uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    seq           bigint NOT NULL CHECK (seq > 0),
    prev_hash     bytea NOT NULL,
    content_hash  bytea NOT NULL,
    hash          bytea NOT NULL,
    entries       integer NOT NULL,
    first_ts      bigint NOT NULL,
    last_ts       bigint NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    signature     bytea,
    key_version   integer,
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX receipts_unsigned ON receipts (tenant_id, seq) WHERE signature IS NULL;

-- The chain head: locking it serialises the tenant's batches (receipts are a chain).
CREATE TABLE receipt_head (
    tenant_id uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid PRIMARY KEY,
    seq       bigint NOT NULL,
    hash      bytea NOT NULL,
    last_ts   bigint NOT NULL
);

ALTER TABLE accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE accounts FORCE ROW LEVEL SECURITY;
ALTER TABLE transfers ENABLE ROW LEVEL SECURITY;
ALTER TABLE transfers FORCE ROW LEVEL SECURITY;
ALTER TABLE transfer_failures ENABLE ROW LEVEL SECURITY;
ALTER TABLE transfer_failures FORCE ROW LEVEL SECURITY;
ALTER TABLE pending_resolutions ENABLE ROW LEVEL SECURITY;
ALTER TABLE pending_resolutions FORCE ROW LEVEL SECURITY;
ALTER TABLE balance_history ENABLE ROW LEVEL SECURITY;
ALTER TABLE balance_history FORCE ROW LEVEL SECURITY;
ALTER TABLE receipts ENABLE ROW LEVEL SECURITY;
ALTER TABLE receipts FORCE ROW LEVEL SECURITY;
ALTER TABLE receipt_head ENABLE ROW LEVEL SECURITY;
ALTER TABLE receipt_head FORCE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON accounts
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON transfers
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON transfer_failures
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON pending_resolutions
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON balance_history
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON receipts
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON receipt_head
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);

-- Owner scope (restrictive: it narrows the tenant policy, never widens it). Unset: no narrowing.
CREATE POLICY owner_scope ON accounts AS RESTRICTIVE
    USING (COALESCE(NULLIF(current_setting('strongroom.owner_subject', true), ''), owner) = owner);
CREATE POLICY owner_scope ON transfers AS RESTRICTIVE
    USING (COALESCE(NULLIF(current_setting('strongroom.owner_subject', true), ''), debit_owner) IN (debit_owner, credit_owner));
CREATE POLICY owner_scope ON balance_history AS RESTRICTIVE
    USING (COALESCE(NULLIF(current_setting('strongroom.owner_subject', true), ''), owner) = owner);

GRANT SELECT, INSERT, UPDATE ON accounts, transfers, receipt_head TO strongroom_ledger;
GRANT SELECT, INSERT ON transfer_failures, pending_resolutions, balance_history TO strongroom_ledger;
GRANT SELECT, INSERT, UPDATE (signature, key_version) ON receipts TO strongroom_ledger;
