//! SQL of users: their profile, status, password and erasure, and their direct role grants at
//! creation.

use kit::time::to_pb;
use kit::{ApiError, TenantTx};
use proto::auth::v1 as pb;

use crate::email_index::Blinds;
use crate::error::AuthError;
use crate::personal::{Item, Stored, USER_DISPLAY_NAME, USER_EMAIL, USER_SUSPENSION_REASON};
use crate::store::roles::{self, Grantee};

#[derive(sqlx::FromRow)]
struct UserRow {
    id: uuid::Uuid,
    email_sealed: Option<String>,
    display_name_sealed: Option<String>,
    // Until auth tenant migration 0007's sweep seals the rows written before it.
    email: Option<String>,
    display_name: Option<String>,
    status: String,
    suspension_reason: Option<String>,
    suspension_reason_sealed: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    last_login_at: Option<chrono::DateTime<chrono::Utc>>,
    mfa_enabled: bool,
    restricted: bool,
}

const USER_COLUMNS: &str = "u.id, u.email_sealed, u.display_name_sealed, u.email, u.display_name, u.status,
    u.suspension_reason, u.suspension_reason_sealed, u.created_at, u.last_login_at, (u.erasure_deferred_at IS NOT NULL OR u.restricted_at IS NOT NULL) AS restricted,
    EXISTS (SELECT 1 FROM mfa_totp m WHERE m.user_id = u.id AND m.confirmed_at IS NOT NULL) AS mfa_enabled";

/// A user with its effective roles.
#[derive(sqlx::FromRow)]
struct WithRoles {
    #[sqlx(flatten)]
    user: UserRow,
    roles: Vec<String>,
}

/// A user as stored: its personal fields still sealed ([`crate::personal::Personal::open`] opens
/// them, then [`StoredUser::into_pb`]).
#[derive(Debug)]
pub struct StoredUser {
    pub id: uuid::Uuid,
    pub email: Stored,
    pub display_name: Stored,
    pub suspension_reason: Stored,
    /// Its erasure waits for a legal hold to end: its personal fields show only through an
    /// audited reveal.
    pub restricted: bool,
    user: pb::User,
}

impl From<WithRoles> for StoredUser {
    fn from(row: WithRoles) -> Self {
        let r = row.user;
        let user = pb::User {
            id: r.id.to_string(),
            email: String::new(),
            display_name: String::new(),
            status: match r.status.as_str() {
                "active" => pb::UserStatus::Active,
                "suspended" => pb::UserStatus::Suspended,
                _ => pb::UserStatus::Deleted,
            } as i32,
            suspension_reason: String::new(),
            mfa_enabled: r.mfa_enabled,
            roles: row.roles,
            create_time: Some(to_pb(r.created_at)),
            last_login_time: r.last_login_at.map(to_pb),
        };
        StoredUser {
            id: r.id,
            email: Stored::of(r.email_sealed, r.email),
            display_name: Stored::of(r.display_name_sealed, r.display_name),
            suspension_reason: Stored::of(r.suspension_reason_sealed, r.suspension_reason),
            restricted: r.restricted,
            user,
        }
    }
}

impl StoredUser {
    /// The sealed fields, to open in one call with others.
    pub fn personal(&self) -> [Item<Stored>; 3] {
        let item = |field, value: &Stored| Item { field, row: self.id, subject: self.id, value: value.clone() };
        [
            item(USER_EMAIL, &self.email),
            item(USER_DISPLAY_NAME, &self.display_name),
            item(USER_SUSPENSION_REASON, &self.suspension_reason),
        ]
    }

    /// The user as the API shows it, with its opened email, display name and suspension reason.
    pub fn into_pb(self, email: String, display_name: String, suspension_reason: String) -> pb::User {
        pb::User { email, display_name, suspension_reason, ..self.user }
    }
}

/// `SELECT` of users `u` as [`WithRoles`], to be followed by the statement's `WHERE`.
fn select_with_roles() -> String {
    format!("SELECT {USER_COLUMNS}, {} FROM users u", roles::effective_columns("u.id"))
}

/// User `id` with its effective roles; `USER_NOT_FOUND` when there is none.
pub async fn load_user(tx: &mut TenantTx, id: uuid::Uuid) -> Result<StoredUser, ApiError> {
    let sql = format!("{} WHERE u.id = $1", select_with_roles());
    let row: Option<WithRoles> = tx.optional(sqlx::query_as(&sql).bind(id)).await?;
    Ok(row.ok_or(AuthError::UserNotFound)?.into())
}

/// Up to `limit` users (not deleted) with ids after `after`, by id, with their effective roles.
pub async fn page(tx: &mut TenantTx, after: uuid::Uuid, limit: i64) -> Result<Vec<StoredUser>, ApiError> {
    let sql = format!("{} WHERE u.id > $1 AND u.status <> 'deleted' ORDER BY u.id LIMIT $2", select_with_roles());
    let rows: Vec<WithRoles> = tx.all(sqlx::query_as(&sql).bind(after).bind(limit)).await?;
    Ok(rows.into_iter().map(StoredUser::from).collect())
}

/// A user being created: its id (chosen before sealing, as the ciphertexts name their row), its
/// sealed personal fields and the blind index of its email.
#[derive(Debug)]
pub struct NewUser<'a> {
    pub id: uuid::Uuid,
    pub email_sealed: &'a str,
    pub display_name_sealed: Option<&'a str>,
    /// The email's blind index under every live key version.
    pub email_index: &'a Blinds,
    pub password_hash: &'a str,
}

/// Whether a user (not deleted) has the email of blind index `blinds`, or, in a row from before
/// sealing, the email `plain`.
pub async fn email_taken(tx: &mut TenantTx, blinds: &Blinds, plain: &str) -> Result<bool, ApiError> {
    let (versions, blinds) = split(blinds);
    tx.scalar(
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM user_email_index
                             WHERE (key_version, blind) IN (SELECT * FROM unnest($1::int[], $2::bytea[])))
                 OR EXISTS (SELECT 1 FROM users WHERE email = $3)",
        )
        .bind(versions)
        .bind(blinds)
        .bind(plain),
    )
    .await
}

/// `blinds` as the two arrays a statement unnests.
pub fn split(blinds: &Blinds) -> (Vec<i32>, Vec<Vec<u8>>) {
    blinds.iter().cloned().unzip()
}

/// Replaces the email of user `id` (not deleted) by `sealed`, indexed as `blinds` (its earlier
/// index rows removed); `EMAIL_TAKEN` when another user has it.
pub async fn set_email(tx: &mut TenantTx, id: uuid::Uuid, sealed: &str, blinds: &Blinds) -> Result<(), ApiError> {
    let sql =
        "UPDATE users SET email_sealed = $2, email = NULL, updated_at = now() WHERE id = $1 AND status <> 'deleted'";
    if tx.execute(sqlx::query(sql).bind(id).bind(sealed)).await? == 0 {
        return Err(AuthError::UserNotFound.into());
    }
    tx.execute(sqlx::query("DELETE FROM user_email_index WHERE user_id = $1").bind(id)).await?;
    let (versions, blinds) = split(blinds);
    let added = tx
        .execute(
            sqlx::query(
                "INSERT INTO user_email_index (key_version, blind, user_id)
                 SELECT v, b, $1 FROM unnest($2::int[], $3::bytea[]) AS x(v, b) ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(&versions)
            .bind(blinds),
        )
        .await?;
    if added != versions.len() as u64 {
        return Err(AuthError::EmailTaken.into());
    }
    Ok(())
}

/// Creates a user with `roles` granted directly (checks are the caller's business); `EMAIL_TAKEN`
/// when another user has the email.
pub async fn insert_user(
    tx: &mut TenantTx,
    u: &NewUser<'_>,
    roles: &[String],
    granted_by: &str,
) -> Result<(), ApiError> {
    let (versions, blinds) = split(u.email_index);
    let indexed: Vec<uuid::Uuid> = tx
        .scalars(
            sqlx::query_scalar(
                "WITH u AS (
                     INSERT INTO users (id, email_sealed, display_name_sealed, password_hash, password_changed_at)
                     VALUES ($1, $2, $3, $4, now()) RETURNING id
                 )
                 INSERT INTO user_email_index (key_version, blind, user_id)
                 SELECT v, b, id FROM u, unnest($5::int[], $6::bytea[]) AS x(v, b)
                 ON CONFLICT DO NOTHING RETURNING user_id",
            )
            .bind(u.id)
            .bind(u.email_sealed)
            .bind(u.display_name_sealed)
            .bind(u.password_hash)
            .bind(&versions)
            .bind(blinds),
        )
        .await?;
    if indexed.len() != versions.len() {
        // The user row is written; the caller's transaction must not commit.
        return Err(AuthError::EmailTaken.into());
    }
    for role in roles {
        let (role_id, _) = roles::by_name(tx, role).await?;
        roles::grant(tx, role_id, Grantee::User(u.id), granted_by).await?;
    }
    Ok(())
}

/// Whether the tenant has any user at all.
pub async fn any(tx: &mut TenantTx) -> Result<bool, ApiError> {
    tx.scalar(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users)")).await
}

/// Whether user `id` is active; `None` when there is no such user.
pub async fn is_active(tx: &mut TenantTx, id: uuid::Uuid) -> Result<Option<bool>, ApiError> {
    tx.optional_scalar(sqlx::query_scalar("SELECT status = 'active' FROM users WHERE id = $1").bind(id)).await
}

/// Whether user `id` was deleted (its row stays, marked deleted).
pub async fn is_deleted(tx: &mut TenantTx, id: uuid::Uuid) -> Result<bool, ApiError> {
    tx.scalar(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 AND status = 'deleted')").bind(id))
        .await
}

/// Runs `sql` (an `UPDATE users` whose `$1` is the id) and refuses with `missing` when it changed
/// no row.
async fn update_one(
    tx: &mut TenantTx,
    sql: &str,
    id: uuid::Uuid,
    text: Option<&str>,
    missing: AuthError,
) -> Result<(), ApiError> {
    let mut query = sqlx::query(sql).bind(id);
    if let Some(text) = text {
        query = query.bind(text);
    }
    if tx.execute(query).await? == 0 {
        return Err(missing.into());
    }
    Ok(())
}

/// Sets the (sealed) display name of a user who is not deleted; `USER_NOT_FOUND` otherwise.
pub async fn set_display_name(tx: &mut TenantTx, id: uuid::Uuid, sealed: Option<&str>) -> Result<(), ApiError> {
    let sql = "UPDATE users SET display_name_sealed = $2, display_name = NULL, updated_at = now()
                WHERE id = $1 AND status <> 'deleted'";
    let query = sqlx::query(sql).bind(id).bind(sealed);
    if tx.execute(query).await? == 0 {
        return Err(AuthError::UserNotFound.into());
    }
    Ok(())
}

/// Suspends a user who is not deleted, with their reason sealed; `USER_NOT_FOUND` otherwise.
pub async fn suspend(tx: &mut TenantTx, id: uuid::Uuid, reason_sealed: &str) -> Result<(), ApiError> {
    let sql = "UPDATE users SET status = 'suspended', suspension_reason_sealed = $2, suspension_reason = NULL,
                    updated_at = now()
                WHERE id = $1 AND status <> 'deleted'";
    update_one(tx, sql, id, Some(reason_sealed), AuthError::UserNotFound).await
}

/// Reactivates a suspended user; `NOT_SUSPENDED` otherwise, `USER_RESTRICTED` when their
/// erasure waits for a legal hold.
pub async fn reactivate(tx: &mut TenantTx, id: uuid::Uuid) -> Result<(), ApiError> {
    let restricted: Option<bool> = tx
        .optional_scalar(sqlx::query_scalar("SELECT erasure_deferred_at IS NOT NULL FROM users WHERE id = $1").bind(id))
        .await?;
    if restricted == Some(true) {
        return Err(AuthError::UserRestricted.into());
    }
    let sql = "UPDATE users SET status = 'active', suspension_reason = NULL, suspension_reason_sealed = NULL,
                    restricted_at = NULL, updated_at = now()
                WHERE id = $1 AND status = 'suspended'";
    update_one(tx, sql, id, None, AuthError::NotSuspended).await
}

/// Locks user `id` (not deleted) until the transaction ends; `USER_NOT_FOUND` otherwise.
pub async fn lock(tx: &mut TenantTx, id: uuid::Uuid) -> Result<(), ApiError> {
    let found: Option<uuid::Uuid> = tx
        .optional_scalar(
            sqlx::query_scalar("SELECT id FROM users WHERE id = $1 AND status <> 'deleted' FOR UPDATE").bind(id),
        )
        .await?;
    found.map(drop).ok_or_else(|| AuthError::UserNotFound.into())
}

/// Restricts a user whose erasure a legal hold defers: suspended with `reason` (no login), their
/// sealed fields kept, and since when their erasure waits (the first time it was asked for).
pub async fn restrict(tx: &mut TenantTx, id: uuid::Uuid, reason: &str) -> Result<(), ApiError> {
    let sql = "UPDATE users SET status = 'suspended', suspension_reason = $2, suspension_reason_sealed = NULL,
                    erasure_deferred_at = coalesce(erasure_deferred_at, now()), updated_at = now()
              WHERE id = $1 AND status <> 'deleted'";
    update_one(tx, sql, id, Some(reason), AuthError::UserNotFound).await
}

/// Restricts the processing of a user's data at their request: suspended with `reason` (no
/// login), their sealed fields shown only through an audited reveal, until reactivated.
pub async fn restrict_processing(tx: &mut TenantTx, id: uuid::Uuid, reason: &str) -> Result<(), ApiError> {
    let sql = "UPDATE users SET status = 'suspended', suspension_reason = $2, suspension_reason_sealed = NULL,
                    restricted_at = coalesce(restricted_at, now()), updated_at = now()
              WHERE id = $1 AND status <> 'deleted'";
    update_one(tx, sql, id, Some(reason), AuthError::UserNotFound).await
}

/// Marks a user deleted and erases what identifies them: their profile and password, their email's
/// blind index (which would still confirm a guessed address), second factors, pending logins,
/// memberships, grants and their sessions' client details (the sessions themselves and API keys
/// are ended by the caller). Copies of the sealed fields kept elsewhere (WAL, backups) open no
/// more once the caller has shredded the user's key. `USER_NOT_FOUND` when there is no such user
/// or it is deleted already.
pub async fn erase(tx: &mut TenantTx, id: uuid::Uuid) -> Result<(), ApiError> {
    let sql = "UPDATE users SET status = 'deleted', email = NULL, display_name = NULL, email_sealed = NULL,
                    display_name_sealed = NULL, password_hash = NULL, suspension_reason = NULL, suspension_reason_sealed = NULL,
                    last_login_at = NULL, erasure_deferred_at = NULL, deleted_at = now(), updated_at = now()
              WHERE id = $1 AND status <> 'deleted'";
    update_one(tx, sql, id, None, AuthError::UserNotFound).await?;
    for sql in [
        "DELETE FROM mfa_totp WHERE user_id = $1",
        "DELETE FROM backup_codes WHERE user_id = $1",
        "DELETE FROM mfa_challenges WHERE user_id = $1",
        "DELETE FROM group_members WHERE user_id = $1",
        "DELETE FROM role_grants WHERE user_id = $1",
        "DELETE FROM user_email_index WHERE user_id = $1",
        "DELETE FROM oauth_codes WHERE user_id = $1",
        "DELETE FROM passkeys WHERE user_id = $1",
        "DELETE FROM webauthn_ceremonies WHERE user_id = $1",
        "UPDATE sessions SET ip = '', user_agent = '', ip_sealed = NULL, user_agent_sealed = NULL WHERE user_id = $1",
    ] {
        tx.execute(sqlx::query(sql).bind(id)).await?;
    }
    Ok(())
}

/// The user's password hash (none for a deleted user), locked until the transaction ends.
pub async fn password_hash_for_update(tx: &mut TenantTx, id: uuid::Uuid) -> Result<Option<String>, ApiError> {
    Ok(tx
        .optional_scalar(sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1 FOR UPDATE").bind(id))
        .await?
        .flatten())
}

/// Stores a new hash of the user's password: a password the user `changed`, or the same one
/// hashed again with the current parameters.
pub async fn set_password_hash(tx: &mut TenantTx, id: uuid::Uuid, hash: &str, changed: bool) -> Result<(), ApiError> {
    let sql = if changed {
        "UPDATE users SET password_hash = $2, password_changed_at = now(), updated_at = now() WHERE id = $1"
    } else {
        "UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1"
    };
    tx.execute(sqlx::query(sql).bind(id).bind(hash)).await?;
    Ok(())
}
