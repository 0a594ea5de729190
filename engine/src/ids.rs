//! The event-id index's work with files and the state lock (the index itself, and how a
//! lookup goes, are in `idindex.rs`): after an open, a background loader (`background.rs`)
//! reads every id table's entries, checking each, into the store-wide filter, and reads into
//! memory the ids of a summary whose table fails that check or is missing; each segment
//! summarized later hands its ids from memory to its new table ([`adopt`]); a scavenge's
//! rewritten table replaces the old one ([`replace`]).

use std::path::Path;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::bloom::{self, Blocked};
use crate::error::DecodeError;
use crate::idindex::{IdFilter, IdMap, PendingIds, CHUNK};
use crate::idtable::IdTable;
use crate::state::State;
use crate::summary;

/// The ids of `tables` as a filter part, every entry checked, and the first indexes of the
/// tables that fail; `None` if `stop` said to stop first.
fn check_tables(tables: &[Arc<IdTable>], stop: impl Fn() -> bool) -> Option<(Blocked, Vec<u64>)> {
    let n = tables.iter().map(|t| t.len()).sum();
    let mut filter = IdFilter::private(n);
    let mut damaged = Vec::new();
    let mut keys = Vec::new();
    for t in tables {
        if stop() {
            return None;
        }
        keys.clear();
        match t.for_each(|id, _| keys.push(bloom::id_key(id))) {
            Ok(()) => filter.insert_all(&keys),
            Err(doubt) => {
                tracing::warn!(doubt = %doubt.0, "an id table does not read back; reading its summary");
                damaged.push(t.first_index());
            }
        }
    }
    Some((filter, damaged))
}

/// The in-memory ids of the given summaries.
fn read_summaries(summaries: &[PendingIds]) -> Result<IdMap, DecodeError> {
    let mut ids = IdMap::default();
    // Sized once: growing it would leave the smaller tables' memory with the allocator.
    let bytes: u64 = summaries
        .iter()
        .filter_map(|p| std::fs::metadata(&p.path).ok())
        .map(|m| m.len())
        .sum();
    // A stripped event takes at least an event header in a summary.
    ids.reserve((bytes / crate::format::EVENT_HEADER_BYTES as u64) as usize);
    for p in summaries {
        summary::load_ids(&p.path, &mut ids)?;
    }
    Ok(ids)
}

/// Builds the whole index of `summaries` at once (a reload after a truncation or a failed
/// install, which must not race a background loader).
pub(crate) fn load_whole(
    st: &mut State,
    dir: &Path,
    summaries: &[PendingIds],
) -> Result<(), DecodeError> {
    let ids = &mut st.ids;
    ids.open_tables(dir, summaries);
    let (filter, damaged) = check_tables(&ids.tables, || false).expect("never stopped");
    let mut read: Vec<PendingIds> = std::mem::take(&mut ids.untabled);
    read.extend(
        summaries
            .iter()
            .filter(|p| damaged.contains(&p.first_index))
            .cloned(),
    );
    let mut loaded = read_summaries(&read)?;
    loaded.merge(std::mem::take(&mut ids.recent));
    ids.recent = loaded;
    for first in damaged {
        ids.remove_table(first);
    }
    let n = ids.tables.iter().map(|t| t.len()).sum();
    ids.filter.add_full(filter, n);
    ids.filtered = true;
    Ok(())
}

/// The loader's work after an open ([`IdIndex::open_tables`]): every table checked into the
/// filter, the ids of summaries without a usable table read into memory. Returns the
/// summaries whose id tables are to be written anew, or `None` if the store closed first.
pub(crate) fn load(
    state: &RwLock<State>,
    summaries: &[PendingIds],
) -> Result<Option<Vec<PendingIds>>, DecodeError> {
    let tables = state.read().ids.tables.clone();
    let Some((filter, damaged)) = check_tables(&tables, || state.read().closed) else {
        return Ok(None);
    };
    let n = tables.iter().map(|t| t.len()).sum();
    let untabled = state.read().ids.untabled.clone();
    let mut read = untabled;
    read.extend(
        summaries
            .iter()
            .filter(|p| damaged.contains(&p.first_index))
            .cloned(),
    );
    let mut loaded = read_summaries(&read)?;
    let mut st = state.write();
    // Ids added since open are newer: theirs win.
    loaded.merge(std::mem::take(&mut st.ids.recent));
    st.ids.recent = loaded;
    for first in damaged {
        st.ids.remove_table(first);
    }
    st.ids.filter.add_full(filter, n);
    st.ids.untabled.clear();
    st.ids.filtered = true;
    Ok(Some(read))
}

/// Hands the ids of a summarized segment over to its id table (just written and opened):
/// they go into the filter, the table joins the index, and then they leave memory, a chunk
/// per write lock. False if the table does not read back whole; its ids then stay in memory.
pub(crate) fn adopt(state: &RwLock<State>, table: IdTable) -> bool {
    let filter = state.write().ids.filter.reserve(table.len());
    let mut ids = Vec::with_capacity(table.len() as usize);
    let read = table.for_each(|id, position| {
        filter.insert(bloom::id_key(id));
        ids.push((id, position));
    });
    if let Err(doubt) = read {
        tracing::warn!(doubt = %doubt.0, "an id table just written does not read back");
        return false;
    }
    state.write().ids.insert_table(Arc::new(table));
    for chunk in ids.chunks(CHUNK) {
        let mut st = state.write();
        for (id, position) in chunk {
            st.ids.recent.remove_at(*id, *position);
        }
    }
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
    let ids = read_summaries(std::slice::from_ref(summary))?;
    let mut st = state.write();
    st.ids.recent.merge(ids);
    st.ids.remove_table(summary.first_index);
    Ok(())
}
