//! Personal data, sealed from its first write: a user's email, display name and suspension reason,
//! a session's client address and user agent, appeal messages and decisions, request notes are
//! vault-svc transit ciphertexts under the user's subject key, bound by
//! their context to the table, the column and the row (vault-svc adds the tenant and the calling
//! service). A ciphertext moved to another row or column, another tenant or another service does
//! not open; deleting the user shreds the key, and every copy of every row (WAL, backups, dumps)
//! becomes unreadable.
//!
//! A request seals or opens everything it needs in one transit call (`EncryptBatch`,
//! `DecryptBatch`). The email's keyed blind index, which logins and uniqueness use, is
//! [`crate::email_index`]'s.

use std::collections::HashMap;

use kit::{ApiError, ErrorCode, Tenant};
use proto::vault::v1 as vault;
use vault::transit_service_client::TransitServiceClient;

use crate::error::AuthError;

/// A personal column: what a ciphertext's context names besides its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub table: &'static str,
    pub column: &'static str,
}

pub const USER_EMAIL: Field = Field { table: "users", column: "email" };
pub const USER_DISPLAY_NAME: Field = Field { table: "users", column: "display_name" };
pub const SESSION_IP: Field = Field { table: "sessions", column: "ip" };
pub const SESSION_USER_AGENT: Field = Field { table: "sessions", column: "user_agent" };
pub const USER_SUSPENSION_REASON: Field = Field { table: "users", column: "suspension_reason" };
pub const APPEAL_MESSAGE: Field = Field { table: "appeal_messages", column: "body" };
pub const APPEAL_SUSPENSION_REASON: Field = Field { table: "appeals", column: "suspension_reason" };
pub const APPEAL_DECISION_REASON: Field = Field { table: "appeals", column: "decision_reason" };
pub const PRIVACY_REQUEST_NOTE: Field = Field { table: "privacy_request_steps", column: "note" };

/// Transit calls carry at most this many items (vault-svc's limit).
const MAX_BATCH: usize = 1000;

/// A personal value as stored: sealed, or in plaintext in a row written before sealing (until the
/// sealing sweep reaches it), or nothing (a deleted user, an empty value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Stored {
    #[default]
    Absent,
    Sealed(String),
    Plain(String),
}

impl Stored {
    /// The sealed column if set, else the plaintext column of an older row.
    pub fn of(sealed: Option<String>, plain: Option<String>) -> Self {
        match (sealed, plain) {
            (Some(s), _) => Self::Sealed(s),
            (None, Some(p)) if !p.is_empty() => Self::Plain(p),
            _ => Self::Absent,
        }
    }
}

/// One personal value: which field of which row, whose it is.
#[derive(Debug, Clone)]
pub struct Item<T> {
    pub field: Field,
    pub row: uuid::Uuid,
    pub subject: uuid::Uuid,
    pub value: T,
}

fn context(field: Field, row: uuid::Uuid) -> HashMap<String, String> {
    HashMap::from([
        ("table".to_owned(), field.table.to_owned()),
        ("column".to_owned(), field.column.to_owned()),
        ("row".to_owned(), row.to_string()),
    ])
}

fn call<T>(tenant: &Tenant, msg: T) -> tonic::Request<T> {
    kit::client::with_context(tonic::Request::new(msg), Some(tenant.slug.as_str()), None, None)
}

fn vault_unavailable(s: tonic::Status) -> ApiError {
    tracing::error!(code = ?s.code(), message = %s.message(), "vault-svc transit call failed");
    AuthError::VaultUnavailable.into()
}

/// Seals and opens personal values through vault-svc.
#[derive(Clone, Debug)]
pub struct Personal {
    vault: kit::client::Channel,
}

impl Personal {
    pub fn new(vault: kit::client::Channel) -> Self {
        Self { vault }
    }

    fn transit(&self) -> TransitServiceClient<kit::client::Channel> {
        TransitServiceClient::new(self.vault.clone())
    }

    /// Seals each non-empty value, in one call; an empty value stays `None`.
    pub async fn seal(&self, tenant: &Tenant, items: &[Item<&str>]) -> Result<Vec<Option<String>>, ApiError> {
        let wanted: Vec<&Item<&str>> = items.iter().filter(|i| !i.value.is_empty()).collect();
        let mut sealed = Vec::with_capacity(wanted.len());
        for chunk in wanted.chunks(MAX_BATCH) {
            let items = chunk
                .iter()
                .map(|i| vault::EncryptRequest {
                    plaintext: i.value.as_bytes().to_vec(),
                    context: context(i.field, i.row),
                    subject: i.subject.to_string(),
                    ..Default::default()
                })
                .collect();
            let answer = self.transit().encrypt_batch(call(tenant, vault::EncryptBatchRequest { items })).await;
            for result in answer.map_err(vault_unavailable)?.into_inner().results {
                match result.result {
                    Some(vault::encrypt_batch_result::Result::Ok(ok)) => sealed.push(ok.ciphertext),
                    Some(vault::encrypt_batch_result::Result::Error(e)) => return Err(item_refused(&e)),
                    None => return Err(AuthError::VaultUnavailable.into()),
                }
            }
        }
        let mut sealed = sealed.into_iter();
        Ok(items.iter().map(|i| if i.value.is_empty() { None } else { sealed.next() }).collect())
    }

    /// Opens each value, in one call (per 1,000 sealed values): a plaintext one as it is, an absent
    /// one or one whose subject was shredded as empty. A value that does not open (moved to
    /// another row or column, altered) fails the whole request with `PERSONAL_DATA_UNREADABLE`:
    /// it is never shown, and never taken for another.
    pub async fn open(&self, tenant: &Tenant, items: Vec<Item<Stored>>) -> Result<Vec<String>, ApiError> {
        let sealed: Vec<&Item<Stored>> = items.iter().filter(|i| matches!(i.value, Stored::Sealed(_))).collect();
        let mut opened = Vec::with_capacity(sealed.len());
        for chunk in sealed.chunks(MAX_BATCH) {
            let items = chunk
                .iter()
                .map(|i| vault::DecryptRequest {
                    ciphertext: match &i.value {
                        Stored::Sealed(c) => c.clone(),
                        _ => String::new(),
                    },
                    context: context(i.field, i.row),
                    subject: i.subject.to_string(),
                })
                .collect();
            let answer = self.transit().decrypt_batch(call(tenant, vault::DecryptBatchRequest { items })).await;
            for (result, item) in answer.map_err(vault_unavailable)?.into_inner().results.into_iter().zip(chunk) {
                match result.result {
                    Some(vault::decrypt_batch_result::Result::Ok(ok)) => {
                        opened.push(String::from_utf8(ok.plaintext).map_err(|_| unreadable(item))?)
                    }
                    // The user was deleted (their key shredded) since the row was read.
                    Some(vault::decrypt_batch_result::Result::Error(e)) if e.reason == "KEY_DESTROYED" => {
                        opened.push(String::new())
                    }
                    Some(vault::decrypt_batch_result::Result::Error(e)) => {
                        tracing::error!(reason = %e.reason, "a sealed personal value did not open");
                        return Err(unreadable(item));
                    }
                    None => return Err(AuthError::VaultUnavailable.into()),
                }
            }
        }
        if opened.len() != sealed.len() {
            return Err(AuthError::VaultUnavailable.into());
        }
        let mut opened = opened.into_iter();
        Ok(items
            .into_iter()
            .map(|i| match i.value {
                Stored::Sealed(_) => opened.next().unwrap_or_default(),
                Stored::Plain(p) => p,
                Stored::Absent => String::new(),
            })
            .collect())
    }
}

fn item_refused(e: &vault::ItemError) -> ApiError {
    tracing::error!(reason = %e.reason, "vault-svc refused to seal a personal value");
    AuthError::VaultUnavailable.into()
}

/// A sealed value that does not open where it is stored: the database was altered.
fn unreadable<T>(item: &Item<T>) -> ApiError {
    tracing::error!(table = item.field.table, column = item.field.column, row = %item.row, "sealed personal value does not open");
    ApiError::new(
        ErrorCode::Internal,
        "PERSONAL_DATA_UNREADABLE",
        "stored personal data does not open where it is stored",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_bound_to_its_table_column_and_row() {
        let row = uuid::Uuid::nil();
        let c = context(USER_EMAIL, row);
        assert_eq!(c["table"], "users");
        assert_eq!(c["column"], "email");
        assert_eq!(c["row"], row.to_string());
        assert_ne!(context(USER_DISPLAY_NAME, row), c);
    }

    #[test]
    fn sealed_columns_win_over_the_plaintext_of_older_rows() {
        assert_eq!(Stored::of(Some("srv1:x".into()), Some("a@b.c".into())), Stored::Sealed("srv1:x".into()));
        assert_eq!(Stored::of(None, Some("a@b.c".into())), Stored::Plain("a@b.c".into()));
        assert_eq!(Stored::of(None, Some(String::new())), Stored::Absent);
        assert_eq!(Stored::of(None, None), Stored::Absent);
    }
}
