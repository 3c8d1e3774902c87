-- The row-level-security policies read the tenant id (and the owner scope) from the transaction's
-- settings. Written as a plain expression, PostgreSQL evaluates it for every row a statement
-- checks or writes: a setting lookup and a text-to-uuid parse per row, twice per row of an
-- 8,190-transfer batch insert (its WITH CHECK) and once per row every read filters. Wrapped in a
-- scalar subquery it is evaluated once per statement (an initPlan) and compared as a constant.
-- The policies say exactly what they said before: the settings cannot change within a statement.
ALTER POLICY tenant_isolation ON ledgers
    USING (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid));
ALTER POLICY tenant_isolation ON accounts
    USING (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid));
ALTER POLICY tenant_isolation ON transfers
    USING (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid));
ALTER POLICY tenant_isolation ON transfer_failures
    USING (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid));
ALTER POLICY tenant_isolation ON pending_resolutions
    USING (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid));
ALTER POLICY tenant_isolation ON balance_history
    USING (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid));
ALTER POLICY tenant_isolation ON receipts
    USING (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid));
ALTER POLICY tenant_isolation ON receipt_head
    USING (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid));

ALTER POLICY owner_scope ON accounts
    USING (COALESCE((SELECT NULLIF(current_setting('strongroom.owner_subject', true), '')), owner) = owner);
ALTER POLICY owner_scope ON transfers
    USING (COALESCE((SELECT NULLIF(current_setting('strongroom.owner_subject', true), '')), debit_owner)
           IN (debit_owner, credit_owner));
ALTER POLICY owner_scope ON balance_history
    USING (COALESCE((SELECT NULLIF(current_setting('strongroom.owner_subject', true), '')), owner) = owner);
