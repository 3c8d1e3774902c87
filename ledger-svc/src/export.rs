//! ledger-svc's part (`ledger`) of a terminated tenant's export bundle (`kit::export`): every
//! ledger, account, balance change, transfer, pending resolution and receipt as stored, the chain
//! head, and the public keys the receipts are signed with, so that the chain can be recomputed
//! and its signatures checked offline ([`verify`], `strongroom ledger verify --bundle`). It only
//! reads; the data of a terminated tenant no longer changes, so files written at different times
//! agree with each other.
//!
//! The files, in this order, each of one [`Kind`] and each kind at least one file (an empty one
//! for an empty table), JSON Lines of [`format`]'s lines: `ledgers.jsonl` (by code),
//! `accounts.jsonl` (by id), `balance-history.jsonl` (by account and time), `transfers.jsonl` (by
//! id), `resolutions.jsonl` (by pending id), `receipts.jsonl` (by sequence number),
//! `receipt-head.jsonl` (at most one line) and `receipt-keys.jsonl` (by version). A kind is cut
//! into more files at `kit::export::FILE_BYTES`; the part resumes from `<kind>` (the kind's
//! start) or `<kind>:<last key written>`.

pub mod format;
pub mod verify;

use ed25519_dalek::VerifyingKey;
use kit::client::Channel;
use kit::export::{Chunk, Lines, PartWriter};
use kit::{ApiError, Db, Tenant, TenantTx};
use proto::vault::v1::signing_service_client::SigningServiceClient;
use uuid::Uuid;

use crate::store;
use format::{AccountLine, BalanceLine, HeadLine, KeyLine, LedgerLine, ReceiptLine, ResolutionLine, TransferLine};

/// The part's name in the bundle.
pub const PART: &str = crate::SERVICE;

/// Rows read per query.
const PAGE: i64 = 1000;

/// What a file of the part holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Ledgers,
    Accounts,
    BalanceHistory,
    Transfers,
    Resolutions,
    Receipts,
    ReceiptHead,
    ReceiptKeys,
}

impl Kind {
    /// Every kind, in the order the part is written.
    pub const ALL: [Kind; 8] = [
        Kind::Ledgers,
        Kind::Accounts,
        Kind::BalanceHistory,
        Kind::Transfers,
        Kind::Resolutions,
        Kind::Receipts,
        Kind::ReceiptHead,
        Kind::ReceiptKeys,
    ];

    /// Its name in resume positions: `transfers`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ledgers => "ledgers",
            Kind::Accounts => "accounts",
            Kind::BalanceHistory => "balance-history",
            Kind::Transfers => "transfers",
            Kind::Resolutions => "resolutions",
            Kind::Receipts => "receipts",
            Kind::ReceiptHead => "receipt-head",
            Kind::ReceiptKeys => "receipt-keys",
        }
    }

    /// Its file name: `transfers.jsonl` (stored as `<seq>-transfers.jsonl.age`).
    pub fn file_name(self) -> String {
        format!("{}.jsonl", self.as_str())
    }

    /// The kind of a file named `transfers.jsonl`, or as in a bundle `0004-transfers.jsonl.age`.
    pub fn of_file(name: &str) -> Option<Kind> {
        let name = name.strip_suffix(".age").unwrap_or(name);
        let name = match name.split_once('-') {
            Some((seq, rest)) if !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()) => rest,
            _ => name,
        };
        let stem = name.strip_suffix(".jsonl")?;
        Kind::ALL.into_iter().find(|k| k.as_str() == stem)
    }

    fn next(self) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k > self)
    }
}

/// Where the part resumes: the start of a kind, or after a key of it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resume {
    kind: Kind,
    after: Option<String>,
}

impl Resume {
    fn parse(text: Option<&str>) -> Result<Self, ApiError> {
        let Some(text) = text else { return Ok(Self { kind: Kind::Ledgers, after: None }) };
        let (kind, after) = match text.split_once(':') {
            Some((kind, after)) => (kind, Some(after.to_owned())),
            None => (text, None),
        };
        let kind = Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind)
            .ok_or_else(|| ApiError::internal(&format!("ledger export cannot resume from {text:?}")))?;
        Ok(Self { kind, after })
    }
}

fn bad_position(kind: Kind, after: &str) -> ApiError {
    ApiError::internal(&format!("ledger export cannot resume {} after {after:?}", kind.as_str()))
}

fn uuid_after(kind: Kind, after: Option<&str>) -> Result<Option<Uuid>, ApiError> {
    after.map(|a| Uuid::parse_str(a).map_err(|_| bad_position(kind, a))).transpose()
}

/// Writes the `ledger` part; `signer` reaches the public keys of the receipts' signatures.
pub struct LedgerPart {
    pub db: Db,
    pub signer: Option<SigningServiceClient<Channel>>,
}

#[tonic::async_trait]
impl PartWriter for LedgerPart {
    fn part(&self) -> &'static str {
        PART
    }

    /// The part waits until the newest receipt is signed (vault-svc signs for ledger-svc while the
    /// export is under way): the chain it exports then verifies to its head.
    async fn ready(&self, tenant: &Tenant) -> Result<bool, ApiError> {
        let Some(signer) = &self.signer else { return Ok(true) };
        let mut tx = self.db.begin(tenant).await?;
        let unsigned = if store::has_tables(&mut tx).await? { store::newest_unsigned(&mut tx).await? } else { None };
        tx.commit().await?;
        if unsigned.is_some() {
            crate::receipts::sign_newest(&self.db, signer, tenant).await?;
        }
        Ok(true)
    }

    async fn next(&self, tenant: &Tenant, resume_after: Option<&str>) -> Result<Chunk, ApiError> {
        let resume = Resume::parse(resume_after)?;
        let kind = resume.kind;
        let mut lines = Lines::new();
        let mut tx = self.db.begin(tenant).await?;
        // A tenant never provisioned for the ledger has nothing in it: every file is empty.
        let cut_after = if store::has_tables(&mut tx).await? {
            match kind {
                Kind::ReceiptKeys => {
                    let versions = store::receipt_key_versions(&mut tx).await?;
                    tx.commit().await?;
                    self.keys(tenant, &versions, &mut lines).await?;
                    return Ok(lines.into_chunk(&kind.file_name(), None));
                }
                _ => fill(&mut tx, kind, resume.after.as_deref(), &mut lines).await?,
            }
        } else {
            None
        };
        tx.commit().await?;
        let resume_after = match cut_after {
            Some(key) => Some(format!("{}:{key}", kind.as_str())),
            None => kind.next().map(|k| k.as_str().to_owned()),
        };
        Ok(lines.into_chunk(&kind.file_name(), resume_after))
    }
}

impl LedgerPart {
    /// The public keys of `versions`, from vault-svc. Without a signer (development) receipts are
    /// unsigned and there is none to write; a signed receipt then fails verification as one
    /// whose signature cannot be checked.
    async fn keys(&self, tenant: &Tenant, versions: &[i32], lines: &mut Lines) -> Result<(), ApiError> {
        let Some(signer) = &self.signer else {
            if !versions.is_empty() {
                tracing::warn!(tenant = %tenant.slug, "no signer configured: the export holds no receipt keys");
            }
            return Ok(());
        };
        for &version in versions {
            let key: VerifyingKey = crate::receipts::public_key(signer, tenant, version).await?;
            lines.push(&KeyLine::new(version, &key))?;
        }
        Ok(())
    }
}

/// Appends the rows of `kind` after `after` to `lines` until they end (`None`) or the file is
/// full (the key of the last row written, where the next file starts).
async fn fill(
    tx: &mut TenantTx,
    kind: Kind,
    after: Option<&str>,
    lines: &mut Lines,
) -> Result<Option<String>, ApiError> {
    match kind {
        Kind::Ledgers => {
            let mut after = after.map(str::to_owned);
            loop {
                let rows = store::ledgers_page(tx, after.as_deref(), PAGE).await?;
                let full_page = rows.len() as i64 == PAGE;
                for (code, scale, description, created_at) in rows {
                    lines.push(&LedgerLine { code: code.clone(), scale, description, created_at })?;
                    if lines.is_full() {
                        return Ok(Some(code));
                    }
                    after = Some(code);
                }
                if !full_page {
                    return Ok(None);
                }
            }
        }
        Kind::Accounts => {
            let mut after = uuid_after(kind, after)?;
            loop {
                let rows = store::accounts_page(tx, after, PAGE).await?;
                let full_page = rows.len() as i64 == PAGE;
                for a in rows {
                    lines.push(&AccountLine::from(&a))?;
                    if lines.is_full() {
                        return Ok(Some(a.id.to_string()));
                    }
                    after = Some(a.id);
                }
                if !full_page {
                    return Ok(None);
                }
            }
        }
        Kind::BalanceHistory => {
            let mut after = after
                .map(|a| {
                    let (account, ts) = a.split_once('/').ok_or_else(|| bad_position(kind, a))?;
                    Ok::<_, ApiError>((
                        Uuid::parse_str(account).map_err(|_| bad_position(kind, a))?,
                        ts.parse::<i64>().map_err(|_| bad_position(kind, a))?,
                    ))
                })
                .transpose()?;
            loop {
                let rows = store::balance_history_page(tx, after, PAGE).await?;
                let full_page = rows.len() as i64 == PAGE;
                for h in rows {
                    lines.push(&BalanceLine::from(&h))?;
                    if lines.is_full() {
                        return Ok(Some(format!("{}/{}", h.account_id, h.ts)));
                    }
                    after = Some((h.account_id, h.ts));
                }
                if !full_page {
                    return Ok(None);
                }
            }
        }
        Kind::Transfers => {
            let mut after = uuid_after(kind, after)?;
            loop {
                let rows = store::transfers_page(tx, after, PAGE).await?;
                let full_page = rows.len() as i64 == PAGE;
                for t in rows {
                    lines.push(&TransferLine::from(&t))?;
                    if lines.is_full() {
                        return Ok(Some(t.id.to_string()));
                    }
                    after = Some(t.id);
                }
                if !full_page {
                    return Ok(None);
                }
            }
        }
        Kind::Resolutions => {
            let mut after = uuid_after(kind, after)?;
            loop {
                let rows = store::resolutions_page(tx, after, PAGE).await?;
                let full_page = rows.len() as i64 == PAGE;
                for (r, seq) in rows {
                    lines.push(&ResolutionLine::new(&r, seq))?;
                    if lines.is_full() {
                        return Ok(Some(r.pending_id.to_string()));
                    }
                    after = Some(r.pending_id);
                }
                if !full_page {
                    return Ok(None);
                }
            }
        }
        Kind::Receipts => {
            let mut after =
                after.map(|a| a.parse::<i64>().map_err(|_| bad_position(kind, a))).transpose()?.unwrap_or(0);
            loop {
                let rows = store::receipt_records(tx, after + 1, PAGE).await?;
                let full_page = rows.len() as i64 == PAGE;
                for r in rows {
                    lines.push(&ReceiptLine::from(&r))?;
                    after = r.receipt.seq;
                    if lines.is_full() {
                        return Ok(Some(after.to_string()));
                    }
                }
                if !full_page {
                    return Ok(None);
                }
            }
        }
        Kind::ReceiptHead => {
            if let Some((seq, hash, last_ts)) = store::head_record(tx).await? {
                lines.push(&HeadLine { seq, hash, last_ts })?;
            }
            Ok(None)
        }
        // Read by the caller, which asks vault-svc for them outside the transaction.
        Kind::ReceiptKeys => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_named_and_found_by_file_name() {
        for kind in Kind::ALL {
            assert_eq!(Kind::of_file(&kind.file_name()), Some(kind));
            assert_eq!(Kind::of_file(&format!("0012-{}.age", kind.file_name())), Some(kind));
        }
        assert_eq!(Kind::of_file("0001-users.jsonl.age"), None);
        assert_eq!(Kind::Receipts.next(), Some(Kind::ReceiptHead));
        assert_eq!(Kind::ReceiptKeys.next(), None);
    }

    #[test]
    fn the_part_resumes_at_a_kind_or_after_a_key() {
        assert_eq!(Resume::parse(None).expect("start"), Resume { kind: Kind::Ledgers, after: None });
        assert_eq!(Resume::parse(Some("transfers")).expect("kind"), Resume { kind: Kind::Transfers, after: None });
        let id = Uuid::from_u128(5).to_string();
        let r = Resume::parse(Some(&format!("balance-history:{id}/17"))).expect("key");
        assert_eq!((r.kind, r.after.as_deref()), (Kind::BalanceHistory, Some(format!("{id}/17").as_str())));
        assert!(Resume::parse(Some("users:1")).is_err());
        assert!(uuid_after(Kind::Accounts, Some("x")).is_err());
    }
}
