//! The event-id index keeps only the ids of segments not yet summarized in memory; the rest
//! are in the segments' id tables on disk behind one store-wide filter. Retries must be
//! recognised wherever their ids are (in memory, in a table just written, in a table found
//! on open), across scavenges, and a table damaged after it was checked must give an error,
//! never a second copy of the events.

use std::path::Path;

use quiver_engine::*;

mod common;
use common::{config, wait_until};

fn event(i: usize, k: usize) -> EventData {
    EventData::binary("E", format!("{i}:{k}:{}", "x".repeat(40)).into_bytes())
}

/// An append of two events to one of 10 streams.
struct Appended {
    stream: String,
    events: Vec<EventData>,
    result: AppendResult,
}

fn fill(e: &Engine, n: usize) -> Vec<Appended> {
    (0..n)
        .map(|i| {
            let stream = format!("acct-{}", i % 10);
            let events = vec![event(i, 0), event(i, 1)];
            let result = e
                .append(&stream, ExpectedVersion::Any, events.clone())
                .unwrap();
            Appended {
                stream,
                events,
                result,
            }
        })
        .collect()
}

/// Every 7th append sent again is answered with what was stored, and nothing is written;
/// one of its ids with a new one is refused; a new event is written.
fn retries_are_recognised(e: &Engine, appended: &[Appended]) {
    let before = e.commit_position();
    for a in appended.iter().step_by(7) {
        let r = e
            .append(&a.stream, ExpectedVersion::Any, a.events.clone())
            .unwrap();
        assert!(r.idempotent, "{}: {r:?}", a.stream);
        assert_eq!(
            (r.position_first, r.position_last),
            (a.result.position_first, a.result.position_last)
        );
    }
    assert_eq!(e.commit_position(), before, "a retry wrote events again");
    let a = &appended[3];
    let mixed = vec![a.events[0].clone(), event(1_000_000, 0)];
    let refused = e.append(&a.stream, ExpectedVersion::Any, mixed);
    assert!(
        matches!(refused, Err(AppendError::IdempotencyMismatch(_))),
        "{refused:?}"
    );
}

fn reopen(e: Engine, dir: &Path) -> Engine {
    drop(e);
    let e = Engine::open(dir, config()).unwrap();
    wait_until("the id index loads", || e.id_index_loaded());
    e
}

#[test]
fn summarized_segments_ids_leave_memory_and_their_retries_are_still_recognised() {
    const N: usize = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), config()).unwrap();
    let appended = fill(&e, N);
    // While running: as segments are summarized, their ids go to their tables.
    wait_until("ids leave memory", || {
        let s = e.id_index_stats();
        s.tables > 10 && s.in_memory < (N as u64 * 2) / 10
    });
    let s = e.id_index_stats();
    assert_eq!(
        s.in_memory + s.in_tables,
        N as u64 * 2,
        "every id in one place: {s:?}"
    );
    assert!(s.loaded && s.filter_bytes > 0, "{s:?}");
    retries_are_recognised(&e, &appended);
    // On reopen, the ids of the summarized segments stay on disk.
    let e = reopen(e, dir.path());
    let s = e.id_index_stats();
    assert!(s.tables > 10, "{s:?}");
    assert!(
        s.in_memory < (N as u64 * 2) / 10,
        "ids read into memory on open: {s:?}"
    );
    retries_are_recognised(&e, &appended);
    // New events are written, and are recognised in turn once their segment is summarized.
    let before = e.id_index_stats().tables;
    let more = fill(&e, 500);
    wait_until("the new segments are summarized", || {
        e.id_index_stats().tables > before + 3
    });
    retries_are_recognised(&e, &more);
    retries_are_recognised(&e, &appended);
}

#[test]
fn a_table_damaged_after_it_was_checked_is_an_error_never_a_second_copy() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), config()).unwrap();
    let appended = fill(&e, 1_000);
    let e = reopen(e, dir.path());
    let before = e.commit_position();
    // The oldest table, which holds the first append's ids: every entry's position byte
    // flipped in place (the engine has the file open).
    let oldest = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "qids"))
        .min()
        .unwrap();
    let mut bytes = std::fs::read(&oldest).unwrap();
    let filter_bytes = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    for at in (64 + filter_bytes + 16..bytes.len()).step_by(28) {
        bytes[at] ^= 0x40;
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&oldest)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &bytes, 0).unwrap();
    let a = &appended[0];
    let retry = e.append(&a.stream, ExpectedVersion::Any, a.events.clone());
    assert!(
        matches!(retry, Err(AppendError::Corruption(_))),
        "{retry:?}"
    );
    assert_eq!(e.commit_position(), before, "written again");
    // Ids elsewhere are still answered.
    let r = appended.last().unwrap();
    let retry = e
        .append(&r.stream, ExpectedVersion::Any, r.events.clone())
        .unwrap();
    assert!(retry.idempotent);
}

#[test]
fn a_scavenged_segments_new_table_replaces_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), config()).unwrap();
    // A stream whose first events lie in the oldest segments, then cut by truncate-before.
    let old: Vec<Vec<EventData>> = (0..40)
        .map(|i| {
            let events = vec![event(i, 7)];
            e.append("cut", ExpectedVersion::Any, events.clone())
                .unwrap();
            events
        })
        .collect();
    let appended = fill(&e, 1_000);
    wait_until("summaries", || e.id_index_stats().tables > 10);
    e.set_metadata(
        "cut",
        StreamMetadata {
            truncate_before: Some(30),
            ..Default::default()
        },
    )
    .unwrap();
    let tables = e.id_index_stats().tables;
    let stats = e.scavenge().unwrap();
    assert!(stats.events_removed >= 29, "{stats:?}");
    // (A segment may have been summarized meanwhile: at least as many.)
    let after = e.id_index_stats().tables;
    assert!(after >= tables, "tables in use: {after}, before {tables}");
    // Events kept are still recognised; one the scavenge removed is gone from the index
    // too, so sending it again writes it anew instead of pointing at nothing.
    retries_are_recognised(&e, &appended);
    let kept = e
        .append("cut", ExpectedVersion::Any, old[35].clone())
        .unwrap();
    assert!(kept.idempotent, "{kept:?}");
    let again = e
        .append("cut", ExpectedVersion::Any, old[0].clone())
        .unwrap();
    assert!(!again.idempotent, "{again:?}");
    assert_eq!(again.next_expected_version, 40);
}
