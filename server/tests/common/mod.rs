//! What the server's integration tests share: an in-process server on loopback ports chosen
//! by the OS, stopped cleanly, and a client that trusts its generated CA.

#![allow(dead_code)]

pub mod cluster;

use std::net::SocketAddr;
use std::path::Path;

use quiver_client::{Client, ClientConfig};
use quiver_server::{Server, ServerConfig};

/// A server running in this process.
pub struct Running {
    /// Its QUIC address.
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// A configuration for a store in `dir` on free loopback ports (QUIC and HTTP).
pub fn config(dir: &Path) -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        http: Some("127.0.0.1:0".parse().unwrap()),
        ..ServerConfig::new(dir)
    }
}

/// Starts a server with `config` on the current tokio runtime. A restart on the address of
/// a server that just stopped retries for a while: its socket closes asynchronously.
pub fn start(config: ServerConfig) -> Running {
    let started = std::time::Instant::now();
    let server = loop {
        match Server::start(&config) {
            Ok(s) => break s,
            Err(e) if started.elapsed() < std::time::Duration::from_secs(5) => {
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("the server did not start: {e:#}"),
        }
    };
    let addr = server.local_addr();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    Running { addr, stop, task }
}

impl Running {
    /// Stops it the way SIGTERM does, and checks it stopped cleanly.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// A client of the server whose data directory is `dir`.
pub async fn client(dir: &Path, addr: SocketAddr) -> Client {
    Client::connect(ClientConfig::local(dir).server(addr))
        .await
        .unwrap()
}
