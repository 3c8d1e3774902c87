-- Public halves of the keys that sign access tokens, published as the JWKS. A key is listed
-- before it signs and stays listed until the last token it signed has expired (expires_at).
CREATE TABLE control.signing_keys (
    kid        text PRIMARY KEY CHECK (length(kid) BETWEEN 1 AND 128),
    alg        text NOT NULL CHECK (alg IN ('EdDSA', 'ES256')),
    public_jwk jsonb NOT NULL,
    tenant_id  uuid REFERENCES control.tenants (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz
);

GRANT SELECT, INSERT, UPDATE ON control.signing_keys TO strongroom_auth;
