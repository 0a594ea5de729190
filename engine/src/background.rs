//! The background threads: one writes the summaries of sealed, committed segments (and hands
//! their event ids to their id tables) and prepares the next pre-zeroed segment, off the
//! writer's path, so neither ever delays an append; one checks the event-id tables of
//! summarized segments right after open.

use std::sync::Arc;

use crate::error::Failed;
use crate::idindex::PendingIds;
use crate::idtable::IdTable;
use crate::inner::Inner;
use crate::streamtable::StreamTable;
use crate::{ids, segment, summary};

/// The background thread: writes summaries of sealed, committed segments and prepares the
/// next pre-zeroed segment, off the writer's path, so neither ever delays an append.
pub(crate) fn summarizer_loop(inner: &Inner) {
    loop {
        {
            let mut s = inner.summaries.lock();
            while !s.pending && !s.shutdown {
                inner.summaries_cv.wait(&mut s);
            }
            s.pending = false;
            if s.shutdown {
                // A clean shutdown leaves every summary written, for a fast restart.
                drop(s);
                write_due(inner);
                return;
            }
        }
        write_due(inner);
        if inner.spare.lock().is_none() {
            let (s, size) = (&*inner.config.storage, inner.config.segment_bytes_max);
            match segment::prepare_spare(s, &inner.dir, size) {
                Ok(path) => *inner.spare.lock() = Some(path),
                Err(e) => tracing::warn!(error = %e, "could not prepare a spare segment"),
            }
        }
    }
}

/// Writes the summaries of sealed segments that are now fully committed. Runs on the
/// background thread; a failure only logs (the segment is scanned on the next open).
pub(crate) fn write_due(inner: &Inner) {
    loop {
        // Held while the summary is built and written: a truncation meanwhile could remove
        // the segment, and a summary left for a segment that is gone would describe the
        // next segment to get that name.
        let _files = inner.files_lock.lock();
        let due = {
            let st = inner.state.read();
            let n = st.segments.len();
            st.segments.iter().take(n.saturating_sub(1)).find_map(|s| {
                let done = s.sealed && !s.summarized && s.next_index() - 1 <= st.commit_index;
                done.then(|| (s.file.clone(), s.records.clone(), s.end))
            })
        };
        let Some((file, records, end)) = due else {
            return;
        };
        let written = summary::build(&file, &records, end)
            .map_err(|c| std::io::Error::other(c.to_string()))
            .and_then(|bytes| {
                let s = &*inner.config.storage;
                summary::write(s, &inner.dir, file.first_index, &bytes)?;
                Ok(summary::body_crc(&bytes))
            });
        let crc = match written {
            Err(e) => {
                tracing::warn!(file = %file.path.display(), error = %e, "could not write a summary");
                None
            }
            Ok(crc) => crc,
        };
        let table = crc.and_then(|crc| written_table(inner, file.first_index, crc));
        let mut st = inner.state.write();
        if let Some(s) = st.segments.iter_mut().find(|s| Arc::ptr_eq(&s.file, &file)) {
            // Marked even on failure so the writer does not retry every batch.
            s.summarized = true;
        }
        drop(st);
        // The segment's ids leave memory for its id table (when closing too: the filter
        // saved at close must cover every table the next open finds).
        if let Some(ids) = crc.and_then(|crc| IdTable::open(&inner.dir, file.first_index, crc)) {
            ids::adopt(&inner.state, ids);
        }
        let mut st = inner.state.write();
        let Some((table, names)) = table else {
            continue;
        };
        if !st.add_table(table) {
            continue;
        }
        drop(st);
        // A segment may hold hundreds of thousands of streams: a chunk per write lock, so
        // appends are not held up meanwhile.
        for chunk in names.chunks(LET_GO_CHUNK) {
            inner.state.write().let_go(chunk);
        }
    }
}

/// Streams looked at per write lock when letting go of those a new stream table covers.
const LET_GO_CHUNK: usize = 4096;

/// The stream table just written beside a summary, opened, with its streams' names: the
/// streams that need no longer stay in memory.
fn written_table(
    inner: &Inner,
    first_index: u64,
    summary_crc: u32,
) -> Option<(Arc<StreamTable>, Vec<String>)> {
    let table = StreamTable::open(&inner.dir, first_index, summary_crc)?;
    let mut names = Vec::with_capacity(table.streams() as usize);
    let listed = table.names_from(None, |n| {
        names.push(n.to_string());
        true
    });
    if let Err(doubt) = listed {
        tracing::warn!(doubt = %doubt.0, "a stream table just written does not read back");
        return None;
    }
    Some((Arc::new(table), names))
}

/// Runs on the id loader thread after an open (see `ids.rs`): checks every id table into the
/// store-wide filter and reads the ids of summaries without a usable table into memory; then
/// says the index is whole, writes the tables the store lacked and hands those ids to them.
pub(crate) fn load_ids(inner: &Inner) {
    let summaries = std::mem::take(&mut inner.state.write().ids_pending);
    let started = std::time::Instant::now();
    ids::take_saved(&inner.state, &inner.dir);
    #[cfg(test)]
    crate::inner::held_loaders::wait(&inner.dir);
    let rewrite = match ids::load(&inner.state, &summaries) {
        Ok(Some(rewrite)) => {
            let stats = inner.state.read().ids.stats();
            tracing::info!(
                in_memory = stats.in_memory,
                in_tables = stats.in_tables,
                ms = started.elapsed().as_millis() as u64,
                "event-id index loaded"
            );
            Some(rewrite)
        }
        // The store is closing.
        Ok(None) => None,
        Err(e) => {
            // A summary that loaded a moment ago no longer reads: refuse writes rather than
            // accept appends whose retries could not be recognised.
            tracing::error!(error = %e, "event-id index could not be built");
            let failed = Failed(std::sync::Arc::new(std::io::Error::other(e.to_string())));
            inner.state.write().failed = Some(failed);
            None
        }
    };
    // Appends and truncations wait for this, and a truncation holds the files lock that
    // writing the tables takes: say the index is whole first.
    *inner.ids_ready.lock() = true;
    inner.ids_cv.notify_all();
    if let Some(rewrite) = rewrite {
        write_missing_tables(inner, &summaries, &rewrite);
    }
}

/// Writes the tables a store opened without (one written before they existed, or whose
/// tables were lost or damaged): the id tables of `ids` (whose ids were read into memory
/// instead, and now go to their tables), and the stream tables of `summaries` that have
/// none, so that its next open takes appends at once and leaves streams on disk.
fn write_missing_tables(inner: &Inner, summaries: &[PendingIds], ids: &[PendingIds]) {
    // Not while a summary is being written or a truncation removes files.
    let _files = inner.files_lock.lock();
    let s = &*inner.config.storage;
    let mut written = Vec::new();
    for p in summaries {
        if inner.state.read().closed {
            return;
        }
        let (first, crc) = (p.first_index, p.summary_crc);
        let want_ids = ids.iter().any(|i| i.first_index == first);
        let want_streams = StreamTable::open(&inner.dir, first, crc).is_none();
        if !want_ids && !want_streams {
            continue;
        }
        // Made from the summary as it is now (a scavenge may have rewritten it since open).
        let made = std::fs::read(&p.path).and_then(|bytes| {
            summary::write_tables(s, &inner.dir, first, &bytes, want_ids, want_streams)?;
            Ok(summary::body_crc(&bytes))
        });
        match made {
            Ok(crc) => written.push((first, crc.filter(|_| want_ids))),
            Err(e) => tracing::warn!(summary = %p.path.display(), error = %e, "no table"),
        }
    }
    if written.is_empty() {
        return;
    }
    if let Err(e) = crate::storage::sync_dir(s, &inner.dir) {
        tracing::warn!(error = %e, "could not sync the directory after writing tables");
        return;
    }
    tracing::info!(summaries = written.len(), "wrote the missing tables");
    for (first, crc) in written {
        if let Some(table) = crc.and_then(|crc| IdTable::open(&inner.dir, first, crc)) {
            ids::adopt(&inner.state, table);
        }
    }
}
