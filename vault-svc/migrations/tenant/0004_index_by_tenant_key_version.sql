-- What a rewrap still has to move, found by the tenant key version it is sealed under. Without
-- these, each rewrap batch walked the primary key from the start, stepping over every row earlier
-- batches had moved (a quadratic rewrap), and counting what remains scanned the three tables.
-- They also serve the foreign keys to tenant_keys from the referencing side.
CREATE INDEX secret_versions_by_key ON secret_versions (tenant_id, key_version) WHERE ciphertext IS NOT NULL;
CREATE INDEX subject_keys_by_key ON subject_keys (tenant_id, tenant_key_version) WHERE wrapped IS NOT NULL;
CREATE INDEX signing_keys_by_key ON signing_keys (tenant_id, tenant_key_version);
