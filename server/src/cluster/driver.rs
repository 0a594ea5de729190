//! The Raft loop: one dedicated thread owns the `RawNode` over the engine and is the only
//! code that touches it. It waits on three inputs (the clock, the peers' messages, the
//! handle's requests), hands each to the core, then carries out every `Ready` in the order
//! `docs/RAFT.md` gives: early messages, persist (entries, chunks, hard state), messages,
//! apply, advance. Persisting is synchronous: the loop waits for the fdatasync, so nothing is
//! stepped while a write is in progress (allowed by the contract; overlapping them is an
//! optimization for the write path).
//!
//! A persistence error or a panic in the core or the engine stops the loop for good
//! (fail-stop): one `error` line says why, the node reports itself failed and not ready, and
//! every waiting request gets [`RequestError::Stopped`]. Raft only guarantees anything of a
//! node that either does what it says or stops.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quiver_engine::{AppendError, AppendResult, Plan};
use quiver_net::peer::PeerMessage;
use quiver_net::peer_quic::{PeerEndpoint, SendError};
use quiver_raft::{MembershipChange, Message, RawNode, Refused, Role};
use tokio::sync::{mpsc, oneshot, watch};

use crate::peer_map;
use crate::raft_log::{self, EngineLog};

/// Requests waiting in the handle's channel at most.
pub const REQUESTS_QUEUED_MAX: usize = 4096;
/// Proposals or reads waiting for their outcome at most; more are refused ([`RequestError::Busy`]).
pub const WAITING_MAX: usize = 65_536;
/// Inputs of each kind taken in one turn of the loop before the `Ready` is handled: enough
/// to batch a burst of proposals into one append and one fdatasync, few enough that a flood
/// of messages does not starve the clock.
pub const INPUTS_PER_TURN_MAX: usize = 1024;

/// Why a proposal or a read did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Raft refused it at once (not the leader, a transfer, back-pressure, no leader known).
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The command is not one the engine would store; nothing was proposed.
    #[error("invalid command: {0}")]
    Invalid(String),
    /// This node stopped leading before the entry committed. Its outcome is unknown: a new
    /// leader may still commit it. Retry with the same event ids.
    #[error("leadership was lost before entry {0} committed: its outcome is unknown")]
    LeadershipLost(u64),
    /// Another leader's entry took the index: the proposal is not in the log.
    #[error("entry {0} was replaced by another leader's: not committed")]
    Overwritten(u64),
    /// A read index was lost with a change of leader (the core drops reads waiting at a
    /// leader that steps down); ask again.
    #[error("the read was lost with a change of leader: ask again")]
    ReadLost,
    /// No answer within the caller's time limit (for a proposal: outcome unknown).
    #[error("no answer in time")]
    Timeout,
    /// Too many requests are waiting already.
    #[error("too many requests waiting")]
    Busy,
    /// The Raft loop has stopped (shutdown, or fail-stop: see the status). For a proposal
    /// the outcome is unknown.
    #[error("the Raft loop has stopped")]
    Stopped,
}

/// Why a client's write did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The leader refused it against its log (expected version, names, sizes, ids): nothing
    /// was proposed.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// Raft did not take it, or its outcome is unknown (see [`RequestError`]).
    #[error(transparent)]
    Request(#[from] RequestError),
}

/// Where the outcome of a proposal or a read goes.
type Answer = oneshot::Sender<Result<u64, RequestError>>;
/// Where the outcome of a client's write goes.
pub(crate) type WriteAnswer = oneshot::Sender<Result<AppendResult, WriteError>>;

/// What the handle asks of the loop.
pub(crate) enum Request {
    Propose {
        data: Vec<u8>,
        done: Answer,
    },
    ReadIndex {
        done: Answer,
    },
    Write {
        write: super::Write,
        done: WriteAnswer,
    },
    /// A membership change, answered with its entry's index once committed.
    Membership {
        change: MembershipChange,
        done: Answer,
    },
    /// A leadership transfer (to the most caught-up voter if `to` is none), answered with
    /// the target once the transfer has begun.
    Transfer {
        to: Option<u64>,
        done: Answer,
    },
    /// Discovery heard member `id` announce this peer address (it may have moved: a
    /// container restarted with another IP).
    PeerAddress {
        id: u64,
        addr: SocketAddr,
    },
}

/// Who waits for an index to commit.
struct Waiter {
    /// The term this node led in when it took the request: if it stops leading in that
    /// term, the outcome is unknown to it.
    proposed_in: u64,
    /// The term the entry at the index must have: another term there means the request's
    /// entry was replaced.
    entry_term: u64,
    reply: Reply,
}

enum Reply {
    /// A raw proposal: answered with its index.
    Index(Answer),
    /// A client's write: answered with its result (positions read from the record, unless
    /// `stored`, a retry whose result was known from the log).
    Write {
        result: AppendResult,
        stored: bool,
        done: WriteAnswer,
    },
}

impl Reply {
    fn fail(self, e: RequestError) {
        match self {
            Reply::Index(done) => {
                let _ = done.send(Err(e));
            }
            Reply::Write { done, .. } => {
                let _ = done.send(Err(e.into()));
            }
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Reply::Index(done) => done.is_closed(),
            Reply::Write { done, .. } => done.is_closed(),
        }
    }
}

/// What the loop publishes after each turn, for status pages and readiness.
#[derive(Debug, Clone, Default)]
pub(crate) struct View {
    pub(crate) role: Option<Role>,
    pub(crate) term: u64,
    pub(crate) leader: Option<u64>,
    pub(crate) commit: u64,
    pub(crate) applied: u64,
    pub(crate) last_index: u64,
    pub(crate) voters: Vec<u64>,
    pub(crate) learners: Vec<u64>,
    pub(crate) matched: Vec<(u64, u64)>,
    pub(crate) append_rtt_us: BTreeMap<u64, u64>,
    pub(crate) dropped_not_member: u64,
    pub(crate) leader_changes: u64,
    pub(crate) elections_started: u64,
    pub(crate) failed: Option<String>,
}

/// The loop's state: the core and what waits on it.
pub(crate) struct Driver {
    node: RawNode<EngineLog>,
    endpoint: Arc<PeerEndpoint>,
    /// The server's runtime: peer links are tasks on it, not on the loop's own.
    runtime: tokio::runtime::Handle,
    /// Where each known node's peer endpoint is.
    addresses: BTreeMap<u64, SocketAddr>,
    tick: Duration,
    view: Arc<Mutex<View>>,
    /// Ids on the endpoint now.
    peers: BTreeSet<u64>,
    /// Members with no known address, already logged.
    unreachable: BTreeSet<u64>,
    /// Who waits for each index to commit.
    proposals: BTreeMap<u64, Vec<Waiter>>,
    /// Waiters in `proposals`.
    waiting: usize,
    /// Streams and event ids of the writes planned this turn: a write touching one of them
    /// is planned again next turn, once the first is in the engine (each plan sees only
    /// what the log holds).
    touched_streams: HashSet<String>,
    touched_ids: HashSet<quiver_engine::Uuid>,
    /// Writes to plan next turn.
    deferred: VecDeque<Request>,
    /// Reads asked of the core, by ctx: (term asked in, asked as leader, who waits).
    reads_asked: HashMap<u64, (u64, bool, Answer)>,
    /// Reads confirmed, waiting to be applied up to their index.
    reads_confirmed: Vec<(u64, Answer)>,
    next_ctx: u64,
    dropped_not_member: u64,
    /// Per peer: when the oldest append not yet answered was sent.
    appends_out: HashMap<u64, std::time::Instant>,
    /// Per peer: the last append round trip measured, in µs (send of the oldest unanswered
    /// append to the next answer from that peer).
    append_rtt_us: BTreeMap<u64, u64>,
}

/// Why the loop stopped for good.
enum Failure {
    Persist(quiver_engine::LogError),
    Apply(quiver_engine::LogError),
    Read(quiver_engine::LogError),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Persist(e) => write!(f, "persisting a Ready failed: {e}"),
            Failure::Apply(e) => write!(f, "applying committed entries failed: {e}"),
            Failure::Read(e) => write!(f, "reading the log failed: {e}"),
        }
    }
}

impl Driver {
    pub(crate) fn new(
        node: RawNode<EngineLog>,
        endpoint: Arc<PeerEndpoint>,
        runtime: tokio::runtime::Handle,
        addresses: BTreeMap<u64, SocketAddr>,
        tick: Duration,
        view: Arc<Mutex<View>>,
    ) -> Driver {
        Driver {
            node,
            endpoint,
            runtime,
            addresses,
            tick,
            view,
            peers: BTreeSet::new(),
            unreachable: BTreeSet::new(),
            proposals: BTreeMap::new(),
            waiting: 0,
            touched_streams: HashSet::new(),
            touched_ids: HashSet::new(),
            deferred: VecDeque::new(),
            reads_asked: HashMap::new(),
            reads_confirmed: Vec::new(),
            next_ctx: 1,
            dropped_not_member: 0,
            appends_out: HashMap::new(),
            append_rtt_us: BTreeMap::new(),
        }
    }

    /// Runs the loop on the calling thread (with a runtime of its own for the clock and the
    /// channels) until `stop` is set or the loop fails; a failure or a panic is logged once
    /// and published in the view.
    pub(crate) fn run_thread(
        self,
        incoming: mpsc::Receiver<PeerMessage>,
        requests: mpsc::Receiver<Request>,
        stop: watch::Receiver<bool>,
    ) {
        let view = self.view.clone();
        let id = self.node.id();
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(r) => r,
            Err(e) => return fail(&view, id, format!("starting the Raft loop's clock: {e}")),
        };
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            runtime.block_on(self.run(incoming, requests, stop))
        }));
        match outcome {
            Ok(Ok(())) => tracing::info!(id, "Raft loop stopped"),
            Ok(Err(why)) => fail(&view, id, why.to_string()),
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic".into());
                fail(&view, id, format!("panic in the Raft loop: {why}"));
            }
        }
    }

    async fn run(
        mut self,
        mut incoming: mpsc::Receiver<PeerMessage>,
        mut requests: mpsc::Receiver<Request>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), Failure> {
        let mut clock = tokio::time::interval(self.tick);
        clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.sync_peers();
        self.publish();
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => return Ok(()),
                _ = clock.tick() => {
                    self.node.tick();
                    self.prune_abandoned();
                }
                m = incoming.recv() => match m {
                    Some(m) => self.step(m),
                    None => return Ok(()),
                },
                Some(r) = requests.recv() => self.request(r),
            }
            // Take what else is already waiting, so that a burst goes out as one append.
            for _ in 0..INPUTS_PER_TURN_MAX {
                let Ok(m) = incoming.try_recv() else { break };
                self.step(m);
            }
            for _ in 0..INPUTS_PER_TURN_MAX {
                let Ok(r) = requests.try_recv() else { break };
                self.request(r);
            }
            self.promote_caught_up();
            self.handle_ready()?;
            // Writes that met an earlier one of the same turn: their turn now.
            while !self.deferred.is_empty() {
                for r in std::mem::take(&mut self.deferred) {
                    self.request(r);
                }
                self.handle_ready()?;
            }
            self.sync_peers();
        }
    }

    /// A peer's message, unless it comes from a node removed from the cluster, or asks for
    /// a vote without being a member.
    fn step(&mut self, m: PeerMessage) {
        if matches!(m.kind, quiver_net::peer::PeerMessageKind::AppendResp { .. }) {
            if let Some(sent) = self.appends_out.remove(&m.from) {
                let rtt = sent.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
                self.append_rtt_us.insert(m.from, rtt);
            }
        }
        // A removed node is shut out, and so is a vote request from a node that is not a
        // member. Anything else from a sender this node does not know as a member is
        // stepped: it may have been added after what this node's log holds (a new learner
        // replaying old memberships hears from a leader that joined later; a node back
        // from a long absence, from a leader added meanwhile), and dropping the leader's
        // appends would leave it stuck for good (found by the consistency suite's
        // membership nemesis). Every peer has proved the cluster secret at the handshake.
        let membership = self.node.membership();
        let campaigning = matches!(
            m.kind,
            quiver_net::peer::PeerMessageKind::PreVote { .. }
                | quiver_net::peer::PeerMessageKind::Vote { .. }
        );
        if membership.retired.contains(&m.from) || (campaigning && !membership.contains(m.from)) {
            self.dropped_not_member += 1;
            tracing::debug!(
                from = m.from,
                "dropped a message from a removed node, or a vote request from a non-member"
            );
            return;
        }
        self.node.step(peer_map::from_wire(m));
    }

    fn request(&mut self, r: Request) {
        match r {
            Request::Propose { data, done } => {
                if self.waiting >= WAITING_MAX {
                    let _ = done.send(Err(RequestError::Busy));
                    return;
                }
                match raft_log::propose(&mut self.node, data) {
                    Ok(index) => {
                        let term = self.node.term();
                        self.wait(index, term, Reply::Index(done));
                    }
                    Err(raft_log::ProposeError::Refused(r)) => {
                        let _ = done.send(Err(RequestError::Refused(r)));
                    }
                    Err(raft_log::ProposeError::Invalid(e)) => {
                        let _ = done.send(Err(RequestError::Invalid(e.to_string())));
                    }
                }
            }
            Request::Write { write, done } => self.write(write, done),
            Request::Membership { change, done } => match self.node.propose_membership(change) {
                Ok(index) => {
                    let term = self.node.term();
                    self.wait(index, term, Reply::Index(done));
                }
                Err(r) => {
                    let _ = done.send(Err(RequestError::Refused(r)));
                }
            },
            Request::PeerAddress { id, addr } => {
                if id == self.node.id() || self.addresses.get(&id) == Some(&addr) {
                    return;
                }
                tracing::info!(peer = id, %addr, "a member's peer address, from discovery");
                self.addresses.insert(id, addr);
                if self.peers.remove(&id) {
                    self.endpoint.remove_peer(id);
                }
                self.unreachable.remove(&id);
                self.sync_peers();
            }
            Request::Transfer { to, done } => {
                let me = self.node.id();
                let voters = self.node.membership().voters.clone();
                // The voter whose log is closest to the leader's: the shortest catch-up.
                let to = to.or_else(|| {
                    let matched = self.node.matched();
                    matched
                        .iter()
                        .filter(|(id, _)| *id != me && voters.contains(id))
                        .max_by_key(|(id, m)| (*m, std::cmp::Reverse(*id)))
                        .map(|(id, _)| *id)
                });
                let outcome = match to {
                    Some(to) => self.node.transfer_leadership(to).map(|()| to),
                    None => Err(Refused::NotLeader(self.node.leader())),
                };
                let _ = done.send(outcome.map_err(RequestError::Refused));
            }
            Request::ReadIndex { done } => {
                if self.reads_asked.len() + self.reads_confirmed.len() >= WAITING_MAX {
                    let _ = done.send(Err(RequestError::Busy));
                    return;
                }
                let ctx = self.next_ctx;
                self.next_ctx += 1;
                match self.node.read_index(ctx) {
                    Ok(()) => {
                        let leads = self.node.role() == Role::Leader;
                        self.reads_asked
                            .insert(ctx, (self.node.term(), leads, done));
                    }
                    Err(r) => {
                        let _ = done.send(Err(RequestError::Refused(r)));
                    }
                }
            }
        }
    }

    /// Registers a waiter for `index`, which must hold an entry of `entry_term`.
    fn wait(&mut self, index: u64, entry_term: u64, reply: Reply) {
        let proposed_in = self.node.term();
        self.proposals.entry(index).or_default().push(Waiter {
            proposed_in,
            entry_term,
            reply,
        });
        self.waiting += 1;
    }

    /// A client's write on the leader: planned against the engine (which holds the whole
    /// log, the uncommitted tail included), proposed as one entry, answered once committed.
    fn write(&mut self, write: super::Write, done: WriteAnswer) {
        if self.node.role() != Role::Leader {
            let refused = Refused::NotLeader(self.node.leader());
            let _ = done.send(Err(RequestError::Refused(refused).into()));
            return;
        }
        if self.waiting >= WAITING_MAX {
            let _ = done.send(Err(RequestError::Busy.into()));
            return;
        }
        let conflicts = write
            .op()
            .streams()
            .any(|s| self.touched_streams.contains(s))
            || write.ids().any(|id| self.touched_ids.contains(&id));
        if conflicts {
            self.deferred.push_back(Request::Write { write, done });
            return;
        }
        let op = write.op();
        self.touched_streams
            .extend(op.streams().map(str::to_string));
        self.touched_ids.extend(write.ids());
        let engine = self.node.storage().engine();
        match engine.plan(&op) {
            Err(e) => {
                let _ = done.send(Err(e.into()));
            }
            Ok(Plan::Stored { result, term }) => {
                if result.index <= self.node.storage().applied() {
                    let _ = done.send(Ok(result));
                } else {
                    let reply = Reply::Write {
                        result,
                        stored: true,
                        done,
                    };
                    self.wait(result.index, term, reply);
                }
            }
            Ok(Plan::Propose {
                kind,
                count,
                body,
                result,
            }) => {
                let data = raft_log::command(kind, count, &body);
                drop(body);
                match raft_log::propose(&mut self.node, data) {
                    Ok(index) => {
                        let term = self.node.term();
                        let reply = Reply::Write {
                            result,
                            stored: false,
                            done,
                        };
                        self.wait(index, term, reply);
                    }
                    Err(raft_log::ProposeError::Refused(r)) => {
                        let _ = done.send(Err(RequestError::Refused(r).into()));
                    }
                    Err(raft_log::ProposeError::Invalid(e)) => {
                        // The engine planned it: a record it cannot store is a bug here.
                        let why = format!("a planned write does not check: {e}");
                        let _ = done.send(Err(RequestError::Invalid(why).into()));
                    }
                }
            }
        }
    }

    /// Answers the waiters of a committed entry.
    fn committed(&self, e: &quiver_raft::Entry, waiters: Vec<Waiter>, out: &mut Vec<Answered>) {
        for w in waiters {
            if e.term != w.entry_term {
                out.push(Answered::Err(w.reply, RequestError::Overwritten(e.index)));
                continue;
            }
            match w.reply {
                Reply::Index(done) => out.push(Answered::Index(done, e.index)),
                Reply::Write {
                    mut result,
                    stored,
                    done,
                } => {
                    if !stored {
                        result.index = e.index;
                        if let Some(r) = self
                            .node
                            .storage()
                            .engine()
                            .entries(e.index, 0)
                            .ok()
                            .and_then(|r| r.into_iter().next())
                            .filter(|r| r.index == e.index && r.count > 0)
                        {
                            result.position_first = r.position;
                            result.position_last = r.position + u64::from(r.count) - 1;
                        }
                    }
                    out.push(Answered::Write(done, result));
                }
            }
        }
    }

    /// Carries out every `Ready`, in the contract's order.
    fn handle_ready(&mut self) -> Result<(), Failure> {
        let mut committed = Vec::new();
        while self.node.has_ready() {
            let mut ready = self.node.ready();
            // A read of the log that failed (here or while stepping) leaves this Ready, and
            // what it carries, incomplete: nothing of it leaves the node.
            if let Some(e) = self.node.storage_mut().take_failure() {
                return Err(Failure::Read(e));
            }
            // A leader's appends may leave before its own write (the disks work in
            // parallel); the core marks only those early, and only when neither term nor
            // vote is still to be written.
            self.send(std::mem::take(&mut ready.early));
            self.node
                .storage_mut()
                .persist(&ready)
                .map_err(Failure::Persist)?;
            // Feature `mutation-ack-before-commit` (test-only: the consistency suite must
            // catch it): writes are answered once the leader's own disk has them, before a
            // majority does; a leader cut off then loses acknowledged writes.
            #[cfg(feature = "mutation-ack-before-commit")]
            for e in &ready.entries {
                if let Some(waiters) = self.proposals.remove(&e.index) {
                    self.waiting -= waiters.len();
                    self.committed(e, waiters, &mut committed);
                }
            }
            self.send(std::mem::take(&mut ready.messages));
            self.node
                .storage_mut()
                .apply(&ready.committed)
                .map_err(Failure::Apply)?;
            for e in &ready.committed {
                if let Some(waiters) = self.proposals.remove(&e.index) {
                    self.waiting -= waiters.len();
                    self.committed(e, waiters, &mut committed);
                }
            }
            for r in std::mem::take(&mut ready.reads) {
                if let Some((_, _, done)) = self.reads_asked.remove(&r.ctx) {
                    self.reads_confirmed.push((r.index, done));
                }
            }
            self.node.advance(ready);
        }
        // Published before anyone is answered: a caller that hears back sees a status at
        // least as new as its answer.
        self.publish();
        // Every write planned this turn is in the engine now (or was refused).
        self.touched_streams.clear();
        self.touched_ids.clear();
        for a in committed {
            a.send();
        }
        // A read is served once this node has applied up to its index.
        let applied = self.node.storage().applied();
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_confirmed)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.reads_confirmed = waiting;
        for (index, done) in due {
            let _ = done.send(Ok(index));
        }
        self.fail_lost_proposals();
        self.fail_lost_reads();
        Ok(())
    }

    /// Sends what the core hands out; a peer with no address or a full queue loses the
    /// message, which Raft resends in time.
    fn send(&mut self, messages: Vec<Message>) {
        for m in messages {
            let to = m.to;
            // The first append to a peer not answered yet starts its round-trip clock.
            if matches!(m.kind, quiver_raft::MessageKind::Append { .. }) {
                self.appends_out
                    .entry(to)
                    .or_insert_with(std::time::Instant::now);
            }
            match self.endpoint.send(peer_map::to_wire(m)) {
                Ok(()) => {}
                Err(SendError::UnknownPeer(_)) => {
                    tracing::trace!(to, "no address for a message's receiver");
                }
                Err(e) => tracing::trace!(to, "message dropped: {e}"),
            }
        }
    }

    /// A node that no longer leads in the term it proposed in cannot say whether its
    /// proposals will commit: they are answered [`RequestError::LeadershipLost`].
    fn fail_lost_proposals(&mut self) {
        let (role, term) = (self.node.role(), self.node.term());
        let lost = |w: &Waiter| role != Role::Leader || w.proposed_in != term;
        if !self.proposals.values().flatten().any(lost) {
            return;
        }
        for (index, waiters) in std::mem::take(&mut self.proposals) {
            let (gone, kept): (Vec<_>, Vec<_>) = waiters.into_iter().partition(lost);
            self.waiting -= gone.len();
            for w in gone {
                w.reply.fail(RequestError::LeadershipLost(index));
            }
            if !kept.is_empty() {
                self.proposals.insert(index, kept);
            }
        }
    }

    /// Reads asked in an earlier term, or asked as leader of a node that no longer leads,
    /// will not be answered (the core dropped them): their callers are told at once.
    fn fail_lost_reads(&mut self) {
        let (leads, term) = (self.node.role() == Role::Leader, self.node.term());
        let lost: Vec<u64> = self
            .reads_asked
            .iter()
            .filter(|(_, (t, as_leader, _))| *t != term || (*as_leader && !leads))
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in lost {
            if let Some((_, _, done)) = self.reads_asked.remove(&ctx) {
                let _ = done.send(Err(RequestError::ReadLost));
            }
        }
    }

    /// Forgets requests whose caller stopped waiting (timed out).
    fn prune_abandoned(&mut self) {
        for waiters in self.proposals.values_mut() {
            let before = waiters.len();
            waiters.retain(|w| !w.reply.is_closed());
            self.waiting -= before - waiters.len();
        }
        self.proposals.retain(|_, waiters| !waiters.is_empty());
        self.reads_asked.retain(|_, (_, _, done)| !done.is_closed());
        self.reads_confirmed.retain(|(_, done)| !done.is_closed());
    }

    /// On a leader: a learner added by `cluster add` to become a voter is promoted once it
    /// has caught up with the commit index (one change at a time; a refusal, e.g. another
    /// change still pending, is tried again next turn).
    fn promote_caught_up(&mut self) {
        if self.node.role() != Role::Leader || self.node.membership().learners.is_empty() {
            return;
        }
        let commit = self.node.commit();
        let matched = self.node.matched();
        let learners: Vec<u64> = self.node.membership().learners.iter().copied().collect();
        for id in learners {
            let caught_up = matched.iter().any(|(m, i)| *m == id && *i >= commit);
            let engine = self.node.storage().engine();
            let wanted = super::peer_record(engine, id).is_some_and(|r| r.voter);
            if caught_up && wanted {
                match self.node.propose_membership(MembershipChange::Promote(id)) {
                    Ok(index) => tracing::info!(peer = id, index, "promoting a learner"),
                    Err(why) => tracing::debug!(peer = id, ?why, "promotion waits"),
                }
                return;
            }
        }
    }

    /// Keeps the endpoint's peers equal to the members in effect and the leader this node
    /// follows (this node aside): a node whose log is behind may follow a leader its
    /// memberships do not list yet, and must answer it.
    fn sync_peers(&mut self) {
        let me = self.node.id();
        let membership = self.node.membership();
        let mut members: BTreeSet<u64> = membership.members().filter(|id| *id != me).collect();
        if let Some(leader) = self.node.leader() {
            if leader != me && !membership.retired.contains(&leader) {
                members.insert(leader);
            }
        }
        if members == self.peers {
            return;
        }
        // `add_peer` spawns the link's task: on the server's runtime, not the loop's.
        let _guard = self.runtime.enter();
        let new: Vec<u64> = members.difference(&self.peers).copied().collect();
        for id in new {
            match self.addresses.get(&id) {
                Some(addr) => {
                    tracing::info!(peer = id, %addr, "sending to a member");
                    self.endpoint.add_peer(id, *addr);
                    self.peers.insert(id);
                }
                None => match super::peer_record(self.node.storage().engine(), id) {
                    // A member added by `cluster add`: its address is in the log.
                    Some(record) => {
                        tracing::info!(peer = id, addr = %record.addr, "sending to a member");
                        self.addresses.insert(id, record.addr);
                        self.endpoint.add_peer(id, record.addr);
                        self.peers.insert(id);
                        self.unreachable.remove(&id);
                    }
                    None => {
                        if self.unreachable.insert(id) {
                            tracing::warn!(peer = id, "a member has no known peer address");
                        }
                    }
                },
            }
        }
        for id in self.peers.difference(&members).copied().collect::<Vec<_>>() {
            tracing::info!(peer = id, "no longer a member: closing its link");
            self.endpoint.remove_peer(id);
            self.peers.remove(&id);
        }
    }

    fn publish(&self) {
        let n = &self.node;
        let m = n.membership();
        let mut v = lock(&self.view);
        let campaigning = |r: Option<Role>| matches!(r, Some(Role::PreCandidate | Role::Candidate));
        if campaigning(Some(n.role())) && !campaigning(v.role) {
            v.elections_started += 1;
        }
        if n.leader().is_some() && n.leader() != v.leader {
            v.leader_changes += 1;
        }
        v.role = Some(n.role());
        v.term = n.term();
        v.leader = n.leader();
        v.commit = n.commit();
        v.applied = n.storage().applied();
        v.last_index = n.last_index();
        v.voters = m.voters.iter().copied().collect();
        v.learners = m.learners.iter().copied().collect();
        v.matched = n.matched();
        if n.role() == Role::Leader {
            v.append_rtt_us.clone_from(&self.append_rtt_us);
        } else {
            v.append_rtt_us.clear();
        }
        v.dropped_not_member = self.dropped_not_member;
    }
}

/// An answer, sent once the turn's status is published.
enum Answered {
    Index(Answer, u64),
    Write(WriteAnswer, AppendResult),
    Err(Reply, RequestError),
}

impl Answered {
    fn send(self) {
        match self {
            Answered::Index(done, index) => {
                let _ = done.send(Ok(index));
            }
            Answered::Write(done, result) => {
                let _ = done.send(Ok(result));
            }
            Answered::Err(reply, e) => reply.fail(e),
        }
    }
}

pub(crate) fn lock(view: &Mutex<View>) -> std::sync::MutexGuard<'_, View> {
    view.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fail-stop: one clear line, and the node reports itself failed (hence not ready).
fn fail(view: &Mutex<View>, id: u64, why: String) {
    tracing::error!(
        id,
        "Raft stopped on this node (fail-stop; it reports not ready and takes no further part \
         in the cluster until restarted): {why}"
    );
    lock(view).failed = Some(why);
}
