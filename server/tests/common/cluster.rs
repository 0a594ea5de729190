//! A cluster of real `quiver serve --db-type cluster` processes on loopback, for the
//! cluster tests: each node with its own data directory and free ports, one client
//! certificate for all (so a client trusts one CA), watched through its HTTP `/status`.
//! Every process is killed when its guard drops, so a failing test leaves nothing running.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use quiver_server::cluster::{status_cli, ClusterStatus};

pub const QUIVER: &str = env!("CARGO_BIN_EXE_quiver");
pub const SECRET: &str = "a cluster secret for the tests, 40 bytes";
/// Formation: processes start, peers dial, a pre-vote and a vote (election timeouts 1–2 s).
pub const FORM_LIMIT: Duration = Duration::from_secs(20);
/// A new leader after the old one is killed: the failover bound the tests hold a node to.
pub const FAILOVER_LIMIT: Duration = Duration::from_secs(10);

/// A runtime for a test's clients.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A port the kernel just had free, never one this process was given before: a port is
/// free again once its probe socket closes, and the kernel may hand it out twice in a row
/// (two nodes of one cluster were once given the same peer port: "listed twice").
fn unused_port(probe: impl Fn() -> u16) -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = probe();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

pub fn free_udp_port() -> u16 {
    unused_port(|| {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    })
}

pub fn free_tcp_port() -> u16 {
    unused_port(|| {
        let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    })
}

/// One node's settings and its process, killed (SIGKILL) when dropped.
pub struct Node {
    pub id: u64,
    pub dir: PathBuf,
    pub peer: SocketAddr,
    pub http: SocketAddr,
    /// The client address (QUIC), the same across restarts.
    pub client: SocketAddr,
    /// The client certificate and key every node serves (one CA for the cluster).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// More arguments for `quiver serve`.
    pub extra: Vec<String>,
    pub child: Option<Child>,
}

impl Node {
    pub fn new(id: u64, root: &Path) -> Node {
        Node {
            id,
            dir: root.join(format!("node{id}")),
            peer: format!("127.0.0.1:{}", free_udp_port()).parse().unwrap(),
            http: format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap(),
            client: format!("127.0.0.1:{}", free_udp_port()).parse().unwrap(),
            tls: None,
            extra: Vec::new(),
            child: None,
        }
    }

    /// Starts `quiver serve --db-type cluster` for this node; `node_id` false leaves the id
    /// to the data directory.
    pub fn start(&mut self, members: &str, secret: &str, node_id: bool) {
        assert!(self.child.is_none(), "node {} runs already", self.id);
        std::fs::create_dir_all(&self.dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .unwrap();
        let mut cmd = Command::new(QUIVER);
        cmd.args(["serve", "--db-type", "cluster"]);
        // No member list: the node forms or finds its cluster by discovery (`extra`).
        if !members.is_empty() {
            cmd.args(["--initial-members", members]);
        }
        cmd.args(["--peer-listen", &self.peer.to_string()])
            .args(["--http", &self.http.to_string()])
            .args(["--listen", &self.client.to_string()])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .env("QUIVER_CLUSTER_SECRET", secret)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for var in [
            "QUIVER_CONFIG",
            "QUIVER_NODE_ID",
            "QUIVER_CLUSTER_SECRET_FILE",
            "QUIVER_PEER_LISTEN",
            "QUIVER_INITIAL_MEMBERS",
            "QUIVER_DB_TYPE",
            "QUIVER_CLUSTER_SIZE",
            "QUIVER_SEEDS",
            "QUIVER_DISCOVERY_PORT",
            "QUIVER_NO_BROADCAST",
            "QUIVER_AUTO_JOIN",
            "QUIVER_INSECURE",
            "QUIVER_TOKEN",
        ] {
            cmd.env_remove(var);
        }
        if node_id {
            cmd.args(["--node-id", &self.id.to_string()]);
        }
        if let Some((cert, key)) = &self.tls {
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        cmd.args(&self.extra);
        self.child = Some(cmd.spawn().expect("starting quiver serve"));
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn status(&self) -> Option<ClusterStatus> {
        status_cli::fetch(self.http, Duration::from_secs(1)).ok()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Nodes 1..=n with fresh ports in a temporary directory (dropped after the processes).
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub members: String,
    root: tempfile::TempDir,
}

impl Cluster {
    pub fn new(n: u64) -> Cluster {
        let root = tempfile::tempdir().unwrap();
        // One certificate for every node's client port, signed by one CA (`shared/tls/`).
        let shared = root.path().join("shared");
        quiver_server::tls::load_or_generate(
            &shared,
            None,
            None,
            quiver_server::tls::CaKey::Random,
        )
        .unwrap();
        let tls = quiver_server::tls::tls_dir(&shared);
        let mut nodes: Vec<Node> = (1..=n).map(|id| Node::new(id, root.path())).collect();
        for node in &mut nodes {
            node.tls = Some((tls.join("server.pem"), tls.join("server.key")));
        }
        let members = nodes
            .iter()
            .map(|n| format!("{}={}/{}", n.id, n.peer, n.client))
            .collect::<Vec<_>>()
            .join(",");
        Cluster {
            nodes,
            members,
            root,
        }
    }

    /// The temporary directory holding every node's.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The CA every node's client certificate chains to.
    pub fn ca(&self) -> PathBuf {
        quiver_server::tls::tls_dir(&self.root.path().join("shared"))
            .join(quiver_server::tls::CA_FILE)
    }

    /// A client of the running nodes given in `ids`, in that order.
    pub async fn client(&self, ids: &[u64]) -> quiver_client::Client {
        self.client_with(ids, |c| c).await
    }

    /// [`Cluster::client`] with its configuration changed by `change`.
    pub async fn client_with(
        &self,
        ids: &[u64],
        change: impl FnOnce(quiver_client::ClientConfig) -> quiver_client::ClientConfig,
    ) -> quiver_client::Client {
        let addrs = ids
            .iter()
            .map(|id| self.nodes.iter().find(|n| n.id == *id).unwrap().client);
        let config = quiver_client::ClientConfig::local(self.root.path())
            .ca_file(self.ca())
            .timeout(Duration::from_secs(5))
            .servers(addrs);
        quiver_client::Client::connect(change(config))
            .await
            .unwrap()
    }

    pub fn start_all(&mut self) {
        let members = self.members.clone();
        for n in &mut self.nodes {
            n.start(&members, SECRET, true);
        }
    }

    pub fn node(&mut self, id: u64) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id == id).unwrap()
    }

    /// Every running node's log, for a failure message.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- node {} ---\n{}", n.id, n.log()))
            .collect()
    }

    /// Polls the running nodes until all of them report one leader, the same one in the
    /// same term, and it reports itself leader; returns (leader, term, statuses).
    pub fn wait_for_leader(
        &self,
        limit: Duration,
        not: Option<u64>,
    ) -> (u64, u64, Vec<ClusterStatus>) {
        let deadline = Instant::now() + limit;
        let mut last = Vec::new();
        while Instant::now() < deadline {
            let running: Vec<&Node> = self.nodes.iter().filter(|n| n.child.is_some()).collect();
            let statuses: Vec<ClusterStatus> = running.iter().filter_map(|n| n.status()).collect();
            if statuses.len() == running.len() {
                if let Some(found) = agreed_leader(&statuses).filter(|(l, _)| Some(*l) != not) {
                    return (found.0, found.1, statuses);
                }
            }
            last = statuses;
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "no agreed leader within {limit:?}; last statuses: {last:#?}\n{}",
            self.logs()
        );
    }
}

/// The leader and term every status agrees on, if they all agree and exactly one of them
/// is that leader.
pub fn agreed_leader(statuses: &[ClusterStatus]) -> Option<(u64, u64)> {
    let first = statuses.first()?;
    let (leader, term) = (first.leader?, first.term);
    let agree = statuses
        .iter()
        .all(|s| s.leader == Some(leader) && s.term == term);
    let leaders: Vec<&ClusterStatus> = statuses.iter().filter(|s| s.role == "leader").collect();
    (agree && leaders.len() == 1 && leaders[0].node_id == leader).then_some((leader, term))
}
