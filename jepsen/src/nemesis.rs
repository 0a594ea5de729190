//! Faults, and the seeded scheduler that composes them.
//!
//! Network faults go through the relays ([`crate::relay::Network`]); process faults through
//! signals ([`crate::control::Cluster`]); leadership transfers through the client protocol.
//! Every fault is recorded in the timeline with its start and its end (healing), so the
//! results show what was happening when an operation ran.

use std::time::Duration;

use crate::control::Cluster;
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
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 10] = [
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
    ];

    /// Parses a `--nemesis` value: a kind's name, `partition` (the network kinds), `process`
    /// (kill, pause, kill-all), `all`, or `none`.
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
    /// Nothing to undo.
    Nothing,
}

/// Cuts every link between nodes of different `groups`; `bridge` (if any) keeps every link.
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

/// Starts a fault of `kind`; returns what it did (for the timeline) and how to end it.
/// `leader` is the leader now, if known.
pub fn start(
    kind: Kind,
    cluster: &mut Cluster,
    rng: &mut Rng,
    leader: Option<u64>,
) -> (String, Active) {
    let mut ids = cluster.ids();
    rng.shuffle(&mut ids);
    let n = ids.len();
    // A victim: the leader half of the time (the interesting one), else any node.
    let victim = match leader {
        Some(l) if rng.below(2) == 0 => l,
        _ => ids[0],
    };
    match kind {
        Kind::PartitionOne => {
            let rest: Vec<u64> = ids.iter().copied().filter(|i| *i != victim).collect();
            partition(cluster, &[vec![victim], rest]);
            (format!("isolated {victim}"), Active::Network)
        }
        Kind::PartitionHalves => {
            let (minority, majority) = ids.split_at(n / 2);
            partition(cluster, &[minority.to_vec(), majority.to_vec()]);
            (
                format!("minority {minority:?} | majority {majority:?}"),
                Active::Network,
            )
        }
        Kind::Bridge => {
            // ids[0] is the bridge; the rest split in two, each seeing the bridge only.
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
            // Node ids[i] sees ids[i ± 1] only; with 3 nodes that is everyone, so cut one
            // link instead (a bridge).
            if n <= 3 {
                cluster.net.cut(ids[1], ids[2]);
                cluster.net.cut(ids[2], ids[1]);
                return (
                    format!("ring of 3: {} and {} cut", ids[1], ids[2]),
                    Active::Network,
                );
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
            cluster.net.degrade_all(rule);
            (format!("every link: {rule:?}"), Active::Network)
        }
        Kind::Kill => {
            cluster.kill(victim);
            (format!("killed {victim}"), Active::Killed(victim))
        }
        Kind::Pause => {
            cluster.pause(victim, true);
            (format!("paused {victim}"), Active::Paused(victim))
        }
        Kind::KillAll => {
            for id in cluster.ids() {
                cluster.kill(id);
            }
            ("killed every node".to_string(), Active::AllKilled)
        }
        Kind::Transfer => ("leadership transfer".to_string(), Active::Nothing),
    }
}

/// Ends a fault.
pub fn stop(active: &Active, cluster: &mut Cluster) -> anyhow::Result<()> {
    match active {
        Active::Network => cluster.net.heal(),
        Active::Killed(id) => cluster.start_node(*id)?,
        Active::Paused(id) => cluster.pause(*id, false),
        Active::AllKilled => {
            for id in cluster.ids() {
                if !cluster.running(id) {
                    cluster.start_node(id)?;
                }
            }
        }
        Active::Nothing => {}
    }
    Ok(())
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
