//! The batch engine: applies a batch of submissions to in-memory account and pending-transfer state
//! with TigerBeetle's semantics, and says what to write. The caller loaded (and locked) every row
//! the batch can touch; nothing here does I/O, so the rules are tested without a database.
//!
//! Rules, in the order they are checked: idempotency (same id and content: the original result;
//! other content: the first differing field), flag combinations, accounts, ledgers, amounts,
//! overflow, limits (posted plus pending). Linked transfers form a chain that ends at the first
//! transfer without `linked`; when one fails, every other new member fails with
//! LINKED_EVENT_FAILED and nothing of the chain is applied. A pending transfer resolves once:
//! posted (in full or in part), voided, or expired (expired ones are voided before anything else
//! in the batch runs).

use std::collections::{BTreeSet, HashMap};

use uuid::Uuid;

use super::transfer_flags::*;
use super::{Account, Balances, Transfer, TransferInput, TransferState, account_flags};

/// One caller's transfers; a linked chain never crosses a submission's end.
#[derive(Debug, Clone)]
pub struct Submission {
    pub transfers: Vec<TransferInput>,
    /// Set for owner-scoped callers: the debit account must be owned by this subject.
    pub owner_scope: Option<String>,
}

/// What an id already stands for.
#[derive(Debug, Clone)]
pub enum Prior {
    Created { transfer: Transfer, content_hash: Vec<u8> },
    Failed { reason: String, content: TransferInput, content_hash: Vec<u8> },
}

/// The result of one submitted transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created(Transfer),
    /// Same id, same content, created earlier: the original transfer.
    Replayed(Transfer),
    /// A new failure, remembered.
    Failed(String),
    /// Same id, same content, failed earlier: the original reason.
    ReplayedFailure(String),
    /// Same id, other content: the first field that differs.
    Conflict(&'static str),
    /// Refused before it counts (not remembered): the caller may not move this account's money.
    Refused(&'static str),
}

impl Outcome {
    fn breaks_chain(&self) -> bool {
        !matches!(self, Self::Created(_) | Self::Replayed(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolutionKind {
    Posted,
    Voided,
    Expired,
}

impl ResolutionKind {
    /// The kind stored as `s` ([`Self::as_str`]).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "posted" => Some(Self::Posted),
            "voided" => Some(Self::Voided),
            "expired" => Some(Self::Expired),
            _ => None,
        }
    }

    /// The state a pending transfer is left in once resolved so.
    pub fn pending_state(self) -> TransferState {
        match self {
            Self::Posted => TransferState::PendingPosted,
            Self::Voided => TransferState::PendingVoided,
            Self::Expired => TransferState::PendingExpired,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Posted => "posted",
            Self::Voided => "voided",
            Self::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub pending_id: Uuid,
    pub kind: ResolutionKind,
    pub transfer_id: Option<Uuid>,
    pub amount: u128,
    pub ts: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    pub account_id: Uuid,
    pub ts: i64,
    pub transfer_id: Uuid,
    pub balances: Balances,
    pub owner: String,
}

/// A new failure to remember.
#[derive(Debug, Clone)]
pub struct FailureRow {
    pub input: TransferInput,
    pub reason: String,
    pub ts: i64,
}

/// Everything the batch writes.
#[derive(Debug, Default)]
pub struct Effects {
    /// New transfers, in timestamp order (with their final state).
    pub created: Vec<Transfer>,
    pub failures: Vec<FailureRow>,
    pub resolutions: Vec<Resolution>,
    /// Pending transfers stored before this batch whose state changed.
    pub state_changes: Vec<(Uuid, TransferState)>,
    pub history: Vec<HistoryRow>,
    /// Accounts whose balances changed, with the new balances.
    pub accounts: Vec<(Uuid, Balances)>,
    /// The last timestamp used.
    pub last_ts: i64,
}

enum Undo {
    Balances(Uuid, Balances),
    State(Uuid, TransferState),
}

enum Reject {
    Fail(&'static str),
    Refuse(&'static str),
}

/// In-memory state of one batch.
pub struct Engine {
    accounts: HashMap<Uuid, Account>,
    /// Pending transfers stored before (loaded) and transfers created in this batch.
    transfers: HashMap<Uuid, Transfer>,
    loaded_states: HashMap<Uuid, TransferState>,
    prior: HashMap<Uuid, Prior>,
    created: Vec<Uuid>,
    resolutions: Vec<Resolution>,
    history: Vec<HistoryRow>,
    touched: BTreeSet<Uuid>,
    undo: Vec<Undo>,
    now: i64,
    next_ts: i64,
}

struct Mark {
    undo: usize,
    created: usize,
    resolutions: usize,
    history: usize,
}

const NANOS: i64 = 1_000_000_000;

impl Engine {
    /// `now`: the batch's clock (ns); timestamps start at `now` and never repeat.
    pub fn new(
        accounts: HashMap<Uuid, Account>,
        pendings: Vec<Transfer>,
        prior: HashMap<Uuid, Prior>,
        now: i64,
    ) -> Self {
        let loaded_states = pendings.iter().map(|t| (t.id, t.state)).collect();
        Self {
            accounts,
            transfers: pendings.into_iter().map(|t| (t.id, t)).collect(),
            loaded_states,
            prior,
            created: Vec::new(),
            resolutions: Vec::new(),
            history: Vec::new(),
            touched: BTreeSet::new(),
            undo: Vec::new(),
            now,
            next_ts: now,
        }
    }

    fn ts(&mut self) -> i64 {
        let t = self.next_ts;
        self.next_ts += 1;
        t
    }

    /// Runs the batch: expiries first, then each submission in order.
    pub fn run<'a>(mut self, submissions: impl IntoIterator<Item = &'a Submission>) -> (Vec<Vec<Outcome>>, Effects) {
        self.expire_due();
        let mut failures = Vec::new();
        let mut results = Vec::new();
        for sub in submissions {
            let outcomes = self.run_submission(sub);
            for (input, outcome) in sub.transfers.iter().zip(&outcomes) {
                // A failure under a reserved id is not remembered: it would take the id of the
                // resolution that is still to come (a payer's refused void, or a chain made to fail).
                if let (Outcome::Failed(reason), false) = (outcome, super::is_reserved_id(input.id)) {
                    let ts = self.ts();
                    failures.push(FailureRow { input: input.clone(), reason: reason.clone(), ts });
                }
            }
            results.push(outcomes);
        }
        let created: Vec<Transfer> = self.created.iter().filter_map(|id| self.transfers.get(id).cloned()).collect();
        let state_changes = self
            .loaded_states
            .iter()
            .filter_map(|(id, before)| {
                let now = self.transfers.get(id)?.state;
                (now != *before).then_some((*id, now))
            })
            .collect();
        let accounts = self.touched.iter().filter_map(|id| self.accounts.get(id).map(|a| (*id, a.balances))).collect();
        let effects = Effects {
            created,
            failures,
            resolutions: self.resolutions,
            state_changes,
            history: self.history,
            accounts,
            last_ts: self.next_ts - 1,
        };
        (results, effects)
    }

    fn expire_due(&mut self) {
        let mut due: Vec<(i64, Uuid)> = self
            .transfers
            .values()
            .filter(|t| t.state == TransferState::Pending && t.expires_at.is_some_and(|e| e <= self.now))
            .map(|t| (t.ts, t.id))
            .collect();
        due.sort();
        for (_, id) in due {
            let Some(p) = self.transfers.get(&id).cloned() else { continue };
            let ts = self.ts();
            self.change_balances(p.debit_account_id, ts, id, |b| b.debits_pending -= p.amount);
            self.change_balances(p.credit_account_id, ts, id, |b| b.credits_pending -= p.amount);
            self.set_state(id, TransferState::PendingExpired);
            self.resolutions.push(Resolution {
                pending_id: id,
                kind: ResolutionKind::Expired,
                transfer_id: None,
                amount: p.amount,
                ts,
            });
        }
    }

    fn mark(&self) -> Mark {
        Mark {
            undo: self.undo.len(),
            created: self.created.len(),
            resolutions: self.resolutions.len(),
            history: self.history.len(),
        }
    }

    fn rollback(&mut self, mark: Mark) {
        while self.undo.len() > mark.undo {
            match self.undo.pop() {
                Some(Undo::Balances(id, b)) => {
                    if let Some(a) = self.accounts.get_mut(&id) {
                        a.balances = b;
                    }
                }
                Some(Undo::State(id, s)) => {
                    if let Some(t) = self.transfers.get_mut(&id) {
                        t.state = s;
                    }
                }
                None => break,
            }
        }
        for id in self.created.drain(mark.created..) {
            self.transfers.remove(&id);
        }
        self.resolutions.truncate(mark.resolutions);
        self.history.truncate(mark.history);
    }

    fn run_submission(&mut self, sub: &Submission) -> Vec<Outcome> {
        let inputs = &sub.transfers;
        let n = inputs.len();
        let mut out: Vec<Option<Outcome>> = vec![None; n];
        let mut start = 0;
        while start < n {
            let mut end = start;
            while end < n && inputs[end].has(LINKED) {
                end += 1;
            }
            if end == n {
                // The chain is never closed: nothing of it applies.
                for (k, slot) in out.iter_mut().enumerate().skip(start) {
                    *slot = Some(self.existing(&inputs[k]).unwrap_or_else(|| {
                        Outcome::Failed(
                            if k == n - 1 { "LINKED_EVENT_CHAIN_OPEN" } else { "LINKED_EVENT_FAILED" }.into(),
                        )
                    }));
                }
                break;
            }
            let mark = self.mark();
            let mut broken = None;
            for (k, input) in inputs.iter().enumerate().take(end + 1).skip(start) {
                let outcome = self.apply(input, sub.owner_scope.as_deref());
                let breaks = outcome.breaks_chain();
                out[k] = Some(outcome);
                if breaks && end > start {
                    broken = Some(k);
                    break;
                }
            }
            if let Some(failed) = broken {
                self.rollback(mark);
                for (k, slot) in out.iter_mut().enumerate().take(end + 1).skip(start) {
                    if k == failed {
                        continue;
                    }
                    *slot = Some(
                        self.existing(&inputs[k]).unwrap_or_else(|| Outcome::Failed("LINKED_EVENT_FAILED".into())),
                    );
                }
            }
            start = end + 1;
        }
        out.into_iter().map(|o| o.unwrap_or_else(|| Outcome::Failed("LINKED_EVENT_FAILED".into()))).collect()
    }

    /// The answer for an id that exists already.
    fn existing(&self, input: &TransferInput) -> Option<Outcome> {
        let hash = || input.content_hash();
        Some(match self.prior.get(&input.id)? {
            Prior::Created { transfer, content_hash } if *content_hash == hash() => Outcome::Replayed(transfer.clone()),
            Prior::Created { transfer, .. } => Outcome::Conflict(input.first_difference(&transfer.as_input())),
            Prior::Failed { reason, content_hash, .. } if *content_hash == hash() => {
                Outcome::ReplayedFailure(reason.clone())
            }
            Prior::Failed { content, .. } => Outcome::Conflict(input.first_difference(content)),
        })
    }

    fn apply(&mut self, input: &TransferInput, owner_scope: Option<&str>) -> Outcome {
        if let Some(o) = self.existing(input) {
            return o;
        }
        let result = if input.has(POST_PENDING) || input.has(VOID_PENDING) {
            self.resolve(input, owner_scope)
        } else {
            self.create(input, owner_scope)
        };
        match result {
            Ok(t) => Outcome::Created(t),
            Err(Reject::Fail(reason)) => Outcome::Failed(reason.into()),
            Err(Reject::Refuse(reason)) => Outcome::Refused(reason),
        }
    }

    fn check_flags(input: &TransferInput) -> Result<(), Reject> {
        let kinds = [PENDING, POST_PENDING, VOID_PENDING].iter().filter(|f| input.has(**f)).count();
        let resolving = input.has(POST_PENDING) || input.has(VOID_PENDING);
        if kinds > 1 || (resolving && (input.has(BALANCING_DEBIT) || input.has(BALANCING_CREDIT))) {
            return Err(Reject::Fail("FLAGS_ARE_MUTUALLY_EXCLUSIVE"));
        }
        if !input.has(PENDING) && input.timeout_seconds != 0 {
            return Err(Reject::Fail("TIMEOUT_RESERVED_FOR_PENDING_TRANSFER"));
        }
        Ok(())
    }

    fn create(&mut self, input: &TransferInput, owner_scope: Option<&str>) -> Result<Transfer, Reject> {
        Self::check_flags(input)?;
        if super::is_reserved_id(input.id) {
            return Err(Reject::Fail("ID_RESERVED_FOR_RESOLUTIONS"));
        }
        if input.pending_id.is_some() {
            return Err(Reject::Fail("PENDING_ID_MUST_BE_ZERO"));
        }
        if input.debit_account_id.is_nil() {
            return Err(Reject::Fail("DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO"));
        }
        if input.credit_account_id.is_nil() {
            return Err(Reject::Fail("CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO"));
        }
        if input.debit_account_id == input.credit_account_id {
            return Err(Reject::Fail("ACCOUNTS_MUST_BE_DIFFERENT"));
        }
        if input.ledger.is_empty() {
            return Err(Reject::Fail("LEDGER_MUST_NOT_BE_ZERO"));
        }
        if input.code == 0 {
            return Err(Reject::Fail("CODE_MUST_NOT_BE_ZERO"));
        }
        let dr = self.accounts.get(&input.debit_account_id).ok_or(Reject::Fail("DEBIT_ACCOUNT_NOT_FOUND"))?;
        let cr = self.accounts.get(&input.credit_account_id).ok_or(Reject::Fail("CREDIT_ACCOUNT_NOT_FOUND"))?;
        if let Some(owner) = owner_scope {
            // Another owner's account answers exactly as a missing one.
            if owner != dr.owner {
                return Err(Reject::Fail("DEBIT_ACCOUNT_NOT_FOUND"));
            }
            // A balancing amount is computed from the other account's balances: against someone
            // else's account it would read their balance (a pending transfer, then a void).
            if input.has(BALANCING_CREDIT) && owner != cr.owner {
                return Err(Reject::Refuse("BALANCING_AGAINST_ANOTHER_OWNER"));
            }
            // A linked transfer into another owner's account with a credit limit, followed by one
            // bound to fail, tells whether the limit allowed it and costs nothing (the chain is
            // rolled back): a free balance oracle. Such a payment goes alone.
            if input.has(LINKED) && owner != cr.owner && cr.has(account_flags::CREDITS_MUST_NOT_EXCEED_DEBITS) {
                return Err(Reject::Refuse("LINKED_INTO_ANOTHER_OWNERS_LIMITED_ACCOUNT"));
            }
        }
        if dr.ledger != cr.ledger {
            return Err(Reject::Fail("ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER"));
        }
        if input.ledger != dr.ledger {
            return Err(Reject::Fail("TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS"));
        }
        let (db, cb) = (dr.balances, cr.balances);
        let mut amount = input.amount;
        let balancing = input.has(BALANCING_DEBIT) || input.has(BALANCING_CREDIT);
        if input.has(BALANCING_DEBIT) {
            let used = db.debits_posted.saturating_add(db.debits_pending);
            amount = amount.min(db.credits_posted.saturating_sub(used));
        }
        if input.has(BALANCING_CREDIT) {
            let used = cb.credits_posted.saturating_add(cb.credits_pending);
            amount = amount.min(cb.debits_posted.saturating_sub(used));
        }
        if amount == 0 && !balancing {
            return Err(Reject::Fail("AMOUNT_MUST_NOT_BE_ZERO"));
        }
        let pending = input.has(PENDING);
        let debits = db.debits_pending.checked_add(db.debits_posted).and_then(|d| d.checked_add(amount));
        let credits = cb.credits_pending.checked_add(cb.credits_posted).and_then(|c| c.checked_add(amount));
        let (Some(debits), Some(credits)) = (debits, credits) else {
            return Err(Reject::Fail(if debits.is_none() { "OVERFLOWS_DEBITS" } else { "OVERFLOWS_CREDITS" }));
        };
        if dr.has(account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS) && debits > db.credits_posted {
            return Err(Reject::Fail("EXCEEDS_CREDITS"));
        }
        if cr.has(account_flags::CREDITS_MUST_NOT_EXCEED_DEBITS) && credits > cb.debits_posted {
            return Err(Reject::Fail("EXCEEDS_DEBITS"));
        }
        let ts = self.ts();
        let expires_at =
            (pending && input.timeout_seconds > 0).then(|| ts.saturating_add(i64::from(input.timeout_seconds) * NANOS));
        self.change_balances(input.debit_account_id, ts, input.id, |b| {
            if pending { b.debits_pending += amount } else { b.debits_posted += amount }
        });
        self.change_balances(input.credit_account_id, ts, input.id, |b| {
            if pending { b.credits_pending += amount } else { b.credits_posted += amount }
        });
        let transfer = Transfer {
            id: input.id,
            debit_account_id: input.debit_account_id,
            credit_account_id: input.credit_account_id,
            amount,
            pending_id: None,
            timeout_seconds: input.timeout_seconds,
            ledger: input.ledger.clone(),
            code: input.code,
            flags: input.flags,
            metadata: input.metadata.clone(),
            ts,
            state: if pending { TransferState::Pending } else { TransferState::Posted },
            expires_at,
            receipt_seq: 0,
        };
        self.created.push(transfer.id);
        self.transfers.insert(transfer.id, transfer.clone());
        Ok(transfer)
    }

    fn resolve(&mut self, input: &TransferInput, owner_scope: Option<&str>) -> Result<Transfer, Reject> {
        Self::check_flags(input)?;
        let post = input.has(POST_PENDING);
        let pid = input.pending_id.ok_or(Reject::Fail("PENDING_ID_MUST_NOT_BE_ZERO"))?;
        if pid == input.id {
            return Err(Reject::Fail("PENDING_ID_MUST_BE_DIFFERENT"));
        }
        if super::is_reserved_id(input.id) && input.id != super::resolution_id(pid, post) {
            return Err(Reject::Fail("ID_RESERVED_FOR_RESOLUTIONS"));
        }
        let p = self.transfers.get(&pid).ok_or(Reject::Fail("PENDING_TRANSFER_NOT_FOUND"))?.clone();
        // A hold is the payee's to settle or release: an owner-scoped payer may neither cancel the
        // payee's authorization nor settle it alone. To any other owner it does not exist (checked
        // before anything that would tell its state).
        if let Some(owner) = owner_scope {
            let owns = |id: &Uuid| self.accounts.get(id).is_some_and(|a| a.owner == owner);
            if !owns(&p.credit_account_id) {
                return Err(if owns(&p.debit_account_id) {
                    Reject::Refuse("ONLY_THE_PAYEE_RESOLVES")
                } else {
                    Reject::Fail("PENDING_TRANSFER_NOT_FOUND")
                });
            }
        }
        if p.flags & PENDING == 0 {
            return Err(Reject::Fail("PENDING_TRANSFER_NOT_PENDING"));
        }
        if !input.debit_account_id.is_nil() && input.debit_account_id != p.debit_account_id {
            return Err(Reject::Fail("PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID"));
        }
        if !input.credit_account_id.is_nil() && input.credit_account_id != p.credit_account_id {
            return Err(Reject::Fail("PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID"));
        }
        if !input.ledger.is_empty() && input.ledger != p.ledger {
            return Err(Reject::Fail("PENDING_TRANSFER_HAS_DIFFERENT_LEDGER"));
        }
        if input.code != 0 && input.code != p.code {
            return Err(Reject::Fail("PENDING_TRANSFER_HAS_DIFFERENT_CODE"));
        }
        let amount = if post {
            match input.amount {
                0 => p.amount,
                a if a > p.amount => return Err(Reject::Fail("EXCEEDS_PENDING_TRANSFER_AMOUNT")),
                a => a,
            }
        } else {
            if input.amount != 0 && input.amount != p.amount {
                return Err(Reject::Fail("PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT"));
            }
            p.amount
        };
        match p.state {
            TransferState::PendingPosted => return Err(Reject::Fail("PENDING_TRANSFER_ALREADY_POSTED")),
            TransferState::PendingVoided => return Err(Reject::Fail("PENDING_TRANSFER_ALREADY_VOIDED")),
            TransferState::PendingExpired => return Err(Reject::Fail("PENDING_TRANSFER_EXPIRED")),
            TransferState::Pending | TransferState::Posted => {}
        }
        let dr = self.accounts.get(&p.debit_account_id).ok_or(Reject::Fail("DEBIT_ACCOUNT_NOT_FOUND"))?;
        let cr = self.accounts.get(&p.credit_account_id).ok_or(Reject::Fail("CREDIT_ACCOUNT_NOT_FOUND"))?;

        if post
            && (dr.balances.debits_posted.checked_add(amount).is_none()
                || cr.balances.credits_posted.checked_add(amount).is_none())
        {
            return Err(Reject::Fail("OVERFLOWS_DEBITS"));
        }
        let ts = self.ts();
        let reserved = p.amount;
        self.change_balances(p.debit_account_id, ts, input.id, |b| {
            b.debits_pending -= reserved;
            if post {
                b.debits_posted += amount;
            }
        });
        self.change_balances(p.credit_account_id, ts, input.id, |b| {
            b.credits_pending -= reserved;
            if post {
                b.credits_posted += amount;
            }
        });
        self.set_state(pid, if post { TransferState::PendingPosted } else { TransferState::PendingVoided });
        self.resolutions.push(Resolution {
            pending_id: pid,
            kind: if post { ResolutionKind::Posted } else { ResolutionKind::Voided },
            transfer_id: Some(input.id),
            amount,
            ts,
        });
        let transfer = Transfer {
            id: input.id,
            debit_account_id: p.debit_account_id,
            credit_account_id: p.credit_account_id,
            amount,
            pending_id: Some(pid),
            timeout_seconds: 0,
            ledger: p.ledger.clone(),
            code: p.code,
            flags: input.flags,
            metadata: input.metadata.clone(),
            ts,
            state: TransferState::Posted,
            expires_at: None,
            receipt_seq: 0,
        };
        self.created.push(transfer.id);
        self.transfers.insert(transfer.id, transfer.clone());
        Ok(transfer)
    }

    fn set_state(&mut self, id: Uuid, state: TransferState) {
        if let Some(t) = self.transfers.get_mut(&id) {
            self.undo.push(Undo::State(id, t.state));
            t.state = state;
        }
    }

    fn change_balances(&mut self, id: Uuid, ts: i64, transfer_id: Uuid, f: impl FnOnce(&mut Balances)) {
        let Some(a) = self.accounts.get_mut(&id) else { return };
        self.undo.push(Undo::Balances(id, a.balances));
        f(&mut a.balances);
        self.touched.insert(id);
        if a.has(account_flags::HISTORY) {
            self.history.push(HistoryRow {
                account_id: id,
                ts,
                transfer_id,
                balances: a.balances,
                owner: a.owner.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn account(n: u128, flags: i32) -> Account {
        Account {
            id: Uuid::from_u128(n),
            ledger: "USD".into(),
            code: 1,
            owner: format!("owner{n}"),
            flags,
            metadata: BTreeMap::new(),
            balances: Balances::default(),
            ts: 0,
        }
    }

    fn t(id: u128, dr: u128, cr: u128, amount: u128, flags: i32) -> TransferInput {
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
            metadata: BTreeMap::new(),
        }
    }

    fn engine(accounts: Vec<Account>) -> Engine {
        Engine::new(accounts.into_iter().map(|a| (a.id, a)).collect(), Vec::new(), HashMap::new(), 1_000)
    }

    fn run(e: Engine, transfers: Vec<TransferInput>) -> (Vec<Outcome>, Effects) {
        let (mut r, fx) = e.run(&[Submission { transfers, owner_scope: None }]);
        (r.remove(0), fx)
    }

    fn reasons(outcomes: &[Outcome]) -> Vec<String> {
        outcomes
            .iter()
            .map(|o| match o {
                Outcome::Created(_) => "OK".to_string(),
                Outcome::Failed(r) => r.clone(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn limits_are_checked_against_posted_plus_pending() {
        let mut limited = account(1, account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS);
        limited.balances.credits_posted = 100;
        let (out, fx) = run(
            engine(vec![limited, account(2, 0)]),
            vec![t(10, 1, 2, 60, PENDING), t(11, 1, 2, 50, 0), t(12, 1, 2, 40, 0)],
        );
        assert_eq!(reasons(&out), ["OK", "EXCEEDS_CREDITS", "OK"]);
        let b = fx.accounts.iter().find(|(id, _)| *id == Uuid::from_u128(1)).map(|(_, b)| *b).unwrap_or_default();
        assert_eq!((b.debits_pending, b.debits_posted), (60, 40));
        assert_eq!(fx.failures.len(), 1);
    }

    #[test]
    fn a_linked_chain_fails_together() {
        let mut limited = account(1, account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS);
        limited.balances.credits_posted = 100;
        let (out, fx) = run(
            engine(vec![limited, account(2, 0), account(3, 0)]),
            vec![t(10, 2, 3, 5, LINKED), t(11, 1, 2, 500, LINKED), t(12, 2, 3, 5, 0), t(13, 2, 3, 7, LINKED)],
        );
        assert_eq!(
            reasons(&out),
            ["LINKED_EVENT_FAILED", "EXCEEDS_CREDITS", "LINKED_EVENT_FAILED", "LINKED_EVENT_CHAIN_OPEN"]
        );
        assert!(fx.created.is_empty());
        assert!(fx.accounts.iter().all(|(_, b)| *b == Balances::default() || b.credits_posted == 100));
    }

    #[test]
    fn pending_posts_once_partially_and_expired_ones_void() {
        let (out, fx) = run(engine(vec![account(1, 0), account(2, 0)]), vec![t(10, 1, 2, 100, PENDING)]);
        assert_eq!(reasons(&out), ["OK"]);
        let mut pending = fx.created[0].clone();
        let accounts = || {
            let mut a = account(1, 0);
            a.balances.debits_pending = 100;
            let mut b = account(2, 0);
            b.balances.credits_pending = 100;
            vec![a, b]
        };
        let post =
            |id, amount| TransferInput { pending_id: Some(Uuid::from_u128(10)), ..t(id, 0, 0, amount, POST_PENDING) };
        let mut post_nil = post(20, 30);
        post_nil.ledger.clear();
        post_nil.code = 0;
        let e = Engine::new(
            accounts().into_iter().map(|a| (a.id, a)).collect(),
            vec![pending.clone()],
            HashMap::new(),
            2_000,
        );
        let (mut r, fx) = e.run(&[Submission { transfers: vec![post_nil, post(21, 0)], owner_scope: None }]);
        assert_eq!(reasons(&r.remove(0)), ["OK", "PENDING_TRANSFER_ALREADY_POSTED"]);
        assert_eq!(fx.state_changes, vec![(Uuid::from_u128(10), TransferState::PendingPosted)]);
        let b1 = fx.accounts[0].1;
        assert_eq!((b1.debits_pending, b1.debits_posted), (0, 30));

        pending.expires_at = Some(1_500);
        let e = Engine::new(accounts().into_iter().map(|a| (a.id, a)).collect(), vec![pending], HashMap::new(), 2_000);
        let (mut r, fx) = e.run(&[Submission { transfers: vec![post(22, 0)], owner_scope: None }]);
        assert_eq!(reasons(&r.remove(0)), ["PENDING_TRANSFER_EXPIRED"]);
        assert_eq!(fx.resolutions[0].kind, ResolutionKind::Expired);
        assert_eq!(fx.accounts[0].1, Balances::default());
    }

    #[test]
    fn balancing_transfers_take_what_the_limit_allows() {
        let mut a = account(1, 0);
        a.balances.credits_posted = 70;
        let (out, _) = run(
            engine(vec![a, account(2, 0)]),
            vec![t(10, 1, 2, 100, BALANCING_DEBIT), t(11, 1, 2, 100, BALANCING_DEBIT)],
        );
        match (&out[0], &out[1]) {
            (Outcome::Created(x), Outcome::Created(y)) => assert_eq!((x.amount, y.amount), (70, 0)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retries_replay_and_changed_content_names_the_field() {
        let (out, fx) = run(engine(vec![account(1, 0), account(2, 0)]), vec![t(10, 1, 2, 5, 0)]);
        let Outcome::Created(created) = &out[0] else { panic!("{out:?}") };
        let original = t(10, 1, 2, 5, 0);
        let prior = HashMap::from([(
            created.id,
            Prior::Created { transfer: fx.created[0].clone(), content_hash: original.content_hash() },
        )]);
        let e = Engine::new(
            [account(1, 0), account(2, 0)].into_iter().map(|a| (a.id, a)).collect(),
            Vec::new(),
            prior,
            5_000,
        );
        let (mut r, fx) = e.run(&[Submission { transfers: vec![original, t(10, 1, 2, 6, 0)], owner_scope: None }]);
        let r = r.remove(0);
        assert_eq!(r[0], Outcome::Replayed(created.clone()));
        assert_eq!(r[1], Outcome::Conflict("amount"));
        assert!(fx.created.is_empty() && fx.accounts.is_empty());
    }

    /// Owner 1 pays owner 2; a hold of 100 (pending transfer 10) waits for the payee.
    fn held() -> Engine {
        let mut payer = account(1, 0);
        payer.balances.debits_pending = 100;
        let mut payee = account(2, 0);
        payee.balances.credits_pending = 100;
        let (out, fx) = run(engine(vec![account(1, 0), account(2, 0)]), vec![t(10, 1, 2, 100, PENDING)]);
        assert_eq!(reasons(&out), ["OK"]);
        Engine::new(
            [payer, payee, account(3, 0)].into_iter().map(|a| (a.id, a)).collect(),
            fx.created,
            HashMap::new(),
            2_000,
        )
    }

    fn resolution(id: Uuid, post: bool) -> TransferInput {
        let flag = if post { POST_PENDING } else { VOID_PENDING };
        TransferInput { id, pending_id: Some(Uuid::from_u128(10)), ..t(0, 0, 0, 0, flag) }
    }

    fn as_owner(e: Engine, owner: &str, transfers: Vec<TransferInput>) -> (Vec<Outcome>, Effects) {
        let (mut r, fx) = e.run(&[Submission { transfers, owner_scope: Some(owner.into()) }]);
        (r.remove(0), fx)
    }

    #[test]
    fn a_payer_may_neither_void_nor_post_the_payees_hold() {
        let pid = Uuid::from_u128(10);
        for post in [false, true] {
            let (out, fx) = as_owner(held(), "owner1", vec![resolution(super::super::resolution_id(pid, post), post)]);
            assert_eq!(out, [Outcome::Refused("ONLY_THE_PAYEE_RESOLVES")]);
            assert!(fx.state_changes.is_empty() && fx.failures.is_empty());
            // Another owner sees no hold at all, as for a missing one, and takes no id with it.
            let (out, fx) = as_owner(held(), "owner3", vec![resolution(super::super::resolution_id(pid, post), post)]);
            assert_eq!(reasons(&out), ["PENDING_TRANSFER_NOT_FOUND"]);
            assert!(fx.failures.is_empty(), "a failure under a reserved id is not remembered");
            // The payee may settle or release it.
            let (out, fx) = as_owner(held(), "owner2", vec![resolution(super::super::resolution_id(pid, post), post)]);
            assert_eq!(reasons(&out), ["OK"]);
            assert_eq!(fx.state_changes.len(), 1);
        }
    }

    #[test]
    fn a_resolutions_derived_id_cannot_be_taken_first() {
        let pid = Uuid::from_u128(10);
        let reserved = super::super::resolution_id(pid, true);
        assert!(super::super::is_reserved_id(reserved));
        assert_ne!(reserved, super::super::resolution_id(pid, false));
        // Not as an ordinary transfer, nor as the resolution of another hold.
        let mut taken = t(0, 1, 2, 5, 0);
        taken.id = reserved;
        let (out, fx) = run(held(), vec![taken]);
        assert_eq!(reasons(&out), ["ID_RESERVED_FOR_RESOLUTIONS"]);
        assert!(fx.failures.is_empty());
        let other = TransferInput { pending_id: Some(Uuid::from_u128(99)), ..resolution(reserved, true) };
        let (out, _) = run(held(), vec![other]);
        assert_eq!(reasons(&out), ["ID_RESERVED_FOR_RESOLUTIONS"]);
        // Nor by a linked chain made to fail around it.
        let mut failing = t(40, 1, 3, 0, LINKED);
        failing.amount = 0;
        let (out, fx) = run(held(), vec![failing, resolution(reserved, true)]);
        assert_eq!(reasons(&out), ["AMOUNT_MUST_NOT_BE_ZERO", "LINKED_EVENT_FAILED"]);
        assert_eq!(fx.failures.len(), 1, "only the ordinary id's failure is remembered");
    }

    #[test]
    fn an_owner_cannot_read_another_owners_balance_or_tell_their_account_from_a_missing_one() {
        let mut victim = account(2, 0);
        victim.balances.debits_posted = 340;
        let e = || engine(vec![account(1, 0), victim.clone(), account(3, 0)]);
        let (out, fx) = as_owner(e(), "owner1", vec![t(10, 1, 2, u128::MAX, PENDING | BALANCING_CREDIT)]);
        assert_eq!(out, [Outcome::Refused("BALANCING_AGAINST_ANOTHER_OWNER")]);
        assert!(fx.created.is_empty());
        // Nor through a linked chain rolled back after a probe of a limited account.
        let mut limited = victim.clone();
        limited.flags = account_flags::CREDITS_MUST_NOT_EXCEED_DEBITS;
        let engine = engine(vec![account(1, 0), limited, account(3, 0)]);
        let (out, _) = as_owner(engine, "owner1", vec![t(12, 1, 2, 100, LINKED), t(13, 1, 3, 0, 0)]);
        assert_eq!(out[0], Outcome::Refused("LINKED_INTO_ANOTHER_OWNERS_LIMITED_ACCOUNT"));
        let (foreign, _) = as_owner(e(), "owner1", vec![t(11, 2, 1, 5, 0)]);
        let (missing, _) = as_owner(e(), "owner1", vec![t(11, 77, 1, 5, 0)]);
        assert_eq!(reasons(&foreign), reasons(&missing));
        assert_eq!(reasons(&foreign), ["DEBIT_ACCOUNT_NOT_FOUND"]);
    }
}
