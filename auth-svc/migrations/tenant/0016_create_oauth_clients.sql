-- The tenant's OAuth 2 / OpenID Connect clients (auth-svc api/oauth.rs, docs/identity.md). The id
-- is the client_id. A confidential client keeps only the SHA-256 of its 256-bit secret; a public
-- one has none. Redirect URIs are matched exactly.
CREATE TABLE oauth_clients (
    tenant_id                 uuid NOT NULL DEFAULT (current_setting('strongroom.tenant_id'))::uuid,
    id                        uuid NOT NULL,
    kind                      text NOT NULL CHECK (kind IN ('public', 'confidential')),
    name                      text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    secret_hash               bytea CHECK (length(secret_hash) = 32),
    secret_created_at         timestamptz,
    redirect_uris             text[] NOT NULL CHECK (cardinality(redirect_uris) BETWEEN 1 AND 10),
    post_logout_redirect_uris text[] NOT NULL DEFAULT '{}' CHECK (cardinality(post_logout_redirect_uris) <= 10),
    allowed_scopes            text[] NOT NULL,
    grant_types               text[] NOT NULL CHECK (cardinality(grant_types) >= 1),
    first_party               boolean NOT NULL DEFAULT false,
    created_by                text NOT NULL,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (secret_hash),
    CHECK ((kind = 'confidential') = (secret_hash IS NOT NULL)),
    CHECK ((secret_hash IS NULL) = (secret_created_at IS NULL)),
    CHECK (kind = 'confidential' OR NOT grant_types @> ARRAY['client_credentials'])
);

ALTER TABLE oauth_clients ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_clients FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON oauth_clients
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE, DELETE ON oauth_clients TO strongroom_auth;

-- The built-in owner and admin roles manage clients (a custom role of the same name is left as it is).
UPDATE roles SET permissions = permissions || ARRAY['oauth.clients.read', 'oauth.clients.write']
 WHERE name IN ('owner', 'admin') AND builtin
   AND NOT permissions @> ARRAY['oauth.clients.read', 'oauth.clients.write'];
