//! [`RawNode`]: the Raft state machine. Input arrives through [`RawNode::tick`],
//! [`RawNode::step`] and [`RawNode::propose`]; output leaves through [`RawNode::ready`]: the
//! entries and hard state to persist, the messages to send once they are persisted, and the
//! entries newly committed. [`RawNode::advance`] says the application has done so.
//!
//! Rules and where they live (Raft paper section numbers; "diss." is Ongaro's dissertation):
//! - a vote or an append acknowledgement is sent only after the term, vote and entries it
//!   depends on are persisted: messages leave in the same `Ready` as the state they depend
//!   on, and the application persists before sending (5.2, 5.3);
//! - a leader counts its own entries toward a quorum only once persisted (`advance`);
//! - only entries of the current term are committed by counting replicas; a new leader
//!   appends a no-op of its term at once so earlier ones commit (5.4.2);
//! - an append whose entries already match is never a reason to truncate; only a term
//!   conflict truncates, and never below the commit index (5.3), so reordered or duplicated
//!   appends are harmless;
//! - votes go only to candidates whose log is at least as up to date (5.4.1);
//! - pre-vote: a node that times out first asks whether it could win, without raising any
//!   term (diss. 9.6); nodes that heard from a leader within the election timeout refuse;
//! - check-quorum: a leader that has not heard from a majority within an election timeout
//!   steps down (diss. 6.2); followers ignore votes while they hear from a live leader.

use std::collections::BTreeMap;

use crate::message::{Entry, HardState, Message, MessageKind, NodeId};
use crate::progress::Progress;
use crate::quorum;
use crate::storage::Storage;

/// How a node is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// Every voter, this node included.
    pub voters: Vec<NodeId>,
    /// Ticks without hearing from a leader before campaigning (randomized in [t, 2t)).
    pub election_ticks: u32,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: u32,
    /// Appends in flight to one follower.
    pub in_flight_max: usize,
    /// Entries in one append.
    pub entries_per_append_max: usize,
    /// Seed of the node's randomness (election timeouts).
    pub seed: u64,
}

impl Config {
    /// Defaults: election after 10–19 ticks, heartbeat every tick.
    pub fn new(id: NodeId, voters: Vec<NodeId>, seed: u64) -> Config {
        Config {
            id,
            voters,
            election_ticks: 10,
            heartbeat_ticks: 1,
            in_flight_max: 64,
            entries_per_append_max: 256,
            seed,
        }
    }
}

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking whether it could win, before raising its term.
    PreCandidate,
    /// Campaigning in its term.
    Candidate,
    /// Leading its term.
    Leader,
}

/// Why a proposal was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProposeError {
    /// Only a leader appends; the hint is the leader this node knows of, if any.
    NotLeader(Option<NodeId>),
}

/// What the application must do next, in order: persist `entries` (a first entry at or
/// below the persisted last index replaces the suffix from there) and `hard_state`; then
/// send `messages`; apply `committed`; then call [`RawNode::advance`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ready {
    /// New hard state to persist, if it changed.
    pub hard_state: Option<HardState>,
    /// Entries to persist.
    pub entries: Vec<Entry>,
    /// Messages to send after persisting.
    pub messages: Vec<Message>,
    /// Entries committed and not yet applied, in order.
    pub committed: Vec<Entry>,
}

/// A small, seeded generator (splitmix64): the core has no other source of randomness.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The Raft state machine over a persisted log `S`.
pub struct RawNode<S: Storage> {
    config: Config,
    storage: S,
    /// Entries not yet persisted, from `storage.last_index() + 1` on (or replacing a suffix).
    unstable: Vec<Entry>,
    term: u64,
    vote: Option<NodeId>,
    commit: u64,
    applied: u64,
    role: Role,
    leader: Option<NodeId>,
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    election_timeout: u32,
    votes: BTreeMap<NodeId, bool>,
    progress: BTreeMap<NodeId, Progress>,
    messages: Vec<Message>,
    persisted_hard: HardState,
    rng: Rng,
}

impl<S: Storage> RawNode<S> {
    /// A node over `storage`, resuming from its persisted hard state and log.
    pub fn new(config: Config, storage: S) -> RawNode<S> {
        assert!(
            config.voters.contains(&config.id),
            "a node is one of its voters"
        );
        assert!(
            config.election_ticks > config.heartbeat_ticks,
            "heartbeats beat elections"
        );
        let hs = storage.hard_state();
        let mut node = RawNode {
            rng: Rng(config.seed ^ config.id.wrapping_mul(0x2545_F491_4F6C_DD1D)),
            config,
            unstable: Vec::new(),
            term: hs.term,
            vote: hs.vote,
            commit: hs.commit.min(storage.last_index()),
            applied: 0,
            role: Role::Follower,
            leader: None,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            election_timeout: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            messages: Vec::new(),
            persisted_hard: hs,
            storage,
        };
        node.reset_timeout();
        node
    }

    /// The persisted log, for the application to write what `ready` hands out.
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.storage
    }

    /// The persisted log.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Current term.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// Highest committed index.
    pub fn commit(&self) -> u64 {
        self.commit
    }

    /// Last index, persisted or not.
    pub fn last_index(&self) -> u64 {
        self.unstable
            .last()
            .map_or(self.storage.last_index(), |e| e.index)
    }

    fn term_at(&self, index: u64) -> Option<u64> {
        if let Some(first) = self.unstable.first() {
            if index >= first.index {
                return self
                    .unstable
                    .get((index - first.index) as usize)
                    .map(|e| e.term);
            }
        }
        self.storage.term(index)
    }

    /// Last index that is persisted and still part of the log (a persisted suffix being
    /// replaced by unstable entries does not count).
    fn persisted_last(&self) -> u64 {
        self.unstable
            .first()
            .map_or(self.storage.last_index(), |e| e.index - 1)
    }

    fn last_term(&self) -> u64 {
        self.term_at(self.last_index())
            .expect("the last index has a term")
    }

    /// Entries `lo..hi` from storage and the unstable tail.
    fn entries(&self, lo: u64, hi: u64) -> Vec<Entry> {
        let mut out = Vec::new();
        let stable_end = self.unstable.first().map_or(hi, |e| e.index.min(hi));
        if lo < stable_end {
            out = self.storage.entries(lo, stable_end);
        }
        for e in &self.unstable {
            if e.index >= lo.max(stable_end) && e.index < hi {
                out.push(e.clone());
            }
        }
        out
    }

    fn reset_timeout(&mut self) {
        let t = self.config.election_ticks;
        self.election_timeout = t + (self.rng.next() % u64::from(t)) as u32;
        self.election_elapsed = 0;
    }

    fn send(&mut self, to: NodeId, kind: MessageKind) {
        let term = self.term;
        self.messages.push(Message {
            from: self.config.id,
            to,
            term,
            kind,
        });
    }

    fn quorum(&self) -> usize {
        quorum::majority(self.config.voters.len())
    }

    fn become_follower(&mut self, term: u64, leader: Option<NodeId>) {
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.progress.clear();
        self.votes.clear();
        self.reset_timeout();
    }

    /// Advances time by one tick.
    pub fn tick(&mut self) {
        self.election_elapsed += 1;
        match self.role {
            Role::Leader => {
                self.heartbeat_elapsed += 1;
                if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
                    self.heartbeat_elapsed = 0;
                    self.broadcast_append(true);
                }
                if self.election_elapsed >= self.config.election_ticks {
                    self.election_elapsed = 0;
                    self.check_quorum();
                }
            }
            _ => {
                if self.election_elapsed >= self.election_timeout {
                    self.campaign_pre();
                }
            }
        }
    }

    /// Check-quorum: step down unless a majority was heard from since the last check.
    fn check_quorum(&mut self) {
        let id = self.config.id;
        let active = self
            .progress
            .iter()
            .filter(|(n, p)| **n == id || p.recent_active)
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

    fn campaign_pre(&mut self) {
        if self.config.voters.len() == 1 {
            return self.campaign();
        }
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.config.id, true);
        self.reset_timeout();
        let (last_index, last_term) = (self.last_index(), self.last_term());
        let term = self.term + 1;
        for to in self.config.voters.clone() {
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

    fn campaign(&mut self) {
        self.term += 1;
        self.vote = Some(self.config.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.config.id, true);
        self.reset_timeout();
        if self.votes.len() >= self.quorum() {
            return self.become_leader();
        }
        let (last_index, last_term) = (self.last_index(), self.last_term());
        for to in self.config.voters.clone() {
            if to != self.config.id {
                self.send(
                    to,
                    MessageKind::Vote {
                        last_index,
                        last_term,
                    },
                );
            }
        }
    }

    fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        let last = self.last_index();
        self.progress = self
            .config
            .voters
            .iter()
            .map(|n| (*n, Progress::new(last)))
            .collect();
        // The leader's own match follows what it has persisted (see `advance`).
        let persisted = self.persisted_last();
        if let Some(p) = self.progress.get_mut(&self.config.id) {
            p.matched = persisted;
        }
        // A no-op of the new term lets earlier entries commit (paper 5.4.2).
        self.append_local(Vec::new());
        self.broadcast_append(false);
    }

    fn append_local(&mut self, data: Vec<u8>) -> u64 {
        let index = self.last_index() + 1;
        self.unstable.push(Entry {
            index,
            term: self.term,
            data,
        });
        index
    }

    /// Appends `data` to the log if this node leads. Returns its index; it is committed once
    /// it appears in a `Ready`'s `committed`.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<u64, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader(self.leader));
        }
        let index = self.append_local(data);
        self.broadcast_append(false);
        Ok(index)
    }

    fn broadcast_append(&mut self, heartbeat: bool) {
        let peers: Vec<NodeId> = self
            .progress
            .keys()
            .copied()
            .filter(|n| *n != self.config.id)
            .collect();
        for to in peers {
            self.send_append(to, heartbeat);
        }
    }

    /// Sends `to` what it is missing, within its pacing; a heartbeat goes regardless.
    fn send_append(&mut self, to: NodeId, heartbeat: bool) {
        let last = self.last_index();
        let Some(p) = self.progress.get(&to) else {
            return;
        };
        let can = p.can_send(self.config.in_flight_max);
        if !can && !heartbeat {
            return;
        }
        // A heartbeat to a follower with appends in flight carries only what is known to
        // match, so it never races them into a spurious refusal.
        let next = if can {
            p.next.min(last + 1)
        } else {
            p.matched + 1
        };
        let prev_index = next - 1;
        let Some(prev_term) = self.term_at(prev_index) else {
            return;
        };
        let hi = if can {
            (last + 1).min(next + self.config.entries_per_append_max as u64)
        } else {
            next
        };
        let entries = self.entries(next, hi);
        // Commit only what the follower is known to hold, so it never applies unmatched.
        let commit = self.commit.min(prev_index + entries.len() as u64);
        let sent_last = prev_index + entries.len() as u64;
        let p = self.progress.get_mut(&to).expect("checked above");
        if can {
            p.sent(sent_last);
        }
        self.send(
            to,
            MessageKind::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            },
        );
    }

    /// Takes a message from another node.
    pub fn step(&mut self, m: Message) {
        if m.to != self.config.id || !self.config.voters.contains(&m.from) {
            return;
        }
        let is_pre = matches!(
            m.kind,
            MessageKind::PreVote { .. } | MessageKind::PreVoteResp { .. }
        );
        if m.term > self.term && !is_pre {
            if matches!(m.kind, MessageKind::Vote { .. }) && self.hears_leader() {
                // A live leader: a disruptive candidate does not get to raise our term.
                return;
            }
            let leader = matches!(m.kind, MessageKind::Append { .. }).then_some(m.from);
            self.become_follower(m.term, leader);
        } else if m.term < self.term && !is_pre {
            // A stale leader learns of the newer term from the answer.
            if matches!(m.kind, MessageKind::Append { .. }) {
                let kind = MessageKind::AppendResp {
                    reject: true,
                    index: 0,
                    hint: 0,
                };
                self.send(m.from, kind);
            }
            return;
        }
        match m.kind {
            MessageKind::PreVote {
                last_index,
                last_term,
            } => {
                let grant = m.term > self.term
                    && !self.hears_leader()
                    && self.up_to_date(last_index, last_term);
                let kind = MessageKind::PreVoteResp { reject: !grant };
                // A grant answers in the asked term so the asker can count it; a refusal
                // carries our term, so an asker that is behind learns of it.
                let term = if grant { m.term } else { self.term };
                self.messages.push(Message {
                    from: self.config.id,
                    to: m.from,
                    term,
                    kind,
                });
            }
            MessageKind::PreVoteResp { reject } => {
                if reject && m.term > self.term {
                    // Refused by a node in a later term: no pre-vote of ours can win.
                    return self.become_follower(m.term, None);
                }
                if self.role == Role::PreCandidate && m.term == self.term + 1 {
                    self.votes.insert(m.from, !reject);
                    if self.granted() >= self.quorum() {
                        self.campaign();
                    } else if self.refused() >= self.quorum() {
                        let term = self.term;
                        self.become_follower(term, None);
                    }
                }
            }
            MessageKind::Vote {
                last_index,
                last_term,
            } => {
                let free = self.vote.is_none_or(|v| v == m.from);
                let grant = free && self.role == Role::Follower || self.vote == Some(m.from);
                let grant = grant && self.up_to_date(last_index, last_term);
                if grant {
                    self.vote = Some(m.from);
                    self.election_elapsed = 0;
                }
                self.send(m.from, MessageKind::VoteResp { reject: !grant });
            }
            MessageKind::VoteResp { reject } => {
                if self.role == Role::Candidate {
                    self.votes.insert(m.from, !reject);
                    if self.granted() >= self.quorum() {
                        self.become_leader();
                    } else if self.refused() >= self.quorum() {
                        let term = self.term;
                        self.become_follower(term, None);
                    }
                }
            }
            MessageKind::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                if self.role != Role::Follower || self.leader != Some(m.from) {
                    let term = self.term;
                    self.become_follower(term, Some(m.from));
                }
                self.election_elapsed = 0;
                self.handle_append(m.from, prev_index, prev_term, entries, commit);
            }
            MessageKind::AppendResp {
                reject,
                index,
                hint,
            } => {
                if self.role == Role::Leader {
                    self.handle_append_resp(m.from, reject, index, hint);
                }
            }
        }
    }

    fn hears_leader(&self) -> bool {
        self.leader.is_some() && self.election_elapsed < self.config.election_ticks
    }

    fn granted(&self) -> usize {
        self.votes.values().filter(|g| **g).count()
    }

    fn refused(&self) -> usize {
        self.votes.values().filter(|g| !**g).count()
    }

    /// Paper 5.4.1: the candidate's log ends in a later term, or the same term and no shorter.
    fn up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        let (mine_i, mine_t) = (self.last_index(), self.last_term());
        last_term > mine_t || (last_term == mine_t && last_index >= mine_i)
    }

    fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: u64,
        prev_term: u64,
        entries: Vec<Entry>,
        commit: u64,
    ) {
        let (mut prev_index, mut prev_term, mut entries) = (prev_index, prev_term, entries);
        if prev_index < self.commit {
            // Up to the commit index the logs match (Raft's invariants): start from there.
            let skip = (self.commit - prev_index).min(entries.len() as u64) as usize;
            entries.drain(..skip);
            prev_index = self.commit;
            prev_term = self
                .term_at(prev_index)
                .expect("the commit index is in the log");
        }
        if self.term_at(prev_index) != Some(prev_term) {
            // Fast backtracking: the last index whose term is not after `prev_term`.
            let mut hint = prev_index.min(self.last_index());
            while hint > self.commit && self.term_at(hint).is_some_and(|t| t > prev_term) {
                hint -= 1;
            }
            let kind = MessageKind::AppendResp {
                reject: true,
                index: prev_index,
                hint,
            };
            return self.send(from, kind);
        }
        let last_new = prev_index + entries.len() as u64;
        for e in entries {
            match self.term_at(e.index) {
                Some(t) if t == e.term => continue,
                Some(_) => {
                    assert!(e.index > self.commit, "a conflict below the commit index");
                    self.truncate_from(e.index);
                    self.unstable.push(e);
                }
                None => self.unstable.push(e),
            }
        }
        if commit > self.commit {
            self.commit = commit.min(last_new);
        }
        let kind = MessageKind::AppendResp {
            reject: false,
            index: last_new,
            hint: 0,
        };
        self.send(from, kind);
    }

    /// Drops entries from `index` on; those already persisted are replaced when the next
    /// `Ready`'s entries (starting at `index`) are persisted.
    fn truncate_from(&mut self, index: u64) {
        if let Some(first) = self.unstable.first() {
            if index >= first.index {
                self.unstable.truncate((index - first.index) as usize);
                return;
            }
        }
        // The conflicting suffix is persisted: re-send everything from `index` as unstable.
        self.unstable.clear();
        debug_assert!(index <= self.storage.last_index() + 1);
    }

    fn handle_append_resp(&mut self, from: NodeId, reject: bool, index: u64, hint: u64) {
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        if reject {
            if p.refused(index, hint) {
                self.send_append(from, false);
            }
            return;
        }
        if p.accepted(index) {
            self.maybe_commit();
        }
        // Keep the pipe full.
        if self
            .progress
            .get(&from)
            .is_some_and(|p| p.next <= self.last_index())
        {
            self.send_append(from, false);
        }
    }

    fn maybe_commit(&mut self) {
        let mut matched: Vec<u64> = self.progress.values().map(|p| p.matched).collect();
        let n = quorum::committed_index(&mut matched);
        // Only entries of this term commit by counting (paper 5.4.2).
        if n > self.commit && self.term_at(n) == Some(self.term) {
            self.commit = n;
            self.broadcast_append(true);
        }
    }

    /// What to do next (see [`Ready`]).
    pub fn ready(&mut self) -> Ready {
        let hs = HardState {
            term: self.term,
            vote: self.vote,
            commit: self.commit,
        };
        // Apply only what is committed and persisted here.
        let applicable = self.commit.min(self.persisted_last());
        let committed = if applicable > self.applied {
            self.entries(self.applied + 1, applicable + 1)
        } else {
            Vec::new()
        };
        Ready {
            hard_state: (hs != self.persisted_hard).then_some(hs),
            entries: self.unstable.clone(),
            messages: std::mem::take(&mut self.messages),
            committed,
        }
    }

    /// The application persisted, sent and applied what `ready` handed out.
    pub fn advance(&mut self, ready: Ready) {
        if let Some(hs) = ready.hard_state {
            self.persisted_hard = hs;
        }
        if let Some(last) = ready.entries.last() {
            assert_eq!(
                self.storage.last_index(),
                last.index,
                "persist entries before advance"
            );
            // Keep what was added to the unstable tail since `ready`.
            self.unstable.retain(|e| e.index > last.index);
        }
        if let Some(last) = ready.committed.last() {
            self.applied = last.index;
        }
        if self.role == Role::Leader {
            let persisted = self.storage.last_index();
            let id = self.config.id;
            if self
                .progress
                .get_mut(&id)
                .is_some_and(|p| p.accepted(persisted))
            {
                self.maybe_commit();
            }
        }
    }

    /// Whether `ready` would hand out anything.
    pub fn has_ready(&self) -> bool {
        let hs = HardState {
            term: self.term,
            vote: self.vote,
            commit: self.commit,
        };
        !self.messages.is_empty()
            || !self.unstable.is_empty()
            || hs != self.persisted_hard
            || self.commit.min(self.persisted_last()) > self.applied
    }
}
