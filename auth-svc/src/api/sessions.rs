//! `SessionService`: the caller's sessions, TOTP enrolment and API keys.

use kit::ApiError;
use kit::authz::Permission;
use kit::outbox::Outcome;
use kit::tenancy::db_error;
use kit::time::to_pb;
use proto::auth::v1 as pb;
use tonic::{Request, Response, Status};

use crate::core::{Core, audit};
use crate::domain::input::parse_id;
use crate::{authn, rbac, totp};

/// `SessionService`.
#[derive(Clone, Debug)]
pub struct Sessions {
    pub core: Core,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: uuid::Uuid,
    name: String,
    display: String,
    scopes: Vec<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    expires_at: chrono::DateTime<chrono::Utc>,
    last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Where a page of API keys (newest first) ends: the last key's creation time and id, so a key
/// deleted meanwhile does not lose the place.
struct KeyCursor {
    created_at: chrono::DateTime<chrono::Utc>,
    id: uuid::Uuid,
}

impl KeyCursor {
    fn parse(token: &str) -> Result<Self, ApiError> {
        if token.is_empty() {
            // Later than any key (9999-12-31): the first page.
            let end = chrono::DateTime::from_timestamp(253_402_300_799, 0).unwrap_or_default();
            return Ok(Self { created_at: end, id: uuid::Uuid::max() });
        }
        let bad = || ApiError::invalid_field("page_token", "must be a next_page_token of this listing");
        let (micros, id) = token.split_once('.').ok_or_else(bad)?;
        let created_at = micros
            .parse::<i64>()
            .ok()
            .and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_micros)
            .ok_or_else(bad)?;
        Ok(Self { created_at, id: uuid::Uuid::parse_str(id).map_err(|_| bad())? })
    }

    fn token(&self) -> String {
        format!("{}.{}", self.created_at.timestamp_micros(), self.id)
    }
}

fn key_pb(k: KeyRow) -> pb::ApiKey {
    pb::ApiKey {
        id: k.id.to_string(),
        name: k.name,
        display: k.display,
        scopes: k.scopes,
        create_time: Some(to_pb(k.created_at)),
        expire_time: Some(to_pb(k.expires_at)),
        last_used_time: k.last_used_at.map(to_pb),
        revoke_time: k.revoked_at.map(to_pb),
    }
}

#[tonic::async_trait]
impl pb::session_service_server::SessionService for Sessions {
    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let me = self.core.authed(&request).await?;
        let own = me.user_id()?;
        let raw = &request.get_ref().user_id;
        let user = if raw.is_empty() { own } else { parse_id("user_id", raw)? };
        if user != own {
            me.require(Permission::SessionsRead)?;
        }
        let mut tx = self.core.db.begin(&me.tenant).await?;
        #[allow(clippy::type_complexity)]
        let rows: Vec<(
            uuid::Uuid,
            String,
            String,
            chrono::DateTime<chrono::Utc>,
            chrono::DateTime<chrono::Utc>,
            Option<chrono::DateTime<chrono::Utc>>,
        )> = sqlx::query_as(
            "SELECT id, ip, user_agent, created_at, last_seen_at, revoked_at FROM sessions
                  WHERE user_id = $1 AND (revoked_at IS NULL OR revoked_at > now() - interval '30 days')
                  ORDER BY created_at DESC LIMIT 200",
        )
        .bind(user)
        .fetch_all(tx.conn())
        .await
        .map_err(db_error)?;
        tx.commit().await?;
        let current = me.principal.session_id.clone().unwrap_or_default();
        let sessions = rows
            .into_iter()
            .map(|(id, ip, user_agent, created, seen, revoked)| pb::Session {
                current: id.to_string() == current,
                id: id.to_string(),
                ip,
                user_agent,
                create_time: Some(to_pb(created)),
                last_seen_time: Some(to_pb(seen)),
                revoke_time: revoked.map(to_pb),
            })
            .collect();
        Ok(Response::new(pb::ListSessionsResponse { sessions }))
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let me = self.core.authed(&request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let owner: Option<uuid::Uuid> = sqlx::query_scalar("SELECT user_id FROM sessions WHERE id = $1")
            .bind(id)
            .fetch_optional(tx.conn())
            .await
            .map_err(db_error)?;
        let owner = owner.ok_or_else(|| ApiError::not_found("SESSION_NOT_FOUND", "no such session"))?;
        if me.user_id().ok() != Some(owner) {
            me.require(Permission::SessionsRevoke)?;
        }
        authn::end_session(tx, id, "revoked", me.actor(), me.request_id.clone()).await?;
        self.core.publish_revocations(&me.tenant).await?;
        Ok(Response::new(pb::RevokeSessionResponse {}))
    }

    async fn enroll_totp(
        &self,
        request: Request<pb::EnrollTotpRequest>,
    ) -> Result<Response<pb::EnrollTotpResponse>, Status> {
        let me = self.core.authed(&request).await?;
        let user = me.user_id()?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let (email, confirmed): (Option<String>, bool) = sqlx::query_as(
            "SELECT u.email, EXISTS (SELECT 1 FROM mfa_totp m WHERE m.user_id = u.id AND m.confirmed_at IS NOT NULL)
               FROM users u WHERE u.id = $1",
        )
        .bind(user)
        .fetch_one(tx.conn())
        .await
        .map_err(db_error)?;
        if confirmed {
            return Err(ApiError::failed_precondition("TOTP_ALREADY_ENROLLED", "TOTP is already set up").into());
        }
        let seed = totp::new_seed()?;
        let sealed = totp::seal(&self.core.vault, &me.tenant, user, &seed).await?;
        sqlx::query(
            "INSERT INTO mfa_totp (user_id, sealed_seed) VALUES ($1, $2)
             ON CONFLICT (tenant_id, user_id) DO UPDATE SET sealed_seed = EXCLUDED.sealed_seed, last_step = 0, created_at = now()",
        )
        .bind(user)
        .bind(&sealed)
        .execute(tx.conn())
        .await
        .map_err(db_error)?;
        tx.record(audit(
            me.actor(),
            "mfa.totp_enroll_start",
            &format!("user/{user}"),
            Outcome::Success,
            me.request_id.clone(),
        ))
        .await?;
        tx.commit().await?;
        let (otpauth_uri, secret) =
            totp::provisioning(&seed, &self.core.settings.totp_issuer, email.as_deref().unwrap_or("user"))?;
        Ok(Response::new(pb::EnrollTotpResponse { otpauth_uri, secret }))
    }

    async fn confirm_totp(
        &self,
        request: Request<pb::ConfirmTotpRequest>,
    ) -> Result<Response<pb::ConfirmTotpResponse>, Status> {
        let me = self.core.authed(&request).await?;
        let user = me.user_id()?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let pending: Option<(String, i64)> = sqlx::query_as(
            "SELECT sealed_seed, last_step FROM mfa_totp WHERE user_id = $1 AND confirmed_at IS NULL FOR UPDATE",
        )
        .bind(user)
        .fetch_optional(tx.conn())
        .await
        .map_err(db_error)?;
        let (sealed, last) =
            pending.ok_or_else(|| ApiError::failed_precondition("NO_PENDING_TOTP", "start enrolment first"))?;
        let seed = totp::unseal(&self.core.vault, &me.tenant, user, &sealed).await?;
        let Some(step) = totp::accept(&seed, &request.get_ref().code, last, totp::now())? else {
            tx.record(audit(
                me.actor(),
                "mfa.totp_confirm",
                &format!("user/{user}"),
                Outcome::Denied,
                me.request_id.clone(),
            ))
            .await?;
            tx.commit().await?;
            return Err(ApiError::unauthenticated("INVALID_MFA", "the code is not valid").into());
        };
        sqlx::query("UPDATE mfa_totp SET confirmed_at = now(), last_step = $2 WHERE user_id = $1")
            .bind(user)
            .bind(step)
            .execute(tx.conn())
            .await
            .map_err(db_error)?;
        sqlx::query("DELETE FROM backup_codes WHERE user_id = $1")
            .bind(user)
            .execute(tx.conn())
            .await
            .map_err(db_error)?;
        let codes = totp::new_backup_codes(user)?;
        for (_, hash) in &codes {
            sqlx::query("INSERT INTO backup_codes (user_id, code_hash) VALUES ($1, $2)")
                .bind(user)
                .bind(hash)
                .execute(tx.conn())
                .await
                .map_err(db_error)?;
        }
        // The enrolling session has now passed a second factor: its next refresh is complete.
        if let Some(sid) = me.principal.session_id.as_deref().and_then(|s| uuid::Uuid::parse_str(s).ok()) {
            sqlx::query(
                "UPDATE sessions SET enrollment_only = false, mfa_at = now(),
                        amr = (SELECT array_agg(DISTINCT m) FROM unnest(amr || ARRAY['otp']) m)
                  WHERE id = $1 AND user_id = $2",
            )
            .bind(sid)
            .bind(user)
            .execute(tx.conn())
            .await
            .map_err(db_error)?;
        }
        tx.record(audit(
            me.actor(),
            "mfa.totp_enabled",
            &format!("user/{user}"),
            Outcome::Success,
            me.request_id.clone(),
        ))
        .await?;
        tx.commit().await?;
        self.core.profiles.forget(&me.tenant);
        Ok(Response::new(pb::ConfirmTotpResponse { backup_codes: codes.into_iter().map(|(c, _)| c).collect() }))
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let me = self.core.authed(&request).await?;
        me.require(Permission::ApiKeysCreate)?;
        let user = me.user_id()?;
        if me.principal.amr.iter().any(|m| m == "api_key") {
            return Err(ApiError::permission_denied("API_KEY_CANNOT_MINT", "an API key cannot create API keys").into());
        }
        let req = request.into_inner();
        let name = req.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(ApiError::invalid_field("name", "1 to 100 characters").into());
        }
        if req.scopes.is_empty() {
            return Err(ApiError::invalid_field("scopes", "at least one").into());
        }
        rbac::check_known(&req.scopes)?;
        rbac::check_subset(&req.scopes, &me.principal.permissions)?;
        let days = if req.ttl_days == 0 { 90 } else { req.ttl_days };
        if days > 365 {
            return Err(ApiError::invalid_field("ttl_days", "1 to 365").into());
        }
        let mut scopes = req.scopes.clone();
        scopes.sort();
        scopes.dedup();
        let mut tx = self.core.db.begin(&me.tenant).await?;
        // Minting a credential is as sensitive as what it carries: a key with a privileged or
        // step-up permission needs a recent second factor, or a password-only session (or a
        // stolen access token) could launder the step-up away through the key.
        let policy = crate::core::policy(&mut tx).await?;
        let sensitive: Vec<&String> = scopes.iter().filter(|s| policy.sensitive(s)).collect();
        if let (false, Err(e)) = (sensitive.is_empty(), me.principal.require_recent_mfa()) {
            tx.record(
                audit(me.actor(), "api_key.create", "api_key/new", Outcome::Denied, me.request_id.clone())
                    .detail("refused", "step_up_required")
                    .detail("sensitive_scopes", sensitive.into_iter().cloned().collect::<Vec<_>>()),
            )
            .await?;
            tx.commit().await?;
            return Err(e.into());
        }
        let minted_with_mfa = me.principal.require_recent_mfa().is_ok();
        let key = zeroize::Zeroizing::new(kit::apikey::generate().map_err(|e| ApiError::internal(&e))?);
        let hash = kit::apikey::hash(&key).to_vec();
        let row: KeyRow = sqlx::query_as(
            "INSERT INTO api_keys (user_id, name, display, key_hash, scopes, expires_at, minted_with_mfa)
             VALUES ($1, $2, $3, $4, $5, now() + make_interval(days => $6), $7)
             RETURNING id, name, display, scopes, created_at, expires_at, last_used_at, revoked_at",
        )
        .bind(user)
        .bind(&name)
        .bind(kit::apikey::display(&key))
        .bind(&hash)
        .bind(&scopes)
        .bind(days as i32)
        .bind(minted_with_mfa)
        .fetch_one(tx.conn())
        .await
        .map_err(db_error)?;
        sqlx::query("INSERT INTO control.api_key_index (key_hash, tenant_id) VALUES ($1, $2)")
            .bind(&hash)
            .bind(me.tenant.id.0)
            .execute(tx.conn())
            .await
            .map_err(db_error)?;
        tx.record(
            audit(
                me.actor(),
                "api_key.create",
                &format!("api_key/{}", row.id),
                Outcome::Success,
                me.request_id.clone(),
            )
            .detail("scopes", scopes)
            .detail("ttl_days", days),
        )
        .await?;
        tx.commit().await?;
        Ok(Response::new(pb::CreateApiKeyResponse { key: Some(key_pb(row)), api_key: key.to_string() }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let me = self.core.authed(&request).await?;
        let all = me.principal.holds(Permission::ApiKeysRead);
        let user = me.user_id()?;
        let req = request.into_inner();
        let size = ApiError::page_size(req.page_size, 100, 500)?;
        let after = KeyCursor::parse(&req.page_token)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        // Two statements, each read from its own index: as one `$1 OR user_id = $2`, a cached
        // generic plan could only scan every key of the tenant.
        const COLUMNS: &str = "id, name, display, scopes, created_at, expires_at, last_used_at, revoked_at";
        let rows: Vec<KeyRow> = if all {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM api_keys WHERE (created_at, id) < ($1, $2)
                  ORDER BY created_at DESC, id DESC LIMIT $3"
            ))
            .bind(after.created_at)
            .bind(after.id)
            .bind(size + 1)
            .fetch_all(tx.conn())
            .await
        } else {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM api_keys WHERE user_id = $4 AND (created_at, id) < ($1, $2)
                  ORDER BY created_at DESC, id DESC LIMIT $3"
            ))
            .bind(after.created_at)
            .bind(after.id)
            .bind(size + 1)
            .bind(user)
            .fetch_all(tx.conn())
            .await
        }
        .map_err(db_error)?;
        tx.commit().await?;
        let more = rows.len() as i64 > size;
        let rows: Vec<KeyRow> = rows.into_iter().take(size as usize).collect();
        let next_page_token = match rows.last() {
            Some(last) if more => KeyCursor { created_at: last.created_at, id: last.id }.token(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListApiKeysResponse { keys: rows.into_iter().map(key_pb).collect(), next_page_token }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        let me = self.core.authed(&request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let mut tx = self.core.db.begin(&me.tenant).await?;
        let owner: Option<uuid::Uuid> = sqlx::query_scalar("SELECT user_id FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(tx.conn())
            .await
            .map_err(db_error)?;
        let owner = owner.ok_or_else(|| ApiError::not_found("API_KEY_NOT_FOUND", "no such API key"))?;
        if me.user_id().ok() != Some(owner) {
            me.require(Permission::ApiKeysRevoke)?;
        }
        sqlx::query("UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1")
            .bind(id)
            .execute(tx.conn())
            .await
            .map_err(db_error)?;
        tx.record(audit(
            me.actor(),
            "api_key.revoke",
            &format!("api_key/{id}"),
            Outcome::Success,
            me.request_id.clone(),
        ))
        .await?;
        tx.commit().await?;
        self.core.publish_revocations(&me.tenant).await?;
        Ok(Response::new(pb::RevokeApiKeyResponse {}))
    }
}
