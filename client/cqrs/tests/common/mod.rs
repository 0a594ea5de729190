//! What the tests share: a Quiver server in this process, a UDP relay that can lose the
//! server's replies, and the aggregates under test.

#![allow(dead_code)]

pub mod bank;
pub mod orders;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quiver_client::{Client, ClientConfig};
use quiver_server::{Server, ServerConfig};
use tokio::net::UdpSocket;

/// A single-node server running on this test's runtime, its store in a temporary directory.
pub struct Node {
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// Its data directory (the client trusts the CA generated there).
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Starts a server on a free loopback port.
pub fn start() -> Node {
    start_with(|_| {})
}

/// Starts a server on a free loopback port, its configuration changed by `change`.
pub fn start_with(change: impl FnOnce(&mut ServerConfig)) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        http: None,
        segment_mib: 8,
        ..ServerConfig::new(dir.path())
    };
    change(&mut config);
    let server = Server::start(&config).expect("the server starts");
    let addr = server.local_addr();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    Node {
        addr,
        dir,
        stop: Some(stop),
        task: Some(task),
    }
}

impl Node {
    /// A client of it.
    pub async fn client(&self) -> Client {
        self.client_via(self.addr, Duration::from_secs(10)).await
    }

    /// A client that connects to `addr` (a relay in front of it) with request deadline
    /// `timeout`.
    pub async fn client_via(&self, addr: SocketAddr, timeout: Duration) -> Client {
        let config = ClientConfig::local(self.dir.path())
            .server(addr)
            .timeout(timeout);
        Client::connect(config).await.expect("the client connects")
    }

    /// Stops it the way SIGTERM does, and checks it stopped cleanly.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

/// A UDP relay between one client and the server that can drop the server's packets.
pub struct Relay {
    /// Where the client connects.
    pub addr: SocketAddr,
    /// While set, packets from the server are lost.
    pub drop_replies: Arc<AtomicBool>,
}

/// Starts a relay to `server` on this runtime.
pub async fn relay(server: SocketAddr) -> Relay {
    let front = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let back = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    back.connect(server).await.unwrap();
    let addr = front.local_addr().unwrap();
    let drop_replies = Arc::new(AtomicBool::new(false));
    let dropping = drop_replies.clone();
    let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    tokio::spawn(async move {
        let mut up = vec![0u8; 65536];
        let mut down = vec![0u8; 65536];
        loop {
            tokio::select! {
                r = front.recv_from(&mut up) => {
                    let Ok((n, from)) = r else { return };
                    *client.lock().unwrap() = Some(from);
                    let _ = back.send(&up[..n]).await;
                }
                r = back.recv(&mut down) => {
                    let Ok(n) = r else { return };
                    let to = *client.lock().unwrap();
                    if let (Some(to), false) = (to, dropping.load(Ordering::SeqCst)) {
                        let _ = front.send_to(&down[..n], to).await;
                    }
                }
            }
        }
    });
    Relay { addr, drop_replies }
}
