//! Discovery on loopback (seeds, no broadcast; no root needed): real `quiver serve`
//! processes given only a cluster size, a secret and a seed form a cluster; a fresh node
//! found later is shown as discovered and is not added past the cluster size; when a voter
//! is removed, the leader's `--auto-join` adds it and it becomes a voter; a member killed
//! and restarted rejoins from the membership kept in its data directory. No node is given
//! a certificate: each generates its own, and one node's CA verifies them all.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{runtime, Cluster, FORM_LIMIT, SECRET};
use quiver_client::{EventData, ExpectedVersion, ReadStreamOptions};
use quiver_server::cluster::ClusterStatus;

/// The node id a node generated for itself.
fn node_id(c: &Cluster, label: u64) -> u64 {
    let dir = &c.nodes.iter().find(|n| n.id == label).unwrap().dir;
    std::fs::read_to_string(dir.join("data").join("node-id"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn wait_until(c: &Cluster, what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < limit,
            "{what}: not within {limit:?}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn status_of(c: &Cluster, id: u64) -> Option<ClusterStatus> {
    c.nodes
        .iter()
        .find(|n| n.child.is_some() && n.status().is_some_and(|s| s.node_id == id))
        .and_then(|n| n.status())
}

#[test]
fn seeds_form_a_cluster_auto_join_fills_a_removed_voters_place_and_a_restart_rejoins() {
    let mut c = Cluster::new(4);
    let ports: Vec<u16> = (0..4).map(|_| common::cluster::free_udp_port()).collect();
    let seed = format!("127.0.0.1:{}", ports[0]);
    for (i, n) in c.nodes.iter_mut().enumerate() {
        n.tls = None;
        n.extra = [
            "--cluster-size",
            "3",
            "--discovery-port",
            &ports[i].to_string(),
            "--seeds",
            &seed,
            "--no-broadcast",
            "--auto-join",
        ]
        .map(String::from)
        .to_vec();
    }
    for label in 1..=3 {
        c.node(label).start("", SECRET, false);
    }
    let (leader, _, statuses) = c.wait_for_leader(FORM_LIMIT, None);
    let mut ids: Vec<u64> = (1..=3).map(|l| node_id(&c, l)).collect();
    ids.sort_unstable();
    for s in &statuses {
        assert_eq!(s.voters, ids, "one cluster of the three");
    }

    // Writes through any node, trusting only node 1's generated CA.
    let ca = c.nodes[0].dir.join("data").join("tls").join("ca.pem");
    let rt = runtime();
    let addrs: Vec<_> = c.nodes[..3].iter().map(|n| n.client).collect();
    let client = rt.block_on(async {
        let config = quiver_client::ClientConfig::local(c.root())
            .ca_file(&ca)
            .timeout(Duration::from_secs(5))
            .servers(addrs.iter().rev().copied());
        quiver_client::Client::connect(config).await.unwrap()
    });
    let events = |n: usize| -> Vec<EventData> {
        (0..n)
            .map(|i| EventData::json("e", format!("{{\"i\":{i}}}")))
            .collect()
    };
    rt.block_on(client.append("s", ExpectedVersion::Any, events(10)))
        .unwrap();

    // A fourth fresh node: found, shown, not added (the cluster has its three voters).
    c.node(4).start("", SECRET, false);
    let fourth = {
        wait_until(&c, "node 4 has an id", Duration::from_secs(10), || {
            c.nodes[3].dir.join("data").join("node-id").exists()
        });
        node_id(&c, 4)
    };
    wait_until(&c, "node 4 discovered", Duration::from_secs(15), || {
        status_of(&c, leader).is_some_and(|s| s.discovered.iter().any(|d| d.id == fourth))
    });
    std::thread::sleep(Duration::from_secs(2));
    let s = status_of(&c, leader).unwrap();
    assert!(
        !s.voters.contains(&fourth) && !s.learners.contains(&fourth),
        "added past the cluster size: {s:?}"
    );

    // A voter removed: the leader's --auto-join fills its place with node 4.
    let removed = *ids.iter().find(|id| **id != leader).unwrap();
    rt.block_on(client.cluster_remove(removed)).unwrap();
    let removed_label = (1..=3).find(|l| node_id(&c, *l) == removed).unwrap();
    c.node(removed_label).kill();
    wait_until(
        &c,
        "node 4 a voter by auto-join",
        Duration::from_secs(30),
        || status_of(&c, leader).is_some_and(|s| s.voters.contains(&fourth) && s.voters.len() == 3),
    );
    wait_until(&c, "node 4 caught up", Duration::from_secs(30), || {
        let l = status_of(&c, leader).unwrap();
        status_of(&c, fourth).is_some_and(|s| s.applied >= l.commit && s.ready)
    });

    // A member killed and restarted rejoins from its data directory, and reads see every
    // event written before and while it was down.
    let other = (1..=3)
        .find(|l| *l != removed_label && node_id(&c, *l) != leader)
        .unwrap();
    c.node(other).kill();
    rt.block_on(client.append("s", ExpectedVersion::Any, events(5)))
        .unwrap();
    c.node(other).start("", SECRET, false);
    let restarted = node_id(&c, other);
    wait_until(
        &c,
        "the restarted node caught up",
        Duration::from_secs(30),
        || {
            let Some(l) = status_of(&c, leader) else {
                return false;
            };
            status_of(&c, restarted)
                .is_some_and(|s| s.leader == Some(leader) && s.applied >= l.commit)
        },
    );
    let read = rt.block_on(async {
        let mut events = client
            .read_stream("s", ReadStreamOptions::default())
            .await?;
        let mut n = 0;
        while events.next().await?.is_some() {
            n += 1;
        }
        Ok::<_, quiver_client::Error>(n)
    });
    assert_eq!(read.unwrap(), 15);
    drop(client);
}
