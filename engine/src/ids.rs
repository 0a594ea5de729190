//! The event-id index's work with files and the state lock (the index itself, and how a
//! lookup goes, are in `idindex.rs`): after an open, a background loader (`background.rs`)
//! reads every id table's entries, checking each, into the store-wide filter, and reads into
//! memory the ids of a summary whose table fails that check or is missing; each segment
//! summarized later hands its ids from memory to its new table ([`adopt`]); a scavenge's
//! rewritten table replaces the old one ([`replace`]).

use std::path::Path;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::bloom::{self, SharedBlocked};
use crate::error::DecodeError;
use crate::idindex::{IdFilter, IdIndex, IdMap, PendingIds, SAVED_FILTER};
use crate::idtable::IdTable;
use crate::state::State;
use crate::storage::{self, Storage};
use crate::summary;

/// Checks every entry of `tables`, and with `build` makes their ids a filter part; the
/// part and the first indexes of the tables that fail, or `None` if `stop` said to stop
/// first.
fn check_tables(
    tables: &[Arc<IdTable>],
    build: bool,
    stop: impl Fn() -> bool,
) -> Option<(Option<SharedBlocked>, Vec<u64>)> {
    let n = tables.iter().map(|t| t.len()).sum();
    let mut filter = build.then(|| IdFilter::private(n));
    let mut damaged = Vec::new();
    let mut keys = Vec::new();
    for t in tables {
        if stop() {
            return None;
        }
        keys.clear();
        let read = match &filter {
            Some(_) => t.for_each(|id, _| keys.push(bloom::id_key(id))),
            None => t.for_each(|_, _| {}),
        };
        match read {
            Ok(()) => {
                if let Some(f) = &mut filter {
                    f.insert_all(&keys);
                }
            }
            Err(doubt) => {
                tracing::warn!(doubt = %doubt.0, "an id table does not read back; reading its summary");
                damaged.push(t.first_index());
            }
        }
    }
    Some((filter, damaged))
}

/// The ids of each of the given summaries, read into memory.
fn read_summaries(summaries: &[PendingIds]) -> Result<Vec<(u64, IdMap)>, DecodeError> {
    summaries
        .iter()
        .map(|p| {
            let mut ids = IdMap::default();
            // Sized once: growing it would leave the smaller tables' memory with the
            // allocator. A stripped event takes at least an event header in a summary.
            let bytes = std::fs::metadata(&p.path).map_or(0, |m| m.len());
            ids.reserve((bytes / crate::format::EVENT_HEADER_BYTES as u64) as usize);
            summary::load_ids(&p.path, &mut ids)?;
            Ok((p.first_index, ids))
        })
        .collect()
}

/// Builds the whole index of `summaries` at once (a reload after a truncation or a failed
/// install, which must not race a background loader).
pub(crate) fn load_whole(
    st: &mut State,
    dir: &Path,
    summaries: &[PendingIds],
) -> Result<(), DecodeError> {
    st.ids.open_tables(dir, summaries);
    let (filter, damaged) = check_tables(&st.ids.tables, true, || false).expect("never stopped");
    let read = to_read(st.ids.untabled.clone(), summaries, &damaged);
    let loaded = read_summaries(&read)?;
    let n = st.ids.tables.iter().map(|t| t.len()).sum();
    finish(&mut st.ids, loaded, &damaged, filter.map(|f| (f, n)));
    Ok(())
}

/// The summaries whose ids go into memory: those without a usable table, and those whose
/// table failed its check (by first index, `damaged`).
fn to_read(
    untabled: Vec<PendingIds>,
    summaries: &[PendingIds],
    damaged: &[u64],
) -> Vec<PendingIds> {
    let mut read = untabled;
    read.extend(
        summaries
            .iter()
            .filter(|p| damaged.contains(&p.first_index))
            .cloned(),
    );
    read
}

/// The loader's result into the index: the ids read into memory, the damaged tables gone,
/// the filter built from the tables (with the ids it holds), and the index whole.
fn finish(
    ids: &mut IdIndex,
    loaded: Vec<(u64, IdMap)>,
    damaged: &[u64],
    filter: Option<(SharedBlocked, u64)>,
) {
    for (segment, map) in loaded {
        ids.recent.add(segment, map);
    }
    for first in damaged {
        ids.remove_table(*first);
    }
    if let Some((filter, n)) = filter {
        ids.filter.add_full(filter, n);
    }
    ids.untabled.clear();
    ids.filtered = true;
    ids.checked = true;
}

/// The loader's first step after an open: the store-wide filter saved at the last clean
/// close, if it is there and bound to exactly the tables opened (then lookups use it at
/// once, and the loader only checks the tables' entries). Whether it was taken.
pub(crate) fn take_saved(state: &RwLock<State>, dir: &Path) -> bool {
    // Mapped, not read into a buffer: the filter's words are copied once, where they stay.
    let Ok(bytes) = crate::segment::map_whole(&dir.join(SAVED_FILTER)) else {
        return false;
    };
    let taken = state.write().ids.take_saved(&bytes);
    if !taken {
        tracing::info!(
            "the saved event-id filter is stale or damaged; building it from the tables"
        );
    }
    taken
}

/// Saves the store-wide filter at a clean close, for the next open ([`take_saved`]); it is
/// derived data (bound to the tables, checksummed), so a failure only logs.
pub(crate) fn save(state: &RwLock<State>, dir: &Path, s: &dyn Storage) {
    let Some(bytes) = state.read().ids.saved() else {
        return;
    };
    let path = dir.join(SAVED_FILTER);
    let tmp = path.with_extension("qflt.tmp");
    if let Err(e) = storage::write_file_atomic(s, &tmp, &path, &bytes, 0) {
        tracing::warn!(error = %e, "could not save the event-id filter");
    }
}

/// The loader's work after an open ([`IdIndex::open_tables`]): every table checked (into
/// the filter, unless a saved one was taken), the ids of summaries without a usable table
/// read into memory. Returns the summaries whose id tables are to be written anew, or
/// `None` if the store closed first.
pub(crate) fn load(
    state: &RwLock<State>,
    summaries: &[PendingIds],
) -> Result<Option<Vec<PendingIds>>, DecodeError> {
    let (tables, build) = {
        let st = state.read();
        (st.ids.tables.clone(), !st.ids.filtered)
    };
    let Some((filter, damaged)) = check_tables(&tables, build, || state.read().closed) else {
        return Ok(None);
    };
    let n = tables.iter().map(|t| t.len()).sum();
    let read = to_read(state.read().ids.untabled.clone(), summaries, &damaged);
    let loaded = read_summaries(&read)?;
    finish(
        &mut state.write().ids,
        loaded,
        &damaged,
        filter.map(|f| (f, n)),
    );
    Ok(Some(read))
}

/// Hands the ids of a summarized segment over to its id table (just written and opened):
/// they go into the filter, then, in one move under the lock, the table joins the index and
/// the segment's ids leave memory. False if the table does not read back whole; its ids then
/// stay in memory.
pub(crate) fn adopt(state: &RwLock<State>, table: IdTable) -> bool {
    let filter = state.write().ids.filter.reserve(table.len());
    if let Err(doubt) = table.for_each(|id, _| filter.insert(bloom::id_key(id))) {
        tracing::warn!(doubt = %doubt.0, "an id table just written does not read back");
        return false;
    }
    let segment = table.first_index();
    let gone = {
        let mut st = state.write();
        st.ids.insert_table(Arc::new(table));
        st.ids.recent.take(segment)
    };
    drop(gone);
    true
}

/// After a scavenge rewrote the summary of the segment starting at `first_index` (its new
/// body checksum `summary_crc`): the segment's new id table replaces the old one, which
/// still lists the removed events. Without a usable new table, the segment's ids are read
/// from the new summary into memory.
pub(crate) fn replace(
    state: &RwLock<State>,
    dir: &Path,
    summary: &PendingIds,
) -> Result<(), DecodeError> {
    if !state
        .read()
        .ids
        .tables
        .iter()
        .any(|t| t.first_index() == summary.first_index)
    {
        return Ok(()); // its ids are in memory, where the scavenge removes what it dropped
    }
    let checked = IdTable::open(dir, summary.first_index, summary.summary_crc)
        .filter(|t| t.for_each(|_, _| {}).is_ok());
    // The new table's ids are the old one's less those removed: in the filter already.
    if let Some(t) = checked {
        state.write().ids.insert_table(Arc::new(t));
        return Ok(());
    }
    let read = read_summaries(std::slice::from_ref(summary))?;
    let mut st = state.write();
    for (segment, ids) in read {
        st.ids.recent.add(segment, ids);
    }
    st.ids.remove_table(summary.first_index);
    Ok(())
}
