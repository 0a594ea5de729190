//! Damaged segment files, edited at the byte level: corruption is always a loud, precise
//! error naming the file and the record's offset, never wrong data or silent loss; only a torn
//! tail of the last segment (a cut record, or zeros where nothing was written) is cut, after
//! which every earlier event is intact and appends continue with dense positions.
//!
//! - a bit flipped in a sealed segment that a summary covers: open succeeds, reading the
//!   record fails with `ReadError::Corruption`; without the summaries open itself fails;
//! - a bit flipped in a middle record of the last segment: `OpenError::Corruption`;
//! - a tail cut in the middle of the last record: cut, earlier events intact;
//! - zeros after the last record, or over the end of it: cut, earlier events intact.

use std::path::{Path, PathBuf};

use quiver_engine::format::{parse_record, RecordParse, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use quiver_engine::segment::{SEGMENT_EXT, SUMMARY_EXT};
use quiver_engine::*;

const SEGMENT_BYTES: u64 = 8 * 1024;

fn config() -> EngineConfig {
    EngineConfig::default().segment_bytes_max(SEGMENT_BYTES)
}

/// One record of a segment file, found by walking its frames.
#[derive(Debug, Clone, Copy)]
struct Rec {
    offset: u64,
    len: u64,
    position: u64,
    count: u64,
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

fn segments(dir: &Path) -> Vec<PathBuf> {
    files_with(dir, SEGMENT_EXT)
}

/// Every record of a segment file, up to the zeros of space never written (if the file is
/// pre-zeroed) or its end; anything else is unexpected in a cleanly closed store.
fn records(path: &Path) -> Vec<Rec> {
    let bytes = std::fs::read(path).unwrap();
    let mut at = SEGMENT_HEADER_BYTES;
    let mut out = Vec::new();
    while at < bytes.len() {
        match parse_record(&bytes[at..]) {
            RecordParse::Ok { header, body } => {
                let len = (RECORD_HEADER_BYTES + body.len()) as u64;
                out.push(Rec {
                    offset: at as u64,
                    len,
                    position: header.position.get(),
                    count: header.count.get() as u64,
                });
                at += len as usize;
            }
            RecordParse::Zero if bytes[at..].iter().all(|b| *b == 0) => break,
            other => panic!("{}: bad record at {at}: {other:?}", path.display()),
        }
    }
    out
}

fn flip_bit(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

/// What an event looked like before the damage.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    stream: String,
    version: u64,
    position: u64,
    data: Vec<u8>,
}

fn seen(e: &RecordedEvent) -> Seen {
    Seen {
        stream: e.stream.to_string(),
        version: e.version,
        position: e.position,
        data: e.data.to_vec(),
    }
}

/// A store of several segments: 40 appends of 4 events of 150–250 bytes to 4 streams, then
/// 6 small single-event appends so the last segment holds several records. Returns every
/// event as read back.
fn build_store(dir: &Path) -> Vec<Seen> {
    let e = Engine::open(dir, config()).unwrap();
    for i in 0..40u64 {
        let events = (0..4)
            .map(|k| {
                let data = vec![(i * 4 + k) as u8; 150 + ((i * 37 + k * 11) % 100) as usize];
                EventData::binary("Filled", data)
            })
            .collect();
        e.append(&format!("c-{}", i % 4), ExpectedVersion::Any, events)
            .unwrap();
    }
    for i in 0..6u8 {
        e.append(
            "tail",
            ExpectedVersion::Any,
            vec![EventData::json("Small", vec![i; 20])],
        )
        .unwrap();
    }
    let all = read_all_ok(&e);
    assert_eq!(all.len(), 166);
    drop(e);
    let segs = segments(dir);
    assert!(segs.len() >= 4, "want several segments, got {}", segs.len());
    assert!(
        records(segs.last().unwrap()).len() >= 3,
        "last segment holds several records"
    );
    assert_eq!(
        files_with(dir, SUMMARY_EXT).len(),
        segs.len() - 1,
        "every sealed segment is summarized after a clean close"
    );
    all
}

fn read_all_ok(e: &Engine) -> Vec<Seen> {
    e.read_all(
        ReadFrom::Start,
        Direction::Forward,
        u64::MAX,
        AllFilter::default(),
    )
    .map(|x| seen(&x.expect("read $all")))
    .collect()
}

fn assert_corruption_at(c: &Corruption, file: &Path, offset: u64) {
    assert_eq!(c.file, file, "corruption names the file: {c}");
    assert_eq!(
        c.offset, offset,
        "corruption names the record's offset: {c}"
    );
}

#[test]
fn flipped_bit_in_a_sealed_segment() {
    let dir = tempfile::tempdir().unwrap();
    let before = build_store(dir.path());
    let segs = segments(dir.path());
    // A sealed segment in the middle of the log, and a record in its middle.
    let victim = segs[segs.len() / 2].clone();
    let recs = records(&victim);
    assert!(recs.len() >= 3, "{recs:?}");
    let bad = recs[recs.len() / 2];
    assert!(bad.count > 0);
    flip_bit(
        &victim,
        bad.offset + RECORD_HEADER_BYTES as u64 + (bad.len - 40) / 2,
    );
    let bad_positions = bad.position..bad.position + bad.count;

    // The summary covers the record, so open trusts it and succeeds...
    let e = Engine::open(dir.path(), config()).expect("summaries are trusted on open");
    // ...and reading the damaged record is a precise error, never its bytes.
    let first = e
        .read_all(
            ReadFrom::At(bad.position),
            Direction::Forward,
            1,
            AllFilter::default(),
        )
        .next()
        .expect("an item");
    match first {
        Err(ReadError::Corruption(c)) => assert_corruption_at(&c, &victim, bad.offset),
        other => panic!("expected corruption, got {other:?}"),
    }
    let last_bad = bad.position + bad.count - 1;
    let backward = e
        .read_all(
            ReadFrom::At(last_bad),
            Direction::Backward,
            1,
            AllFilter::default(),
        )
        .next()
        .expect("an item");
    assert!(
        matches!(backward, Err(ReadError::Corruption(_))),
        "{backward:?}"
    );
    for p in bad_positions.clone() {
        let ev = &before[p as usize];
        let r = e
            .read_stream(&ev.stream, ReadFrom::At(ev.version), Direction::Forward, 1)
            .expect("the stream exists")
            .next()
            .expect("an item");
        match r {
            Err(ReadError::Corruption(c)) => assert_corruption_at(&c, &victim, bad.offset),
            other => panic!(
                "{} v{}: expected corruption, got {other:?}",
                ev.stream, ev.version
            ),
        }
    }
    // Everything else reads back unchanged; whatever a whole-log read returns is right.
    let after_bad: Vec<Seen> = e
        .read_all(
            ReadFrom::At(bad.position + bad.count),
            Direction::Forward,
            u64::MAX,
            AllFilter::default(),
        )
        .map(|x| seen(&x.expect("records after the damage read fine")))
        .collect();
    assert_eq!(after_bad, before[(bad.position + bad.count) as usize..]);
    let mut errors = 0;
    for item in e.read_all(
        ReadFrom::Start,
        Direction::Forward,
        u64::MAX,
        AllFilter::default(),
    ) {
        match item {
            Ok(x) => {
                assert!(!bad_positions.contains(&x.position), "served damaged bytes");
                assert_eq!(seen(&x), before[x.position as usize]);
            }
            Err(ReadError::Corruption(c)) => {
                assert_corruption_at(&c, &victim, bad.offset);
                errors += 1;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(errors, 1, "a whole-log read reports the damage");
    match e.verify() {
        Err(c) => assert_corruption_at(&c, &victim, bad.offset),
        Ok(stats) => panic!("verify missed the damage: {stats:?}"),
    }
    drop(e);

    // Without summaries the sealed segment is scanned, and open refuses the damage.
    for s in files_with(dir.path(), SUMMARY_EXT) {
        std::fs::remove_file(s).unwrap();
    }
    match Engine::open(dir.path(), config()) {
        Err(OpenError::Corruption(c)) => assert_corruption_at(&c, &victim, bad.offset),
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("open accepted a damaged sealed segment"),
    }
}

#[test]
fn flipped_bit_in_the_middle_of_the_last_segment() {
    // In a record's body, and in a record's header (its position field).
    for in_header in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        build_store(dir.path());
        let last = segments(dir.path()).pop().unwrap();
        let recs = records(&last);
        let bad = recs[recs.len() / 2];
        assert!(
            recs.len() > recs.len() / 2 + 1,
            "valid records follow the damage"
        );
        let at = if in_header {
            bad.offset + 24
        } else {
            bad.offset + RECORD_HEADER_BYTES as u64 + (bad.len - 40) / 2
        };
        flip_bit(&last, at);
        let len_before = std::fs::metadata(&last).unwrap().len();
        match Engine::open(dir.path(), config()) {
            Err(OpenError::Corruption(c)) => assert_corruption_at(&c, &last, bad.offset),
            Err(other) => panic!("expected corruption, got {other}"),
            Ok(e) => panic!(
                "open treated damage followed by valid records as a torn tail: {:?}",
                e.open_stats()
            ),
        }
        assert_eq!(
            std::fs::metadata(&last).unwrap().len(),
            len_before,
            "a refused open cuts nothing"
        );
    }
}

/// How many bytes an open must cut.
#[derive(Debug, Clone, Copy)]
enum Cut {
    Exactly(u64),
    /// Zeros after the log are space never written: leaving them or cutting them (all of
    /// them, nothing before) are both right.
    NothingOr(u64),
}

/// Opens a store whose last record was torn, checks what survived and that appends go on.
fn check_torn_open(dir: &Path, before: &[Seen], kept: usize, cut: Cut) {
    let e = Engine::open(dir, config()).expect("a torn tail is not corruption");
    let got = e.open_stats().torn_bytes_cut;
    match cut {
        Cut::Exactly(n) => assert_eq!(got, n, "{:?}", e.open_stats()),
        Cut::NothingOr(n) => assert!(got == 0 || got == n, "{:?}", e.open_stats()),
    }
    assert_eq!(
        read_all_ok(&e),
        before[..kept],
        "every earlier event is intact"
    );
    assert_eq!(e.commit_position(), kept as u64);
    let r = e
        .append(
            "after",
            ExpectedVersion::NoStream,
            vec![EventData::json("Next", &b"{}"[..])],
        )
        .unwrap();
    assert_eq!(
        r.position_first, kept as u64,
        "positions stay dense after the cut"
    );
    drop(e);
    let e = Engine::open(dir, config()).unwrap();
    assert_eq!(e.open_stats().torn_bytes_cut, 0);
    let positions: Vec<u64> = read_all_ok(&e).iter().map(|s| s.position).collect();
    assert_eq!(positions, (0..=kept as u64).collect::<Vec<_>>());
    assert!(e.verify().is_ok());
}

#[test]
fn truncated_tail_is_cut() {
    // Cut inside the header, at its end, and inside the body of the last record.
    for keep in [1u64, 20, 39, 40, 41, 60] {
        let dir = tempfile::tempdir().unwrap();
        let before = build_store(dir.path());
        let last = segments(dir.path()).pop().unwrap();
        let rec = *records(&last).last().unwrap();
        assert!(keep < rec.len);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&last)
            .unwrap()
            .set_len(rec.offset + keep)
            .unwrap();
        check_torn_open(
            dir.path(),
            &before,
            rec.position as usize,
            Cut::Exactly(keep),
        );
    }
}

#[test]
fn zero_filled_tail_is_cut() {
    use std::io::Write;
    // 4 KiB of zeros at the end of the last segment: every acknowledged event survives.
    let dir = tempfile::tempdir().unwrap();
    let before = build_store(dir.path());
    let last = segments(dir.path()).pop().unwrap();
    let rec = *records(&last).last().unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap();
    f.write_all(&[0u8; 4096]).unwrap();
    drop(f);
    let zeros = std::fs::metadata(&last).unwrap().len() - (rec.offset + rec.len);
    assert!(zeros >= 4096);
    check_torn_open(dir.path(), &before, before.len(), Cut::NothingOr(zeros));

    // Zeros over the end of the last record and past it (the file grew before its data
    // landed): that record is torn and cut, the ones before it survive.
    let dir = tempfile::tempdir().unwrap();
    let before = build_store(dir.path());
    let last = segments(dir.path()).pop().unwrap();
    let rec = *records(&last).last().unwrap();
    let mut bytes = std::fs::read(&last).unwrap();
    let from = (rec.offset + rec.len / 2) as usize;
    bytes[from..].fill(0);
    bytes.extend_from_slice(&[0u8; 4096]);
    let cut = bytes.len() as u64 - rec.offset;
    std::fs::write(&last, bytes).unwrap();
    check_torn_open(
        dir.path(),
        &before,
        rec.position as usize,
        Cut::Exactly(cut),
    );
}

#[test]
fn flipped_bit_in_a_sealed_segment_header() {
    let dir = tempfile::tempdir().unwrap();
    build_store(dir.path());
    let victim = segments(dir.path())[1].clone();
    flip_bit(&victim, 20);
    match Engine::open(dir.path(), config()) {
        Err(OpenError::Corruption(c)) => assert_corruption_at(&c, &victim, 0),
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("open accepted a damaged segment header"),
    }
}

/// Where a summary's second record's location lies: after the 56-byte summary header and
/// the first record's 24-byte location (docs/STORAGE.md, "Summary"). It is in the spine,
/// which an open checks.
const SUMMARY_SECOND_LOCATION: u64 = 56 + 24;

/// Opens a store one of whose summaries is damaged: the open ignores that summary and scans
/// its segment instead, and loads every other one.
fn open_without_one_summary(dir: &Path, clean: OpenStats) -> Engine {
    let e = Engine::open(dir, config()).expect("a summary is derived data");
    let stats = e.open_stats();
    assert_eq!(
        stats.summaries_loaded,
        clean.summaries_loaded - 1,
        "{stats:?}"
    );
    e
}

#[test]
fn damaged_summary_is_ignored_and_the_segment_scanned() {
    let dir = tempfile::tempdir().unwrap();
    let before = build_store(dir.path());
    let clean = Engine::open(dir.path(), config()).unwrap().open_stats();
    let summary = files_with(dir.path(), SUMMARY_EXT)[1].clone();
    // In the record's term (the location's first 8 bytes): nothing but the spine's checksum
    // would notice.
    flip_bit(&summary, SUMMARY_SECOND_LOCATION + 2);
    let e = open_without_one_summary(dir.path(), clean);
    let stats = e.open_stats();
    assert!(stats.records_replayed > clean.records_replayed, "{stats:?}");
    assert_eq!(
        stats.records_replayed + stats.records_from_summaries,
        clean.records_replayed + clean.records_from_summaries
    );
    assert_eq!(read_all_ok(&e), before);
}

/// An open that has the stream tables reads a summary's spine only, not the events an
/// append's entry keeps: damage there is found by the id loader, which then takes the
/// segment's own records. The open is as fast as with a clean summary, and a retry of an
/// append in that segment is still recognised once the index is built from the segment.
#[test]
fn damaged_events_in_a_summary_are_read_from_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    let before = build_store(dir.path());
    let clean = Engine::open(dir.path(), config()).unwrap().open_stats();
    assert_eq!(clean.stream_tables, clean.summaries_loaded, "{clean:?}");
    let summary = files_with(dir.path(), SUMMARY_EXT)[1].clone();
    let segment = summary.with_extension(SEGMENT_EXT);
    // The last entry's last stripped event header: an append's, outside the spine.
    let len = std::fs::metadata(&summary).unwrap().len();
    flip_bit(&summary, len - 3);
    let first = records(&segment)[0];
    let e = Engine::open(dir.path(), config()).expect("the spine checks");
    assert_eq!(
        e.open_stats(),
        clean,
        "the summary was used, not the segment scanned"
    );
    assert_eq!(read_all_ok(&e), before);
    let stored: Vec<RecordedEvent> = e
        .read_all(
            ReadFrom::At(first.position),
            Direction::Forward,
            first.count,
            AllFilter::default(),
        )
        .map(|x| x.expect("read"))
        .collect();
    let start = std::time::Instant::now();
    while !e.id_index_loaded() {
        assert!(
            e.is_writable(),
            "the id index could not be built: the store failed"
        );
        assert!(start.elapsed().as_secs() < 30, "the id index never loaded");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let retry = stored
        .iter()
        .map(|x| EventData {
            id: x.id,
            event_type: x.event_type().to_string(),
            content_type: x.content_type,
            data: x.data.clone(),
            metadata: x.metadata.clone(),
        })
        .collect();
    let r = e
        .append(&stored[0].stream, ExpectedVersion::Any, retry)
        .expect("the store did not fail");
    assert!(r.idempotent, "{r:?}");
    assert_eq!(r.position_first, first.position);
}

/// The body of a record that is not an append (here a delete) is in the spine: damage there
/// makes the open ignore the summary and scan the segment, never apply a delete of the
/// wrong stream.
#[test]
fn damaged_delete_in_a_summary_is_ignored_and_the_segment_scanned() {
    let dir = tempfile::tempdir().unwrap();
    let doomed = "doomed-stream-with-a-long-name";
    let e = Engine::open(dir.path(), config()).unwrap();
    let one = vec![EventData::json("T", &b"1"[..])];
    e.append(doomed, ExpectedVersion::NoStream, one).unwrap();
    e.delete_stream(doomed, ExpectedVersion::Any, DeleteKind::Soft)
        .unwrap();
    for i in 0..30u8 {
        let events = (0..4)
            .map(|_| EventData::binary("F", vec![i; 200]))
            .collect();
        e.append("filler", ExpectedVersion::Any, events).unwrap();
    }
    drop(e);
    let e = Engine::open(dir.path(), config()).unwrap();
    let (clean, before) = (e.open_stats(), read_all_ok(&e));
    drop(e);
    // The delete's entry is the last place its stream's name is written in a summary.
    let (summary, at) = files_with(dir.path(), SUMMARY_EXT)
        .into_iter()
        .rev()
        .find_map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            let at = bytes
                .windows(doomed.len())
                .rposition(|w| w == doomed.as_bytes())?;
            Some((p, at))
        })
        .expect("a summary names the stream");
    flip_bit(&summary, (at + 3) as u64);
    let e = open_without_one_summary(dir.path(), clean);
    assert_eq!(read_all_ok(&e), before);
    let read = e.read_stream(doomed, ReadFrom::Start, Direction::Forward, 10);
    assert!(
        matches!(
            read,
            Err(ReadError::StreamDeleted(_)) | Err(ReadError::StreamNotFound(_))
        ),
        "the delete still holds: {:?}",
        read.map(|r| r.count())
    );
}

#[test]
fn half_created_segment_is_removed() {
    // A crash while creating the next segment: its header never became durable.
    // Empty, a partial header, garbage, or a pre-zeroed file renamed into place.
    for content in [Vec::new(), vec![0u8; 30], vec![0xA5u8; 64], vec![0u8; 8192]] {
        let dir = tempfile::tempdir().unwrap();
        let before = build_store(dir.path());
        let last = segments(dir.path()).pop().unwrap();
        let first_index: u64 = last.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        let next_index = first_index + records(&last).len() as u64;
        let half = dir.path().join(segment::segment_name(next_index));
        std::fs::write(&half, &content).unwrap();
        let e = Engine::open(dir.path(), config()).expect("a half-created segment is not damage");
        assert_eq!(read_all_ok(&e), before);
        let r = e
            .append(
                "x",
                ExpectedVersion::NoStream,
                vec![EventData::json("T", &b"1"[..])],
            )
            .unwrap();
        assert_eq!(r.position_first, before.len() as u64);
        drop(e);
        let e = Engine::open(dir.path(), config()).unwrap();
        let after = read_all_ok(&e);
        assert_eq!(after[..before.len()], before[..]);
        assert_eq!(after.len(), before.len() + 1);
    }
}

/// A damaged bit anywhere in a summary (header, locations, control offsets, entries) is
/// survived: the open neither panics nor fails, every event reads back as before, the
/// delete and the metadata that summaries carry still hold, and the event-id index is
/// still built (from the segment when the summary's events do not check). Every byte of
/// the first summary (which holds the delete and the metadata) is tried, every 13th of the
/// others.
#[test]
fn damage_anywhere_in_a_summary_is_survived() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), config()).unwrap();
    e.append(
        "gone",
        ExpectedVersion::NoStream,
        vec![EventData::json("T", &b"1"[..])],
    )
    .unwrap();
    e.delete_stream("gone", ExpectedVersion::Any, DeleteKind::Soft)
        .unwrap();
    let capped = StreamMetadata {
        max_count: Some(2),
        ..StreamMetadata::default()
    };
    e.set_metadata("capped", capped).unwrap();
    for i in 0..60u8 {
        let events = (0..3)
            .map(|k| EventData::binary("F", vec![i ^ k; 120]))
            .collect();
        let stream = if i % 3 == 0 { "capped" } else { "filler" };
        e.append(stream, ExpectedVersion::Any, events).unwrap();
    }
    drop(e);
    let e = Engine::open(dir.path(), config()).unwrap();
    let (clean, before) = (e.open_stats(), read_all_ok(&e));
    drop(e);
    let summaries = files_with(dir.path(), SUMMARY_EXT);
    assert!(summaries.len() >= 3, "{} summaries", summaries.len());
    for (k, summary) in summaries.iter().enumerate() {
        let original = std::fs::read(summary).unwrap();
        let stride = if k == 0 { 1 } else { 13 };
        for at in (0..original.len()).step_by(stride) {
            let mut bytes = original.clone();
            bytes[at] ^= 1 << (at % 8);
            std::fs::write(summary, &bytes).unwrap();
            let e = Engine::open(dir.path(), config())
                .unwrap_or_else(|err| panic!("{} byte {at}: {err}", summary.display()));
            let stats = e.open_stats();
            assert!(
                stats.summaries_loaded + 1 >= clean.summaries_loaded,
                "{stats:?}"
            );
            assert_eq!(read_all_ok(&e), before, "{} byte {at}", summary.display());
            assert!(
                matches!(
                    e.read_stream("gone", ReadFrom::Start, Direction::Forward, 10),
                    Err(ReadError::StreamNotFound(_))
                ),
                "{} byte {at}: the delete no longer holds",
                summary.display()
            );
            let capped: Vec<u64> = e
                .read_stream("capped", ReadFrom::Start, Direction::Forward, 10)
                .unwrap()
                .map(|x| x.unwrap().version)
                .collect();
            assert_eq!(capped.len(), 2, "{} byte {at}", summary.display());
            let start = std::time::Instant::now();
            while !e.id_index_loaded() {
                assert!(e.is_writable(), "{} byte {at}: failed", summary.display());
                assert!(start.elapsed().as_secs() < 30, "the id index never loaded");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        std::fs::write(summary, &original).unwrap();
    }
}
