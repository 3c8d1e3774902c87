//! Offline verification of the ledger part of an export bundle, from its decrypted files alone:
//! every receipt recomputed from the transfers and resolutions it covers and checked against the
//! chain and its signature ([`ChainCheck`], as `VerifyReceipts` checks the stored chain), every
//! entry covered by a receipt of the chain, every pending transfer's state as its resolution left
//! it, every account's balances as its transfers leave them, and each ledger's debits equal to
//! its credits. It reads no database and trusts nothing but the keys of `receipt-keys.jsonl`
//! (which the signed manifest vouches for, as for every file).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ed25519_dalek::VerifyingKey;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::Kind;
use super::format::{
    AccountLine, BalanceLine, HeadLine, KeyLine, LedgerLine, ReceiptLine, ResolutionLine, TransferLine,
};
use crate::domain::engine::Resolution;
use crate::domain::receipt::{ChainCheck, GENESIS, Link, Receipt};
use crate::domain::{Account, Balances, Transfer, TransferState, account_flags, replay_balances, transfer_flags};

/// Why the ledger part does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    /// A file that is not of the format.
    #[error("{file}, line {line}: {reason}")]
    Malformed { file: String, line: usize, reason: String },
    /// A receipt that does not verify (as `strongroom ledger verify` reports one).
    #[error("receipt {first_bad_seq} does not verify: {problem} ({checked} receipts checked before it)")]
    Receipt { first_bad_seq: u64, problem: String, checked: u64 },
    /// Files that do not agree with each other.
    #[error("{0}")]
    Inconsistent(String),
}

fn inconsistent(text: impl Into<String>) -> BundleError {
    BundleError::Inconsistent(text.into())
}

/// What a verified ledger part holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartVerification {
    pub files: usize,
    pub ledgers: u64,
    pub accounts: u64,
    pub balance_changes: u64,
    pub transfers: u64,
    pub resolutions: u64,
    /// Receipts recomputed and checked, signatures included.
    pub receipts: u64,
    /// The newest receipts, not signed before the tenant was terminated (their hashes chain, but
    /// no signature vouches for them).
    pub unsigned: u64,
    pub head_hash: Vec<u8>,
    /// The versions of the signing key the receipts are signed with.
    pub key_versions: Vec<i32>,
}

/// The ledger part read file by file, in sequence order, then checked as a whole ([`Self::finish`]).
#[derive(Debug, Default)]
pub struct PartVerifier {
    files: usize,
    last: Option<Kind>,
    seen: BTreeSet<Kind>,
    ledgers: Vec<LedgerLine>,
    accounts: Vec<Account>,
    history: Vec<BalanceLine>,
    transfers: Vec<Transfer>,
    resolutions: Vec<(Resolution, i64)>,
    receipts: Vec<Receipt>,
    heads: Vec<HeadLine>,
    keys: BTreeMap<i32, VerifyingKey>,
}

fn lines<T: DeserializeOwned>(file: &str, body: &[u8]) -> Result<Vec<T>, BundleError> {
    body.split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(i, line)| {
            serde_json::from_slice(line).map_err(|e| BundleError::Malformed {
                file: file.to_owned(),
                line: i + 1,
                reason: e.to_string(),
            })
        })
        .collect()
}

fn converted<T, U>(file: &str, rows: Vec<T>, f: impl Fn(T) -> Result<U, String>) -> Result<Vec<U>, BundleError> {
    rows.into_iter()
        .enumerate()
        .map(|(i, row)| f(row).map_err(|reason| BundleError::Malformed { file: file.to_owned(), line: i + 1, reason }))
        .collect()
}

impl PartVerifier {
    /// Before the part's first file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes in the part's next file: `name` as in the bundle (`0004-transfers.jsonl.age`) or
    /// its kind's name (`transfers.jsonl`), `body` its decrypted JSON Lines. Returns its lines.
    pub fn file(&mut self, name: &str, body: &[u8]) -> Result<u64, BundleError> {
        let kind = Kind::of_file(name).ok_or_else(|| inconsistent(format!("{name} is no file of the ledger part")))?;
        if self.last.is_some_and(|last| kind < last) {
            return Err(inconsistent(format!("{name} comes after the part's later files")));
        }
        self.last = Some(kind);
        self.seen.insert(kind);
        self.files += 1;
        let before = self.rows();
        match kind {
            Kind::Ledgers => self.ledgers.extend(lines::<LedgerLine>(name, body)?),
            Kind::Accounts => self.accounts.extend(lines::<AccountLine>(name, body)?.into_iter().map(Account::from)),
            Kind::BalanceHistory => self.history.extend(lines::<BalanceLine>(name, body)?),
            Kind::Transfers => {
                self.transfers.extend(converted(name, lines::<TransferLine>(name, body)?, Transfer::try_from)?)
            }
            Kind::Resolutions => self.resolutions.extend(converted(
                name,
                lines::<ResolutionLine>(name, body)?,
                ResolutionLine::into_parts,
            )?),
            Kind::Receipts => self.receipts.extend(lines::<ReceiptLine>(name, body)?.into_iter().map(Receipt::from)),
            Kind::ReceiptHead => self.heads.extend(lines::<HeadLine>(name, body)?),
            Kind::ReceiptKeys => {
                for (version, key) in converted(name, lines::<KeyLine>(name, body)?, |k| Ok((k.version, k.key()?)))? {
                    if self.keys.insert(version, key).is_some() {
                        return Err(inconsistent(format!("receipt key version {version} is listed twice")));
                    }
                }
            }
        }
        Ok(self.rows() - before)
    }

    fn rows(&self) -> u64 {
        (self.ledgers.len()
            + self.accounts.len()
            + self.history.len()
            + self.transfers.len()
            + self.resolutions.len()
            + self.receipts.len()
            + self.heads.len()
            + self.keys.len()) as u64
    }

    /// Checks the part as a whole: the first problem found, or what it holds.
    pub fn finish(self) -> Result<PartVerification, BundleError> {
        if let Some(kind) = Kind::ALL.into_iter().find(|k| !self.seen.contains(k)) {
            return Err(inconsistent(format!("the ledger part has no {}", kind.file_name())));
        }
        let (receipts, unsigned, head_hash) = self.chain()?;
        self.two_phase()?;
        self.balances()?;
        Ok(PartVerification {
            files: self.files,
            ledgers: self.ledgers.len() as u64,
            accounts: self.accounts.len() as u64,
            balance_changes: self.history.len() as u64,
            transfers: self.transfers.len() as u64,
            resolutions: self.resolutions.len() as u64,
            receipts,
            unsigned,
            head_hash,
            key_versions: self.keys.keys().copied().collect(),
        })
    }

    /// Recomputes every receipt from its entries and checks the chain up to its head: the
    /// receipts checked, the newest unsigned and the head's hash.
    fn chain(&self) -> Result<(u64, u64, Vec<u8>), BundleError> {
        // Each receipt's entries, in timestamp order (as the store reads them for a verification).
        let mut entries: HashMap<i64, (Vec<usize>, Vec<usize>)> = HashMap::new();
        for (i, t) in self.transfers.iter().enumerate() {
            entries.entry(t.receipt_seq).or_default().0.push(i);
        }
        for (i, (_, seq)) in self.resolutions.iter().enumerate() {
            entries.entry(*seq).or_default().1.push(i);
        }
        let mut chain = ChainCheck::new(Link::genesis(), true);
        for r in &self.receipts {
            if r.seq != chain.next_seq() {
                chain.missing();
                break;
            }
            let (mut ts, mut rs) = entries.remove(&r.seq).unwrap_or_default();
            ts.sort_by_key(|&i| self.transfers[i].ts);
            rs.sort_by_key(|&i| self.resolutions[i].0.ts);
            let transfers: Vec<Transfer> = ts.iter().map(|&i| self.transfers[i].clone()).collect();
            let resolutions: Vec<Resolution> = rs.iter().map(|&i| self.resolutions[i].0.clone()).collect();
            let key = chain.key_version(r).and_then(|v| self.keys.get(&v));
            chain.receipt(r, &transfers, &resolutions, key);
            if chain.is_broken() {
                break;
            }
        }
        let (head_seq, head_hash) = match self.heads.as_slice() {
            [] => (0, GENESIS.to_vec()),
            [head] => (head.seq, head.hash.clone()),
            _ => return Err(inconsistent("receipt-head.jsonl holds more than one head")),
        };
        let (v, _) = chain.finish(head_seq, &head_hash);
        if v.first_bad_seq != 0 {
            return Err(BundleError::Receipt {
                first_bad_seq: v.first_bad_seq,
                problem: v.problem,
                checked: v.checked,
            });
        }
        // An entry under no receipt of the chain is vouched for by none.
        if let Some((seq, (ts, rs))) = entries.iter().min_by_key(|(seq, _)| **seq) {
            let what = match (ts.first(), rs.first()) {
                (Some(&i), _) => format!("transfer {}", self.transfers[i].id),
                (None, Some(&i)) => format!("resolution of pending transfer {}", self.resolutions[i].0.pending_id),
                (None, None) => "an entry".to_owned(),
            };
            return Err(inconsistent(format!("{what} names receipt {seq}, which is not in the chain")));
        }
        Ok((v.checked, v.unsigned, v.head_hash))
    }

    /// Every pending transfer is in the state its resolution (or none) left it in, and every
    /// other transfer is posted.
    fn two_phase(&self) -> Result<(), BundleError> {
        let mut resolved: HashMap<Uuid, &Resolution> = HashMap::new();
        for (r, _) in &self.resolutions {
            if resolved.insert(r.pending_id, r).is_some() {
                return Err(inconsistent(format!("pending transfer {} is resolved twice", r.pending_id)));
            }
        }
        let mut pendings = 0;
        for t in &self.transfers {
            let expected = if t.flags & transfer_flags::PENDING != 0 {
                match resolved.get(&t.id) {
                    Some(r) => {
                        pendings += 1;
                        r.kind.pending_state()
                    }
                    None => TransferState::Pending,
                }
            } else {
                TransferState::Posted
            };
            if t.state != expected {
                return Err(inconsistent(format!(
                    "transfer {} is {} but its resolutions leave it {}",
                    t.id,
                    t.state.as_str(),
                    expected.as_str()
                )));
            }
        }
        if pendings != resolved.len() {
            let ids: HashMap<Uuid, &Transfer> = self.transfers.iter().map(|t| (t.id, t)).collect();
            if let Some(r) = self
                .resolutions
                .iter()
                .map(|(r, _)| r)
                .find(|r| ids.get(&r.pending_id).is_none_or(|t| t.flags & transfer_flags::PENDING == 0))
            {
                return Err(inconsistent(format!(
                    "{} resolves {}, which is no pending transfer",
                    r.kind.as_str(),
                    r.pending_id
                )));
            }
        }
        Ok(())
    }

    /// Every account holds the balances its transfers leave it (its newest recorded balance
    /// change too, for an account with history), and in each ledger debits equal credits.
    fn balances(&self) -> Result<(), BundleError> {
        let codes: BTreeSet<&str> = self.ledgers.iter().map(|l| l.code.as_str()).collect();
        let mut accounts: HashMap<Uuid, &Account> = HashMap::new();
        for a in &self.accounts {
            if !codes.contains(a.ledger.as_str()) {
                return Err(inconsistent(format!(
                    "account {} is in ledger {}, which is not in the part",
                    a.id, a.ledger
                )));
            }
            if accounts.insert(a.id, a).is_some() {
                return Err(inconsistent(format!("account {} is listed twice", a.id)));
            }
        }
        let replayed = replay_balances(&self.transfers);
        if let Some(id) = replayed.keys().find(|id| !accounts.contains_key(id)) {
            return Err(inconsistent(format!("a transfer moves money of account {id}, which is not in the part")));
        }
        let mut newest: HashMap<Uuid, &BalanceLine> = HashMap::new();
        for h in &self.history {
            if !accounts.contains_key(&h.account_id) {
                return Err(inconsistent(format!(
                    "balance history of account {}, which is not in the part",
                    h.account_id
                )));
            }
            let entry = newest.entry(h.account_id).or_insert(h);
            if h.ts > entry.ts {
                *entry = h;
            }
        }
        let mut totals: BTreeMap<&str, Balances> = BTreeMap::new();
        for a in &self.accounts {
            let expected = replayed.get(&a.id).copied().unwrap_or_default();
            if a.balances != expected {
                return Err(inconsistent(format!(
                    "account {} holds {:?} but its transfers leave it {:?}",
                    a.id, a.balances, expected
                )));
            }
            if let Some(h) = newest.get(&a.id).filter(|_| a.has(account_flags::HISTORY))
                && h.balances() != a.balances
            {
                return Err(inconsistent(format!("account {}'s newest balance change is not its balance", a.id)));
            }
            let total = totals.entry(a.ledger.as_str()).or_default();
            total.debits_pending = total.debits_pending.wrapping_add(a.balances.debits_pending);
            total.debits_posted = total.debits_posted.wrapping_add(a.balances.debits_posted);
            total.credits_pending = total.credits_pending.wrapping_add(a.balances.credits_pending);
            total.credits_posted = total.credits_posted.wrapping_add(a.balances.credits_posted);
        }
        for (ledger, t) in totals {
            if t.debits_posted != t.credits_posted || t.debits_pending != t.credits_pending {
                return Err(inconsistent(format!("in ledger {ledger} debits do not equal credits: {t:?}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::Utc;
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;
    use crate::domain::TransferInput;
    use crate::domain::engine::{Engine, HistoryRow, Outcome, Submission};
    use crate::domain::receipt::{chain_hash, content_hash, signed_message};
    use crate::domain::transfer_flags::{POST_PENDING, VOID_PENDING};
    use crate::store::ReceiptRecord;

    /// A tenant's ledger kept in memory as the batcher and the store keep it, with its receipts.
    struct Tenant {
        key: SigningKey,
        accounts: BTreeMap<Uuid, Account>,
        transfers: BTreeMap<Uuid, Transfer>,
        resolutions: Vec<(Resolution, i64)>,
        history: Vec<HistoryRow>,
        receipts: Vec<ReceiptRecord>,
        now: i64,
    }

    impl Tenant {
        fn new() -> Self {
            let accounts = (1..=3)
                .map(|n| {
                    let a = Account {
                        id: Uuid::from_u128(n),
                        ledger: "USD".into(),
                        code: 1,
                        owner: format!("owner{n}"),
                        flags: if n == 1 { account_flags::HISTORY } else { 0 },
                        metadata: BTreeMap::new(),
                        balances: Balances::default(),
                        ts: n as i64,
                    };
                    (a.id, a)
                })
                .collect();
            Self {
                key: SigningKey::from_bytes(&[9; 32]),
                accounts,
                transfers: BTreeMap::new(),
                resolutions: Vec::new(),
                history: Vec::new(),
                receipts: Vec::new(),
                now: 1_000_000_000,
            }
        }

        /// Commits one batch `secs` after the last, as `Batcher::commit` does; its receipt
        /// signed when `sign`.
        fn batch(&mut self, secs: i64, inputs: Vec<TransferInput>, sign: bool) {
            self.now += secs * 1_000_000_000;
            let pendings = self.transfers.values().filter(|t| t.state == TransferState::Pending).cloned().collect();
            let accounts = self.accounts.iter().map(|(id, a)| (*id, a.clone())).collect();
            let (outcomes, fx) = Engine::new(accounts, pendings, HashMap::new(), self.now)
                .run(&[Submission { transfers: inputs, owner_scope: None }]);
            assert!(outcomes[0].iter().all(|o| matches!(o, Outcome::Created(_))), "{outcomes:?}");
            let seq = self.receipts.len() as i64 + 1;
            for (id, b) in &fx.accounts {
                self.accounts.get_mut(id).expect("account").balances = *b;
            }
            for (id, state) in &fx.state_changes {
                self.transfers.get_mut(id).expect("pending").state = *state;
            }
            for t in &fx.created {
                self.transfers.insert(t.id, Transfer { receipt_seq: seq, ..t.clone() });
            }
            self.resolutions.extend(fx.resolutions.iter().map(|r| (r.clone(), seq)));
            self.history.extend(fx.history.iter().cloned());
            let prev = self.receipts.last().map_or(GENESIS.to_vec(), |r| r.receipt.hash.clone());
            let content = content_hash(&fx.created, &fx.resolutions);
            let hash = chain_hash(seq, &prev, &content);
            let signature = sign.then(|| self.key.sign(&signed_message(&hash)).to_bytes().to_vec());
            self.receipts.push(ReceiptRecord {
                receipt: Receipt {
                    seq,
                    prev_hash: prev,
                    content_hash: content,
                    hash,
                    entries: (fx.created.len() + fx.resolutions.len()) as i32,
                    key_version: signature.as_ref().map(|_| 1),
                    signature,
                },
                first_ts: self.now,
                last_ts: fx.last_ts,
                created_at: Utc::now(),
            });
        }

        /// The part's files as `LedgerPart` writes them (the transfers cut into two files).
        fn files(&self) -> Vec<(String, Vec<u8>)> {
            let ledger =
                LedgerLine { code: "USD".into(), scale: 2, description: "dollars".into(), created_at: Utc::now() };
            let transfers: Vec<TransferLine> = self.transfers.values().map(TransferLine::from).collect();
            let (first, second) = transfers.split_at(transfers.len() / 2);
            let head = self.receipts.last().map(|r| HeadLine {
                seq: r.receipt.seq,
                hash: r.receipt.hash.clone(),
                last_ts: r.last_ts,
            });
            let files = [
                (Kind::Ledgers, jsonl([ledger])),
                (Kind::Accounts, jsonl(self.accounts.values().map(AccountLine::from))),
                (Kind::BalanceHistory, jsonl(self.history.iter().map(BalanceLine::from))),
                (Kind::Transfers, jsonl(first)),
                (Kind::Transfers, jsonl(second)),
                (Kind::Resolutions, jsonl(self.resolutions.iter().map(|(r, seq)| ResolutionLine::new(r, *seq)))),
                (Kind::Receipts, jsonl(self.receipts.iter().map(ReceiptLine::from))),
                (Kind::ReceiptHead, jsonl(head)),
                (Kind::ReceiptKeys, jsonl([KeyLine::new(1, &self.key.verifying_key())])),
            ];
            files
                .into_iter()
                .enumerate()
                .map(|(i, (k, body))| (format!("{:04}-{}.age", i + 1, k.file_name()), body))
                .collect()
        }
    }

    fn jsonl<T: serde::Serialize>(rows: impl IntoIterator<Item = T>) -> Vec<u8> {
        let mut out = Vec::new();
        for row in rows {
            serde_json::to_writer(&mut out, &row).expect("json");
            out.push(b'\n');
        }
        out
    }

    fn input(id: u128, dr: u128, cr: u128, amount: u128, flags: i32) -> TransferInput {
        TransferInput {
            id: Uuid::from_u128(id),
            debit_account_id: Uuid::from_u128(dr),
            credit_account_id: Uuid::from_u128(cr),
            amount,
            pending_id: None,
            timeout_seconds: 0,
            ledger: "USD".into(),
            code: 1,
            flags,
            metadata: BTreeMap::from([("note".to_owned(), format!("t{id}"))]),
        }
    }

    fn resolve(id: u128, pending: u128, amount: u128, post: bool) -> TransferInput {
        let flags = if post { POST_PENDING } else { VOID_PENDING };
        TransferInput { pending_id: Some(Uuid::from_u128(pending)), ..input(id, 0, 0, amount, flags) }
    }

    /// Posted, pending, partly posted, voided and expired transfers; the newest receipt unsigned.
    fn tenant() -> Tenant {
        let mut t = Tenant::new();
        t.batch(1, vec![input(10, 1, 2, 500, 0), input(11, 2, 3, 50, transfer_flags::PENDING)], true);
        let timed = TransferInput { timeout_seconds: 1, ..input(12, 1, 3, 20, transfer_flags::PENDING) };
        t.batch(1, vec![resolve(13, 11, 30, true), input(14, 3, 1, 7, transfer_flags::PENDING), timed], true);
        t.batch(1, vec![resolve(15, 14, 0, false), input(16, 1, 3, 1, transfer_flags::PENDING)], true);
        // Expires transfer 12 before anything else of the batch.
        t.batch(5, vec![input(17, 3, 2, 9, 0)], false);
        t
    }

    fn verify(files: &[(String, Vec<u8>)]) -> Result<PartVerification, BundleError> {
        let mut part = PartVerifier::new();
        for (name, body) in files {
            part.file(name, body)?;
        }
        part.finish()
    }

    /// `files` with the lines of `kind`'s first file edited by `edit`.
    fn edited<T: DeserializeOwned + serde::Serialize>(
        files: &[(String, Vec<u8>)],
        kind: Kind,
        edit: impl Fn(&mut Vec<T>),
    ) -> Vec<(String, Vec<u8>)> {
        let mut files = files.to_vec();
        let (name, body) = files.iter_mut().find(|(n, _)| Kind::of_file(n) == Some(kind)).expect("file");
        let mut rows: Vec<T> = lines(name, body).expect("lines");
        edit(&mut rows);
        *body = jsonl(rows);
        files
    }

    #[test]
    fn a_tenants_ledger_verifies_from_its_files() {
        let t = tenant();
        let v = verify(&t.files()).expect("verifies");
        assert_eq!((v.files, v.ledgers, v.accounts, v.transfers, v.resolutions), (9, 1, 3, 8, 3));
        assert_eq!((v.receipts, v.unsigned, v.key_versions.as_slice()), (4, 1, [1].as_slice()));
        assert_eq!(v.head_hash, t.receipts[3].receipt.hash);
        assert!(v.balance_changes > 0);
        let states: Vec<&str> = t.transfers.values().map(|t| t.state.as_str()).collect();
        assert!(["pending", "pending_posted", "pending_voided", "pending_expired"].iter().all(|s| states.contains(s)));
    }

    #[test]
    fn an_edited_transfer_breaks_its_receipt() {
        let files = edited::<TransferLine>(&tenant().files(), Kind::Transfers, |rows| rows[0].amount += 1);
        let err = verify(&files).expect_err("edited");
        assert!(
            matches!(&err, BundleError::Receipt { first_bad_seq: 1, problem, .. }
            if problem == "stored transfers do not match the receipt"),
            "{err}"
        );
    }

    #[test]
    fn an_edited_balance_or_state_is_found_though_no_receipt_covers_it() {
        let files = edited::<AccountLine>(&tenant().files(), Kind::Accounts, |rows| rows[1].credits_posted += 1);
        assert!(matches!(verify(&files), Err(BundleError::Inconsistent(e)) if e.contains("its transfers leave it")));
        let files = edited::<TransferLine>(&tenant().files(), Kind::Transfers, |rows| {
            let pending = rows.iter_mut().find(|r| r.state == "pending_expired").expect("expired");
            pending.state = "pending".into();
        });
        assert!(matches!(verify(&files), Err(BundleError::Inconsistent(e)) if e.contains("resolutions leave it")));
    }

    #[test]
    fn a_cut_chain_a_foreign_key_and_a_missing_file_are_found() {
        let t = tenant();
        let files = edited::<ReceiptLine>(&t.files(), Kind::Receipts, |rows| {
            rows.pop();
        });
        assert!(matches!(verify(&files), Err(BundleError::Receipt { problem, .. })
            if problem == "chain head does not match the newest receipt"));
        let other = SigningKey::from_bytes(&[1; 32]).verifying_key();
        let files = edited::<KeyLine>(&t.files(), Kind::ReceiptKeys, |rows| rows[0] = KeyLine::new(1, &other));
        assert!(matches!(verify(&files), Err(BundleError::Receipt { first_bad_seq: 1, problem, .. })
            if problem == "signature does not verify"));
        let files = edited::<KeyLine>(&t.files(), Kind::ReceiptKeys, Vec::clear);
        assert!(matches!(verify(&files), Err(BundleError::Receipt { problem, .. })
            if problem == "signature cannot be checked"));
        let files: Vec<_> =
            t.files().into_iter().filter(|(n, _)| Kind::of_file(n) != Some(Kind::ReceiptHead)).collect();
        assert_eq!(verify(&files), Err(inconsistent("the ledger part has no receipt-head.jsonl")));
        let mut files = t.files();
        files.swap(0, 1);
        assert!(verify(&files).is_err(), "files out of order");
    }

    #[test]
    fn an_entry_under_no_receipt_of_the_chain_is_found() {
        let t = tenant();
        let mut extra = t.transfers.values().next().cloned().expect("transfer");
        extra.id = Uuid::from_u128(99);
        extra.receipt_seq = 7;
        let files = edited::<TransferLine>(&t.files(), Kind::Transfers, |rows| rows.push(TransferLine::from(&extra)));
        let err = verify(&files).expect_err("uncovered");
        assert_eq!(err, inconsistent(format!("transfer {} names receipt 7, which is not in the chain", extra.id)));
    }

    #[test]
    fn a_tenant_without_a_ledger_verifies_empty() {
        let files: Vec<_> = Kind::ALL.iter().map(|k| (k.file_name(), Vec::new())).collect();
        let v = verify(&files).expect("empty");
        assert_eq!((v.files, v.receipts, v.transfers), (8, 0, 0));
        let err = verify(&[("0001-ledgers.jsonl.age".to_owned(), b"{not json\n".to_vec())]).expect_err("malformed");
        assert!(matches!(err, BundleError::Malformed { line: 1, .. }));
    }
}
