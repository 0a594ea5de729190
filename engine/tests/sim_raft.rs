//! Crash consistency of the engine as a Raft log, on the simulated disk: a follower takes
//! appends from its leader (`append_entries`), commits (`set_commit_index`) and truncates
//! uncommitted suffixes (`truncate_suffix`), with faults on some seeds and a power cut at a
//! random point. The image is reopened with Raft's commit index as the durable floor (what
//! the server passes from its persisted state) and checked against a model:
//!
//! - it opens (nothing was flipped, so nothing is corruption), and the log holds every entry
//!   that was acknowledged as durable and not truncated since, record for record;
//! - past that, every entry is one that was written for that index and not truncated since
//!   (a truncation that returned is durable: cut entries never come back);
//! - every committed entry is there;
//! - the recovered log takes more entries, and keeps them across a reopen.
//!
//! `QUIVER_SIM_SEEDS=n` runs n seeds (default 400), `QUIVER_SIM_SEED=s` replays one.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use quiver_engine::format::{encode_stream_append, EntryKind};
use quiver_engine::storage::sim::{SimDisk, SimFaults, SimRng};
use quiver_engine::*;

fn config(disk: &Arc<SimDisk>, floor: u64) -> EngineConfig {
    EngineConfig::default()
        .commit_on_durable(false)
        .segment_bytes_max(4096)
        .durable_floor(floor)
        .storage(disk.clone())
}

thread_local! {
    static NOTES: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn note(s: String) {
    NOTES.with(|n| n.borrow_mut().push(s));
}

/// What the seed did so far, for a failure message (the interleaving with the background
/// thread is not replayed exactly, so the history is printed rather than re-derived).
fn notes() -> String {
    NOTES.with(|n| n.borrow().join("\n"))
}

fn scratch() -> tempfile::TempDir {
    match tempfile::tempdir_in("/dev/shm") {
        Ok(d) => d,
        Err(_) => tempfile::tempdir().unwrap(),
    }
}

/// What the test knows of one entry it wrote: enough to compare and to continue streams.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Known {
    term: u64,
    body: Bytes,
    stream: u64,
    version: u64,
}

struct Model {
    /// The log as the follower acknowledged it (index i at [i - 1]).
    log: Vec<Known>,
    /// Entries `log[..durable]` were acknowledged as durable.
    durable: usize,
    committed: u64,
    /// Every entry written per index since the last truncation that cut it.
    written: HashMap<u64, Vec<Known>>,
    term: u64,
    tag: u64,
}

impl Model {
    fn next_version(&self, stream: u64) -> u64 {
        self.log.iter().filter(|k| k.stream == stream).count() as u64
    }

    fn record(&mut self, rng: &mut SimRng) -> RawRecord {
        let index = self.log.len() as u64 + 1;
        let stream = rng.below(3);
        let version = self.next_version(stream);
        self.tag += 1;
        let len = [60, 300, 700][rng.below(3) as usize];
        let mut data = self.tag.to_le_bytes().to_vec();
        data.resize(len, (self.tag % 251) as u8);
        let event = EventData::binary("E", data);
        let body = Bytes::from(encode_stream_append(
            &format!("s-{stream}"),
            version,
            1,
            &[event],
        ));
        let known = Known {
            term: self.term,
            body: body.clone(),
            stream,
            version,
        };
        self.written.entry(index).or_default().push(known.clone());
        self.log.push(known);
        RawRecord {
            index,
            term: self.term,
            position: index - 1,
            count: 1,
            kind: EntryKind::Append as u8,
            body,
        }
    }
}

/// Runs Raft operations until `steps` are done or the engine fails.
fn workload(engine: &Engine, m: &mut Model, rng: &mut SimRng, steps: u64) {
    for _ in 0..steps {
        let roll = rng.below(100);
        if roll < 60 {
            let n = 1 + rng.below(4);
            let records: Vec<RawRecord> = (0..n).map(|_| m.record(rng)).collect();
            let r = engine.append_entries(&records);
            let (a, b) = (records[0].index, m.log.len());
            note(format!(
                "append {a}..{b} -> {:?}",
                r.as_ref().map_err(|e| e.to_string())
            ));
            match r {
                Ok(_) => m.durable = m.log.len(),
                Err(_) => return,
            }
        } else if roll < 80 {
            let to = m.committed + rng.below(m.durable as u64 - m.committed + 1);
            engine.set_commit_index(to);
            note(format!("commit {to}"));
            m.committed = to;
        } else if (m.log.len() as u64) > m.committed {
            // A new leader's log differs from some uncommitted index on.
            let from = m.committed + 1 + rng.below(m.log.len() as u64 - m.committed);
            let r = engine.truncate_suffix(from);
            note(format!(
                "truncate {from} -> {:?}",
                r.as_ref().map_err(|e| e.to_string())
            ));
            if r.is_err() {
                // Cut short by the fault: the truncation may or may not have happened (in
                // part); those entries were uncommitted, so either is right. The engine must
                // not go on from a state that may describe records no longer on disk.
                assert!(
                    !engine.is_writable(),
                    "a failed truncation stops the engine"
                );
                m.durable = m.durable.min(from as usize - 1);
                return;
            }
            m.log.truncate(from as usize - 1);
            m.durable = m.durable.min(m.log.len());
            m.written.retain(|i, _| *i < from);
            m.term += 1;
            engine.set_term(m.term);
        }
    }
}

/// The log as the engine holds it, checked against the model; returns it as the new model.
fn check(engine: &Engine, m: &Model, ctx: &str) -> Vec<Known> {
    let last = engine.last_index_term().0;
    let mut got = Vec::new();
    while (got.len() as u64) < last {
        let more = engine
            .entries(got.len() as u64 + 1, 1 << 20)
            .unwrap_or_else(|e| panic!("{ctx}: entries: {e}"));
        assert!(!more.is_empty(), "{ctx}: entries below the tip");
        got.extend(more);
    }
    assert!(
        got.len() >= m.durable,
        "{ctx}: the log ends at {} but {} entries were acknowledged durable",
        got.len(),
        m.durable
    );
    assert!(
        got.len() as u64 >= m.committed,
        "{ctx}: committed entries lost"
    );
    let mut out = Vec::new();
    for (i, r) in got.iter().enumerate() {
        let index = i as u64 + 1;
        assert_eq!(r.index, index, "{ctx}: indexes are dense");
        assert_eq!(r.position, i as u64, "{ctx}: positions are dense");
        let candidates: &[Known] = if i < m.durable {
            std::slice::from_ref(&m.log[i])
        } else {
            m.written.get(&index).map_or(&[], |v| &v[..])
        };
        let known = candidates
            .iter()
            .find(|k| k.term == r.term && k.body == r.body)
            .unwrap_or_else(|| {
                panic!(
                    "{ctx}: entry {index} (term {}) is not one written there since the last \
                     truncation (durable prefix {})",
                    r.term, m.durable
                )
            });
        out.push(known.clone());
    }
    out
}

fn run_seed(seed: u64) {
    NOTES.with(|n| n.borrow_mut().clear());
    let root = scratch();
    let live = root.path().join("live");
    let disk = Arc::new(SimDisk::new(&live, seed).unwrap());
    let mut rng = SimRng::new(seed ^ 0x5241_4654);
    if seed % 3 == 2 {
        disk.set_faults(SimFaults {
            write_eio: 5,
            write_enospc: 5,
            sync_eio: 10,
            eintr: 30,
        });
    }
    let ctx = format!("raft seed {seed} (replay: QUIVER_SIM_SEED={seed})");
    let Ok(engine) = Engine::open(&live, config(&disk, 0)) else {
        return;
    };
    disk.power_cut_after(rng.below(150));
    let mut m = Model {
        log: Vec::new(),
        durable: 0,
        committed: 0,
        written: HashMap::new(),
        term: 1,
        tag: 0,
    };
    engine.set_term(1);
    workload(&engine, &mut m, &mut rng, 30);
    let image = root.path().join("image");
    let report = disk.crash_image(&image).unwrap();
    drop(engine);
    let ctx = format!("{ctx}, {report:?}");

    let disk2 = Arc::new(SimDisk::new(&image, seed).unwrap());
    let mut engine = Engine::open(&image, config(&disk2, m.committed))
        .unwrap_or_else(|e| panic!("{ctx}: the crashed log must open: {e}"));
    note(format!("crash; reopened at {}", engine.last_index_term().0));
    let log = check(&engine, &m, &format!("{ctx}, after the crash"));
    // Raft goes on from what the follower has: the recovered log is the model now.
    m.durable = log.len();
    m.log = log;
    m.written = m
        .log
        .iter()
        .enumerate()
        .map(|(i, k)| (i as u64 + 1, vec![k.clone()]))
        .collect();
    m.term += 1;
    engine.set_term(m.term);
    for round in 1..=2 {
        note(format!("round {round}"));
        workload(&engine, &mut m, &mut rng, 10);
        drop(engine);
        engine = Engine::open(&image, config(&disk2, m.committed))
            .unwrap_or_else(|e| panic!("{ctx}: reopen {round} after recovery: {e}"));
        engine.set_commit_index(m.committed);
        let log = check(&engine, &m, &format!("{ctx}, reopen {round}"));
        assert_eq!(
            log.len(),
            m.log.len(),
            "{ctx}: a clean close keeps the whole log ({:?}, {:?})\n{}",
            engine.open_stats(),
            std::fs::read_dir(&image)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect::<Vec<_>>(),
            notes()
        );
        m.durable = m.log.len();
    }
}

#[test]
fn power_cuts_keep_the_raft_log() {
    let seeds: Vec<u64> = match std::env::var("QUIVER_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(s) => vec![s],
        None => {
            let n = std::env::var("QUIVER_SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(400);
            (0..n).collect()
        }
    };
    for &seed in &seeds {
        run_seed(seed);
    }
    eprintln!("{} seeds", seeds.len());
}

/// A lagging follower receives whole sealed segments (`install_segment`) with faults and a
/// power cut: after the crash its log is a prefix of the leader's, record for record, and
/// holds at least every segment whose install returned.
#[test]
fn power_cuts_during_segment_installs_keep_a_prefix() {
    let seeds: Vec<u64> = match std::env::var("QUIVER_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(s) => vec![s],
        None => (0..150).collect(),
    };
    // One leader log for all seeds: 60 entries of up to 700 bytes in 4 KiB segments.
    let leader_dir = scratch();
    let leader_disk = Arc::new(SimDisk::new(leader_dir.path(), 1).unwrap());
    let leader = Engine::open(leader_dir.path(), config(&leader_disk, 0)).unwrap();
    let mut m = Model {
        log: Vec::new(),
        durable: 0,
        committed: 0,
        written: HashMap::new(),
        term: 1,
        tag: 0,
    };
    let mut rng = SimRng::new(99);
    let records: Vec<RawRecord> = (0..60).map(|_| m.record(&mut rng)).collect();
    leader.append_entries(&records).unwrap();
    leader.set_commit_index(60);
    drop(leader); // a clean close summarizes every sealed segment: all are shippable
    let leader = Engine::open(leader_dir.path(), config(&leader_disk, 60)).unwrap();
    let sealed = leader.sealed_segments();
    assert!(sealed.len() >= 4, "several sealed segments to ship");
    let theirs = leader.entries(1, 1 << 20).unwrap();
    let (mut all_in, mut cut_short) = (0, 0);
    for &seed in &seeds {
        let root = scratch();
        let live = root.path().join("live");
        let disk = Arc::new(SimDisk::new(&live, seed).unwrap());
        let mut rng = SimRng::new(seed ^ 0x1257);
        if seed % 2 == 1 {
            disk.set_faults(SimFaults {
                write_eio: 10,
                write_enospc: 10,
                sync_eio: 10,
                eintr: 30,
            });
        }
        let ctx = format!("install seed {seed} (replay: QUIVER_SIM_SEED={seed})");
        let Ok(follower) = Engine::open(&live, config(&disk, 0)) else {
            continue;
        };
        disk.power_cut_after(rng.below(60));
        let mut installed = 0u64;
        for s in &sealed {
            match follower.install_segment(&s.path) {
                Ok(_) => installed = s.last_index,
                Err(_) => break,
            }
        }
        match installed == sealed.last().expect("several").last_index {
            true => all_in += 1,
            false => cut_short += 1,
        }
        let image = root.path().join("image");
        let report = disk.crash_image(&image).unwrap();
        drop(follower);
        let disk2 = Arc::new(SimDisk::new(&image, seed).unwrap());
        let follower = Engine::open(&image, config(&disk2, 0))
            .unwrap_or_else(|e| panic!("{ctx}, {report:?}: open: {e}"));
        let last = follower.last_index_term().0;
        assert!(
            last >= installed,
            "{ctx}, {report:?}: installed {installed}, has {last}"
        );
        let ours = if last == 0 {
            Vec::new()
        } else {
            follower.entries(1, 1 << 20).unwrap()
        };
        assert_eq!(ours.len() as u64, last, "{ctx}");
        assert!(
            ours[..] == theirs[..ours.len()],
            "{ctx}, {report:?}: the follower's log is not a prefix of the leader's"
        );
    }
    if seeds.len() > 1 {
        assert!(
            all_in > 0 && cut_short > 0,
            "{all_in} whole, {cut_short} cut short"
        );
    }
}
