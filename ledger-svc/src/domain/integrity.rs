//! The rules of the continuous verification of a receipt chain: what one replica remembers of a
//! tenant's chain between visits, which mismatch is new (and so reported once), and when a pass
//! over every tenant is complete. No I/O here.

use std::collections::HashSet;

use uuid::Uuid;

use super::receipt::Link;

/// A verification pass: what was appended since the last verified link, or the whole chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Incremental,
    Full,
}

impl Pass {
    /// The `pass` label of the integrity metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Incremental => "incremental",
            Self::Full => "full",
        }
    }
}

/// What this replica knows of one tenant's chain (kept in memory: a replica that starts knows
/// nothing and begins with a full pass).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainState {
    /// The link the next incremental pass continues from: every receipt up to it verified.
    pub verified: Link,
    /// The first bad sequence number already reported (audit record written), while it stays.
    pub reported: Option<u64>,
}

impl Default for ChainState {
    fn default() -> Self {
        Self { verified: Link::genesis(), reported: None }
    }
}

impl ChainState {
    /// Takes in a pass that verified up to `resume` and found its first mismatch at
    /// `first_bad_seq` (0: none); the mismatch to report, if it is not reported yet. A pass stops
    /// being sure at its first mismatch, so `resume` is a link before it and the next pass finds
    /// the same mismatch again (not reported again) until the chain is whole.
    pub fn settle(&mut self, resume: Link, first_bad_seq: u64) -> Option<u64> {
        self.verified = resume;
        if first_bad_seq == 0 {
            self.reported = None;
            return None;
        }
        (self.reported != Some(first_bad_seq)).then_some(first_bad_seq)
    }

    /// Notes that the mismatch at `first_bad_seq` was reported.
    pub fn reported(&mut self, first_bad_seq: u64) {
        self.reported = Some(first_bad_seq);
    }
}

/// The tenants a pass visited since it last completed over every tenant.
#[derive(Debug, Default)]
pub struct Round {
    visited: HashSet<Uuid>,
}

impl Round {
    pub fn visited(&mut self, tenant: Uuid) {
        self.visited.insert(tenant);
    }

    /// Whether every `listed` tenant was visited since the last completion (which this starts
    /// over); a round that visited nothing is not a pass.
    pub fn complete(&mut self, listed: &HashSet<Uuid>) -> bool {
        if self.visited.is_empty() || !listed.is_subset(&self.visited) {
            return false;
        }
        self.visited.clear();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(seq: u64) -> Link {
        Link { seq, hash: vec![seq as u8; 32] }
    }

    #[test]
    fn a_mismatch_is_reported_once_while_it_stays() {
        let mut s = ChainState::default();
        assert_eq!(s.settle(link(5), 0), None);
        assert_eq!(s.verified, link(5));
        assert_eq!(s.settle(link(6), 7), Some(7), "new");
        s.reported(7);
        assert_eq!(s.settle(link(6), 7), None, "the same one, found again");
        assert_eq!(s.settle(link(2), 3), Some(3), "an earlier one is new");
        s.reported(3);
        assert_eq!(s.settle(link(2), 3), None);
    }

    #[test]
    fn a_mismatch_not_recorded_yet_is_reported_again() {
        let mut s = ChainState::default();
        assert_eq!(s.settle(link(1), 2), Some(2));
        // The audit record failed: no `reported`, so the next visit tries again.
        assert_eq!(s.settle(link(1), 2), Some(2));
    }

    #[test]
    fn a_whole_chain_forgets_what_was_reported() {
        let mut s = ChainState { verified: link(1), reported: Some(2) };
        assert_eq!(s.settle(link(9), 0), None);
        assert_eq!(s.reported, None);
        assert_eq!(s.settle(link(9), 2), Some(2), "broken again: a new mismatch");
    }

    #[test]
    fn a_round_completes_when_every_listed_tenant_was_visited() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let listed = HashSet::from([a, b]);
        let mut round = Round::default();
        assert!(!round.complete(&listed), "nothing visited");
        round.visited(a);
        assert!(!round.complete(&listed));
        round.visited(b);
        assert!(round.complete(&listed));
        assert!(!round.complete(&listed), "a completion starts a new round");
        round.visited(a);
        round.visited(b);
        assert!(round.complete(&HashSet::from([a])), "a tenant gone from the list is not waited for");
    }

    #[test]
    fn passes_are_named_as_the_metrics_label_them() {
        assert_eq!((Pass::Incremental.as_str(), Pass::Full.as_str()), ("incremental", "full"));
    }
}
