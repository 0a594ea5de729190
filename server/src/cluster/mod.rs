//! Cluster mode (`quiver serve --db-type cluster`): the engine is the Raft log, one thread
//! drives Raft over it, and the peer endpoint carries the messages between the nodes.
//!
//! What a node runs here: the engine opened with `commit_on_durable(false)` (Raft moves the
//! commit point), [`EngineLog`] over it, a [`quiver_net::peer_quic::PeerEndpoint`]
//! authenticated with the cluster secret, the Raft loop on a thread of its own
//! (`driver.rs`), and the HTTP operations endpoint with the cluster's status. The client
//! protocol is not served yet: its write path goes straight into the engine, which under Raft
//! would put records into the log that no other node has (the write path through Raft is the
//! next step, see docs/CLUSTER.md).
//!
//! ## Layout
//! - `mod.rs` — [`ClusterNode`] (start, shutdown), [`ClusterHandle`] (status, propose,
//!   read index), [`ClusterStatus`], and [`serve`], the node as `quiver serve` runs it.
//! - `config.rs` — node id (kept in the data directory), members, secret, clock.
//! - `driver.rs` — the Raft loop.
//! - `status_cli.rs` — `quiver cluster status`, over the HTTP endpoint.

pub mod config;
mod driver;
pub mod status_cli;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use quiver_engine::{Engine, EngineConfig};
use quiver_net::peer_quic::{PeerConfig, PeerEndpoint};
use quiver_raft::{Config, RawNode, Role};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::{mpsc, oneshot, watch};

pub use config::{ClusterConfig, ConfigError};
pub use driver::{RequestError, INPUTS_PER_TURN_MAX, REQUESTS_QUEUED_MAX, WAITING_MAX};

use crate::cmd::Ctx;
use crate::raft_log::EngineLog;
use crate::ServerConfig;
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
    /// Messages dropped because their sender is not a member.
    pub messages_from_non_members: u64,
    /// Why the Raft loop stopped, if it did.
    pub failed: Option<String>,
    /// Whether this node knows a leader and has applied up to its commit index.
    pub ready: bool,
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

/// What the rest of the server holds of the Raft loop: its status, and requests to it.
#[derive(Clone)]
pub struct ClusterHandle {
    node_id: u64,
    requests: mpsc::Sender<Request>,
    view: Arc<Mutex<View>>,
    endpoint: Arc<PeerEndpoint>,
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
            ready: is_ready(&v),
            failed: v.failed,
        }
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
        let thread = std::thread::Builder::new()
            .name(format!("raft-{}", config.node_id))
            .spawn(move || driver.run_thread(incoming, requests, stop_rx))
            .context("starting the Raft thread")?;
        Ok(ClusterNode {
            handle: ClusterHandle {
                node_id: config.node_id,
                requests: requests_tx,
                view,
                endpoint,
            },
            stop,
            thread: Some(thread),
        })
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

/// Runs a cluster node as `quiver serve --db-type cluster` does, until `shutdown`: opens
/// the store as Raft's log, starts the Raft loop and the HTTP endpoint, then on shutdown
/// stops the loop, closes the peers and flushes the store. `config.listen` (the client
/// address) is not bound: see the module doc.
pub async fn serve(
    config: &ServerConfig,
    cluster: &ClusterConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    // `EngineLog::open` opens the engine with `commit_on_durable(false)` and the durable
    // floor its commit marks give.
    let engine_config = EngineConfig::default().segment_bytes_max(config.segment_mib << 20);
    let log = EngineLog::open(&config.data_dir, engine_config).with_context(|| {
        format!(
            "opening the store in {} as the Raft log",
            config.data_dir.display()
        )
    })?;
    let engine = log.engine().clone();
    let http = match config.http {
        Some(addr) => {
            Some(crate::http::bind(addr).with_context(|| format!("binding HTTP {addr}"))?)
        }
        None => None,
    };
    let node = ClusterNode::start(log, cluster)?;
    let ctx = context(engine.clone(), config);
    let (stop_http, mut http_stopped) = watch::channel(false);
    let http_addr = http.as_ref().and_then(|l| l.local_addr().ok());
    let http = http.map(|listener| {
        let stop = async move {
            let _ = http_stopped.wait_for(|stop| *stop).await;
        };
        let (ctx, cluster) = (ctx.clone(), Some(node.handle()));
        tokio::spawn(crate::http::serve_with(listener, ctx, cluster, stop))
    });
    tracing::info!(
        node_id = cluster.node_id,
        peer_listen = %cluster.peer_listen,
        members = ?cluster.members,
        http = ?http_addr,
        data_dir = %config.data_dir.display(),
        applied = engine.commit_index(),
        "quiver is serving (cluster node; the client protocol is not served in cluster mode yet)"
    );
    shutdown.await;
    // HTTP first: its handlers hold handles to the node, and the peer endpoint is closed
    // gracefully (peers told at once) only once nothing else holds it.
    let _ = stop_http.send(true);
    if let Some(h) = http {
        h.await
            .expect("the HTTP task does not panic")
            .context("HTTP endpoint")?;
    }
    tracing::info!("shutting down: stopping Raft");
    node.shutdown().await;
    ctx.persistent.shutdown().await;
    tokio::task::spawn_blocking(move || engine.flush())
        .await
        .expect("flush does not panic")
        .context("flushing on shutdown")?;
    Ok(())
}

/// What the HTTP endpoint reads: the store, its metrics, and the commit position watch.
fn context(engine: Engine, config: &ServerConfig) -> Arc<Ctx> {
    let (commit_tx, commits) = watch::channel(engine.commit_position());
    engine.on_commit(move |position| {
        commit_tx.send_replace(position);
    });
    let metrics = crate::metrics::Metrics::new(config.slow_client_bytes_max);
    let budget = crate::budget::Budget::new(config.slow_client_bytes_max, metrics.budget.clone());
    let counters = metrics.groups.clone();
    let persistent = crate::persistent::Groups::load(engine.clone(), commits.clone(), counters);
    Arc::new(Ctx {
        engine,
        store_id: config.store_id.clone(),
        metrics,
        commits,
        persistent,
        budget,
    })
}
