//! Deterministic simulation of the Raft core: 3- and 5-node clusters over a simulated network
//! that drops, delays, reorders and duplicates messages and partitions nodes (one-way too),
//! with crashes that lose everything not persisted. After every step it checks election
//! safety (at most one leader per term) and state-machine safety (every node applies the same
//! entry at each index: nothing committed is ever lost or changed); at the end of each run
//! it heals the cluster and checks liveness (a leader is elected and a new proposal commits).
//!
//! Every run is a pure function of its seed; a failure prints the seed, and
//! `QUIVER_SEED=<seed> cargo test -p quiver-raft --test sim -- replay` replays it. The long
//! soak: `QUIVER_SOAK_SECS=3600 cargo test -p quiver-raft --release --test sim -- --ignored`.

use std::collections::{BTreeMap, BTreeSet};

use quiver_raft::{Config, Entry, MemStorage, Message, RawNode, Role, Storage};

/// splitmix64: the simulation's only randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

struct Sim {
    n: usize,
    seed: u64,
    rng: Rng,
    nodes: Vec<Option<RawNode<MemStorage>>>,
    /// What each node persisted (kept across its crashes).
    disks: Vec<MemStorage>,
    /// Messages in flight: (deliver at step, message).
    net: Vec<(u64, Message)>,
    /// Blocked directions (from, to).
    blocked: BTreeSet<(u64, u64)>,
    drop_percent: u64,
    step: u64,
    /// Per node, the last index it applied.
    applied: Vec<u64>,
    /// The one committed sequence every node must agree on: index - 1 → (term, data).
    committed: Vec<(u64, Vec<u8>)>,
    leaders: BTreeMap<u64, u64>,
    proposals: u64,
}

impl Sim {
    fn new(seed: u64, n: usize) -> Sim {
        let mut sim = Sim {
            n,
            seed,
            rng: Rng(seed),
            nodes: Vec::new(),
            disks: vec![MemStorage::default(); n],
            net: Vec::new(),
            blocked: BTreeSet::new(),
            drop_percent: 0,
            step: 0,
            applied: vec![0; n],
            committed: Vec::new(),
            leaders: BTreeMap::new(),
            proposals: 0,
        };
        for i in 0..n {
            let node = sim.boot(i);
            sim.nodes.push(Some(node));
        }
        sim
    }

    fn ids(&self) -> Vec<u64> {
        (1..=self.n as u64).collect()
    }

    fn boot(&mut self, i: usize) -> RawNode<MemStorage> {
        let mut config = Config::new(i as u64 + 1, self.ids(), self.seed ^ self.step);
        config.entries_per_append_max = 4;
        config.in_flight_max = 4;
        RawNode::new(config, self.disks[i].clone())
    }

    fn fail(&self, why: String) -> ! {
        panic!(
            "seed {} (n = {}) step {}: {why}",
            self.seed, self.n, self.step
        );
    }

    /// Persists, sends and applies what node `i` has ready, checking safety.
    fn drain(&mut self, i: usize) {
        let Some(node) = self.nodes[i].as_mut() else {
            return;
        };
        while node.has_ready() {
            let ready = node.ready();
            let disk = node.storage_mut();
            disk.append(&ready.entries);
            if let Some(hs) = ready.hard_state {
                disk.set_hard_state(hs);
            }
            self.disks[i] = node.storage().clone();
            for m in ready.messages.iter().cloned() {
                let delay = 1 + self.rng.below(4);
                self.net.push((self.step + delay, m));
            }
            for e in &ready.committed {
                let Entry { index, term, data } = e;
                if *index != self.applied[i] + 1 {
                    let why = format!("node {} applied {index} after {}", i + 1, self.applied[i]);
                    self.fail(why);
                }
                self.applied[i] = *index;
                let at = (*index - 1) as usize;
                match self.committed.get(at) {
                    Some((t, d)) if (t, d) != (term, data) => self.fail(format!(
                        "node {} applied ({term}, {data:?}) at {index}, others applied ({t}, {d:?})",
                        i + 1
                    )),
                    Some(_) => {}
                    None => self.committed.push((*term, data.clone())),
                }
            }
            node.advance(ready);
        }
        if node.role() == Role::Leader {
            let (term, id) = (node.term(), i as u64 + 1);
            if let Some(other) = self.leaders.insert(term, id) {
                if other != id {
                    self.fail(format!("two leaders in term {term}: {other} and {id}"));
                }
            }
        }
    }

    fn deliver_some(&mut self) {
        let due: Vec<usize> = (0..self.net.len())
            .filter(|k| self.net[*k].0 <= self.step)
            .collect();
        if due.is_empty() {
            return;
        }
        // Deliver due messages in a random order: reordering.
        let k = due[self.rng.below(due.len() as u64) as usize];
        let (_, m) = self.net.swap_remove(k);
        if self.blocked.contains(&(m.from, m.to)) || self.rng.chance(self.drop_percent) {
            return;
        }
        if self.rng.chance(3) {
            // Duplicate, later.
            let later = self.step + 1 + self.rng.below(8);
            self.net.push((later, m.clone()));
        }
        let to = (m.to - 1) as usize;
        if let Some(node) = self.nodes[to].as_mut() {
            node.step(m);
            self.drain(to);
        }
    }

    fn fault(&mut self) {
        match self.rng.below(6) {
            0 => {
                // Partition: a random minority or majority cut off, maybe one way only.
                self.blocked.clear();
                let side: Vec<u64> = self
                    .ids()
                    .into_iter()
                    .filter(|_| self.rng.chance(40))
                    .collect();
                let one_way = self.rng.chance(30);
                for a in &side {
                    for b in self.ids() {
                        if !side.contains(&b) {
                            self.blocked.insert((*a, b));
                            if !one_way {
                                self.blocked.insert((b, *a));
                            }
                        }
                    }
                }
            }
            1 => self.blocked.clear(),
            2 => {
                // Crash: everything not persisted is lost.
                let i = self.rng.below(self.n as u64) as usize;
                self.nodes[i] = None;
            }
            3 => {
                let i = self.rng.below(self.n as u64) as usize;
                if self.nodes[i].is_none() {
                    self.applied[i] = 0;
                    let node = self.boot(i);
                    self.nodes[i] = Some(node);
                }
            }
            4 => self.drop_percent = self.rng.below(30),
            _ => self.drop_percent = 0,
        }
    }

    fn propose(&mut self) {
        for i in 0..self.n {
            if let Some(node) = self.nodes[i].as_mut() {
                if node.role() == Role::Leader {
                    self.proposals += 1;
                    let data = format!("p{}", self.proposals).into_bytes();
                    node.propose(data).expect("a leader accepts proposals");
                    self.drain(i);
                    return;
                }
            }
        }
    }

    fn run_step(&mut self, faults: bool) {
        self.step += 1;
        match self.rng.below(100) {
            0..=39 => {
                let i = self.rng.below(self.n as u64) as usize;
                if let Some(node) = self.nodes[i].as_mut() {
                    node.tick();
                    self.drain(i);
                }
            }
            40..=79 => {
                for _ in 0..3 {
                    self.deliver_some();
                }
            }
            80..=89 => self.propose(),
            _ if faults => self.fault(),
            _ => {}
        }
    }

    fn heal(&mut self) {
        self.blocked.clear();
        self.drop_percent = 0;
        for i in 0..self.n {
            if self.nodes[i].is_none() {
                self.applied[i] = 0;
                let node = self.boot(i);
                self.nodes[i] = Some(node);
            }
        }
    }

    /// After healing, a leader appears and a new proposal commits within a bound.
    fn check_liveness(&mut self) {
        self.heal();
        let before = self.committed.len();
        let mut proposed = false;
        for _ in 0..20_000 {
            self.run_step(false);
            if !proposed
                && self
                    .nodes
                    .iter()
                    .flatten()
                    .any(|n| n.role() == Role::Leader)
            {
                self.propose();
                proposed = true;
            }
            if proposed && self.committed.len() > before {
                return;
            }
        }
        self.fail(format!("no progress after healing (proposed: {proposed})"));
    }
}

fn run(seed: u64, n: usize, steps: u64) {
    let mut sim = Sim::new(seed, n);
    for _ in 0..steps {
        sim.run_step(true);
    }
    sim.check_liveness();
}

fn seeds(count: u64, base: u64) -> impl Iterator<Item = u64> {
    (0..count).map(move |k| base.wrapping_add(k.wrapping_mul(0x9E37_79B9)))
}

#[test]
fn three_nodes_many_seeds() {
    for seed in seeds(3000, 1) {
        run(seed, 3, 2000);
    }
}

#[test]
fn five_nodes_many_seeds() {
    for seed in seeds(1000, 7) {
        run(seed, 5, 2500);
    }
}

#[test]
fn replay() {
    if let Ok(seed) = std::env::var("QUIVER_SEED") {
        let seed = seed.parse().expect("QUIVER_SEED is a number");
        run(seed, 3, 2000);
        run(seed, 5, 2500);
    }
}

#[test]
#[ignore = "a long soak: QUIVER_SOAK_SECS=3600 cargo test -p quiver-raft --release -- --ignored"]
fn soak() {
    let secs = std::env::var("QUIVER_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let started = std::time::Instant::now();
    let mut seed = started.elapsed().as_nanos() as u64 ^ 0x5EED;
    let mut runs = 0u64;
    while started.elapsed().as_secs() < secs {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        run(seed, 3 + 2 * (seed % 2) as usize, 2000);
        runs += 1;
    }
    eprintln!("soak: {runs} runs in {secs} s, no failure");
}

#[test]
fn a_single_node_commits_its_own_proposals() {
    let mut node = RawNode::new(Config::new(1, vec![1], 1), MemStorage::default());
    for _ in 0..30 {
        node.tick();
    }
    assert_eq!(node.role(), Role::Leader);
    node.propose(b"x".to_vec()).unwrap();
    let mut applied = Vec::new();
    while node.has_ready() {
        let ready = node.ready();
        node.storage_mut().append(&ready.entries);
        if let Some(hs) = ready.hard_state {
            node.storage_mut().set_hard_state(hs);
        }
        applied.extend(ready.committed.iter().map(|e| e.data.clone()));
        node.advance(ready);
    }
    assert_eq!(
        applied,
        vec![Vec::new(), b"x".to_vec()],
        "the no-op, then the proposal"
    );
    assert_eq!(node.storage().last_index(), 2);
}

#[test]
fn runs_exercise_elections_commits_and_faults() {
    // A simulator that never elects or commits would pass every safety check: make sure it
    // does both, across crashes and partitions.
    let (mut commits, mut terms, mut proposals) = (0, 0, 0);
    for seed in seeds(50, 99) {
        let mut sim = Sim::new(seed, 3);
        for _ in 0..600 {
            sim.run_step(true);
        }
        sim.check_liveness();
        commits += sim.committed.len();
        terms += sim.leaders.len();
        proposals += sim.proposals;
    }
    eprintln!("50 runs: {terms} terms with a leader, {proposals} proposals, {commits} committed");
    assert!(terms >= 50, "leaders elected in {terms} terms over 50 runs");
    assert!(commits >= 500, "{commits} entries committed over 50 runs");
}
