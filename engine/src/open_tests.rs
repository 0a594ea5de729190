//! Unit tests of a restart's first appends: a store takes them before its event-id index of
//! old segments is loaded, answering retries from the segments' id tables (`idtable.rs`),
//! and waits for the index where the tables cannot answer. The id loader is held back
//! (`inner::held_loaders`) so that each test runs inside that window.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use crate::inner::held_loaders;
use crate::{AppendError, AppendResult, Engine, EngineConfig, EventData, ExpectedVersion};

fn config() -> EngineConfig {
    EngineConfig::default()
        .segment_bytes_max(64 << 10)
        .io_mode(crate::IoMode::Pwrite)
}

fn event(i: usize) -> EventData {
    EventData::json(
        "Deposited",
        format!("{{\"amount\":{i},\"pad\":\"{}\"}}", "x".repeat(200)),
    )
}

/// A store of about a dozen sealed, summarized segments; returns the first append's events
/// and result, and the events appended in all.
fn fill(dir: &Path) -> (Vec<EventData>, AppendResult, usize) {
    let engine = Engine::open(dir, config()).unwrap();
    let first: Vec<EventData> = (0..10).map(event).collect();
    let result = engine
        .append("acct-1", ExpectedVersion::NoStream, first.clone())
        .unwrap();
    let mut n = first.len();
    for b in 1..300 {
        let batch: Vec<EventData> = (0..10).map(|i| event(b * 10 + i)).collect();
        n += batch.len();
        engine
            .append(&format!("acct-{}", b % 7), ExpectedVersion::Any, batch)
            .unwrap();
    }
    drop(engine);
    (first, result, n)
}

fn id_tables(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == crate::table::ID_TABLE_EXT)
        })
        .collect();
    found.sort();
    found
}

/// A store opened with its id loader held back. Dropping it (a failed assertion included)
/// releases the loader before the engine, whose drop waits for that thread.
struct Held {
    engine: Option<Engine>,
    dir: std::path::PathBuf,
}

impl Held {
    fn open(dir: &Path) -> Held {
        held_loaders::hold(dir);
        let mut held = Held {
            engine: None,
            dir: dir.to_path_buf(),
        };
        held.engine = Some(Engine::open(dir, config()).unwrap());
        held
    }

    fn release(&self) {
        held_loaders::release(&self.dir);
    }
}

impl std::ops::Deref for Held {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        self.engine.as_ref().expect("open")
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
        drop(self.engine.take());
    }
}

type Answer = Result<AppendResult, AppendError>;

/// Appends on another thread; the answer, or `None` if there is none within `wait`, and
/// where the answer will come.
fn append_within(
    engine: &Engine,
    stream: &'static str,
    events: Vec<EventData>,
    wait: Duration,
) -> (Option<Answer>, mpsc::Receiver<Answer>) {
    let (tx, rx) = mpsc::channel();
    let engine = engine.clone();
    std::thread::spawn(move || {
        let _ = tx.send(engine.append(stream, ExpectedVersion::Any, events));
    });
    (rx.recv_timeout(wait).ok(), rx)
}

#[test]
fn a_reopened_store_answers_retries_from_its_id_tables_before_the_index_loads() {
    let dir = tempfile::tempdir().unwrap();
    let (first, stored, n) = fill(dir.path());
    assert!(
        id_tables(dir.path()).len() >= 5,
        "{:?}",
        id_tables(dir.path())
    );
    let engine = Held::open(dir.path());
    let opened = engine.open_stats();
    assert!(
        opened.summaries_loaded >= 5 && opened.id_tables,
        "{opened:?}"
    );
    assert!(engine.is_writable(), "writable while the id index loads");
    // A retry of the very first append (its ids only in the oldest segment's table): the
    // stored result, nothing written again.
    let wait = Duration::from_secs(10);
    let (retry, _) = append_within(&engine, "acct-1", first.clone(), wait);
    let retry = retry.expect("answered without the id index").unwrap();
    assert!(retry.idempotent, "{retry:?}");
    assert_eq!(
        (
            retry.position_first,
            retry.position_last,
            retry.next_expected_version
        ),
        (
            stored.position_first,
            stored.position_last,
            stored.next_expected_version
        )
    );
    // Some of those ids with a new one: refused, as a retry must be all or nothing.
    let mut mixed = first[..3].to_vec();
    mixed.push(event(99_999));
    let (refused, _) = append_within(&engine, "acct-1", mixed, wait);
    assert!(
        matches!(refused, Some(Err(AppendError::IdempotencyMismatch(_)))),
        "{refused:?}"
    );
    // New events are written.
    let (fresh, _) = append_within(&engine, "acct-9", vec![event(100_000)], wait);
    assert!(!fresh.expect("answered").unwrap().idempotent);
    engine.release();
    // Once the index is loaded, the same answers; the store holds each event once.
    let again = engine
        .append("acct-1", ExpectedVersion::Any, first)
        .unwrap();
    assert!(again.idempotent);
    assert_eq!(again.position_first, stored.position_first);
    assert_eq!(
        engine.commit_position(),
        (n + 1) as u64,
        "each event stored once"
    );
}

#[test]
fn without_id_tables_appends_wait_for_the_index_which_then_writes_them() {
    let dir = tempfile::tempdir().unwrap();
    let (first, stored, _) = fill(dir.path());
    let tables = id_tables(dir.path());
    for t in &tables {
        std::fs::remove_file(t).unwrap();
    }
    let engine = Held::open(dir.path());
    assert!(!engine.open_stats().id_tables);
    assert!(
        !engine.is_writable(),
        "nothing can answer for the old segments' ids"
    );
    let (early, later) = append_within(&engine, "acct-1", first, Duration::from_millis(300));
    assert!(
        early.is_none(),
        "answered before the index loaded: {early:?}"
    );
    engine.release();
    let retry = later
        .recv_timeout(Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert!(retry.idempotent && retry.position_first == stored.position_first);
    // The loader wrote the tables the store lacked, for the next open.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while id_tables(dir.path()) != tables {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            id_tables(dir.path())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_damaged_id_table_entry_makes_a_retry_wait_for_the_index_never_guess() {
    let dir = tempfile::tempdir().unwrap();
    let (first, stored, _) = fill(dir.path());
    // The oldest table, which holds the first append's ids: every entry's position
    // flipped, so each probe fails its check (the header and filter stay intact).
    let oldest = id_tables(dir.path())[0].clone();
    let mut bytes = std::fs::read(&oldest).unwrap();
    let filter_bytes = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let entries_at = 64 + filter_bytes;
    for at in (entries_at + 16..bytes.len()).step_by(28) {
        bytes[at] ^= 0x40;
    }
    std::fs::write(&oldest, &bytes).unwrap();
    let engine = Held::open(dir.path());
    assert!(
        engine.open_stats().id_tables,
        "the damage is in the entries only"
    );
    let (early, later) = append_within(&engine, "acct-1", first, Duration::from_millis(300));
    assert!(early.is_none(), "answered from a damaged table: {early:?}");
    engine.release();
    let retry = later
        .recv_timeout(Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert!(retry.idempotent && retry.position_first == stored.position_first);
}

/// If the id index cannot be built (a summary's events and its segment's records no longer
/// read), the store fails: an append that was waiting for the index is answered with that
/// failure, not left waiting or planning again for ever.
#[test]
fn an_append_waiting_for_an_index_that_cannot_be_built_gets_the_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _, _) = fill(dir.path());
    for t in id_tables(dir.path()) {
        std::fs::remove_file(t).unwrap();
    }
    let engine = Held::open(dir.path());
    // Loaded at open; damaged before the loader reads it again.
    let summary = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == crate::segment::SUMMARY_EXT)
        })
        .min()
        .expect("a summary");
    let mut bytes = std::fs::read(&summary).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&summary, &bytes).unwrap();
    // The loader falls back to the segment's records when the summary's events fail their
    // checksum: damage the first record there too.
    // In place: the store has the segment mapped.
    let segment = summary.with_extension(crate::segment::SEGMENT_EXT);
    let at = (crate::format::SEGMENT_HEADER_BYTES + crate::format::RECORD_HEADER_BYTES + 8) as u64;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&segment)
        .unwrap();
    let mut byte = [0u8];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut byte, at).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[byte[0] ^ 0xff], at).unwrap();
    let (early, later) = append_within(&engine, "acct-1", first, Duration::from_millis(300));
    assert!(early.is_none(), "answered before the index: {early:?}");
    engine.release();
    let answer = later.recv_timeout(Duration::from_secs(10));
    assert!(
        matches!(answer, Ok(Err(AppendError::Failed(_)))),
        "{answer:?}"
    );
}

/// Waits until the held-back loader has taken the saved filter, or gives up after 10 s.
fn wait_for_saved_filter(engine: &Engine) -> crate::IdIndexStats {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = engine.id_index_stats();
        if stats.filter_from_file || std::time::Instant::now() > deadline {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn after_a_clean_close_lookups_use_the_saved_filter_before_the_tables_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (first, stored, n) = fill(dir.path());
    assert!(dir.path().join(crate::idindex::SAVED_FILTER).exists());
    let engine = Held::open(dir.path());
    let stats = wait_for_saved_filter(&engine);
    assert!(stats.filter_from_file && !stats.loaded, "{stats:?}");
    // New ids: the filter rules (nearly) every one out, so the tables are not read.
    let before = stats.table_lookups;
    let wait = Duration::from_secs(10);
    for b in 0..100 {
        let batch = (0..10).map(|i| event(200_000 + b * 10 + i)).collect();
        let (r, _) = append_within(&engine, "acct-8", batch, wait);
        assert!(!r.expect("answered").unwrap().idempotent);
    }
    let lookups = engine.id_index_stats().table_lookups - before;
    assert!(
        lookups < 20,
        "{lookups} of 1,000 new ids went to the tables"
    );
    // A retry is still recognised: the filter says maybe, the oldest table has it.
    let (retry, _) = append_within(&engine, "acct-1", first, wait);
    let retry = retry.expect("answered").unwrap();
    assert!(retry.idempotent && retry.position_first == stored.position_first);
    engine.release();
    assert_eq!(engine.commit_position(), (n + 1_000) as u64);
}

#[test]
fn a_store_closed_with_the_filter_it_took_does_not_save_it_again() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path());
    let saved = dir.path().join(crate::idindex::SAVED_FILTER);
    let inode = || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&saved).unwrap());
    let before = inode();
    let engine = Engine::open(dir.path(), config()).unwrap();
    wait_loaded(&engine);
    assert!(engine.id_index_stats().filter_from_file);
    drop(engine);
    assert_eq!(inode(), before, "an unchanged filter was saved again");
}

#[test]
fn a_saved_filter_for_other_tables_or_damaged_is_not_taken() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path());
    let saved = dir.path().join(crate::idindex::SAVED_FILTER);
    let old = std::fs::read(&saved).unwrap();
    // More segments summarized since that filter was saved (as if the store then crashed,
    // leaving the old file): a retry of an event in them must still be recognised.
    let (later, stored) = grow(dir.path());
    std::fs::write(&saved, &old).unwrap();
    not_taken(dir.path(), &later, &stored, "a stale filter taken");
    // One saved by another store of the same shape (the same segments and tables by first
    // index, other events): not taken.
    let mine = std::fs::read(&saved).unwrap();
    let other = tempfile::tempdir().unwrap();
    fill(other.path());
    grow(other.path());
    std::fs::copy(other.path().join(crate::idindex::SAVED_FILTER), &saved).unwrap();
    not_taken(dir.path(), &later, &stored, "another store's taken");
    // The filter saved by this store, with one bit flipped in its words: not taken.
    let mut bytes = mine;
    let last = bytes.len() - 3;
    bytes[last] ^= 0x10;
    std::fs::write(&saved, &bytes).unwrap();
    not_taken(dir.path(), &later, &stored, "a damaged filter taken");
}

/// Opens the store in `dir` (whose saved filter is not to be taken), checks that a retry
/// of `events` (stored as `stored`) is recognised, and that the loader built the filter.
fn not_taken(dir: &Path, events: &[EventData], stored: &AppendResult, why: &str) {
    let engine = Engine::open(dir, config()).unwrap();
    let retry = engine
        .append("acct-2", ExpectedVersion::Any, events.to_vec())
        .unwrap();
    assert!(retry.idempotent && retry.position_first == stored.position_first);
    wait_loaded(&engine);
    assert!(!engine.id_index_stats().filter_from_file, "{why}");
}

/// Appends to the store in `dir` enough for a few more summarized segments; the first
/// append's events and result.
fn grow(dir: &Path) -> (Vec<EventData>, AppendResult) {
    let engine = Engine::open(dir, config()).unwrap();
    let later: Vec<EventData> = (0..10).map(|i| event(300_000 + i)).collect();
    let r = engine
        .append("acct-2", ExpectedVersion::Any, later.clone())
        .unwrap();
    for b in 0..100 {
        let batch = (0..10).map(|i| event(310_000 + b * 10 + i)).collect();
        engine
            .append("acct-3", ExpectedVersion::Any, batch)
            .unwrap();
    }
    (later, r)
}

fn wait_loaded(engine: &Engine) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !engine.id_index_loaded() {
        assert!(
            std::time::Instant::now() < deadline,
            "the id index did not load"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
