//! The Raft core over real engines: three nodes, each with its own data directory, driven
//! message by message in one thread. Proposals commit and become readable events on every
//! node; a node cut off while the others seal several segments catches up by receiving those
//! segment files in chunks; a node restarted from its directory keeps its term and vote and
//! rejoins; and every node ends with the same log, record for record.

use std::collections::BTreeSet;
use std::path::Path;

use quiver_engine::format::{encode_stream_append, EntryKind as RecordKind};
use quiver_engine::{EngineConfig, EventData, RawRecord};
use quiver_raft::{Config, Message, MessageKind, RawNode, Role, Storage};
use quiver_server::raft_log::{self, command, EngineLog};

const SEGMENT_BYTES: u64 = 64 << 10;

/// The newest segment file in a store's directory.
fn newest_segment(dir: &Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "qseg"))
        .max()
        .expect("a segment")
}

fn open(id: u64, dir: &Path) -> RawNode<EngineLog> {
    let config = EngineConfig::default().segment_bytes_max(SEGMENT_BYTES);
    let log = EngineLog::open(dir, config).expect("raft log opens");
    let mut c = Config::new(id, vec![1, 2, 3], id);
    c.applied = log.applied();
    c.ship_lag_min = 32;
    c.chunk_bytes = 16 << 10;
    RawNode::new(c, log)
}

struct Cluster {
    dirs: Vec<tempfile::TempDir>,
    nodes: Vec<Option<RawNode<EngineLog>>>,
    queue: Vec<Message>,
    /// Nodes whose messages (both ways) are dropped.
    cut: BTreeSet<u64>,
    segments_to: Vec<u64>,
    next_version: u64,
}

impl Cluster {
    fn new() -> Cluster {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let nodes = (0..3)
            .map(|i| Some(open(i as u64 + 1, dirs[i].path())))
            .collect();
        Cluster {
            dirs,
            nodes,
            queue: Vec::new(),
            cut: BTreeSet::new(),
            segments_to: vec![0; 3],
            next_version: 0,
        }
    }

    fn node(&self, id: u64) -> &RawNode<EngineLog> {
        self.nodes[id as usize - 1].as_ref().expect("up")
    }

    fn drain(&mut self, id: u64) {
        let Some(node) = self.nodes[id as usize - 1].as_mut() else {
            return;
        };
        while node.has_ready() {
            let ready = node.ready();
            node.storage_mut().persist(&ready).expect("persist");
            node.storage_mut().apply(&ready.committed).expect("apply");
            self.queue
                .extend(ready.early.iter().chain(&ready.messages).cloned());
            node.advance(ready);
        }
    }

    /// Delivers every queued message (and what they cause) until the network is quiet.
    fn settle(&mut self) {
        let mut rounds = 0;
        while !self.queue.is_empty() {
            rounds += 1;
            assert!(rounds < 100_000, "the cluster never went quiet");
            let m = self.queue.remove(0);
            if self.cut.contains(&m.from) || self.cut.contains(&m.to) {
                continue;
            }
            if matches!(m.kind, MessageKind::Segment { .. }) {
                self.segments_to[m.to as usize - 1] += 1;
            }
            let to = m.to;
            if let Some(node) = self.nodes[to as usize - 1].as_mut() {
                node.step(m);
                self.drain(to);
            }
        }
    }

    fn tick_all(&mut self) {
        for id in 1..=3 {
            if let Some(n) = self.nodes[id as usize - 1].as_mut() {
                n.tick();
                self.drain(id);
            }
        }
        self.settle();
    }

    fn leader(&self) -> Option<u64> {
        (1..=3).find(|id| {
            !self.cut.contains(id)
                && self.nodes[*id as usize - 1]
                    .as_ref()
                    .is_some_and(|n| n.role() == Role::Leader)
        })
    }

    fn elect(&mut self) -> u64 {
        for _ in 0..200 {
            if let Some(l) = self.leader() {
                return l;
            }
            self.tick_all();
        }
        panic!("no leader");
    }

    /// Proposes `n` 1 KiB events to stream `acct`, in batches of 10, and commits them.
    fn propose(&mut self, n: u64) {
        let l = self.elect();
        for k in 0..n {
            let event = EventData::json("Deposited", vec![b'x'; 1024]);
            let body = encode_stream_append("acct", self.next_version, 1, &[event]);
            let data = command(RecordKind::Append, 1, &body);
            let node = self.nodes[l as usize - 1].as_mut().unwrap();
            raft_log::propose(node, data).expect("the leader takes proposals");
            self.next_version += 1;
            if k % 10 == 9 {
                self.drain(l);
                self.settle();
            }
        }
        self.drain(l);
        self.settle();
        // A heartbeat carries the final commit index to the followers.
        self.tick_all();
    }

    fn events(&self, id: u64) -> Option<u64> {
        let engine = self.node(id).storage().engine();
        engine
            .stream_info("acct")
            .and_then(|s| s.current_version)
            .map(|v| v + 1)
    }

    fn log(&self, id: u64) -> Vec<RawRecord> {
        let engine = self.node(id).storage().engine();
        let mut out = Vec::new();
        let last = engine.last_index_term().0;
        while (out.len() as u64) < last {
            let batch = engine.entries(out.len() as u64 + 1, 1 << 20).unwrap();
            assert!(!batch.is_empty());
            out.extend(batch);
        }
        out
    }
}

#[test]
fn three_engines_replicate_ship_segments_and_restart() {
    let mut c = Cluster::new();
    c.propose(50);
    for id in 1..=3 {
        assert_eq!(
            c.events(id),
            Some(50),
            "node {id} serves the committed events"
        );
    }

    // Node 3 is cut off while the others commit enough to seal several segments.
    let lagging = if c.leader() == Some(3) { 2 } else { 3 };
    c.cut.insert(lagging);
    c.propose(400);
    let l = c.elect();
    let sealed = c.node(l).storage().engine().sealed_segments().len();
    assert!(sealed >= 3, "the leader sealed {sealed} segments");
    assert_eq!(
        c.events(lagging),
        Some(50),
        "the cut-off node saw nothing new"
    );

    // Back: it is far behind at a segment boundary, so it is sent whole segments.
    c.cut.clear();
    for _ in 0..50 {
        c.tick_all();
        if c.node(lagging).storage().last_index() == c.node(l).storage().last_index() {
            break;
        }
    }
    assert!(
        c.segments_to[lagging as usize - 1] > 0,
        "node {lagging} received segment chunks"
    );
    c.tick_all();
    assert_eq!(c.events(lagging), Some(450), "node {lagging} caught up");

    // A restarted follower keeps its term and vote and rejoins.
    let follower = (1..=3).find(|id| *id != c.leader().unwrap()).unwrap();
    let before = c.node(follower).storage().hard_state();
    c.nodes[follower as usize - 1] = None;
    c.propose(10);
    let dir = c.dirs[follower as usize - 1].path().to_path_buf();
    c.nodes[follower as usize - 1] = Some(open(follower, &dir));
    let after = c.node(follower).storage().hard_state();
    assert!(after.term >= before.term && after.term > 0);
    assert_eq!((after.term, after.vote), (before.term, before.vote));
    c.propose(10);
    for _ in 0..5 {
        c.tick_all();
    }

    for id in 1..=3 {
        assert_eq!(c.events(id), Some(470), "node {id}");
    }
    let reference = c.log(1);
    for id in 2..=3 {
        assert_eq!(
            c.log(id),
            reference,
            "node {id}'s log is node 1's, record for record"
        );
    }
}

#[test]
fn a_bad_command_is_refused_and_loses_nothing() {
    let c = Cluster::new();
    let mut node = c.nodes.into_iter().next().unwrap().unwrap();
    let ready = quiver_raft::Ready {
        entries: vec![quiver_raft::Entry::normal(
            1,
            1,
            vec![RecordKind::NoOp as u8, 0, 0, 0, 0],
        )],
        ..Default::default()
    };
    let err = node.storage_mut().persist(&ready).unwrap_err();
    assert!(err.to_string().contains("no-op"), "{err}");
    let short = quiver_raft::Ready {
        entries: vec![quiver_raft::Entry::normal(1, 1, vec![1, 0])],
        ..Default::default()
    };
    assert!(node.storage_mut().persist(&short).is_err());
    assert_eq!(node.storage().last_index(), 0, "nothing was written");
}

fn deposit(version: u64) -> Vec<u8> {
    let event = EventData::json("Deposited", b"{}".to_vec());
    command(
        RecordKind::Append,
        1,
        &encode_stream_append("acct", version, 1, &[event]),
    )
}

/// A batch with one bad entry writes nothing and truncates nothing: every entry is checked
/// before the conflicting suffix is removed.
#[test]
fn a_bad_entry_truncates_nothing() {
    let c = Cluster::new();
    let mut node = c.nodes.into_iter().next().unwrap().unwrap();
    let good: Vec<quiver_raft::Entry> = (1..=3)
        .map(|i| quiver_raft::Entry::normal(i, 1, deposit(i - 1)))
        .collect();
    let ready = quiver_raft::Ready {
        entries: good.clone(),
        ..Default::default()
    };
    node.storage_mut()
        .persist(&ready)
        .expect("valid entries persist");
    let mut bad_body = deposit(1);
    bad_body.truncate(bad_body.len() - 3);
    let replacing = quiver_raft::Ready {
        entries: vec![
            quiver_raft::Entry::normal(2, 2, deposit(1)),
            quiver_raft::Entry::normal(3, 2, bad_body),
        ],
        ..Default::default()
    };
    assert!(node.storage_mut().persist(&replacing).is_err());
    assert_eq!(node.storage().last_index(), 3);
    assert_eq!(node.storage().entries(1, 4, usize::MAX), good, "untouched");
}

/// A command the engine would refuse is refused at the proposal, before any node sees it.
#[test]
fn a_bad_proposal_never_enters_the_log() {
    let mut c = Cluster::new();
    let l = c.elect();
    let node = c.nodes[l as usize - 1].as_mut().unwrap();
    let last = node.last_index();
    let mut data = deposit(0);
    data.truncate(data.len() - 3);
    let err = raft_log::propose(node, data).unwrap_err();
    assert!(matches!(err, raft_log::ProposeError::Invalid(_)), "{err}");
    assert!(raft_log::propose(node, Vec::new()).is_err(), "empty");
    assert_eq!(node.last_index(), last, "nothing was proposed");
    raft_log::propose(node, deposit(0)).expect("a good one is taken");
}

/// What was readable stays readable across a restart, before any leader speaks; the restart
/// does not hand the applied log out again.
#[test]
fn a_restart_keeps_the_commit_index_and_what_was_applied() {
    let mut c = Cluster::new();
    c.propose(30);
    let follower = (1..=3).find(|id| Some(*id) != c.leader()).unwrap();
    assert_eq!(c.events(follower), Some(30));
    c.nodes[follower as usize - 1] = None;
    let dir = c.dirs[follower as usize - 1].path().to_path_buf();
    let mut node = open(follower, &dir);
    assert_eq!(
        node.storage()
            .engine()
            .stream_info("acct")
            .and_then(|s| s.current_version),
        Some(29),
        "readable at once"
    );
    let ready = node.ready();
    assert!(
        ready.committed.is_empty(),
        "re-applied {} entries",
        ready.committed.len()
    );
    node.advance(ready);
}

/// A log without `raft-state` (a node stopped between writing its first entries and its
/// hard state): the term is the log's, and the node votes for no one else in it.
#[test]
fn a_missing_hard_state_takes_the_term_of_the_log() {
    let mut c = Cluster::new();
    c.propose(5);
    let term = c.node(1).term();
    c.nodes[0] = None;
    let dir = c.dirs[0].path().to_path_buf();
    std::fs::remove_file(dir.join(raft_log::HARD_STATE_FILE)).unwrap();
    let node = open(1, &dir);
    assert_eq!(node.term(), term);
    let mut node = node;
    let ready = node.ready();
    let hs = ready.hard_state.expect("the raised term is written");
    assert_eq!((hs.term, hs.vote), (term, Some(1)));
    node.storage_mut().persist(&ready).unwrap();
    node.advance(ready);
}

/// A commit index beyond the end of the log means committed entries were lost: refuse to
/// open, naming it, rather than silently lower it.
#[test]
fn a_log_shorter_than_its_commit_index_is_refused() {
    let mut c = Cluster::new();
    c.propose(5);
    c.nodes[0] = None;
    let dir = c.dirs[0].path().to_path_buf();
    // A mark in the second slot, newer than any written, beyond the log.
    let mut slot = Vec::new();
    slot.extend_from_slice(&u64::MAX.to_le_bytes());
    slot.extend_from_slice(&1_000u64.to_le_bytes());
    slot.extend_from_slice(&crc32c::crc32c(&slot).to_le_bytes());
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(raft_log::COMMIT_FILE))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &slot, 20).unwrap();
    let config = EngineConfig::default().segment_bytes_max(SEGMENT_BYTES);
    let err = EngineLog::open(&dir, config).err().expect("refused");
    assert!(
        matches!(
            err,
            raft_log::OpenLogError::Engine(quiver_engine::OpenError::Corruption(_))
        ),
        "{err}"
    );
    assert!(err.to_string().contains("below the durable floor"), "{err}");
}

/// A committed record damaged on disk is corruption, never a torn tail to cut: the commit
/// index known before the engine opens is its durable floor. The last record of the log is
/// the case a single node cannot tell from a torn write; here it is committed, so it is
/// refused with its file and offset.
#[test]
fn a_damaged_committed_record_is_refused_not_cut() {
    let mut c = Cluster::new();
    c.propose(5);
    let last = c.node(1).storage().last_index();
    assert_eq!(c.node(1).commit(), last);
    c.nodes[0] = None;
    let dir = c.dirs[0].path().to_path_buf();
    let segment = newest_segment(&dir);
    let mut bytes = std::fs::read(&segment).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).expect("records");
    bytes[end - 8] ^= 0x40;
    std::fs::write(&segment, &bytes).unwrap();
    let config = EngineConfig::default().segment_bytes_max(SEGMENT_BYTES);
    let err = EngineLog::open(&dir, config).err().expect("refused");
    assert!(
        matches!(
            err,
            raft_log::OpenLogError::Engine(quiver_engine::OpenError::Corruption(_))
        ),
        "{err}"
    );
}

/// Node id 0 cannot be voted for: its vote would read back as none.
#[test]
fn a_vote_for_node_zero_is_refused() {
    let c = Cluster::new();
    let mut node = c.nodes.into_iter().next().unwrap().unwrap();
    let ready = quiver_raft::Ready {
        hard_state: Some(quiver_raft::HardState {
            term: 1,
            vote: Some(0),
            commit: 0,
        }),
        ..Default::default()
    };
    assert!(node.storage_mut().persist(&ready).is_err());
}

/// A record the engine can no longer read (damaged on disk after it was written) comes back
/// as a short read, and the error is kept for the node's driver, which stops the node on
/// it (`cluster/driver.rs`, after each `ready()`): never a panic on some thread, never a
/// Ready built on a log with a silent hole.
#[test]
fn a_failed_read_is_kept_for_the_driver_not_a_panic() {
    use std::os::unix::fs::FileExt;
    let mut c = Cluster::new();
    c.propose(5);
    let last = c.node(1).storage().last_index();
    let dir = c.dirs[0].path().to_path_buf();
    let segment = newest_segment(&dir);
    // In place: the engine reads the file through its mapping, which sees the change.
    let bytes = std::fs::read(&segment).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).expect("records");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.write_all_at(&[bytes[end - 8] ^ 0x40], (end - 8) as u64)
        .unwrap();
    let node = c.nodes[0].as_mut().expect("up");
    let read = node.storage().entries(1, last + 1, usize::MAX);
    assert!((read.len() as u64) < last, "a damaged record was read");
    let failure = node
        .storage_mut()
        .take_failure()
        .expect("the failure is kept");
    assert!(
        matches!(
            failure,
            quiver_engine::LogError::Corruption(_) | quiver_engine::LogError::Decode(_)
        ),
        "{failure}"
    );
    assert!(node.storage_mut().take_failure().is_none(), "taken once");
}
