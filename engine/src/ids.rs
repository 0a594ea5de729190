//! The event-id index of summarized segments, built in the background after open.
//!
//! Opening a store loads every summary for the stream index but leaves the event ids (one
//! hash-map insert each, the dominant cost at millions of events) to a thread that starts
//! right after: reads are served at once, and only appends, which need the ids to recognise
//! a retry, wait until the index is whole.

use crate::error::DecodeError;
use crate::state::{IdMap, PendingIds};
use crate::summary;

/// Builds the id index of the given summaries, which hold `count` ids if known.
pub(crate) fn build(summaries: &[PendingIds], count: Option<u64>) -> Result<IdMap, DecodeError> {
    let mut ids = IdMap::default();
    // Sized once: growing it would leave the smaller tables' memory with the allocator.
    let count = count.unwrap_or_else(|| {
        let bytes: u64 = summaries
            .iter()
            .filter_map(|p| std::fs::metadata(&p.path).ok())
            .map(|m| m.len())
            .sum();
        // A stripped event takes at least an event header in a summary.
        bytes / crate::format::EVENT_HEADER_BYTES as u64
    });
    ids.reserve(count as usize);
    for p in summaries {
        summary::load_ids(&p.path, &mut ids)?;
    }
    Ok(ids)
}
