//! Cluster mode (`quiver serve --db-type cluster`): the engine is the Raft log, one thread
//! drives Raft over it, and the peer endpoint carries the messages between the nodes.
//!
//! What a node runs here: the engine opened with `commit_on_durable(false)` (Raft moves the
//! commit point), [`EngineLog`] over it, a [`quiver_net::peer_quic::PeerEndpoint`]
//! authenticated with the cluster secret, the Raft loop on a thread of its own
//! (`driver.rs`). [`crate::Server::start_cluster`] puts the client endpoint and the HTTP
//! endpoint in front of it: client writes become Raft proposals planned on the leader against
//! its log ([`ClusterHandle::write`]), reads wait for a read index
//! ([`ClusterHandle::read_index`]).
//!
//! ## Layout
//! - `mod.rs` — [`ClusterNode`] (start, shutdown), [`ClusterHandle`] (status, writes,
//!   proposals, read index), [`Write`], [`ClusterStatus`].
//! - `config.rs` — node id (kept in the data directory), members, secret, clock.
//! - `driver.rs` — the Raft loop.
//! - `formation.rs` — forming or joining a cluster from what discovery heard.
//! - `status_cli.rs` — `quiver cluster status`, over the HTTP endpoint.

pub mod config;
mod driver;
pub mod formation;
pub mod status_cli;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use quiver_engine::{
    AppendResult, DeleteKind, ExpectedVersion, StreamMetadata, StreamWrite, WriteOp,
};
use quiver_net::discovery::{Discovery, NodeState};
use quiver_net::peer_quic::{PeerConfig, PeerEndpoint};
use quiver_raft::{Config, RawNode, Role};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::{mpsc, oneshot, watch};

pub use config::{ClusterConfig, ConfigError};
pub use driver::{RequestError, WriteError, INPUTS_PER_TURN_MAX, REQUESTS_QUEUED_MAX, WAITING_MAX};

use crate::raft_log::EngineLog;
use driver::{Driver, Request, View};

/// A node's view of the cluster, as `/status` shows it under `cluster`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterStatus {
    /// This node's id.
    pub node_id: u64,
    /// `follower`, `pre_candidate`, `candidate`, `leader`, or `failed` (the Raft loop
    /// stopped: see `failed`).
    pub role: String,
    /// Current term.
    pub term: u64,
    /// The leader this node knows of.
    pub leader: Option<u64>,
    /// Highest index known committed.
    pub commit: u64,
    /// Highest index applied here (visible to reads).
    pub applied: u64,
    /// Last index in this node's log (persisted or not).
    pub last_index: u64,
    /// Voters of the membership in effect.
    pub voters: Vec<u64>,
    /// Learners of the membership in effect.
    pub learners: Vec<u64>,
    /// On a leader: each member's match and lag behind the commit index.
    pub followers: Vec<FollowerStatus>,
    /// Outgoing peer links.
    pub peers: Vec<PeerStatus>,
    /// Incoming peer connections refused (failed authentication or handshake).
    pub peer_connections_refused: u64,
    /// Incoming peer connections authenticated.
    pub peer_connections_accepted: u64,
    /// Messages dropped because their sender was removed from the cluster.
    pub messages_from_non_members: u64,
    /// Times this node saw a new leader (looked at once per turn of the Raft loop).
    #[serde(default)]
    pub leader_changes: u64,
    /// Times this node became a pre-candidate or candidate (once per turn at most).
    #[serde(default)]
    pub elections_started: u64,
    /// Why the Raft loop stopped, if it did.
    pub failed: Option<String>,
    /// Whether this node knows a leader and has applied up to its commit index.
    pub ready: bool,
    /// Nodes of this store that discovery hears and that are not members (each could be
    /// added with `quiver cluster add`).
    #[serde(default)]
    pub discovered: Vec<DiscoveredStatus>,
    /// Discovery's packet counts, when it runs.
    #[serde(default)]
    pub discovery: Option<DiscoveryStatus>,
}

/// A node discovery hears that is not a member.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DiscoveredStatus {
    /// Its node id.
    pub id: u64,
    /// Its peer address.
    pub peer: String,
    /// Its client address, if it announced one.
    pub client: Option<String>,
    /// `fresh` (in no cluster yet) or `member` (of a membership that does not list it, or
    /// another cluster of this store).
    pub state: String,
    /// Milliseconds since it was last heard.
    pub age_ms: u64,
}

/// Discovery's packet counts: accepted, and dropped by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DiscoveryStatus {
    /// Where it listens.
    pub listen: String,
    /// Authenticated packets of this store, acted on.
    pub accepted: u64,
    /// Not discovery packets, or not parsing.
    pub malformed: u64,
    /// Failed authentication (wrong secret, altered).
    pub forged: u64,
    /// Authentic, of another store.
    pub other_store: u64,
    /// Too old or too far in the future.
    pub stale: u64,
    /// Not newer than the last packet accepted from the same node.
    pub replayed: u64,
    /// Announcements sent.
    pub sent: u64,
    /// Announcements that could not be sent.
    pub send_errors: u64,
}

/// A member as its leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FollowerStatus {
    /// Its id.
    pub id: u64,
    /// Highest index known to match the leader's log.
    pub matched: u64,
    /// Commit index minus `matched` (0 when ahead).
    pub lag: u64,
    /// The last append round trip to it, in µs: from the oldest append not yet answered to
    /// its next answer (absent for the leader itself, or before any answer).
    #[serde(default)]
    pub append_rtt_us: Option<u64>,
}

/// One outgoing peer link.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerStatus {
    /// The peer's id.
    pub id: u64,
    /// Its peer address.
    pub addr: String,
    /// An authenticated connection is up.
    pub connected: bool,
    /// Messages to it dropped (queue full, connection lost).
    pub messages_dropped: u64,
}

/// A client's write, as the Raft loop takes it (owned: it crosses to the loop's thread).
#[derive(Debug, Clone)]
pub enum Write {
    /// An append to one or more streams.
    Append(Vec<StreamWrite>),
    /// A soft or hard delete.
    Delete {
        /// The stream.
        stream: String,
        /// What it must be at.
        expected: ExpectedVersion,
        /// Soft or hard.
        kind: DeleteKind,
    },
    /// New stream metadata.
    SetMetadata {
        /// The stream.
        stream: String,
        /// The metadata.
        metadata: StreamMetadata,
    },
    /// A snapshot blob.
    PutSnapshot {
        /// The stream.
        stream: String,
        /// The version it captures.
        version: u64,
        /// The blob.
        data: Bytes,
    },
    /// A snapshot blob removed.
    DeleteSnapshot {
        /// The stream.
        stream: String,
        /// Its version.
        version: u64,
    },
    /// A subscription checkpoint (a persistent group's record).
    Checkpoint {
        /// Its name.
        name: String,
        /// The position.
        position: u64,
        /// The state.
        state: Vec<u8>,
    },
}

impl Write {
    /// The engine's view of it.
    pub fn op(&self) -> WriteOp<'_> {
        match self {
            Write::Append(w) => WriteOp::Append(w),
            Write::Delete {
                stream,
                expected,
                kind,
            } => WriteOp::Delete {
                stream,
                expected: *expected,
                kind: *kind,
            },
            Write::SetMetadata { stream, metadata } => WriteOp::SetMetadata { stream, metadata },
            Write::PutSnapshot {
                stream,
                version,
                data,
            } => WriteOp::PutSnapshot {
                stream,
                version: *version,
                data,
            },
            Write::DeleteSnapshot { stream, version } => WriteOp::DeleteSnapshot {
                stream,
                version: *version,
            },
            Write::Checkpoint {
                name,
                position,
                state,
            } => WriteOp::Checkpoint {
                name,
                position: *position,
                state,
            },
        }
    }

    /// The event ids it writes.
    fn ids(&self) -> impl Iterator<Item = quiver_engine::Uuid> + Clone + '_ {
        let writes = match self {
            Write::Append(w) => &w[..],
            _ => &[],
        };
        writes.iter().flat_map(|w| w.events.iter().map(|e| e.id))
    }
}

/// A member as [`ClusterHandle::members`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Its node id.
    pub id: u64,
    /// A voter (else a learner).
    pub voter: bool,
    /// Its client address, if known.
    pub client: Option<SocketAddr>,
}

/// Checkpoint names of the peer records that `cluster add` writes through Raft.
pub const PEER_RECORD_PREFIX: &str = "cluster/peer/";

/// A member added by `cluster add`: where to reach it, and whether it is to become a voter.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct PeerRecord {
    pub(crate) addr: SocketAddr,
    pub(crate) voter: bool,
    /// Its client address, if `cluster add` was told it.
    #[serde(default)]
    pub(crate) client: Option<SocketAddr>,
}

/// The peer record of node `id` in `engine`'s log, if any.
pub(crate) fn peer_record(engine: &quiver_engine::Engine, id: u64) -> Option<PeerRecord> {
    let name = format!("{PEER_RECORD_PREFIX}{id}");
    let found = engine
        .checkpoints(&name)
        .into_iter()
        .find(|(n, _, _)| *n == name);
    serde_json::from_slice(&found?.2).ok()
}

/// What the rest of the server holds of the Raft loop: its status, and requests to it.
#[derive(Clone)]
pub struct ClusterHandle {
    node_id: u64,
    /// Client addresses from the configuration (this node's included).
    clients: Arc<BTreeMap<u64, SocketAddr>>,
    /// The log, for the peer records of added members.
    engine: quiver_engine::Engine,
    requests: mpsc::Sender<Request>,
    view: Arc<Mutex<View>>,
    endpoint: Arc<PeerEndpoint>,
    discovery: Option<Arc<Discovery>>,
}

impl ClusterHandle {
    /// The node's view of the cluster now.
    pub fn status(&self) -> ClusterStatus {
        let v = driver::lock(&self.view).clone();
        let stats = self.endpoint.stats();
        let role = match (&v.failed, v.role) {
            (Some(_), _) => "failed",
            (None, Some(Role::Leader)) => "leader",
            (None, Some(Role::Candidate)) => "candidate",
            (None, Some(Role::PreCandidate)) => "pre_candidate",
            (None, Some(Role::Follower) | None) => "follower",
        };
        ClusterStatus {
            node_id: self.node_id,
            role: role.into(),
            term: v.term,
            leader: v.leader,
            commit: v.commit,
            applied: v.applied,
            last_index: v.last_index,
            voters: v.voters.clone(),
            learners: v.learners.clone(),
            followers: v
                .matched
                .iter()
                .map(|&(id, matched)| FollowerStatus {
                    id,
                    matched,
                    lag: v.commit.saturating_sub(matched),
                    append_rtt_us: v.append_rtt_us.get(&id).copied(),
                })
                .collect(),
            peers: stats
                .peers
                .iter()
                .map(|p| PeerStatus {
                    id: p.id,
                    addr: p.addr.to_string(),
                    connected: p.connected,
                    messages_dropped: p.messages_dropped,
                })
                .collect(),
            peer_connections_refused: stats.connections_refused,
            peer_connections_accepted: stats.connections_accepted,
            messages_from_non_members: v.dropped_not_member,
            leader_changes: v.leader_changes,
            elections_started: v.elections_started,
            ready: is_ready(&v),
            discovered: self.discovered(&v),
            failed: v.failed,
            discovery: self.discovery.as_ref().map(|d| {
                let c = d.counters();
                DiscoveryStatus {
                    listen: d.local_addr().to_string(),
                    accepted: c.accepted,
                    malformed: c.malformed,
                    forged: c.forged,
                    other_store: c.other_store,
                    stale: c.stale,
                    replayed: c.replayed,
                    sent: c.sent,
                    send_errors: c.send_errors,
                }
            }),
        }
    }

    fn discovered(&self, v: &View) -> Vec<DiscoveredStatus> {
        let Some(d) = &self.discovery else {
            return Vec::new();
        };
        d.heard()
            .into_iter()
            .filter(|(id, _)| !v.voters.contains(id) && !v.learners.contains(id))
            .map(|(id, h)| DiscoveredStatus {
                id,
                peer: h.peer().to_string(),
                client: h.client().map(|c| c.to_string()),
                state: match h.announcement.state {
                    NodeState::Fresh { .. } => "fresh".into(),
                    NodeState::Member { .. } => "member".into(),
                },
                age_ms: h.at.elapsed().as_millis() as u64,
            })
            .collect()
    }

    /// The members of the membership in effect (voter or learner) with their client
    /// addresses where known (from `--initial-members`, or from `cluster add`), and the leader
    /// this node knows of.
    pub fn members(&self) -> (Option<u64>, Vec<MemberInfo>) {
        let v = driver::lock(&self.view).clone();
        // What discovery hears now comes first: a node may have moved since it was
        // configured.
        let heard = self
            .discovery
            .as_ref()
            .map(|d| d.heard())
            .unwrap_or_default();
        let client = |id: u64| {
            heard
                .get(&id)
                .and_then(|h| h.client())
                .or_else(|| self.clients.get(&id).copied())
                .or_else(|| peer_record(&self.engine, id).and_then(|r| r.client))
        };
        let info = |id: u64, voter| MemberInfo {
            id,
            voter,
            client: client(id),
        };
        let voters = v.voters.iter().map(|id| info(*id, true));
        let learners = v.learners.iter().map(|id| info(*id, false));
        (v.leader, voters.chain(learners).collect())
    }

    /// The peer endpoint's counters.
    pub fn peer_stats(&self) -> quiver_net::peer_quic::PeerStats {
        self.endpoint.stats()
    }

    /// Whether the node knows a leader, has applied up to its commit index, and its Raft
    /// loop runs.
    pub fn is_ready(&self) -> bool {
        is_ready(&driver::lock(&self.view))
    }

    /// Proposes a command (`raft_log::command`) and waits until it is committed and applied
    /// on this node: the answer is its index. Only a leader takes proposals. A proposal is
    /// acknowledged only once committed; [`RequestError::LeadershipLost`] and
    /// [`RequestError::Timeout`] mean its outcome is unknown.
    pub async fn propose(&self, data: Vec<u8>, timeout: Duration) -> Result<u64, RequestError> {
        let (done, answer) = oneshot::channel();
        self.ask(Request::Propose { data, done }, answer, timeout)
            .await
    }

    /// A client's write: on the leader, planned against its log (expected versions,
    /// idempotent event ids, names), proposed as one entry and answered once committed on a
    /// majority and applied here. A follower refuses it (`Refused(NotLeader(hint))`).
    /// [`RequestError::LeadershipLost`], [`RequestError::Timeout`] and
    /// [`RequestError::Stopped`] leave the outcome unknown: retry an append with the same
    /// event ids, and the retry finds it if it was stored.
    pub async fn write(&self, write: Write, timeout: Duration) -> Result<AppendResult, WriteError> {
        let (done, answer) = oneshot::channel();
        let wait = async {
            self.requests
                .send(Request::Write { write, done })
                .await
                .map_err(|_| RequestError::Stopped)?;
            answer.await.map_err(|_| RequestError::Stopped)?
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or(Err(RequestError::Timeout.into()))
    }

    /// Adds node `id`, whose peer endpoint is at `peer`, as a learner that the leader
    /// promotes to voter once it has caught up. The address is first written through Raft
    /// (a checkpoint named [`PEER_RECORD_PREFIX`]`<id>`), so that every node, and every
    /// later leader, can reach it; then the membership change is proposed. Answered with
    /// the change's index once committed.
    pub async fn add_member(
        &self,
        id: u64,
        peer: SocketAddr,
        client: Option<SocketAddr>,
        timeout: Duration,
    ) -> Result<u64, WriteError> {
        if id == 0 {
            let why = quiver_raft::Refused::InvalidChange("node id 0 is reserved");
            return Err(RequestError::Refused(why).into());
        }
        let record = PeerRecord {
            addr: peer,
            voter: true,
            client,
        };
        let write = Write::Checkpoint {
            name: format!("{PEER_RECORD_PREFIX}{id}"),
            position: 0,
            state: serde_json::to_vec(&record).expect("records serialize"),
        };
        self.write(write, timeout).await?;
        let change = quiver_raft::MembershipChange::AddLearner(id);
        let (done, answer) = oneshot::channel();
        let asked = self.ask(Request::Membership { change, done }, answer, timeout);
        Ok(asked.await?)
    }

    /// Removes node `id` from the cluster (its id is retired); answered once committed.
    pub async fn remove_member(&self, id: u64, timeout: Duration) -> Result<u64, RequestError> {
        let change = quiver_raft::MembershipChange::Remove(id);
        let (done, answer) = oneshot::channel();
        self.ask(Request::Membership { change, done }, answer, timeout)
            .await
    }

    /// Hands leadership to voter `to`, or to the most caught-up one; answered with the
    /// target once the transfer has begun (it completes within an election timeout, or is
    /// abandoned).
    pub async fn transfer_leader(
        &self,
        to: Option<u64>,
        timeout: Duration,
    ) -> Result<u64, RequestError> {
        let (done, answer) = oneshot::channel();
        self.ask(Request::Transfer { to, done }, answer, timeout)
            .await
    }

    /// A linearizable read barrier: an index such that a read served from this node's
    /// applied state now reflects every write committed before the call. The answer comes
    /// once this node has applied up to it. A follower asks its leader.
    pub async fn read_index(&self, timeout: Duration) -> Result<u64, RequestError> {
        let (done, answer) = oneshot::channel();
        self.ask(Request::ReadIndex { done }, answer, timeout).await
    }

    async fn ask(
        &self,
        request: Request,
        answer: oneshot::Receiver<Result<u64, RequestError>>,
        timeout: Duration,
    ) -> Result<u64, RequestError> {
        let wait = async {
            self.requests
                .send(request)
                .await
                .map_err(|_| RequestError::Stopped)?;
            answer.await.map_err(|_| RequestError::Stopped)?
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or(Err(RequestError::Timeout))
    }
}

fn is_ready(v: &View) -> bool {
    v.failed.is_none() && v.leader.is_some() && v.applied >= v.commit
}

/// A running Raft node: its loop's thread and its peer endpoint.
pub struct ClusterNode {
    handle: ClusterHandle,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ClusterNode {
    /// Binds the peer endpoint and starts the Raft loop over `log`. Must be called inside
    /// the server's tokio runtime (the peer links run on it).
    pub fn start(log: EngineLog, config: &ClusterConfig) -> Result<ClusterNode> {
        let (chain, key) = peer_certificate()?;
        let peer_config = PeerConfig::new(
            config.node_id,
            config.peer_listen,
            config.secret.clone(),
            chain,
            key,
        );
        let (endpoint, incoming) = PeerEndpoint::bind(peer_config)
            .with_context(|| format!("binding the peer address {}", config.peer_listen))?;
        let endpoint = Arc::new(endpoint);
        let voters: Vec<u64> = config.members.iter().map(|(id, _)| *id).collect();
        let mut raft = Config::new(config.node_id, voters, config::random_u64());
        raft.election_ticks = config.election_ticks;
        raft.heartbeat_ticks = config.heartbeat_ticks;
        raft.applied = log.applied();
        raft.check()
            .map_err(|why| anyhow::anyhow!("Raft configuration: {why}"))?;
        let engine = log.engine().clone();
        let node = RawNode::new(raft, log);
        let view = Arc::new(Mutex::new(View::default()));
        let addresses: BTreeMap<u64, _> = config.members.iter().copied().collect();
        let driver = Driver::new(
            node,
            endpoint.clone(),
            tokio::runtime::Handle::current(),
            addresses,
            config.tick,
            view.clone(),
        );
        let (requests_tx, requests) = mpsc::channel(driver::REQUESTS_QUEUED_MAX);
        let (stop, stop_rx) = watch::channel(false);
        let stop_rx_upkeep = stop_rx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("raft-{}", config.node_id))
            .spawn(move || driver.run_thread(incoming, requests, stop_rx))
            .context("starting the Raft thread")?;
        let node = ClusterNode {
            handle: ClusterHandle {
                node_id: config.node_id,
                clients: Arc::new(config.clients.clone()),
                engine,
                requests: requests_tx,
                view,
                endpoint,
                discovery: config.discovery.clone(),
            },
            stop,
            thread: Some(thread),
        };
        if let Some(discovery) = &config.discovery {
            tokio::spawn(upkeep(
                node.handle(),
                discovery.clone(),
                config.cluster_size,
                config.auto_join,
                stop_rx_upkeep,
            ));
        }
        Ok(node)
    }

    /// A handle to the node (cheap to clone).
    pub fn handle(&self) -> ClusterHandle {
        self.handle.clone()
    }

    /// Stops the Raft loop (waiting for its thread: a write in progress finishes) and closes
    /// the peer connections.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        let endpoint = self.handle.endpoint.clone();
        drop(self);
        if let Ok(endpoint) = Arc::try_unwrap(endpoint) {
            endpoint.shutdown().await;
        }
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Keeps discovery and the Raft loop in step while the node runs: announces the voters in
/// effect, hands members' announced peer addresses to the loop (a member that moved is
/// reached at its new address), and, on a leader with `--auto-join`, adds fresh nodes as
/// learners while voters and learners are fewer than `size` (learners added this way are
/// promoted once caught up).
async fn upkeep(
    handle: ClusterHandle,
    discovery: Arc<Discovery>,
    size: u16,
    auto_join: bool,
    mut stop: watch::Receiver<bool>,
) {
    const PERIOD: Duration = Duration::from_millis(500);
    const RETRY_ADD: Duration = Duration::from_secs(10);
    let mut tried: BTreeMap<u64, std::time::Instant> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(PERIOD) => {}
        }
        if *stop.borrow() {
            return;
        }
        let v = driver::lock(&handle.view).clone();
        let mut voters = v.voters.clone();
        voters.sort_unstable();
        discovery.set_state(NodeState::Member {
            voters: voters.clone(),
        });
        let leads = v.role == Some(Role::Leader);
        let mut members = voters.len() + v.learners.len();
        for (id, heard) in discovery.heard() {
            if voters.contains(&id) || v.learners.contains(&id) {
                let _ = handle.requests.try_send(Request::PeerAddress {
                    id,
                    addr: heard.peer(),
                });
                continue;
            }
            // A fresh node, or a newcomer that found this cluster and waits to be added.
            let joining = match &heard.announcement.state {
                NodeState::Fresh { .. } => true,
                NodeState::Member { voters: theirs } => {
                    !theirs.contains(&id) && theirs.iter().any(|t| voters.contains(t))
                }
            };
            let due = tried.get(&id).is_none_or(|t| t.elapsed() >= RETRY_ADD);
            if !(auto_join && leads && joining && due && members < size as usize) {
                continue;
            }
            tried.insert(id, std::time::Instant::now());
            members += 1;
            let (handle, peer, client) = (handle.clone(), heard.peer(), heard.client());
            tokio::spawn(async move {
                match handle
                    .add_member(id, peer, client, Duration::from_secs(10))
                    .await
                {
                    Ok(index) => {
                        tracing::info!(node = id, %peer, index, "auto-join: added as a learner")
                    }
                    Err(e) => tracing::warn!(node = id, %peer, error = %e, "auto-join: not added"),
                }
            });
        }
    }
}

/// A fresh self-signed certificate for the peer endpoint: peers trust the cluster secret,
/// not certificates (docs/PEERS.md, section 4), so it need not outlive the process.
fn peer_certificate() -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let ck = rcgen::generate_simple_self_signed(vec![
        quiver_net::peer_quic::PEER_SERVER_NAME.to_string()
    ])
    .context("generating the peer certificate")?;
    let chain = vec![CertificateDer::from(ck.cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    Ok((chain, key))
}
