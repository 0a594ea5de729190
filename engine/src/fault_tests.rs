//! Unit tests that inject write and sync failures into the writer thread (see
//! `engine::TestFaults`): fail-stop, retries after it, and what a restart trusts.

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
