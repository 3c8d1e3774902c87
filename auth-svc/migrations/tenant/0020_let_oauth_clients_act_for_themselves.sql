-- The client_credentials grant (docs/identity.md): a confidential client acts for itself with the
-- permissions its registration lists (each held by whoever registered or changed it, and still
-- held by its registrant when a token is minted). A client that only uses that grant needs no
-- redirect URI; one that uses the code flow still needs at least one.
ALTER TABLE oauth_clients ADD COLUMN permissions text[] NOT NULL DEFAULT '{}';
ALTER TABLE oauth_clients DROP CONSTRAINT oauth_clients_redirect_uris_check;
ALTER TABLE oauth_clients ADD CONSTRAINT oauth_clients_redirect_uris_check
    CHECK (cardinality(redirect_uris) <= 10
           AND (cardinality(redirect_uris) >= 1 OR NOT grant_types @> ARRAY['authorization_code']));
ALTER TABLE oauth_clients ADD CONSTRAINT oauth_clients_permissions_check
    CHECK (cardinality(permissions) = 0 OR grant_types @> ARRAY['client_credentials']);
