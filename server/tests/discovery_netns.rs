//! Discovery across a real network: Linux network namespaces joined by a bridge (created and
//! removed here), one `quiver serve` per namespace, nothing configured but the cluster size,
//! the secret and the token. Checks that a partitioned start (2 + 1 with `--cluster-size 3`)
//! forms nothing until healed and then exactly one cluster, found by broadcast; that a node
//! with the wrong secret is never admitted; and that forged and replayed packets are counted
//! and ignored. Needs root (namespaces): skipped with a message otherwise.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use quiver_net::discovery::{derive_key, encode, now_ms, Announcement, NodeState};

const SECRET: &str = "netns-test-secret-0123456789abcdef";
const TOKEN: &str = "netns-test-token";
const SUBNET: &str = "10.213.0";

/// Runs `ip` with `args`; panics with its output when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Namespaces `P-sw` (a bridge) and `P-n1..` (one host each, 10.213.0.i/24 on a veth whose
/// other end is on the bridge). Dropped: every namespace is deleted (their links go too).
struct Net {
    prefix: String,
    hosts: usize,
}

impl Net {
    fn new(hosts: usize) -> Net {
        let prefix = format!("qv{}", std::process::id() % 100_000);
        let net = Net { prefix, hosts };
        let sw = net.switch();
        ip(&["netns", "add", &sw]);
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &sw, "link", "set", "br0", "up"]);
        for i in 1..=hosts {
            let ns = net.host(i);
            let (a, b) = (format!("{}a{i}", net.prefix), net.port(i));
            ip(&["netns", "add", &ns]);
            ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
            ip(&["link", "set", &a, "netns", &ns]);
            ip(&["link", "set", &b, "netns", &sw]);
            ip(&["-n", &sw, "link", "set", &b, "master", "br0", "up"]);
            let addr = format!("{SUBNET}.{i}/24");
            ip(&["-n", &ns, "addr", "add", &addr, "brd", "+", "dev", &a]);
            ip(&["-n", &ns, "link", "set", &a, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        net
    }

    fn switch(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    fn host(&self, i: usize) -> String {
        format!("{}-n{i}", self.prefix)
    }

    /// Host i's port on the bridge.
    fn port(&self, i: usize) -> String {
        format!("{}b{i}", self.prefix)
    }

    /// Cuts host i off the bridge, or joins it back.
    fn link(&self, i: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.switch(), "link", "set", &self.port(i), state]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in (1..=self.hosts)
            .map(|i| self.host(i))
            .chain([self.switch()])
        {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

/// A `quiver serve` in host i's namespace; killed when dropped.
struct Node {
    child: Child,
    data: PathBuf,
    ns: String,
}

impl Node {
    fn start(net: &Net, i: usize, root: &Path, secret: &str) -> Node {
        let data = root.join(format!("n{i}"));
        let ns = net.host(i);
        let log = std::fs::File::create(root.join(format!("n{i}.log"))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, env!("CARGO_BIN_EXE_quiver"), "serve"])
            .args(["--db-type", "cluster", "--cluster-size", "3"])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", &format!("{SUBNET}.{i}:7600")])
            .args(["--peer-listen", &format!("{SUBNET}.{i}:7601")])
            .args(["--http", "127.0.0.1:7602", "--token", TOKEN])
            .env("QUIVER_CLUSTER_SECRET", secret)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting quiver serve");
        Node { child, data, ns }
    }

    fn formed(&self) -> bool {
        self.data.join("cluster-members").exists()
    }

    fn id(&self) -> u64 {
        std::fs::read_to_string(self.data.join("node-id"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// `/status`'s `cluster` object, read inside the namespace.
    fn status(&self) -> Option<serde_json::Value> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, env!("CARGO_BIN_EXE_quiver")])
            .args(["cluster", "status", "--http", "127.0.0.1:7602", "--json"])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Runs `f` on a thread that has entered namespace `ns` (sockets it makes are there).
fn in_namespace<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(&path).expect("opening the namespace");
        // SAFETY: setns on this thread only, with a namespace file descriptor that is open.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("the namespace thread")
}

fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: network namespaces need root");
        return false;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        eprintln!("skipped: no `ip` command (iproute2)");
        return false;
    }
    true
}

fn counter(status: &serde_json::Value, name: &str) -> u64 {
    status["discovery"][name].as_u64().unwrap_or(0)
}

#[test]
fn broadcast_forms_one_cluster_only_once_healed_and_admits_no_forgery() {
    if !can_run() {
        return;
    }
    let net = Net::new(4);
    let root = tempfile::tempdir().unwrap();
    // Host 3 is cut off from the start: 2 + 1.
    net.link(3, false);
    let nodes: Vec<Node> = (1..=3)
        .map(|i| Node::start(&net, i, root.path(), SECRET))
        .collect();
    // Host 4 has the wrong secret.
    let stranger = Node::start(&net, 4, root.path(), "another-secret-0123456789abcdef");
    std::thread::sleep(Duration::from_secs(6));
    for (i, n) in nodes.iter().enumerate() {
        assert!(!n.formed(), "node {} formed a cluster of two", i + 1);
    }
    assert!(!stranger.formed());

    net.link(3, true);
    wait_for("the three nodes form", Duration::from_secs(30), || {
        nodes.iter().all(Node::formed)
    });
    let mut ids: Vec<u64> = nodes.iter().map(Node::id).collect();
    ids.sort_unstable();
    let mut leaders = Vec::new();
    wait_for("a leader known to all", Duration::from_secs(30), || {
        leaders = nodes
            .iter()
            .filter_map(|n| n.status()?["leader"].as_u64())
            .collect();
        leaders.len() == 3 && leaders.iter().all(|l| *l == leaders[0])
    });
    for n in &nodes {
        let s = n.status().unwrap();
        let mut voters: Vec<u64> = serde_json::from_value(s["voters"].clone()).unwrap();
        voters.sort_unstable();
        assert_eq!(voters, ids, "one cluster of exactly the three");
        assert!(ids.contains(&leaders[0]));
    }

    // The stranger is never admitted: it formed nothing, nobody lists it, and its packets
    // were counted as forged.
    std::thread::sleep(Duration::from_secs(2));
    assert!(!stranger.formed());
    let before = nodes[0].status().unwrap();
    assert!(counter(&before, "forged") > 0, "{before}");
    let discovered = before["discovered"].as_array().unwrap();
    assert!(discovered.is_empty(), "{discovered:?}");
    drop(stranger);
    std::thread::sleep(Duration::from_secs(1));
    let before = nodes[0].status().unwrap();

    // Injected packets from host 4: one authentic (a fresh node 999), the same again (a
    // replay), and the same with one byte changed (a forgery).
    let packet = encode(
        &Announcement {
            store_id: "quiver".into(),
            node_id: 999,
            peer: format!("{SUBNET}.4:7601").parse().unwrap(),
            client: None,
            cluster_size: 3,
            state: NodeState::Fresh {
                proposal: Vec::new(),
            },
            relays: Vec::new(),
            timestamp_ms: now_ms(),
            nonce: 1,
        },
        &derive_key(SECRET.as_bytes()),
    );
    let to: SocketAddr = format!("{SUBNET}.1:45892").parse().unwrap();
    in_namespace(&net.host(4), move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket.send_to(&packet, to).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        socket.send_to(&packet, to).unwrap();
        let mut forged = packet.clone();
        forged[10] ^= 1;
        socket.send_to(&forged, to).unwrap();
    });
    let mut after = before.clone();
    wait_for(
        "the injected packets counted",
        Duration::from_secs(10),
        || {
            after = nodes[0].status().unwrap();
            counter(&after, "replayed") > counter(&before, "replayed")
        },
    );
    assert_eq!(
        counter(&after, "replayed"),
        counter(&before, "replayed") + 1
    );
    assert_eq!(counter(&after, "forged"), counter(&before, "forged") + 1);
    // The authentic one was heard (node 999 is shown as discovered, not a member).
    let discovered = after["discovered"].as_array().unwrap();
    assert!(discovered.iter().any(|d| d["id"] == 999), "{discovered:?}");
    assert!(!after["voters"].as_array().unwrap().iter().any(|v| v == 999));
}
