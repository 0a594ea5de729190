//! The peer endpoint: QUIC between the nodes of a cluster (ALPN `quiver-peer/1`), on a UDP
//! address of its own, carrying [`PeerMessage`]s.
//!
//! ## Shape
//!
//! Each node dials every peer it sends to and accepts connections from every peer that sends
//! to it: a pair of nodes keeps two long-lived connections, one per direction. That needs no
//! rule for which side dials, and no merging of two connections opened at once. On its
//! connection, after authentication, the dialer opens one unidirectional stream and writes
//! frames on it back to back (pipelined: no answer is awaited; Raft's answers come back on
//! the other connection). The acceptor decodes each frame and delivers it into one
//! `tokio::sync::mpsc` channel for the whole endpoint.
//!
//! ## Backpressure
//!
//! [`PeerEndpoint::send`] never waits. Each peer has a queue bounded in messages and in
//! bytes, drained by that peer's writer task; when it is full the message is dropped and
//! counted, and the caller's Raft resends (a probe or heartbeat later). So a slow or dead
//! peer costs only its own queue: QUIC flow control stalls its writer, its queue fills, its
//! messages are dropped, and every other peer is untouched. When a connection attempt fails
//! the queue is emptied too (counted as dropped): what waited for a dead peer is stale by
//! the time it is back. Reconnects back off exponentially (`backoff_min` to `backoff_max`)
//! with jitter, so restarted clusters do not dial in lockstep. On the receiving side the
//! channel is bounded: a Raft loop that falls behind stops the readers, which stops QUIC's
//! flow control credit, which fills the senders' queues, which drop.
//!
//! ## Authentication
//!
//! TLS 1.3 encrypts; the cluster secret authenticates. Each endpoint presents a certificate
//! the caller supplies (the server generates a self-signed one at start) and dialers accept
//! any certificate, still checking the handshake signature made with its key. Then, on the
//! connection's first bidirectional stream:
//!
//! 1. the dialer sends `Auth`: its id, the id it expects to reach, its incarnation, and
//!    `HMAC-SHA256(K, "quiver-peer/1" | role | from | to | incarnation | E)`, where `E` is 32
//!    bytes of the TLS session's exported keying material (RFC 8446 7.5, label
//!    `EXPORTER-quiver-peer-auth`) and `K` is derived from the cluster secret;
//! 2. the acceptor checks it in constant time (`ring::hmac::verify`) and only then answers
//!    `AuthOk`, its own proof computed the same way with the other role byte;
//! 3. the dialer checks that, and only then sends any Raft frame. The acceptor reads no
//!    data stream before step 2 succeeded.
//!
//! Why a self-signed certificate is enough: `E` is a value that only the two endpoints of
//! this one TLS session know. A machine in the middle has to run two TLS sessions, one with
//! each side, and they export different values, so a proof it relays from one session fails
//! in the other, and without the secret it cannot compute one. The role byte stops a proof
//! from being reflected back to its sender, and the ids stop it from being used toward
//! another node. A certificate derived from the secret would add nothing the proof does not
//! give, and would put the secret into a long-lived key. What an attacker can do is collect
//! a proof (a dialer proves itself first) and guess the secret offline: the secret must be
//! random and long, hence [`SECRET_BYTES_MIN`].
//!
//! ## Layout
//!
//! - `mod.rs` — configuration, counters, [`PeerEndpoint`] and its `send`.
//! - `handshake.rs` — TLS and QUIC settings, the proofs, both sides of the handshake.
//! - `incoming.rs` — accepted connections: handshake, then frames into the channel.
//! - `outgoing.rs` — one writer per peer: dial, authenticate, drain the queue, back off.
//!
//! A failed proof closes the connection with [`close::AUTH_FAILED`], is logged (`warn`),
//! and counted in [`PeerStats::connections_refused`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ring::hmac;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::info;

use crate::peer::{PeerMessage, PEER_FRAME_PAYLOAD_BYTES_MAX};
use crate::quic::SetupError;

mod handshake;
mod incoming;
mod outgoing;

/// The shortest cluster secret accepted (16 bytes: 128 bits if random), because a collected
/// proof lets an attacker test guesses of the secret offline.
pub const SECRET_BYTES_MIN: usize = 16;
/// TLS server name dialers ask for (certificates are not checked against it).
pub const PEER_SERVER_NAME: &str = "quiver-peer";
/// Label of the TLS exporter that binds a proof to its session.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-quiver-peer-auth";
/// Data streams a peer may open at once (one is used).
pub const PEER_UNI_STREAMS_MAX: u32 = 4;
/// A connection silent for this long is dead; keep-alives go out four times as often.
pub const PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(8);
/// Incoming connections in their handshake at once; more are refused.
pub const HANDSHAKES_MAX: usize = 64;
/// Largest batch of queued messages a writer hands QUIC in one call.
pub const WRITE_BATCH_BYTES_MAX: usize = 1 << 20;

/// Application close codes of peer connections (QUIC `CONNECTION_CLOSE` frames).
pub mod close {
    /// The endpoint is shutting down.
    pub const SHUTDOWN: u32 = 0;
    /// The peer did not prove the cluster secret.
    pub const AUTH_FAILED: u32 = 1;
    /// The peer expected another node id at this address.
    pub const WRONG_NODE: u32 = 2;
    /// A malformed frame, an unexpected kind, or a message not from the authenticated node.
    pub const PROTOCOL: u32 = 3;
    /// A newer authenticated connection from the same node replaced this one.
    pub const SUPERSEDED: u32 = 4;
    /// The handshake did not finish in time.
    pub const HANDSHAKE_TIMEOUT: u32 = 5;
    /// The peer was removed from this node's list.
    pub const REMOVED: u32 = 6;
}

/// How a peer endpoint runs. [`PeerConfig::new`] gives the defaults.
#[non_exhaustive]
pub struct PeerConfig {
    /// This node's id (not 0).
    pub id: u64,
    /// UDP address to listen on for peers.
    pub listen: SocketAddr,
    /// The cluster secret, at least [`SECRET_BYTES_MIN`] bytes.
    pub secret: Vec<u8>,
    /// Certificate chain presented to peers, leaf first (self-signed is fine: see above).
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// Its key.
    pub key: PrivateKeyDer<'static>,
    /// Messages queued for one peer at most (default 1,024).
    pub queue_messages_max: usize,
    /// Bytes of frames queued for one peer at most (default 64 MiB).
    pub queue_bytes_max: usize,
    /// Capacity of the incoming channel, in messages (default 4,096).
    pub incoming_max: usize,
    /// Largest frame payload sent or accepted (default [`PEER_FRAME_PAYLOAD_BYTES_MAX`]).
    pub frame_payload_bytes_max: usize,
    /// First reconnect delay (default 50 ms); it doubles on each failure.
    pub backoff_min: Duration,
    /// Longest reconnect delay (default 2 s).
    pub backoff_max: Duration,
    /// Time for connecting and authenticating (default 5 s).
    pub handshake_timeout: Duration,
}

impl PeerConfig {
    /// A configuration with the defaults.
    pub fn new(
        id: u64,
        listen: SocketAddr,
        secret: impl Into<Vec<u8>>,
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> PeerConfig {
        PeerConfig {
            id,
            listen,
            secret: secret.into(),
            cert_chain,
            key,
            queue_messages_max: 1024,
            queue_bytes_max: 64 << 20,
            incoming_max: 4096,
            frame_payload_bytes_max: PEER_FRAME_PAYLOAD_BYTES_MAX,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a peer endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum PeerSetupError {
    /// TLS, QUIC or the socket refused.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The secret is too short.
    #[error("the cluster secret must be at least {SECRET_BYTES_MIN} bytes")]
    WeakSecret,
    /// Node id 0 is not a node.
    #[error("node id 0 is reserved")]
    ZeroId,
}

/// Why [`PeerEndpoint::send`] did not queue a message. Every case but `UnknownPeer` is also
/// counted in [`PeerStats::messages_dropped`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No address is known for the message's `to`.
    #[error("no address for node {0}")]
    UnknownPeer(u64),
    /// The peer's queue is full: the message was dropped.
    #[error("the queue to node {0} is full")]
    QueueFull(u64),
    /// The encoded message passes the frame limit.
    #[error("a message of {0} bytes passes the peer frame limit")]
    TooLarge(usize),
}

/// Counters of one endpoint, since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Incoming connections that failed authentication or the handshake.
    pub connections_refused: u64,
    /// Incoming connections authenticated.
    pub connections_accepted: u64,
    /// Outgoing connections authenticated.
    pub connects: u64,
    /// Outgoing connection attempts that failed (unreachable, refused, timed out).
    pub connect_failures: u64,
    /// Messages written to a stream.
    pub messages_sent: u64,
    /// Frame bytes written.
    pub bytes_sent: u64,
    /// Messages received and delivered.
    pub messages_received: u64,
    /// Frame bytes received.
    pub bytes_received: u64,
    /// Messages dropped: queue full, too large, or lost with a failed connection.
    pub messages_dropped: u64,
    /// Per peer, by id.
    pub peers: Vec<PeerLinkStats>,
}

/// One peer's outgoing link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerLinkStats {
    /// Its id.
    pub id: u64,
    /// Its address.
    pub addr: SocketAddr,
    /// An authenticated connection is up.
    pub connected: bool,
    /// Messages waiting in its queue.
    pub queued_messages: usize,
    /// Bytes waiting in its queue.
    pub queued_bytes: usize,
    /// Messages to it dropped.
    pub messages_dropped: u64,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) connections_refused: AtomicU64,
    pub(super) connections_accepted: AtomicU64,
    pub(super) connects: AtomicU64,
    pub(super) connect_failures: AtomicU64,
    pub(super) messages_sent: AtomicU64,
    pub(super) bytes_sent: AtomicU64,
    pub(super) messages_received: AtomicU64,
    pub(super) bytes_received: AtomicU64,
    pub(super) messages_dropped: AtomicU64,
}

/// What `send` and a writer task share about one peer.
pub(super) struct Link {
    pub(super) addr: SocketAddr,
    pub(super) tx: mpsc::Sender<PeerMessage>,
    pub(super) queued_bytes: AtomicUsize,
    pub(super) connected: AtomicBool,
    pub(super) dropped: AtomicU64,
    /// The incarnation last seen dialing us: a change tells the writer to redial.
    pub(super) incarnation: watch::Sender<u64>,
}

pub(super) struct PeerHandle {
    pub(super) link: Arc<Link>,
    pub(super) task: JoinHandle<()>,
}

/// What every task of an endpoint shares.
pub(super) struct Shared {
    pub(super) id: u64,
    pub(super) incarnation: u64,
    pub(super) key: hmac::Key,
    pub(super) queue_messages_max: usize,
    pub(super) queue_bytes_max: usize,
    pub(super) frame_max: usize,
    pub(super) backoff: (Duration, Duration),
    pub(super) handshake_timeout: Duration,
    pub(super) client: quinn::ClientConfig,
    pub(super) counters: Counters,
    pub(super) peers: Mutex<HashMap<u64, PeerHandle>>,
    /// Authenticated incoming connections, by node id: a newer one closes the older.
    pub(super) incoming: Mutex<HashMap<u64, quinn::Connection>>,
    pub(super) deliver: mpsc::Sender<PeerMessage>,
    pub(super) handshakes: Arc<tokio::sync::Semaphore>,
}

/// A node's peer endpoint. Dropping it closes every connection.
pub struct PeerEndpoint {
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
    accept: JoinHandle<()>,
}

impl PeerEndpoint {
    /// Binds `config.listen` and starts accepting peers. Incoming messages arrive on the
    /// returned receiver. Must be called inside a tokio runtime.
    pub fn bind(
        config: PeerConfig,
    ) -> Result<(PeerEndpoint, mpsc::Receiver<PeerMessage>), PeerSetupError> {
        if config.secret.len() < SECRET_BYTES_MIN {
            return Err(PeerSetupError::WeakSecret);
        }
        if config.id == 0 {
            return Err(PeerSetupError::ZeroId);
        }
        let (server, client) = handshake::tls_configs(config.cert_chain, config.key)?;
        let reset = handshake::reset_key(&config.secret, config.id);
        let endpoint = handshake::bind(config.listen, server, reset)?;
        let (deliver, incoming) = mpsc::channel(config.incoming_max.max(1));
        let shared = Arc::new(Shared {
            id: config.id,
            incarnation: handshake::random_u64(),
            key: handshake::derive_key(&config.secret),
            queue_messages_max: config.queue_messages_max.max(1),
            queue_bytes_max: config.queue_bytes_max,
            frame_max: config
                .frame_payload_bytes_max
                .min(PEER_FRAME_PAYLOAD_BYTES_MAX),
            backoff: (
                config.backoff_min,
                config.backoff_max.max(config.backoff_min),
            ),
            handshake_timeout: config.handshake_timeout,
            client,
            counters: Counters::default(),
            peers: Mutex::new(HashMap::new()),
            incoming: Mutex::new(HashMap::new()),
            deliver,
            handshakes: Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_MAX)),
        });
        let accept = tokio::spawn(incoming::accept_loop(shared.clone(), endpoint.clone()));
        info!(id = config.id, addr = %config.listen, "peer endpoint listening");
        Ok((
            PeerEndpoint {
                shared,
                endpoint,
                accept,
            },
            incoming,
        ))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint
            .local_addr()
            .expect("a bound endpoint has an address")
    }

    /// Sends to node `id` at `addr` from now on (replacing an earlier address: its queue and
    /// connection are dropped).
    pub fn add_peer(&self, id: u64, addr: SocketAddr) {
        let (tx, rx) = mpsc::channel(self.shared.queue_messages_max);
        let link = Arc::new(Link {
            addr,
            tx,
            queued_bytes: AtomicUsize::new(0),
            connected: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            incarnation: watch::channel(0).0,
        });
        let task = tokio::spawn(outgoing::run_link(
            self.shared.clone(),
            self.endpoint.clone(),
            id,
            link.clone(),
            rx,
        ));
        let old = self.lock_peers().insert(id, PeerHandle { link, task });
        if let Some(old) = old {
            old.task.abort();
        }
    }

    /// Stops sending to node `id`; its queue is dropped and its connection closed.
    pub fn remove_peer(&self, id: u64) {
        if let Some(old) = self.lock_peers().remove(&id) {
            old.task.abort();
        }
        if let Some(conn) = self.shared.lock_incoming().remove(&id) {
            conn.close(close::REMOVED.into(), b"removed from the cluster");
        }
    }

    /// Queues `msg` for `msg.to` without waiting; see [`SendError`].
    pub fn send(&self, msg: PeerMessage) -> Result<(), SendError> {
        let len = msg.frame_len();
        let c = &self.shared.counters;
        if msg.payload_len() > self.shared.frame_max {
            c.messages_dropped.fetch_add(1, Relaxed);
            return Err(SendError::TooLarge(len));
        }
        let peers = self.lock_peers();
        let Some(peer) = peers.get(&msg.to) else {
            return Err(SendError::UnknownPeer(msg.to));
        };
        let link = &peer.link;
        let to = msg.to;
        let full = || {
            c.messages_dropped.fetch_add(1, Relaxed);
            link.dropped.fetch_add(1, Relaxed);
            Err(SendError::QueueFull(to))
        };
        // Counted before queueing so the writer's subtraction never goes below zero.
        if link.queued_bytes.fetch_add(len, Relaxed) + len > self.shared.queue_bytes_max {
            link.queued_bytes.fetch_sub(len, Relaxed);
            return full();
        }
        if link.tx.try_send(msg).is_err() {
            link.queued_bytes.fetch_sub(len, Relaxed);
            return full();
        }
        Ok(())
    }

    /// The counters.
    pub fn stats(&self) -> PeerStats {
        let c = &self.shared.counters;
        let mut peers: Vec<PeerLinkStats> = self
            .lock_peers()
            .iter()
            .map(|(id, p)| PeerLinkStats {
                id: *id,
                addr: p.link.addr,
                connected: p.link.connected.load(Relaxed),
                queued_messages: self.shared.queue_messages_max - p.link.tx.capacity(),
                queued_bytes: p.link.queued_bytes.load(Relaxed),
                messages_dropped: p.link.dropped.load(Relaxed),
            })
            .collect();
        peers.sort_by_key(|p| p.id);
        PeerStats {
            connections_refused: c.connections_refused.load(Relaxed),
            connections_accepted: c.connections_accepted.load(Relaxed),
            connects: c.connects.load(Relaxed),
            connect_failures: c.connect_failures.load(Relaxed),
            messages_sent: c.messages_sent.load(Relaxed),
            bytes_sent: c.bytes_sent.load(Relaxed),
            messages_received: c.messages_received.load(Relaxed),
            bytes_received: c.bytes_received.load(Relaxed),
            messages_dropped: c.messages_dropped.load(Relaxed),
            peers,
        }
    }

    /// Closes every connection and waits (up to a second) for the peers to be told.
    pub async fn shutdown(self) {
        self.stop();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }

    fn stop(&self) {
        self.accept.abort();
        for (_, p) in self.lock_peers().drain() {
            p.task.abort();
        }
        self.shared.lock_incoming().clear();
        self.endpoint
            .close(close::SHUTDOWN.into(), b"the node is shutting down");
    }

    fn lock_peers(&self) -> std::sync::MutexGuard<'_, HashMap<u64, PeerHandle>> {
        self.shared.peers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for PeerEndpoint {
    fn drop(&mut self) {
        self.stop();
    }
}
impl Shared {
    pub(super) fn lock_incoming(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, quinn::Connection>> {
        self.incoming.lock().unwrap_or_else(|e| e.into_inner())
    }
}
