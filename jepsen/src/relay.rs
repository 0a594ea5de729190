//! The network as the harness owns it: one UDP relay in front of every node.
//!
//! Every node reaches node `b` only through `b`'s relay: the member lists (and the peer
//! address a `cluster add` records) name the relay, never the node. The relay forwards each
//! source's datagrams to `b` from a socket of its own (one per source address) and `b`'s
//! answers back to that source. It knows which node a source is by the source's address (a
//! node sends from its peer socket, the one it listens on), so rules are per directed link
//! while the address of a node is one for everybody, as a cluster's membership records it.
//! QUIC runs over it unchanged, so every fault is enforced outside Quiver's code: a datagram
//! is dropped, delayed, duplicated or reordered here, never by a flag inside the server.
//! Traffic from `a` to `b` crosses two relays — `b`'s forward (connections `a` dialed) and
//! `a`'s backward (answers on connections `b` dialed) — so [`Network`] sets both for a
//! directed cut.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::nemesis::Rng;

/// What happens to datagrams in one direction of one link.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rule {
    /// Drop every datagram.
    pub cut: bool,
    /// Fixed delay.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `0..jitter` (reorders datagrams).
    pub jitter: Duration,
    /// Probability a datagram is dropped.
    pub loss: f64,
    /// Probability a datagram is sent twice.
    pub duplicate: f64,
}

/// Counts of one relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RelayCounts {
    /// Datagrams forwarded (both directions).
    pub forwarded: u64,
    /// Datagrams dropped by a cut or by loss.
    pub dropped: u64,
    /// Extra copies sent.
    pub duplicated: u64,
    /// Datagrams held back by a delay.
    pub delayed: u64,
}

/// Which node sends from which address, shared by every relay of a [`Network`].
pub type Sources = Arc<Mutex<HashMap<SocketAddr, u64>>>;

struct State {
    /// Per source node: (its datagrams to the target, the target's answers to it). A source
    /// with no entry, or an address no node is known by, meets clear links.
    rules: HashMap<u64, (Rule, Rule)>,
    counts: RelayCounts,
    /// The relay's own seeded generator (runs are reproducible up to timing).
    rng: Rng,
}

impl State {
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// How many copies to send, and after how long, for a datagram from (`forward`) or to
    /// source node `source`.
    fn fate(&mut self, source: Option<u64>, forward: bool) -> (usize, Duration) {
        let (f, b) = source
            .and_then(|s| self.rules.get(&s).copied())
            .unwrap_or_default();
        let rule = if forward { f } else { b };
        if rule.cut || self.chance(rule.loss) {
            self.counts.dropped += 1;
            return (0, Duration::ZERO);
        }
        let copies = if self.chance(rule.duplicate) {
            self.counts.duplicated += 1;
            2
        } else {
            1
        };
        let jitter = if rule.jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.rng.below(rule.jitter.as_nanos() as u64))
        };
        let delay = rule.delay + jitter;
        if !delay.is_zero() {
            self.counts.delayed += 1;
        }
        self.counts.forwarded += copies as u64;
        (copies, delay)
    }
}

/// One node's relay: listens on [`Relay::addr`], forwards to the node.
pub struct Relay {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Relay {
    /// A relay on a free loopback port forwarding to `target`, telling sources apart by
    /// `sources`.
    pub async fn start(target: SocketAddr, seed: u64, sources: Sources) -> std::io::Result<Relay> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = front.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            rules: HashMap::new(),
            counts: RelayCounts::default(),
            rng: Rng::new(seed),
        }));
        let task = tokio::spawn(run(front, target, state.clone(), sources));
        Ok(Relay { addr, state, task })
    }

    /// Where every other node sends to reach this relay's node.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the rules for source node `source`: `forward` for its datagrams, `backward` for
    /// the answers to it.
    pub fn set(&self, source: u64, forward: Rule, backward: Rule) {
        lock(&self.state).rules.insert(source, (forward, backward));
    }

    /// The rules for source node `source` now (forward, backward).
    pub fn rules(&self, source: u64) -> (Rule, Rule) {
        lock(&self.state)
            .rules
            .get(&source)
            .copied()
            .unwrap_or_default()
    }

    /// Every source's links clear.
    pub fn clear(&self) {
        lock(&self.state).rules.clear();
    }

    /// Its counts.
    pub fn counts(&self) -> RelayCounts {
        lock(&self.state).counts
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn send_later(
    socket: Arc<UdpSocket>,
    to: SocketAddr,
    bytes: Vec<u8>,
    copies: usize,
    delay: Duration,
) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    for _ in 0..copies {
        let _ = socket.send_to(&bytes, to).await;
    }
}

/// Sends `copies` of `bytes` to `to` now, or after `delay` without holding up the caller
/// (so later datagrams may overtake: reordering).
async fn deliver(
    socket: &Arc<UdpSocket>,
    to: SocketAddr,
    bytes: Vec<u8>,
    copies: usize,
    delay: Duration,
) {
    if delay.is_zero() {
        for _ in 0..copies {
            let _ = socket.send_to(&bytes, to).await;
        }
    } else {
        tokio::spawn(send_later(socket.clone(), to, bytes, copies, delay));
    }
}

async fn run(
    front: Arc<UdpSocket>,
    target: SocketAddr,
    state: Arc<Mutex<State>>,
    sources: Sources,
) {
    // One upstream socket per source, so that the target tells the relayed peers apart and
    // its answers find their way back; with it, which node the source is (looked up once: a
    // node is registered before it starts, so before its first datagram).
    let mut upstreams: HashMap<SocketAddr, (Arc<UdpSocket>, Option<u64>)> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, from)) = front.recv_from(&mut buf).await else {
            continue;
        };
        let (up, source) = match upstreams.get(&from) {
            Some((up, source)) => (up.clone(), *source),
            None => {
                let Ok(up) = UdpSocket::bind("127.0.0.1:0").await else {
                    continue;
                };
                let up = Arc::new(up);
                let source = lock(&sources).get(&from).copied();
                upstreams.insert(from, (up.clone(), source));
                tokio::spawn(back(up.clone(), front.clone(), from, source, state.clone()));
                (up, source)
            }
        };
        let (copies, delay) = lock(&state).fate(source, true);
        if copies == 0 {
            continue;
        }
        deliver(&up, target, buf[..n].to_vec(), copies, delay).await;
    }
}

/// Answers from the target on `up`, back to `from` (node `source`) through the front socket.
async fn back(
    up: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    from: SocketAddr,
    source: Option<u64>,
    state: Arc<Mutex<State>>,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, _)) = up.recv_from(&mut buf).await else {
            continue;
        };
        let (copies, delay) = lock(&state).fate(source, false);
        if copies == 0 {
            continue;
        }
        deliver(&front, from, buf[..n].to_vec(), copies, delay).await;
    }
}

/// A relay in front of every node, and the rules of every directed link between them.
pub struct Network {
    relays: BTreeMap<u64, Relay>,
    sources: Sources,
    seed: u64,
}

impl Network {
    /// Relays for `nodes` (id, peer address: where the node listens and sends from).
    pub async fn start(nodes: &[(u64, SocketAddr)], seed: u64) -> std::io::Result<Network> {
        let mut net = Network {
            relays: BTreeMap::new(),
            sources: Sources::default(),
            seed,
        };
        for (id, peer) in nodes {
            net.add(*id, *peer).await?;
        }
        Ok(net)
    }

    /// A relay for one more node (a node added to the cluster later).
    pub async fn add(&mut self, id: u64, peer: SocketAddr) -> std::io::Result<()> {
        lock(&self.sources).insert(peer, id);
        let seed = self.seed ^ id.wrapping_mul(0x100_0000_01B3);
        let relay = Relay::start(peer, seed, self.sources.clone()).await?;
        self.relays.insert(id, relay);
        Ok(())
    }

    /// The address every other node is told for node `to`.
    pub fn addr(&self, to: u64) -> SocketAddr {
        self.relays[&to].addr()
    }

    /// Sets what datagrams from `from` to `to` meet (on both relays they cross).
    pub fn set_direction(&self, from: u64, to: u64, rule: Rule) {
        if let Some(dialed) = self.relays.get(&to) {
            let (_, back) = dialed.rules(from);
            dialed.set(from, rule, back);
        }
        if let Some(answered) = self.relays.get(&from) {
            let (fwd, _) = answered.rules(to);
            answered.set(to, fwd, rule);
        }
    }

    /// Cuts datagrams from `from` to `to` (one way).
    pub fn cut(&self, from: u64, to: u64) {
        self.set_direction(
            from,
            to,
            Rule {
                cut: true,
                ..Rule::default()
            },
        );
    }

    /// Every link clear.
    pub fn heal(&self) {
        for r in self.relays.values() {
            r.clear();
        }
    }

    /// Every directed link between the nodes gets `rule` (delays, loss, duplication for all).
    pub fn degrade_all(&self, rule: Rule) {
        for from in self.relays.keys() {
            for to in self.relays.keys() {
                if from != to {
                    self.set_direction(*from, *to, rule);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo() -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let (n, from) = s.recv_from(&mut buf).await.unwrap();
                s.send_to(&buf[..n], from).await.unwrap();
            }
        });
        (addr, task)
    }

    /// A relay (seeded `seed`) in front of an echo server, and a client socket registered as
    /// node 9.
    async fn relayed_echo(seed: u64) -> (Relay, UdpSocket, tokio::task::JoinHandle<()>) {
        let (target, task) = echo().await;
        let sources = Sources::default();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sources
            .lock()
            .unwrap()
            .insert(client.local_addr().unwrap(), 9);
        let relay = Relay::start(target, seed, sources).await.unwrap();
        (relay, client, task)
    }

    async fn round_trip(client: &UdpSocket, relay: SocketAddr, msg: &[u8]) -> Option<Vec<u8>> {
        client.send_to(msg, relay).await.unwrap();
        let mut buf = [0u8; 1500];
        match tokio::time::timeout(Duration::from_millis(300), client.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_relay_forwards_both_ways_and_cuts_each_direction() {
        let (relay, client, _task) = relayed_echo(1).await;
        assert_eq!(
            round_trip(&client, relay.addr(), b"hi").await.as_deref(),
            Some(&b"hi"[..])
        );
        let cut = Rule {
            cut: true,
            ..Rule::default()
        };
        relay.set(9, cut, Rule::default());
        assert_eq!(round_trip(&client, relay.addr(), b"a").await, None);
        relay.set(9, Rule::default(), cut);
        assert_eq!(round_trip(&client, relay.addr(), b"b").await, None);
        // The rules are the source's: a sender no node is known by meets a clear link.
        let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert_eq!(
            round_trip(&stranger, relay.addr(), b"s").await.as_deref(),
            Some(&b"s"[..])
        );
        relay.set(9, Rule::default(), Rule::default());
        assert_eq!(
            round_trip(&client, relay.addr(), b"c").await.as_deref(),
            Some(&b"c"[..])
        );
        let c = relay.counts();
        assert_eq!(c.dropped, 2);
        assert!(c.forwarded >= 7, "{c:?}");
    }

    #[tokio::test]
    async fn duplication_and_delay_are_applied() {
        let (relay, client, _task) = relayed_echo(7).await;
        relay.set(
            9,
            Rule {
                duplicate: 1.0,
                ..Rule::default()
            },
            Rule::default(),
        );
        assert_eq!(
            round_trip(&client, relay.addr(), b"x").await.as_deref(),
            Some(&b"x"[..])
        );
        // The duplicate's echo arrives too.
        let mut buf = [0u8; 16];
        let (n, _) = tokio::time::timeout(Duration::from_millis(300), client.recv_from(&mut buf))
            .await
            .expect("a second copy")
            .unwrap();
        assert_eq!(&buf[..n], b"x");
        assert_eq!(relay.counts().duplicated, 1);
        relay.set(
            9,
            Rule {
                delay: Duration::from_millis(150),
                ..Rule::default()
            },
            Rule::default(),
        );
        while tokio::time::timeout(Duration::from_millis(50), client.recv_from(&mut buf))
            .await
            .is_ok()
        {}
        let start = std::time::Instant::now();
        client.send_to(b"z", relay.addr()).await.unwrap();
        client.recv_from(&mut buf).await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(150));
    }
}
