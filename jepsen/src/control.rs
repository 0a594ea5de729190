//! Cluster control: real `quiver serve --db-type cluster` processes, each with its own data
//! directory and loopback ports, their peer traffic through the harness's relays
//! ([`crate::relay::Network`]). Kill (SIGKILL), restart, pause (SIGSTOP) and resume
//! (SIGCONT) one node, or kill and restart them all. Every process is killed when the
//! [`Cluster`] is dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use quiver_server::cluster::{status_cli, ClusterStatus};

use crate::relay::Network;

/// The cluster secret of every run (the harness's nodes only ever talk to each other).
pub const SECRET: &str = "quiver-jepsen cluster secret, 40 bytes..";

/// One node: its addresses, directory and process.
pub struct Node {
    /// Its node id (1..=n).
    pub id: u64,
    /// Where it listens for peers (the relays forward here).
    pub peer: SocketAddr,
    /// Where it serves clients.
    pub client: SocketAddr,
    /// Its HTTP operations endpoint.
    pub http: SocketAddr,
    /// Its data directory.
    pub dir: PathBuf,
    members: String,
    child: Option<Child>,
    paused: bool,
}

/// The nodes and the network between them.
pub struct Cluster {
    /// The nodes, by position (node `i + 1` at index `i`).
    pub nodes: Vec<Node>,
    /// The relays on every peer link.
    pub net: Network,
    binary: PathBuf,
    root: PathBuf,
}

fn free_port(udp: bool) -> Result<u16> {
    Ok(if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
    })
}

impl Cluster {
    /// Starts `n` nodes of `binary` under `root`, with relays seeded by `seed`. Must be called
    /// inside a tokio runtime (the relays run on it).
    pub async fn start(binary: &Path, n: u64, root: &Path, seed: u64) -> Result<Cluster> {
        let mut nodes = Vec::new();
        for id in 1..=n {
            let addr = |udp| -> Result<SocketAddr> {
                Ok(SocketAddr::from(([127, 0, 0, 1], free_port(udp)?)))
            };
            nodes.push(Node {
                id,
                peer: addr(true)?,
                client: addr(true)?,
                http: addr(false)?,
                dir: root.join(format!("n{id}")),
                members: String::new(),
                child: None,
                paused: false,
            });
        }
        let peers: Vec<(u64, SocketAddr)> = nodes.iter().map(|n| (n.id, n.peer)).collect();
        let net = Network::start(&peers, seed).await?;
        // Each node is told the relay's address for every other node.
        let listing: Vec<(u64, SocketAddr)> = nodes.iter().map(|n| (n.id, n.client)).collect();
        for node in &mut nodes {
            node.members = listing
                .iter()
                .map(|(id, client)| {
                    let peer = if *id == node.id {
                        node.peer
                    } else {
                        net.addr(node.id, *id)
                    };
                    format!("{id}={peer}/{client}")
                })
                .collect::<Vec<_>>()
                .join(",");
        }
        let mut cluster = Cluster {
            nodes,
            net,
            binary: binary.to_path_buf(),
            root: root.to_path_buf(),
        };
        for id in 1..=n {
            cluster.start_node(id)?;
        }
        Ok(cluster)
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    /// The node with `id`.
    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    /// Node ids.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Every node's client address.
    pub fn clients(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.client).collect()
    }

    /// The CA the clients trust (every node's certificate chains to the one derived from
    /// the cluster secret).
    pub fn ca(&self) -> PathBuf {
        self.nodes[0].dir.join("tls").join("ca.pem")
    }

    /// Starts node `id` (again), with its data directory as it is.
    pub fn start_node(&mut self, id: u64) -> Result<()> {
        let binary = self.binary.clone();
        let root = self.root.clone();
        let node = self.node_mut(id);
        anyhow::ensure!(node.child.is_none(), "node {id} is running");
        std::fs::create_dir_all(&node.dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join(format!("n{id}.log")))?;
        let mut cmd = Command::new(&binary);
        cmd.args(["serve", "--db-type", "cluster"])
            .args(["--node-id", &id.to_string()])
            .args(["--initial-members", &node.members])
            .args(["--peer-listen", &node.peer.to_string()])
            .args(["--listen", &node.client.to_string()])
            .args(["--http", &node.http.to_string()])
            .arg("--data-dir")
            .arg(&node.dir)
            .env("QUIVER_CLUSTER_SECRET", SECRET)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for var in [
            "QUIVER_CONFIG",
            "QUIVER_TOKEN",
            "QUIVER_CLUSTER_SIZE",
            "QUIVER_SEEDS",
            "QUIVER_DB_TYPE",
            "QUIVER_INSECURE",
        ] {
            cmd.env_remove(var);
        }
        node.child = Some(
            cmd.spawn()
                .with_context(|| format!("starting {}", binary.display()))?,
        );
        node.paused = false;
        Ok(())
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill(&mut self, id: u64) {
        let node = self.node_mut(id);
        if let Some(mut c) = node.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        node.paused = false;
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`).
    pub fn pause(&mut self, id: u64, stop: bool) {
        let node = self.node_mut(id);
        if let Some(c) = &node.child {
            let signal = if stop { libc::SIGSTOP } else { libc::SIGCONT };
            // SAFETY: signalling our own child, not yet reaped.
            unsafe { libc::kill(c.id() as libc::pid_t, signal) };
            node.paused = stop;
        }
    }

    /// Whether node `id` runs (paused or not).
    pub fn running(&self, id: u64) -> bool {
        self.node(id).child.is_some()
    }

    /// Node `id`'s cluster status, if it answers within 1 s.
    pub fn status(&self, id: u64) -> Option<ClusterStatus> {
        let node = self.node(id);
        if node.child.is_none() || node.paused {
            return None;
        }
        status_cli::fetch(node.http, Duration::from_secs(1)).ok()
    }

    /// The leader every answering node agrees on, if any.
    pub fn leader(&self) -> Option<u64> {
        let statuses: Vec<ClusterStatus> =
            self.ids().iter().filter_map(|i| self.status(*i)).collect();
        let leader = statuses.iter().find(|s| s.role == "leader")?;
        statuses
            .iter()
            .all(|s| s.leader == Some(leader.node_id) || s.term < leader.term)
            .then_some(leader.node_id)
    }

    /// Waits (up to `limit`) for a leader every answering node agrees on.
    pub async fn wait_for_leader(&self, limit: Duration) -> Option<u64> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(l) = self.leader() {
                return Some(l);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in self.ids() {
            self.pause(id, false);
            self.kill(id);
        }
    }
}
