//! The engine's operations for Raft: follower appends, suffix truncation, the commit point,
//! and installing a shipped sealed segment, whole or after a prefix the log already holds.

use std::time::{Duration, Instant};

use bytes::Bytes;
use quiver_engine::format::{encode_stream_append, EntryKind};
use quiver_engine::{Engine, EngineConfig, EventData, LogError, RawRecord, SealedSegment};

fn open(dir: &std::path::Path) -> Engine {
    let config = EngineConfig::default()
        .commit_on_durable(false)
        .segment_bytes_max(16 << 10);
    Engine::open(dir, config).unwrap()
}

/// Records `first..=last` of a log whose record `i` appends event version `i - 1` to
/// stream `s`, one 1 KiB event each (with a fresh event id), in term `term`.
fn records(first: u64, last: u64, term: u64) -> Vec<RawRecord> {
    (first..=last)
        .map(|i| {
            let event = EventData::json("E", vec![b'x'; 1024]);
            RawRecord {
                index: i,
                term,
                position: i - 1,
                count: 1,
                kind: EntryKind::Append as u8,
                body: Bytes::from(encode_stream_append("s", i - 1, 1, &[event])),
            }
        })
        .collect()
}

fn sealed(engine: &Engine, at_least: usize) -> Vec<SealedSegment> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let s = engine.sealed_segments();
        if s.len() >= at_least || Instant::now() > until {
            return s;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn events(engine: &Engine) -> Option<u64> {
    engine
        .stream_info("s")
        .and_then(|s| s.current_version)
        .map(|v| v + 1)
}

#[test]
fn follower_appends_truncation_and_commit() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    assert_eq!(engine.append_entries(&records(1, 5, 1)).unwrap(), 5);
    assert_eq!(engine.last_index_term(), (5, 1));
    assert_eq!(engine.next_position(), 5);
    assert_eq!(
        events(&engine),
        None,
        "nothing is visible before Raft commits it"
    );
    let gap = engine.append_entries(&records(7, 7, 1)).unwrap_err();
    assert!(matches!(gap, LogError::NotContiguous(_)), "{gap}");
    engine.set_commit_index(3);
    assert_eq!(events(&engine), Some(3));
    let committed = engine.truncate_suffix(3).unwrap_err();
    assert!(
        matches!(committed, LogError::Committed { .. }),
        "{committed}"
    );
    engine.truncate_suffix(4).unwrap();
    assert_eq!(engine.last_index_term(), (3, 1));
    // A new leader's entries replace the cut suffix.
    engine.append_entries(&records(4, 6, 2)).unwrap();
    assert_eq!(engine.term_at(4), Some(2));
    engine.set_commit_index(6);
    assert_eq!(events(&engine), Some(6));
}

#[test]
fn installing_sealed_segments_whole_and_after_a_held_prefix() {
    let (a_dir, b_dir, c_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let leader = open(a_dir.path());
    let all = records(1, 60, 1);
    leader.append_entries(&all).unwrap();
    leader.set_commit_index(60);
    let segs = sealed(&leader, 2);
    assert!(segs.len() >= 2, "16 KiB segments of 1 KiB records seal");
    let (s0, s1) = (&segs[0], &segs[1]);
    assert_eq!(s0.first_index, 1);
    assert_eq!(s1.first_index, s0.last_index + 1);
    let file_len = std::fs::metadata(&s0.path).unwrap().len();
    assert!(s0.bytes <= file_len, "the used bytes are within the file");

    // A follower with an empty log takes the first segment whole.
    let empty = open(b_dir.path());
    assert_eq!(empty.install_segment(&s0.path).unwrap(), s0.last_index);
    assert_eq!(empty.last_index_term(), (s0.last_index, 1));
    // The second one continues it.
    empty.install_segment(&s1.path).unwrap();
    assert_eq!(empty.last_index_term().0, s1.last_index);
    empty.set_commit_index(s1.last_index);
    assert_eq!(events(&empty), Some(s1.last_index));

    // A follower that already holds the start of the first segment appends only the rest.
    let partial = open(c_dir.path());
    partial.append_entries(&all[..3]).unwrap();
    let added = partial.install_segment(&s0.path).unwrap();
    assert_eq!(added, s0.last_index - 3);
    assert_eq!(partial.last_index_term(), (s0.last_index, 1));
    let ours = partial.entries(1, 1 << 20).unwrap();
    let theirs = leader.entries(1, 1 << 20).unwrap();
    let n = s0.last_index as usize;
    assert!(ours[..n] == theirs[..n], "record for record");

    // One whose held prefix has another term is refused, and keeps its log.
    let d_dir = tempfile::tempdir().unwrap();
    let other = open(d_dir.path());
    other.append_entries(&records(1, 2, 7)).unwrap();
    let refused = other.install_segment(&s0.path).unwrap_err();
    assert!(matches!(refused, LogError::NotContiguous(_)), "{refused}");
    assert_eq!(other.last_index_term(), (2, 7));
}
