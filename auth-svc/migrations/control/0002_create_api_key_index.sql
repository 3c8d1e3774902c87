-- Which tenant an API key belongs to (SHA-256 of the key), so a bare key can be resolved
-- without a tenant hint. The key's row itself lives in the tenant's schema.
CREATE TABLE control.api_key_index (
    key_hash  bytea PRIMARY KEY CHECK (length(key_hash) = 32),
    tenant_id uuid NOT NULL REFERENCES control.tenants (id)
);

GRANT SELECT, INSERT, DELETE ON control.api_key_index TO strongroom_auth;
