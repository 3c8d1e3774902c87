//! The lines of the ledger part's files: one JSON object per stored row, every column as
//! stored. Written by [`super::LedgerPart`], read back by [`super::verify`]; the one definition
//! of the format. Amounts (u128) and nanosecond timestamps (i64) are decimal strings, since JSON
//! readers commonly lose integers beyond 2^53; hashes, signatures and keys are lower-case hex.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::engine::{HistoryRow, Resolution, ResolutionKind};
use crate::domain::receipt::Receipt;
use crate::domain::{Account, Balances, Transfer, TransferState};
use crate::store::ReceiptRecord;

/// A line of `ledgers.jsonl`: a currency or asset and its scale (decimals).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerLine {
    pub code: String,
    pub scale: i16,
    pub description: String,
    pub created_at: DateTime<Utc>,
}

/// A line of `accounts.jsonl`: an account with its balances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountLine {
    pub id: Uuid,
    pub ledger: String,
    pub code: u32,
    pub owner: String,
    /// Bits of `domain::account_flags`.
    pub flags: i32,
    pub metadata: BTreeMap<String, String>,
    #[serde(with = "decimal")]
    pub debits_pending: u128,
    #[serde(with = "decimal")]
    pub debits_posted: u128,
    #[serde(with = "decimal")]
    pub credits_pending: u128,
    #[serde(with = "decimal")]
    pub credits_posted: u128,
    /// When it was opened (nanoseconds since the epoch).
    #[serde(with = "decimal")]
    pub ts: i64,
}

impl From<&Account> for AccountLine {
    fn from(a: &Account) -> Self {
        Self {
            id: a.id,
            ledger: a.ledger.clone(),
            code: a.code,
            owner: a.owner.clone(),
            flags: a.flags,
            metadata: a.metadata.clone(),
            debits_pending: a.balances.debits_pending,
            debits_posted: a.balances.debits_posted,
            credits_pending: a.balances.credits_pending,
            credits_posted: a.balances.credits_posted,
            ts: a.ts,
        }
    }
}

impl From<AccountLine> for Account {
    fn from(l: AccountLine) -> Self {
        Self {
            id: l.id,
            ledger: l.ledger,
            code: l.code,
            owner: l.owner,
            flags: l.flags,
            metadata: l.metadata,
            balances: Balances {
                debits_pending: l.debits_pending,
                debits_posted: l.debits_posted,
                credits_pending: l.credits_pending,
                credits_posted: l.credits_posted,
            },
            ts: l.ts,
        }
    }
}

/// A line of `balance-history.jsonl`: an account's balances after a change (accounts with the
/// `history` flag).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceLine {
    pub account_id: Uuid,
    #[serde(with = "decimal")]
    pub ts: i64,
    /// The transfer that changed them.
    pub transfer_id: Uuid,
    #[serde(with = "decimal")]
    pub debits_pending: u128,
    #[serde(with = "decimal")]
    pub debits_posted: u128,
    #[serde(with = "decimal")]
    pub credits_pending: u128,
    #[serde(with = "decimal")]
    pub credits_posted: u128,
    pub owner: String,
}

impl From<&HistoryRow> for BalanceLine {
    fn from(h: &HistoryRow) -> Self {
        Self {
            account_id: h.account_id,
            ts: h.ts,
            transfer_id: h.transfer_id,
            debits_pending: h.balances.debits_pending,
            debits_posted: h.balances.debits_posted,
            credits_pending: h.balances.credits_pending,
            credits_posted: h.balances.credits_posted,
            owner: h.owner.clone(),
        }
    }
}

impl BalanceLine {
    /// The balances it records.
    pub fn balances(&self) -> Balances {
        Balances {
            debits_pending: self.debits_pending,
            debits_posted: self.debits_posted,
            credits_pending: self.credits_pending,
            credits_posted: self.credits_posted,
        }
    }
}

/// A line of `transfers.jsonl`: a transfer as applied, with its two-phase state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferLine {
    pub id: Uuid,
    pub debit_account_id: Uuid,
    pub credit_account_id: Uuid,
    #[serde(with = "decimal")]
    pub amount: u128,
    /// The pending transfer a post or void resolves.
    pub pending_id: Option<Uuid>,
    pub timeout_seconds: u32,
    pub ledger: String,
    pub code: u32,
    /// Bits of `domain::transfer_flags`.
    pub flags: i32,
    pub metadata: BTreeMap<String, String>,
    #[serde(with = "decimal")]
    pub ts: i64,
    /// `posted`, `pending`, `pending_posted`, `pending_voided` or `pending_expired`.
    pub state: String,
    #[serde(with = "optional_decimal")]
    pub expires_at: Option<i64>,
    /// The receipt that covers it.
    pub receipt_seq: i64,
}

impl From<&Transfer> for TransferLine {
    fn from(t: &Transfer) -> Self {
        Self {
            id: t.id,
            debit_account_id: t.debit_account_id,
            credit_account_id: t.credit_account_id,
            amount: t.amount,
            pending_id: t.pending_id,
            timeout_seconds: t.timeout_seconds,
            ledger: t.ledger.clone(),
            code: t.code,
            flags: t.flags,
            metadata: t.metadata.clone(),
            ts: t.ts,
            state: t.state.as_str().to_owned(),
            expires_at: t.expires_at,
            receipt_seq: t.receipt_seq,
        }
    }
}

impl TryFrom<TransferLine> for Transfer {
    type Error = String;
    fn try_from(l: TransferLine) -> Result<Self, String> {
        let state =
            TransferState::try_parse(&l.state).ok_or_else(|| format!("unknown transfer state {:?}", l.state))?;
        Ok(Self {
            id: l.id,
            debit_account_id: l.debit_account_id,
            credit_account_id: l.credit_account_id,
            amount: l.amount,
            pending_id: l.pending_id,
            timeout_seconds: l.timeout_seconds,
            ledger: l.ledger,
            code: l.code,
            flags: l.flags,
            metadata: l.metadata,
            ts: l.ts,
            state,
            expires_at: l.expires_at,
            receipt_seq: l.receipt_seq,
        })
    }
}

/// A line of `resolutions.jsonl`: how a pending transfer was resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolutionLine {
    pub pending_id: Uuid,
    /// `posted`, `voided` or `expired`.
    pub kind: String,
    /// The post or void transfer (none for an expiry).
    pub transfer_id: Option<Uuid>,
    #[serde(with = "decimal")]
    pub amount: u128,
    #[serde(with = "decimal")]
    pub ts: i64,
    /// The receipt that covers it.
    pub receipt_seq: i64,
}

impl ResolutionLine {
    /// The line of `r`, covered by receipt `receipt_seq`.
    pub fn new(r: &Resolution, receipt_seq: i64) -> Self {
        Self {
            pending_id: r.pending_id,
            kind: r.kind.as_str().to_owned(),
            transfer_id: r.transfer_id,
            amount: r.amount,
            ts: r.ts,
            receipt_seq,
        }
    }

    /// The resolution and the receipt that covers it.
    pub fn into_parts(self) -> Result<(Resolution, i64), String> {
        let kind =
            ResolutionKind::parse(&self.kind).ok_or_else(|| format!("unknown resolution kind {:?}", self.kind))?;
        let resolution = Resolution {
            pending_id: self.pending_id,
            kind,
            transfer_id: self.transfer_id,
            amount: self.amount,
            ts: self.ts,
        };
        Ok((resolution, self.receipt_seq))
    }
}

/// A line of `receipts.jsonl`: a receipt of the chain (see `domain::receipt` for how `hash` and
/// `signature` are computed from the entries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptLine {
    pub seq: i64,
    #[serde(with = "hex")]
    pub prev_hash: Vec<u8>,
    #[serde(with = "hex")]
    pub content_hash: Vec<u8>,
    #[serde(with = "hex")]
    pub hash: Vec<u8>,
    /// How many transfers and resolutions it covers.
    pub entries: i32,
    #[serde(with = "decimal")]
    pub first_ts: i64,
    #[serde(with = "decimal")]
    pub last_ts: i64,
    pub created_at: DateTime<Utc>,
    /// Ed25519 over `strongroom.ledger.receipt.v1\n` ‖ `hash`; none while it was not signed yet.
    #[serde(with = "optional_hex")]
    pub signature: Option<Vec<u8>>,
    /// The version of the key of `receipt-keys.jsonl` the signature verifies with.
    pub key_version: Option<i32>,
}

impl From<&ReceiptRecord> for ReceiptLine {
    fn from(r: &ReceiptRecord) -> Self {
        let x = &r.receipt;
        Self {
            seq: x.seq,
            prev_hash: x.prev_hash.clone(),
            content_hash: x.content_hash.clone(),
            hash: x.hash.clone(),
            entries: x.entries,
            first_ts: r.first_ts,
            last_ts: r.last_ts,
            created_at: r.created_at,
            signature: x.signature.clone(),
            key_version: x.key_version,
        }
    }
}

impl From<ReceiptLine> for Receipt {
    fn from(l: ReceiptLine) -> Self {
        Self {
            seq: l.seq,
            prev_hash: l.prev_hash,
            content_hash: l.content_hash,
            hash: l.hash,
            entries: l.entries,
            signature: l.signature,
            key_version: l.key_version,
        }
    }
}

/// The one line of `receipt-head.jsonl` (none before the tenant's first batch): the chain head,
/// the newest receipt's sequence number and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadLine {
    pub seq: i64,
    #[serde(with = "hex")]
    pub hash: Vec<u8>,
    #[serde(with = "decimal")]
    pub last_ts: i64,
}

/// A line of `receipt-keys.jsonl`: a version of the public key receipts are signed with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLine {
    /// The vault-svc signing key: `ledger`.
    pub key_name: String,
    pub version: i32,
    /// `Ed25519`.
    pub algorithm: String,
    /// The 32-byte public key.
    #[serde(with = "hex")]
    pub public_key: Vec<u8>,
}

impl KeyLine {
    /// Version `version` of the receipt signing key.
    pub fn new(version: i32, key: &VerifyingKey) -> Self {
        Self {
            key_name: crate::receipts::KEY_NAME.to_owned(),
            version,
            algorithm: "Ed25519".to_owned(),
            public_key: key.to_bytes().to_vec(),
        }
    }

    /// The public key.
    pub fn key(&self) -> Result<VerifyingKey, String> {
        if self.algorithm != "Ed25519" {
            return Err(format!("unknown key algorithm {:?}", self.algorithm));
        }
        let bytes: [u8; 32] =
            self.public_key.as_slice().try_into().map_err(|_| "an Ed25519 public key is 32 bytes".to_owned())?;
        VerifyingKey::from_bytes(&bytes).map_err(|e| e.to_string())
    }
}

/// A number as a decimal string.
mod decimal {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr<Err: Display>,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(d)?;
        text.parse().map_err(|e| D::Error::custom(format!("{text:?}: {e}")))
    }
}

/// An optional number as a decimal string or `null`.
mod optional_decimal {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(value: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| text.parse().map_err(|e| D::Error::custom(format!("{text:?}: {e}"))))
            .transpose()
    }
}

/// Bytes as lower-case hex.
mod hex {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn encode(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn decode(text: &str) -> Result<Vec<u8>, String> {
        if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{text:?} is not hex"));
        }
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|e| e.to_string())).collect()
    }

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        decode(&String::deserialize(d)?).map_err(D::Error::custom)
    }
}

/// Optional bytes as lower-case hex or `null`.
mod optional_hex {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_str(&super::hex::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?.map(|t| super::hex::decode(&t).map_err(D::Error::custom)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_and_timestamps_are_strings_and_bytes_hex() {
        let line = ReceiptLine {
            seq: 1,
            prev_hash: vec![0, 255],
            content_hash: vec![1],
            hash: vec![0xab],
            entries: 1,
            first_ts: 1_700_000_000_000_000_001,
            last_ts: 1_700_000_000_000_000_002,
            created_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
            signature: None,
            key_version: None,
        };
        let json = serde_json::to_value(&line).expect("json");
        assert_eq!(json["prev_hash"], "00ff");
        assert_eq!(json["first_ts"], "1700000000000000001");
        assert!(json["signature"].is_null());
        assert_eq!(serde_json::from_value::<ReceiptLine>(json).expect("back"), line);

        let t: TransferLine = serde_json::from_value(serde_json::json!({
            "id": Uuid::nil(), "debit_account_id": Uuid::nil(), "credit_account_id": Uuid::nil(),
            "amount": "340282366920938463463374607431768211455", "pending_id": null, "timeout_seconds": 0,
            "ledger": "USD", "code": 1, "flags": 0, "metadata": {}, "ts": "5", "state": "posted",
            "expires_at": null, "receipt_seq": 1
        }))
        .expect("transfer");
        assert_eq!(t.amount, u128::MAX);
        assert!(Transfer::try_from(TransferLine { state: "lost".into(), ..t }).is_err());
        assert!(hex::decode("0g").is_err() && hex::decode("abc").is_err());
    }
}
