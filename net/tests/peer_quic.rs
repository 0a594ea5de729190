//! Peer endpoints on loopback: messages flow both ways between two and three nodes, in order;
//! a node with the wrong secret is refused and delivers nothing; a dead peer does not hold up
//! a live one; a restarted peer is reached again. Every wait is bounded by a timeout; waits
//! for a counter poll it until the deadline instead of sleeping a guessed time.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use quiver_net::peer::{PeerEntry, PeerEntryKind, PeerMessage, PeerMessageKind};
use quiver_net::peer_quic::{PeerConfig, PeerEndpoint, PeerStats, SendError};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::mpsc;
use tokio::time::timeout;

const SECRET: &[u8] = b"the cluster secret, 32 bytes....";
const WAIT: Duration = Duration::from_secs(20);

fn config(id: u64, addr: SocketAddr, secret: &[u8]) -> PeerConfig {
    let ck = rcgen::generate_simple_self_signed(vec!["quiver-peer".to_string()]).unwrap();
    let chain = vec![CertificateDer::from(ck.cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let mut c = PeerConfig::new(id, addr, secret, chain, key);
    c.backoff_min = Duration::from_millis(10);
    c.backoff_max = Duration::from_millis(200);
    c.handshake_timeout = Duration::from_secs(2);
    c
}

fn node(id: u64, secret: &[u8]) -> (PeerEndpoint, mpsc::Receiver<PeerMessage>) {
    PeerEndpoint::bind(config(id, "127.0.0.1:0".parse().unwrap(), secret)).unwrap()
}

/// An append from `from` to `to` whose `read` field carries a sequence number, with one entry
/// of `size` bytes.
fn append(from: u64, to: u64, seq: u64, size: usize) -> PeerMessage {
    PeerMessage {
        from,
        to,
        term: 7,
        kind: PeerMessageKind::Append {
            prev_index: seq,
            prev_term: 6,
            entries: vec![PeerEntry {
                index: seq + 1,
                term: 7,
                kind: PeerEntryKind::Normal,
                data: Bytes::from(vec![seq as u8; size]),
            }],
            commit: seq,
            read: seq,
        },
    }
}

fn seq(m: &PeerMessage) -> u64 {
    match m.kind {
        PeerMessageKind::Append { read, .. } => read,
        _ => panic!("an append: {m:?}"),
    }
}

async fn recv(rx: &mut mpsc::Receiver<PeerMessage>) -> PeerMessage {
    timeout(WAIT, rx.recv())
        .await
        .expect("a message within the time limit")
        .expect("the endpoint is open")
}

/// Polls `ep`'s counters until `done` holds, failing at the deadline.
async fn until(ep: &PeerEndpoint, what: &str, done: impl Fn(&PeerStats) -> bool) -> PeerStats {
    let poll = async {
        loop {
            let s = ep.stats();
            if done(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    match timeout(WAIT, poll).await {
        Ok(s) => s,
        Err(_) => panic!("timed out waiting for {what}: {:?}", ep.stats()),
    }
}

/// Stops `b`'s runtime and every task on it, then drops what is left of `b`: no packet goes
/// out after the runtime stopped, as when a process is killed.
fn crash(rt: tokio::runtime::Runtime, b: PeerEndpoint) {
    std::thread::spawn(move || rt.shutdown_timeout(Duration::from_secs(5)))
        .join()
        .unwrap();
    drop(b);
}

/// Node `id` started again on `addr`, once the old one's socket is closed.
async fn rebind(id: u64, addr: SocketAddr) -> (PeerEndpoint, mpsc::Receiver<PeerMessage>) {
    loop {
        match PeerEndpoint::bind(config(id, addr, SECRET)) {
            Ok(ok) => return ok,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[tokio::test]
async fn two_nodes_exchange_messages_both_ways_in_order() {
    let (a, mut a_rx) = node(1, SECRET);
    let (b, mut b_rx) = node(2, SECRET);
    a.add_peer(2, b.local_addr());
    b.add_peer(1, a.local_addr());
    // Small messages and large ones (whose data goes to QUIC as shared Bytes), interleaved.
    for s in 0..200 {
        let size = if s % 10 == 0 { 200_000 } else { 100 };
        a.send(append(1, 2, s, size)).unwrap();
        b.send(append(2, 1, s, size)).unwrap();
    }
    for s in 0..200 {
        let m = recv(&mut b_rx).await;
        assert_eq!((m.from, m.to, seq(&m)), (1, 2, s));
        assert_eq!(m, append(1, 2, s, if s % 10 == 0 { 200_000 } else { 100 }));
        let m = recv(&mut a_rx).await;
        assert_eq!((m.from, m.to, seq(&m)), (2, 1, s));
    }
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!((sa.messages_sent, sb.messages_received), (200, 200));
    assert_eq!((sb.messages_sent, sa.messages_received), (200, 200));
    assert_eq!(sa.bytes_sent, sb.bytes_received);
    assert_eq!((sa.connects, sb.connections_accepted), (1, 1));
    assert_eq!(sa.messages_dropped + sb.messages_dropped, 0);
    assert_eq!(sa.connections_refused + sb.connections_refused, 0);
    assert!(sa.peers[0].connected);
    assert_eq!(a.send(append(1, 9, 0, 1)), Err(SendError::UnknownPeer(9)));
}

#[tokio::test]
async fn three_nodes_each_reach_the_other_two() {
    let nodes: Vec<_> = (1..=3).map(|id| node(id, SECRET)).collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(|(ep, _)| ep.local_addr()).collect();
    let (eps, mut rxs): (Vec<_>, Vec<_>) = nodes.into_iter().unzip();
    for (i, ep) in eps.iter().enumerate() {
        for (j, addr) in addrs.iter().enumerate() {
            if i != j {
                ep.add_peer(j as u64 + 1, *addr);
            }
        }
    }
    for s in 0..50 {
        for from in 1..=3u64 {
            for to in (1..=3u64).filter(|to| *to != from) {
                eps[from as usize - 1]
                    .send(append(from, to, s, 64))
                    .unwrap();
            }
        }
    }
    for (i, rx) in rxs.iter_mut().enumerate() {
        let me = i as u64 + 1;
        let mut next = std::collections::HashMap::new();
        for _ in 0..100 {
            let m = recv(rx).await;
            assert_eq!(m.to, me);
            // In order per sender.
            let want = next.entry(m.from).or_insert(0u64);
            assert_eq!(seq(&m), *want, "from {}", m.from);
            *want += 1;
        }
        assert_eq!(next.len(), 2);
        assert!(next.values().all(|n| *n == 50));
    }
}

#[tokio::test]
async fn a_node_without_the_secret_is_refused_and_delivers_nothing() {
    let (a, mut a_rx) = node(1, SECRET);
    let (mallory, mut m_rx) = node(3, b"not the cluster secret, but long");
    let (b, _b_rx) = node(2, SECRET);
    mallory.add_peer(1, a.local_addr());
    a.add_peer(3, mallory.local_addr());
    for s in 0..20 {
        let _ = mallory.send(append(3, 1, s, 10));
        let _ = a.send(append(1, 3, s, 10));
    }
    // Refused both ways, more than once (each retry is refused again).
    until(&a, "A refusing Mallory", |s| s.connections_refused >= 2).await;
    until(&mallory, "Mallory refusing A", |s| {
        s.connections_refused >= 2
    })
    .await;
    until(&mallory, "Mallory's dials failing", |s| {
        s.connect_failures >= 2
    })
    .await;
    let (sa, sm) = (a.stats(), mallory.stats());
    assert_eq!((sa.connections_accepted, sm.connects), (0, 0));
    assert_eq!((sa.messages_received, sm.messages_sent), (0, 0));
    assert_eq!((sm.connections_accepted, sa.connects), (0, 0));
    // An honest node still gets through, and its message is the first A ever delivers.
    b.add_peer(1, a.local_addr());
    b.send(append(2, 1, 42, 10)).unwrap();
    let m = recv(&mut a_rx).await;
    assert_eq!((m.from, seq(&m)), (2, 42));
    assert!(a_rx.try_recv().is_err());
    assert!(m_rx.try_recv().is_err());
}

#[tokio::test]
async fn a_dial_that_reaches_another_node_is_refused() {
    // A believes node 5 lives at B's address; B is node 2. Both know the secret.
    let (a, _a_rx) = node(1, SECRET);
    let (b, mut b_rx) = node(2, SECRET);
    a.add_peer(5, b.local_addr());
    for s in 0..5 {
        a.send(append(1, 5, s, 10)).unwrap();
    }
    until(&b, "B refusing a dial meant for node 5", |s| {
        s.connections_refused >= 1
    })
    .await;
    until(&a, "A's dial failing", |s| s.connect_failures >= 1).await;
    assert_eq!(b.stats().connections_accepted, 0);
    assert!(b_rx.try_recv().is_err());
}

#[tokio::test]
async fn a_dead_peer_does_not_block_a_live_one() {
    // A socket that swallows every datagram: the dial to it hangs until the handshake timeout.
    let black_hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut c = config(1, "127.0.0.1:0".parse().unwrap(), SECRET);
    c.queue_messages_max = 8;
    let (a, _a_rx) = PeerEndpoint::bind(c).unwrap();
    let (live, mut live_rx) = node(3, SECRET);
    a.add_peer(2, black_hole.local_addr().unwrap());
    a.add_peer(3, live.local_addr());
    let mut refused = 0;
    for s in 0..500 {
        match a.send(append(1, 2, s, 100)) {
            Ok(()) => {}
            Err(SendError::QueueFull(2)) => refused += 1,
            Err(e) => panic!("unexpected {e}"),
        }
        if s < 100 {
            // Never more than 8 queued for the live peer either: let it drain as we go.
            a.send(append(1, 3, s, 100)).unwrap();
            let m = recv(&mut live_rx).await;
            assert_eq!(seq(&m), s);
        }
    }
    assert!(
        refused >= 500 - 8,
        "the dead peer's queue is bounded: {refused}"
    );
    let s = a.stats();
    let dead = s.peers.iter().find(|p| p.id == 2).unwrap();
    let alive = s.peers.iter().find(|p| p.id == 3).unwrap();
    assert!(!dead.connected && dead.queued_messages <= 8);
    // At least those refused; a failed dial (2 s) also drops what was queued.
    assert!(dead.messages_dropped >= refused);
    assert!(alive.connected);
    assert_eq!(alive.messages_dropped, 0);
    assert_eq!(s.messages_dropped, dead.messages_dropped);
}

#[tokio::test]
async fn a_restarted_peer_is_reached_again() {
    let (a, mut a_rx) = node(1, SECRET);
    let (b, mut b_rx) = node(2, SECRET);
    let b_addr = b.local_addr();
    a.add_peer(2, b_addr);
    b.add_peer(1, a.local_addr());
    a.send(append(1, 2, 0, 10)).unwrap();
    assert_eq!(seq(&recv(&mut b_rx).await), 0);
    b.shutdown().await;
    drop(b_rx);

    // The same node, a new process: same id and address, a new certificate.
    let (b2, mut b2_rx) = timeout(WAIT, rebind(2, b_addr))
        .await
        .expect("the port is free");
    b2.add_peer(1, a.local_addr());
    // A keeps sending, as Raft would (heartbeats), until one gets through.
    let mut s = 1;
    let first = timeout(WAIT, async {
        loop {
            let _ = a.send(append(1, 2, s, 10));
            s += 1;
            if let Ok(Some(m)) = timeout(Duration::from_millis(50), b2_rx.recv()).await {
                return m;
            }
        }
    })
    .await
    .expect("A reaches the restarted B");
    assert_eq!((first.from, first.to), (1, 2));
    // And the other way.
    b2.send(append(2, 1, 99, 10)).unwrap();
    assert_eq!(seq(&recv(&mut a_rx).await), 99);
    let sa = a.stats();
    assert!(sa.connects >= 2, "A dialed again: {sa:?}");
}

#[tokio::test]
async fn a_crashed_and_restarted_peer_is_redialed_before_the_idle_timeout() {
    let (a, mut a_rx) = node(1, SECRET);
    // B runs on a runtime of its own, so that it can die the way kill -9 kills: its runtime
    // stops without a single packet more, and no CONNECTION_CLOSE reaches A.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (b, mut b_rx) = {
        let _in_b = rt.enter();
        node(2, SECRET)
    };
    let b_addr = b.local_addr();
    a.add_peer(2, b_addr);
    a.send(append(1, 2, 0, 10)).unwrap();
    assert_eq!(seq(&recv(&mut b_rx).await), 0);
    crash(rt, b);
    drop(b_rx);

    // A's connection to the dead B looks alive until the idle timeout: writes go into it.
    let (b2, mut b2_rx) = timeout(WAIT, rebind(2, b_addr))
        .await
        .expect("the port is free");
    let restarted = std::time::Instant::now();
    // B2 dials A (Raft answers or campaigns): A learns of the new incarnation.
    b2.add_peer(1, a.local_addr());
    b2.send(append(2, 1, 7, 10)).unwrap();
    assert_eq!(seq(&recv(&mut a_rx).await), 7);
    let mut s = 1;
    let first = timeout(WAIT, async {
        loop {
            let _ = a.send(append(1, 2, s, 10));
            s += 1;
            if let Ok(Some(m)) = timeout(Duration::from_millis(20), b2_rx.recv()).await {
                return m;
            }
        }
    })
    .await
    .expect("A reaches the restarted B");
    assert_eq!(first.from, 1);
    let waited = restarted.elapsed();
    assert!(
        waited < quiver_net::peer_quic::PEER_IDLE_TIMEOUT / 2,
        "A redialed at once, not after the idle timeout: {waited:?}"
    );
}

#[tokio::test]
async fn a_crashed_and_restarted_peer_that_stays_silent_is_redialed_at_once() {
    // As above, but the restarted B sends nothing (a follower waits to hear from its
    // leader): only A's own packets can tell it, through B's stateless reset.
    let (a, _a_rx) = node(1, SECRET);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (b, mut b_rx) = {
        let _in_b = rt.enter();
        node(2, SECRET)
    };
    let b_addr = b.local_addr();
    a.add_peer(2, b_addr);
    a.send(append(1, 2, 0, 10)).unwrap();
    assert_eq!(seq(&recv(&mut b_rx).await), 0);
    crash(rt, b);
    drop(b_rx);

    let (_b2, mut b2_rx) = timeout(WAIT, rebind(2, b_addr))
        .await
        .expect("the port is free");
    let restarted = std::time::Instant::now();
    let mut s = 1;
    let first = timeout(WAIT, async {
        loop {
            let _ = a.send(append(1, 2, s, 10));
            s += 1;
            if let Ok(Some(m)) = timeout(Duration::from_millis(20), b2_rx.recv()).await {
                return m;
            }
        }
    })
    .await
    .expect("A reaches the restarted B");
    assert_eq!(first.from, 1);
    let waited = restarted.elapsed();
    assert!(
        waited < quiver_net::peer_quic::PEER_IDLE_TIMEOUT / 2,
        "A redialed at once, not after the idle timeout: {waited:?}"
    );
}

/// Throughput of one link, for the record (docs/PEERS.md): appends of 100 entries of 256 B,
/// as a leader sends them, from one node to another, as fast as the queue takes them.
/// `cargo test --release -p quiver-net --test peer_quic -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_of_one_link() {
    let (a, _a_rx) = node(1, SECRET);
    let (b, mut b_rx) = node(2, SECRET);
    a.add_peer(2, b.local_addr());
    let batch = |s: u64| PeerMessage {
        from: 1,
        to: 2,
        term: 1,
        kind: PeerMessageKind::Append {
            prev_index: s * 100,
            prev_term: 1,
            entries: (0..100)
                .map(|k| PeerEntry {
                    index: s * 100 + k + 1,
                    term: 1,
                    kind: PeerEntryKind::Normal,
                    data: Bytes::from(vec![7u8; 256]),
                })
                .collect(),
            commit: s * 100,
            read: s,
        },
    };
    // Warm up: the connection is up.
    a.send(batch(0)).unwrap();
    recv(&mut b_rx).await;
    let n = 20_000u64;
    let started = std::time::Instant::now();
    let reader = tokio::spawn(async move {
        let mut got = 0u64;
        while got < n {
            recv(&mut b_rx).await;
            got += 1;
        }
    });
    let mut s = 1;
    while s <= n {
        match a.send(batch(s)) {
            Ok(()) => s += 1,
            Err(SendError::QueueFull(_)) => tokio::task::yield_now().await,
            Err(e) => panic!("{e}"),
        }
    }
    // Dropped messages were refused by send and resent above, so all n arrive.
    timeout(Duration::from_secs(120), reader)
        .await
        .unwrap()
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let st = a.stats();
    println!(
        "{n} appends of 100 x 256 B in {secs:.2} s: {:.0} appends/s, {:.0} entries/s, {:.0} MB/s",
        n as f64 / secs,
        n as f64 * 100.0 / secs,
        st.bytes_sent as f64 / secs / 1e6
    );
}
