//! Model checking of the Raft core with `stateright`: three real `RawNode`s (the core itself,
//! not a model of it) and a network that may deliver any message in flight, in any order, or
//! drop it. Nodes tick, the leader proposes, and nodes restart from what they persisted. Every
//! state reachable within the bounds is visited, breadth first, and checked for:
//!
//! - election safety: at most one leader per term;
//! - state-machine safety: every two nodes apply the same entry at each index;
//! - leader completeness: a leader's log holds every entry applied anywhere;
//!
//! and the checker must reach a state where a proposal is applied (so the bounds are not so
//! tight that nothing happens).
//!
//! The test command's bounds (3 ticks in all, terms ≤ 2, 4 messages in flight, one proposal,
//! depth 18) cover about 620,000 states in about 15 s. Deeper, with a restart:
//! `QUIVER_MODEL_TICKS=4 QUIVER_MODEL_DEPTH=20 QUIVER_MODEL_RESTARTS=1 cargo test -p
//! quiver-raft --release --test model -- --ignored`. The bounds are small: the simulator
//! (`sim.rs`) is what explores long runs; this is what explores every interleaving of short ones.

use stateright::{Checker, Model, Property};

use quiver_raft::{Config, MemStorage, Message, RawNode, Role};

const NODES: usize = 3;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct State {
    nodes: Vec<RawNode<MemStorage>>,
    /// Messages in flight, in a canonical order (the network is a multiset).
    net: Vec<Message>,
    /// Per node, the (index, term) of every entry it applied since it last started.
    applied: Vec<Vec<(u64, u64)>>,
    /// (term, leader) pairs ever seen, sorted.
    leaders: Vec<(u64, u64)>,
    proposals: u8,
    restarts: u8,
    ticks: u8,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum Action {
    Tick(usize),
    Deliver(usize),
    Drop(usize),
    Propose(usize),
    Restart(usize),
}

struct Bounds {
    ticks: u8,
    term: u64,
    in_flight: usize,
    proposals: u8,
    restarts: u8,
}

fn config(id: u64) -> Config {
    let mut c = Config::new(id, (1..=NODES as u64).collect(), id);
    c.election_ticks = 2;
    c.heartbeat_ticks = 1;
    c
}

impl State {
    /// Persists, sends and applies what node `i` has ready.
    fn drain(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        while node.has_ready() {
            let ready = node.ready();
            node.storage_mut().append(&ready.entries);
            if let Some(hs) = ready.hard_state {
                node.storage_mut().set_hard_state(hs);
            }
            self.net
                .extend(ready.early.iter().chain(&ready.messages).cloned());
            self.applied[i].extend(ready.committed.iter().map(|e| (e.index, e.term)));
            node.advance(ready);
        }
        if node.role() == Role::Leader {
            let pair = (node.term(), i as u64 + 1);
            if let Err(at) = self.leaders.binary_search(&pair) {
                self.leaders.insert(at, pair);
            }
        }
        self.net.sort_by_cached_key(|m| format!("{m:?}"));
    }
}

impl Model for Bounds {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let nodes = (0..NODES)
            .map(|i| RawNode::new(config(i as u64 + 1), MemStorage::default()))
            .collect();
        vec![State {
            nodes,
            net: Vec::new(),
            applied: vec![Vec::new(); NODES],
            leaders: Vec::new(),
            proposals: 0,
            restarts: 0,
            ticks: 0,
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        for i in 0..NODES {
            if state.ticks < self.ticks {
                actions.push(Action::Tick(i));
            }
            if state.nodes[i].role() == Role::Leader && state.proposals < self.proposals {
                actions.push(Action::Propose(i));
            }
            if state.restarts < self.restarts {
                actions.push(Action::Restart(i));
            }
        }
        for k in 0..state.net.len() {
            if k > 0 && state.net[k] == state.net[k - 1] {
                continue; // the same message twice: one choice is enough
            }
            actions.push(Action::Deliver(k));
            actions.push(Action::Drop(k));
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        match action {
            Action::Tick(i) => {
                s.ticks += 1;
                s.nodes[i].tick();
                s.drain(i);
            }
            Action::Propose(i) => {
                s.proposals += 1;
                s.nodes[i].propose(vec![s.proposals]).ok()?;
                s.drain(i);
            }
            Action::Restart(i) => {
                // Everything not persisted is lost; the node applies again from the start.
                s.restarts += 1;
                let disk = s.nodes[i].storage().clone();
                s.nodes[i] = RawNode::new(config(i as u64 + 1), disk);
                s.applied[i].clear();
                s.drain(i);
            }
            Action::Drop(k) => {
                s.net.remove(k);
            }
            Action::Deliver(k) => {
                let m = s.net.remove(k);
                let to = (m.to - 1) as usize;
                s.nodes[to].step(m);
                s.drain(to);
            }
        }
        Some(s)
    }

    fn within_boundary(&self, state: &State) -> bool {
        state.net.len() <= self.in_flight && state.nodes.iter().all(|n| n.term() <= self.term)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("election safety", |_, s: &State| {
                s.leaders.windows(2).all(|w| w[0].0 != w[1].0)
            }),
            Property::always("state-machine safety", |_, s: &State| {
                s.applied.iter().all(|a| {
                    s.applied
                        .iter()
                        .all(|b| a.iter().zip(b.iter()).all(|(x, y)| x == y))
                })
            }),
            Property::always("leader completeness", |_, s: &State| {
                s.nodes
                    .iter()
                    .filter(|n| n.role() == Role::Leader)
                    .all(|n| {
                        s.applied
                            .iter()
                            .flatten()
                            .all(|(index, term)| n.term_of(*index) == Some(*term))
                    })
            }),
            Property::sometimes("a proposal is applied", |_, s: &State| {
                s.applied.iter().flatten().any(|(index, _)| *index >= 2)
            }),
        ]
    }
}

fn check(bounds: Bounds, depth: usize) -> usize {
    let started = std::time::Instant::now();
    let checker = bounds
        .checker()
        .threads(2)
        .target_max_depth(depth)
        .spawn_bfs()
        .join();
    checker.assert_properties();
    let states = checker.unique_state_count();
    eprintln!(
        "model: depth {depth}: {states} distinct states in {:.1?}, every property holds",
        started.elapsed()
    );
    states
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn every_interleaving_within_small_bounds() {
    let bounds = Bounds {
        ticks: 3,
        term: 2,
        in_flight: 4,
        proposals: 1,
        restarts: 0,
    };
    let states = check(bounds, 18);
    assert!(
        states > 100_000,
        "only {states} states: the bounds prune too much"
    );
}

#[test]
#[ignore = "deeper: QUIVER_MODEL_TICKS=4 QUIVER_MODEL_DEPTH=20 QUIVER_MODEL_RESTARTS=1 cargo test -p quiver-raft --release --test model -- --ignored"]
fn every_interleaving_within_chosen_bounds() {
    let bounds = Bounds {
        ticks: env("QUIVER_MODEL_TICKS", 4) as u8,
        term: env("QUIVER_MODEL_TERM", 2) as u64,
        in_flight: env("QUIVER_MODEL_IN_FLIGHT", 4),
        proposals: env("QUIVER_MODEL_PROPOSALS", 1) as u8,
        restarts: env("QUIVER_MODEL_RESTARTS", 1) as u8,
    };
    check(bounds, env("QUIVER_MODEL_DEPTH", 20));
}
