//! Cluster mode end to end. Most tests run each node as a real `quiver serve --db-type
//! cluster` process on loopback, with its own data directory and free ports, and watch the
//! nodes through their HTTP `/status`: three nodes elect exactly one leader; the leader
//! killed with SIGKILL is replaced and rejoins, with its id, as a follower; a process with
//! the wrong secret is refused and changes nothing; bad configurations do not start. Some
//! tests run three nodes in this process to drive the Raft loop's handle (`propose`,
//! `write`, `read_index`) directly. Clients of a cluster are tested in `cluster_clients.rs`.
//!
//! Every wait polls with a deadline; every process is killed when its guard drops, so a
//! failing test leaves nothing running (`common/cluster.rs`).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use quiver_engine::format::{encode_stream_append, EntryKind as RecordKind};
use quiver_engine::{Engine, EngineConfig, EventData, ExpectedVersion, StreamWrite};
use quiver_raft::Refused;
use quiver_server::cluster::status_cli;
use quiver_server::cluster::{
    ClusterConfig, ClusterHandle, ClusterNode, ClusterStatus, RequestError, Write, WriteError,
};
use quiver_server::raft_log::{command, EngineLog};

mod common;

use common::cluster::{
    agreed_leader, free_udp_port, Cluster, Node, FAILOVER_LIMIT, FORM_LIMIT, QUIVER, SECRET,
};

#[test]
fn three_nodes_elect_exactly_one_leader() {
    let mut c = Cluster::new(3);
    c.start_all();
    let (leader, term, statuses) = c.wait_for_leader(FORM_LIMIT, None);
    assert!(term >= 1);
    for s in &statuses {
        assert_eq!(s.voters, vec![1, 2, 3], "{s:?}");
        assert!(s.failed.is_none(), "{s:?}");
    }
    let leader_status = statuses.iter().find(|s| s.node_id == leader).unwrap();
    assert_eq!(
        leader_status
            .followers
            .iter()
            .map(|f| f.id)
            .collect::<Vec<_>>(),
        vec![1, 2, 3],
        "the leader tracks every member"
    );
    // Every node becomes ready: it knows the leader and applied the leader's no-op.
    for n in &c.nodes {
        let deadline = Instant::now() + FORM_LIMIT;
        loop {
            let (code, _) =
                status_cli::http_get(n.http, "/health/ready", Duration::from_secs(1)).unwrap();
            if code == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "node {} never ready", n.id);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // The CLI shows the same view.
    let out = Command::new(QUIVER)
        .args(["cluster", "status", "--json", "--http"])
        .arg(c.nodes[0].http.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let shown: ClusterStatus = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown.node_id, 1);
    assert_eq!(shown.leader, Some(leader));
    let out = Command::new(QUIVER)
        .args(["cluster", "status", "--http"])
        .arg(c.nodes[1].http.to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("node 2: "), "{text}");
    assert!(text.contains(&format!("leader {leader}")), "{text}");
    // Raft's numbers in /metrics: the leader says so, every node knows it and its term,
    // and the links to the other members are up.
    for n in &c.nodes {
        let deadline = Instant::now() + FORM_LIMIT;
        let other = if n.id == 1 { 2 } else { 1 };
        let wanted = [
            format!("quiver_raft_is_leader {}", u8::from(n.id == leader)),
            format!("quiver_raft_leader {leader}"),
            format!("quiver_raft_term {term}"),
            "quiver_raft_voters 3".to_string(),
            format!("quiver_peer_connected{{peer=\"{other}\"}} 1"),
        ];
        loop {
            let (_, metrics) =
                status_cli::http_get(n.http, "/metrics", Duration::from_secs(1)).unwrap();
            let missing: Vec<_> = wanted
                .iter()
                .filter(|w| !metrics.lines().any(|l| l == w.as_str()))
                .collect();
            let counted = metrics
                .lines()
                .any(|l| l.starts_with("quiver_raft_leader_changes_total ") && !l.ends_with(" 0"));
            // The leader times its appends to each follower.
            let timed = n.id != leader
                || c.nodes.iter().filter(|o| o.id != leader).all(|o| {
                    let prefix = format!("quiver_raft_append_rtt_seconds{{peer=\"{}\"}} ", o.id);
                    metrics.lines().any(|l| l.starts_with(&prefix))
                });
            if missing.is_empty() && counted && timed {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {}: missing {missing:?} (leader changes counted: {counted}, appends timed: \
                 {timed}) in\n{metrics}",
                n.id
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn a_killed_leader_is_replaced_and_rejoins_as_a_follower() {
    let mut c = Cluster::new(3);
    c.start_all();
    let (old, term, _) = c.wait_for_leader(FORM_LIMIT, None);
    c.node(old).kill();
    let killed = Instant::now();
    let (new, new_term, _) = c.wait_for_leader(FAILOVER_LIMIT, Some(old));
    eprintln!(
        "new leader {new} in term {new_term} after {:?}",
        killed.elapsed()
    );
    assert_ne!(new, old);
    assert!(new_term > term, "a new leader is elected in a later term");
    // Restarted without --node-id: the data directory remembers who it is.
    let members = c.members.clone();
    c.node(old).start(&members, SECRET, false);
    let deadline = Instant::now() + FORM_LIMIT;
    loop {
        let s = c.node(old).status();
        if let Some(s) = &s {
            assert_eq!(s.node_id, old, "the restarted node keeps its id");
            if s.role == "follower" && s.leader == Some(new) && s.term == new_term && s.ready {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node {old} did not rejoin: {s:?}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // And the cluster agrees on the same leader, all three.
    let (leader, t, _) = c.wait_for_leader(FORM_LIMIT, None);
    assert_eq!((leader, t), (new, new_term));
}

#[test]
fn a_node_with_the_wrong_secret_is_refused_and_changes_nothing() {
    let mut c = Cluster::new(3);
    c.start_all();
    let (leader, term, _) = c.wait_for_leader(FORM_LIMIT, None);
    // Node 4 lists itself with the three: it dials them and campaigns, with another secret.
    let mut intruder = Node::new(4, c.root());
    let members = format!("{},4={}", c.members, intruder.peer);
    intruder.start(&members, "not the cluster secret, but long enough", true);
    let deadline = Instant::now() + FORM_LIMIT;
    let refused = loop {
        let refused: u64 = c
            .nodes
            .iter()
            .filter_map(|n| n.status())
            .map(|s| s.peer_connections_refused)
            .sum();
        let intruder_up = intruder.status().is_some();
        if refused >= 3 && intruder_up {
            break refused;
        }
        assert!(
            Instant::now() < deadline,
            "the members did not refuse node 4 ({refused} refusals)\n{}\n--- node 4 ---\n{}",
            c.logs(),
            intruder.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("{refused} connections refused");
    // Let it try for a few of its election timeouts (1–2 s each) while we watch.
    let watch_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < watch_until {
        let s = intruder.status().expect("node 4 answers its HTTP");
        assert_ne!(s.role, "leader", "node 4 became a leader");
        assert_eq!(s.leader, None, "node 4 heard a leader");
        assert!(
            s.peers.iter().all(|p| !p.connected),
            "node 4 connected: {s:?}"
        );
        for n in &c.nodes {
            let s = n.status().expect("members answer");
            assert_eq!((s.leader, s.term), (Some(leader), term), "node {}", n.id);
            assert_eq!(s.voters, vec![1, 2, 3]);
            assert_eq!(s.messages_from_non_members, 0, "nothing got through");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let logs = c.logs();
    assert!(
        logs.contains("peer connection refused"),
        "the refusal is logged"
    );
    assert!(
        intruder.log().contains("cannot reach peer"),
        "{}",
        intruder.log()
    );
}

#[test]
fn a_node_that_cannot_persist_stops_and_says_so_while_the_others_go_on() {
    let mut c = Cluster::new(3);
    c.start_all();
    let (leader, _, _) = c.wait_for_leader(FORM_LIMIT, None);
    let mut others = (1..=3).filter(|id| *id != leader);
    let (broken, other) = (others.next().unwrap(), others.next().unwrap());
    // The broken node can no longer write its hard state: the temporary file's name is
    // taken by a directory (which stops root as well as anyone). With the leader gone, its
    // next term change or vote fails to persist.
    let blocked = c.node(broken).dir.join("data").join("raft-state.tmp");
    std::fs::create_dir_all(&blocked).unwrap();
    c.node(leader).kill();
    let deadline = Instant::now() + FORM_LIMIT;
    let failed = loop {
        if let Some(s) = c.node(broken).status().filter(|s| s.failed.is_some()) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "node {broken} did not fail-stop\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(failed.role, "failed");
    assert!(!failed.ready);
    let why = failed.failed.unwrap();
    assert!(why.contains("persisting a Ready failed"), "{why}");
    let http = c.node(broken).http;
    let (code, _) = status_cli::http_get(http, "/health/ready", Duration::from_secs(1)).unwrap();
    assert_eq!(code, 503, "a failed node is not ready");
    let log = c.node(broken).log();
    let lines = log.lines().filter(|l| l.contains("fail-stop")).count();
    assert_eq!(lines, 1, "one clear line: {log}");
    // The old leader comes back; with the third node it is a majority again.
    let members = c.members.clone();
    c.node(leader).start(&members, SECRET, true);
    let deadline = Instant::now() + FORM_LIMIT;
    loop {
        let statuses: Vec<ClusterStatus> = [leader, other]
            .iter()
            .filter_map(|id| c.nodes[*id as usize - 1].status())
            .collect();
        if statuses.len() == 2 && agreed_leader(&statuses).is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no leader without node {broken}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = c.node(broken).status().unwrap();
    assert_eq!(
        s.role, "failed",
        "a failed node stays stopped until restarted"
    );
}

/// Runs `quiver serve --db-type cluster ARGS` expecting it to exit at once with an error;
/// returns its stderr.
fn refused_start(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(QUIVER);
    cmd.args(["serve", "--db-type", "cluster", "--http", "off"])
        .args(["--peer-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for var in [
        "QUIVER_CONFIG",
        "QUIVER_CLUSTER_SECRET",
        "QUIVER_CLUSTER_SECRET_FILE",
        "QUIVER_NODE_ID",
        "QUIVER_INITIAL_MEMBERS",
        "QUIVER_CLUSTER_SIZE",
        "QUIVER_SEEDS",
        "QUIVER_NO_BROADCAST",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`quiver serve {args:?}` did not refuse to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_cluster_node_does_not_start_without_a_good_secret_or_with_another_id() {
    let members = ["--initial-members", "1=127.0.0.1:7601"];
    let err = refused_start(&members, &[]);
    assert!(err.contains("cluster mode needs a cluster secret"), "{err}");
    let err = refused_start(&members, &[("QUIVER_CLUSTER_SECRET", "too short")]);
    assert!(err.contains("at least 16 are required"), "{err}");
    // No member list means discovery; discovery that could reach no one is refused.
    let err = refused_start(&["--no-broadcast"], &[("QUIVER_CLUSTER_SECRET", SECRET)]);
    assert!(err.contains("--no-broadcast needs --seeds"), "{err}");
    let err = refused_start(
        &["--cluster-size", "0"],
        &[("QUIVER_CLUSTER_SECRET", SECRET)],
    );
    assert!(err.contains("--cluster-size must be 1 to 64"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("node-id"), "1\n").unwrap();
    let out = Command::new(QUIVER)
        .args([
            "serve",
            "--db-type",
            "cluster",
            "--http",
            "off",
            "--node-id",
            "2",
        ])
        .args(members)
        .arg("--data-dir")
        .arg(&data)
        .env("QUIVER_CLUSTER_SECRET", SECRET)
        .env_remove("QUIVER_CONFIG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--node-id 2 but the data directory says this node is 1"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// In process: the Raft loop's own API (`propose`, `read_index`), which no client reaches yet
// ---------------------------------------------------------------------------------------

/// Three nodes in this process, engines in `root`, peers on loopback; returns them, their
/// engines and the id of the leader they agree on, once every node has applied its whole
/// log (the leader's no-op included: nothing is left in flight).
async fn in_process(root: &Path) -> InProcess {
    let members: Vec<(u64, SocketAddr)> = (1..=3)
        .map(|id| {
            let addr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
            (id, addr)
        })
        .collect();
    let mut nodes = Vec::new();
    let mut engines = Vec::new();
    for (id, addr) in &members {
        let log = EngineLog::open(&root.join(format!("n{id}")), EngineConfig::default()).unwrap();
        let engine = log.engine().clone();
        let cc = ClusterConfig::new(*id, members.clone(), *addr, SECRET.into());
        nodes.push(ClusterNode::start(log, &cc).unwrap());
        engines.push(engine);
    }
    let handles: Vec<ClusterHandle> = nodes.iter().map(|n| n.handle()).collect();
    let deadline = Instant::now() + FORM_LIMIT;
    let leader = loop {
        let statuses: Vec<ClusterStatus> = handles.iter().map(|h| h.status()).collect();
        let settled = statuses
            .iter()
            .all(|s| s.ready && s.applied >= 1 && s.applied == s.last_index);
        if let Some((leader, _)) = agreed_leader(&statuses).filter(|_| settled) {
            break leader;
        }
        assert!(
            Instant::now() < deadline,
            "no settled leader: {statuses:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    InProcess {
        nodes,
        engines,
        leader,
        members,
    }
}

/// See [`in_process`].
struct InProcess {
    nodes: Vec<ClusterNode>,
    engines: Vec<Engine>,
    leader: u64,
    members: Vec<(u64, SocketAddr)>,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// An append of one event at `version` of `stream`, as a Raft command.
fn append_command(stream: &str, version: u64) -> Vec<u8> {
    let event = EventData::json("Tested", r#"{"n":1}"#);
    let body = encode_stream_append(stream, version, 1, &[event]);
    command(RecordKind::Append, 1, &body)
}

/// A proposal on the leader is acknowledged once committed and is applied on every node; a
/// follower refuses proposals, naming the leader; an invalid command never reaches Raft; a
/// read index asked on a follower covers the acknowledged write.
#[test]
fn proposals_commit_on_every_node_and_read_index_covers_them() {
    let root = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let InProcess {
            nodes,
            engines,
            leader,
            ..
        } = in_process(root.path()).await;
        let on_leader = nodes[leader as usize - 1].handle();
        let follower = nodes[(leader as usize) % 3].handle();
        let data = append_command("cluster-test", 0);
        let wait = Duration::from_secs(10);
        match follower.propose(data.clone(), wait).await {
            Err(RequestError::Refused(Refused::NotLeader(Some(l)))) => assert_eq!(l, leader),
            other => panic!("a follower took a proposal: {other:?}"),
        }
        let bad = command(RecordKind::Append, 1, b"not an append");
        assert!(matches!(
            on_leader.propose(bad, wait).await,
            Err(RequestError::Invalid(_))
        ));
        let index = on_leader.propose(data, wait).await.unwrap();
        assert!(engines[leader as usize - 1].commit_index() >= index);

        let read = follower.read_index(wait).await.unwrap();
        assert!(
            read >= index,
            "read index {read} is below the write {index}"
        );
        let deadline = Instant::now() + wait;
        for (k, engine) in engines.iter().enumerate() {
            loop {
                let info = engine.stream_info("cluster-test");
                if info.is_some_and(|i| i.current_version == Some(0)) {
                    break;
                }
                assert!(Instant::now() < deadline, "node {} lacks the event", k + 1);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        for n in nodes {
            n.shutdown().await;
        }
    });
}

/// A leader cut off from both followers cannot commit: its proposal is never acknowledged,
/// and once it steps down (check-quorum, within about one election timeout) the caller is
/// told that leadership was lost, the entry's outcome unknown; a read asked meanwhile is
/// never answered with an index, and is reported lost when the leader steps down.
#[test]
fn a_proposal_that_cannot_commit_is_never_acknowledged() {
    let root = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let InProcess {
            mut nodes,
            engines,
            leader,
            ..
        } = in_process(root.path()).await;
        let lead = nodes.remove(leader as usize - 1);
        // Dropped, not shut down: their loops stop and their connections close at once.
        drop(nodes);
        let h = lead.handle();
        let engine = &engines[leader as usize - 1];
        let before = engine.commit_index();
        let wait = Duration::from_secs(10);
        let write = Write::Append(vec![StreamWrite {
            stream: "lost-too".into(),
            expected: ExpectedVersion::NoStream,
            events: vec![EventData::json("Tested", "{}")],
        }]);
        let (proposed, read, written) = tokio::join!(
            h.propose(append_command("lost", 0), wait),
            h.read_index(wait),
            h.write(write, wait)
        );
        match proposed {
            Err(RequestError::LeadershipLost(index)) => assert!(index > before),
            other => panic!("expected LeadershipLost, got {other:?}"),
        }
        match written {
            Err(WriteError::Request(RequestError::LeadershipLost(index))) => {
                assert!(index > before)
            }
            other => panic!("a client's write that cannot commit was answered {other:?}"),
        }
        assert_eq!(
            read,
            Err(RequestError::ReadLost),
            "a cut-off leader served a read"
        );
        assert_eq!(engine.commit_index(), before, "nothing committed");
        assert!(engine.stream_info("lost").is_none());
        assert!(engine.stream_info("lost-too").is_none());
        assert!(!h.is_ready(), "a node without a leader is not ready");
        lead.shutdown().await;
    });
}

/// A process that has the secret but is not a member (id 9, never added) gets through the
/// handshake, but the Raft loop drops what it sends: a forced vote request in term 1,000
/// with a longer log, which would make any member that stepped it leave its leader for the
/// new term, moves no member's term or leader, and is counted.
#[test]
fn messages_from_a_node_that_is_not_a_member_are_dropped() {
    use quiver_net::peer::{PeerMessage, PeerMessageKind};
    use quiver_net::peer_quic::{PeerConfig, PeerEndpoint};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    let root = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let c = in_process(root.path()).await;
        let handles: Vec<ClusterHandle> = c.nodes.iter().map(|n| n.handle()).collect();
        let before: Vec<(u64, Option<u64>)> = handles
            .iter()
            .map(|h| h.status())
            .map(|s| (s.term, s.leader))
            .collect();
        let ck = rcgen::generate_simple_self_signed(vec!["quiver-peer".into()]).unwrap();
        let chain = vec![CertificateDer::from(ck.cert.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
        let listen = "127.0.0.1:0".parse().unwrap();
        let (stranger, _incoming) =
            PeerEndpoint::bind(PeerConfig::new(9, listen, SECRET, chain, key)).unwrap();
        for (id, addr) in &c.members {
            stranger.add_peer(*id, *addr);
        }
        let deadline = Instant::now() + FORM_LIMIT;
        loop {
            for (id, _) in &c.members {
                let _ = stranger.send(PeerMessage {
                    from: 9,
                    to: *id,
                    term: 1000,
                    kind: PeerMessageKind::Vote {
                        last_index: 1000,
                        last_term: 999,
                        transfer: true,
                    },
                });
            }
            let statuses: Vec<ClusterStatus> = handles.iter().map(|h| h.status()).collect();
            let moved: Vec<(u64, Option<u64>)> =
                statuses.iter().map(|s| (s.term, s.leader)).collect();
            assert_eq!(moved, before, "a non-member moved a term or a leader");
            if statuses.iter().all(|s| s.messages_from_non_members >= 1) {
                break;
            }
            assert!(Instant::now() < deadline, "not dropped: {statuses:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(stranger);
        for n in c.nodes {
            n.shutdown().await;
        }
    });
}
