//! The Docker backend against real compose clusters. Three nodes: append, kill the leader,
//! restart it, pause a follower, isolate the leader, kill a follower while it is away, heal
//! and restart (their IPs usually move), then read every acknowledged event back from every
//! node exactly once. Five nodes (two services added by the generated override): a minority
//! holding the leader cut off and healed, the leader killed and restarted, every event read
//! back on all five.
//!
//! Skipped (and passing, with the reason printed) when the Docker engine does not answer or
//! the image is not there: it never builds the image (`QUIVER_IMAGE=quiver:jepsen
//! examples/docker/build.sh`; `QUIVER_JEPSEN_IMAGE` names another). Every wait is bounded;
//! the scenarios run one at a time, bounded at 100 s and 70 s, and a cluster is removed
//! however its scenario ends (checked with `docker ps -a`, `network ls`, `volume ls`).

use std::future::Future;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use quiver_client::{Client, ClientConfig, EventData, ExpectedVersion, ReadStreamOptions};
use quiver_jepsen::docker::DockerCluster;

const STREAM: &str = "docker-backend";

/// Why the test cannot run here, if it cannot.
fn skip_reason(image: &str) -> Option<String> {
    let quiet = |args: &[&str]| {
        Command::new("docker")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !quiet(&["info"]) {
        return Some("the Docker engine does not answer (`docker info` failed)".into());
    }
    if !quiet(&["image", "inspect", image]) {
        return Some(format!(
            "no image {image}: build it with `QUIVER_IMAGE={image} examples/docker/build.sh`"
        ));
    }
    None
}

fn log(t0: Instant, what: impl AsRef<str>) {
    eprintln!("[{:>5.1}s] {}", t0.elapsed().as_secs_f64(), what.as_ref());
}

/// The leader every answering node agrees on (at least a majority answering).
fn leader(cluster: &DockerCluster) -> Option<u64> {
    let ids = cluster.ids();
    let statuses: Vec<_> = ids.iter().filter_map(|i| cluster.status(*i)).collect();
    if statuses.len() * 2 <= ids.len() {
        return None;
    }
    let l = statuses.iter().find(|s| s.role == "leader")?;
    statuses
        .iter()
        .all(|s| s.leader == Some(l.node_id) || s.term < l.term)
        .then_some(l.node_id)
}

/// Waits up to `limit` for a leader for which `accept` holds.
async fn wait_leader(
    cluster: &DockerCluster,
    limit: Duration,
    accept: impl Fn(u64) -> bool,
) -> Option<u64> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(l) = leader(cluster).filter(|l| accept(*l)) {
            return Some(l);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn config(cluster: &DockerCluster, root: &Path, ids: &[u64]) -> ClientConfig {
    let mut c = ClientConfig::local(root)
        .ca_file(cluster.ca())
        .timeout(Duration::from_secs(3))
        .servers(ids.iter().map(|i| cluster.client(*i)));
    if let Some(t) = cluster.token() {
        c = c.token(t);
    }
    c
}

/// Appends events `range` one at a time through a client of `cfg`, each retried with the
/// same event id (idempotent) until acknowledged, within 30 s each.
async fn append(cfg: &ClientConfig, acked: &mut Vec<u64>, range: std::ops::Range<u64>) {
    let mut client: Option<Client> = None;
    for n in range {
        let event = EventData::json("counted", format!("{{\"n\":{n}}}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut tries = 0;
        loop {
            tries += 1;
            let c = match &client {
                Some(c) => c,
                None => match Client::connect(cfg.clone()).await {
                    Ok(c) => client.insert(c),
                    Err(e) => {
                        assert!(Instant::now() < deadline, "connecting for event {n}: {e}");
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        continue;
                    }
                },
            };
            match c
                .append(STREAM, ExpectedVersion::Any, vec![event.clone()])
                .await
            {
                Ok(_) => break,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "event {n} not acknowledged in 30 s ({tries} tries): {e}"
                    );
                    client = None;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
        acked.push(n);
    }
}

/// The `n` of every event of the stream as node `id` holds it (follower reads: no leader
/// asked).
async fn read_on(cluster: &DockerCluster, root: &Path, id: u64) -> Vec<u64> {
    let cfg = config(cluster, root, &[id]).follower_reads(true);
    let client = Client::connect(cfg)
        .await
        .expect("connecting for the final read");
    let mut events = client
        .read_stream(STREAM, ReadStreamOptions::default())
        .await
        .unwrap_or_else(|e| panic!("reading on node {id}: {e}"));
    let mut out = Vec::new();
    while let Some(e) = events.next().await.expect("reading on") {
        let v: serde_json::Value = serde_json::from_slice(&e.data).expect("JSON data");
        out.push(v["n"].as_u64().expect("an n"));
    }
    out
}

/// Waits (up to `limit`) until every node runs, answers, names one leader and has applied
/// that leader's commit index; returns the leader.
async fn caught_up(cluster: &DockerCluster, limit: Duration) -> u64 {
    let ids = cluster.ids();
    let deadline = Instant::now() + limit;
    loop {
        if let Some(l) = leader(cluster) {
            let commit = cluster.status(l).map_or(u64::MAX, |s| s.commit);
            let statuses: Vec<_> = ids.iter().map(|i| cluster.status(*i)).collect();
            if statuses.iter().all(|s| {
                s.as_ref()
                    .is_some_and(|s| s.applied >= commit && s.leader == Some(l))
            }) {
                return l;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not every node caught up within {limit:?}: {:?}",
            ids.iter()
                .map(|i| cluster
                    .status(*i)
                    .map(|s| (s.role, s.leader, s.commit, s.applied)))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Once every node has applied the leader's commit index, reads the stream on every node
/// (follower reads): each must hold exactly `acked`, in order, each event once.
async fn read_back(cluster: &DockerCluster, root: &Path, acked: &[u64], t0: Instant) {
    let ids = cluster.ids();
    let l = caught_up(cluster, Duration::from_secs(30)).await;
    let commit = cluster.status(l).expect("leader status").commit;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ids
        .iter()
        .all(|i| cluster.status(*i).is_some_and(|s| s.applied >= commit))
    {
        assert!(
            Instant::now() < deadline,
            "the last appends were not applied everywhere"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in &ids {
        let events = read_on(cluster, root, *id).await;
        assert_eq!(events, acked, "node {id} holds another stream");
    }
    log(
        t0,
        format!(
            "{} events read back on each of {} nodes",
            acked.len(),
            ids.len()
        ),
    );
}

/// What is left of this process's projects (every cluster of it is named
/// `quiver-jepsen-PID-K`): containers, networks, volumes.
fn leftovers() -> Vec<String> {
    let name = format!("name=quiver-jepsen-{}-", std::process::id());
    let mut left = Vec::new();
    for list in [&["ps", "-a"][..], &["network", "ls"], &["volume", "ls"]] {
        let out = Command::new("docker")
            .args(list)
            .args(["-q", "--filter", &name])
            .output()
            .expect("docker");
        left.extend(
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(|s| format!("{} {s}", list[0])),
        );
    }
    left
}

async fn three_nodes(image: &str, root: &Path, t0: Instant) {
    let mut cluster = DockerCluster::start(image, 3, root, 7)
        .await
        .expect("starting the compose cluster");
    let ids = cluster.ids();
    log(t0, format!("containers up, node ids {ids:?}"));
    let first = wait_leader(&cluster, Duration::from_secs(90), |_| true)
        .await
        .expect("no leader within 90 s");
    log(t0, format!("leader {first}"));
    // Container index <-> node id: every node reports the id it was given.
    for id in &ids {
        let s = cluster.status(*id).expect("a status");
        assert_eq!(s.node_id, *id);
        assert_eq!(s.voters.len(), 3, "{s:?}");
    }
    assert!(cluster.ca().exists(), "the CA was copied out");

    let mut acked = Vec::new();
    append(&config(&cluster, root, &ids), &mut acked, 0..20).await;
    log(t0, "20 events acknowledged");

    // Kill the leader: a new one among the two others, and appends go on.
    cluster.kill(first);
    assert!(!cluster.running(first));
    assert!(cluster.status(first).is_none());
    let killed_at = Instant::now();
    let second = wait_leader(&cluster, Duration::from_secs(30), |l| l != first)
        .await
        .expect("no new leader within 30 s of killing the old one");
    log(
        t0,
        format!(
            "killed {first}; new leader {second} after {:.1} s",
            killed_at.elapsed().as_secs_f64()
        ),
    );
    append(&config(&cluster, root, &ids), &mut acked, 20..30).await;
    log(t0, "10 more acknowledged with the old leader down");

    // Start it again: its volume is kept; its IP may be another.
    let before = cluster.client(first);
    cluster.start_node(first).expect("docker start");
    assert!(cluster.running(first));
    log(
        t0,
        format!("restarted {first}: {before} -> {}", cluster.client(first)),
    );
    let rejoined = Instant::now();
    wait_leader(&cluster, Duration::from_secs(30), |_| {
        cluster.status(first).is_some_and(|s| s.leader.is_some())
    })
    .await
    .expect("the restarted node did not rejoin within 30 s");
    log(
        t0,
        format!(
            "{first} knows the leader again after {:.1} s",
            rejoined.elapsed().as_secs_f64()
        ),
    );

    // Pause a follower: the two others carry on; it answers nothing while frozen.
    let leader_now = leader(&cluster).expect("a leader");
    let follower = *ids.iter().find(|i| **i != leader_now).expect("a follower");
    cluster.pause(follower, true);
    assert!(cluster.running(follower));
    assert!(cluster.status(follower).is_none(), "a paused node answered");
    append(&config(&cluster, root, &ids), &mut acked, 30..35).await;
    cluster.pause(follower, false);
    log(t0, format!("paused {follower}, 5 appended, unpaused"));

    // Isolate the leader: the others elect another; the isolated one still reports its
    // status (from inside its container); heal: it comes back, maybe at another address.
    let isolated = wait_leader(&cluster, Duration::from_secs(30), |_| true)
        .await
        .expect("a leader before isolating");
    let before = cluster.client(isolated);
    cluster
        .isolate(isolated)
        .expect("docker network disconnect");
    let cut_at = Instant::now();
    let others: Vec<u64> = ids.iter().copied().filter(|i| *i != isolated).collect();
    let third = wait_leader(&cluster, Duration::from_secs(30), |l| l != isolated)
        .await
        .expect("no leader on the majority side within 30 s");
    log(
        t0,
        format!(
            "isolated {isolated}; leader {third} after {:.1} s",
            cut_at.elapsed().as_secs_f64()
        ),
    );
    append(&config(&cluster, root, &others), &mut acked, 35..40).await;
    let inside = cluster
        .status(isolated)
        .expect("the isolated node's status");
    assert_eq!(inside.node_id, isolated);
    log(
        t0,
        format!(
            "the isolated node says: {} in term {}, leader {:?}, commit {}",
            inside.role, inside.term, inside.leader, inside.commit
        ),
    );
    // Addresses move. A follower is killed while the isolated node is off the network, so
    // both IPs are free; Docker's IPAM hands out the lowest free address, so the one of the
    // two attached first takes the lower IP and the other the higher: attaching first the
    // one whose own IP is the higher swaps them. Every node must then find every other at
    // its new address (from their discovery announcements) and clients must reach them.
    let victim = *others.iter().find(|i| **i != third).expect("a follower");
    let victim_before = cluster.client(victim);
    cluster.kill(victim);
    if victim_before.ip() < before.ip() {
        cluster.heal().expect("docker network connect");
        cluster.start_node(victim).expect("docker start");
    } else {
        cluster.start_node(victim).expect("docker start");
        cluster.heal().expect("docker network connect");
    }
    let healed_at = Instant::now();
    log(
        t0,
        format!(
            "killed {victim}, restarted it and healed {isolated}: {isolated} {before} -> {}, \
             {victim} {victim_before} -> {}",
            cluster.client(isolated),
            cluster.client(victim)
        ),
    );
    assert!(
        cluster.client(isolated) != before || cluster.client(victim) != victim_before,
        "no address moved (has Docker's address allocation changed?): the test no longer \
         covers nodes coming back at another IP"
    );

    let caught_up = caught_up(&cluster, Duration::from_secs(40)).await;
    log(
        t0,
        format!(
            "every node applied the leader's ({caught_up}) commit {:.1} s after healing",
            healed_at.elapsed().as_secs_f64()
        ),
    );
    // An append through every node's address (followers redirect to the leader).
    append(&config(&cluster, root, &ids), &mut acked, 40..45).await;

    // Every acknowledged event, once, in order, on every node.
    read_back(&cluster, root, &acked, t0).await;
    cluster.save_logs(&root.join("logs"));
    for id in &ids {
        let log = std::fs::read_to_string(root.join("logs").join(format!("n{id}.log")))
            .expect("a saved log");
        assert!(log.contains("quiver is serving"), "node {id}'s log: {log}");
    }
}

/// Five nodes (the compose file's three and two more from the generated override): a
/// minority holding the leader cut off, a new leader on the majority side, healed; then the
/// leader killed and started again; every event read back on all five.
async fn five_nodes(image: &str, root: &Path, t0: Instant) {
    let mut cluster = DockerCluster::start(image, 5, root, 11)
        .await
        .expect("starting the compose cluster");
    let ids = cluster.ids();
    let first = wait_leader(&cluster, Duration::from_secs(60), |_| true)
        .await
        .expect("no leader within 60 s");
    log(t0, format!("5 nodes {ids:?}, leader {first}"));
    for id in &ids {
        let s = cluster.status(*id).expect("a status");
        assert_eq!(s.node_id, *id);
        assert_eq!(s.voters.len(), 5, "{s:?}");
    }
    let mut acked = Vec::new();
    append(&config(&cluster, root, &ids), &mut acked, 0..10).await;

    let minority = [first, *ids.iter().find(|i| **i != first).expect("another")];
    let majority: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|i| !minority.contains(i))
        .collect();
    for id in minority {
        cluster.isolate(id).expect("docker network disconnect");
    }
    let second = wait_leader(&cluster, Duration::from_secs(30), |l| majority.contains(&l))
        .await
        .expect("no leader on the majority side within 30 s");
    log(t0, format!("cut off {minority:?}; leader {second}"));
    append(&config(&cluster, root, &majority), &mut acked, 10..20).await;
    cluster.heal().expect("docker network connect");
    caught_up(&cluster, Duration::from_secs(30)).await;
    log(t0, "healed, every node caught up");

    let leader_now = caught_up(&cluster, Duration::from_secs(5)).await;
    cluster.kill(leader_now);
    let third = wait_leader(&cluster, Duration::from_secs(30), |l| l != leader_now)
        .await
        .expect("no new leader within 30 s of killing the old one");
    append(&config(&cluster, root, &ids), &mut acked, 20..25).await;
    cluster.start_node(leader_now).expect("docker start");
    log(
        t0,
        format!("killed {leader_now}, leader {third}, restarted {leader_now}"),
    );
    append(&config(&cluster, root, &ids), &mut acked, 25..30).await;
    read_back(&cluster, root, &acked, t0).await;
}

/// Runs `scenario` against a fresh cluster directory, bounded at `limit`, one test at a
/// time (two clusters at once would only slow each other down on a small machine); then
/// checks that nothing of this process's clusters is left in Docker.
async fn run_bounded<F, Fut>(name: &str, limit: Duration, scenario: F)
where
    F: FnOnce(String, std::path::PathBuf, Instant) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let image = std::env::var("QUIVER_JEPSEN_IMAGE").unwrap_or_else(|_| "quiver:jepsen".into());
    if let Some(why) = skip_reason(&image) {
        eprintln!("SKIPPED {name}: {why}");
        return;
    }
    let _serial = SERIAL.lock().await;
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("docker-backend-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let t0 = Instant::now();
    // A panic or the time limit drops the scenario's future, and the cluster with it.
    let outcome = tokio::spawn(tokio::time::timeout(
        limit,
        scenario(image, root.clone(), t0),
    ))
    .await;
    let left = leftovers();
    log(t0, format!("{name} done; left behind: {left:?}"));
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(_)) => panic!("{name} took more than {limit:?}"),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
    assert!(left.is_empty(), "left behind: {left:?}");
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_survive_kill_pause_and_isolation() {
    run_bounded(
        "three",
        Duration::from_secs(100),
        |image, root, t0| async move { three_nodes(&image, &root, t0).await },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_survive_a_minority_cut_off_and_a_killed_leader() {
    run_bounded(
        "five",
        Duration::from_secs(70),
        |image, root, t0| async move { five_nodes(&image, &root, t0).await },
    )
    .await;
}
