-- Every btree on `transfers` is paid by every batch (a fifth of an 8,190-transfer batch's insert
-- time went to these two). Receipt-range reads (VerifyReceipts) use a BRIN index instead:
-- receipt_seq grows with insertion order, so block ranges stay tight. The unique index on `ts`
-- served no query; ledger-svc assigns strictly increasing timestamps under the chain-head lock
-- (receipt_head.last_ts), which is what keeps them unique.
DROP INDEX transfers_receipt;
CREATE INDEX transfers_receipt ON transfers USING brin (tenant_id, receipt_seq);
DROP INDEX transfers_ts;
