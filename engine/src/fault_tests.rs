//! Unit tests that inject write and sync failures into the writer thread (see
//! `inner::TestFaults`): fail-stop, retries after it, and what a restart trusts.

use std::sync::atomic::Ordering;

use crate::{AppendError, Engine, EngineConfig, EventData, ExpectedVersion, StreamWrite};

fn config() -> EngineConfig {
    EngineConfig::default()
        .segment_bytes_max(64 << 10)
        .io_mode(crate::IoMode::Pwrite)
}

fn fail_next_sync(engine: &Engine) {
    engine
        .inner
        .faults
        .fail_next_sync
        .store(true, Ordering::SeqCst);
}

/// Bug 6: an idempotent retry of an append whose write failed waited for a commit that can
/// never come. After fail-stop it must be answered at once with the failure.
#[test]
fn idempotent_retry_after_fail_stop_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), config()).unwrap();
    engine
        .append("s", ExpectedVersion::Any, vec![EventData::json("E", "{}")])
        .unwrap();
    let event = EventData::json("E", "{\"a\":1}");
    fail_next_sync(&engine);
    let first = engine.append("s", ExpectedVersion::Any, vec![event.clone()]);
    assert!(matches!(first, Err(AppendError::Failed(_))), "{first:?}");
    let (tx, rx) = std::sync::mpsc::channel();
    let retry = vec![StreamWrite {
        stream: "s".into(),
        expected: ExpectedVersion::Any,
        events: vec![event],
    }];
    engine.append_with(retry, move |r| tx.send(r).unwrap());
    // The engine has failed: the answer cannot depend on any later write, so it is already
    // there when append_with returns.
    let answer = rx.try_recv().expect("the retry was answered, not parked");
    assert!(matches!(answer, Err(AppendError::Failed(_))), "{answer:?}");
}

/// Bug 10 ("fsyncgate"): after a failed fsync the failed batch's pages may stay in the page
/// cache, marked clean; a restart without a reboot read them back and took records that
/// never reached the disk for the log. They were never acknowledged: a restart drops them.
#[test]
fn restart_after_a_failed_sync_drops_the_failed_batch() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), config()).unwrap();
    for i in 0..5u8 {
        engine
            .append(
                "s",
                ExpectedVersion::Any,
                vec![EventData::json("E", vec![b'1'; i as usize + 1])],
            )
            .unwrap();
    }
    fail_next_sync(&engine);
    let lost = engine.append(
        "s",
        ExpectedVersion::Exact(4),
        vec![EventData::json("E", "{}")],
    );
    assert!(matches!(lost, Err(AppendError::Failed(_))), "{lost:?}");
    drop(engine);
    // The failed batch's bytes are in the file (page cache), with valid checksums.
    let engine = Engine::open(dir.path(), config()).unwrap();
    let info = engine.stream_info("s").unwrap();
    assert_eq!(
        info.current_version,
        Some(4),
        "the unacknowledged record is not in the log"
    );
    engine
        .append(
            "s",
            ExpectedVersion::Exact(4),
            vec![EventData::json("E", "{}")],
        )
        .unwrap();
    drop(engine);
    let engine = Engine::open(dir.path(), config()).unwrap();
    assert_eq!(engine.stream_info("s").unwrap().current_version, Some(5));
}
