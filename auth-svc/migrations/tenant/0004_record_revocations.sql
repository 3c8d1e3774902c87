-- Every revocation of a session or an API key by any statement, and every deletion of one that was
-- live, is written to control.revocations in the same transaction, so auth-svc can list it in Redis
-- until Redis has taken it, and list it again if Redis loses its list. (Housekeeping deletes only
-- expired sessions; those are not written.)
CREATE TRIGGER sessions_revoked AFTER UPDATE OF revoked_at ON sessions
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION control.record_revocation('session');
CREATE TRIGGER sessions_deleted AFTER DELETE ON sessions
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND OLD.expires_at > now())
    EXECUTE FUNCTION control.record_revocation('session');
CREATE TRIGGER api_keys_revoked AFTER UPDATE OF revoked_at ON api_keys
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION control.record_revocation('api_key');
CREATE TRIGGER api_keys_deleted AFTER DELETE ON api_keys
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND OLD.expires_at > now())
    EXECUTE FUNCTION control.record_revocation('api_key');

-- What was revoked before this migration and may still have live tokens; Redis took it then.
INSERT INTO control.revocations (kind, id, tenant_id, revoked_at, listed_at)
SELECT 'session', id, tenant_id, revoked_at, revoked_at FROM sessions WHERE revoked_at > now() - interval '1 hour'
ON CONFLICT (kind, id) DO NOTHING;
INSERT INTO control.revocations (kind, id, tenant_id, revoked_at, listed_at)
SELECT 'api_key', id, tenant_id, revoked_at, revoked_at FROM api_keys WHERE revoked_at > now() - interval '1 hour'
ON CONFLICT (kind, id) DO NOTHING;
