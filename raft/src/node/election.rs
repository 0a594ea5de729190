//! Elections and votes: roles, pre-vote, votes, check-quorum, leadership transfer.
//!
//! - votes go only to candidates whose log is at least as up to date (paper 5.4.1), one per
//!   term; the vote is persisted before the answer leaves (`Ready`);
//! - pre-vote: a node that times out first asks whether it could win, without raising any
//!   term (diss. 9.6); nodes that heard from a leader within the election timeout refuse;
//! - check-quorum: a leader that has not heard from a majority within an election timeout
//!   steps down (diss. 6.2); followers ignore votes while they hear from a live leader;
//! - a new leader appends a no-op of its term at once so earlier entries commit (5.4.2);
//! - leadership transfer: the leader stops taking proposals, brings the target up to date,
//!   and tells it to campaign at once (`TimeoutNow`, diss. 3.10).

use super::{RawNode, Refused, Role};
use crate::message::{EntryKind, Message, MessageKind, NodeId};
use crate::storage::Storage;

impl<S: Storage> RawNode<S> {
    pub(super) fn become_follower(&mut self, term: u64, leader: Option<NodeId>) {
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.progress.clear();
        self.votes.clear();
        self.transfer = None;
        // Reads waiting here are dropped; their clients retry (with the new leader).
        self.reads.clear();
        self.uncommitted.clear();
        self.uncommitted_bytes = 0;
        self.reset_timeout();
    }

    /// Check-quorum: step down unless a majority of voters was heard from since the last
    /// check.
    pub(super) fn check_quorum(&mut self) {
        let id = self.config.id;
        let voters = &self.confs.last().expect("bootstrap").1.voters;
        let active = self
            .progress
            .iter()
            .filter(|(n, p)| voters.contains(n) && (**n == id || p.recent_active))
            .count();
        for (n, p) in self.progress.iter_mut() {
            if *n != id {
                p.recent_active = false;
            }
        }
        if active < self.quorum() {
            let term = self.term;
            self.become_follower(term, None);
        }
    }

    /// Whether this node may stand for election: it is a voter, or its log holds an
    /// uncommitted change that removed it from the voters of the last committed membership.
    /// The second keeps a cluster live when a leader that removed itself restarts holding
    /// the only copy of its removal and what followed: it may lead again (counting only the
    /// votes of the new voters), commit its removal, and then step down (diss. 4.2.2: a
    /// leader not in the new configuration manages the cluster until it commits).
    pub(super) fn may_campaign(&self) -> bool {
        let id = self.config.id;
        self.is_voter(id)
            || self
                .confs
                .iter()
                .rev()
                .find(|(i, _)| *i <= self.commit)
                .is_some_and(|(_, m)| m.voters.contains(&id))
    }

    pub(super) fn campaign_pre(&mut self) {
        let id = self.config.id;
        if self.membership().voters.iter().all(|v| *v == id) {
            // Its own vote is a quorum (or no one else's is needed): nothing to ask.
            return self.campaign(false);
        }
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.config.id, true);
        self.reset_timeout();
        let (last_index, last_term) = (self.last_index(), self.last_term());
        let term = self.term + 1;
        let voters: Vec<NodeId> = self.membership().voters.iter().copied().collect();
        for to in voters {
            if to != self.config.id {
                let from = self.config.id;
                let kind = MessageKind::PreVote {
                    last_index,
                    last_term,
                };
                self.messages.push(Message {
                    from,
                    to,
                    term,
                    kind,
                });
            }
        }
    }

    pub(super) fn campaign(&mut self, transfer: bool) {
        self.term += 1;
        self.vote = Some(self.config.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.config.id, true);
        self.reset_timeout();
        if self.counted(true) >= self.quorum() {
            return self.become_leader();
        }
        let (last_index, last_term) = (self.last_index(), self.last_term());
        let voters: Vec<NodeId> = self.membership().voters.iter().copied().collect();
        for to in voters {
            if to != self.config.id {
                self.send(
                    to,
                    MessageKind::Vote {
                        last_index,
                        last_term,
                        transfer,
                    },
                );
            }
        }
    }

    pub(super) fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        self.progress.clear();
        self.sync_progress();
        // A no-op of the new term lets earlier entries commit (paper 5.4.2).
        self.append_local(EntryKind::Normal, bytes::Bytes::new());
        self.broadcast_append(false);
    }

    pub(super) fn hears_leader(&self) -> bool {
        self.leader.is_some() && self.election_elapsed < self.config.election_ticks
    }

    /// Voters of the current membership whose answer was `granted`.
    pub(super) fn counted(&self, granted: bool) -> usize {
        let voters = &self.membership().voters;
        self.votes
            .iter()
            .filter(|(n, g)| **g == granted && voters.contains(n))
            .count()
    }

    /// Records `from`'s answer; `Some(true)` once a quorum granted, `Some(false)` once a
    /// quorum refused, `None` while undecided.
    pub(super) fn tally(&mut self, from: NodeId, granted: bool) -> Option<bool> {
        self.votes.insert(from, granted);
        if self.counted(true) >= self.quorum() {
            Some(true)
        } else if self.counted(false) >= self.quorum() {
            Some(false)
        } else {
            None
        }
    }

    /// Paper 5.4.1: the candidate's log ends in a later term, or the same term and no shorter.
    pub(super) fn up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        let (mine_i, mine_t) = (self.last_index(), self.last_term());
        last_term > mine_t || (last_term == mine_t && last_index >= mine_i)
    }

    /// Hands leadership to voter `to`: proposals are refused meanwhile; `to` is brought up
    /// to date and told to campaign. Abandoned after an election timeout.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), Refused> {
        self.may_propose()?;
        if to == self.config.id || !self.is_voter(to) {
            return Err(Refused::InvalidChange("the target must be another voter"));
        }
        self.transfer = Some((to, 0, false));
        self.maybe_timeout_now(to);
        self.send_append(to, false);
        Ok(())
    }

    pub(super) fn maybe_timeout_now(&mut self, to: NodeId) {
        let last = self.last_index();
        if let Some((target, elapsed, false)) = self.transfer {
            if target == to && self.progress.get(&to).is_some_and(|p| p.matched == last) {
                self.transfer = Some((target, elapsed, true));
                self.send(to, MessageKind::TimeoutNow);
            }
        }
    }

    /// A pre-vote request: granted (in the asked term) only when this node hears no live
    /// leader and the asker's log is at least as up to date.
    pub(super) fn handle_pre_vote(
        &mut self,
        from: NodeId,
        term: u64,
        last_index: u64,
        last_term: u64,
    ) {
        // Whether the candidate is a voter is not ours to judge: our membership may be
        // behind (it may have been promoted in entries we lack).
        let grant =
            term > self.term && !self.hears_leader() && self.up_to_date(last_index, last_term);
        let kind = MessageKind::PreVoteResp { reject: !grant };
        // A grant answers in the asked term so the asker can count it; a refusal carries our
        // term, so an asker that is behind learns of it.
        let term = if grant { term } else { self.term };
        self.messages.push(Message {
            from: self.config.id,
            to: from,
            term,
            kind,
        });
    }

    pub(super) fn handle_pre_vote_resp(&mut self, from: NodeId, term: u64, reject: bool) {
        if reject && term > self.term {
            // Refused by a node in a later term: no pre-vote of ours can win.
            return self.become_follower(term, None);
        }
        if self.role == Role::PreCandidate && term == self.term + 1 {
            match self.tally(from, !reject) {
                Some(true) => self.campaign(false),
                Some(false) => self.become_follower(self.term, None),
                None => {}
            }
        }
    }

    /// A vote request in this node's term (a later term was adopted by `step`): one vote per
    /// term, only for a log at least as up to date (paper 5.2, 5.4.1).
    pub(super) fn handle_vote(&mut self, from: NodeId, last_index: u64, last_term: u64) {
        let free = self.vote.is_none_or(|v| v == from);
        let grant = free && self.role == Role::Follower || self.vote == Some(from);
        let grant = grant && self.up_to_date(last_index, last_term);
        if grant {
            self.vote = Some(from);
            self.election_elapsed = 0;
        }
        self.send(from, MessageKind::VoteResp { reject: !grant });
    }

    pub(super) fn handle_vote_resp(&mut self, from: NodeId, reject: bool) {
        if self.role == Role::Candidate {
            match self.tally(from, !reject) {
                Some(true) => self.become_leader(),
                Some(false) => self.become_follower(self.term, None),
                None => {}
            }
        }
    }
}
