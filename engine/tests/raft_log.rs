//! The engine's operations for Raft: follower appends, suffix truncation, the commit point,
//! and installing a shipped sealed segment, whole or after a prefix the log already holds.

use std::time::{Duration, Instant};

use bytes::Bytes;
use quiver_engine::format::{
    encode_stream_append, EntryKind, RECORD_BODY_BYTES_MAX, RECORD_HEADER_BYTES,
};
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

/// The durable index follows a follower's appends; the commit index follows
/// `set_commit_index`, never back; and `entries` reads from an index while the bytes read
/// (bodies and headers) are below the bound, always at least one record.
#[test]
fn indexes_and_entries_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    assert_eq!((engine.durable_index(), engine.commit_index()), (0, 0));
    engine.append_entries(&records(1, 5, 1)).unwrap();
    assert_eq!(engine.durable_index(), 5);
    engine.set_commit_index(3);
    assert_eq!(engine.commit_index(), 3);
    engine.set_commit_index(2);
    assert_eq!(
        engine.commit_index(),
        3,
        "the commit index never moves back"
    );

    let all = engine.entries(1, usize::MAX).unwrap();
    assert_eq!(all.len(), 5);
    let size = |r: &RawRecord| r.body.len() + RECORD_HEADER_BYTES;
    let two = size(&all[0]) + size(&all[1]);
    let indexes = |from, max| {
        let read = engine.entries(from, max).unwrap();
        read.iter().map(|r| r.index).collect::<Vec<_>>()
    };
    assert_eq!(indexes(1, two), [1, 2], "stops once the bound is reached");
    assert_eq!(
        indexes(1, two - 1),
        [1, 2],
        "the record that crosses it is read"
    );
    assert_eq!(indexes(1, two + 1), [1, 2, 3]);
    assert_eq!(indexes(4, 0), [4], "at least one");
    assert_eq!(
        indexes(6, usize::MAX),
        Vec::<u64>::new(),
        "none past the tip"
    );
}

/// A follower's record body may be as large as a record body can be, and no larger.
#[test]
fn a_follower_takes_a_body_of_exactly_the_record_limit() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let body = |data_len: usize| {
        let event = EventData::binary("E", vec![b'd'; data_len]);
        Bytes::from(encode_stream_append("s", 0, 1, &[event]))
    };
    let overhead = body(0).len();
    let record = |body: Bytes| RawRecord {
        index: 1,
        term: 1,
        position: 0,
        count: 1,
        kind: EntryKind::Append as u8,
        body,
    };
    let over = body(RECORD_BODY_BYTES_MAX - overhead + 1);
    assert_eq!(over.len(), RECORD_BODY_BYTES_MAX + 1);
    let refused = engine.append_entries(&[record(over)]).unwrap_err();
    assert!(matches!(refused, LogError::Decode(_)), "{refused}");
    assert_eq!(engine.last_index_term(), (0, 0));
    let fits = body(RECORD_BODY_BYTES_MAX - overhead);
    assert_eq!(fits.len(), RECORD_BODY_BYTES_MAX);
    assert_eq!(engine.append_entries(&[record(fits)]).unwrap(), 1);
    let read = engine.entries(1, 0).unwrap();
    assert_eq!(read[0].body.len(), RECORD_BODY_BYTES_MAX);
}

/// Under Raft a sealed segment becomes shippable once it is committed: moving the commit
/// index summarizes it without waiting for another write.
#[test]
fn a_committed_sealed_segment_becomes_shippable_without_another_write() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    // About fifteen 1 KiB records a segment: three sealed segments and an active one.
    engine.append_entries(&records(1, 60, 1)).unwrap();
    // The writer wakes the background thread after each batch; let those wake-ups pass,
    // so that only the commit below can summarize (the test holds without the pause).
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        engine.sealed_segments().is_empty(),
        "nothing is committed yet"
    );
    engine.set_commit_index(60);
    assert!(
        !sealed(&engine, 3).is_empty(),
        "no segment became shippable"
    );
}

/// A leader's log of 60 committed 1 KiB records, and its sealed segments (at least two).
fn leader_with_segments(dir: &std::path::Path) -> (Engine, Vec<SealedSegment>) {
    let leader = open(dir);
    leader.append_entries(&records(1, 60, 1)).unwrap();
    leader.set_commit_index(60);
    let segs = sealed(&leader, 2);
    assert!(segs.len() >= 2, "16 KiB segments of 1 KiB records seal");
    (leader, segs)
}

/// A segment that continues the log exactly joins it as the leader's file, whatever this
/// node's own segment size: its records are durable at once, and once committed and
/// followed by another it is shippable in turn, as the leader sealed it.
#[test]
fn a_segment_installed_whole_is_durable_and_keeps_its_bounds() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_leader, segs) = leader_with_segments(a_dir.path());
    let (s0, s1) = (&segs[0], &segs[1]);
    // Four times the leader's segment size: its own writes would not have sealed s0.
    let config = EngineConfig::default()
        .commit_on_durable(false)
        .segment_bytes_max(64 << 10);
    let follower = Engine::open(b_dir.path(), config).unwrap();
    follower.install_segment(&s0.path).unwrap();
    assert_eq!(follower.durable_index(), s0.last_index);
    follower.install_segment(&s1.path).unwrap();
    assert_eq!(follower.durable_index(), s1.last_index);
    follower.set_commit_index(s1.last_index);
    let shippable = sealed(&follower, 1);
    assert_eq!(
        shippable.first().map(|s| (s.first_index, s.last_index)),
        Some((1, s0.last_index)),
        "the installed segment keeps the leader's bounds"
    );
}

/// A shipped segment with damaged bytes is refused whole, also by a follower that holds its
/// first records: nothing of it is appended.
#[test]
fn a_damaged_segment_is_refused_whole_after_a_held_prefix() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_leader, segs) = leader_with_segments(a_dir.path());
    let s0 = &segs[0];
    let mut bytes = std::fs::read(&s0.path).unwrap();
    bytes[s0.bytes as usize - 100] ^= 0x40; // inside its last record
    let damaged = b_dir.path().join("shipped.qseg");
    std::fs::write(&damaged, &bytes).unwrap();
    let follower = open(&b_dir.path().join("log"));
    follower.append_entries(&records(1, 3, 1)).unwrap();
    let refused = follower.install_segment(&damaged).unwrap_err();
    assert!(matches!(refused, LogError::Corruption(_)), "{refused}");
    assert_eq!(follower.last_index_term(), (3, 1));
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
