//! Test support (feature `testing`, and this crate's own tests): the reference model of the
//! ledger's rules, the generator of its property test's cases, and [`Sim`], the pure engine over
//! in-memory state, driven as the batcher and the store drive it. The same cases run against
//! the real service end to end (e2e `ledger::the_ledger_matches_a_reference_model`, a few dozen
//! cases) and against [`Sim`] here (thousands of cases in seconds).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};

use proto::ledger::v1 as pb;
use uuid::Uuid;

use crate::domain::engine::{Engine, Outcome, Prior, Submission};
use crate::domain::{Account, Balances, Transfer, TransferState, account_flags};

/// The reference model: a deliberately naive restatement of the rules (clone the whole state
/// before a linked chain, put it back when the chain fails), for the property test.
pub mod model {
    use std::collections::HashMap;

    use proto::ledger::v1 as pb;

    #[derive(Clone, Default, Debug)]
    pub struct Acc {
        pub dmnec: bool,
        pub cmned: bool,
        pub dp: u128,
        pub dpo: u128,
        pub cp: u128,
        pub cpo: u128,
    }

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Pend {
        Open,
        Posted,
        Voided,
        Expired,
    }

    #[derive(Clone, Debug)]
    struct Created {
        content: pb::Transfer,
        amount: u128,
        dr: usize,
        cr: usize,
        state: Option<Pend>,
    }

    /// (created, reason, replayed, amount)
    pub type R = (bool, String, bool, Option<u128>);

    fn fail(reason: &str, replayed: bool) -> R {
        (false, reason.to_owned(), replayed, None)
    }

    #[derive(Clone, Default)]
    pub struct Model {
        pub acc: Vec<Acc>,
        pub index: HashMap<String, usize>,
        created: HashMap<String, Created>,
        failed: HashMap<String, (pb::Transfer, String)>,
    }

    fn flags(t: &pb::Transfer) -> pb::TransferFlags {
        t.flags.unwrap_or_default()
    }

    impl Model {
        fn existing(&self, t: &pb::Transfer) -> Option<R> {
            if let Some(c) = self.created.get(&t.id) {
                return Some(if c.content == *t {
                    (true, String::new(), true, Some(c.amount))
                } else {
                    fail("EXISTS_WITH_DIFFERENT_AMOUNT", false)
                });
            }
            self.failed.get(&t.id).map(|(content, reason)| {
                if content == t { fail(reason, true) } else { fail("EXISTS_WITH_DIFFERENT_AMOUNT", false) }
            })
        }

        fn apply(&mut self, t: &pb::Transfer) -> R {
            if let Some(r) = self.existing(t) {
                return r;
            }
            match self.apply_new(t) {
                Ok(amount) => (true, String::new(), false, Some(amount)),
                Err(reason) => fail(reason, false),
            }
        }

        fn apply_new(&mut self, t: &pb::Transfer) -> Result<u128, &'static str> {
            let f = flags(t);
            let amount: u128 = if t.amount.is_empty() { 0 } else { t.amount.parse().unwrap_or(0) };
            if f.post_pending || f.void_pending {
                let Some(p) = self.created.get(&t.pending_id).cloned() else {
                    return Err("PENDING_TRANSFER_NOT_FOUND");
                };
                if !flags(&p.content).pending {
                    return Err("PENDING_TRANSFER_NOT_PENDING");
                }
                let applied = if f.post_pending {
                    match amount {
                        0 => p.amount,
                        a if a > p.amount => return Err("EXCEEDS_PENDING_TRANSFER_AMOUNT"),
                        a => a,
                    }
                } else {
                    if amount != 0 && amount != p.amount {
                        return Err("PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT");
                    }
                    p.amount
                };
                match p.state {
                    Some(Pend::Posted) => return Err("PENDING_TRANSFER_ALREADY_POSTED"),
                    Some(Pend::Voided) => return Err("PENDING_TRANSFER_ALREADY_VOIDED"),
                    Some(Pend::Expired) => return Err("PENDING_TRANSFER_EXPIRED"),
                    _ => {}
                }
                self.acc[p.dr].dp -= p.amount;
                self.acc[p.cr].cp -= p.amount;
                if f.post_pending {
                    self.acc[p.dr].dpo += applied;
                    self.acc[p.cr].cpo += applied;
                }
                if let Some(target) = self.created.get_mut(&t.pending_id) {
                    target.state = Some(if f.post_pending { Pend::Posted } else { Pend::Voided });
                }
                let created = Created { content: t.clone(), amount: applied, dr: p.dr, cr: p.cr, state: None };
                self.created.insert(t.id.clone(), created);
                return Ok(applied);
            }
            let (dr, cr) = (self.index[&t.debit_account_id], self.index[&t.credit_account_id]);
            if dr == cr {
                return Err("ACCOUNTS_MUST_BE_DIFFERENT");
            }
            let (d, c) = (self.acc[dr].clone(), self.acc[cr].clone());
            let mut amount = amount;
            if f.balancing_debit {
                amount = amount.min(d.cpo.saturating_sub(d.dpo + d.dp));
            }
            if f.balancing_credit {
                amount = amount.min(c.dpo.saturating_sub(c.cpo + c.cp));
            }
            if amount == 0 && !(f.balancing_debit || f.balancing_credit) {
                return Err("AMOUNT_MUST_NOT_BE_ZERO");
            }
            if d.dmnec && d.dp + d.dpo + amount > d.cpo {
                return Err("EXCEEDS_CREDITS");
            }
            if c.cmned && c.cp + c.cpo + amount > c.dpo {
                return Err("EXCEEDS_DEBITS");
            }
            if f.pending {
                self.acc[dr].dp += amount;
                self.acc[cr].cp += amount;
            } else {
                self.acc[dr].dpo += amount;
                self.acc[cr].cpo += amount;
            }
            let state = f.pending.then_some(Pend::Open);
            self.created.insert(t.id.clone(), Created { content: t.clone(), amount, dr, cr, state });
            Ok(amount)
        }

        /// The pending transfer `id` timed out: its reservation is released, and it can no longer
        /// be posted or voided.
        pub fn expire(&mut self, id: &str) {
            if let Some(p) = self.created.get_mut(id)
                && p.state == Some(Pend::Open)
            {
                p.state = Some(Pend::Expired);
                self.acc[p.dr].dp -= p.amount;
                self.acc[p.cr].cp -= p.amount;
            }
        }

        /// One request of transfers (unique ids), as the service applies it.
        pub fn batch(&mut self, ts: &[pb::Transfer]) -> Vec<R> {
            let n = ts.len();
            let mut out: Vec<Option<R>> = vec![None; n];
            let linked = |k: usize| flags(&ts[k]).linked;
            let mut i = 0;
            while i < n {
                let mut j = i;
                while j < n && linked(j) {
                    j += 1;
                }
                if j == n {
                    for (k, slot) in out.iter_mut().enumerate().skip(i) {
                        let open = if k == n - 1 { "LINKED_EVENT_CHAIN_OPEN" } else { "LINKED_EVENT_FAILED" };
                        *slot = Some(self.existing(&ts[k]).unwrap_or_else(|| fail(open, false)));
                    }
                    break;
                }
                let before = self.clone();
                let mut broke = None;
                for (k, t) in ts.iter().enumerate().take(j + 1).skip(i) {
                    let r = self.apply(t);
                    let failed = !r.0;
                    out[k] = Some(r);
                    if failed && j > i {
                        broke = Some(k);
                        break;
                    }
                }
                if let Some(b) = broke {
                    *self = before;
                    for (k, slot) in out.iter_mut().enumerate().take(j + 1).skip(i) {
                        if k != b {
                            *slot = Some(self.existing(&ts[k]).unwrap_or_else(|| fail("LINKED_EVENT_FAILED", false)));
                        }
                    }
                }
                i = j + 1;
            }
            let out: Vec<R> =
                out.into_iter().map(|r| r.unwrap_or_else(|| fail("LINKED_EVENT_FAILED", false))).collect();
            for (t, r) in ts.iter().zip(&out) {
                if !r.0 && !r.2 && !r.1.starts_with("EXISTS_WITH_DIFFERENT") {
                    self.failed.insert(t.id.clone(), (t.clone(), r.1.clone()));
                }
            }
            out
        }
    }
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub kind: u8,
    pub dr: usize,
    pub cr: usize,
    pub amount: u128,
    pub linked: bool,
    pub target: usize,
    pub retry: u8,
}

pub fn spec() -> impl proptest::strategy::Strategy<Value = Spec> {
    use proptest::prelude::*;
    (0u8..8, 0usize..6, 0usize..6, 0u128..300, prop::bool::weighted(0.25), 0usize..64, 0u8..10)
        .prop_map(|(kind, dr, cr, amount, linked, target, retry)| Spec { kind, dr, cr, amount, linked, target, retry })
}

/// One generated case: the accounts (2 to 6, each with no limit, `debits_must_not_exceed_credits`
/// or `credits_must_not_exceed_debits`), requests of transfers, and optionally an expiry phase: a
/// request of pending transfers with a one-second timeout, the wait until each has expired, then
/// one more request (which may post or void them).
#[derive(Debug, Clone)]
pub struct Case {
    pub accounts: Vec<u8>,
    pub batches: Vec<Vec<Spec>>,
    pub expiry: Option<(Vec<Spec>, Vec<Spec>)>,
}

pub fn case() -> impl proptest::strategy::Strategy<Value = Case> {
    use proptest::collection::vec;
    use proptest::prelude::*;
    let requests = vec(vec(spec(), 1..6), 1..12);
    let expiry = proptest::option::weighted(0.3, (vec(spec(), 1..5), vec(spec(), 1..6)));
    (vec(0u8..3, 2..=6), requests, expiry).prop_map(|(accounts, batches, expiry)| Case { accounts, batches, expiry })
}

/// What the model case has submitted so far: the accounts' ids, every transfer, and the ids of
/// the pending transfers a later post or void may name.
#[derive(Debug, Default)]
pub struct Submitted {
    pub ids: Vec<Uuid>,
    pub transfers: Vec<pb::Transfer>,
    pub pendings: Vec<String>,
}

impl Submitted {
    /// The transfer `s` describes: a resubmission of an earlier one (same or changed content),
    /// or a new plain, pending, balancing, post or void transfer.
    pub fn transfer(&self, s: &Spec) -> pb::Transfer {
        let earlier = (!self.transfers.is_empty()).then(|| self.transfers[s.target % self.transfers.len()].clone());
        match (s.retry, earlier) {
            (0, Some(orig)) => orig,
            (1, Some(mut orig)) => {
                orig.amount = (orig.amount.parse::<u128>().unwrap_or(0) + 1).to_string();
                orig
            }
            _ => {
                let ids = &self.ids;
                let mut t = transfer(ids[s.dr % ids.len()], ids[s.cr % ids.len()], s.amount);
                let mut fl = pb::TransferFlags { linked: s.linked, ..Default::default() };
                match s.kind {
                    3 => fl.pending = true,
                    4 => fl.balancing_debit = true,
                    5 => fl.balancing_credit = true,
                    6 | 7 => {
                        t.debit_account_id.clear();
                        t.credit_account_id.clear();
                        t.ledger.clear();
                        t.code = 0;
                        t.pending_id = if self.pendings.is_empty() {
                            Uuid::new_v4().to_string()
                        } else {
                            self.pendings[s.target % self.pendings.len()].clone()
                        };
                        if s.kind == 6 {
                            fl.post_pending = true;
                        } else {
                            fl.void_pending = true;
                            t.amount = if s.amount.is_multiple_of(2) { String::new() } else { s.amount.to_string() };
                        }
                    }
                    _ => {}
                }
                t.flags = Some(fl);
                t
            }
        }
    }

    /// Drops repeated ids (a request names each id once).
    pub fn unique(transfers: Vec<pb::Transfer>) -> Vec<pb::Transfer> {
        let mut unique: Vec<pb::Transfer> = Vec::new();
        for t in transfers {
            if !unique.iter().any(|x| x.id == t.id) {
                unique.push(t);
            }
        }
        unique
    }

    /// Remembers what a request sent: every transfer, and the ids of the pending ones (created or
    /// not: a later post or void may name either).
    pub fn remember(&mut self, sent: &[pb::Transfer]) {
        for t in sent {
            if !self.transfers.iter().any(|s| s.id == t.id) {
                self.transfers.push(t.clone());
            }
            if t.flags.is_some_and(|f| f.pending) && !self.pendings.contains(&t.id) {
                self.pendings.push(t.id.clone());
            }
        }
    }
}

/// A plain transfer of `amount` in ledger USD.
pub fn transfer(dr: Uuid, cr: Uuid, amount: u128) -> pb::Transfer {
    pb::Transfer {
        id: Uuid::new_v4().to_string(),
        debit_account_id: dr.to_string(),
        credit_account_id: cr.to_string(),
        amount: amount.to_string(),
        ledger: "USD".into(),
        code: 7,
        ..Default::default()
    }
}

/// The service's results in the model's terms.
pub fn results(got: &[pb::TransferResult]) -> Vec<model::R> {
    got.iter()
        .map(|r| {
            let created = r.outcome == pb::TransferOutcome::Created as i32;
            let amount = r.transfer.as_ref().map(|t| t.amount.parse::<u128>().unwrap_or(u128::MAX));
            (created, r.reason.clone(), r.replayed, amount)
        })
        .collect()
}

/// The ledger without PostgreSQL: the batch engine over in-memory accounts, transfers and
/// remembered outcomes, fed and written back as the batcher and the store do.
#[derive(Debug, Default)]
pub struct Sim {
    accounts: HashMap<Uuid, Account>,
    transfers: HashMap<Uuid, Transfer>,
    prior: HashMap<Uuid, Prior>,
    now: i64,
}

impl Sim {
    /// A USD account with the given limit flags.
    pub fn account(&mut self, debits_must_not_exceed_credits: bool, credits_must_not_exceed_debits: bool) -> Uuid {
        let id = Uuid::new_v4();
        let mut flags = 0;
        if debits_must_not_exceed_credits {
            flags |= account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS;
        }
        if credits_must_not_exceed_debits {
            flags |= account_flags::CREDITS_MUST_NOT_EXCEED_DEBITS;
        }
        let account = Account {
            id,
            ledger: "USD".into(),
            code: 1,
            owner: String::new(),
            flags,
            metadata: BTreeMap::new(),
            balances: Balances::default(),
            ts: self.tick(),
        };
        self.accounts.insert(id, account);
        id
    }

    pub fn balances(&self, id: Uuid) -> Balances {
        self.accounts[&id].balances
    }

    fn tick(&mut self) -> i64 {
        self.now += 1_000;
        self.now
    }

    /// One request, as `CreateTransfers` answers it (a transfer that fails validation fails the
    /// request, as the API refuses it before the engine).
    pub fn batch(&mut self, transfers: &[pb::Transfer]) -> Vec<pb::TransferResult> {
        let inputs: Vec<_> = transfers
            .iter()
            .enumerate()
            .map(|(i, t)| crate::api::transfer_input(&format!("transfers[{i}]"), t).expect("valid shape"))
            .collect();
        let submission = Submission { transfers: inputs, owner_scope: None };
        let outcomes = self.run(std::slice::from_ref(&submission)).pop().unwrap_or_default();
        submission.transfers.iter().zip(&outcomes).map(|(t, o)| crate::api::result_pb(t.id, o)).collect()
    }

    /// Lets `secs` pass, then expires what is due, as the sweeper does.
    pub fn advance(&mut self, secs: i64) {
        self.now += secs * 1_000_000_000;
        self.run(&[]);
    }

    fn run(&mut self, submissions: &[Submission]) -> Vec<Vec<Outcome>> {
        let ids: Vec<Uuid> = submissions.iter().flat_map(|s| s.transfers.iter().map(|t| t.id)).collect();
        let prior = ids.iter().filter_map(|id| self.prior.get(id).map(|p| (*id, p.clone()))).collect();
        // As the batcher loads them: the transfers a post or void names (in any state), and the
        // pending ones that may be due to expire.
        let named: std::collections::HashSet<Uuid> =
            submissions.iter().flat_map(|s| s.transfers.iter().filter_map(|t| t.pending_id)).collect();
        let pendings = self
            .transfers
            .values()
            .filter(|t| t.state == TransferState::Pending || named.contains(&t.id))
            .cloned()
            .collect::<Vec<_>>();
        let now = self.tick();
        let (outcomes, fx) = Engine::new(self.accounts.clone(), pendings, prior, now).run(submissions);
        self.now = self.now.max(fx.last_ts);
        let hashes: HashMap<Uuid, Vec<u8>> =
            submissions.iter().flat_map(|s| s.transfers.iter()).map(|t| (t.id, t.content_hash())).collect();
        for t in fx.created {
            let content_hash = hashes.get(&t.id).cloned().unwrap_or_default();
            self.prior.insert(t.id, Prior::Created { transfer: t.clone(), content_hash });
            self.transfers.insert(t.id, t);
        }
        for f in fx.failures {
            let content_hash = f.input.content_hash();
            self.prior.insert(f.input.id, Prior::Failed { reason: f.reason, content: f.input, content_hash });
        }
        for (id, state) in fx.state_changes {
            if let Some(t) = self.transfers.get_mut(&id) {
                t.state = state;
                if let Some(Prior::Created { transfer, .. }) = self.prior.get_mut(&id) {
                    transfer.state = state;
                }
            }
        }
        for (id, balances) in fx.accounts {
            if let Some(a) = self.accounts.get_mut(&id) {
                a.balances = balances;
            }
        }
        outcomes
    }
}

/// Runs one generated case against [`Sim`] and the model: every result and, at the end, every
/// balance must agree.
pub fn sim_case(case: &Case) -> Result<(), proptest::test_runner::TestCaseError> {
    let mut sim = Sim::default();
    let mut m = model::Model::default();
    let mut sent = Submitted::default();
    for (i, kind) in case.accounts.iter().enumerate() {
        let id = sim.account(*kind == 1, *kind == 2);
        m.index.insert(id.to_string(), i);
        m.acc.push(model::Acc { dmnec: *kind == 1, cmned: *kind == 2, ..Default::default() });
        sent.ids.push(id);
    }
    let request = |sim: &mut Sim, m: &mut model::Model, sent: &mut Submitted, transfers: Vec<pb::Transfer>| {
        let unique = Submitted::unique(transfers);
        let got = results(&sim.batch(&unique));
        let want = m.batch(&unique);
        proptest::prop_assert_eq!(&got, &want, "batch {:?}", unique);
        sent.remember(&unique);
        Ok::<_, proptest::test_runner::TestCaseError>(unique.into_iter().zip(got).collect::<Vec<_>>())
    };
    for batch in &case.batches {
        let transfers = batch.iter().map(|s| sent.transfer(s)).collect();
        request(&mut sim, &mut m, &mut sent, transfers)?;
    }
    if let Some((timed, after)) = &case.expiry {
        let holds = timed
            .iter()
            .map(|s| {
                let mut t = transfer(sent.ids[s.dr % sent.ids.len()], sent.ids[s.cr % sent.ids.len()], s.amount);
                t.flags = Some(pb::TransferFlags { pending: true, linked: s.linked, ..Default::default() });
                t.timeout_seconds = 1;
                t
            })
            .collect();
        let held: Vec<String> = request(&mut sim, &mut m, &mut sent, holds)?
            .into_iter()
            .filter(|(_, r)| r.0 && !r.2)
            .map(|(t, _)| t.id)
            .collect();
        sim.advance(2);
        for id in &held {
            m.expire(id);
        }
        let transfers = after.iter().map(|s| sent.transfer(s)).collect();
        request(&mut sim, &mut m, &mut sent, transfers)?;
    }
    for (i, id) in sent.ids.iter().enumerate() {
        let b = sim.balances(*id);
        let a = &m.acc[i];
        proptest::prop_assert_eq!(
            (b.debits_pending, b.debits_posted, b.credits_pending, b.credits_posted),
            (a.dp, a.dpo, a.cp, a.cpo),
            "account {}",
            i
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::test_runner::{Config, TestRunner};

    /// The engine agrees with the reference model on thousands of generated cases (the e2e test
    /// runs a few dozen of the same against the real service).
    #[test]
    fn the_engine_matches_the_reference_model() {
        let cases: u32 = std::env::var("LEDGER_ENGINE_MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000);
        let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
        if let Err(e) = runner.run(&super::case(), |c| super::sim_case(&c)) {
            panic!("{e}");
        }
    }
}
