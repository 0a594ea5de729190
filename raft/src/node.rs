//! [`RawNode`]: the Raft state machine. Input arrives through [`RawNode::tick`],
//! [`RawNode::step`] and [`RawNode::propose`]; output leaves through [`RawNode::ready`]: the
//! entries and hard state to persist, the messages to send once they are persisted, and the
//! entries newly committed. [`RawNode::advance`] says the application has done so.
//!
//! Each concern has its own file, an `impl RawNode` block of its own:
//! - `node/election.rs` — roles, pre-vote, votes, check-quorum, leadership transfer;
//! - `node/replication.rs` — proposals, appends and their answers, commitment;
//! - `node/reads.rs` — ReadIndex;
//! - `node/membership.rs` — membership changes;
//! - `node/shipping.rs` — sealed segments sent to far-behind followers.
//!
//! This file holds the state, the driver's surface (`tick`, `step`, `ready`, `advance`) and
//! the rule that ties them to persistence: a message leaves only after the term, vote and
//! entries it depends on are persisted (paper 5.2, 5.3), except a leader's appends and
//! chunks, which may leave first when the `Ready` changes neither term nor vote (diss.
//! 10.2.1); `advance` acknowledges what was persisted by index and term (see [`Ready`]).

mod election;
mod membership;
mod reads;
mod replication;
mod shipping;

use std::collections::{BTreeMap, VecDeque};

use crate::message::{Entry, HardState, Membership};
use crate::message::{Message, MessageKind, NodeId};
use crate::progress::{Mode, Progress};
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
    /// The last index the application has applied from earlier runs (its state machine
    /// already holds it): committed entries up to it are not handed out again.
    pub applied: u64,
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
            applied: 0,
        }
    }

    /// Whether the configuration can run: node ids are never 0 (a persisted vote of 0 reads
    /// as "no vote"), and heartbeats come more often than elections.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.id == 0 || self.voters.contains(&0) || self.learners.contains(&0) {
            return Err("node id 0 is reserved");
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return Err("heartbeats must come more often than elections");
        }
        Ok(())
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

/// What the application must do next, in order:
/// 1. send `early` at once if it likes (a leader's appends and chunks; they may leave before
///    the leader persists its own entries, dissertation 10.2.1, because the core counts its
///    own entries only once persisted; they are only ever early when this `Ready` changes
///    neither term nor vote, which every message depends on);
/// 2. persist `entries` (a first entry at or below the persisted last index replaces the
///    suffix from there), then `chunks`, then `hard_state` last: its commit index may cover
///    the entries just written, so it must not be durable before them (a node restarted
///    between the two finds entries of a term later than its hard state's, and takes that
///    term, voting for no one else in it);
/// 3. send `messages`;
/// 4. apply `committed`; serve `reads` once applied up to their index;
/// 5. call [`RawNode::advance`] with this `Ready`.
///
/// Persisting may take its time: between `ready` and `advance` the node may go on taking
/// ticks, messages and proposals (what they cause goes into the next `Ready`), but `ready`
/// is not called again until `advance`. `advance` acknowledges entries by index and term, so
/// a suffix replaced meanwhile is written again, never taken as persisted.
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
pub struct Ready {
    /// New hard state to persist, if it changed.
    pub hard_state: Option<HardState>,
    /// Messages that may be sent before persisting.
    pub early: Vec<Message>,
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
    /// A `Ready` was handed out and not yet advanced.
    ready_out: bool,
    /// A segment's last chunk was taken and is not yet persisted: until it is, this node's
    /// view of the log lacks the segment's entries (it was cut at the segment's first
    /// index), so messages are held in `deferred` and stepped once it is installed.
    installing: bool,
    deferred: VecDeque<Message>,
}

impl<S: Storage> RawNode<S> {
    /// A node over `storage`, resuming from its persisted hard state and log.
    pub fn new(config: Config, storage: S) -> RawNode<S> {
        if let Err(why) = config.check() {
            panic!("invalid Raft configuration: {why}");
        }
        let hs = storage.hard_state();
        let last = storage.last_index();
        let (term, vote) = match storage.term(last) {
            // Entries of a later term than the persisted hard state: a driver that wrote
            // entries before their hard state stopped between the two. Whom this node voted
            // for in that term is unknown: take it as itself, so that no other candidate can
            // be given a second vote in the term.
            Some(t) if t > hs.term => (t, Some(config.id)),
            _ => (hs.term, hs.vote),
        };
        // What the application applied before is committed, whatever the hard state says.
        let applied = config.applied.min(last);
        let bootstrap = Membership {
            voters: config.voters.iter().copied().collect(),
            learners: config.learners.iter().copied().collect(),
            retired: Default::default(),
        };
        let mut node = RawNode {
            rng: Rng(config.seed ^ config.id.wrapping_mul(0x2545_F491_4F6C_DD1D)),
            config,
            unstable: Vec::new(),
            term,
            vote,
            commit: hs.commit.max(applied).min(last),
            applied,
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
            ready_out: false,
            installing: false,
            deferred: VecDeque::new(),
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

    /// A leader's view of each member's log: the highest index known to match its own
    /// (`Progress::matched`), by id, the leader itself included (its persisted last index).
    /// Empty on any node that does not lead. Read-only, for status pages and metrics: a
    /// follower's lag is `commit` (or `last_index`) minus its match.
    pub fn matched(&self) -> Vec<(NodeId, u64)> {
        if self.role != Role::Leader {
            return Vec::new();
        }
        self.progress
            .iter()
            .map(|(id, p)| (*id, p.matched))
            .collect()
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

    /// Term of the entry at `index` in the unstable tail, if the tail holds it.
    fn term_at_unstable(&self, index: u64) -> Option<u64> {
        let first = self.unstable.first()?.index;
        let k = index.checked_sub(first)?;
        self.unstable.get(k as usize).map(|e| e.term)
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
                    if self.may_campaign() && !self.installing {
                        self.campaign_pre();
                    } else {
                        self.reset_timeout();
                    }
                }
            }
        }
    }

    /// Takes a message from another node.
    pub fn step(&mut self, m: Message) {
        if m.to != self.config.id {
            return;
        }
        if self.installing {
            // Answering now would answer from a log that lacks the segment being installed
            // (a vote could go to a candidate without entries this node has acknowledged;
            // an append could find its commit index missing): wait until it is persisted.
            self.deferred.push_back(m);
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
                    hint_term: 0,
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
            } => self.handle_pre_vote(m.from, m.term, last_index, last_term),
            MessageKind::PreVoteResp { reject } => {
                self.handle_pre_vote_resp(m.from, m.term, reject)
            }
            MessageKind::Vote {
                last_index,
                last_term,
                ..
            } => self.handle_vote(m.from, last_index, last_term),
            MessageKind::VoteResp { reject } => self.handle_vote_resp(m.from, reject),
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
                hint_term,
                read,
            } => {
                if self.role == Role::Leader {
                    self.handle_append_resp(m.from, reject, index, (hint, hint_term), read);
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

    /// What to do next (see [`Ready`]).
    pub fn ready(&mut self) -> Ready {
        assert!(
            !self.ready_out,
            "advance the last Ready before asking for another"
        );
        self.ready_out = true;
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
        let mut messages = std::mem::take(&mut self.messages);
        // Every message depends on the term and vote it carries being durable: only when
        // this Ready leaves them as persisted may a leader's appends go first (with a term or
        // vote still to write, a crash could let this node lead the same term again and send
        // other entries under it).
        let keeps_vote = (hs.term, hs.vote) == (self.persisted_hard.term, self.persisted_hard.vote);
        let early = if keeps_vote {
            let (early, rest) = messages
                .into_iter()
                .partition(|m| m.may_precede_persistence());
            messages = rest;
            early
        } else {
            Vec::new()
        };
        Ready {
            hard_state: (hs != self.persisted_hard).then_some(hs),
            early,
            entries: self.unstable.clone(),
            chunks: std::mem::take(&mut self.chunks_out),
            messages,
            committed,
            reads: std::mem::take(&mut self.reads_out),
        }
    }

    /// The application persisted, sent and applied what `ready` handed out.
    pub fn advance(&mut self, ready: Ready) {
        assert!(self.ready_out, "advance follows ready");
        self.ready_out = false;
        if let Some(hs) = ready.hard_state {
            self.persisted_hard = hs;
        }
        let installed = ready.chunks.iter().any(|c| c.done);
        if let Some(last) = ready.entries.last() {
            assert!(
                installed || self.storage.last_index() == last.index,
                "persist entries before advance"
            );
            // What was persisted is stable only if the log still holds it: the same index
            // and term (log matching) means every entry up to it is the same (etcd-raft's
            // `stableTo`). A suffix replaced since `ready` (a step in between took a newer
            // leader's entries) stays unstable and is written again by the next Ready.
            if self.term_at_unstable(last.index) == Some(last.term) {
                self.unstable.retain(|e| e.index > last.index);
            }
        }
        if installed {
            self.reload_confs();
            self.installing = false;
        }
        if let Some(last) = ready.committed.last() {
            self.applied = last.index;
        }
        if self.role == Role::Leader {
            // Its own entries count once persisted and still in its log.
            let persisted = self.persisted_last();
            let id = self.config.id;
            if self
                .progress
                .get_mut(&id)
                .is_some_and(|p| p.accepted(persisted))
            {
                self.maybe_commit();
            }
        }
        // Messages held while a segment was installed, in the order they came.
        while !self.installing {
            let Some(m) = self.deferred.pop_front() else {
                break;
            };
            self.step(m);
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

#[cfg(test)]
mod tests {
    use super::{Config, RawNode, Refused, Rng, Role};
    use crate::message::Entry;
    use crate::storage::MemStorage;

    /// Entries are read from storage, then from the unstable tail, in one contiguous run:
    /// a full read from storage goes on into the tail, and a read that storage cut short
    /// (its byte bound) stops there, never skipping to the tail across a gap.
    #[test]
    fn entries_run_from_storage_into_the_tail_without_a_gap() {
        let mut storage = MemStorage::default();
        let stored: Vec<Entry> = (1..=3).map(|i| Entry::normal(i, 1, vec![0; 10])).collect();
        storage.append(&stored);
        let mut n = RawNode::new(Config::new(1, vec![1, 2, 3], 0), storage);
        n.unstable = (4..=5).map(|i| Entry::normal(i, 1, vec![0; 1])).collect();
        let indexes = |es: Vec<Entry>| es.iter().map(|e| e.index).collect::<Vec<_>>();
        assert_eq!(indexes(n.entries(1, 6, usize::MAX)), [1, 2, 3, 4, 5]);
        assert_eq!(indexes(n.entries(2, 5, usize::MAX)), [2, 3, 4]);
        assert_eq!(indexes(n.entries(4, 6, usize::MAX)), [4, 5]);
        assert_eq!(indexes(n.entries(1, 6, 12)), [1], "cut short in storage");
        assert_eq!(
            indexes(n.entries(2, 6, 21)),
            [2, 3, 4],
            "cut short in the tail"
        );
        assert_eq!(
            indexes(n.entries(4, 6, 0)),
            [4],
            "one entry goes regardless"
        );
    }

    /// The generator is splitmix64: its published first outputs for seed 0.
    #[test]
    fn the_generator_is_splitmix64() {
        let mut rng = Rng(0);
        let out = [rng.next(), rng.next(), rng.next()];
        assert_eq!(
            out,
            [
                0xE220_A839_7B1D_CDAF,
                0x6E78_9E6A_A1B9_65F4,
                0x06C4_5D18_8009_454F
            ]
        );
    }

    /// Paper 5.2: a follower campaigns after a timeout drawn from [t, 2t), and the draw
    /// differs from seed to seed (equal timeouts everywhere would split every vote).
    #[test]
    fn election_timeouts_are_drawn_from_t_to_2t() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..40 {
            let config = Config::new(1, vec![1, 2, 3], seed);
            let mut n = RawNode::new(config, MemStorage::default());
            let mut ticks = 0;
            while n.role() == Role::Follower && ticks < 100 {
                n.tick();
                ticks += 1;
            }
            assert!((10..20).contains(&ticks), "seed {seed}: {ticks} ticks");
            seen.insert(ticks);
        }
        assert!(seen.len() >= 5, "timeouts are spread: {seen:?}");
    }

    /// Node id 0 is refused wherever it appears, and heartbeats must come more often
    /// than elections.
    #[test]
    fn a_configuration_is_checked() {
        let ok = Config::new(1, vec![1, 2, 3], 0);
        assert_eq!(ok.check(), Ok(()));
        let reserved = Err("node id 0 is reserved");
        assert_eq!(Config::new(0, vec![1, 2, 3], 0).check(), reserved);
        assert_eq!(Config::new(1, vec![1, 0, 3], 0).check(), reserved);
        let learner = Config {
            learners: vec![0],
            ..ok.clone()
        };
        assert_eq!(learner.check(), reserved);
        let pacing = Err("heartbeats must come more often than elections");
        let equal = Config {
            election_ticks: 3,
            heartbeat_ticks: 3,
            ..ok.clone()
        };
        assert_eq!(equal.check(), pacing);
        let just = Config {
            election_ticks: 4,
            heartbeat_ticks: 3,
            ..ok
        };
        assert_eq!(just.check(), Ok(()));
    }

    /// `has_ready` is true when any one thing `ready` would hand out is there, alone: a
    /// driver that polls it must not wait for some other output before persisting entries,
    /// sending proposals batched since the last `ready`, or writing a changed hard state.
    #[test]
    fn each_output_alone_makes_has_ready_true() {
        use crate::message::{HardState, Message, MessageKind};
        use crate::storage::SegmentChunk;
        let fresh = || {
            let mut storage = MemStorage::default();
            storage.append(&[Entry::normal(1, 1, vec![1])]);
            storage.set_hard_state(HardState {
                term: 1,
                vote: None,
                commit: 1,
            });
            let mut n = RawNode::new(Config::new(1, vec![1, 2, 3], 0), storage);
            // Everything stored is applied: nothing is left to hand out.
            n.applied = 1;
            n
        };
        assert!(!fresh().has_ready(), "a node with nothing to hand out");
        type Make = fn(&mut RawNode<MemStorage>);
        let cases: [(&str, Make); 9] = [
            ("a message", |n| {
                n.messages.push(Message {
                    from: 1,
                    to: 2,
                    term: 1,
                    kind: MessageKind::VoteResp { reject: true },
                })
            }),
            ("an unstable entry", |n| {
                n.unstable.push(Entry::normal(2, 1, vec![2]))
            }),
            ("a segment chunk", |n| {
                n.chunks_out.push(SegmentChunk {
                    first: 2,
                    last: 3,
                    offset: 0,
                    data: vec![0],
                    done: false,
                })
            }),
            ("a read", |n| {
                n.reads_out.push(super::ReadState { ctx: 7, index: 1 })
            }),
            ("proposals to broadcast", |n| n.broadcast_due = true),
            ("a later term", |n| n.term = 2),
            ("a vote", |n| n.vote = Some(3)),
            ("a later commit index", |n| {
                // Applied already (as a restarted node that applied past its stored commit
                // index): only the commit index is left to write.
                n.storage.append(&[Entry::normal(2, 1, vec![2])]);
                n.commit = 2;
                n.applied = 2;
            }),
            ("a committed entry to apply", |n| n.applied = 0),
        ];
        for (what, make) in cases {
            let mut n = fresh();
            make(&mut n);
            assert!(n.has_ready(), "{what} alone makes has_ready true");
        }
    }

    /// Each refusal reads as what happened (the driver shows it to clients).
    #[test]
    fn refusals_are_described() {
        assert_eq!(
            Refused::NotLeader(Some(2)).to_string(),
            "not the leader (node 2 is)"
        );
        assert_eq!(
            Refused::NotLeader(None).to_string(),
            "not the leader, and no leader is known"
        );
        assert_eq!(
            Refused::InvalidChange("already a voter").to_string(),
            "invalid membership change: already a voter"
        );
        assert_eq!(
            Refused::Backpressure.to_string(),
            "too much uncommitted data"
        );
    }
}
