-- Receipts are append-only: a receipt's signature is set once, nothing else of it ever changes, and
-- no receipt is deleted. Without this, someone able to write these tables could edit transfers,
-- recompute the receipts after them and clear their signatures; verification would then see an
-- intact, merely unsigned chain, and the signer would sign the rewritten head.
CREATE FUNCTION ledger_receipt_guard() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.signature IS NULL AND NEW.signature IS NOT NULL
       AND (NEW.tenant_id, NEW.seq, NEW.prev_hash, NEW.content_hash, NEW.hash, NEW.entries, NEW.first_ts,
            NEW.last_ts, NEW.created_at)
           IS NOT DISTINCT FROM
           (OLD.tenant_id, OLD.seq, OLD.prev_hash, OLD.content_hash, OLD.hash, OLD.entries, OLD.first_ts,
            OLD.last_ts, OLD.created_at)
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'receipts are append-only (only a missing signature may be set)'
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER receipts_append_only BEFORE UPDATE OR DELETE ON receipts
    FOR EACH ROW EXECUTE FUNCTION ledger_receipt_guard();
CREATE TRIGGER receipts_no_truncate BEFORE TRUNCATE ON receipts
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_receipt_guard();
