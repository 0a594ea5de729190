//! Restart work is flat: reopening a store reads only the records of its last (active)
//! segment from segment files and loads the rest from per-segment summaries, so the records
//! replayed do not grow with the size of the store while the summaries loaded do. Work is
//! asserted through `open_stats()` counters and the files on disk, never through wall time.
//! The reopened store holds every event, and retries of appends made before the restart
//! are still recognised (idempotency is durable).

use std::path::{Path, PathBuf};

use quiver_engine::format::{parse_record, RecordParse, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use quiver_engine::segment::SEGMENT_EXT;
use quiver_engine::*;

const SEGMENT_BYTES: u64 = 32 * 1024;
const EVENTS_PER_APPEND: u64 = 10;
const DATA_BYTES: usize = 150;

fn config() -> EngineConfig {
    EngineConfig::default().segment_bytes_max(SEGMENT_BYTES)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == SEGMENT_EXT))
        .collect();
    v.sort();
    v
}

/// Number of whole records in a segment file (up to the zeros of space never written).
fn record_count(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    let mut at = SEGMENT_HEADER_BYTES;
    let mut n = 0;
    while at < bytes.len() {
        match parse_record(&bytes[at..]) {
            RecordParse::Ok { body, .. } => at += RECORD_HEADER_BYTES + body.len(),
            RecordParse::Zero if bytes[at..].iter().all(|b| *b == 0) => break,
            other => panic!("{}: bad record at {at}: {other:?}", path.display()),
        }
        n += 1;
    }
    n
}

/// What one store looked like on disk and on reopen.
#[derive(Debug)]
struct Measured {
    events: u64,
    records: u64,
    segments: u64,
    last_segment_records: u64,
    max_segment_records: u64,
    stats: OpenStats,
}

/// Writes `events` events (in appends of 10 across 16 streams), closes, reopens, checks the
/// contents and returns what the reopen did.
fn measure(events: u64) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), config()).unwrap();
    let appends = events / EVENTS_PER_APPEND;
    // The first append (its ids end up in a summary) and the last (in the active segment).
    let mut kept = Vec::new();
    for i in 0..appends {
        let batch: Vec<EventData> = (0..EVENTS_PER_APPEND)
            .map(|k| EventData::binary("Filled", vec![(i + k) as u8; DATA_BYTES]))
            .collect();
        let stream = format!("r-{}", i % 16);
        let r = e
            .append(&stream, ExpectedVersion::Any, batch.clone())
            .unwrap();
        if i == 0 || i == appends - 1 {
            kept.push((stream, batch, r));
        }
    }
    drop(e);
    let segs = segments(dir.path());
    let counts: Vec<u64> = segs.iter().map(|s| record_count(s)).collect();
    assert_eq!(counts.iter().sum::<u64>(), appends, "one record per append");

    let e = Engine::open(dir.path(), config()).unwrap();
    let stats = e.open_stats();
    // The store is all there.
    assert_eq!(e.commit_position(), events);
    let stored = e
        .read_all(
            ReadFrom::Start,
            Direction::Forward,
            u64::MAX,
            AllFilter::default(),
        )
        .map(|x| x.unwrap())
        .enumerate()
        .inspect(|(i, x)| assert_eq!(x.position, *i as u64))
        .count() as u64;
    assert_eq!(stored, events);
    let versions: Vec<u64> = e
        .read_stream("r-3", ReadFrom::Start, Direction::Forward, u64::MAX)
        .unwrap()
        .map(|x| x.unwrap().version)
        .collect();
    assert_eq!(versions, (0..versions.len() as u64).collect::<Vec<_>>());
    // Retries are still recognised after the restart, whichever way the ids came back.
    for (stream, batch, original) in kept {
        let retry = e.append(&stream, ExpectedVersion::Any, batch).unwrap();
        let want = AppendResult {
            idempotent: true,
            ..original
        };
        assert_eq!(
            retry, want,
            "retry of an append to {stream} after a restart"
        );
    }
    assert_eq!(e.commit_position(), events, "retries wrote nothing");
    Measured {
        events,
        records: appends,
        segments: segs.len() as u64,
        last_segment_records: *counts.last().unwrap(),
        max_segment_records: *counts.iter().max().unwrap(),
        stats,
    }
}

#[test]
fn restart_work_does_not_grow_with_the_store() {
    let small = measure(2_000);
    let large = measure(20_000);
    eprintln!("small: {small:?}\nlarge: {large:?}");
    for m in [&small, &large] {
        // Only the active segment is read from segment files...
        assert_eq!(m.stats.records_replayed, m.last_segment_records, "{m:?}");
        // ...every sealed one comes from its summary.
        assert_eq!(m.stats.summaries_loaded, m.segments - 1, "{m:?}");
        assert_eq!(
            m.stats.records_from_summaries + m.stats.records_replayed,
            m.records,
            "{m:?}"
        );
        assert_eq!(m.stats.torn_bytes_cut, 0);
        assert_eq!(m.records * EVENTS_PER_APPEND, m.events);
    }
    // Ten times the events: about ten times the summaries, yet the records replayed stay
    // within one segment's worth, which depends on the segment size and not on the store.
    assert!(
        large.segments >= 10 * small.segments - 10,
        "{large:?} {small:?}"
    );
    assert!(
        large.stats.summaries_loaded >= 5 * small.stats.summaries_loaded,
        "summaries loaded grow with the store"
    );
    let one_segment = small.max_segment_records.max(large.max_segment_records);
    assert!(large.stats.records_replayed <= one_segment);
    assert!(small.stats.records_replayed <= one_segment);
    assert!(
        large.stats.records_replayed * 50 < large.records,
        "replay is a small fraction of a large store: {large:?}"
    );
}
