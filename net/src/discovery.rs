//! Cluster discovery: nodes announce themselves by UDP broadcast (and to a static seed list
//! where broadcast does not reach), and every packet is authenticated with an HMAC-SHA256 of
//! the cluster secret.
//!
//! An [`Announcement`] says who a node is (store id, node id), where its peer and client
//! endpoints are, and where it stands: [`NodeState::Fresh`] (no cluster yet, with the
//! membership it would form) or [`NodeState::Member`] (in a formed cluster, with its voters).
//! What a node does with what it hears (forming a cluster, rejoining, showing strangers as
//! discovered) is the server's business; this module only sends, receives and filters.
//!
//! ## Packet
//!
//! ```text
//! magic "QVD1" | store_id str8 | node_id u64 | peer str8 | client str8 ("" = none)
//! | cluster_size u16 | state u8 (0 fresh, 1 member) | count u8 | ids u64 × count
//! | relay count u8 | relays str8 × count | timestamp_ms u64 | nonce u64 | tag [32]
//! ```
//!
//! Integers are little-endian, addresses are text (`ip:port`). `tag` is HMAC-SHA256, keyed by
//! a key derived from the cluster secret, over every byte before it. A receiver drops, and
//! counts, every packet that is malformed, forged (bad tag), from another store, too old or
//! too far in the future ([`AGE_MAX`]), or replayed (not newer than the last one accepted
//! from that node: a sender's timestamps strictly increase). Only authenticated packets of
//! this store are ever acted on; the decoder never panics on any bytes.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use ring::hmac;

use crate::wire::{put_str8, Reader};

/// The default discovery port (UDP), as ExESDB's.
pub const DISCOVERY_PORT_DEFAULT: u16 = 45892;
/// Largest packet sent or accepted: one unfragmented datagram on any usual link.
pub const PACKET_BYTES_MAX: usize = 1200;
/// Most node ids a packet lists (a proposal or a cluster's voters).
pub const IDS_MAX: usize = 64;
/// Most relay addresses a packet lists.
pub const RELAYS_MAX: usize = 16;
/// A packet whose timestamp is further than this from the receiver's clock is dropped as
/// stale (replays of old packets; senders with a badly wrong clock).
pub const AGE_MAX: Duration = Duration::from_secs(30);
/// Default time between announcements.
pub const INTERVAL_DEFAULT: Duration = Duration::from_millis(500);

const MAGIC: &[u8; 4] = b"QVD1";
const TAG_BYTES: usize = 32;
const STATE_FRESH: u8 = 0;
const STATE_MEMBER: u8 = 1;

/// What a node says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The store it belongs to; packets of other stores are dropped.
    pub store_id: String,
    /// Its node id (never 0).
    pub node_id: u64,
    /// Its peer address. An unspecified IP (`0.0.0.0`) means "the address this packet came
    /// from": receivers substitute the packet's source IP ([`Heard::peer`]).
    pub peer: SocketAddr,
    /// Its client address, if it serves clients (unspecified IP as for `peer`).
    pub client: Option<SocketAddr>,
    /// The cluster size it was told to form (0: it forms nothing, it only joins).
    pub cluster_size: u16,
    /// Where it stands.
    pub state: NodeState,
    /// Without broadcast: the discovery addresses of the nodes it hears, so that nodes
    /// seeded with one common address find each other too (at most [`RELAYS_MAX`]).
    pub relays: Vec<SocketAddr>,
    /// Milliseconds since the Unix epoch; strictly increasing per sender.
    pub timestamp_ms: u64,
    /// A random number, fresh in every packet.
    pub nonce: u64,
}

/// Where an announcing node stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeState {
    /// Not in a cluster yet. `proposal`: the voters it would form a cluster with (sorted),
    /// empty until it has found as many nodes as its cluster size.
    Fresh {
        /// Sorted node ids, this node's among them, or empty.
        proposal: Vec<u64>,
    },
    /// In a formed cluster.
    Member {
        /// The voters of the membership in effect on that node (sorted).
        voters: Vec<u64>,
    },
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    /// Not a discovery packet, or one that does not parse.
    #[error("malformed")]
    Malformed,
    /// Its tag does not verify with this cluster's secret.
    #[error("forged (bad authentication tag)")]
    Forged,
    /// Authentic, but of another store.
    #[error("from another store")]
    OtherStore,
    /// Its timestamp is too far from the receiver's clock.
    #[error("stale")]
    Stale,
    /// Not newer than the last packet accepted from its sender.
    #[error("replayed")]
    Replayed,
    /// This node's own packet (heard back from the broadcast).
    #[error("own")]
    Own,
}

/// The key packets are authenticated with, derived from the cluster secret (so that a tag
/// here is never a valid tag of the peer handshake, which derives its own).
pub fn derive_key(secret: &[u8]) -> hmac::Key {
    let root = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let k = hmac::sign(&root, b"quiver discovery key v1");
    hmac::Key::new(hmac::HMAC_SHA256, k.as_ref())
}

/// Encodes and authenticates `a`. Lists longer than [`IDS_MAX`] are cut to it (they are
/// never that long: a cluster has a handful of voters).
pub fn encode(a: &Announcement, key: &hmac::Key) -> Vec<u8> {
    let mut out = BytesMut::with_capacity(256);
    out.put_slice(MAGIC);
    put_str8(&mut out, truncate(&a.store_id, 255));
    out.put_u64_le(a.node_id);
    put_str8(&mut out, &a.peer.to_string());
    put_str8(
        &mut out,
        &a.client.map(|c| c.to_string()).unwrap_or_default(),
    );
    out.put_u16_le(a.cluster_size);
    let (tag, ids) = match &a.state {
        NodeState::Fresh { proposal } => (STATE_FRESH, proposal),
        NodeState::Member { voters } => (STATE_MEMBER, voters),
    };
    out.put_u8(tag);
    let ids = &ids[..ids.len().min(IDS_MAX)];
    out.put_u8(ids.len() as u8);
    for id in ids {
        out.put_u64_le(*id);
    }
    let relays = &a.relays[..a.relays.len().min(RELAYS_MAX)];
    out.put_u8(relays.len() as u8);
    for r in relays {
        put_str8(&mut out, &r.to_string());
    }
    out.put_u64_le(a.timestamp_ms);
    out.put_u64_le(a.nonce);
    let tag = hmac::sign(key, &out);
    out.put_slice(tag.as_ref());
    out.to_vec()
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Checks the tag and decodes a packet. Never panics.
pub fn decode(packet: &[u8], key: &hmac::Key) -> Result<Announcement, Dropped> {
    if packet.len() > PACKET_BYTES_MAX
        || packet.len() < MAGIC.len() + TAG_BYTES
        || &packet[..MAGIC.len()] != MAGIC
    {
        return Err(Dropped::Malformed);
    }
    let (body, tag) = packet.split_at(packet.len() - TAG_BYTES);
    hmac::verify(key, body, tag).map_err(|_| Dropped::Forged)?;
    parse(body).map_err(|_| Dropped::Malformed)
}

fn parse(body: &[u8]) -> Result<Announcement, crate::DecodeError> {
    let mut r = Reader::new(Bytes::copy_from_slice(&body[MAGIC.len()..]), "announcement");
    let store_id = r.str8()?.as_str().to_string();
    let node_id = r.u64()?;
    let peer = r.str8()?;
    let peer: SocketAddr = peer
        .as_str()
        .parse()
        .map_err(|_| r.error(format!("peer address {:?}", peer.as_str())))?;
    let client = r.str8()?;
    let client = match client.as_str() {
        "" => None,
        text => Some(
            text.parse()
                .map_err(|_| r.error(format!("client address {text:?}")))?,
        ),
    };
    let cluster_size = r.u16()?;
    let state = r.u8()?;
    let n = r.u8()? as usize;
    let count = r.count(n, 8)?;
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        ids.push(r.u64()?);
    }
    let state = match state {
        STATE_FRESH => NodeState::Fresh { proposal: ids },
        STATE_MEMBER => NodeState::Member { voters: ids },
        other => return Err(r.error(format!("state {other}"))),
    };
    let n = r.u8()? as usize;
    if n > RELAYS_MAX {
        return Err(r.error(format!("{n} relays")));
    }
    let mut relays = Vec::with_capacity(n);
    for _ in 0..n {
        let text = r.str8()?;
        relays.push(
            text.as_str()
                .parse()
                .map_err(|_| r.error(format!("relay address {:?}", text.as_str())))?,
        );
    }
    let timestamp_ms = r.u64()?;
    let nonce = r.u64()?;
    r.finish()?;
    if node_id == 0 {
        return Err(crate::DecodeError {
            what: "announcement",
            offset: 0,
            detail: "node id 0".into(),
        });
    }
    Ok(Announcement {
        store_id,
        node_id,
        peer,
        client,
        cluster_size,
        state,
        relays,
        timestamp_ms,
        nonce,
    })
}

/// The receiver's filter: authentication, store, age, replay. Holds, per sender, the
/// timestamp of the last packet accepted; a sender silent for [`AGE_MAX`] is forgotten
/// (any packet of its that could be replayed is stale by then), so the table is bounded by
/// the number of live authenticated nodes of this store.
pub struct Gate {
    key: hmac::Key,
    store_id: String,
    own_id: u64,
    last: HashMap<u64, (u64, u64)>,
}

impl Gate {
    /// A gate for node `own_id` of `store_id`.
    pub fn new(secret: &[u8], store_id: &str, own_id: u64) -> Gate {
        Gate {
            key: derive_key(secret),
            store_id: store_id.to_string(),
            own_id,
            last: HashMap::new(),
        }
    }

    /// Admits `packet` received when the wall clock read `now_ms`, or says why not.
    pub fn admit(&mut self, packet: &[u8], now_ms: u64) -> Result<Announcement, Dropped> {
        let a = decode(packet, &self.key)?;
        if a.store_id != self.store_id {
            return Err(Dropped::OtherStore);
        }
        if a.node_id == self.own_id {
            return Err(Dropped::Own);
        }
        let age_max = AGE_MAX.as_millis() as u64;
        if a.timestamp_ms.abs_diff(now_ms) > age_max {
            return Err(Dropped::Stale);
        }
        self.last
            .retain(|_, (_, seen)| now_ms.saturating_sub(*seen) <= age_max);
        match self.last.get(&a.node_id) {
            Some((ts, _)) if a.timestamp_ms <= *ts => Err(Dropped::Replayed),
            _ => {
                self.last.insert(a.node_id, (a.timestamp_ms, now_ms));
                Ok(a)
            }
        }
    }
}

/// Packets counted by fate.
#[derive(Debug, Default)]
pub struct Counters {
    /// Accepted.
    pub accepted: AtomicU64,
    /// [`Dropped::Malformed`].
    pub malformed: AtomicU64,
    /// [`Dropped::Forged`].
    pub forged: AtomicU64,
    /// [`Dropped::OtherStore`].
    pub other_store: AtomicU64,
    /// [`Dropped::Stale`].
    pub stale: AtomicU64,
    /// [`Dropped::Replayed`].
    pub replayed: AtomicU64,
    /// Announcements sent (one per destination).
    pub sent: AtomicU64,
    /// Sends that failed (no route, no interface).
    pub send_errors: AtomicU64,
}

/// A copy of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterValues {
    /// Accepted.
    pub accepted: u64,
    /// Malformed.
    pub malformed: u64,
    /// Forged.
    pub forged: u64,
    /// Of another store.
    pub other_store: u64,
    /// Stale.
    pub stale: u64,
    /// Replayed.
    pub replayed: u64,
    /// Sent.
    pub sent: u64,
    /// Failed sends.
    pub send_errors: u64,
}

impl Counters {
    fn count(&self, fate: Result<(), Dropped>) {
        let c = match fate {
            Ok(()) => &self.accepted,
            Err(Dropped::Malformed) => &self.malformed,
            Err(Dropped::Forged) => &self.forged,
            Err(Dropped::OtherStore) => &self.other_store,
            Err(Dropped::Stale) => &self.stale,
            Err(Dropped::Replayed) => &self.replayed,
            Err(Dropped::Own) => return,
        };
        c.fetch_add(1, Relaxed);
    }

    /// The values now.
    pub fn values(&self) -> CounterValues {
        CounterValues {
            accepted: self.accepted.load(Relaxed),
            malformed: self.malformed.load(Relaxed),
            forged: self.forged.load(Relaxed),
            other_store: self.other_store.load(Relaxed),
            stale: self.stale.load(Relaxed),
            replayed: self.replayed.load(Relaxed),
            sent: self.sent.load(Relaxed),
            send_errors: self.send_errors.load(Relaxed),
        }
    }
}

/// A node heard from: its last accepted announcement.
#[derive(Debug, Clone)]
pub struct Heard {
    /// The announcement as sent.
    pub announcement: Announcement,
    /// Where the packet came from.
    pub from: SocketAddr,
    /// When it was accepted.
    pub at: Instant,
}

impl Heard {
    /// The node's peer address, its unspecified IP replaced by the packet's source IP.
    pub fn peer(&self) -> SocketAddr {
        substitute(self.announcement.peer, self.from.ip())
    }

    /// The node's client address, likewise.
    pub fn client(&self) -> Option<SocketAddr> {
        self.announcement
            .client
            .map(|c| substitute(c, self.from.ip()))
    }
}

fn substitute(addr: SocketAddr, source: IpAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(source, addr.port())
    } else {
        addr
    }
}

/// How a node discovers.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// Where to listen (UDP), usually `0.0.0.0:45892`.
    pub listen: SocketAddr,
    /// Whether to broadcast (to every IPv4 interface's broadcast address, on `listen`'s
    /// port).
    pub broadcast: bool,
    /// Addresses to announce to besides (a static seed list). Without broadcast, the nodes
    /// heard from, and the nodes they hear, are announced to as well: one common seed
    /// address is enough for nodes to find each other.
    pub seeds: Vec<SocketAddr>,
    /// The cluster secret.
    pub secret: Vec<u8>,
    /// Time between announcements.
    pub interval: Duration,
    /// A node not heard from for this long is forgotten.
    pub forget_after: Duration,
}

impl DiscoveryConfig {
    /// Broadcast on `port` of every interface, announcing every [`INTERVAL_DEFAULT`].
    pub fn new(port: u16, secret: Vec<u8>) -> DiscoveryConfig {
        DiscoveryConfig {
            listen: SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port),
            broadcast: true,
            seeds: Vec::new(),
            secret,
            interval: INTERVAL_DEFAULT,
            forget_after: Duration::from_secs(10),
        }
    }
}

struct Shared {
    me: Mutex<Announcement>,
    heard: Mutex<BTreeMap<u64, Heard>>,
    counters: Counters,
    changed: tokio::sync::watch::Sender<u64>,
    forget_after: Duration,
}

/// The discovery service: announces this node and listens for the others, on tasks of the
/// tokio runtime it was started on. Stops when dropped.
pub struct Discovery {
    shared: Arc<Shared>,
    local: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Discovery {
    /// Binds the socket and starts announcing `me` (its timestamp and nonce are set per
    /// packet). Must be called inside a tokio runtime.
    pub fn start(config: DiscoveryConfig, me: Announcement) -> std::io::Result<Discovery> {
        let socket = bind(config.listen)?;
        let local = socket.local_addr()?;
        let socket = Arc::new(tokio::net::UdpSocket::from_std(socket)?);
        let (changed, _) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared {
            me: Mutex::new(me.clone()),
            heard: Mutex::new(BTreeMap::new()),
            counters: Counters::default(),
            changed,
            forget_after: config.forget_after,
        });
        let key = derive_key(&config.secret);
        let gate = Gate::new(&config.secret, &me.store_id, me.node_id);
        let tasks = vec![
            tokio::spawn(receive(socket.clone(), shared.clone(), gate)),
            tokio::spawn(announce(socket, shared.clone(), key, config, local.port())),
        ];
        Ok(Discovery {
            shared,
            local,
            tasks,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sets what this node announces from the next packet on.
    pub fn set_state(&self, state: NodeState) {
        lock(&self.shared.me).state = state;
    }

    /// The nodes heard from within the last `forget_after`, by node id.
    pub fn heard(&self) -> BTreeMap<u64, Heard> {
        let mut heard = lock(&self.shared.heard);
        let forget = self.shared.forget_after;
        heard.retain(|_, h| h.at.elapsed() <= forget);
        heard.clone()
    }

    /// Packet counts.
    pub fn counters(&self) -> CounterValues {
        self.shared.counters.values()
    }

    /// A receiver that changes whenever a packet is accepted.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A UDP socket that may send broadcasts, sharing its port with other discovery sockets of
/// this host (broadcasts reach each of them).
fn bind(addr: SocketAddr) -> std::io::Result<StdUdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_broadcast(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Milliseconds since the Unix epoch by the wall clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn receive(socket: Arc<tokio::net::UdpSocket>, shared: Arc<Shared>, mut gate: Gate) {
    let mut buf = vec![0u8; PACKET_BYTES_MAX + 1];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "discovery receive");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let fate = gate.admit(&buf[..n], now_ms());
        shared
            .counters
            .count(fate.as_ref().map(|_| ()).map_err(|d| *d));
        match fate {
            Ok(announcement) => {
                let id = announcement.node_id;
                let heard = Heard {
                    announcement,
                    from,
                    at: Instant::now(),
                };
                lock(&shared.heard).insert(id, heard);
                shared.changed.send_modify(|n| *n += 1);
            }
            Err(Dropped::Own) => {}
            Err(why) => tracing::debug!(%from, %why, "discovery packet dropped"),
        }
    }
}

async fn announce(
    socket: Arc<tokio::net::UdpSocket>,
    shared: Arc<Shared>,
    key: hmac::Key,
    config: DiscoveryConfig,
    port: u16,
) {
    let rng = ring::rand::SystemRandom::new();
    let mut last_ts = 0;
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut a = lock(&shared.me).clone();
        last_ts = now_ms().max(last_ts + 1);
        a.timestamp_ms = last_ts;
        a.nonce = random_u64(&rng);
        let mut targets = config.seeds.clone();
        if config.broadcast {
            targets.extend(
                broadcast_addresses()
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port)),
            );
        } else {
            // Without broadcast, announce to whoever this node hears and whoever they hear
            // (their relays), and tell them whom this node hears: nodes seeded with one
            // common address find each other. (With broadcast every node hears every other
            // already; a second copy of a packet would count as a replay.)
            let heard = lock(&shared.heard);
            let live = heard
                .values()
                .filter(|h| h.at.elapsed() <= shared.forget_after);
            a.relays = live.clone().map(|h| h.from).take(RELAYS_MAX).collect();
            targets.extend(live.flat_map(|h| {
                std::iter::once(h.from).chain(h.announcement.relays.iter().copied())
            }));
        }
        targets.sort();
        targets.dedup();
        let packet = encode(&a, &key);
        for to in targets {
            let c = match socket.send_to(&packet, to).await {
                Ok(_) => &shared.counters.sent,
                Err(e) => {
                    tracing::debug!(%to, error = %e, "discovery send");
                    &shared.counters.send_errors
                }
            };
            c.fetch_add(1, Relaxed);
        }
    }
}

fn random_u64(rng: &ring::rand::SystemRandom) -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    // The system's random source does not fail on Linux; a zero nonce would only be less
    // unique, never unsafe (the timestamp orders packets).
    let _ = rng.fill(&mut b);
    u64::from_le_bytes(b)
}

/// The broadcast address of every IPv4 interface that is up and not loopback; the limited
/// broadcast address when there is none.
pub fn broadcast_addresses() -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| !i.is_loopback())
        .filter_map(|i| match i.addr {
            if_addrs::IfAddr::V4(v4) => v4.broadcast.map(IpAddr::V4),
            if_addrs::IfAddr::V6(_) => None,
        })
        .collect();
    out.sort();
    out.dedup();
    if out.is_empty() {
        out.push(IpAddr::V4(Ipv4Addr::BROADCAST));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn sample(node_id: u64, ts: u64) -> Announcement {
        Announcement {
            store_id: "orders".into(),
            node_id,
            peer: "10.0.0.2:7601".parse().unwrap(),
            client: Some("0.0.0.0:7600".parse().unwrap()),
            cluster_size: 3,
            state: NodeState::Fresh {
                proposal: vec![2, 5, 9],
            },
            relays: vec!["10.0.0.3:45892".parse().unwrap()],
            timestamp_ms: ts,
            nonce: 77,
        }
    }

    #[test]
    fn an_announcement_round_trips_and_only_with_its_key() {
        let key = derive_key(SECRET);
        let a = sample(5, 1_000);
        let packet = encode(&a, &key);
        assert_eq!(decode(&packet, &key), Ok(a.clone()));
        let other = derive_key(b"another secret of enough length!");
        assert_eq!(decode(&packet, &other), Err(Dropped::Forged));
        // Any flipped bit after the magic breaks the tag.
        for i in MAGIC.len()..packet.len() {
            let mut p = packet.clone();
            p[i] ^= 0x10;
            assert_eq!(decode(&p, &key), Err(Dropped::Forged), "byte {i}");
        }
        let member = Announcement {
            state: NodeState::Member {
                voters: vec![1, 2, 3],
            },
            client: None,
            ..a
        };
        assert_eq!(decode(&encode(&member, &key), &key), Ok(member));
    }

    #[test]
    fn the_gate_drops_other_stores_stale_replayed_and_own_packets() {
        let key = derive_key(SECRET);
        let now = 10_000_000;
        let mut gate = Gate::new(SECRET, "orders", 1);
        let p1 = encode(&sample(5, now), &key);
        assert!(gate.admit(&p1, now).is_ok());
        assert_eq!(gate.admit(&p1, now + 5), Err(Dropped::Replayed));
        let older = encode(&sample(5, now - 1), &key);
        assert_eq!(gate.admit(&older, now + 5), Err(Dropped::Replayed));
        let newer = encode(&sample(5, now + 1), &key);
        assert!(gate.admit(&newer, now + 5).is_ok());
        let age = AGE_MAX.as_millis() as u64;
        let old = encode(&sample(6, now - age - 1), &key);
        assert_eq!(gate.admit(&old, now), Err(Dropped::Stale));
        let future = encode(&sample(6, now + age + 1), &key);
        assert_eq!(gate.admit(&future, now), Err(Dropped::Stale));
        let edge = encode(&sample(6, now - age), &key);
        assert!(gate.admit(&edge, now).is_ok());
        let own = encode(&sample(1, now), &key);
        assert_eq!(gate.admit(&own, now), Err(Dropped::Own));
        let mut other = sample(7, now);
        other.store_id = "billing".into();
        assert_eq!(
            gate.admit(&encode(&other, &key), now),
            Err(Dropped::OtherStore)
        );
        assert_eq!(gate.admit(b"QVD1", now), Err(Dropped::Malformed));
        assert_eq!(gate.admit(&[0u8; 80], now), Err(Dropped::Malformed));
    }

    #[test]
    fn a_silent_sender_is_forgotten_once_its_packets_are_stale() {
        let key = derive_key(SECRET);
        let mut gate = Gate::new(SECRET, "orders", 1);
        let now = 10_000_000;
        assert!(gate.admit(&encode(&sample(5, now), &key), now).is_ok());
        let later = now + AGE_MAX.as_millis() as u64 + 1;
        assert!(gate.admit(&encode(&sample(6, later), &key), later).is_ok());
        assert!(!gate.last.contains_key(&5), "5 is remembered past AGE_MAX");
        // What could be replayed of 5's is stale by now.
        assert_eq!(
            gate.admit(&encode(&sample(5, now), &key), later),
            Err(Dropped::Stale)
        );
    }

    #[test]
    fn an_authentic_packet_that_does_not_parse_is_malformed_not_accepted() {
        let key = derive_key(SECRET);
        let mut body = BytesMut::new();
        body.put_slice(MAGIC);
        body.put_slice(b"\x03abc");
        let tag = hmac::sign(&key, &body);
        body.put_slice(tag.as_ref());
        assert_eq!(decode(&body, &key), Err(Dropped::Malformed));
        // Node id 0 is refused even when authentic.
        let zero = encode(&sample(0, 1), &key);
        assert_eq!(decode(&zero, &key), Err(Dropped::Malformed));
    }

    #[test]
    fn unspecified_addresses_become_the_source_address() {
        let a = sample(5, 1);
        let heard = Heard {
            announcement: a,
            from: "10.0.0.9:45892".parse().unwrap(),
            at: Instant::now(),
        };
        assert_eq!(heard.peer(), "10.0.0.2:7601".parse().unwrap());
        assert_eq!(heard.client(), Some("10.0.0.9:7600".parse().unwrap()));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1300)) {
            let key = derive_key(SECRET);
            let _ = decode(&bytes, &key);
        }

        #[test]
        fn authentic_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            // Garbage that passes authentication reaches the parser.
            let key = derive_key(SECRET);
            let mut p = MAGIC.to_vec();
            p.extend_from_slice(&bytes);
            let tag = hmac::sign(&key, &p);
            p.extend_from_slice(tag.as_ref());
            let _ = decode(&p, &key);
        }

        #[test]
        fn announcements_round_trip(
            store in "[a-z0-9-]{0,40}",
            node_id in 1u64..,
            ids in proptest::collection::vec(any::<u64>(), 0..IDS_MAX),
            member in any::<bool>(),
            size in any::<u16>(),
            relays in 0..=RELAYS_MAX,
            ts in any::<u64>(),
            nonce in any::<u64>(),
        ) {
            let key = derive_key(SECRET);
            let a = Announcement {
                store_id: store,
                node_id,
                peer: "[::1]:7601".parse().unwrap(),
                client: None,
                cluster_size: size,
                state: if member { NodeState::Member { voters: ids } } else { NodeState::Fresh { proposal: ids } },
                relays: (0..relays).map(|i| SocketAddr::from(([10, 0, 0, i as u8], 45892))).collect(),
                timestamp_ms: ts,
                nonce,
            };
            prop_assert_eq!(decode(&encode(&a, &key), &key), Ok(a));
        }
    }
}
