//! What the stream- and id-table tests share: small segments, so that a few thousand events
//! fill many summarized ones, and waiting for the background thread to get somewhere.

use std::time::{Duration, Instant};

use quiver_engine::EngineConfig;

/// Segments of 16 KiB.
pub fn config() -> EngineConfig {
    EngineConfig::default().segment_bytes_max(16 * 1024)
}

/// Waits until `done`, for at most 20 s.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
