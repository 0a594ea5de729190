//! Memory held for readers that never read: a real `quiver serve` child process, one append
//! of 200,000 events (one log record), then many reads of that stream whose clients never
//! take a byte. The server must hold at most its budget for them (its own accounting, from
//! `/metrics`) and its anonymous memory must not grow with the number of stalled readers
//! (`RssAnon` from `/proc`, with a coarse bound); past the budget the reader that has waited
//! longest is told and dropped, and a reader that does read is served in full meanwhile.
//!
//! Before the fix each stalled reader pinned the whole decoded record (about 30 MiB here).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quiver_client::{Client, ClientConfig, EventData, ExpectedVersion, ReadStreamOptions};
use quiver_net::message::{ReadFrom, Request, Response};
use quiver_net::quic::{read_frame, ReadFrameError};
use quiver_net::{ErrorCode, Text};

const QUIVER: &str = env!("CARGO_BIN_EXE_quiver");
const EVENTS: u64 = 200_000;
/// The budget the node runs with.
const BUDGET_MIB: u64 = 4;
/// Stalled readers: more than fit in the budget (each holds a frame of about 90 KB plus its
/// look-ahead), on two connections.
const READERS: usize = 48;
/// Anonymous memory the node may gain while the readers stall, beyond its budget: its
/// per-stream QUIC state and allocator slack. Before the fix the readers took ~30 MiB each.
const RSS_SLACK_MIB: u64 = 64;

/// A `quiver serve` child; killed when dropped.
struct Node {
    child: Child,
    addr: SocketAddr,
    http: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn free_tcp() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn start() -> (Node, Client) {
    for _attempt in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let (addr, http) = (free_udp(), free_tcp());
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(QUIVER)
            .args(["serve", "--listen", &addr.to_string()])
            .args(["--http", &http.to_string(), "--data-dir"])
            .arg(dir.path().join("data"))
            // The environment, not a flag: a node without the setting still starts.
            .env("QUIVER_SLOW_CLIENT_BUDGET_MIB", BUDGET_MIB.to_string())
            .env_remove("QUIVER_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting quiver serve");
        let mut node = Node {
            child,
            addr,
            http,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline && node.child.try_wait().unwrap().is_none() {
            let config = ClientConfig::local(node.dir.path().join("data")).server(addr);
            if let Ok(c) = Client::connect(config).await {
                return (node, c);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!("no node started after 3 attempts");
}

async fn start_client(node: &Node) -> Client {
    let config = ClientConfig::local(node.dir.path().join("data")).server(node.addr);
    Client::connect(config).await.unwrap()
}

/// The node's anonymous resident memory, in bytes.
fn rss_anon(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// One metric's value from the node's `/metrics`, if it has it.
async fn metric(http: SocketAddr, name: &str) -> Option<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(http).await.ok()?;
    let req = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    s.write_all(req.as_bytes()).await.ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.ok()?;
    raw.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// A connection made by hand, before any `Hello`.
async fn bare_connection(node: &Node) -> quinn::Connection {
    let ca_file = node.dir.path().join("data/tls/ca.pem");
    let ca = quiver_server::tls::read_certs(&ca_file).unwrap();
    let endpoint = quiver_net::quic::client_endpoint(&ca).unwrap();
    endpoint
        .connect(node.addr, "localhost")
        .unwrap()
        .await
        .unwrap()
}

/// A connection that has said Hello, made by hand so that nothing reads its streams.
async fn raw_connection(node: &Node) -> quinn::Connection {
    let conn = bare_connection(node).await;
    let hello = Request::Hello {
        version: quiver_net::PROTOCOL_VERSION,
        client: Text::from("stalled"),
        token: Default::default(),
    };
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut out = BytesMut::new();
    hello.encode(&mut out);
    send.write_all(&out).await.unwrap();
    send.finish().unwrap();
    recv.read_to_end(1 << 16).await.unwrap();
    conn
}

/// How a stalled reader's response ended once it was finally read.
enum Ending {
    /// An `Error` frame `Unavailable` saying it was dropped as the slowest reader.
    Told,
    /// A stream reset with the slow-reader code.
    Reset,
    /// Still being served: more than a window and a frame arrived with no end.
    Served,
}

async fn ending(recv: &mut quinn::RecvStream) -> Ending {
    let mut buf = BytesMut::new();
    let mut received = 0usize;
    loop {
        match read_frame(recv, &mut buf, 64 << 20).await {
            Ok(Some(frame)) => {
                received += frame.payload.len();
                match Response::decode(&frame).unwrap() {
                    Response::Events { .. } if received > 4 << 20 => return Ending::Served,
                    Response::Events { .. } => {}
                    Response::Error { code, message, .. } => {
                        assert_eq!(code, ErrorCode::Unavailable, "{}", message.as_str());
                        assert!(message.as_str().contains("slowest reader"), "{message:?}");
                        return Ending::Told;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            Err(ReadFrameError::Read(quinn::ReadError::Reset(code))) => {
                assert_eq!(code.into_inner(), 1, "the slow-reader reset code");
                return Ending::Reset;
            }
            other => panic!("a stalled read ended with {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_stay_within_the_budget() {
    let (node, client) = start().await;
    let pid = node.child.id();
    let events: Vec<EventData> = (0..EVENTS)
        .map(|i| EventData::binary("E", format!("{i:032}").into_bytes()))
        .collect();
    let written = client
        .append("big", ExpectedVersion::NoStream, events)
        .await;
    assert_eq!(written.unwrap().next_expected_version, EVENTS - 1);
    let before = rss_anon(pid);

    // First, a read through the Rust client that takes one event, then stalls: it will be
    // the longest waiting, so the first dropped.
    let rust_client = start_client(&node).await;
    let mut stalled_rust = rust_client
        .read_stream("big", ReadStreamOptions::default())
        .await
        .unwrap();
    assert_eq!(stalled_rust.next().await.unwrap().unwrap().version, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(node.http, "quiver_slow_client_holders").await != Some(1) {
        assert!(
            Instant::now() < deadline,
            "the Rust client's read never stalled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Then readers that ask for the whole stream and never read a byte of the answer.
    let conns = [raw_connection(&node).await, raw_connection(&node).await];
    let mut stalled = Vec::new();
    for i in 0..READERS {
        let (mut send, recv) = conns[i % 2].open_bi().await.unwrap();
        let mut out = BytesMut::new();
        Request::ReadStream {
            stream: Text::from("big"),
            from: ReadFrom::Start,
            backward: false,
            max_count: u64::MAX,
        }
        .encode(&mut out);
        send.write_all(&out).await.unwrap();
        send.finish().unwrap();
        stalled.push((send, recv));
    }

    // Wait (bounded) until every reader either holds a frame its client does not take or
    // was dropped; all the while the node's memory stays within the coarse bound.
    let bound = before + ((BUDGET_MIB + RSS_SLACK_MIB) << 20);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (held, dropped) = loop {
        let rss = rss_anon(pid);
        assert!(
            rss <= bound,
            "the node's anonymous memory grew from {} MiB to {} MiB with {READERS} stalled \
             readers (bound {} MiB)",
            before >> 20,
            rss >> 20,
            bound >> 20
        );
        let holders = metric(node.http, "quiver_slow_client_holders").await;
        let dropped = metric(node.http, "quiver_slow_readers_dropped_total").await;
        if let (Some(h), Some(d)) = (holders, dropped) {
            if h + d == READERS as u64 + 1 {
                let held = metric(node.http, "quiver_slow_client_held_bytes").await;
                break (held.unwrap(), d);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the stalled readers never settled: holders {holders:?}, dropped {dropped:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let budget = BUDGET_MIB << 20;
    assert_eq!(
        metric(node.http, "quiver_slow_client_budget_bytes").await,
        Some(budget)
    );
    assert!(held <= budget, "{held} bytes held, budget {budget}");
    assert!(
        dropped >= 1,
        "more readers than the budget holds, yet none was dropped"
    );
    let after = rss_anon(pid);
    eprintln!(
        "RssAnon {} MiB before, {} MiB with {READERS} stalled readers; {held} bytes held, \
         {dropped} dropped",
        before >> 20,
        after >> 20
    );

    // A reader that reads gets everything meanwhile (and its frames push stalled ones out).
    let all = client
        .read_stream("big", ReadStreamOptions::default())
        .await
        .unwrap();
    let all = all.collect().await.unwrap();
    assert_eq!(all.len() as u64, EVENTS);
    assert!(all.iter().enumerate().all(|(i, e)| e.version == i as u64));
    let held = metric(node.http, "quiver_slow_client_held_bytes")
        .await
        .unwrap();
    assert!(
        held <= budget,
        "{held} bytes held after a full read, budget {budget}"
    );
    assert!(
        rss_anon(pid) <= bound,
        "memory grew past the bound during a full read"
    );

    // Every stalled reader, read at last, was either told why it was dropped or is still
    // being served; at least one was told.
    let mut told = 0;
    for (_send, recv) in &mut stalled {
        match ending(recv).await {
            Ending::Told | Ending::Reset => told += 1,
            Ending::Served => {}
        }
    }
    assert!(told >= 1, "no stalled reader heard why it was dropped");
    // The Rust client's stalled read, the first dropped, ends with a clear Unavailable
    // whichever way it was told.
    let ended = loop {
        match stalled_rust.next().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    match ended {
        Err(quiver_client::Error::Server { code, message }) => {
            assert_eq!(code, ErrorCode::Unavailable, "{message}");
            assert!(message.contains("slowest reader"), "{message}");
        }
        other => panic!("a dropped read ended with {other:?}"),
    }
    rust_client.close().await;
    client.close().await;
}

/// Waits (bounded) until `n` holders are counted, each holding or dropped; returns the bytes
/// held and the holders dropped.
async fn settled(node: &Node, n: u64) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let holders = metric(node.http, "quiver_slow_client_holders").await;
        let dropped = metric(node.http, "quiver_slow_readers_dropped_total").await;
        if let (Some(h), Some(d)) = (holders, dropped) {
            if h + d == n {
                let held = metric(node.http, "quiver_slow_client_held_bytes").await;
                return (held.unwrap(), d);
            }
        }
        assert!(
            Instant::now() < deadline,
            "never settled: holders {holders:?}, dropped {dropped:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Connections whose `Hello` announces a large frame and stalls are held against the budget
/// too: past it the oldest is answered `Unavailable` and closed (code 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_hellos_stay_within_the_budget() {
    const CONNECTIONS: usize = 10;
    let (node, client) = start().await;
    let mut stalled = Vec::new();
    for _ in 0..CONNECTIONS {
        let conn = bare_connection(&node).await;
        let (mut send, recv) = conn.open_bi().await.unwrap();
        let mut out = BytesMut::new();
        quiver_net::frame::put_header(&mut out, 0x0100, 0, 1 << 20);
        out.extend_from_slice(&[0u8; 100]);
        send.write_all(&out).await.unwrap();
        stalled.push((conn, send, recv));
    }
    let (held, dropped) = settled(&node, CONNECTIONS as u64).await;
    let budget = BUDGET_MIB << 20;
    assert!(held <= budget, "{held} bytes held, budget {budget}");
    assert!(
        dropped >= 1,
        "more announced bytes than the budget, yet none was dropped"
    );
    let (conn, _send, recv) = &mut stalled[0];
    let answer = recv.read_to_end(1 << 16).await.unwrap();
    let mut buf = BytesMut::from(&answer[..]);
    let frame = quiver_net::frame::parse(&mut buf, 1 << 16)
        .unwrap()
        .unwrap();
    match Response::decode(&frame).unwrap() {
        Response::Error { code, message, .. } => {
            assert_eq!(code, ErrorCode::Unavailable, "{}", message.as_str());
            assert!(message.as_str().contains("Hello dropped"), "{message:?}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let closed = tokio::time::timeout(Duration::from_secs(10), conn.closed()).await;
    assert!(closed.is_ok(), "the connection is closed after the answer");
    client.status().await.unwrap();
    client.close().await;
}

/// Requests that announce a large frame and then trickle or stall are held against the same
/// budget: past it the one that has been arriving longest is answered `Unavailable` and its
/// stream stopped, and the connection goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_requests_stay_within_the_budget() {
    const REQUESTS: usize = 40;
    const ANNOUNCED: usize = 1 << 20;
    let (node, client) = start().await;
    let conn = raw_connection(&node).await;
    let mut stalled = Vec::new();
    for _ in 0..REQUESTS {
        let (mut send, recv) = conn.open_bi().await.unwrap();
        let mut out = BytesMut::new();
        quiver_net::frame::put_header(&mut out, 0x0101, 0, ANNOUNCED);
        out.extend_from_slice(&[0u8; 1000]);
        send.write_all(&out).await.unwrap();
        stalled.push((send, recv));
    }
    let (held, dropped) = settled(&node, REQUESTS as u64).await;
    let budget = BUDGET_MIB << 20;
    assert!(held <= budget, "{held} bytes held, budget {budget}");
    assert!(
        dropped >= 1,
        "more announced bytes than the budget, yet none was dropped"
    );
    // The first request (the longest arriving) was dropped and told so.
    let (_send, recv) = &mut stalled[0];
    let answer = recv.read_to_end(1 << 16).await.unwrap();
    let mut buf = BytesMut::from(&answer[..]);
    let frame = quiver_net::frame::parse(&mut buf, 1 << 16)
        .unwrap()
        .unwrap();
    match Response::decode(&frame).unwrap() {
        Response::Error { code, message, .. } => {
            assert_eq!(code, ErrorCode::Unavailable, "{}", message.as_str());
            assert!(message.as_str().contains("request dropped"), "{message:?}");
        }
        other => panic!("unexpected {other:?}"),
    }
    // The connection, and the server, go on serving.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut out = BytesMut::new();
    Request::Status.encode(&mut out);
    send.write_all(&out).await.unwrap();
    send.finish().unwrap();
    let answer = recv.read_to_end(1 << 16).await.unwrap();
    let mut buf = BytesMut::from(&answer[..]);
    let frame = quiver_net::frame::parse(&mut buf, 1 << 16)
        .unwrap()
        .unwrap();
    assert!(matches!(
        Response::decode(&frame).unwrap(),
        Response::Status { .. }
    ));
    client.status().await.unwrap();
    client.close().await;
}
