//! Faults, and the seeded scheduler that composes them.
//!
//! Network faults go through the relays ([`crate::relay::Network`]); process faults through
//! signals ([`crate::control::Cluster`]); storage faults through a killed node's files
//! ([`crate::control::Damage`]); leadership transfers and membership changes through the
//! client protocol, as an operator would. Every fault is recorded in the timeline with its
//! start and its end (healing), so the results show what was happening when an operation ran.

use std::path::Path;
use std::time::Duration;

use quiver_client::Client;

use crate::control::{Backend, Cluster, Damage};
use crate::relay::Rule;

/// A kind of fault the scheduler may choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// One node cut off from all others.
    PartitionOne,
    /// A random majority and minority, cut apart.
    PartitionHalves,
    /// Two halves that one node (the bridge) still sees both of.
    Bridge,
    /// Each node sees only its ring neighbours: every node a different majority (5 nodes).
    Ring,
    /// One node's datagrams to the others dropped, theirs to it delivered.
    OneWay,
    /// Delays with jitter (reordering), loss and duplication on every link.
    Degrade,
    /// One node killed (SIGKILL), restarted when the fault ends.
    Kill,
    /// One node paused (SIGSTOP), resumed (SIGCONT) when the fault ends.
    Pause,
    /// Every node killed, then all restarted.
    KillAll,
    /// Leadership handed to another voter.
    Transfer,
    /// A voter removed (the leader half of the time); when the fault ends a new node (new
    /// id, empty directory) is started and added: a learner, promoted once caught up.
    Membership,
    /// One node killed; what no fsync covered is dropped from its files (a power cut).
    LoseUnsynced,
    /// One node killed; of what no fsync covered, random 4 KiB pages kept (a torn write).
    TornWrite,
    /// One node killed; one bit flipped in what no fsync covered (a garbled write).
    GarbledWrite,
    /// One node killed; one bit flipped in long-synced data. It must refuse to start; it is
    /// then repaired from its peers: removed, and replaced by a new node.
    BitRot,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 15] = [
        Kind::PartitionOne,
        Kind::PartitionHalves,
        Kind::Bridge,
        Kind::Ring,
        Kind::OneWay,
        Kind::Degrade,
        Kind::Kill,
        Kind::Pause,
        Kind::KillAll,
        Kind::Transfer,
        Kind::Membership,
        Kind::LoseUnsynced,
        Kind::TornWrite,
        Kind::GarbledWrite,
        Kind::BitRot,
    ];

    /// The kinds the Docker backend makes (no relays, no access to files, no new nodes).
    pub const DOCKER: [Kind; 5] = [
        Kind::PartitionOne,
        Kind::Kill,
        Kind::Pause,
        Kind::KillAll,
        Kind::Transfer,
    ];

    /// The storage kinds (they need a `quiver` built with `--features fault-injection`).
    pub const STORAGE: [Kind; 4] = [
        Kind::LoseUnsynced,
        Kind::TornWrite,
        Kind::GarbledWrite,
        Kind::BitRot,
    ];

    /// Parses a `--nemesis` value: a kind's name, `partition` (the network kinds), `process`
    /// (kill, pause, kill-all), `storage` (the four storage kinds), `all`, or `none`.
    pub fn parse_list(text: &str) -> Result<Vec<Kind>, String> {
        let mut out = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let kinds: Vec<Kind> = match item {
                "all" => Kind::ALL.to_vec(),
                "none" => Vec::new(),
                "partition" => vec![
                    Kind::PartitionOne,
                    Kind::PartitionHalves,
                    Kind::Bridge,
                    Kind::Ring,
                    Kind::OneWay,
                ],
                "process" => vec![Kind::Kill, Kind::Pause, Kind::KillAll],
                "storage" => Kind::STORAGE.to_vec(),
                name => vec![*Kind::ALL
                    .iter()
                    .find(|k| k.name() == name)
                    .ok_or_else(|| format!("unknown nemesis `{name}`"))?],
            };
            out.extend(kinds);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Its name, as `--nemesis` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::PartitionOne => "partition-one",
            Kind::PartitionHalves => "partition-halves",
            Kind::Bridge => "bridge",
            Kind::Ring => "ring",
            Kind::OneWay => "one-way",
            Kind::Degrade => "degrade",
            Kind::Kill => "kill",
            Kind::Pause => "pause",
            Kind::KillAll => "kill-all",
            Kind::Transfer => "transfer",
            Kind::Membership => "membership",
            Kind::LoseUnsynced => "lose-unsynced",
            Kind::TornWrite => "torn-write",
            Kind::GarbledWrite => "garbled-write",
            Kind::BitRot => "bit-rot",
        }
    }
}

/// The scheduler's generator: splitmix64, seeded by the run's seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// `items` in a random order.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// A fault in force, and how to end it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Active {
    /// Links cut or degraded: heal them all.
    Network,
    /// A node killed: restart it.
    Killed(u64),
    /// A node paused: resume it.
    Paused(u64),
    /// Every node killed: restart them all.
    AllKilled,
    /// A node killed and its files damaged: restart it (and, for rot, expect a refusal and
    /// replace the node).
    Damaged(u64, Damage),
    /// A voter removed: add a new node in its place.
    Removed,
    /// Nothing to undo.
    Nothing,
    /// Not done (the cluster was not whole for a fault that takes a node out for good):
    /// not counted.
    Skipped,
}

/// Whether a fault of `kind` takes a node out for good (until a new one replaces it).
fn lasting(kind: Kind) -> bool {
    matches!(kind, Kind::Membership | Kind::BitRot)
}

/// Cuts every link between nodes of different `groups`.
fn partition(cluster: &Cluster, groups: &[Vec<u64>]) {
    let side = |id: u64| groups.iter().position(|g| g.contains(&id));
    for a in cluster.ids() {
        for b in cluster.ids() {
            if a != b && side(a) != side(b) {
                cluster.net.cut(a, b);
            }
        }
    }
}

/// The local cluster, for faults only it can make.
fn local(backend: &mut dyn Backend) -> anyhow::Result<&mut Cluster> {
    backend
        .local()
        .ok_or_else(|| anyhow::anyhow!("this fault needs the local backend"))
}

/// Starts a fault of `kind`; returns what it did (for the timeline) and how to end it.
/// `leader` is the leader now, if known; `root` holds the client files of the nemesis's own
/// client (transfers and membership). A kind the backend cannot make is skipped.
pub async fn start(
    kind: Kind,
    backend: &mut dyn Backend,
    rng: &mut Rng,
    leader: Option<u64>,
    root: &Path,
) -> anyhow::Result<(String, Active)> {
    if !backend.supports(kind) {
        return Ok((
            format!("skipped: {} is not made on this backend", kind.name()),
            Active::Skipped,
        ));
    }
    if lasting(kind) {
        let cluster = local(backend)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !cluster.settled() {
            if tokio::time::Instant::now() >= deadline {
                return Ok(("skipped: the cluster was not whole".into(), Active::Skipped));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let mut ids = backend.ids();
    rng.shuffle(&mut ids);
    let n = ids.len();
    // A victim: the leader half of the time (the interesting one), else any node.
    let victim = match leader {
        Some(l) if rng.below(2) == 0 && ids.contains(&l) => l,
        _ => ids[0],
    };
    Ok(match kind {
        Kind::PartitionOne => {
            backend.isolate(victim)?;
            (format!("isolated {victim}"), Active::Network)
        }
        Kind::PartitionHalves => {
            let (minority, majority) = ids.split_at(n / 2);
            partition(local(backend)?, &[minority.to_vec(), majority.to_vec()]);
            (
                format!("minority {minority:?} | majority {majority:?}"),
                Active::Network,
            )
        }
        Kind::Bridge => {
            // ids[0] is the bridge; the rest split in two, each seeing the bridge only.
            let cluster = local(backend)?;
            let bridge = ids[0];
            let rest = &ids[1..];
            let (a, b) = rest.split_at(rest.len() / 2);
            for x in a {
                for y in b {
                    cluster.net.cut(*x, *y);
                    cluster.net.cut(*y, *x);
                }
            }
            (
                format!("bridge {bridge} between {a:?} and {b:?}"),
                Active::Network,
            )
        }
        Kind::Ring => {
            let cluster = local(backend)?;
            // Node ids[i] sees ids[i ± 1] only; with 3 nodes that is everyone, so cut one
            // link instead (a bridge).
            if n <= 3 {
                cluster.net.cut(ids[1], ids[2]);
                cluster.net.cut(ids[2], ids[1]);
                return Ok((
                    format!("ring of 3: {} and {} cut", ids[1], ids[2]),
                    Active::Network,
                ));
            }
            for (i, a) in ids.iter().enumerate() {
                for (j, b) in ids.iter().enumerate() {
                    let d = i.abs_diff(j);
                    if a != b && d != 1 && d != n - 1 {
                        cluster.net.cut(*a, *b);
                    }
                }
            }
            (format!("ring {ids:?}"), Active::Network)
        }
        Kind::OneWay => {
            let cluster = local(backend)?;
            for other in ids.iter().filter(|i| **i != victim) {
                cluster.net.cut(victim, *other);
            }
            (format!("{victim} cannot send"), Active::Network)
        }
        Kind::Degrade => {
            let rule = Rule {
                delay: Duration::from_millis(rng.below(40)),
                jitter: Duration::from_millis(10 + rng.below(90)),
                loss: 0.05 + rng.below(20) as f64 / 100.0,
                duplicate: 0.05,
                ..Rule::default()
            };
            local(backend)?.net.degrade_all(rule);
            (format!("every link: {rule:?}"), Active::Network)
        }
        Kind::Kill => {
            backend.kill(victim);
            (format!("killed {victim}"), Active::Killed(victim))
        }
        Kind::Pause => {
            backend.pause(victim, true);
            (format!("paused {victim}"), Active::Paused(victim))
        }
        Kind::KillAll => {
            for id in backend.ids() {
                backend.kill(id);
            }
            ("killed every node".to_string(), Active::AllKilled)
        }
        Kind::Transfer => {
            let client = admin(backend, root).await?;
            let to = tokio::time::timeout(ADMIN_WAIT, client.cluster_transfer(None)).await;
            client.close().await;
            match to {
                Ok(Ok(to)) => (format!("leadership handed to {to}"), Active::Nothing),
                Ok(Err(e)) => (format!("leadership transfer refused: {e}"), Active::Nothing),
                Err(_) => ("leadership transfer: no answer".into(), Active::Nothing),
            }
        }
        Kind::Membership => {
            let cluster = local(backend)?;
            if (cluster.ids().len() as u64) < cluster.size {
                // A removal whose replacement did not join: add one now instead.
                let added = add(cluster, root).await?;
                return Ok((format!("short of a member: {added}"), Active::Nothing));
            }
            let client = admin(cluster, root).await?;
            let asked = tokio::time::timeout(ADMIN_WAIT, client.cluster_remove(victim)).await;
            let asked = match asked {
                Ok(Ok(index)) => format!("removal committed at {index}"),
                Ok(Err(e)) => format!("removal refused: {e}"),
                Err(_) => "removal: no answer".to_string(),
            };
            // Whatever the answer, the members' list says what happened.
            let listed = members(&client).await;
            client.close().await;
            match listed {
                Some(ids) if !ids.contains(&victim) => {
                    cluster.retire(victim);
                    (format!("removed {victim} ({asked})"), Active::Removed)
                }
                _ => (
                    format!("{victim} still a member ({asked})"),
                    Active::Nothing,
                ),
            }
        }
        Kind::LoseUnsynced | Kind::TornWrite | Kind::GarbledWrite | Kind::BitRot => {
            let cluster = local(backend)?;
            let damage = match kind {
                Kind::LoseUnsynced => Damage::LoseUnsynced,
                Kind::TornWrite => Damage::TearUnsynced,
                Kind::GarbledWrite => Damage::GarbleUnsynced,
                _ => Damage::RotSynced,
            };
            let how = if damage == Damage::RotSynced {
                cluster.kill(victim);
                "killed"
            } else if cluster.kill_mid_write(victim, Duration::from_secs(2)) {
                "killed mid-write"
            } else {
                "killed (no write in flight within 2 s)"
            };
            let what = cluster.damage(victim, damage, rng)?;
            (format!("{how}; {what}"), Active::Damaged(victim, damage))
        }
    })
}

/// How long an operator's request may take before the nemesis gives up on it.
const ADMIN_WAIT: Duration = Duration::from_secs(10);

/// A client of the members, for the nemesis's own requests.
async fn admin(backend: &dyn Backend, root: &Path) -> anyhow::Result<Client> {
    let config = backend.client_config(root);
    Ok(tokio::time::timeout(ADMIN_WAIT, Client::connect(config)).await??)
}

/// The members' ids as the cluster lists them, asked until one answers (bounded).
async fn members(client: &Client) -> Option<Vec<u64>> {
    for _ in 0..10 {
        if let Ok(Ok((_, list))) =
            tokio::time::timeout(Duration::from_secs(3), client.cluster_members()).await
        {
            return Some(list.iter().map(|m| m.id).collect());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

/// Starts a new node and asks the cluster to add it; it is a member when the cluster says
/// so, and is retired otherwise.
async fn add(cluster: &mut Cluster, root: &Path) -> anyhow::Result<String> {
    let id = cluster.add_node().await?;
    let (peer, client_addr) = (cluster.peer_addr(id), cluster.node(id).client);
    let client = admin(cluster, root).await?;
    let asked =
        tokio::time::timeout(ADMIN_WAIT, client.cluster_add(id, peer, Some(client_addr))).await;
    let asked = match asked {
        Ok(Ok(index)) => format!("added at {index}"),
        Ok(Err(e)) => format!("add refused: {e}"),
        Err(_) => "add: no answer".to_string(),
    };
    let listed = members(&client).await;
    client.close().await;
    Ok(match listed {
        Some(ids) if ids.contains(&id) => {
            cluster.admitted(id);
            format!("node {id} joined ({asked})")
        }
        _ => {
            cluster.retire(id);
            format!("node {id} not added ({asked}); retired")
        }
    })
}

/// Ends a fault; returns what it did (for the timeline).
pub async fn stop(
    active: &Active,
    backend: &mut dyn Backend,
    root: &Path,
) -> anyhow::Result<String> {
    Ok(match active {
        Active::Network => {
            backend.heal()?;
            "healed".into()
        }
        Active::Killed(id) => {
            backend.start_node(*id)?;
            format!("restarted {id}")
        }
        Active::Paused(id) => {
            backend.pause(*id, false);
            format!("resumed {id}")
        }
        Active::AllKilled => {
            for id in backend.ids() {
                if !backend.running(id) {
                    backend.start_node(id)?;
                }
            }
            "restarted every node".into()
        }
        Active::Damaged(id, damage) => {
            let cluster = local(backend)?;
            cluster.start_node(*id)?;
            if *damage != Damage::RotSynced {
                return Ok(format!("restarted {id}"));
            }
            // Rot in synced data must be refused at open. Give it time to say so.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            let refused = loop {
                if let Some(status) = cluster.exited(*id) {
                    break Some(status);
                }
                if tokio::time::Instant::now() >= deadline {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            match refused {
                None => {
                    cluster.undetected += 1;
                    format!("restarted {id}: it STARTED on a rotten segment (undetected)")
                }
                Some(status) => {
                    let named = cluster.log(*id).contains("corruption in ");
                    if !named {
                        cluster.undetected += 1;
                    }
                    let named = if named {
                        "corruption named"
                    } else {
                        "no corruption named in its log"
                    };
                    // Repair from the peers: the broken node leaves, a new one joins.
                    let client = admin(cluster, root).await?;
                    let removed =
                        tokio::time::timeout(ADMIN_WAIT, client.cluster_remove(*id)).await;
                    client.close().await;
                    cluster.retire(*id);
                    let added = add(cluster, root).await?;
                    format!(
                        "{id} refused to start ({status}, {named}); removed ({}); {added}",
                        match removed {
                            Ok(Ok(i)) => format!("at {i}"),
                            Ok(Err(e)) => e.to_string(),
                            Err(_) => "no answer".into(),
                        }
                    )
                }
            }
        }
        Active::Removed => add(local(backend)?, root).await?,
        Active::Nothing | Active::Skipped => String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nemesis_lists_parse() {
        assert_eq!(Kind::parse_list("all").unwrap().len(), Kind::ALL.len());
        assert_eq!(
            Kind::parse_list("kill,pause").unwrap(),
            vec![Kind::Kill, Kind::Pause]
        );
        assert_eq!(Kind::parse_list("none").unwrap(), vec![]);
        assert_eq!(Kind::parse_list("partition").unwrap().len(), 5);
        assert_eq!(Kind::parse_list("storage").unwrap().len(), 4);
        assert!(Kind::parse_list("meteor").is_err());
        for k in Kind::ALL {
            assert_eq!(Kind::parse_list(k.name()).unwrap(), vec![k]);
        }
    }

    #[test]
    fn the_generator_is_seeded_and_shuffles_everything() {
        let (mut a, mut b) = (Rng::new(9), Rng::new(9));
        assert_eq!(a.next_u64(), b.next_u64());
        let mut v: Vec<u64> = (0..10).collect();
        a.shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    }
}
