//! The event-id index of summarized segments, built in the background after open.
//!
//! Opening a store loads every summary for the stream index but leaves the event ids (one
//! hash-map insert each, the dominant cost at millions of events) to a thread that starts
//! right after: reads are served at once, and only appends, which need the ids to recognise
//! a retry, wait until the index is whole.

use std::path::PathBuf;

use crate::engine::Inner;
use crate::error::{DecodeError, Failed};
use crate::state::IdMap;
use crate::summary;

/// Builds the id index of the given summaries.
pub(crate) fn build(summaries: &[PathBuf]) -> Result<IdMap, DecodeError> {
    let mut ids = IdMap::default();
    let bytes: u64 = summaries
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    // A stripped event takes at least an event header in a summary: size the map once.
    ids.reserve((bytes / crate::format::EVENT_HEADER_BYTES as u64) as usize);
    for path in summaries {
        summary::load_ids(path, &mut ids)?;
    }
    Ok(ids)
}

/// Runs on the id loader thread: builds the index of what `State::ids_pending` names and
/// merges it with the ids added since open (which are newer, so they win).
pub(crate) fn load_pending(inner: &Inner) {
    let pending = std::mem::take(&mut inner.state.write().ids_pending);
    let started = std::time::Instant::now();
    match build(&pending) {
        Ok(mut ids) => {
            let mut st = inner.state.write();
            ids.extend(st.ids.drain());
            st.ids = ids;
            tracing::info!(
                ids = st.ids.len(),
                ms = started.elapsed().as_millis() as u64,
                "event-id index loaded"
            );
        }
        Err(e) => {
            // A summary that loaded a moment ago no longer reads: refuse writes rather than
            // accept appends whose retries could not be recognised.
            tracing::error!(error = %e, "event-id index could not be built");
            let failed = Failed(std::sync::Arc::new(std::io::Error::other(e.to_string())));
            inner.state.write().failed = Some(failed);
        }
    }
    *inner.ids_ready.lock() = true;
    inner.ids_cv.notify_all();
}
