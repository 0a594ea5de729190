//! The engine's durability bugs of issue 10, one deterministic test each: crash images built
//! by hand (what a power cut can leave), Raft operations at awkward boundaries, signals on
//! the writer thread. Each test failed before the fix it guards.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use quiver_engine::format::{encode_stream_append, EntryKind};
use quiver_engine::segment::{SEGMENT_EXT, SUMMARY_EXT};
use quiver_engine::*;

fn raft_config() -> EngineConfig {
    EngineConfig::default()
        .commit_on_durable(false)
        .segment_bytes_max(16 << 10)
}

fn open_raft(dir: &Path) -> Engine {
    Engine::open(dir, raft_config()).unwrap()
}

/// Records `first..=last` appending one event of `bytes` bytes each to `stream`, whose
/// version of record `i` is `i - 1 - version_offset`.
fn records_of(stream: &str, first: u64, last: u64, term: u64, bytes: usize) -> Vec<RawRecord> {
    (first..=last)
        .map(|i| {
            let event = EventData::json("E", vec![b'x'; bytes]);
            RawRecord {
                index: i,
                term,
                position: i - 1,
                count: 1,
                kind: EntryKind::Append as u8,
                body: Bytes::from(encode_stream_append(stream, i - 1, 1, &[event])),
            }
        })
        .collect()
}

/// Appends one binary event of `size` bytes, each byte `v` (as u8), to stream "s"; then v += 1.
fn put(engine: &Engine, v: &mut u64, size: usize) {
    let data = vec![*v as u8; size];
    engine
        .append(
            "s",
            ExpectedVersion::Any,
            vec![EventData::binary("E", data)],
        )
        .unwrap();
    *v += 1;
}

/// Writes events of `size` bytes until a second segment exists, then `more` into it, and
/// closes the engine. Returns how many were written.
fn into_a_second_segment(dir: &Path, config: &EngineConfig, size: usize, more: usize) -> u64 {
    let engine = Engine::open(dir, config.clone()).unwrap();
    let mut v = 0u64;
    while files_with(dir, SEGMENT_EXT).len() < 2 {
        put(&engine, &mut v, size);
    }
    for _ in 0..more {
        put(&engine, &mut v, size);
    }
    v
}

fn files_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

/// Bug 4: `truncate_suffix` at a segment boundary made the previous segment the active one
/// again but left its summary; records appended after it were then hidden by the stale
/// summary on the next open ("segment starts at index N, the log continues at index N-k").
#[test]
fn truncation_at_a_segment_boundary_leaves_no_stale_summary() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_raft(dir.path());
    engine
        .append_entries(&records_of("s", 1, 20, 1, 1024))
        .unwrap();
    let segs = files_with(dir.path(), SEGMENT_EXT);
    assert_eq!(segs.len(), 2, "1 KiB records fill a 16 KiB segment");
    let second: u64 = segs[1]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    engine.set_commit_index(second - 1);
    drop(engine); // a clean close writes the summary of the sealed, committed segment
    assert_eq!(files_with(dir.path(), SUMMARY_EXT).len(), 1);

    let engine = open_raft(dir.path());
    engine.truncate_suffix(second).unwrap();
    assert_eq!(engine.last_index_term().0, second - 1);
    // Small records: the first ones fit in the old segment's free space, then it rolls.
    let small = records_of("s", second, second + 40, 2, 200);
    engine.append_entries(&small).unwrap();
    let tip = engine.last_index_term();
    assert_eq!(tip.0, second + 40);
    assert!(files_with(dir.path(), SEGMENT_EXT).len() >= 2, "it rolled");
    let first_new: u64 = files_with(dir.path(), SEGMENT_EXT)[1]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        first_new > second,
        "some small records went to the old segment"
    );
    drop(engine);

    let engine = Engine::open(dir.path(), raft_config()).expect("reopen after a clean close");
    assert_eq!(engine.last_index_term(), tip);
}

/// A segment file whose header says it starts at index `header_index` and whose one record
/// has index `record_index`, pre-zeroed to 64 KiB.
fn crafted_segment(path: &Path, header_index: u64, record_index: u64) {
    crafted_segment_at(path, (header_index, 0), (record_index, 0), 0);
}

/// The same with positions: header (index, position), record (index, position) appending
/// version `version` of stream "s".
fn crafted_segment_at(path: &Path, header: (u64, u64), record: (u64, u64), version: u64) {
    use zerocopy::IntoBytes;
    let capacity = 64 << 10;
    let mut bytes = format::segment_header(header.0, header.1, capacity)
        .as_bytes()
        .to_vec();
    let body = encode_stream_append("s", version, 1, &[EventData::json("E", "{}")]);
    let h = format::record_header(EntryKind::Append, record.0, 1, record.1, 1, &body);
    bytes.extend_from_slice(h.as_bytes());
    bytes.extend_from_slice(&body);
    bytes.resize(capacity as usize, 0);
    std::fs::write(path, bytes).unwrap();
}

/// Bug 9: the first record's index was never checked against the segment header; open
/// panicked on an assertion instead of reporting the damage, and so did `install_segment`
/// (with the state lock held) for a file from a faulty leader.
#[test]
fn first_record_index_must_match_the_segment_header() {
    let dir = tempfile::tempdir().unwrap();
    let seg = dir.path().join(segment::segment_name(1));
    crafted_segment(&seg, 1, 2);
    match Engine::open(dir.path(), EngineConfig::default()) {
        Err(OpenError::Corruption(c)) => {
            assert_eq!(c.file, seg);
            assert_eq!(c.offset, format::SEGMENT_HEADER_BYTES as u64, "{c}");
        }
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("a record with the wrong index was accepted"),
    }

    let shipped_dir = tempfile::tempdir().unwrap();
    let shipped = shipped_dir.path().join(segment::segment_name(1));
    crafted_segment(&shipped, 1, 3);
    let follower_dir = tempfile::tempdir().unwrap();
    let follower = open_raft(follower_dir.path());
    let refused = follower.install_segment(&shipped).unwrap_err();
    assert!(matches!(refused, LogError::Corruption(_)), "{refused}");
    assert_eq!(follower.last_index_term(), (0, 0));
    // The engine still works: its lock was not poisoned by a panic.
    follower
        .append_entries(&records_of("s", 1, 1, 1, 10))
        .unwrap();
}

/// The same check for a shipped segment whose first records this log already holds: they
/// are only compared by term, so the scan's check of the header is all that stands between a
/// malformed segment and "already here".
#[test]
fn a_held_segment_whose_first_record_does_not_match_its_header_is_refused() {
    let follower_dir = tempfile::tempdir().unwrap();
    let follower = open_raft(follower_dir.path());
    follower
        .append_entries(&records_of("s", 1, 3, 1, 10))
        .unwrap();
    let shipped_dir = tempfile::tempdir().unwrap();
    let shipped = shipped_dir.path().join(segment::segment_name(1));
    // Header: first index 1; its one record: index 2, term 1 (as this log's record 2).
    crafted_segment(&shipped, 1, 2);
    let refused = follower.install_segment(&shipped).unwrap_err();
    assert!(matches!(refused, LogError::Corruption(_)), "{refused}");
    assert_eq!(follower.last_index_term(), (3, 1));
}

/// A shipped segment must continue the log's positions as well as its indexes.
#[test]
fn a_shipped_segment_whose_position_does_not_continue_the_log_is_refused() {
    let follower_dir = tempfile::tempdir().unwrap();
    let follower = open_raft(follower_dir.path());
    follower
        .append_entries(&records_of("s", 1, 3, 1, 10))
        .unwrap();
    assert_eq!(follower.next_position(), 3);
    let shipped_dir = tempfile::tempdir().unwrap();
    let shipped = shipped_dir.path().join(segment::segment_name(4));
    // Index 4 continues the log; position 5 does not (it continues at 3).
    crafted_segment_at(&shipped, (4, 5), (4, 5), 3);
    let refused = follower.install_segment(&shipped).unwrap_err();
    assert!(matches!(refused, LogError::NotContiguous(_)), "{refused}");
    assert_eq!(follower.last_index_term(), (3, 1));
    assert_eq!(follower.next_position(), 3);
}

/// One record appending `stream`'s event `version` (of `bytes` bytes) at `index`/`position`.
fn one_event(index: u64, position: u64, stream: &str, version: u64, bytes: usize) -> RawRecord {
    let event = EventData::json("E", vec![b'x'; bytes]);
    RawRecord {
        index,
        term: 1,
        position,
        count: 1,
        kind: EntryKind::Append as u8,
        body: Bytes::from(encode_stream_append(stream, version, 1, &[event])),
    }
}

/// Bug 2: scavenge kept a stream's newest version as writers see it, which under Raft may
/// be uncommitted. With v0–v7 committed and hidden and v8 durable but uncommitted, it dropped
/// v0–v7; truncating v8 then left no event of the stream anywhere, and `NoStream` succeeded
/// at version 0. The newest *committed* version must stay on disk.
#[test]
fn scavenge_keeps_the_newest_committed_version() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_raft(dir.path());
    let mut log: Vec<RawRecord> = (0..8).map(|v| one_event(v + 1, v, "s", v, 1024)).collect();
    let mut body = Vec::new();
    let hide = StreamMetadata {
        truncate_before: Some(8),
        ..StreamMetadata::default()
    };
    format::encode_metadata(&mut body, "s", &hide);
    log.push(RawRecord {
        index: 9,
        term: 1,
        position: 8,
        count: 0,
        kind: EntryKind::Metadata as u8,
        body: Bytes::from(body),
    });
    // Filler on another stream until the first segment is sealed.
    for k in 0..12u64 {
        log.push(one_event(10 + k, 8 + k, "f", k, 1024));
    }
    let v8 = one_event(22, 20, "s", 8, 16);
    log.push(v8);
    engine.append_entries(&log).unwrap();
    engine.set_commit_index(21);
    drop(engine); // writes the summary of the sealed first segment
    let engine = open_raft(dir.path());
    engine.set_commit_index(21);
    let stats = engine.scavenge().unwrap();
    assert!(stats.events_removed > 0, "{stats:?}");
    engine.truncate_suffix(22).unwrap();
    drop(engine);

    let engine = open_raft(dir.path());
    let (tx, rx) = std::sync::mpsc::channel();
    let write = StreamWrite {
        stream: "s".into(),
        expected: ExpectedVersion::NoStream,
        events: vec![EventData::json("E", "{}")],
    };
    engine.append_with(vec![write], move |r| tx.send(r).unwrap());
    let answer = rx
        .try_recv()
        .expect("a wrong expected version is answered at once");
    match answer {
        Err(AppendError::WrongExpectedVersion { actual, .. }) => assert_eq!(actual, Some(7)),
        other => panic!("stream 's' must still exist at version 7: {other:?}"),
    }
}

fn read_all_data(engine: &Engine) -> Vec<(String, u64, Vec<u8>)> {
    engine
        .read_all(
            ReadFrom::Start,
            Direction::Forward,
            u64::MAX,
            AllFilter::default(),
        )
        .map(|e| {
            let e = e.expect("read $all");
            (e.stream.to_string(), e.version, e.data.to_vec())
        })
        .collect()
}

/// Bug 1: a leftover `next.spare` was reused after checking only its size. A roll renames
/// the spare into place and the rename is durable only at the directory sync after the
/// data; a power cut in between leaves a "spare" holding a header and records. Reused, its
/// old records reappeared after the new ones on the next open. Here the lost rename is
/// rebuilt by hand: the second segment is renamed back to `next.spare`.
#[test]
fn leftover_spare_with_records_is_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig::default().segment_bytes_max(64 << 10);
    // More records in the second segment, all of the same size.
    let v = into_a_second_segment(dir.path(), &config, 1024, 5);
    let segs = files_with(dir.path(), SEGMENT_EXT);
    let spare = dir.path().join(segment::SPARE_NAME);
    std::fs::rename(&segs[1], &spare).unwrap();

    let engine = Engine::open(dir.path(), config.clone()).unwrap();
    let kept = read_all_data(&engine);
    assert!(!kept.is_empty() && kept.len() < v as usize);
    // One event of the same size: it does not fit in the first segment, so the log rolls.
    let next = kept.len() as u64;
    let data = vec![0xAB; 1024];
    engine
        .append(
            "s",
            ExpectedVersion::Exact(next - 1),
            vec![EventData::binary("E", data.clone())],
        )
        .unwrap();
    drop(engine);

    let engine = Engine::open(dir.path(), config).unwrap();
    let mut want = kept;
    want.push(("s".to_string(), next, data));
    let got = read_all_data(&engine);
    assert_eq!(
        got.len(),
        want.len(),
        "no event that was never written appears"
    );
    assert!(got == want);
}

/// Offsets of the records of a segment file, walking its frames up to the first thing that
/// is not a whole record.
fn record_offsets(path: &Path) -> Vec<u64> {
    use quiver_engine::format::{parse_record, RecordParse, RECORD_HEADER_BYTES};
    let bytes = std::fs::read(path).unwrap();
    let mut at = format::SEGMENT_HEADER_BYTES;
    let mut out = Vec::new();
    while let RecordParse::Ok { body, .. } = parse_record(&bytes[at..]) {
        out.push(at as u64);
        at += RECORD_HEADER_BYTES + body.len();
    }
    out
}

/// The highest durable watermark any record of the segment at `path` carries.
fn highest_watermark(path: &Path) -> u64 {
    use quiver_engine::format::{parse_record, RecordParse, RECORD_HEADER_BYTES};
    let bytes = std::fs::read(path).unwrap();
    let mut at = format::SEGMENT_HEADER_BYTES;
    let mut mark = 0;
    while let RecordParse::Ok { header, body } = parse_record(&bytes[at..]) {
        mark = mark.max(header.durable_through().unwrap_or(0));
        at += RECORD_HEADER_BYTES + body.len();
    }
    mark
}

fn flip_bit(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

fn big_raft_config() -> EngineConfig {
    EngineConfig::default()
        .commit_on_durable(false)
        .segment_bytes_max(1 << 20)
}

/// Bug 3: a batch that holds the tail of segment N and the header of N+1 can leave, after a
/// power cut, a torn record at N's end and a header-less N+1. Recovery took N+1 for the last
/// segment, so N's torn tail was "corruption in a sealed segment" and the store refused to
/// open after an ordinary crash.
#[test]
fn torn_tail_before_a_half_created_segment_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig::default().segment_bytes_max(16 << 10);
    let v = into_a_second_segment(dir.path(), &config, 700, 3);
    let last = files_with(dir.path(), SEGMENT_EXT).pop().unwrap();
    let offsets = record_offsets(&last);
    let first: u64 = last.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    // The last record torn (its second half never reached the disk), and the next segment
    // created with a header that never did either.
    let torn = *offsets.last().unwrap();
    let mut bytes = std::fs::read(&last).unwrap();
    for b in &mut bytes[torn as usize + 400..torn as usize + 740] {
        *b = 0;
    }
    std::fs::write(&last, bytes).unwrap();
    let next = dir
        .path()
        .join(segment::segment_name(first + offsets.len() as u64));
    std::fs::write(&next, vec![0u8; 16 << 10]).unwrap();

    let engine = Engine::open(dir.path(), config.clone()).expect("an ordinary crash opens");
    assert_eq!(
        engine.stream_info("s").unwrap().current_version,
        Some(v - 2)
    );
    assert!(engine.open_stats().torn_bytes_cut > 0);
    assert!(!next.exists(), "the half-created segment is gone");
    engine
        .append(
            "s",
            ExpectedVersion::Exact(v - 2),
            vec![EventData::json("E", "{}")],
        )
        .unwrap();
    // The cut segment took the append where the torn record was: it is the active one again,
    // and a restart finds the log whole, with nothing of the torn record.
    let segments = files_with(dir.path(), SEGMENT_EXT);
    assert_eq!(segments.last(), Some(&last), "no new segment was started");
    assert!(
        !last.with_extension(SUMMARY_EXT).exists(),
        "the active segment has no summary"
    );
    drop(engine);
    let engine = Engine::open(dir.path(), config).expect("reopens");
    assert_eq!(
        engine.stream_info("s").unwrap().current_version,
        Some(v - 1)
    );
    assert_eq!(
        engine.open_stats().torn_bytes_cut,
        0,
        "nothing torn this time"
    );
}

/// Bug 8, first half: a flipped bit in the last acknowledged record was cut silently as a
/// torn tail. Under Raft the commit index, persisted by Raft, is a durable mark the caller
/// hands to open: a bad record at or below it is corruption, with file and offset.
#[test]
fn damage_below_the_durable_floor_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), big_raft_config()).unwrap();
    for i in 1..=20 {
        engine
            .append_entries(&records_of("s", i, i, 1, 300))
            .unwrap();
    }
    engine.set_commit_index(20);
    drop(engine);
    let seg = files_with(dir.path(), SEGMENT_EXT).pop().unwrap();
    let offsets = record_offsets(&seg);
    assert_eq!(offsets.len(), 20);
    flip_bit(&seg, offsets[19] + 100);
    match Engine::open(dir.path(), big_raft_config().durable_floor(20)) {
        Err(OpenError::Corruption(c)) => {
            assert_eq!(c.file, seg);
            assert_eq!(c.offset, offsets[19], "{c}");
        }
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(e) => panic!(
            "the committed record 20 was cut: the log ends at {}",
            e.last_index_term().0
        ),
    }
    // Without the floor nothing on disk vouches for record 20 (no later record was written
    // once it was durable): it is indistinguishable from a torn write, and is cut.
    let engine = Engine::open(dir.path(), big_raft_config()).unwrap();
    assert_eq!(engine.last_index_term().0, 19);
}

/// Bug 8: a bad record followed by records that were written after it was durable is damage
/// to synced bytes, never a torn tail: the watermark the later records carry says so.
#[test]
fn damage_below_a_later_records_watermark_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig::default().segment_bytes_max(1 << 20);
    let engine = Engine::open(dir.path(), config.clone()).unwrap();
    for i in 0..20u64 {
        let data = vec![i as u8; 300];
        engine
            .append(
                "s",
                ExpectedVersion::Any,
                vec![EventData::binary("E", data)],
            )
            .unwrap();
    }
    drop(engine);
    let seg = files_with(dir.path(), SEGMENT_EXT).pop().unwrap();
    let offsets = record_offsets(&seg);
    flip_bit(&seg, offsets[18] + 100);
    match Engine::open(dir.path(), config) {
        Err(OpenError::Corruption(c)) => {
            assert_eq!(
                (c.file.as_path(), c.offset),
                (seg.as_path(), offsets[18]),
                "{c}"
            );
        }
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(e) => panic!(
            "record 19 was cut: the log ends at {}",
            e.last_index_term().0
        ),
    }
}

/// Bug 8, second half: one unsynced batch of several records may reach the disk page by
/// page; a lost early page ("bad record, then good records") is a torn tail when the good
/// records' own watermark does not cover the bad one.
#[test]
fn torn_early_page_of_an_unsynced_batch_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), big_raft_config()).unwrap();
    for i in 1..=10 {
        engine
            .append_entries(&records_of("s", i, i, 1, 300))
            .unwrap();
    }
    // One call: one batch, written together after record 10 was durable.
    engine
        .append_entries(&records_of("s", 11, 14, 1, 300))
        .unwrap();
    drop(engine);
    let seg = files_with(dir.path(), SEGMENT_EXT).pop().unwrap();
    let offsets = record_offsets(&seg);
    assert_eq!(offsets.len(), 14);
    // The writer may still have split the call into two group commits (a busy machine): then
    // a later record vouches for record 11, and the same damage is corruption instead.
    let vouched = highest_watermark(&seg) >= 11;
    flip_bit(&seg, offsets[10] + 100);
    if vouched {
        let refused = Engine::open(dir.path(), big_raft_config());
        assert!(
            matches!(refused, Err(OpenError::Corruption(_))),
            "vouched for"
        );
        return;
    }
    let engine = Engine::open(dir.path(), big_raft_config()).expect("a torn batch opens");
    assert_eq!(engine.last_index_term().0, 10);
    assert!(engine.open_stats().torn_bytes_cut > 0);
    // The log continues where it was cut.
    engine
        .append_entries(&records_of("s", 11, 11, 2, 10))
        .unwrap();
}

/// Bug 7: `entries()` hands out record bodies as `Bytes` into the segment's memory map, and
/// `truncate_suffix` shrank the file under them: touching a body afterwards was SIGBUS (or
/// read zeros). A truncation must leave bodies already handed out intact.
#[test]
fn bodies_handed_out_survive_a_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), big_raft_config()).unwrap();
    let written = records_of("s", 1, 12, 1, 1500);
    engine.append_entries(&written).unwrap();
    let held = engine.entries(1, 1 << 20).unwrap();
    assert_eq!(held.len(), 12);
    engine.truncate_suffix(4).unwrap();
    assert_eq!(engine.last_index_term().0, 3);
    for (h, w) in held.iter().zip(&written) {
        assert!(
            h.body[..] == w.body[..],
            "record {} changed under its reader",
            h.index
        );
    }
    // The log goes on from the cut.
    engine
        .append_entries(&records_of("s", 4, 4, 2, 10))
        .unwrap();
    drop(engine);
    let engine = Engine::open(dir.path(), big_raft_config()).unwrap();
    assert_eq!(engine.last_index_term(), (4, 2));
}

/// The smaller ENOSPC item of issue 10: a full disk stopped the whole engine until reopen.
/// Now a write refused for want of space is refused with a typed error while reads go on,
/// and writes resume once space is freed; nothing refused is ever in the log.
#[test]
fn a_full_disk_refuses_writes_and_reads_go_on() {
    use quiver_engine::storage::sim::SimDisk;
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(SimDisk::new(dir.path(), 7).unwrap());
    let config = EngineConfig::default()
        .segment_bytes_max(4096)
        .storage(disk.clone());
    let engine = Engine::open(dir.path(), config.clone()).unwrap();
    let event = |v: u64| EventData::binary("E", vec![v as u8; 500]);
    let mut acked = 0u64;
    for _ in 0..3 {
        engine
            .append("s", ExpectedVersion::Any, vec![event(acked)])
            .unwrap();
        acked += 1;
    }
    // Full: the pre-zeroed spare still takes one roll's worth; the next segment must grow.
    disk.set_full(true);
    let mut refused = 0;
    for _ in 0..40 {
        match engine.append("s", ExpectedVersion::Exact(acked - 1), vec![event(acked)]) {
            Ok(_) => acked += 1,
            Err(AppendError::NoSpace) => refused += 1,
            Err(e) => panic!("a full disk must not fail the engine: {e}"),
        }
    }
    assert!(refused > 0, "the disk filled up");
    assert!(!engine.is_writable());
    let read = read_all_data(&engine);
    assert_eq!(
        read.len() as u64,
        acked,
        "reads go on, and show every acknowledged event"
    );
    // Space is freed: writes go on where the log ends.
    disk.set_full(false);
    for _ in 0..10 {
        engine
            .append("s", ExpectedVersion::Exact(acked - 1), vec![event(acked)])
            .unwrap();
        acked += 1;
    }
    assert!(engine.is_writable());
    drop(engine);
    let engine = Engine::open(dir.path(), config).unwrap();
    let read = read_all_data(&engine);
    assert_eq!(read.len() as u64, acked, "nothing refused is in the log");
    for (v, (_, version, data)) in read.iter().enumerate() {
        assert_eq!((*version, data[0]), (v as u64, v as u8));
    }
}

/// Bug 8, with a floor: a committed record that vanished without a trace (its bytes zeros,
/// as a lost write leaves them) is not a clean end of the log either: open refuses rather
/// than start below the durable floor (where Raft's `.min(last)` lowered the commit index).
#[test]
fn a_log_ending_below_the_durable_floor_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), big_raft_config()).unwrap();
    for i in 1..=20 {
        engine
            .append_entries(&records_of("s", i, i, 1, 300))
            .unwrap();
    }
    engine.set_commit_index(20);
    drop(engine);
    let seg = files_with(dir.path(), SEGMENT_EXT).pop().unwrap();
    let offsets = record_offsets(&seg);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[offsets[19] as usize..].fill(0);
    std::fs::write(&seg, bytes).unwrap();
    match Engine::open(dir.path(), big_raft_config().durable_floor(20)) {
        Err(OpenError::Corruption(c)) => {
            assert_eq!(
                (c.file.as_path(), c.offset),
                (seg.as_path(), offsets[19]),
                "{c}"
            );
        }
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(e) => panic!("opened short: the log ends at {}", e.last_index_term().0),
    }
    // With the floor where the log really ends, it opens.
    let engine = Engine::open(dir.path(), big_raft_config().durable_floor(19)).unwrap();
    assert_eq!(engine.last_index_term().0, 19);
}

/// What `durable_floor` vouches for is committed: a truncation below it is refused even
/// before Raft has moved the engine's commit point after a restart (the reload would
/// otherwise find the log ending below the floor, after the cut was made).
#[test]
fn truncation_below_the_durable_floor_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), big_raft_config()).unwrap();
    engine
        .append_entries(&records_of("s", 1, 10, 1, 100))
        .unwrap();
    drop(engine);
    let engine = Engine::open(dir.path(), big_raft_config().durable_floor(8)).unwrap();
    let refused = engine.truncate_suffix(5).unwrap_err();
    assert!(
        matches!(refused, LogError::Committed { commit: 8, .. }),
        "{refused}"
    );
    assert_eq!(engine.last_index_term().0, 10);
    engine.truncate_suffix(9).unwrap();
    assert_eq!(engine.last_index_term().0, 8);
}

/// A segment whose first index continues the log but whose first position does not (a
/// position gap) is damage: below the durable floor it is reported with its file, never
/// read as a log with a hole in `$all`.
#[test]
fn a_segment_whose_position_does_not_continue_the_log_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    crafted_segment_at(
        &dir.path().join(segment::segment_name(1)),
        (1, 0),
        (1, 0),
        0,
    );
    let second = dir.path().join(segment::segment_name(2));
    crafted_segment_at(&second, (2, 5), (2, 5), 1);
    // Record 2 is known durable (a Raft commit index), so this is no torn tail to cut.
    let config = EngineConfig::default().durable_floor(2);
    match Engine::open(dir.path(), config) {
        Err(OpenError::Corruption(c)) => assert_eq!(c.file, second, "{c}"),
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("a log with a position gap was opened"),
    }
}
