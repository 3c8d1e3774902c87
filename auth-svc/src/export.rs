//! auth-svc's part of a terminated tenant's export bundle (see `kit::export`): the directory as
//! the tenant's admins know it. Users with their email, display name and suspension reason opened
//! (inside auth-svc, through vault-svc, which answers auth-svc for a tenant whose export is under
//! way); roles, groups, memberships and grants; session and API-key metadata (never a credential:
//! no password hash, TOTP secret, backup code, refresh token or key hash; no session address or
//! user agent); the tenant's policies.
//!
//! One file kind after another, [`PAGE`] rows per query. A terminated tenant is written by no one,
//! so offsets over a stable order resume exactly: the cursor is `<kind>:<rows done>`.

use kit::export::{Chunk, Lines, PartWriter};
use kit::{ApiError, Db, Tenant};
use sqlx::Row;

use crate::personal::{self, Item, Personal, Stored};

const PAGE: i64 = 500;

/// The metadata-only kinds: a file name and the query of one page (`$1` limit, `$2` offset), each
/// row one JSON object; personal and secret columns are left out by name.
const KINDS: [(&str, &str); 9] = [
    ("policy.jsonl", "SELECT to_jsonb(p) - 'tenant_id' FROM tenant_policy p LIMIT $1 OFFSET $2"),
    ("retention_policy.jsonl", "SELECT to_jsonb(p) - 'tenant_id' FROM identity_retention_policy p LIMIT $1 OFFSET $2"),
    ("roles.jsonl", "SELECT to_jsonb(r) - 'tenant_id' FROM roles r ORDER BY id LIMIT $1 OFFSET $2"),
    ("groups.jsonl", "SELECT to_jsonb(g) - 'tenant_id' FROM groups g ORDER BY id LIMIT $1 OFFSET $2"),
    (
        "group_members.jsonl",
        "SELECT to_jsonb(m) - 'tenant_id' FROM group_members m ORDER BY group_id, user_id LIMIT $1 OFFSET $2",
    ),
    ("role_grants.jsonl", "SELECT to_jsonb(g) - 'tenant_id' FROM role_grants g ORDER BY id LIMIT $1 OFFSET $2"),
    (
        "sessions.jsonl",
        "SELECT jsonb_build_object('id', id, 'user_id', user_id, 'amr', amr, 'mfa_at', mfa_at,
                'created_at', created_at, 'last_seen_at', last_seen_at, 'expires_at', expires_at,
                'revoked_at', revoked_at, 'revoke_reason', revoke_reason)
         FROM sessions ORDER BY id LIMIT $1 OFFSET $2",
    ),
    (
        "api_keys.jsonl",
        "SELECT jsonb_build_object('id', id, 'user_id', user_id, 'name', name, 'display', display,
                'scopes', scopes, 'minted_with_mfa', minted_with_mfa, 'created_at', created_at,
                'expires_at', expires_at, 'last_used_at', last_used_at, 'revoked_at', revoked_at)
         FROM api_keys ORDER BY id LIMIT $1 OFFSET $2",
    ),
    (
        "oauth_clients.jsonl",
        "SELECT to_jsonb(c) - 'tenant_id' - 'secret_hash' FROM oauth_clients c ORDER BY id LIMIT $1 OFFSET $2",
    ),
];

/// Users come first, then [`KINDS`] in order.
const USERS: &str = "users.jsonl";

/// Writes the `auth` part.
pub struct AuthPart {
    pub db: Db,
    pub personal: Personal,
}

/// `<kind index>:<rows done>`, kind 0 being the users.
fn parse_cursor(cursor: Option<&str>) -> Result<(usize, i64), ApiError> {
    let Some(cursor) = cursor else { return Ok((0, 0)) };
    cursor
        .split_once(':')
        .and_then(|(k, n)| Some((k.parse().ok()?, n.parse().ok()?)))
        .filter(|(k, n)| *k <= KINDS.len() && *n >= 0)
        .ok_or_else(|| ApiError::internal(&format!("export cursor {cursor:?} is not <kind>:<rows>")))
}

/// Where to go on after `rows` rows of kind `kind`, of which the last page held `last_page`.
fn after(kind: usize, rows: i64, last_page: i64) -> Option<String> {
    if last_page == PAGE {
        Some(format!("{kind}:{rows}"))
    } else if kind < KINDS.len() {
        Some(format!("{}:0", kind + 1))
    } else {
        None
    }
}

#[tonic::async_trait]
impl PartWriter for AuthPart {
    fn part(&self) -> &'static str {
        "auth"
    }

    async fn estimate(&self, tenant: &Tenant) -> Result<Option<u64>, ApiError> {
        let mut tx = self.db.begin(tenant).await?;
        let rows: i64 = tx
            .scalar(sqlx::query_scalar(
                "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM roles) + (SELECT count(*) FROM groups)
                      + (SELECT count(*) FROM group_members) + (SELECT count(*) FROM role_grants)
                      + (SELECT count(*) FROM sessions) + (SELECT count(*) FROM api_keys) + 2",
            ))
            .await?;
        tx.commit().await?;
        Ok(u64::try_from(rows).ok())
    }

    async fn next(&self, tenant: &Tenant, resume_after: Option<&str>) -> Result<Chunk, ApiError> {
        let (kind, mut done) = parse_cursor(resume_after)?;
        let mut lines = Lines::new();
        loop {
            let page = if kind == 0 {
                self.users(tenant, done, &mut lines).await?
            } else {
                let (_, query) = KINDS[kind - 1];
                let mut tx = self.db.begin(tenant).await?;
                let rows: Vec<serde_json::Value> = tx.scalars(sqlx::query_scalar(query).bind(PAGE).bind(done)).await?;
                tx.commit().await?;
                for row in &rows {
                    lines.push(row)?;
                }
                i64::try_from(rows.len()).unwrap_or(PAGE)
            };
            done += page;
            let next = after(kind, done, page);
            if lines.is_full() || next.as_deref().is_none_or(|n| !n.starts_with(&format!("{kind}:"))) {
                let name = if kind == 0 { USERS } else { KINDS[kind - 1].0 };
                return Ok(lines.into_chunk(name, next));
            }
        }
    }
}

impl AuthPart {
    /// One page of users with their personal fields opened; returns the rows read.
    async fn users(&self, tenant: &Tenant, offset: i64, lines: &mut Lines) -> Result<i64, ApiError> {
        let mut tx = self.db.begin(tenant).await?;
        let rows = sqlx::query(
            "SELECT id, email, email_sealed, display_name, display_name_sealed, suspension_reason,
                            suspension_reason_sealed, status, created_at, updated_at, last_login_at,
                            deleted_at, restricted_at, password_changed_at,
                            EXISTS (SELECT 1 FROM mfa_totp m WHERE m.user_id = u.id) AS totp_enrolled
                     FROM users u ORDER BY id LIMIT $1 OFFSET $2",
        )
        .bind(PAGE)
        .bind(offset)
        .fetch_all(tx.conn())
        .await
        .map_err(kit::tenancy::db_error)?;
        tx.commit().await?;
        let mut items = Vec::with_capacity(rows.len() * 3);
        for row in &rows {
            let id: uuid::Uuid = row.get("id");
            for (field, sealed, plain) in [
                (personal::USER_EMAIL, "email_sealed", "email"),
                (personal::USER_DISPLAY_NAME, "display_name_sealed", "display_name"),
                (personal::USER_SUSPENSION_REASON, "suspension_reason_sealed", "suspension_reason"),
            ] {
                let value = Stored::of(row.get(sealed), row.get(plain));
                items.push(Item { field, row: id, subject: id, value });
            }
        }
        let opened = zeroize::Zeroizing::new(self.personal.open(tenant, items).await?);
        for (row, fields) in rows.iter().zip(opened.chunks(3)) {
            let text = |i: usize| fields.get(i).filter(|v| !v.is_empty()).cloned();
            let at = |c: &str| row.get::<Option<chrono::DateTime<chrono::Utc>>, _>(c);
            lines.push(&serde_json::json!({
                "id": row.get::<uuid::Uuid, _>("id"),
                "email": text(0),
                "display_name": text(1),
                "suspension_reason": text(2),
                "status": row.get::<String, _>("status"),
                "totp_enrolled": row.get::<bool, _>("totp_enrolled"),
                "created_at": at("created_at"),
                "updated_at": at("updated_at"),
                "last_login_at": at("last_login_at"),
                "password_changed_at": at("password_changed_at"),
                "restricted_at": at("restricted_at"),
                "deleted_at": at("deleted_at"),
            }))?;
        }
        Ok(i64::try_from(rows.len()).unwrap_or(PAGE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_walks_every_kind_once_and_ends() {
        assert_eq!(parse_cursor(None).expect("none"), (0, 0));
        assert_eq!(parse_cursor(Some("3:1500")).expect("cursor"), (3, 1500));
        assert!(parse_cursor(Some("10:0")).is_err());
        assert!(parse_cursor(Some("x")).is_err());
        // A full page stays on its kind; a short one moves on; the last kind's short page ends.
        assert_eq!(after(0, PAGE, PAGE).as_deref(), Some("0:500"));
        assert_eq!(after(0, 7, 7).as_deref(), Some("1:0"));
        assert_eq!(after(KINDS.len(), 3, 3), None);
    }
}
