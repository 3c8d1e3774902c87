-- Rotation retires a tenant's signing key but nothing removed it: the JWKS read scanned every
-- key of every tenant ever made (about twelve per tenant and year). auth-svc's housekeeping now
-- deletes a retired key a day after it stopped signing: its sealed private half from the tenant's
-- token_signing_keys, and its public half here (by then past expires_at: no token it signed is
-- still valid).
GRANT DELETE ON control.signing_keys TO strongroom_auth;
