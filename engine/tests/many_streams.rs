//! Many streams of few events each (one per aggregate): streams whose events all lie in
//! summarized segments are not kept in memory but read back from the segments' stream
//! tables, on reopen and while running. Everything a reader or writer sees must be as if
//! they were: versions, positions, data, expected-version checks, listing, counts, deletes
//! and metadata; and a damaged table must be read around (from its segment), never trusted.

use std::path::Path;

use quiver_engine::*;

mod common;
use common::{config, wait_until};

fn name(i: usize) -> String {
    format!("order-{i:05}")
}

/// Events of stream `i`: 1 to 3.
fn events_of(i: usize) -> usize {
    1 + i % 3
}

fn event(i: usize, k: usize) -> EventData {
    EventData::binary("E", format!("{i}:{k}").into_bytes())
}

/// Writes `n` streams, 50 per multi-stream append, their events spread over several
/// appends; returns every event's (stream, version, position).
fn fill(e: &Engine, n: usize) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    for round in 0..3 {
        for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
            let writes: Vec<StreamWrite> = chunk
                .iter()
                .filter(|i| events_of(**i) > round)
                .map(|i| StreamWrite {
                    stream: name(*i),
                    expected: if round == 0 {
                        ExpectedVersion::NoStream
                    } else {
                        ExpectedVersion::Exact(round as u64 - 1)
                    },
                    events: vec![event(*i, round)],
                })
                .collect();
            if writes.is_empty() {
                continue;
            }
            let names: Vec<String> = writes.iter().map(|w| w.stream.clone()).collect();
            let r = e.append_multi(writes).unwrap();
            for (k, s) in names.into_iter().enumerate() {
                out.push((s, round as u64, r.position_first + k as u64));
            }
        }
    }
    out
}

/// Every stream reads back whole, in order, with its data; infos and counts agree.
fn check_all(e: &Engine, n: usize, written: &[(String, u64, u64)]) {
    for i in 0..n {
        let s = name(i);
        let got: Vec<(u64, u64, Vec<u8>)> = e
            .read_stream(&s, ReadFrom::Start, Direction::Forward, u64::MAX)
            .unwrap_or_else(|err| panic!("{s}: {err}"))
            .map(|ev| {
                let ev = ev.unwrap();
                (ev.version, ev.position, ev.data.to_vec())
            })
            .collect();
        let want: Vec<(u64, u64, Vec<u8>)> = written
            .iter()
            .filter(|(w, ..)| *w == s)
            .map(|(_, v, p)| (*v, *p, format!("{i}:{v}").into_bytes()))
            .collect();
        assert_eq!(got, want, "{s}");
        let info = e.stream_info(&s).unwrap();
        assert_eq!(info.current_version, Some(events_of(i) as u64 - 1), "{s}");
        let back: Vec<u64> = e
            .read_stream(&s, ReadFrom::End, Direction::Backward, 2)
            .unwrap()
            .map(|ev| ev.unwrap().version)
            .collect();
        let last = events_of(i) as u64 - 1;
        assert_eq!(
            back,
            (last.saturating_sub(1)..=last).rev().collect::<Vec<_>>()
        );
    }
    let listed: Vec<String> = e
        .list_streams("order-", None, usize::MAX)
        .into_iter()
        .map(|i| i.name.to_string())
        .collect();
    assert_eq!(listed, (0..n).map(name).collect::<Vec<_>>());
    // Pages, from a name that is not a stream, and a prefix.
    let page: Vec<String> = e
        .list_streams("order-", Some("order-00099x"), 3)
        .into_iter()
        .map(|i| i.name.to_string())
        .collect();
    assert_eq!(page, [name(100), name(101), name(102)]);
    let hundred = e.list_streams("order-001", None, usize::MAX);
    assert_eq!(hundred.len(), 100);
    assert_eq!(*hundred[0].name, *name(100));
    assert_eq!(e.stream_count(), n as u64);
}

/// Writers see the true versions of streams read back from tables.
fn check_writes(e: &Engine, n: usize) {
    for i in (0..n).step_by(97) {
        let s = name(i);
        let last = events_of(i) as u64 - 1;
        let wrong = e.append(&s, ExpectedVersion::Exact(last + 1), vec![event(i, 9)]);
        assert!(
            matches!(wrong, Err(AppendError::WrongExpectedVersion { actual: Some(a), .. }) if a == last),
            "{s}: {wrong:?}"
        );
        let none = e.append(&s, ExpectedVersion::NoStream, vec![event(i, 9)]);
        assert!(none.is_err(), "{s}: NoStream accepted");
    }
}

fn reopen(e: Engine, dir: &Path) -> Engine {
    drop(e);
    Engine::open(dir, config()).unwrap()
}

#[test]
fn streams_in_summarized_segments_leave_memory_and_read_back_whole() {
    const N: usize = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), config()).unwrap();
    let written = fill(&e, N);
    // While running: once summaries are written, the streams they hold leave memory.
    wait_until("streams leave memory", || {
        let (resident, tables) = e.streams_in_memory();
        tables > 5 && resident < N / 2
    });
    check_all(&e, N, &written);
    check_writes(&e, N);
    // On reopen, only the active segment's streams are loaded.
    let e = reopen(e, dir.path());
    let (resident, tables) = e.streams_in_memory();
    assert!(tables > 5, "{tables} stream tables");
    assert!(
        resident < N / 10,
        "{resident} of {N} streams in memory after reopen"
    );
    assert_eq!(e.open_stats().stream_tables, tables as u64);
    // Replaying the active segment looks nothing up in the tables: its records' versions
    // tell which streams are new and which continue events in the tables.
    assert_eq!(e.open_stats().stream_entries_read, 0);
    check_all(&e, N, &written);
    check_writes(&e, N);
    // Writing to a stream read back from a table continues it.
    let r = e
        .append(&name(7), ExpectedVersion::Exact(1), vec![event(7, 2)])
        .unwrap();
    assert_eq!(r.next_expected_version, 2);
    let versions: Vec<u64> = e
        .read_stream(&name(7), ReadFrom::Start, Direction::Forward, u64::MAX)
        .unwrap()
        .map(|ev| ev.unwrap().version)
        .collect();
    assert_eq!(versions, [0, 1, 2]);
}

#[test]
fn deletes_and_metadata_of_streams_in_tables_hold_across_reopens() {
    const N: usize = 1_500;
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), config()).unwrap();
    let written = fill(&e, N);
    wait_until("streams leave memory", || e.streams_in_memory().0 < N / 2);
    // Streams 1, 4, 5 have 2 or 3 events, all in summarized segments by now; the last
    // streams' last events are still in the active segment, whose summary comes later (and
    // must not let their deletes and metadata go with their events).
    let (soft, meta_too) = (N - 1, N - 4);
    for s in [1, soft] {
        e.delete_stream(&name(s), ExpectedVersion::Any, DeleteKind::Soft)
            .unwrap();
    }
    e.delete_stream(&name(4), ExpectedVersion::Exact(1), DeleteKind::Hard)
        .unwrap();
    let meta = StreamMetadata {
        max_count: Some(1),
        ..StreamMetadata::default()
    };
    for s in [5, meta_too] {
        e.set_metadata(&name(s), meta.clone()).unwrap();
    }
    let check = |e: &Engine| {
        for s in [1, soft] {
            assert!(matches!(
                e.read_stream(&name(s), ReadFrom::Start, Direction::Forward, 10),
                Err(ReadError::StreamNotFound(_))
            ));
        }
        let last: Vec<u64> = e
            .read_stream(&name(meta_too), ReadFrom::Start, Direction::Forward, 10)
            .unwrap()
            .map(|ev| ev.unwrap().version)
            .collect();
        assert_eq!(last, [2]);
        assert!(matches!(
            e.read_stream(&name(4), ReadFrom::Start, Direction::Forward, 10),
            Err(ReadError::StreamDeleted(_))
        ));
        let five: Vec<u64> = e
            .read_stream(&name(5), ReadFrom::Start, Direction::Forward, 10)
            .unwrap()
            .map(|ev| ev.unwrap().version)
            .collect();
        assert_eq!(five, [2]);
        assert_eq!(e.stream_info(&name(5)).unwrap().metadata, meta);
        assert_eq!(
            e.stream_info(&name(4)).unwrap().deleted,
            Some(DeleteKind::Hard)
        );
        // `$all` hides what the stream's state hides.
        let all: Vec<(String, u64)> = e
            .read_all(
                ReadFrom::Start,
                Direction::Forward,
                u64::MAX,
                AllFilter::default(),
            )
            .map(|ev| {
                let ev = ev.unwrap();
                (ev.stream.to_string(), ev.version)
            })
            .filter(|(s, _)| s.starts_with("order-"))
            .collect();
        let visible = |s: &str, v: u64| match s {
            s if s == name(1) || s == name(4) || s == name(soft) => false,
            s if s == name(5) || s == name(meta_too) => v == 2,
            _ => true,
        };
        let want: Vec<(String, u64)> = {
            let mut w: Vec<(String, u64, u64)> = written.to_vec();
            w.sort_by_key(|(_, _, p)| *p);
            w.into_iter()
                .filter(|(s, v, _)| visible(s, *v))
                .map(|(s, v, _)| (s, v))
                .collect()
        };
        assert!(
            all == want,
            "$all: {} events, {} expected",
            all.len(),
            want.len()
        );
        // Writers: the soft-deleted stream continues its versions, the hard-deleted refuses.
        assert!(matches!(
            e.append(&name(4), ExpectedVersion::Any, vec![event(4, 9)]),
            Err(AppendError::StreamDeleted(_))
        ));
    };
    check(&e);
    // Push the deletes and metadata into summarized segments too, then reopen twice.
    let tables = e.streams_in_memory().1;
    fill_more(&e);
    wait_until("the deletes are summarized", || {
        e.streams_in_memory().1 > tables + 3
    });
    check(&e);
    let e = reopen(e, dir.path());
    check(&e);
    let r = e
        .append(&name(1), ExpectedVersion::Any, vec![event(1, 2)])
        .unwrap();
    assert_eq!(
        r.next_expected_version, 2,
        "versions continue after a soft delete"
    );
    let e = reopen(e, dir.path());
    let one: Vec<u64> = e
        .read_stream(&name(1), ReadFrom::Start, Direction::Forward, 10)
        .unwrap()
        .map(|ev| ev.unwrap().version)
        .collect();
    assert_eq!(one, [2]);
}

/// Other streams' events, enough to seal a few more segments.
fn fill_more(e: &Engine) {
    for k in 0..300 {
        let writes = (0..10)
            .map(|j| StreamWrite {
                stream: format!("other-{k}-{j}"),
                expected: ExpectedVersion::Any,
                events: vec![EventData::binary("E", vec![0u8; 64])],
            })
            .collect();
        e.append_multi(writes).unwrap();
    }
}

#[test]
fn a_damaged_stream_table_is_read_around_never_trusted() {
    const N: usize = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), config()).unwrap();
    let written = fill(&e, N);
    drop(e);
    // Flip a byte in the last kilobyte of every table: its blocks, past header, filter and
    // index, so the table is still opened and each lookup meets the damage.
    let mut damaged = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "qstm") {
            let mut bytes = std::fs::read(&path).unwrap();
            let len = bytes.len();
            for at in (len.saturating_sub(1024)..len).step_by(64) {
                bytes[at] ^= 0x20;
            }
            std::fs::write(&path, &bytes).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 3, "{damaged} tables");
    let e = Engine::open(dir.path(), config()).unwrap();
    assert!(e.streams_in_memory().1 > 3, "the tables are still used");
    check_all(&e, N, &written);
    check_writes(&e, N);
}

/// A stream's events as a reader sees them: (version, position, data).
fn read_whole(e: &Engine, s: &str, direction: Direction) -> Vec<(u64, u64, Vec<u8>)> {
    let from = match direction {
        Direction::Forward => ReadFrom::Start,
        Direction::Backward => ReadFrom::End,
    };
    e.read_stream(s, from, direction, u64::MAX)
        .unwrap_or_else(|err| panic!("{s}: {err}"))
        .map(|ev| {
            let ev = ev.unwrap();
            (ev.version, ev.position, ev.data.to_vec())
        })
        .collect()
}

/// What a reader of `long` (every event) and of `capped` (max count 7) must see.
fn check_long(e: &Engine, long: &[(u64, u64, Vec<u8>)], capped: &[(u64, u64, Vec<u8>)]) {
    assert_eq!(read_whole(e, "long", Direction::Forward), long);
    let mut backward = read_whole(e, "long", Direction::Backward);
    backward.reverse();
    assert_eq!(backward, long);
    // From the middle, across the end of any tail held in memory.
    let mid = long.len() as u64 / 2;
    let some: Vec<u64> = e
        .read_stream("long", ReadFrom::At(mid), Direction::Forward, 600)
        .unwrap()
        .map(|ev| ev.unwrap().version)
        .collect();
    assert_eq!(
        some,
        (mid..(mid + 600).min(long.len() as u64)).collect::<Vec<_>>()
    );
    let info = e.stream_info("long").unwrap();
    assert_eq!(info.current_version, Some(long.len() as u64 - 1));
    assert_eq!(
        read_whole(e, "capped", Direction::Forward),
        capped[capped.len() - 7..]
    );
}

/// A stream with events in every segment (one that lives as long as the store) is reopened
/// and written from the newest table that holds it, not read back from all of them; readers
/// still get it whole, retries of its oldest events are still recognised, and a scavenge
/// still trims it by its metadata.
#[test]
fn a_long_stream_is_written_from_its_newest_table_and_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), config()).unwrap();
    let mut long = Vec::new();
    let mut capped = Vec::new();
    let mut first_batch = Vec::new();
    for round in 0..300usize {
        let batch: Vec<EventData> = (0..5)
            .map(|k| EventData::binary("L", format!("long {round}:{k}").into_bytes()))
            .collect();
        if round == 0 {
            first_batch = batch.clone();
        }
        let r = e
            .append("long", ExpectedVersion::Any, batch.clone())
            .unwrap();
        for (k, ev) in batch.iter().enumerate() {
            long.push((
                r.next_expected_version + 1 - 5 + k as u64,
                r.position_first + k as u64,
                ev.data.to_vec(),
            ));
        }
        let data = format!("capped {round}").into_bytes();
        let r = e
            .append(
                "capped",
                ExpectedVersion::Any,
                vec![EventData::binary("C", data.clone())],
            )
            .unwrap();
        capped.push((r.next_expected_version, r.position_first, data));
        if round == 150 {
            let meta = StreamMetadata {
                max_count: Some(7),
                ..StreamMetadata::default()
            };
            e.set_metadata("capped", meta).unwrap();
        }
    }
    wait_until("tables for most segments", || e.streams_in_memory().1 >= 8);
    check_long(&e, &long, &capped);

    let e = reopen(e, dir.path());
    let tables = e.streams_in_memory().1 as u64;
    assert!(tables >= 8, "{tables} stream tables");
    // The unsummarized segment names `long` and `capped`; `capped`'s metadata entry names it
    // too. Each is read from one table, not from every table that holds it.
    let read = e.open_stats().stream_entries_read;
    assert!(
        read <= 3,
        "{read} stream-table entries read on open, with {tables} tables"
    );
    check_long(&e, &long, &capped);

    // Writes continue the stream from its tail; a wrong expected version is refused.
    let last = long.len() as u64 - 1;
    let wrong = e.append(
        "long",
        ExpectedVersion::Exact(last - 1),
        vec![EventData::binary("L", "x")],
    );
    assert!(
        matches!(wrong, Err(AppendError::WrongExpectedVersion { actual: Some(a), .. }) if a == last),
        "{wrong:?}"
    );
    let r = e
        .append(
            "long",
            ExpectedVersion::Exact(last),
            vec![EventData::binary("L", "next")],
        )
        .unwrap();
    assert_eq!(r.next_expected_version, last + 1);
    long.push((last + 1, r.position_first, b"next".to_vec()));
    // A retry of the first batch, whose events lie in the first segment, below the tail.
    let retry = e
        .append("long", ExpectedVersion::Any, first_batch.clone())
        .unwrap();
    assert!(retry.idempotent, "{retry:?}");
    assert_eq!(
        (retry.position_first, retry.next_expected_version),
        (long[0].1, 4)
    );
    let elsewhere = e.append("capped", ExpectedVersion::Any, first_batch);
    assert!(
        matches!(elsewhere, Err(AppendError::IdempotencyMismatch(_))),
        "{elsewhere:?}"
    );
    check_long(&e, &long, &capped);

    let stats = e.scavenge().unwrap();
    assert!(stats.events_removed > 0, "{stats:?}");
    check_long(&e, &long, &capped);
    let e = reopen(e, dir.path());
    check_long(&e, &long, &capped);
}
