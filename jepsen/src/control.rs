//! Cluster control: real `quiver serve --db-type cluster` processes, each with its own data
//! directory and loopback ports, their peer traffic through the harness's relays
//! ([`crate::relay::Network`]). Kill (SIGKILL), restart, pause (SIGSTOP) and resume
//! (SIGCONT) one node, or kill and restart them all; start a new node (a new id and
//! directory) for the cluster to add, and retire a removed one; damage a killed node's files
//! as a power cut or a bad disk would ([`Cluster::damage`]). Every process is killed when the
//! [`Cluster`] is dropped.

use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use quiver_client::ClientConfig;
use quiver_server::cluster::{status_cli, ClusterStatus};

use crate::nemesis::Rng;
use crate::relay::Network;

/// The cluster secret of every run (the harness's nodes only ever talk to each other).
pub const SECRET: &str = "quiver-jepsen cluster secret, 40 bytes..";

/// Segment size of the harness's nodes, in MiB. Each node pre-zeroes a whole spare segment
/// beside its active one, so the default 64 MiB cost a run with its replaced nodes gigabytes
/// of disk (a CI machine ran out during the smoke); 8 MiB segments also make every run roll
/// segments over while faults happen, a path the default size would rarely reach.
const SEGMENT_MIB: &str = "8";

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
    /// A member of the cluster (as far as the harness knows): started with it, or added and
    /// not removed since.
    member: bool,
}

/// The nodes and the network between them.
pub struct Cluster {
    /// The nodes, by position (node `i + 1` at index `i`).
    pub nodes: Vec<Node>,
    /// The relays on every peer link.
    pub net: Network,
    /// The members' client addresses, shared with the workload (which reconnects to what is
    /// here now, as a client told of a membership change would).
    pub view: Arc<Mutex<Vec<SocketAddr>>>,
    /// How many members the cluster was started with (membership faults keep to it).
    pub size: u64,
    /// Rotten files a node started on, or refused without naming corruption: each one a
    /// finding (detection failed).
    pub undetected: u64,
    binary: PathBuf,
    root: PathBuf,
}

/// What a storage fault does to a killed node's newest segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// Every write no fsync covered is gone (a power cut before the page cache reached the
    /// disk).
    LoseUnsynced,
    /// Of the unsynced writes, some 4 KiB pages reached the disk and others did not (a torn
    /// multi-page write).
    TearUnsynced,
    /// One bit flipped in data no fsync covered (a garbled write in flight).
    GarbleUnsynced,
    /// One bit flipped in data synced long ago, with later writes vouching for it (bit rot):
    /// the node must refuse to start rather than serve or cut it.
    RotSynced,
}

/// `quiver` processes the harness starts read nothing of the caller's environment.
const CLEARED_ENV: [&str; 6] = [
    "QUIVER_CONFIG",
    "QUIVER_TOKEN",
    "QUIVER_CLUSTER_SIZE",
    "QUIVER_SEEDS",
    "QUIVER_DB_TYPE",
    "QUIVER_INSECURE",
];

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
            nodes.push(Node::new(id, root)?);
        }
        let peers: Vec<(u64, SocketAddr)> = nodes.iter().map(|n| (n.id, n.peer)).collect();
        let net = Network::start(&peers, seed).await?;
        let mut cluster = Cluster {
            nodes,
            net,
            view: Arc::default(),
            size: n,
            undetected: 0,
            binary: binary.to_path_buf(),
            root: root.to_path_buf(),
        };
        for id in 1..=n {
            let members = cluster.listing(id, &(1..=n).collect::<Vec<_>>());
            let node = cluster.node_mut(id);
            node.members = members;
            node.member = true;
        }
        cluster.publish();
        for id in 1..=n {
            cluster.start_node(id)?;
        }
        Ok(cluster)
    }

    /// `--initial-members` for node `me`: `ids` at their relays, `me` at its own address.
    fn listing(&self, me: u64, ids: &[u64]) -> String {
        ids.iter()
            .map(|id| {
                let node = self.node(*id);
                let peer = if *id == me {
                    node.peer
                } else {
                    self.net.addr(*id)
                };
                format!("{id}={peer}/{}", node.client)
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Updates the shared view of the members' client addresses.
    fn publish(&self) {
        let clients = self.clients();
        *self.view.lock().unwrap_or_else(|e| e.into_inner()) = clients;
    }

    /// Starts a node with a new id and a new directory, not yet a member: it knows the
    /// members and waits, without campaigning, until the cluster adds it (then call
    /// [`Cluster::admitted`]). Returns its id.
    pub async fn add_node(&mut self) -> Result<u64> {
        let id = self.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
        let node = Node::new(id, &self.root)?;
        self.net.add(id, node.peer).await?;
        self.nodes.push(node);
        let mut ids = self.ids();
        ids.push(id);
        let members = self.listing(id, &ids);
        self.node_mut(id).members = members;
        self.start_node(id)?;
        Ok(id)
    }

    /// Node `id` was added by the cluster: it counts as a member from now on.
    pub fn admitted(&mut self, id: u64) {
        self.node_mut(id).member = true;
        self.publish();
    }

    /// Node `id` is no longer a member (removed, or never admitted): its process is killed
    /// and its directory kept (its log is evidence); the harness never starts it again.
    pub fn retire(&mut self, id: u64) {
        self.pause(id, false);
        self.kill(id);
        self.node_mut(id).member = false;
        self.publish();
    }

    /// The relay address every node is told for node `id`.
    pub fn peer_addr(&self, id: u64) -> SocketAddr {
        self.net.addr(id)
    }

    /// A client configuration for this cluster's members (the CA, a 3 s timeout); client
    /// files (known hosts and the like) go under `root`.
    pub fn client_config(&self, root: &Path) -> ClientConfig {
        harness_config(root, self.ca(), self.clients(), None)
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("a node the harness started")
    }

    /// The node with `id`.
    pub fn node(&self, id: u64) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .expect("a node the harness started")
    }

    /// The members' ids.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.member)
            .map(|n| n.id)
            .collect()
    }

    /// The members' client addresses.
    pub fn clients(&self) -> Vec<SocketAddr> {
        self.nodes
            .iter()
            .filter(|n| n.member)
            .map(|n| n.client)
            .collect()
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
            .args(["--segment-mib", SEGMENT_MIB])
            .env("QUIVER_CLUSTER_SECRET", SECRET)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for var in CLEARED_ENV {
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

    /// SIGKILL while one of the node's threads is inside a durable write (`fdatasync`,
    /// `fsync`, or `io_uring_enter`, through which the engine's writes and syncs go), as
    /// `/proc/PID/task/*/syscall` shows, polled for up to `limit`; a plain kill after that.
    /// A power cut lands at any moment, but one in the middle of a sync is the one that
    /// leaves unsynced writes behind, and an idle node is rarely caught there by chance.
    /// Returns whether it caught one.
    pub fn kill_mid_write(&mut self, id: u64, limit: Duration) -> bool {
        const SYNCING: [&str; 3] = ["75", "74", "426"];
        let Some(pid) = self.node(id).child.as_ref().map(Child::id) else {
            return false;
        };
        let deadline = std::time::Instant::now() + limit;
        let caught = 'poll: loop {
            if std::time::Instant::now() >= deadline {
                break false;
            }
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                break false;
            };
            for task in tasks.flatten() {
                let Ok(text) = std::fs::read_to_string(task.path().join("syscall")) else {
                    continue;
                };
                if SYNCING.contains(&text.split(' ').next().unwrap_or("")) {
                    break 'poll true;
                }
            }
        };
        self.kill(id);
        caught
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

    /// Whether node `id`'s process has exited by itself (refused to start, or failed), with
    /// its exit status; the process is then reaped and counts as not running.
    pub fn exited(&mut self, id: u64) -> Option<std::process::ExitStatus> {
        let node = self.node_mut(id);
        let status = node.child.as_mut()?.try_wait().ok()??;
        node.child = None;
        Some(status)
    }

    /// Everything node `id` logged.
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.root.join(format!("n{id}.log"))).unwrap_or_default()
    }

    /// Damages the files of node `id`, which must be stopped (killed), as `damage` says;
    /// returns what was done. The unsynced kinds need a `quiver` built with `--features
    /// fault-injection` (the engine then records, beside each segment, the end of its last
    /// synced write); without those marks this is an error, never a guess.
    pub fn damage(&self, id: u64, damage: Damage, rng: &mut Rng) -> Result<String> {
        let node = self.node(id);
        anyhow::ensure!(
            node.child.is_none(),
            "node {id} must be stopped to damage its files"
        );
        let mut segments = Vec::new();
        find_files(&node.dir, "qseg", &mut segments)?;
        segments.sort_by_key(|p| p.file_name().map(|n| n.to_os_string()));
        let Some(newest) = segments.last() else {
            return Ok(format!("node {id} has no segment yet"));
        };
        let mut marks = Vec::new();
        find_files(&node.dir, "synced", &mut marks)?;
        anyhow::ensure!(
            !marks.is_empty(),
            "node {id} has no sync marks: storage faults need a quiver built with --features fault-injection"
        );
        let mark_path = PathBuf::from(format!("{}.synced", newest.display()));
        let mut mark = [0u8; 8];
        match std::fs::File::open(&mark_path).and_then(|f| f.read_exact_at(&mut mark, 0)) {
            Ok(()) => {}
            Err(_) => {
                return Ok(format!(
                    "node {id}: no synced write in {} yet",
                    name(newest)
                ))
            }
        }
        let synced = u64::from_le_bytes(mark);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(newest)?;
        let bytes = std::fs::read(newest)?;
        let end = bytes
            .iter()
            .rposition(|b| *b != 0)
            .map_or(0, |i| i as u64 + 1);
        let seg = name(newest);
        let zero = |from: u64, to: u64| -> std::io::Result<()> {
            if to > from {
                file.write_all_at(&vec![0u8; (to - from) as usize], from)?;
            }
            Ok(())
        };
        let flip = |at: u64, bit: u64| -> std::io::Result<()> {
            let byte = bytes[at as usize] ^ (1 << bit);
            file.write_all_at(&[byte], at)
        };
        let unsynced = end.saturating_sub(synced);
        let what = match damage {
            Damage::RotSynced => {
                // Well inside the synced data: later group commits vouch for it.
                if synced < 64 * 1024 {
                    return Ok(format!(
                        "node {id}: {seg} holds only {synced} synced bytes; no rot"
                    ));
                }
                let at = synced / 4 + rng.below(synced / 4);
                let bit = rng.below(8);
                flip(at, bit)?;
                format!("node {id}: {seg} bit {bit} of byte {at} flipped (synced up to {synced})")
            }
            _ if unsynced == 0 => {
                format!("node {id}: {seg} had nothing unsynced (synced up to {synced})")
            }
            Damage::LoseUnsynced => {
                zero(synced, end)?;
                format!("node {id}: {seg} lost {unsynced} unsynced bytes ({synced}..{end})")
            }
            Damage::TearUnsynced => {
                const PAGE: u64 = 4096;
                let (mut kept, mut lost) = (0, 0);
                let mut page = synced / PAGE * PAGE;
                while page < end {
                    let (from, to) = (page.max(synced), (page + PAGE).min(end));
                    if rng.below(2) == 0 {
                        zero(from, to)?;
                        lost += to - from;
                    } else {
                        kept += to - from;
                    }
                    page += PAGE;
                }
                format!(
                    "node {id}: {seg} torn after {synced}: {kept} unsynced bytes kept, {lost} lost"
                )
            }
            Damage::GarbleUnsynced => {
                let at = synced + rng.below(unsynced);
                let bit = rng.below(8);
                flip(at, bit)?;
                format!(
                    "node {id}: {seg} bit {bit} of unsynced byte {at} flipped ({synced}..{end})"
                )
            }
        };
        file.sync_all()?;
        Ok(what)
    }

    /// Node `id`'s cluster status, if it answers within 1 s.
    pub fn status(&self, id: u64) -> Option<ClusterStatus> {
        let node = self.node(id);
        if node.child.is_none() || node.paused {
            return None;
        }
        status_cli::fetch(node.http, Duration::from_secs(1)).ok()
    }

    /// Whether the cluster is whole: a leader, every member a voter of its membership (no
    /// learner still catching up, no one missing), and every member applied up to the
    /// leader's commit index as of a moment ago. Faults that take a node out for good (a
    /// removal, rot that must be repaired) wait for this, so that the cluster they leave
    /// still has a majority: an operator would too.
    pub fn settled(&self) -> bool {
        let ids = Cluster::ids(self);
        let statuses: Vec<ClusterStatus> = ids.iter().filter_map(|i| self.status(*i)).collect();
        let Some(ls) = agreed_leader(&statuses) else {
            return false;
        };
        let mut voters = ls.voters.clone();
        voters.sort_unstable();
        statuses.len() == ids.len()
            && voters == ids
            && ls.learners.is_empty()
            && statuses.iter().all(|s| s.applied + 100 >= ls.commit)
    }
}

impl Node {
    fn new(id: u64, root: &Path) -> Result<Node> {
        let addr =
            |udp| -> Result<SocketAddr> { Ok(SocketAddr::from(([127, 0, 0, 1], free_port(udp)?))) };
        Ok(Node {
            id,
            peer: addr(true)?,
            client: addr(true)?,
            http: addr(false)?,
            dir: root.join(format!("n{id}")),
            members: String::new(),
            child: None,
            paused: false,
            member: false,
        })
    }
}

fn name(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// Files under `dir` (recursively) whose extension is `ext`.
fn find_files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            find_files(&path, ext, out)?;
        } else if path.extension().and_then(|e| e.to_str()) == Some(ext) {
            out.push(path);
        }
    }
    Ok(())
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let all: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
        for id in all {
            self.pause(id, false);
            self.kill(id);
        }
    }
}

/// What the suite needs of a cluster, however its nodes run: local processes behind the
/// harness's relays ([`Cluster`]), or the Docker compose cluster
/// ([`crate::docker::DockerCluster`], through [`DockerBackend`]). Faults a backend cannot
/// make are not asked of it ([`Backend::supports`]).
pub trait Backend: Send + Sync {
    /// The members' ids.
    fn ids(&self) -> Vec<u64>;
    /// Where member `id` serves clients now.
    fn client(&self, id: u64) -> SocketAddr;
    /// The members' client addresses.
    fn clients(&self) -> Vec<SocketAddr> {
        self.ids().into_iter().map(|id| self.client(id)).collect()
    }
    /// A client configuration for the members; client files go under `root`.
    fn client_config(&self, root: &Path) -> ClientConfig;
    /// The members' client addresses, shared with the workload and kept current.
    fn view(&self) -> Arc<Mutex<Vec<SocketAddr>>>;
    /// Node `id`'s status, if it answers within about a second.
    fn status(&self, id: u64) -> Option<ClusterStatus>;
    /// SIGKILL.
    fn kill(&mut self, id: u64);
    /// Starts node `id` again, its data as it is.
    fn start_node(&mut self, id: u64) -> Result<()>;
    /// Pauses (`true`) or resumes (`false`) node `id`.
    fn pause(&mut self, id: u64, stop: bool);
    /// Whether node `id` runs (paused or not).
    fn running(&self, id: u64) -> bool;
    /// Cuts node `id` off from every other node.
    fn isolate(&mut self, id: u64) -> Result<()>;
    /// Every link clear again.
    fn heal(&mut self) -> Result<()>;
    /// Whether this backend can make faults of `kind`.
    fn supports(&self, kind: crate::nemesis::Kind) -> bool;
    /// The local cluster, for the faults only it can make (relay rules, storage, membership).
    fn local(&mut self) -> Option<&mut Cluster>;
    /// Copies the nodes' logs into `dir`, where they are not written there already.
    fn save_logs(&self, _dir: &Path) {}
    /// Storage faults the nodes did not detect (findings).
    fn undetected(&self) -> u64 {
        0
    }

    /// The leader every answering member agrees on, if any.
    fn leader(&self) -> Option<u64> {
        let statuses: Vec<ClusterStatus> =
            self.ids().iter().filter_map(|i| self.status(*i)).collect();
        agreed_leader(&statuses).map(|s| s.node_id)
    }
}

/// The status of the leader every one of `statuses` agrees on (or knows only an older term
/// than), if any.
fn agreed_leader(statuses: &[ClusterStatus]) -> Option<&ClusterStatus> {
    let leader = statuses.iter().find(|s| s.role == "leader")?;
    statuses
        .iter()
        .all(|s| s.leader == Some(leader.node_id) || s.term < leader.term)
        .then_some(leader)
}

/// How the harness's clients connect, on either backend: `ca`, a 3 s timeout (a fault must
/// not stall a client for long), `servers`, and a token where the nodes require one.
fn harness_config(
    root: &Path,
    ca: PathBuf,
    servers: Vec<SocketAddr>,
    token: Option<String>,
) -> ClientConfig {
    let config = ClientConfig::local(root)
        .ca_file(ca)
        .timeout(Duration::from_secs(3))
        .servers(servers);
    match token {
        Some(token) => config.token(token),
        None => config,
    }
}

/// Waits (up to `limit`) for a leader every answering member agrees on.
pub async fn wait_for_leader(backend: &dyn Backend, limit: Duration) -> Option<u64> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(l) = backend.leader() {
            return Some(l);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Backend for Cluster {
    fn ids(&self) -> Vec<u64> {
        Cluster::ids(self)
    }
    fn client(&self, id: u64) -> SocketAddr {
        self.node(id).client
    }
    fn client_config(&self, root: &Path) -> ClientConfig {
        Cluster::client_config(self, root)
    }
    fn view(&self) -> Arc<Mutex<Vec<SocketAddr>>> {
        self.view.clone()
    }
    fn status(&self, id: u64) -> Option<ClusterStatus> {
        Cluster::status(self, id)
    }
    fn kill(&mut self, id: u64) {
        Cluster::kill(self, id)
    }
    fn start_node(&mut self, id: u64) -> Result<()> {
        Cluster::start_node(self, id)
    }
    fn pause(&mut self, id: u64, stop: bool) {
        Cluster::pause(self, id, stop)
    }
    fn running(&self, id: u64) -> bool {
        Cluster::running(self, id)
    }
    fn isolate(&mut self, id: u64) -> Result<()> {
        for other in Cluster::ids(self).into_iter().filter(|o| *o != id) {
            self.net.cut(id, other);
            self.net.cut(other, id);
        }
        Ok(())
    }
    fn heal(&mut self) -> Result<()> {
        self.net.heal();
        Ok(())
    }
    fn supports(&self, _kind: crate::nemesis::Kind) -> bool {
        true
    }
    fn local(&mut self) -> Option<&mut Cluster> {
        Some(self)
    }
    fn undetected(&self) -> u64 {
        self.undetected
    }
}

/// The Docker compose cluster as a [`Backend`]: its client addresses (container IPs, which
/// move when a container is started again or reconnected) republished after every change.
pub struct DockerBackend {
    inner: crate::docker::DockerCluster,
    view: Arc<Mutex<Vec<SocketAddr>>>,
}

impl DockerBackend {
    /// Wraps a started compose cluster (its ids and client addresses are known at once).
    pub fn new(inner: crate::docker::DockerCluster) -> DockerBackend {
        let backend = DockerBackend {
            inner,
            view: Arc::default(),
        };
        backend.publish();
        backend
    }

    fn publish(&self) {
        *self.view.lock().unwrap_or_else(|e| e.into_inner()) = self.clients();
    }
}

impl Backend for DockerBackend {
    fn ids(&self) -> Vec<u64> {
        self.inner.ids()
    }
    fn client(&self, id: u64) -> SocketAddr {
        self.inner.client(id)
    }
    fn client_config(&self, root: &Path) -> ClientConfig {
        harness_config(root, self.inner.ca(), self.clients(), self.inner.token())
    }
    fn view(&self) -> Arc<Mutex<Vec<SocketAddr>>> {
        self.view.clone()
    }
    fn status(&self, id: u64) -> Option<ClusterStatus> {
        self.inner.status(id)
    }
    fn kill(&mut self, id: u64) {
        self.inner.kill(id)
    }
    fn start_node(&mut self, id: u64) -> Result<()> {
        self.inner.start_node(id)?;
        self.publish();
        Ok(())
    }
    fn pause(&mut self, id: u64, stop: bool) {
        self.inner.pause(id, stop)
    }
    fn running(&self, id: u64) -> bool {
        self.inner.running(id)
    }
    fn isolate(&mut self, id: u64) -> Result<()> {
        self.inner.isolate(id)
    }
    fn heal(&mut self) -> Result<()> {
        self.inner.heal()?;
        self.publish();
        Ok(())
    }
    fn supports(&self, kind: crate::nemesis::Kind) -> bool {
        crate::nemesis::Kind::DOCKER.contains(&kind)
    }
    fn save_logs(&self, dir: &Path) {
        self.inner.save_logs(dir);
    }
    fn local(&mut self) -> Option<&mut Cluster> {
        None
    }
}
