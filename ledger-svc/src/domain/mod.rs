//! Pure ledger rules: amounts, flags, transfers and the batch engine. No I/O here.

pub mod amount;
pub mod engine;
pub mod integrity;
pub mod receipt;

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Account flags (bit values as stored).
pub mod account_flags {
    pub const DEBITS_MUST_NOT_EXCEED_CREDITS: i32 = 1;
    pub const CREDITS_MUST_NOT_EXCEED_DEBITS: i32 = 2;
    pub const HISTORY: i32 = 4;
}

/// Transfer flags (bit values as stored).
pub mod transfer_flags {
    pub const LINKED: i32 = 1;
    pub const PENDING: i32 = 2;
    pub const POST_PENDING: i32 = 4;
    pub const VOID_PENDING: i32 = 8;
    pub const BALANCING_DEBIT: i32 = 16;
    pub const BALANCING_CREDIT: i32 = 32;
}

/// The id of the transfer that posts (`post`) or voids pending transfer `pending` when its client
/// gives none: derived, so that repeating the request replays it, and reserved, so that nobody can
/// take it first and block the resolution. Reserved ids are UUID version 8, which no other
/// transfer may use ([`is_reserved_id`]); a resolution may use one only when it is its own.
pub fn resolution_id(pending: Uuid, post: bool) -> Uuid {
    let action = if post { "post" } else { "void" };
    let digest = Sha256::digest(format!("strongroom.ledger.resolution\n{pending}\n{action}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Whether `id` is reserved for derived resolution ids ([`resolution_id`]).
pub fn is_reserved_id(id: Uuid) -> bool {
    id.get_version_num() == 8
}

/// A transfer as submitted (validated for shape, not yet against state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferInput {
    pub id: Uuid,
    /// Nil when absent (allowed for post/void, taken from the pending transfer).
    pub debit_account_id: Uuid,
    pub credit_account_id: Uuid,
    pub amount: u128,
    pub pending_id: Option<Uuid>,
    pub timeout_seconds: u32,
    /// Empty when absent (allowed for post/void).
    pub ledger: String,
    pub code: u32,
    pub flags: i32,
    pub metadata: BTreeMap<String, String>,
}

impl TransferInput {
    pub fn has(&self, flag: i32) -> bool {
        self.flags & flag != 0
    }

    /// SHA-256 of the submitted content (length-prefixed fields), the idempotency fingerprint.
    pub fn content_hash(&self) -> Vec<u8> {
        let mut h = Sha256::new();
        h.update(b"strongroom.ledger.transfer-request.v1");
        let metadata = serde_json::to_string(&self.metadata).unwrap_or_default();
        let pending = self.pending_id.map(|p| p.to_string()).unwrap_or_default();
        for field in [
            self.id.to_string(),
            self.debit_account_id.to_string(),
            self.credit_account_id.to_string(),
            self.amount.to_string(),
            pending,
            self.timeout_seconds.to_string(),
            self.ledger.clone(),
            self.code.to_string(),
            self.flags.to_string(),
            metadata,
        ] {
            h.update((field.len() as u32).to_be_bytes());
            h.update(field.as_bytes());
        }
        h.finalize().to_vec()
    }

    /// The first field in which `self` differs from an earlier submission `original`, with nil /
    /// empty values of a post or void matching whatever the pending transfer supplied.
    pub fn first_difference(&self, original: &TransferInput) -> &'static str {
        let resolving = self.has(transfer_flags::POST_PENDING) || self.has(transfer_flags::VOID_PENDING);
        let optional = |mine: bool| resolving && mine;
        if self.flags != original.flags {
            return "flags";
        }
        if self.debit_account_id != original.debit_account_id && !optional(self.debit_account_id.is_nil()) {
            return "debit_account_id";
        }
        if self.credit_account_id != original.credit_account_id && !optional(self.credit_account_id.is_nil()) {
            return "credit_account_id";
        }
        if self.pending_id != original.pending_id {
            return "pending_id";
        }
        if self.timeout_seconds != original.timeout_seconds {
            return "timeout_seconds";
        }
        if self.ledger != original.ledger && !optional(self.ledger.is_empty()) {
            return "ledger";
        }
        if self.code != original.code && !optional(self.code == 0) {
            return "code";
        }
        if self.metadata != original.metadata {
            return "metadata";
        }
        "amount"
    }
}

/// Stored state of a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferState {
    Posted,
    Pending,
    PendingPosted,
    PendingVoided,
    PendingExpired,
}

impl TransferState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Posted => "posted",
            Self::Pending => "pending",
            Self::PendingPosted => "pending_posted",
            Self::PendingVoided => "pending_voided",
            Self::PendingExpired => "pending_expired",
        }
    }

    pub fn parse(s: &str) -> Self {
        Self::try_parse(s).unwrap_or(Self::Posted)
    }

    /// The state named `s` ([`Self::as_str`]), if it is one.
    pub fn try_parse(s: &str) -> Option<Self> {
        match s {
            "posted" => Some(Self::Posted),
            "pending" => Some(Self::Pending),
            "pending_posted" => Some(Self::PendingPosted),
            "pending_voided" => Some(Self::PendingVoided),
            "pending_expired" => Some(Self::PendingExpired),
            _ => None,
        }
    }
}

/// A transfer as applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub id: Uuid,
    pub debit_account_id: Uuid,
    pub credit_account_id: Uuid,
    pub amount: u128,
    pub pending_id: Option<Uuid>,
    pub timeout_seconds: u32,
    pub ledger: String,
    pub code: u32,
    pub flags: i32,
    pub metadata: BTreeMap<String, String>,
    pub ts: i64,
    pub state: TransferState,
    pub expires_at: Option<i64>,
    pub receipt_seq: i64,
}

impl Transfer {
    /// The fields as they would have been submitted, for naming the field a retry changed.
    pub fn as_input(&self) -> TransferInput {
        TransferInput {
            id: self.id,
            debit_account_id: self.debit_account_id,
            credit_account_id: self.credit_account_id,
            amount: self.amount,
            pending_id: self.pending_id,
            timeout_seconds: self.timeout_seconds,
            ledger: self.ledger.clone(),
            code: self.code,
            flags: self.flags,
            metadata: self.metadata.clone(),
        }
    }
}

/// Balances of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Balances {
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
}

/// An account as the engine needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: Uuid,
    pub ledger: String,
    pub code: u32,
    pub owner: String,
    pub flags: i32,
    pub metadata: BTreeMap<String, String>,
    pub balances: Balances,
    pub ts: i64,
}

impl Account {
    pub fn has(&self, flag: i32) -> bool {
        self.flags & flag != 0
    }
}

/// The balances that `transfers`, every transfer ever applied, leave on the accounts they name:
/// what the engine keeps up to date transfer by transfer, recomputed from the transfers alone. A
/// posted transfer (a post of a pending one too, with the amount it posts) adds its amount to
/// both sides' posted balances; a pending transfer holds its amount as pending on both sides
/// until it is posted, voided or expired (its `state`); a void moves nothing of its own.
pub fn replay_balances<'a>(transfers: impl IntoIterator<Item = &'a Transfer>) -> HashMap<Uuid, Balances> {
    let mut out: HashMap<Uuid, Balances> = HashMap::new();
    for t in transfers {
        let pending = if t.flags & transfer_flags::PENDING != 0 {
            if t.state != TransferState::Pending {
                continue;
            }
            true
        } else if t.flags & transfer_flags::VOID_PENDING != 0 {
            continue;
        } else {
            false
        };
        // Wrapping: a sum beyond u128 (stored balances never are) shows as a mismatch, not a panic.
        let dr = out.entry(t.debit_account_id).or_default();
        let debits = if pending { &mut dr.debits_pending } else { &mut dr.debits_posted };
        *debits = debits.wrapping_add(t.amount);
        let cr = out.entry(t.credit_account_id).or_default();
        let credits = if pending { &mut cr.credits_pending } else { &mut cr.credits_posted };
        *credits = credits.wrapping_add(t.amount);
    }
    out
}
