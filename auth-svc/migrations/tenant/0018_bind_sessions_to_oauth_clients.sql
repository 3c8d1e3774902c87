-- A session opened by the OAuth code flow belongs to its client: only that client refreshes it (at
-- the token endpoint, authenticated), `/v1/auth/refresh` does not, and deleting the client ends it.
-- No foreign key: the session outlives the client's row as the record of what it was.
ALTER TABLE sessions ADD COLUMN oauth_client_id uuid;
CREATE INDEX sessions_by_oauth_client ON sessions (tenant_id, oauth_client_id) WHERE oauth_client_id IS NOT NULL;
