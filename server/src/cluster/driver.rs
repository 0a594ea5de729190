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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quiver_net::peer::PeerMessage;
use quiver_net::peer_quic::{PeerEndpoint, SendError};
use quiver_raft::{Message, RawNode, Refused, Role};
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

/// Where the outcome of a proposal or a read goes.
type Answer = oneshot::Sender<Result<u64, RequestError>>;

/// What the handle asks of the loop.
pub(crate) enum Request {
    Propose { data: Vec<u8>, done: Answer },
    ReadIndex { done: Answer },
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
    pub(crate) dropped_not_member: u64,
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
    /// Proposals by index: (term proposed in, who waits).
    proposals: BTreeMap<u64, (u64, Answer)>,
    /// Reads asked of the core, by ctx: (term asked in, asked as leader, who waits).
    reads_asked: HashMap<u64, (u64, bool, Answer)>,
    /// Reads confirmed, waiting to be applied up to their index.
    reads_confirmed: Vec<(u64, Answer)>,
    next_ctx: u64,
    dropped_not_member: u64,
}

/// Why the loop stopped for good.
enum Failure {
    Persist(quiver_engine::LogError),
    Apply(quiver_engine::LogError),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Persist(e) => write!(f, "persisting a Ready failed: {e}"),
            Failure::Apply(e) => write!(f, "applying committed entries failed: {e}"),
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
            reads_asked: HashMap::new(),
            reads_confirmed: Vec::new(),
            next_ctx: 1,
            dropped_not_member: 0,
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
            self.handle_ready()?;
            self.sync_peers();
        }
    }

    /// A peer's message, if it comes from a member of the membership in effect.
    fn step(&mut self, m: PeerMessage) {
        let membership = self.node.membership();
        if !membership.contains(m.from) || membership.retired.contains(&m.from) {
            self.dropped_not_member += 1;
            tracing::debug!(
                from = m.from,
                "dropped a message from a node that is not a member"
            );
            return;
        }
        self.node.step(peer_map::from_wire(m));
    }

    fn request(&mut self, r: Request) {
        match r {
            Request::Propose { data, done } => {
                if self.proposals.len() >= WAITING_MAX {
                    let _ = done.send(Err(RequestError::Busy));
                    return;
                }
                match raft_log::propose(&mut self.node, data) {
                    Ok(index) => {
                        self.proposals.insert(index, (self.node.term(), done));
                    }
                    Err(raft_log::ProposeError::Refused(r)) => {
                        let _ = done.send(Err(RequestError::Refused(r)));
                    }
                    Err(raft_log::ProposeError::Invalid(e)) => {
                        let _ = done.send(Err(RequestError::Invalid(e.to_string())));
                    }
                }
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

    /// Carries out every `Ready`, in the contract's order.
    fn handle_ready(&mut self) -> Result<(), Failure> {
        let mut committed = Vec::new();
        while self.node.has_ready() {
            let mut ready = self.node.ready();
            // A leader's appends may leave before its own write (the disks work in
            // parallel); the core marks only those early, and only when neither term nor
            // vote is still to be written.
            self.send(std::mem::take(&mut ready.early));
            self.node
                .storage_mut()
                .persist(&ready)
                .map_err(Failure::Persist)?;
            self.send(std::mem::take(&mut ready.messages));
            self.node
                .storage_mut()
                .apply(&ready.committed)
                .map_err(Failure::Apply)?;
            for e in &ready.committed {
                if let Some((term, done)) = self.proposals.remove(&e.index) {
                    let outcome = if e.term == term {
                        Ok(e.index)
                    } else {
                        Err(RequestError::Overwritten(e.index))
                    };
                    committed.push((done, outcome));
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
        for (done, outcome) in committed {
            let _ = done.send(outcome);
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
        if role == Role::Leader && self.proposals.values().all(|(t, _)| *t == term) {
            return;
        }
        let lost: Vec<u64> = self
            .proposals
            .iter()
            .filter(|(_, (t, _))| role != Role::Leader || *t != term)
            .map(|(i, _)| *i)
            .collect();
        for index in lost {
            if let Some((_, done)) = self.proposals.remove(&index) {
                let _ = done.send(Err(RequestError::LeadershipLost(index)));
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
        self.proposals.retain(|_, (_, done)| !done.is_closed());
        self.reads_asked.retain(|_, (_, _, done)| !done.is_closed());
        self.reads_confirmed.retain(|(_, done)| !done.is_closed());
    }

    /// Keeps the endpoint's peers equal to the members in effect (this node aside).
    fn sync_peers(&mut self) {
        let me = self.node.id();
        let members: BTreeSet<u64> = self
            .node
            .membership()
            .members()
            .filter(|id| *id != me)
            .collect();
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
                None => {
                    // A member added later (`cluster add`, not built yet) brings its address.
                    if self.unreachable.insert(id) {
                        tracing::warn!(peer = id, "a member has no known peer address");
                    }
                }
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
        v.role = Some(n.role());
        v.term = n.term();
        v.leader = n.leader();
        v.commit = n.commit();
        v.applied = n.storage().applied();
        v.last_index = n.last_index();
        v.voters = m.voters.iter().copied().collect();
        v.learners = m.learners.iter().copied().collect();
        v.matched = n.matched();
        v.dropped_not_member = self.dropped_not_member;
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
