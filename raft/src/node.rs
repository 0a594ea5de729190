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
//!   steps down (diss. 6.2); followers ignore votes while they hear from a live leader;
//! - membership changes one server at a time; a configuration takes effect once it is in
//!   the log; a leader proposes one only after committing an entry of its own term, and only
//!   when no earlier change is uncommitted (diss. 4.1, and Ongaro's 2015 correction);
//! - leadership transfer: the leader stops taking proposals, brings the target up to date,
//!   and tells it to campaign at once (`TimeoutNow`, diss. 3.10);
//! - ReadIndex: a read index is the commit index once an entry of the leader's term is
//!   committed, released after a quorum answers a heartbeat sent after the read arrived
//!   (diss. 6.4); followers forward their reads to the leader;
//! - a far-behind follower is sent sealed segments in chunks instead of entries; it resumes
//!   from what it acknowledged, and every chunk it answers counts as a sign of life.

use std::collections::{BTreeMap, VecDeque};

use crate::message::{Entry, EntryKind, HardState, Membership, MembershipChange};
use crate::message::{Message, MessageKind, NodeId};
use crate::progress::{Mode, Progress, Shipping};
use crate::quorum;
use crate::storage::{SegmentChunk, Storage};

/// How a node is set up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// The voters of a cluster whose log holds no membership entry yet (its bootstrap).
    pub voters: Vec<NodeId>,
    /// The learners of that bootstrap membership.
    pub learners: Vec<NodeId>,
    /// Ticks without hearing from a leader before campaigning (randomized in [t, 2t)).
    pub election_ticks: u32,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: u32,
    /// Appends in flight to one follower.
    pub in_flight_max: usize,
    /// Bytes of entry data in flight to one follower (one append may exceed it alone).
    pub in_flight_bytes_max: usize,
    /// Entries in one append.
    pub entries_per_append_max: usize,
    /// Bytes of entry data in one append (at least one entry goes regardless).
    pub append_bytes_max: usize,
    /// Bytes of proposed, uncommitted entry data a leader accepts before refusing proposals.
    pub uncommitted_bytes_max: usize,
    /// A follower this many entries behind, at the start of a sealed segment, is sent the
    /// segment instead of entries.
    pub ship_lag_min: u64,
    /// Bytes in one segment chunk.
    pub chunk_bytes: usize,
    /// Segment chunks in flight to one follower.
    pub chunks_in_flight: usize,
    /// Seed of the node's randomness (election timeouts).
    pub seed: u64,
}

impl Config {
    /// Defaults: election after 10–19 ticks, heartbeat every tick, 64 appends or 16 MiB in
    /// flight, 1 MiB appends, 64 MiB uncommitted, 1 MiB chunks for followers 4,096 behind.
    pub fn new(id: NodeId, voters: Vec<NodeId>, seed: u64) -> Config {
        Config {
            id,
            voters,
            learners: Vec::new(),
            election_ticks: 10,
            heartbeat_ticks: 1,
            in_flight_max: 64,
            in_flight_bytes_max: 16 << 20,
            entries_per_append_max: 1024,
            append_bytes_max: 1 << 20,
            uncommitted_bytes_max: 64 << 20,
            ship_lag_min: 4096,
            chunk_bytes: 1 << 20,
            chunks_in_flight: 4,
            seed,
        }
    }
}

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one). Learners are always followers.
    Follower,
    /// Asking whether it could win, before raising its term.
    PreCandidate,
    /// Campaigning in its term.
    Candidate,
    /// Leading its term.
    Leader,
}

/// Why a proposal, membership change, transfer or read was refused. Nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refused {
    /// Only a leader does this; the hint is the leader this node knows of, if any.
    NotLeader(Option<NodeId>),
    /// Leadership is being handed over; try the new leader shortly.
    Transferring,
    /// Too much proposed data is uncommitted; retry once it commits.
    Backpressure,
    /// The leader has not committed an entry of its own term yet (a membership change must
    /// wait for that, dissertation 4.1 and its 2015 correction).
    NotReady,
    /// An earlier membership change is not committed yet.
    ChangePending,
    /// The change does not apply to the current membership.
    InvalidChange(&'static str),
    /// The learner to promote has not caught up with the commit index.
    NotCaughtUp,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::NotLeader(Some(l)) => write!(f, "not the leader (node {l} is)"),
            Refused::NotLeader(None) => write!(f, "not the leader, and no leader is known"),
            Refused::Transferring => write!(f, "leadership is being transferred"),
            Refused::Backpressure => write!(f, "too much uncommitted data"),
            Refused::NotReady => write!(f, "the leader has not committed in its term yet"),
            Refused::ChangePending => write!(f, "a membership change is in progress"),
            Refused::InvalidChange(why) => write!(f, "invalid membership change: {why}"),
            Refused::NotCaughtUp => write!(f, "the learner has not caught up"),
        }
    }
}

impl std::error::Error for Refused {}

/// A linearizable read may be served once this node has applied up to `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReadState {
    /// The tag given to [`RawNode::read_index`].
    pub ctx: u64,
    /// The read index.
    pub index: u64,
}

/// What the application must do next, in order: persist `entries` (a first entry at or
/// below the persisted last index replaces the suffix from there), `chunks` and
/// `hard_state`; then send `messages` (those for which [`Message::may_precede_persistence`]
/// holds may be sent before persisting); apply `committed`; serve `reads` once applied up to
/// their index; then call [`RawNode::advance`].
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
pub struct Ready {
    /// New hard state to persist, if it changed.
    pub hard_state: Option<HardState>,
    /// Entries to persist.
    pub entries: Vec<Entry>,
    /// Segment chunks to persist, after `entries`; a `done` chunk installs its segment.
    pub chunks: Vec<SegmentChunk>,
    /// Messages to send after persisting.
    pub messages: Vec<Message>,
    /// Entries committed and not yet applied, in order.
    pub committed: Vec<Entry>,
    /// Reads confirmed linearizable.
    pub reads: Vec<ReadState>,
}

/// A small, seeded generator (splitmix64): the core has no other source of randomness.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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

/// A read waiting for its quorum round (`seq` 0: for the leader's first commit in its term).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PendingRead {
    ctx: u64,
    from: NodeId,
    index: u64,
    seq: u64,
}

/// A segment a follower is receiving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Incoming {
    first: u64,
    last: u64,
    last_term: u64,
    /// Who is sending it, and in which term: another leader's file of the same entries
    /// need not be the same bytes (its own segment boundaries, a scavenge), so chunks are
    /// only ever joined to chunks from the same sender.
    from: NodeId,
    term: u64,
    received: u64,
}

/// The Raft state machine over a persisted log `S`. It is `Clone + Hash + Eq` when `S` is,
/// so a model checker can take whole nodes as its state (`tests/model.rs`).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
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
    /// Memberships in the log (persisted or not), oldest first; the first is the bootstrap
    /// at index 0. The last one is in effect.
    confs: Vec<(u64, Membership)>,
    /// Leadership being handed to this node: (target, ticks since, `TimeoutNow` sent).
    transfer: Option<(NodeId, u32, bool)>,
    /// The latest read round; heartbeats carry it and answers echo it.
    read_seq: u64,
    reads: VecDeque<PendingRead>,
    reads_out: Vec<ReadState>,
    /// The leader's proposed, uncommitted entries: (index, data bytes).
    uncommitted: VecDeque<(u64, usize)>,
    uncommitted_bytes: usize,
    incoming: Option<Incoming>,
    chunks_out: Vec<SegmentChunk>,
    /// Proposals arrived since the last `ready`: appends go out once, batched.
    broadcast_due: bool,
}

impl<S: Storage> RawNode<S> {
    /// A node over `storage`, resuming from its persisted hard state and log.
    pub fn new(config: Config, storage: S) -> RawNode<S> {
        assert!(
            config.election_ticks > config.heartbeat_ticks,
            "heartbeats beat elections"
        );
        let hs = storage.hard_state();
        let bootstrap = Membership {
            voters: config.voters.iter().copied().collect(),
            learners: config.learners.iter().copied().collect(),
            retired: Default::default(),
        };
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
            confs: vec![(0, bootstrap)],
            transfer: None,
            read_seq: 0,
            reads: VecDeque::new(),
            reads_out: Vec::new(),
            uncommitted: VecDeque::new(),
            uncommitted_bytes: 0,
            incoming: None,
            chunks_out: Vec::new(),
            broadcast_due: false,
        };
        node.reload_confs();
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

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.id
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

    /// The membership in effect: the latest in this node's log.
    pub fn membership(&self) -> &Membership {
        &self.confs.last().expect("the bootstrap is always there").1
    }

    /// Last index, persisted or not.
    pub fn last_index(&self) -> u64 {
        self.unstable
            .last()
            .map_or(self.storage.last_index(), |e| e.index)
    }

    /// Term of the entry at `index` in this node's log, persisted or not (`None` beyond it).
    pub fn term_of(&self, index: u64) -> Option<u64> {
        self.term_at(index)
    }

    /// Whether a segment is being shipped to `id` (leaders only).
    pub fn is_shipping_to(&self, id: NodeId) -> bool {
        self.progress
            .get(&id)
            .is_some_and(|p| matches!(p.mode, Mode::Ship(_)))
    }

    fn is_voter(&self, id: NodeId) -> bool {
        self.membership().voters.contains(&id)
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

    fn committed_in_term(&self) -> bool {
        self.term_at(self.commit) == Some(self.term)
    }

    /// Entries `lo..hi` from storage and the unstable tail, within about `max_bytes`.
    fn entries(&self, lo: u64, hi: u64, max_bytes: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        let stable_end = self.unstable.first().map_or(hi, |e| e.index.min(hi));
        if lo < stable_end {
            out = self.storage.entries(lo, stable_end, max_bytes);
            if (out.len() as u64) < stable_end - lo {
                return out;
            }
        }
        let mut bytes: usize = out.iter().map(|e| e.data.len()).sum();
        for e in &self.unstable {
            if e.index >= lo.max(stable_end) && e.index < hi {
                if !out.is_empty() && bytes + e.data.len() > max_bytes {
                    break;
                }
                bytes += e.data.len();
                out.push(e.clone());
            }
        }
        out
    }

    /// Rebuilds the memberships from the persisted log and the unstable tail.
    fn reload_confs(&mut self) {
        self.confs.truncate(1);
        self.confs.extend(self.storage.memberships());
        let first_unstable = self.unstable.first().map_or(u64::MAX, |e| e.index);
        self.confs.retain(|(i, _)| *i < first_unstable);
        for e in &self.unstable {
            if e.kind == EntryKind::Membership {
                let m = Membership::decode(&e.data).expect("checked when it arrived");
                self.confs.push((e.index, m));
            }
        }
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
        quorum::majority(self.membership().voters.len())
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
        self.transfer = None;
        // Reads waiting here are dropped; their clients retry (with the new leader).
        self.reads.clear();
        self.uncommitted.clear();
        self.uncommitted_bytes = 0;
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
                if let Some((to, elapsed, sent)) = self.transfer {
                    // A transfer that did not happen within an election timeout is abandoned.
                    self.transfer = (elapsed + 1 < self.config.election_ticks).then_some((
                        to,
                        elapsed + 1,
                        sent,
                    ));
                }
                if self.election_elapsed >= self.config.election_ticks {
                    self.election_elapsed = 0;
                    self.check_quorum();
                }
            }
            _ => {
                if self.election_elapsed >= self.election_timeout {
                    if self.is_voter(self.config.id) {
                        self.campaign_pre();
                    } else {
                        self.reset_timeout();
                    }
                }
            }
        }
    }

    /// Check-quorum: step down unless a majority of voters was heard from since the last
    /// check.
    fn check_quorum(&mut self) {
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

    fn campaign_pre(&mut self) {
        if self.membership().voters.len() == 1 {
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

    fn campaign(&mut self, transfer: bool) {
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

    fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        self.progress.clear();
        self.sync_progress();
        // A no-op of the new term lets earlier entries commit (paper 5.4.2).
        self.append_local(EntryKind::Normal, Vec::new());
        self.broadcast_append(false);
    }

    /// A leader keeps one progress per member, and none for anyone else.
    fn sync_progress(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let members: Vec<NodeId> = self.membership().members().collect();
        self.progress.retain(|n, _| members.contains(n));
        let (last, persisted, id) = (self.last_index(), self.persisted_last(), self.config.id);
        for n in members {
            self.progress.entry(n).or_insert_with(|| {
                let mut p = Progress::new(last);
                if n == id {
                    // The leader's own match follows what it has persisted (see `advance`).
                    p.accepted(persisted);
                }
                p
            });
        }
        if self.transfer.is_some_and(|(to, ..)| !self.is_voter(to)) {
            self.transfer = None;
        }
    }

    fn append_local(&mut self, kind: EntryKind, data: Vec<u8>) -> u64 {
        let index = self.last_index() + 1;
        self.uncommitted.push_back((index, data.len()));
        self.uncommitted_bytes += data.len();
        if kind == EntryKind::Membership {
            let m = Membership::decode(&data).expect("encoded by this leader");
            self.confs.push((index, m));
        }
        self.unstable.push(Entry {
            index,
            term: self.term,
            kind,
            data,
        });
        if kind == EntryKind::Membership {
            self.sync_progress();
        }
        index
    }

    fn may_propose(&self) -> Result<(), Refused> {
        if self.role != Role::Leader {
            return Err(Refused::NotLeader(self.leader));
        }
        if self.transfer.is_some() {
            return Err(Refused::Transferring);
        }
        Ok(())
    }

    /// Appends `data` to the log if this node leads. Returns its index; it is committed once
    /// it appears in a `Ready`'s `committed`. Proposals made between two `ready` calls go
    /// out in the same appends.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<u64, Refused> {
        self.may_propose()?;
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes + data.len() > self.config.uncommitted_bytes_max
        {
            return Err(Refused::Backpressure);
        }
        let index = self.append_local(EntryKind::Normal, data);
        self.broadcast_due = true;
        Ok(index)
    }

    /// Proposes one membership change. It takes effect as soon as it is in the log; the
    /// next may be proposed once it is committed.
    pub fn propose_membership(&mut self, change: MembershipChange) -> Result<u64, Refused> {
        self.may_propose()?;
        if !self.committed_in_term() {
            return Err(Refused::NotReady);
        }
        if self.confs.last().is_some_and(|(i, _)| *i > self.commit) {
            return Err(Refused::ChangePending);
        }
        let next = self
            .membership()
            .apply(change)
            .map_err(Refused::InvalidChange)?;
        if let MembershipChange::Promote(id) = change {
            if self
                .progress
                .get(&id)
                .is_none_or(|p| p.matched < self.commit)
            {
                return Err(Refused::NotCaughtUp);
            }
        }
        let index = self.append_local(EntryKind::Membership, next.encode());
        self.broadcast_due = true;
        Ok(index)
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

    fn maybe_timeout_now(&mut self, to: NodeId) {
        let last = self.last_index();
        if let Some((target, elapsed, false)) = self.transfer {
            if target == to && self.progress.get(&to).is_some_and(|p| p.matched == last) {
                self.transfer = Some((target, elapsed, true));
                self.send(to, MessageKind::TimeoutNow);
            }
        }
    }

    /// Asks for a linearizable read index. It arrives in a `Ready`'s `reads` with `ctx`;
    /// serve the read once applied up to it. A follower forwards the request to its leader.
    /// Requests can be lost (a leader change, a lost message): retry after a timeout.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), Refused> {
        match (self.role, self.leader) {
            (Role::Leader, _) => {
                self.leader_read(ctx, self.config.id);
                Ok(())
            }
            (_, Some(leader)) => {
                self.send(leader, MessageKind::ReadIndex { ctx });
                Ok(())
            }
            (_, None) => Err(Refused::NotLeader(None)),
        }
    }

    fn leader_read(&mut self, ctx: u64, from: NodeId) {
        self.reads.push_back(PendingRead {
            ctx,
            from,
            index: 0,
            seq: 0,
        });
        self.start_reads();
    }

    /// Gives waiting reads the commit index and starts a quorum round for them, once the
    /// leader has committed an entry of its term (before that its commit index may lag).
    fn start_reads(&mut self) {
        if !self.committed_in_term() || self.reads.back().is_none_or(|r| r.seq != 0) {
            return;
        }
        self.read_seq += 1;
        let (seq, commit) = (self.read_seq, self.commit);
        for r in self.reads.iter_mut().filter(|r| r.seq == 0) {
            r.seq = seq;
            r.index = commit;
        }
        self.broadcast_append(true);
        self.confirm_reads();
    }

    /// Releases the reads whose round a quorum of voters has answered.
    fn confirm_reads(&mut self) {
        let id = self.config.id;
        let mut acked: Vec<u64> = self
            .membership()
            .voters
            .iter()
            .map(|v| match self.progress.get(v) {
                _ if *v == id => self.read_seq,
                Some(p) => p.read_acked,
                None => 0,
            })
            .collect();
        let confirmed = quorum::committed_index(&mut acked);
        while self
            .reads
            .front()
            .is_some_and(|r| r.seq != 0 && r.seq <= confirmed)
        {
            let r = self.reads.pop_front().expect("checked");
            if r.from == id {
                self.reads_out.push(ReadState {
                    ctx: r.ctx,
                    index: r.index,
                });
            } else {
                let kind = MessageKind::ReadIndexResp {
                    ctx: r.ctx,
                    index: r.index,
                };
                self.send(r.from, kind);
            }
        }
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
        let Some(p) = self.progress.get_mut(&to) else {
            return;
        };
        if p.mode == Mode::Replicate {
            p.resync();
        }
        let p = self.progress.get(&to).expect("checked above");
        let mut can = p.can_send(self.config.in_flight_max, self.config.in_flight_bytes_max);
        // A follower far behind is sent entries up to the next sealed segment, then that
        // segment and the ones after it whole.
        let mut boundary = None;
        if can && last + 1 >= p.next + self.config.ship_lag_min {
            boundary = self.storage.segment_from(p.next);
        }
        if let Some(meta) = boundary.filter(|m| m.first == p.next) {
            if p.settled() {
                let prev_term = self
                    .term_at(meta.first - 1)
                    .expect("below the commit index");
                let p = self.progress.get_mut(&to).expect("checked above");
                p.ship(Shipping {
                    first: meta.first,
                    last: meta.last,
                    last_term: meta.last_term,
                    prev_term,
                    size: meta.size,
                    sent: 0,
                    acked: 0,
                    stalled: 0,
                });
                can = false;
            } else if p.mode == Mode::Replicate {
                // Appends in flight: wait for their answers, then ship.
                self.progress
                    .get_mut(&to)
                    .expect("checked above")
                    .wait_for_answers();
                can = false;
            }
            // Probing: an empty probe finds out whether the follower holds what precedes.
        }
        if let Some(Mode::Ship(_)) = self.progress.get(&to).map(|p| p.mode) {
            if heartbeat {
                self.progress.get_mut(&to).expect("checked").beat();
            }
            self.send_chunks(to);
        }
        if !can && !heartbeat {
            return;
        }
        let p = self.progress.get(&to).expect("checked above");
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
        let entries = if can {
            let mut hi = (last + 1).min(next + self.config.entries_per_append_max as u64);
            if let Some(meta) = boundary {
                hi = hi.min(meta.first.max(next));
            }
            self.entries(next, hi, self.config.append_bytes_max)
        } else {
            Vec::new()
        };
        // Commit only what the follower is known to hold, so it never applies unmatched.
        let sent_last = prev_index + entries.len() as u64;
        let commit = self.commit.min(sent_last);
        if can {
            let bytes = entries.iter().map(|e| e.data.len()).sum();
            let p = self.progress.get_mut(&to).expect("checked above");
            p.sent(sent_last, bytes);
        }
        let read = self.read_seq;
        self.send(
            to,
            MessageKind::Append {
                prev_index,
                prev_term,
                entries,
                commit,
                read,
            },
        );
    }

    /// Sends the next chunks of the segment being shipped to `to`, within the window.
    fn send_chunks(&mut self, to: NodeId) {
        let window = (self.config.chunk_bytes * self.config.chunks_in_flight) as u64;
        let mut out = Vec::new();
        let Some(p) = self.progress.get_mut(&to) else {
            return;
        };
        let Mode::Ship(s) = &mut p.mode else { return };
        while s.sent < s.size && s.sent - s.acked < window {
            let data = self
                .storage
                .segment_bytes(s.first, s.sent, self.config.chunk_bytes);
            if data.is_empty() {
                // The segment is gone (replaced on disk): find the follower again.
                p.mode = Mode::Probe;
                p.next = p.matched + 1;
                break;
            }
            let offset = s.sent;
            s.sent += data.len() as u64;
            out.push(MessageKind::Segment {
                first: s.first,
                last: s.last,
                last_term: s.last_term,
                prev_term: s.prev_term,
                offset,
                done: s.sent == s.size,
                data,
            });
        }
        for kind in out {
            self.send(to, kind);
        }
    }

    /// Takes a message from another node.
    pub fn step(&mut self, m: Message) {
        if m.to != self.config.id {
            return;
        }
        let is_pre = matches!(
            m.kind,
            MessageKind::PreVote { .. } | MessageKind::PreVoteResp { .. }
        );
        if m.term > self.term && !is_pre {
            let forced = matches!(m.kind, MessageKind::Vote { transfer: true, .. });
            if matches!(m.kind, MessageKind::Vote { .. }) && self.hears_leader() && !forced {
                // A live leader: a disruptive candidate does not get to raise our term.
                return;
            }
            let from_leader = matches!(
                m.kind,
                MessageKind::Append { .. }
                    | MessageKind::Segment { .. }
                    | MessageKind::TimeoutNow
                    | MessageKind::ReadIndexResp { .. }
            );
            self.become_follower(m.term, from_leader.then_some(m.from));
        } else if m.term < self.term && !is_pre {
            // A stale leader learns of the newer term from the answer.
            if matches!(
                m.kind,
                MessageKind::Append { .. } | MessageKind::Segment { .. }
            ) {
                let kind = MessageKind::AppendResp {
                    reject: true,
                    index: 0,
                    hint: 0,
                    read: 0,
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
                // Whether the candidate is a voter is not ours to judge: our membership may
                // be behind (it may have been promoted in entries we lack).
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
                    match self.tally(m.from, !reject) {
                        Some(true) => self.campaign(false),
                        Some(false) => self.become_follower(self.term, None),
                        None => {}
                    }
                }
            }
            MessageKind::Vote {
                last_index,
                last_term,
                ..
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
                    match self.tally(m.from, !reject) {
                        Some(true) => self.become_leader(),
                        Some(false) => self.become_follower(self.term, None),
                        None => {}
                    }
                }
            }
            MessageKind::Append {
                prev_index,
                prev_term,
                entries,
                commit,
                read,
            } => {
                self.follow(m.from);
                self.handle_append(m.from, prev_index, prev_term, entries, commit, read);
            }
            MessageKind::Segment {
                first,
                last,
                last_term,
                prev_term,
                offset,
                data,
                done,
            } => {
                self.follow(m.from);
                let chunk = SegmentChunk {
                    first,
                    last,
                    offset,
                    data,
                    done,
                };
                self.handle_segment(m.from, chunk, last_term, prev_term);
            }
            MessageKind::AppendResp {
                reject,
                index,
                hint,
                read,
            } => {
                if self.role == Role::Leader {
                    self.handle_append_resp(m.from, reject, index, hint, read);
                }
            }
            MessageKind::SegmentResp {
                first,
                received,
                reject,
            } => {
                if self.role == Role::Leader
                    && self
                        .progress
                        .get_mut(&m.from)
                        .is_some_and(|p| p.chunk_answered(first, received, reject))
                {
                    self.send_chunks(m.from);
                }
            }
            MessageKind::TimeoutNow => {
                if self.leader == Some(m.from) && self.is_voter(self.config.id) {
                    self.campaign(true);
                }
            }
            MessageKind::ReadIndex { ctx } => {
                if self.role == Role::Leader {
                    self.leader_read(ctx, m.from);
                }
            }
            MessageKind::ReadIndexResp { ctx, index } => {
                self.reads_out.push(ReadState { ctx, index });
            }
        }
    }

    /// A message only the leader of this term sends arrived from `leader`.
    fn follow(&mut self, leader: NodeId) {
        if self.role != Role::Follower || self.leader != Some(leader) {
            let term = self.term;
            self.become_follower(term, Some(leader));
        }
        self.election_elapsed = 0;
    }

    fn hears_leader(&self) -> bool {
        self.leader.is_some() && self.election_elapsed < self.config.election_ticks
    }

    /// Voters of the current membership whose answer was `granted`.
    fn counted(&self, granted: bool) -> usize {
        let voters = &self.membership().voters;
        self.votes
            .iter()
            .filter(|(n, g)| **g == granted && voters.contains(n))
            .count()
    }

    /// Records `from`'s answer; `Some(true)` once a quorum granted, `Some(false)` once a
    /// quorum refused, `None` while undecided.
    fn tally(&mut self, from: NodeId, granted: bool) -> Option<bool> {
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
    fn up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        let (mine_i, mine_t) = (self.last_index(), self.last_term());
        last_term > mine_t || (last_term == mine_t && last_index >= mine_i)
    }

    /// The refusal hint for an append after (`prev_index`, `prev_term`): the last index whose
    /// term is not after `prev_term`, so the leader skips a whole conflicting term at once.
    fn refusal_hint(&self, prev_index: u64, prev_term: u64) -> u64 {
        let mut hint = prev_index.min(self.last_index());
        while hint > self.commit && self.term_at(hint).is_some_and(|t| t > prev_term) {
            hint -= 1;
        }
        hint
    }

    fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: u64,
        prev_term: u64,
        entries: Vec<Entry>,
        commit: u64,
        read: u64,
    ) {
        let contiguous = entries
            .iter()
            .enumerate()
            .all(|(k, e)| e.index == prev_index + 1 + k as u64);
        let memberships_valid = entries
            .iter()
            .filter(|e| e.kind == EntryKind::Membership)
            .all(|e| Membership::decode(&e.data).is_ok());
        if !contiguous || !memberships_valid {
            // Not something a leader sends: ignore it rather than take any of it.
            return;
        }
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
            let kind = MessageKind::AppendResp {
                reject: true,
                index: prev_index,
                hint: self.refusal_hint(prev_index, prev_term),
                read,
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
                    self.push_unstable(e);
                }
                None => self.push_unstable(e),
            }
        }
        if commit > self.commit {
            self.commit = commit.min(last_new);
        }
        let kind = MessageKind::AppendResp {
            reject: false,
            index: last_new,
            hint: 0,
            read,
        };
        self.send(from, kind);
    }

    fn push_unstable(&mut self, e: Entry) {
        if e.kind == EntryKind::Membership {
            let m = Membership::decode(&e.data).expect("checked by handle_append");
            self.confs.push((e.index, m));
        }
        self.unstable.push(e);
    }

    fn handle_segment(
        &mut self,
        from: NodeId,
        chunk: SegmentChunk,
        last_term: u64,
        prev_term: u64,
    ) {
        let (first, last) = (chunk.first, chunk.last);
        let accept = MessageKind::AppendResp {
            reject: false,
            index: last,
            hint: 0,
            read: 0,
        };
        // A stale chunk of another segment must not disturb the one being received.
        let receiving = self.incoming.is_some_and(|inc| inc.first == first);
        if self.term_at(last) == Some(last_term) {
            // Already here (log matching): nothing to install.
            if receiving {
                self.incoming = None;
            }
            return self.send(from, accept);
        }
        if first == 0 || last < first || self.term_at(first - 1) != Some(prev_term) {
            if receiving {
                self.incoming = None;
            }
            let prev = first.saturating_sub(1);
            let kind = MessageKind::AppendResp {
                reject: true,
                index: prev,
                hint: self.refusal_hint(prev, prev_term),
                read: 0,
            };
            return self.send(from, kind);
        }
        let received = match self.incoming {
            Some(inc)
                if (inc.first, inc.last, inc.last_term) == (first, last, last_term)
                    && (inc.from, inc.term) == (from, self.term) =>
            {
                inc.received
            }
            _ => 0,
        };
        if chunk.offset != received {
            // A lost chunk (resend from `received`) or a duplicate (already persisted).
            let kind = MessageKind::SegmentResp {
                first,
                received,
                reject: chunk.offset > received,
            };
            return self.send(from, kind);
        }
        let received = received + chunk.data.len() as u64;
        let done = chunk.done;
        self.chunks_out.push(chunk);
        if done {
            // The segment replaces the log from `first` on once persisted; its entries are
            // committed on the leader, so anything of ours it replaces was not.
            self.incoming = None;
            self.truncate_from(first);
            self.send(from, accept);
        } else {
            self.incoming = Some(Incoming {
                first,
                last,
                last_term,
                from,
                term: self.term,
                received,
            });
            let kind = MessageKind::SegmentResp {
                first,
                received,
                reject: false,
            };
            self.send(from, kind);
        }
    }

    /// Drops entries from `index` on; those already persisted are replaced when the next
    /// `Ready`'s entries (or segment, starting at `index`) are persisted.
    fn truncate_from(&mut self, index: u64) {
        self.confs.retain(|(i, _)| *i == 0 || *i < index);
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

    fn handle_append_resp(&mut self, from: NodeId, reject: bool, index: u64, hint: u64, read: u64) {
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        p.read_acked = p.read_acked.max(read);
        if reject {
            if p.refused(index, hint) {
                self.send_append(from, false);
            }
        } else {
            if p.accepted(index) {
                self.maybe_commit();
            } else if let Some(p) = self.progress.get_mut(&from) {
                p.heartbeat_answered(self.config.in_flight_max, self.config.in_flight_bytes_max);
            }
            self.maybe_timeout_now(from);
            // Keep the pipe full.
            if self
                .progress
                .get(&from)
                .is_some_and(|p| p.next <= self.last_index())
            {
                self.send_append(from, false);
            }
        }
        if read > 0 && self.role == Role::Leader {
            self.confirm_reads();
        }
    }

    fn maybe_commit(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let mut matched: Vec<u64> = self
            .membership()
            .voters
            .iter()
            .map(|v| self.progress.get(v).map_or(0, |p| p.matched))
            .collect();
        let n = quorum::committed_index(&mut matched);
        // Only entries of this term commit by counting (paper 5.4.2).
        if n <= self.commit || self.term_at(n) != Some(self.term) {
            return;
        }
        self.commit = n;
        while self.uncommitted.front().is_some_and(|(i, _)| *i <= n) {
            let (_, bytes) = self.uncommitted.pop_front().expect("checked");
            self.uncommitted_bytes -= bytes;
        }
        self.broadcast_append(true);
        self.start_reads();
        let conf_index = self.confs.last().expect("bootstrap").0;
        if !self.is_voter(self.config.id) && self.commit >= conf_index {
            // Removed, and the removal is committed: step down (dissertation 4.2.2).
            let term = self.term;
            self.become_follower(term, None);
        }
    }

    /// What to do next (see [`Ready`]).
    pub fn ready(&mut self) -> Ready {
        if std::mem::take(&mut self.broadcast_due) && self.role == Role::Leader {
            self.broadcast_append(false);
        }
        let hs = HardState {
            term: self.term,
            vote: self.vote,
            commit: self.commit,
        };
        // Apply only what is committed and persisted here.
        let applicable = self.commit.min(self.persisted_last());
        let committed = if applicable > self.applied {
            self.entries(self.applied + 1, applicable + 1, usize::MAX)
        } else {
            Vec::new()
        };
        Ready {
            hard_state: (hs != self.persisted_hard).then_some(hs),
            entries: self.unstable.clone(),
            chunks: std::mem::take(&mut self.chunks_out),
            messages: std::mem::take(&mut self.messages),
            committed,
            reads: std::mem::take(&mut self.reads_out),
        }
    }

    /// The application persisted, sent and applied what `ready` handed out.
    pub fn advance(&mut self, ready: Ready) {
        if let Some(hs) = ready.hard_state {
            self.persisted_hard = hs;
        }
        let installed = ready.chunks.iter().any(|c| c.done);
        if let Some(last) = ready.entries.last() {
            assert!(
                installed || self.storage.last_index() == last.index,
                "persist entries before advance"
            );
            // Keep what was added to the unstable tail since `ready`.
            self.unstable.retain(|e| e.index > last.index);
        }
        if installed {
            self.reload_confs();
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
            || !self.chunks_out.is_empty()
            || !self.reads_out.is_empty()
            || self.broadcast_due
            || hs != self.persisted_hard
            || self.commit.min(self.persisted_last()) > self.applied
    }
}
