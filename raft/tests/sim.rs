//! Deterministic simulation of the Raft core: clusters of 1 voter with learners, 2, 3 and 5
//! voters over a simulated network that drops, delays, reorders and duplicates messages and
//! partitions nodes (one-way too, minority or majority), with membership changes (learners
//! added, promoted, members removed, down to one voter in the small clusters), leadership
//! transfers, ReadIndex reads on leaders and followers, and followers far enough behind to be
//! sent sealed segments.
//!
//! Persistence is asynchronous, as a pipelined server's is: a node's `Ready` may stay
//! unwritten while the node goes on taking messages and ticks; its `early` messages leave at
//! once. A node crashes, losing everything not persisted, before a write, between writing its
//! entries and its hard state, or after both but before sending.
//!
//! Checked on every drain of a node (so also on a leader's first): election safety (one leader
//! per term); leader completeness (a new leader holds every entry applied anywhere); one vote
//! per voter and term, across crashes (a ledger of every vote granted); log matching, on every
//! write (an index and term written anywhere always holds the same entry after the same
//! term); state-machine safety (every node applies the same entry at each index, in order:
//! nothing committed is lost or changed); linearizable reads (a read index covers every entry
//! applied before the read began). At the end of each run: log matching between every pair of
//! nodes, then, after healing, liveness (a leader is elected and a new proposal commits).
//!
//! Every run is a pure function of its seed and shape; a failure prints both, and
//! `QUIVER_SEED=<seed> cargo test -p quiver-raft --test sim -- replay` replays the seed in
//! every shape. The long soak:
//! `QUIVER_SOAK_SECS=3600 cargo test -p quiver-raft --release --test sim -- --ignored`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use quiver_raft::{
    Config, Entry, MemStorage, MembershipChange, Message, MessageKind, RawNode, Ready, Refused,
    Role, Storage,
};

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

    fn chance_per_mille(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// Nodes that may join a run besides the initial ones.
const EXTRA_NODES: usize = 3;

#[derive(Default)]
struct Stats {
    memberships: u64,
    transfers: u64,
    reads: u64,
    segments: u64,
    /// Times a node stepped while its `Ready` was still being written.
    stepped_while_writing: u64,
    /// Crashes between writing entries and hard state.
    torn_writes: u64,
}

/// A cluster's bootstrap: voters 1..=voters, then learners.
#[derive(Debug, Clone, Copy)]
struct Shape {
    voters: usize,
    learners: usize,
}

const THREE: Shape = Shape {
    voters: 3,
    learners: 0,
};
const FIVE: Shape = Shape {
    voters: 5,
    learners: 0,
};
const LONE: Shape = Shape {
    voters: 1,
    learners: 2,
};
const TWO: Shape = Shape {
    voters: 2,
    learners: 1,
};

struct Sim {
    shape: Shape,
    /// Initial members.
    n: usize,
    seed: u64,
    rng: Rng,
    /// Index `id - 1`; `None`: down (crashed, or never started).
    nodes: Vec<Option<RawNode<MemStorage>>>,
    /// Ever started (an extra node starts when it is added as a learner).
    started: Vec<bool>,
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
    committed: Vec<(u64, bytes::Bytes)>,
    leaders: BTreeMap<u64, u64>,
    proposals: u64,
    /// Reads in progress: ctx → how many entries had been applied somewhere when it began.
    reads: BTreeMap<u64, usize>,
    next_ctx: u64,
    stats: Stats,
    /// Faults are on (off once healed for the liveness check).
    faults: bool,
    /// Per node, a `Ready` handed out and not yet persisted, and the step its write ends.
    pending: Vec<Option<(Ready, u64)>>,
    /// Every vote granted: (voter, term) → candidate.
    votes: BTreeMap<(u64, u64), u64>,
    /// Every entry ever written anywhere: (index, term) → (term before it, entry).
    written: HashMap<(u64, u64), (u64, Entry)>,
}

impl Sim {
    fn new(seed: u64, shape: Shape) -> Sim {
        let n = shape.voters + shape.learners;
        let total = n + EXTRA_NODES;
        let mut sim = Sim {
            shape,
            n,
            seed,
            rng: Rng(seed),
            nodes: (0..total).map(|_| None).collect(),
            started: vec![false; total],
            disks: vec![MemStorage::with_segments(4); total],
            net: Vec::new(),
            blocked: BTreeSet::new(),
            drop_percent: 0,
            step: 0,
            applied: vec![0; total],
            committed: Vec::new(),
            leaders: BTreeMap::new(),
            proposals: 0,
            reads: BTreeMap::new(),
            next_ctx: 0,
            stats: Stats::default(),
            faults: true,
            pending: (0..total).map(|_| None).collect(),
            votes: BTreeMap::new(),
            written: HashMap::new(),
        };
        for i in 0..n {
            sim.start(i);
        }
        sim
    }

    fn ids(&self) -> Vec<u64> {
        (1..=self.nodes.len() as u64).collect()
    }

    fn start(&mut self, i: usize) {
        let voters = self.shape.voters as u64;
        let bootstrap: Vec<u64> = (1..=voters).collect();
        let mut config = Config::new(i as u64 + 1, bootstrap, self.seed ^ self.step);
        config.learners = (voters + 1..=self.n as u64).collect();
        config.entries_per_append_max = 4;
        config.in_flight_max = 4;
        config.in_flight_bytes_max = 64;
        config.uncommitted_bytes_max = 256;
        config.ship_lag_min = 6;
        config.chunk_bytes = 40;
        config.chunks_in_flight = 2;
        self.started[i] = true;
        self.applied[i] = 0;
        self.pending[i] = None;
        self.nodes[i] = Some(RawNode::new(config, self.disks[i].clone()));
    }

    fn fail(&self, why: String) -> ! {
        let mut state = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if let Some(n) = node {
                let m = n.membership();
                state += &format!(
                    "\n  node {}: {:?} term {} leader {:?} commit {} last {} applied {} \
                     voters {:?} learners {:?}",
                    i + 1,
                    n.role(),
                    n.term(),
                    n.leader(),
                    n.commit(),
                    n.last_index(),
                    self.applied[i],
                    m.voters,
                    m.learners
                );
            } else if self.started[i] {
                state += &format!("\n  node {}: down", i + 1);
            }
        }
        state += &format!("\n  {} messages in flight", self.net.len());
        panic!(
            "seed {} ({:?}) step {}: {why}{state}\nreplay: QUIVER_SEED={} cargo test -p \
             quiver-raft --test sim -- replay",
            self.seed, self.shape, self.step, self.seed
        );
    }

    fn leader(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|i| {
            self.nodes[*i]
                .as_ref()
                .is_some_and(|n| n.role() == Role::Leader)
        })
    }

    /// Hands out, persists, sends and applies what node `i` has ready, checking safety. Under
    /// faults a `Ready` may stay unpersisted for a while (the node goes on stepping), and the
    /// node may crash at any point of its write.
    fn drain(&mut self, i: usize) {
        if self.nodes[i].is_none() {
            return;
        }
        self.check_leader(i);
        loop {
            if let Some((ready, done_at)) = self.pending[i].take() {
                if self.faults && self.step < done_at {
                    // Still being written.
                    self.stats.stepped_while_writing += 1;
                    self.pending[i] = Some((ready, done_at));
                    return;
                }
                if !self.persist(i, ready) {
                    return;
                }
                self.check_leader(i);
                continue;
            }
            let node = self.nodes[i].as_mut().expect("checked above");
            if !node.has_ready() {
                return;
            }
            let ready = node.ready();
            if std::env::var("QUIVER_TRACE_NODE").is_ok_and(|v| v == (i + 1).to_string()) {
                eprintln!(
                    "step {}: node {} ready: hs {:?} entries {:?} committed {:?} chunks {}",
                    self.step,
                    i + 1,
                    ready.hard_state,
                    ready
                        .entries
                        .iter()
                        .map(|e| (e.index, e.term))
                        .collect::<Vec<_>>(),
                    ready
                        .committed
                        .iter()
                        .map(|e| (e.index, e.term))
                        .collect::<Vec<_>>(),
                    ready.chunks.len()
                );
            }
            for m in &ready.early {
                self.send(m);
            }
            // Half the writes take a while, during which the node goes on stepping.
            let done_at = if self.rng.chance(50) {
                self.step
            } else {
                self.step + 1 + self.rng.below(8)
            };
            self.pending[i] = Some((ready, done_at));
        }
    }

    fn crash(&mut self, i: usize) {
        if std::env::var("QUIVER_TRACE_NODE").is_ok_and(|v| v == (i + 1).to_string()) {
            eprintln!("step {}: node {} crashes", self.step, i + 1);
        }
        self.nodes[i] = None;
        self.pending[i] = None;
    }

    /// Writes node `i`'s `ready` (hard state, entries, chunks), sends its messages, applies,
    /// and advances; false if the node crashed on the way.
    fn persist(&mut self, i: usize, ready: Ready) -> bool {
        if self.faults && self.rng.chance_per_mille(3) {
            self.crash(i);
            return false;
        }
        let node = self.nodes[i].as_mut().expect("up");
        let disk = node.storage_mut();
        disk.append(&ready.entries);
        let mut bad_chunk = None;
        let mut installed = Vec::new();
        for c in &ready.chunks {
            if let Err(e) = disk.write_chunk(c) {
                bad_chunk = Some(e);
            }
            if c.done {
                self.stats.segments += 1;
                installed.push((c.first, c.last));
            }
        }
        self.disks[i] = node.storage().clone();
        if let Some(e) = bad_chunk {
            self.fail(format!("node {} could not persist a chunk: {e}", i + 1));
        }
        if ready.hard_state.is_some() && self.faults && self.rng.chance_per_mille(5) {
            // Between the entries and the hard state.
            self.stats.torn_writes += 1;
            self.crash(i);
            return false;
        }
        let node = self.nodes[i].as_mut().expect("up");
        if let Some(hs) = ready.hard_state {
            node.storage_mut().set_hard_state(hs);
            self.disks[i] = node.storage().clone();
            // A vote counts once written (a lone voter elects itself without a message).
            if let Some(v) = hs.vote {
                self.record_vote(i as u64 + 1, hs.term, v);
            }
            self.check_leader(i);
        }
        let mut wrote: Vec<u64> = ready.entries.iter().map(|e| e.index).collect();
        for (first, last) in installed {
            wrote.extend(first..=last);
        }
        self.check_written(i, &wrote);
        if self.faults && self.rng.chance_per_mille(3) {
            // Written, but nothing said yet.
            self.crash(i);
            return false;
        }
        for m in &ready.messages {
            self.send(m);
        }
        for e in &ready.committed {
            let Entry {
                index, term, data, ..
            } = e;
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
        for r in &ready.reads {
            self.stats.reads += 1;
            if let Some(before) = self.reads.remove(&r.ctx) {
                if (r.index as usize) < before {
                    self.fail(format!(
                        "read {} on node {} got index {}, but {before} entries were applied before it began",
                        r.ctx,
                        i + 1,
                        r.index
                    ));
                }
            }
        }
        self.nodes[i].as_mut().expect("up").advance(ready);
        true
    }

    /// Puts `m` on the network, recording the votes it grants (its own, for a vote request).
    fn send(&mut self, m: &Message) {
        let vote = match m.kind {
            MessageKind::VoteResp { reject: false } => Some(m.to),
            MessageKind::Vote { .. } => Some(m.from),
            _ => None,
        };
        if let Some(candidate) = vote {
            self.record_vote(m.from, m.term, candidate);
        }
        let delay = 1 + self.rng.below(4);
        self.net.push((self.step + delay, m.clone()));
    }

    fn record_vote(&mut self, voter: u64, term: u64, candidate: u64) {
        if let Some(other) = self.votes.insert((voter, term), candidate) {
            if other != candidate {
                self.fail(format!(
                    "node {voter} voted for {other} and for {candidate} in term {term}"
                ));
            }
        }
    }

    /// Log matching, as entries are written: an index and term always hold the same entry,
    /// after the same term.
    fn check_written(&mut self, i: usize, indexes: &[u64]) {
        let disk = &self.disks[i];
        let mut found = Vec::new();
        for &index in indexes {
            if index > disk.last_index() {
                // Written, then cut by a later write of the same Ready (a segment installed
                // over it): the node would take as persisted what is gone.
                let why = format!(
                    "node {} wrote entry {index}, but its log now ends at {}",
                    i + 1,
                    disk.last_index()
                );
                self.fail(why);
            }
            let Some(e) = disk.entries(index, index + 1, usize::MAX).pop() else {
                continue;
            };
            let before = disk.term(index - 1).expect("the log is contiguous");
            found.push((before, e));
        }
        for (before, e) in found {
            match self.written.get(&(e.index, e.term)) {
                Some((b, other)) if (*b, other) != (before, &e) => self.fail(format!(
                    "node {} wrote {:?} after term {before} at ({}, {}), where another wrote \
                     {other:?} after term {b}",
                    i + 1,
                    e.data,
                    e.index,
                    e.term
                )),
                Some(_) => {}
                None => {
                    self.written.insert((e.index, e.term), (before, e));
                }
            }
        }
    }

    /// Election safety and leader completeness, whenever node `i` is seen leading a term
    /// it has written (before that it can do nothing anyone sees: a lone voter leads at once
    /// in memory, and a crash before its hard state is written leaves no trace of it).
    fn check_leader(&mut self, i: usize) {
        let Some(node) = self.nodes[i].as_ref() else {
            return;
        };
        if node.role() != Role::Leader || node.storage().hard_state().term != node.term() {
            return;
        }
        let (term, id) = (node.term(), i as u64 + 1);
        match self.leaders.insert(term, id) {
            Some(other) if other != id => {
                self.fail(format!("two leaders in term {term}: {other} and {id}"))
            }
            Some(_) => {}
            None => {
                // Leader completeness: everything applied anywhere is in the new leader's log.
                for (k, (t, _)) in self.committed.iter().enumerate() {
                    if node.term_of(k as u64 + 1) != Some(*t) {
                        self.fail(format!(
                            "leader {id} of term {term} lacks committed index {}",
                            k + 1
                        ));
                    }
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
        if std::env::var_os("QUIVER_TRACE").is_some() {
            eprintln!("step {}: {m:?}", self.step);
        }
        let to = (m.to - 1) as usize;
        if let Some(node) = self.nodes.get_mut(to).and_then(|n| n.as_mut()) {
            node.step(m);
            self.drain(to);
        }
    }

    fn fault(&mut self) {
        match self.rng.below(10) {
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
                let i = self.rng.below(self.nodes.len() as u64) as usize;
                self.crash(i);
            }
            3 => {
                let i = self.rng.below(self.nodes.len() as u64) as usize;
                if self.nodes[i].is_none() && self.started[i] {
                    self.start(i);
                }
            }
            4 => self.drop_percent = self.rng.below(30),
            5 => self.drop_percent = 0,
            6 | 7 => self.change_membership(),
            8 => self.transfer(),
            _ => {
                // A burst of proposals, so followers fall far behind.
                for _ in 0..8 {
                    self.propose();
                }
            }
        }
    }

    /// The leader adds a new node as a learner, promotes a learner, or removes a member.
    fn change_membership(&mut self) {
        let Some(l) = self.leader() else { return };
        let node = self.nodes[l].as_ref().expect("the leader is up");
        let m = node.membership().clone();
        let unused = (0..self.nodes.len())
            .find(|i| !self.started[*i] && !m.retired.contains(&(*i as u64 + 1)));
        let change = match self.rng.below(3) {
            0 => match unused {
                Some(i) => MembershipChange::AddLearner(i as u64 + 1),
                None => return,
            },
            1 => match m.learners.iter().next() {
                Some(id) => MembershipChange::Promote(*id),
                None => return,
            },
            _ => {
                let members: Vec<u64> = m.members().collect();
                let id = members[self.rng.below(members.len() as u64) as usize];
                // Small clusters go down to one voter; larger ones keep three.
                let floor = if self.shape.voters < 3 { 1 } else { 3 };
                if m.voters.contains(&id) && m.voters.len() <= floor {
                    return;
                }
                MembershipChange::Remove(id)
            }
        };
        let node = self.nodes[l].as_mut().expect("the leader is up");
        match node.propose_membership(change) {
            Ok(_) => {
                self.stats.memberships += 1;
                if let MembershipChange::AddLearner(id) = change {
                    self.start((id - 1) as usize);
                }
                self.drain(l);
            }
            Err(
                Refused::NotReady
                | Refused::ChangePending
                | Refused::NotCaughtUp
                | Refused::Transferring,
            ) => {
                if std::env::var_os("QUIVER_TRACE_REFUSED").is_some() {
                    eprintln!("{change:?}: {:?}", node.propose_membership(change));
                }
            }
            Err(e) => self.fail(format!("membership change {change:?} refused: {e}")),
        }
    }

    fn transfer(&mut self) {
        let Some(l) = self.leader() else { return };
        let node = self.nodes[l].as_mut().expect("the leader is up");
        let voters: Vec<u64> = node
            .membership()
            .voters
            .iter()
            .copied()
            .filter(|v| *v != l as u64 + 1)
            .collect();
        if voters.is_empty() {
            return;
        }
        let to = voters[self.rng.below(voters.len() as u64) as usize];
        if node.transfer_leadership(to).is_ok() {
            self.stats.transfers += 1;
        }
        self.drain(l);
    }

    fn propose(&mut self) -> bool {
        let Some(l) = self.leader() else { return false };
        self.proposals += 1;
        let data = format!("p{}", self.proposals).into_bytes();
        let node = self.nodes[l].as_mut().expect("the leader is up");
        let ok = match node.propose(data) {
            Ok(_) => true,
            Err(Refused::Transferring | Refused::Backpressure) => false,
            Err(e) => self.fail(format!("a leader refused a proposal: {e}")),
        };
        self.drain(l);
        ok
    }

    /// A read on a random node that is up (leaders answer; followers forward).
    fn read(&mut self) {
        let i = self.rng.below(self.nodes.len() as u64) as usize;
        let Some(node) = self.nodes[i].as_mut() else {
            return;
        };
        self.next_ctx += 1;
        if node.read_index(self.next_ctx).is_ok() {
            self.reads.insert(self.next_ctx, self.committed.len());
        }
        self.drain(i);
    }

    fn run_step(&mut self, faults: bool) {
        self.step += 1;
        // Writes that are done let their nodes go on.
        for i in 0..self.nodes.len() {
            if self.pending[i]
                .as_ref()
                .is_some_and(|(_, at)| *at <= self.step)
            {
                self.drain(i);
            }
        }
        match self.rng.below(100) {
            0..=39 => {
                let i = self.rng.below(self.nodes.len() as u64) as usize;
                if let Some(node) = self.nodes[i].as_mut() {
                    node.tick();
                    self.drain(i);
                }
            }
            40..=79 => {
                // Healed, the network keeps up with its backlog: under faults, duplicates and
                // resends can pile up thousands of messages, which would otherwise take longer
                // to drain than the liveness bound.
                let n = if faults { 3 } else { 3 + self.net.len() / 64 };
                for _ in 0..n {
                    self.deliver_some();
                }
            }
            80..=86 => {
                self.propose();
            }
            87..=89 => self.read(),
            _ if faults => self.fault(),
            _ => {}
        }
    }

    fn heal(&mut self) {
        self.faults = false;
        self.blocked.clear();
        self.drop_percent = 0;
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_none() && self.started[i] {
                self.start(i);
            }
        }
    }

    /// Log matching: two logs with the same term at an index hold the same entries up to it.
    fn check_log_matching(&self) {
        let disks: Vec<(usize, &MemStorage)> = (0..self.nodes.len())
            .filter(|i| self.started[*i])
            .map(|i| (i, &self.disks[i]))
            .collect();
        for (a, da) in &disks {
            for (b, db) in &disks {
                if a >= b {
                    continue;
                }
                let common = da.last_index().min(db.last_index());
                let Some(top) = (1..=common).rev().find(|i| da.term(*i) == db.term(*i)) else {
                    continue;
                };
                if da.entries(1, top + 1, usize::MAX) != db.entries(1, top + 1, usize::MAX) {
                    self.fail(format!(
                        "nodes {} and {} agree on the term at {top} but not on what precedes it",
                        a + 1,
                        b + 1
                    ));
                }
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
            if !proposed && self.leader().is_some() {
                proposed = self.propose();
            }
            if proposed && self.committed.len() > before {
                return;
            }
        }
        self.fail(format!("no progress after healing (proposed: {proposed})"));
    }
}

/// Fault steps before the liveness check, by cluster size: the same in the test command, the
/// soak and `replay`, so that a seed replays exactly.
fn steps_for(shape: Shape) -> u64 {
    match shape.voters {
        5 => 2500,
        3 => 2000,
        _ => 1500,
    }
}

fn run(seed: u64, shape: Shape, steps: u64) -> Sim {
    let mut sim = Sim::new(seed, shape);
    for _ in 0..steps {
        sim.run_step(true);
    }
    sim.check_log_matching();
    sim.check_liveness();
    sim
}

fn seeds(count: u64, base: u64) -> impl Iterator<Item = u64> {
    (0..count).map(move |k| base.wrapping_add(k.wrapping_mul(0x9E37_79B9)))
}

#[test]
fn three_nodes_many_seeds() {
    for seed in seeds(3000, 1) {
        run(seed, THREE, steps_for(THREE));
    }
}

#[test]
fn five_nodes_many_seeds() {
    for seed in seeds(1000, 7) {
        run(seed, FIVE, steps_for(FIVE));
    }
}

#[test]
fn one_voter_with_learners_many_seeds() {
    for seed in seeds(1000, 11) {
        run(seed, LONE, steps_for(LONE));
    }
}

#[test]
fn two_voters_many_seeds() {
    for seed in seeds(1000, 13) {
        run(seed, TWO, steps_for(TWO));
    }
}

/// Seeds that once failed, each for a bug since fixed: a full in-flight byte window that a
/// heartbeat never freed (1566117103711); a follower that restarted mid-segment and was
/// never resent the start (812257345321, n = 5); voters refusing a candidate their lagging
/// membership did not list as a voter, leaving no one able to win (422055287272); a leader
/// waiting at a segment boundary for answers to appends that were lost, and a probe answered
/// late that left `next` past the match (12462254766374279219, found by the soak); stale
/// chunks of segments a follower already held throwing away the one it was receiving, over
/// and over (2283753878113364427, the soak); chunks from an old leader joined to a segment a
/// new one was sending (517179746121701783, the soak, 37 minutes in); late refusals of old
/// appends moving a probe away from where the logs diverged (3991899061874589095 and
/// 10213810933408121139, the soak, after 15 and 2 minutes). The simulator has changed since
/// (asynchronous writes, crash points, more shapes), so these seeds no longer replay the runs
/// that found the bugs; they stay as runs of their own.
#[test]
fn seeds_that_found_bugs() {
    run(1566117103711, THREE, 2000);
    run(812257345321, FIVE, 2500);
    run(422055287272, THREE, 2000);
    run(12462254766374279219, FIVE, 2000);
    run(2283753878113364427, FIVE, steps_for(FIVE));
    run(517179746121701783, FIVE, steps_for(FIVE));
    run(3991899061874589095, FIVE, steps_for(FIVE));
    run(10213810933408121139, FIVE, steps_for(FIVE));
    // Not core bugs: after healing, thousands of queued duplicates and resends took longer to
    // drain than the liveness bound, until the healed network was made to keep up.
    run(12223126243681972943, FIVE, steps_for(FIVE));
    run(13847730106678704051, FIVE, steps_for(FIVE));
    // With Figure 8's check removed, the soak found "leader 3 of term 5 lacks committed index
    // 43" here after 282 s (a review's mutation run).
    run(16492532593759206798, FIVE, steps_for(FIVE));
    // The checks took a lone voter's leadership and vote for itself before they were written;
    // it crashed and voted again in that term, which nobody could have seen (the soak).
    run(10602863641942785631, TWO, steps_for(TWO));
}

#[test]
fn replay() {
    if let Ok(seed) = std::env::var("QUIVER_SEED") {
        let seed = seed.parse().expect("QUIVER_SEED is a number");
        for shape in [THREE, FIVE, LONE, TWO] {
            run(seed, shape, steps_for(shape));
        }
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
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x5EED, |d| d.as_nanos() as u64);
    let mut runs = 0u64;
    let mut reported = 0;
    while started.elapsed().as_secs() < secs {
        // A line every 5 minutes, so a soak stopped early still says how far it got.
        let minutes = started.elapsed().as_secs() / 300;
        if minutes > reported {
            reported = minutes;
            eprintln!("soak: {runs} runs in {} min, no failure", minutes * 5);
        }
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let shape = [THREE, FIVE, LONE, TWO][(seed % 4) as usize];
        // A panic outside the checks (an assertion in the core) still names its seed.
        if let Err(panic) = std::panic::catch_unwind(|| run(seed, shape, steps_for(shape))) {
            eprintln!("soak: seed {seed} ({shape:?}) failed; replay: QUIVER_SEED={seed}");
            std::panic::resume_unwind(panic);
        }
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
    node.read_index(7).unwrap();
    let (mut applied, mut reads) = (Vec::new(), Vec::new());
    while node.has_ready() {
        let ready = node.ready();
        node.storage_mut().append(&ready.entries);
        if let Some(hs) = ready.hard_state {
            node.storage_mut().set_hard_state(hs);
        }
        applied.extend(ready.committed.iter().map(|e| e.data.clone()));
        reads.extend(ready.reads.iter().map(|r| (r.ctx, r.index)));
        node.advance(ready);
    }
    assert_eq!(
        applied,
        vec![Vec::new(), b"x".to_vec()],
        "the no-op, then the proposal"
    );
    assert_eq!(node.storage().last_index(), 2);
    assert_eq!(reads, vec![(7, 2)], "a lone voter is its own quorum");
}

#[test]
fn runs_exercise_every_feature() {
    // A simulator that never elects, commits, changes membership, transfers, reads or ships
    // would pass every safety check: make sure it does all of them, across faults.
    let (mut commits, mut terms, mut proposals) = (0, 0, 0);
    let mut stats = Stats::default();
    let mut shipped = 0u64;
    for seed in seeds(50, 99) {
        let mut sim = Sim::new(seed, THREE);
        for _ in 0..2000 {
            sim.run_step(true);
            if let Some(l) = sim.leader() {
                let node = sim.nodes[l].as_ref().expect("up");
                shipped += sim.ids().iter().any(|id| node.is_shipping_to(*id)) as u64;
            }
        }
        sim.check_log_matching();
        sim.check_liveness();
        commits += sim.committed.len();
        terms += sim.leaders.len();
        proposals += sim.proposals;
        stats.memberships += sim.stats.memberships;
        stats.transfers += sim.stats.transfers;
        stats.reads += sim.stats.reads;
        stats.segments += sim.stats.segments;
        stats.stepped_while_writing += sim.stats.stepped_while_writing;
        stats.torn_writes += sim.stats.torn_writes;
    }
    eprintln!(
        "50 runs: {terms} terms with a leader, {proposals} proposals, {commits} committed, \
         {} membership changes, {} transfers, {} reads served, {} segments installed \
         ({shipped} steps shipping), {} steps while a Ready was being written, {} crashes \
         between entries and hard state",
        stats.memberships,
        stats.transfers,
        stats.reads,
        stats.segments,
        stats.stepped_while_writing,
        stats.torn_writes
    );
    assert!(terms >= 50, "leaders elected in {terms} terms over 50 runs");
    assert!(commits >= 500, "{commits} entries committed over 50 runs");
    assert!(
        stats.memberships >= 30,
        "{} membership changes",
        stats.memberships
    );
    assert!(stats.transfers >= 50, "{} transfers", stats.transfers);
    assert!(stats.reads >= 100, "{} reads served", stats.reads);
    assert!(
        stats.segments >= 20,
        "{} segments installed",
        stats.segments
    );
    assert!(
        stats.stepped_while_writing >= 1000,
        "{} steps while writing",
        stats.stepped_while_writing
    );
    assert!(stats.torn_writes >= 3, "{} torn writes", stats.torn_writes);
}

/// A transfer hands leadership to the target without waiting for an election timeout.
#[test]
fn leadership_transfer_elects_the_target() {
    for seed in seeds(20, 3) {
        let mut sim = Sim::new(seed, THREE);
        sim.faults = false;
        while sim.leader().is_none() || sim.nodes.iter().flatten().any(|n| n.has_ready()) {
            sim.run_step(false);
        }
        // Let the no-op commit everywhere.
        for _ in 0..200 {
            sim.run_step(false);
        }
        let Some(l) = sim.leader() else { continue };
        let to = if l == 0 { 2 } else { 1 };
        let node = sim.nodes[l].as_mut().expect("up");
        let term = node.term();
        node.transfer_leadership(to).expect("a leader can transfer");
        assert_eq!(node.propose(b"x".to_vec()), Err(Refused::Transferring));
        sim.drain(l);
        let mut done = false;
        for _ in 0..400 {
            sim.step += 1;
            sim.deliver_some();
            if sim.leader() == Some(to as usize - 1) {
                done = true;
                break;
            }
        }
        assert!(
            done,
            "seed {seed}: node {to} did not take over from {}",
            l + 1
        );
        let new = sim.nodes[to as usize - 1].as_ref().expect("up");
        assert!(new.term() > term);
    }
}
