//! The network as the harness owns it: one UDP relay on every directed peer link.
//!
//! Node `a` reaches node `b` only through relay `(a, b)`: `a`'s member list names the relay's
//! address for `b`. The relay forwards `a`'s datagrams to `b` from a socket of its own (one
//! per source address) and `b`'s answers back to `a`. QUIC runs over it unchanged, so every
//! fault is enforced outside Quiver's code: a datagram is dropped, delayed, duplicated or
//! reordered here, never by a flag inside the server. Traffic from `a` to `b` crosses two
//! relays — `(a, b)` forward (connections `a` dialed) and `(b, a)` backward (answers on
//! connections `b` dialed) — so [`Network`] sets both for a directed cut.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::nemesis::Rng;

/// What happens to datagrams in one direction of one relay.
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

impl Rule {}

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

struct State {
    forward: Rule,
    backward: Rule,
    counts: RelayCounts,
    /// The relay's own seeded generator (runs are reproducible up to timing).
    rng: Rng,
}

impl State {
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// How many copies to send, and after how long.
    fn fate(&mut self, forward: bool) -> (usize, Duration) {
        let rule = if forward { self.forward } else { self.backward };
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

/// One directed link's relay: listens on [`Relay::addr`], forwards to `target`.
pub struct Relay {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Relay {
    /// A relay on a free loopback port forwarding to `target`.
    pub async fn start(target: SocketAddr, seed: u64) -> std::io::Result<Relay> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = front.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            forward: Rule::default(),
            backward: Rule::default(),
            counts: RelayCounts::default(),
            rng: Rng::new(seed),
        }));
        let task = tokio::spawn(run(front, target, state.clone()));
        Ok(Relay { addr, state, task })
    }

    /// Where the dialing node sends.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the rules: `forward` for the dialer's datagrams, `backward` for the answers.
    pub fn set(&self, forward: Rule, backward: Rule) {
        let mut s = lock(&self.state);
        s.forward = forward;
        s.backward = backward;
    }

    /// The rules now (forward, backward).
    pub fn rules(&self) -> (Rule, Rule) {
        let s = lock(&self.state);
        (s.forward, s.backward)
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

async fn run(front: Arc<UdpSocket>, target: SocketAddr, state: Arc<Mutex<State>>) {
    // One upstream socket per source, so that the target tells the relayed peers apart and
    // its answers find their way back.
    let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, from)) = front.recv_from(&mut buf).await else {
            continue;
        };
        let up = match upstreams.get(&from) {
            Some(up) => up.clone(),
            None => {
                let Ok(up) = UdpSocket::bind("127.0.0.1:0").await else {
                    continue;
                };
                let up = Arc::new(up);
                upstreams.insert(from, up.clone());
                tokio::spawn(back(up.clone(), front.clone(), from, state.clone()));
                up
            }
        };
        let (copies, delay) = lock(&state).fate(true);
        if copies == 0 {
            continue;
        }
        deliver(&up, target, buf[..n].to_vec(), copies, delay).await;
    }
}

/// Answers from the target on `up`, back to `source` through the front socket.
async fn back(
    up: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    source: SocketAddr,
    state: Arc<Mutex<State>>,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, _)) = up.recv_from(&mut buf).await else {
            continue;
        };
        let (copies, delay) = lock(&state).fate(false);
        if copies == 0 {
            continue;
        }
        deliver(&front, source, buf[..n].to_vec(), copies, delay).await;
    }
}

/// Every directed link between `nodes` peers, each with its relay.
pub struct Network {
    relays: BTreeMap<(u64, u64), Relay>,
}

impl Network {
    /// Relays for every ordered pair of `nodes` (id, peer address).
    pub async fn start(nodes: &[(u64, SocketAddr)], seed: u64) -> std::io::Result<Network> {
        let mut relays = BTreeMap::new();
        for (a, _) in nodes {
            for (b, target) in nodes {
                if a != b {
                    let seed = seed ^ a.wrapping_mul(0x100_0000_01B3) ^ b.rotate_left(17);
                    relays.insert((*a, *b), Relay::start(*target, seed).await?);
                }
            }
        }
        Ok(Network { relays })
    }

    /// The address node `from` is told for node `to`.
    pub fn addr(&self, from: u64, to: u64) -> SocketAddr {
        self.relays[&(from, to)].addr()
    }

    /// Sets what datagrams from `from` to `to` meet (on both relays they cross).
    pub fn set_direction(&self, from: u64, to: u64, rule: Rule) {
        let dialed = &self.relays[&(from, to)];
        let (_, back) = dialed.rules();
        dialed.set(rule, back);
        let answered = &self.relays[&(to, from)];
        let (fwd, _) = answered.rules();
        answered.set(fwd, rule);
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
            r.set(Rule::default(), Rule::default());
        }
    }

    /// Every directed link gets `rule` (delays, loss, duplication for all).
    pub fn degrade_all(&self, rule: Rule) {
        for r in self.relays.values() {
            r.set(rule, rule);
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
        let (target, _task) = echo().await;
        let relay = Relay::start(target, 1).await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert_eq!(
            round_trip(&client, relay.addr(), b"hi").await.as_deref(),
            Some(&b"hi"[..])
        );
        let cut = Rule {
            cut: true,
            ..Rule::default()
        };
        relay.set(cut, Rule::default());
        assert_eq!(round_trip(&client, relay.addr(), b"a").await, None);
        relay.set(Rule::default(), cut);
        assert_eq!(round_trip(&client, relay.addr(), b"b").await, None);
        relay.set(Rule::default(), Rule::default());
        assert_eq!(
            round_trip(&client, relay.addr(), b"c").await.as_deref(),
            Some(&b"c"[..])
        );
        let c = relay.counts();
        assert_eq!(c.dropped, 2);
        assert!(c.forwarded >= 5, "{c:?}");
    }

    #[tokio::test]
    async fn duplication_and_delay_are_applied() {
        let (target, _task) = echo().await;
        let relay = Relay::start(target, 7).await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        relay.set(
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
